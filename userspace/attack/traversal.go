package attack

import "bytes"

// Path traversal climbs out of the directory the application reads from
// (../../etc/passwd, ..\..\windows\win.ini, and the filter-evading ....//
// and Tomcat's ..;/), or names a file by its absolute path or a stream
// wrapper where a name was expected (file=/etc/passwd, page=php://filter/...).
// One step up to a file of the application's own ("../img/a.png") is a
// relative link, not an attack: a single step counts only towards a file
// that is a classic target.

// targets are the files and directories traversal payloads reach for.
var targets = [][]byte{
	[]byte("etc/passwd"), []byte("etc/shadow"), []byte("etc/hosts"), []byte("etc/group"), []byte("etc/issue"),
	[]byte("proc/self"), []byte("proc/version"), []byte("win.ini"), []byte("boot.ini"), []byte("system32"),
	[]byte("windows/"), []byte(".env"), []byte(".htpasswd"), []byte(".htaccess"), []byte("web.config"),
	[]byte("web-inf"), []byte("wp-config"), []byte("id_rsa"), []byte(".ssh/"), []byte(".git/"), []byte(".aws/"),
	[]byte("var/log"), []byte("root/"), []byte("bin/sh"), []byte("etc/"),
}

// wrappers are absolute names and stream wrappers a value may be.
var wrappers = [][]byte{
	[]byte("/etc/"), []byte("/proc/"), []byte("/var/log/"), []byte("/root/"), []byte("/windows/"), []byte("/boot.ini"),
	[]byte("c:/windows"), []byte("c:\\windows"), []byte("c:/boot.ini"), []byte("c:\\boot.ini"), []byte("c:/inetpub"),
	[]byte("c:\\inetpub"), []byte("file:/"), []byte("php://"), []byte("phar://"), []byte("zip://"), []byte("expect://"),
	[]byte("glob://"), []byte("data://"), []byte("compress.zlib://"), []byte("jar:"), []byte("netdoc:"), []byte("\\\\"),
}

func isPathSep(c byte) bool { return c == '/' || c == '\\' }

func scanTraversal(text []byte, h hints, sc *Scratch) int {
	n := len(text)
	steps, first := 0, -1
	if h&hDot != 0 {
		for i := bytes.Index(text, []byte("..")); i >= 0 && i < n; {
			j := i
			for j < n && text[j] == '.' {
				j++
			}
			if i == 0 || isPathSep(text[i-1]) || text[i-1] == '=' || text[i-1] == ' ' || text[i-1] == ':' {
				k := j
				if k < n && text[k] == ';' {
					for k < n && !isPathSep(text[k]) && k-j < 32 {
						k++
					}
				}
				if k == n || isPathSep(text[k]) {
					steps++
					if first < 0 {
						first = i
					}
				}
			}
			next := bytes.Index(text[j:], []byte(".."))
			if next < 0 {
				break
			}
			i = j + next
		}
	}
	if steps >= 2 {
		return first
	}
	if steps == 1 {
		rest := text[first:]
		for _, t := range targets {
			if bytes.Contains(rest, t) {
				return first
			}
		}
	}
	if sc.query {
		v := bytes.IndexByte(text, '=') + 1
		value := bytes.TrimLeft(text[v:], " '\"")
		for _, w := range wrappers {
			if bytes.HasPrefix(value, w) {
				return v
			}
		}
	}
	return -1
}
