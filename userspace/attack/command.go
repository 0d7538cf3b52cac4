package attack

import "bytes"

// Command injection ends the application's command and starts another: a
// separator (; | & a newline), a substitution (`...`, $(...)) or a brace
// expansion, then a command that runs. Shells ignore quotes and backslashes
// inside words (w'h'o'am'i, c\at), cmd.exe carets (w^h^o^am^i), and empty
// expansions (who$@ami), and read ${IFS} as a space: the command's name is
// read as the shell would. Words
// that are also English ("cat", "type", "sleep", "echo") count only with an
// argument shaped like one (a path, a flag, a number, a variable): "salt;
// pepper" and "dog | cat" are not commands, "; cat /etc/passwd" is.

type cmdKind uint8

const (
	cmdNone cmdKind = iota
	// cmdAlone: never a word of a sentence; counts even alone (;ls, |whoami)
	cmdAlone
	// cmdField: alone too, except right after a word and a single '|'
	// or '&' (a field list: fields=name|id), where it needs an argument or
	// a separator after it that no list has (x|id;)
	cmdField
	// cmdWord: also an English word; needs an argument that is not a word
	cmdWord
)

var commands = func() map[string]cmdKind {
	m := map[string]cmdKind{}
	for _, c := range []string{"ls", "pwd", "whoami", "uname", "ifconfig", "ipconfig", "netstat", "nc", "ncat", "netcat",
		"wget", "curl", "nslookup", "bash", "sh", "zsh", "ksh", "csh", "tcsh", "dash", "powershell", "pwsh", "cmd",
		"busybox", "hostname", "ps", "printenv", "systeminfo", "tasklist", "telnet", "nmap", "python", "python2",
		"python3", "perl", "ruby", "php", "node", "lua", "chmod", "chown", "rm", "cp", "mv", "grep", "awk", "gawk", "sed",
		"base64", "xxd", "lsb_release", "getent", "sudo", "certutil", "bitsadmin", "mshta", "rundll32", "regsvr32",
		"wmic", "ssh", "scp", "tftp", "ftp", "socat", "xterm", "crontab", "nohup",
		"useradd", "id", "env", "ver", "dig", "host", "traceroute", "tracert", "mkfifo", "mknod", "killall",
		"pkill", "openssl", "tac", "strings", "hexdump", "uptime", "last", "w", "who", "groups", "arp", "route"} {
		m[c] = cmdAlone
	}
	for _, c := range []string{"id", "env", "w", "who", "host", "last", "groups", "route", "ver"} {
		m[c] = cmdField
	}
	for _, c := range []string{"cat", "echo", "sleep", "ping", "type", "dir", "more", "less", "head", "tail", "find",
		"sort", "touch", "kill", "time", "timeout", "net", "set", "print", "printf", "read", "exec", "eval", "wait",
		"start", "call", "copy", "del", "erase", "move", "nl", "od", "cut", "file", "stat", "date", "test", "true",
		"false", "export", "source", "bin", "run", "exit"} {
		m[c] = cmdWord
	}
	return m
}()

// codeExec are the functions of script languages that run a command, as
// payloads call them: system('id'), passthru("ls").
var codeExec = map[string]bool{
	"system": true, "passthru": true, "shell_exec": true, "popen": true, "proc_open": true,
	"pcntl_exec": true, "execsync": true, "spawnsync": true,
}

