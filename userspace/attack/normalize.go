package attack

import "unicode/utf8"

// What a payload looks like once the server (or whatever is behind it) has
// decoded it. Evasion lives in the gap between what a filter reads and what
// the application gets: a quote written %27, %2527 (decoded twice by a proxy
// and the framework), &#39;, \x27, or U+FF07 (a fullwidth apostrophe that
// best-fit mappings turn into one). normalize closes that gap, within bounds:
// every step is one linear pass that never grows its input, and there are at
// most maxDecodes of them.

// maxDecodes bounds percent-decoding passes: a proxy and a framework each
// decoding once is the usual double decoding; a third pass costs nothing
// more to an honest request, whose escapes are gone after the first.
const maxDecodes = 3

// normalize decodes src (one path, or one name=value pair of a query) into
// sc's buffers and returns it folded (fold): valid until sc is used again.
// plus says whether '+' means a space (a query). It also returns which of the
// bytes the class scanners look for occur in the result.
func (sc *Scratch) normalize(src []byte, plus bool) ([]byte, hints) {
	cur := src
	for pass := 0; pass < maxDecodes && (pass == 0 || hasEscape(cur)); pass++ {
		dst := &sc.a
		if pass%2 == 1 {
			dst = &sc.b
		}
		// the first pass also copies src: fold works in place
		*dst = unescape((*dst)[:0], cur, plus && pass == 0)
		cur = *dst
	}
	return fold(cur)
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// hexN reads n hex digits at the start of b.
func hexN(b []byte, n int) (rune, bool) {
	if len(b) < n {
		return 0, false
	}
	var v rune
	for i := range n {
		d, ok := unhex(b[i])
		if !ok {
			return 0, false
		}
		v = v<<4 | rune(d)
	}
	return v, true
}

// hasEscape reports whether b still holds a %XX or %uXXXX escape.
func hasEscape(b []byte) bool {
	for i := 0; i < len(b); i++ {
		if b[i] != '%' {
			continue
		}
		if _, ok := hexN(b[i+1:], 2); ok {
			return true
		}
		if i+1 < len(b) && (b[i+1]|0x20) == 'u' {
			if _, ok := hexN(b[i+2:], 4); ok {
				return true
			}
		}
	}
	return false
}

// unescape appends src to dst with %XX and IIS's %uXXXX decoded (a %uXXXX
// becomes the code point's UTF-8, at most 3 bytes for 6), and '+' as a space
// when plus. A '%' that starts no escape is kept.
func unescape(dst, src []byte, plus bool) []byte {
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch {
		case c == '%':
			if v, ok := hexN(src[i+1:], 2); ok {
				dst = append(dst, byte(v))
				i += 2
				continue
			}
			if i+1 < len(src) && (src[i+1]|0x20) == 'u' {
				if v, ok := hexN(src[i+2:], 4); ok {
					dst = utf8.AppendRune(dst, v)
					i += 5
					continue
				}
			}
		case c == '+' && plus:
			c = ' '
		}
		dst = append(dst, c)
	}
	return dst
}

// fold rewrites b in place, never longer, as the payload's ASCII: letters
// lowercased; NUL dropped (C strings end there, so un%00ion is union to
// whoever reads it); CR and LF as LF (a command separator), other control
// bytes as spaces; HTML character references (&#39; &#x3c; &lt;) and
// JavaScript escapes (\x27 \u003c) that stand for ASCII decoded; and the
// non-ASCII forms that decoders and normalisation (NFKC) turn into ASCII:
// overlong UTF-8 (%c0%af is '/'), fullwidth forms (U+FF07 is '), Unicode
// and Latin-1 spaces, zero-width characters (dropped), mathematical and
// circled letters, and look-alike slashes, quotes and angle brackets. Other
// non-ASCII characters are kept: they are letters of words.
func fold(b []byte) ([]byte, hints) {
	var h hints
	w := 0
	for r := 0; r < len(b); {
		c := b[r]
		n := 1
		if c >= 0x80 {
			if v, m := foldRune(b[r:]); m > 0 {
				c, n = v, m
			} else {
				// another character: copied whole, so that its continuation
				// bytes are never read as characters of their own
				m = max(1, seqLen(b[r:]))
				copy(b[w:], b[r:r+m])
				w += m
				r += m
				continue
			}
		} else if c == '&' || c == '\\' {
			var v byte
			var m int
			if c == '&' {
				v, m = entity(b[r:])
			} else {
				v, m = jsEscape(b[r:])
			}
			if m > 0 && v == '\\' && c == '\\' {
				// an escaped backslash (nginx logs a client's \ as \x5C)
				// may start an escape of its own: read it again there
				r += m - 1
				b[r] = '\\'
				continue
			}
			if m > 0 {
				c, n = v, m
			}
		}
		r += n
		c = asciiFold[c]
		if c == 0 {
			continue
		}
		h |= hintOf[c]
		b[w] = c
		w++
	}
	return b[:w], h
}

