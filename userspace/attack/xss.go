package attack

import "bytes"

// Cross-site scripting needs markup or script in a place that runs it: a tag
// that runs script (<script, <svg, <iframe ...), any tag carrying an event
// handler (<img src=x onerror=...), a quote that leaves an attribute and adds
// a handler (" onmouseover=...), a script URL (javascript:...), or a call to
// what payloads call (alert(1) right after a quote, ';' or the value's
// start: "how to use alert()" is a sentence). Bold text (<b>) or "a<b" is
// neither.

// scriptTags run script, or load what does, without any attribute.
var scriptTags = map[string]bool{
	"script": true, "iframe": true, "frame": true, "frameset": true, "object": true, "embed": true, "applet": true,
	"svg": true, "math": true, "base": true, "meta": true, "link": true, "style": true, "isindex": true, "xml": true,
	"import": true, "portal": true, "xss": true,
}

// handlers are the event-handler attributes payloads use (the HTML and SVG
// ones, and old IE's); inside a tag any on...= counts.
var handlers = func() map[string]bool {
	m := map[string]bool{}
	for _, h := range []string{"abort", "afterprint", "animationend", "animationiteration", "animationstart", "auxclick",
		"beforecopy", "beforecut", "beforeinput", "beforeprint", "beforeunload", "begin", "blur", "bounce", "canplay",
		"canplaythrough", "change", "click", "close", "contextmenu", "copy", "cuechange", "cut", "dblclick", "drag",
		"dragend", "dragenter", "dragleave", "dragover", "dragstart", "drop", "durationchange", "end", "ended", "error",
		"finish", "focus", "focusin", "focusout", "formdata", "fullscreenchange", "hashchange", "input", "invalid",
		"keydown", "keypress", "keyup", "load", "loadeddata", "loadedmetadata", "loadstart", "message", "mousedown",
		"mouseenter", "mouseleave", "mousemove", "mouseout", "mouseover", "mouseup", "mousewheel", "pagehide",
		"pageshow", "paste", "pause", "play", "playing", "pointerdown", "pointerenter", "pointerleave", "pointermove",
		"pointerout", "pointerover", "pointerrawupdate", "pointerup", "popstate", "progress", "ratechange", "readystatechange",
		"repeat", "reset", "resize", "scroll", "scrollend", "search", "seeked", "seeking", "select", "selectionchange",
		"selectstart", "show", "start", "storage", "submit", "suspend", "timeupdate", "toggle", "touchend", "touchmove",
		"touchstart", "transitioncancel", "transitionend", "transitionrun", "transitionstart", "unload", "volumechange",
		"waiting", "webkitanimationend", "webkittransitionend", "wheel", "activate", "beforeactivate", "filterchange",
		"propertychange", "contentvisibilityautostatechange", "beforetoggle", "afterscriptexecute", "beforescriptexecute"} {
		m["on"+h] = true
	}
	return m
}()

// sinks are what payloads call to show they ran.
var sinks = map[string]bool{
	"alert": true, "prompt": true, "confirm": true, "eval": true, "settimeout": true, "setinterval": true,
	"fromcharcode": true, "atob": true, "execscript": true,
}

// domSinks are properties payloads read or write.
var domSinks = [][]byte{[]byte("document.cookie"), []byte("document.domain"), []byte("document.write"),
	[]byte("document.location"), []byte("window.location"), []byte(".innerhtml"), []byte("document.body.innerhtml")}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' }