func scanCommand(text []byte, _ hints, sc *Scratch) int {
	n := len(text)
	for i := 0; i < n; i++ {
		switch c := text[i]; c {
		case ';', '|', '&', '\n':
			j := i + 1
			for j < n && text[j] == c {
				j++
			}
			single := j == i+1 && (c == '|' || c == '&') && !loneSeparator(text, i, j)
			if commandAt(text, j, single, sc) {
				return i
			}
			i = j - 1
		case '`':
			if commandAt(text, i+1, false, sc) {
				return i
			}
		case '$':
			if i+1 < n && text[i+1] == '(' && commandAt(text, i+2, false, sc) {
				return i
			}
			if ifsAt(text, i) > 0 {
				return i
			}
		case '{':
			// {cat,/etc/passwd}: brace expansion makes a command without spaces
			if end := cmdWordEnd(text, i+1, sc); end > i+1 && end < n && text[end] == ',' && commands[string(sc.cmd)] != cmdNone {
				return i
			}
		case '/':
			if globAt(text, i) {
				return i
			}
		case '<':
			if bytes.HasPrefix(text[i:], []byte("<!--#exec")) {
				return i // server-side includes
			}
		case '(':
			if codeCall(text, i) {
				return codeCallStart(text, i)
			}
		}
	}
	return -1
}

// cmdWordEnd reads a command's name from i as a shell would: quotes,
// backslashes and $@ inside it dropped, a path before it dropped, ".exe"
// dropped. A backslash before a letter is an escape to a shell (c\at) and a
// directory to Windows (\windows\system32\cmd): sc.cmd is the first reading,
// sc.cmd[sc.tail:] the second. It returns where the name ends.
func cmdWordEnd(text []byte, i int, sc *Scratch) int {
	sc.cmd, sc.tail = sc.cmd[:0], 0
	n := len(text)
	j := i
loop:
	for ; j < n && j-i < 64; j++ {
		c := text[j]
		switch {
		case isAlnum(c) || c == '_' || c == '-' || c == '.':
			sc.cmd = append(sc.cmd, c)
		case c == '/' || c == '\\' && (j+1 == n || !isLetter(text[j+1])) || c == ':' && len(sc.cmd) == 1:
			sc.cmd, sc.tail = sc.cmd[:0], 0 // a directory or a drive: the name comes after
		case c == '\\':
			sc.tail = len(sc.cmd)
		case c == '\'' || c == '"' || c == '^':
			// quotes inside a word (w'h'o'am'i), cmd.exe's escape (w^h^o^am^i)
		case c == '$' && j+1 < n && (text[j+1] == '@' || text[j+1] == '*'):
			j++ // who$@ami
		default:
			break loop
		}
	}
	if l := len(sc.cmd); l > 4 && string(sc.cmd[l-4:]) == ".exe" {
		sc.cmd = sc.cmd[:l-4]
	}
	sc.tail = min(sc.tail, len(sc.cmd))
	return j
}

// commandAt says whether a command starts at i (spaces first allowed).
// single: the separator was a lone '|' or '&' (field lists, "rock & roll").
//
// A newline is not skipped: it is a separator of its own, which scanCommand
// tries next (with single false, the loosest reading). Skipping it made
// every newline of "\n \n \n ..." look past all those after it: 8 KiB of
// query cost 20 ms instead of 0.1.
func commandAt(text []byte, i int, single bool, sc *Scratch) bool {
	n := len(text)
	for i < n && (text[i] == ' ' || text[i] == '(' || text[i] == '{') {
		i++
	}
	end := cmdWordEnd(text, i, sc)
	if len(sc.cmd) == 0 {
		return false
	}
	kind := commands[string(sc.cmd)]
	if kind == cmdNone && sc.tail > 0 {
		sc.cmd = sc.cmd[sc.tail:]
		kind = commands[string(sc.cmd)]
	}
	if kind == cmdNone {
		return false
	}
	// what follows the name
	k, spaced := end, false
	for k < n {
		if text[k] == ' ' {
			k++
			spaced = true
		} else if l := ifsAt(text, k); l > 0 {
			k += l
			spaced = true
		} else {
			break
		}
	}
	if k == n || isSeparator(text[k]) {
		switch kind {
		case cmdAlone:
			return true
		case cmdField:
			return !single || k < n && text[k] != '|' && text[k] != ','
		}
		return false
	}
	if argShaped(text[k:]) && (spaced || text[k] == '-' || text[k] == '<' || text[k] == '>') {
		return true
	}
	switch kind {
	case cmdWord:
		return string(sc.cmd) == "net" && net(text[k:]) || spaced && laterArg(text[k:])
	case cmdAlone:
		return spaced
	}
	return false
}