// asciiFold maps an ASCII byte to what the scanners see (0: dropped).
var asciiFold = func() (t [128]byte) {
	for i := range t {
		c := byte(i)
		switch {
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		case c == 0:
		case c == '\r' || c == '\n':
			c = '\n'
		case c < 0x20 || c == 0x7f:
			c = ' '
		}
		t[i] = c
	}
	return t
}()

// seqLen is the length of the UTF-8 sequence b starts with, as far as its
// continuation bytes go (1 for a byte that starts none).
func seqLen(b []byte) int {
	want := 1
	switch c := b[0]; {
	case c >= 0xc2 && c <= 0xdf:
		want = 2
	case c >= 0xe0 && c <= 0xef:
		want = 3
	case c >= 0xf0 && c <= 0xf4:
		want = 4
	}
	n := 1
	for n < want && n < len(b) && b[n]&0xc0 == 0x80 {
		n++
	}
	return n
}

// foldRune reads the non-ASCII sequence at the start of b and returns the
// ASCII byte it stands for (0: nothing, dropped) and its length, or a length
// of 0 when it stands for no ASCII.
func foldRune(b []byte) (byte, int) {
	c := b[0]
	if c == 0xa0 {
		// a lone 0xA0 (Latin-1's no-break space): MySQL reads it as a blank
		return ' ', 1
	}
	// overlong encodings of ASCII: invalid UTF-8 that lax decoders accept
	switch {
	case (c == 0xc0 || c == 0xc1) && len(b) >= 2 && b[1]&0xc0 == 0x80:
		return (c&0x1f)<<6 | b[1]&0x3f, 2
	case c == 0xe0 && len(b) >= 3 && b[1]&0xe0 == 0x80 && b[2]&0xc0 == 0x80:
		if v := rune(b[1]&0x3f)<<6 | rune(b[2]&0x3f); v < 0x80 {
			return byte(v), 3
		}
		return 0, 0
	case c == 0xf0 && len(b) >= 4 && b[1]&0xf0 == 0x80 && b[2]&0xc0 == 0x80 && b[3]&0xc0 == 0x80:
		if v := rune(b[1]&0x3f)<<12 | rune(b[2]&0x3f)<<6 | rune(b[3]&0x3f); v < 0x80 {
			return byte(v), 4
		}
		return 0, 0
	case c != 0xc2 && c != 0xca && c != 0xcb && c != 0xe2 && c != 0xe3 && c != 0xef && c != 0xf0:
		return 0, 0 // no look-alike starts with this byte: skip the decode
	}
	r, n := utf8.DecodeRune(b)
	switch {
	case r >= 0xff01 && r <= 0xff5e:
		return byte(r - 0xfee0), n // fullwidth ASCII
	case r == 0xa0 || r >= 0x2000 && r <= 0x200a || r == 0x202f || r == 0x205f || r == 0x3000:
		return ' ', n // Unicode spaces
	case r >= 0x200b && r <= 0x200d || r == 0x2060 || r == 0xfeff:
		return 0, n // zero-width characters: dropped
	case r >= 0x1d400 && r <= 0x1d6a3:
		// mathematical alphanumerics (NFKC folds them): 52 letters a style
		if i := (r - 0x1d400) % 52; i < 26 {
			return byte('a' + i), n
		} else {
			return byte('a' + i - 26), n
		}
	case r >= 0x1d7ce && r <= 0x1d7ff:
		return byte('0' + (r-0x1d7ce)%10), n
	case r >= 0x24b6 && r <= 0x24e9:
		return byte('a' + (r-0x24b6)%26), n // circled letters
	}
	if v, ok := lookalike[r]; ok {
		return v, n
	}
	return 0, 0
}