func isAlnum(c byte) bool  { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

func scanXSS(text []byte, h hints, _ *Scratch) int {
	n := len(text)
	if h&hAngle != 0 {
		// where the last handler attribute and script URL are: a tag counts
		// if one follows its name (found once, so that "<a <a <a ..." costs
		// one pass, not one per tag)
		lastHandler, lastURL := lastAnyHandler(text), lastScriptURL(text)
		for i := bytes.IndexByte(text, '<'); i >= 0; {
			j := i + 1
			if j < n && text[j] == '/' {
				j++
			}
			k := j
			for k < n && k-j < 32 && (isAlnum(text[k]) || text[k] == '-' || text[k] == ':') {
				k++
			}
			if k > j && isLetter(text[j]) && (scriptTags[string(text[j:k])] || lastHandler >= k || lastURL >= k) {
				return i
			}
			next := bytes.IndexByte(text[i+1:], '<')
			if next < 0 {
				break
			}
			i += 1 + next
		}
	}
	if h&hQuote != 0 {
		// leaving an attribute: a quote, then a known handler
		if q := bytes.IndexAny(text, "'\"`"); q >= 0 {
			if at := knownHandler(text[q:]); at >= 0 {
				return q + at
			}
		}
	}
	if h&hColon != 0 {
		if at := scriptURL(text); at >= 0 {
			return at
		}
	}
	if h&(hParen|hQuote) != 0 {
		if at := sinkCall(text); at >= 0 {
			return at
		}
	}
	if h&hDot != 0 {
		for _, s := range domSinks {
			if at := bytes.Index(text, s); at >= 0 && (at == 0 || !isAlnum(text[at-1])) {
				return at
			}
		}
	}
	return -1
}

// lastScriptURL is where the last script URL starts, or -1.
func lastScriptURL(b []byte) int {
	last := -1
	for from := 0; from < len(b); {
		at := scriptURL(b[from:])
		if at < 0 {
			break
		}
		last = from + at
		from = last + 1
	}
	return last
}

// lastAnyHandler is where the last on...= attribute is, or -1.
func lastAnyHandler(b []byte) int {
	last := -1
	for i := 0; i+2 < len(b); i++ {
		if b[i] != 'o' || b[i+1] != 'n' || (i > 0 && isAlnum(b[i-1])) {
			continue
		}
		j := i + 2
		for j < len(b) && isLetter(b[j]) {
			j++
		}
		if j-i >= 5 {
			k := j
			for k < len(b) && (b[k] == ' ' || b[k] == '\n') {
				k++
			}
			if k < len(b) && b[k] == '=' {
				last = i
			}
		}
		i = j - 1
	}
	return last
}

// knownHandler finds a known handler attribute (on...=) in b, as a word.
func knownHandler(b []byte) int {
	for i := 0; i+2 < len(b); i++ {
		if b[i] != 'o' || b[i+1] != 'n' || (i > 0 && isAlnum(b[i-1])) {
			continue
		}
		j := i + 2
		for j < len(b) && isLetter(b[j]) && j-i < 40 {
			j++
		}
		if !handlers[string(b[i:j])] {
			continue
		}
		for j < len(b) && (b[j] == ' ' || b[j] == '\n') {
			j++
		}
		if j < len(b) && b[j] == '=' {
			return i
		}
	}
	return -1
}

// scriptURL finds javascript:, vbscript: or livescript: followed by code
// (browsers drop tabs and newlines inside the scheme), or a data: URL of
// HTML or SVG.
func scriptURL(b []byte) int {
	for i := bytes.IndexByte(b, ':'); i >= 0; {
		if start := schemeBefore(b, i); start >= 0 && codeAfter(b[i+1:]) {
			return start
		}
		if i >= 4 && string(b[i-4:i]) == "data" && (i == 4 || !isAlnum(b[i-5])) {
			rest := b[i+1:]
			for _, t := range []string{"text/html", "image/svg", "text/javascript", "application/javascript", "text/xml"} {
				if bytes.HasPrefix(rest, []byte(t)) {
					return i - 4
				}
			}
		}
		next := bytes.IndexByte(b[i+1:], ':')
		if next < 0 {
			break
		}
		i += 1 + next
	}
	return -1
}

// schemeBefore reads the letters before the ':' at i, skipping spaces and
// newlines, and returns where a script scheme starts, or -1.
func schemeBefore(b []byte, i int) int {
	var name [16]byte
	n := 0
	j := i - 1
	for ; j >= 0 && n < len(name); j-- {
		c := b[j]
		if c == ' ' || c == '\n' {
			continue
		}
		if !isLetter(c) {
			break
		}
		name[len(name)-1-n] = c
		n++
	}
	word := string(name[len(name)-n:])
	for _, s := range []string{"javascript", "vbscript", "livescript"} {
		if len(word) >= len(s) && word[len(word)-len(s):] == s {
			return j + 1
		}
	}
	return -1
}

// codeAfter says whether what follows a script scheme is code: no space
// first ("javascript: the good parts" is a title), then, within maxExpr
// bytes, a call, a template string, an assignment or a comment.
func codeAfter(b []byte) bool {
	if len(b) == 0 || b[0] == ' ' {
		return false
	}
	b = b[:min(len(b), maxExpr)]
	return bytes.ContainsAny(b, "(`=") || bytes.Contains(b, []byte("//"))
}

// sinkCall finds alert(, prompt`...`, eval(, alert?.(, (alert)( where the
// call starts an expression: at the start, or after punctuation (a quote,
// ';', an operator, a bracket), not after a word.
func sinkCall(b []byte) int {
	for i := 0; i < len(b); i++ {
		if !isLetter(b[i]) || i > 0 && (isAlnum(b[i-1]) || b[i-1] == '_') {
			continue
		}
		j := i
		for j < len(b) && isLetter(b[j]) && j-i < 16 {
			j++
		}
		if !sinks[string(b[i:j])] {
			i = j
			continue
		}
		// alert(1), alert`1`, alert?.(1), (alert)(1)
		k := j
		for k < len(b) && k-j < 4 && (b[k] == ' ' || b[k] == ')' || b[k] == '?' || b[k] == '.') {
			k++
		}
		if k == len(b) || (b[k] != '(' && b[k] != '`') {
			i = j
			continue
		}
		p := i - 1
		for p >= 0 && b[p] == ' ' {
			p--
		}
		if p < 0 || !isAlnum(b[p]) && b[p] != '_' && b[p] >= 0x21 && b[p] < 0x80 {
			return i
		}
		i = j
	}
	return -1
}