// loneSeparator says whether the single '|' or '&' from i to j stands
// apart from a list: at the value's start, after something that is not a
// word (127.0.0.1|id), or with a space beside it.
func loneSeparator(text []byte, i, j int) bool {
	if i == 0 || text[i-1] == '=' || text[i-1] == ' ' || j < len(text) && text[j] == ' ' {
		return true
	}
	return !isLetter(text[i-1]) && text[i-1] != '_'
}

// laterArg says whether an argument of the command that b continues (up to
// a separator) is shaped like one: echo vulnerable > /tmp/x.
func laterArg(b []byte) bool {
	for i := 0; i < len(b) && i < 128; i++ {
		c := b[i]
		if isSeparator(c) {
			return false
		}
		if c == ' ' && i+1 < len(b) && b[i+1] != ' ' && argShaped(b[i+1:]) {
			return true
		}
	}
	return false
}

func isSeparator(c byte) bool {
	return c == ';' || c == '|' || c == '&' || c == '\n' || c == '`' || c == ')' || c == '}' || c == '\'' || c == '"' || c == '#'
}

// argShaped says whether b starts with what only a command's argument looks
// like: a flag, a path, a number, a variable, a redirection, a quote, a
// glob, a Windows drive or a URL.
func argShaped(b []byte) bool {
	switch c := b[0]; {
	case c == '-' || c == '/' || c == '\\' || c == '.' || c == '~' || c == '$' || c == '<' || c == '>' ||
		c == '\'' || c == '"' || c == '*' || c == '?' || c == '{' || c == '%' || c >= '0' && c <= '9':
		return true
	case isLetter(c) && len(b) > 1 && b[1] == ':':
		return true // c:\windows
	}
	return bytes.HasPrefix(b, []byte("http")) || bytes.HasPrefix(b, []byte("ftp:"))
}

// net: "net user", "net localgroup administrators" (Windows).
func net(b []byte) bool {
	for _, w := range []string{"user", "localgroup", "group", "view", "share", "use", "accounts", "config", "session", "start", "stop"} {
		if bytes.HasPrefix(b, []byte(w)) && (len(b) == len(w) || !isAlnum(b[len(w)])) {
			return true
		}
	}
	return false
}

// ifsAt returns the length of ${IFS} or $IFS at i (a space to the shell),
// or 0.
func ifsAt(text []byte, i int) int {
	b := text[i:]
	switch {
	case bytes.HasPrefix(b, []byte("${ifs}")):
		return 6
	case bytes.HasPrefix(b, []byte("$ifs")) && (len(b) == 4 || !isAlnum(b[4])):
		return 4
	}
	return 0
}

// globAt: /???/ or /?in/ — a directory named by wildcards (/???/c?t is
// /bin/cat to the shell). Only '?': "/**/" is an SQL comment.
func globAt(text []byte, i int) bool {
	j, wild := i+1, 0
	for j < len(text) && j-i <= 5 && (isLetter(text[j]) || text[j] == '?') {
		if text[j] == '?' {
			wild++
		}
		j++
	}
	return wild >= 2 && j < len(text) && text[j] == '/' && j-i >= 3
}

// codeCall: system('id'), passthru("ls"), exec($_GET[...]) — the '(' at i
// follows one of codeExec's names and a quote or '$' follows it.
func codeCall(text []byte, i int) bool {
	if i+1 >= len(text) || (text[i+1] != '\'' && text[i+1] != '"' && text[i+1] != '$' && text[i+1] != '`') {
		return false
	}
	s := codeCallStart(text, i)
	return s >= 0 && codeExec[string(text[s:i])] && (s == 0 || !isAlnum(text[s-1]) && text[s-1] != '_')
}

func codeCallStart(text []byte, i int) int {
	s := i
	for s > 0 && i-s < 16 && (isLetter(text[s-1]) || text[s-1] == '_') {
		s--
	}
	if s == i {
		return -1
	}
	return s
}