// lookalike are the code points that best-fit mappings and Unicode
// normalisation (NFKC) turn into the ASCII that matters to injection.
var lookalike = map[rune]byte{
	0x2215: '/', 0x2044: '/', 0x29f8: '/', 0xfe68: '\\', 0x2216: '\\', 0x29f5: '\\', 0x29f9: '\\',
	0x02b9: '\'', 0x02bc: '\'', 0x02c8: '\'', 0x2018: '\'', 0x2019: '\'', 0x201b: '\'', 0x2032: '\'',
	0x02ba: '"', 0x201c: '"', 0x201d: '"', 0x2033: '"',
	0xfe64: '<', 0x2039: '<', 0x2329: '<', 0x3008: '<', 0xfe65: '>', 0x203a: '>', 0x232a: '>', 0x3009: '>',
	0xfe59: '(', 0xfe5a: ')', 0xfe5b: '{', 0xfe5c: '}', 0x2024: '.', 0xfe52: '.', 0xfe54: ';', 0xfe55: ':', 0xfe56: '?',
}

// entity decodes an HTML character reference standing for ASCII at the
// start of b ("&#60;", "&#x3C", "&lt;"): browsers decode them in attribute
// values, where a URL parameter reflected into a page ends up.
func entity(b []byte) (byte, int) {
	if len(b) < 3 {
		return 0, 0
	}
	if b[1] == '#' {
		i, base := 2, rune(10)
		if b[2]|0x20 == 'x' {
			i, base = 3, 16
		}
		var v rune
		digits := 0
		for ; i < len(b) && digits < 8; i++ {
			d, ok := unhex(b[i])
			if !ok || rune(d) >= base {
				break
			}
			v = v*base + rune(d)
			digits++
		}
		if digits == 0 || v >= 0x80 {
			return 0, 0
		}
		if i < len(b) && b[i] == ';' {
			i++
		}
		return byte(v), i
	}
	// named references: the ones a payload needs, each ending in ';'
	end := 1
	for end < len(b) && end <= 9 && b[end] != ';' {
		end++
	}
	if end >= len(b) || b[end] != ';' {
		return 0, 0
	}
	var name [8]byte
	if end-1 > len(name) {
		return 0, 0
	}
	for i := 1; i < end; i++ {
		name[i-1] = b[i] | 0x20
	}
	if v, ok := namedEntities[string(name[:end-1])]; ok {
		return v, end + 1
	}
	return 0, 0
}

var namedEntities = map[string]byte{
	"lt": '<', "gt": '>', "quot": '"', "apos": '\'', "amp": '&', "colon": ':', "lpar": '(', "rpar": ')',
	"sol": '/', "bsol": '\\', "tab": '\t', "newline": '\n', "semi": ';', "comma": ',', "period": '.',
	"equals": '=', "excl": '!', "num": '#', "dollar": '$', "percnt": '%', "grave": '`', "lbrace": '{',
	"rbrace": '}', "ast": '*', "plus": '+', "vert": '|', "lsqb": '[', "rsqb": ']', "quest": '?',
}

// jsEscape decodes \xHH and \uHHHH standing for ASCII at the start of b: a
// parameter reflected inside a script string reads them so.
func jsEscape(b []byte) (byte, int) {
	if len(b) < 4 {
		return 0, 0
	}
	switch b[1] | 0x20 {
	case 'x':
		if v, ok := hexN(b[2:], 2); ok && v < 0x80 {
			return byte(v), 4
		}
	case 'u':
		if v, ok := hexN(b[2:], 4); ok && v < 0x80 {
			return byte(v), 6
		}
	}
	return 0, 0
}

// hints say which bytes a folded text holds, so that a scanner whose every
// pattern needs one of them skips texts without.
type hints uint32

const (
	hQuote    hints = 1 << iota // ' " `
	hAngle                      // < >
	hParen                      // ( )
	hSemi                       // ;
	hPipe                       // |
	hAmp                        // &
	hDollar                     // $
	hBrace                      // { }
	hDot                        // .
	hSlash                      // / \
	hHash                       // #
	hDash                       // -
	hStar                       // *
	hEq                         // =
	hNewline                    // LF
	hAt                         // @
	hColon                      // :
	hPercent                    // %
	hSpace                      // space, +
	hQuestion                   // ?
	hBracket                    // [ ]
)

var hintOf = func() (t [128]hints) {
	for c, h := range map[byte]hints{
		'\'': hQuote, '"': hQuote, '`': hQuote, '<': hAngle, '>': hAngle, '(': hParen, ')': hParen,
		';': hSemi, '|': hPipe, '&': hAmp, '$': hDollar, '{': hBrace, '}': hBrace, '.': hDot,
		'/': hSlash, '\\': hSlash, '#': hHash, '-': hDash, '*': hStar, '=': hEq, '\n': hNewline,
		'@': hAt, ':': hColon, '%': hPercent, ' ': hSpace, '+': hSpace, '?': hQuestion, '[': hBracket, ']': hBracket,
	} {
		t[c] = h
	}
	return t
}()
