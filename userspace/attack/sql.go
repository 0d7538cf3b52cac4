package attack

// SQL injection is recognised by structure, not by words. A search for
// "select a script from the list" is words; "' or '1'='1" breaks out of a
// string literal and adds a condition. The text is cut into SQL-ish tokens
// (comments are skipped, MySQL's executable /*! ... */ ones read) and the
// rules below look at short runs of them. Each rule needs one of:
//
//   - a break-out: a quote that is odd in the text (it closes the server's
//     string: a balanced pair such as status="Open" AND ... is a query
//     language, not an injection), a ')' with no '(' before it, or a number
//     that is the whole value (id=1 or 1=1);
//   - or syntax no search contains: UNION SELECT, a statement stacked after
//     ';' (; DROP TABLE, ; WAITFOR DELAY), sleep(5), @@version,
//     information_schema, extractvalue(...).

type tokKind uint8

const (
	tWord tokKind = iota + 1
	tNum
	tQuote   // ' " `: ch says which; odd: its count so far is odd
	tCmp     // = < > <= >= <> !=: ch is the first byte
	tOr      // ||
	tAnd     // &&
	tLParen  //
	tRParen  // odd: more ')' than '(' so far
	tSemi    //
	tComment // -- or # before a non-word byte or the end; an unclosed /*
	tAt      // @
	tOther   // any other punctuation: ch
)

type token struct {
	kind tokKind
	kw   kwID
	ch   byte
	odd  bool
	pos  int32
}

type kwID uint8

const (
	kwNone kwID = iota
	kwSelect
	kwUnion
	kwFrom
	kwOr
	kwAnd
	kwXor
	kwNot
	kwNull
	kwTrue
	kwFalse
	kwAll
	kwDistinct
	kwOrder
	kwGroup
	kwBy
	kwHaving
	kwLike // like, is, in, between, regexp, rlike, sounds: comparisons
	kwInsert
	kwInto
	kwUpdate
	kwSet
	kwDelete
	kwDrop
	kwObject // table, database, schema, procedure, function, view, user, index
	kwExec
	kwDeclare
	kwWaitfor
	kwDelay
	kwShutdown
	kwCreate
	kwOutfile
	kwWith
	kwStrong // identifiers no search contains: information_schema, xp_cmdshell...
	kwSleep  // sleep, benchmark, pg_sleep: a number follows
	kwFunc   // SQL functions an injection calls in its conditions
	kwXMLErr // extractvalue, updatexml: error-based injection
	kwInfo   // version(), database(), user(): empty parentheses follow
)

var sqlKeywords = map[string]kwID{
	"select": kwSelect, "union": kwUnion, "from": kwFrom, "or": kwOr, "and": kwAnd, "xor": kwXor, "not": kwNot,
	"null": kwNull, "true": kwTrue, "false": kwFalse, "all": kwAll, "distinct": kwDistinct, "order": kwOrder,
	"group": kwGroup, "by": kwBy, "having": kwHaving,
	"like": kwLike, "is": kwLike, "in": kwLike, "between": kwLike, "regexp": kwLike, "rlike": kwLike, "sounds": kwLike,
	"insert": kwInsert, "into": kwInto, "update": kwUpdate, "set": kwSet, "delete": kwDelete, "drop": kwDrop,
	"table": kwObject, "database": kwObject, "schema": kwObject, "procedure": kwObject, "function": kwObject,
	"view": kwObject, "user": kwObject, "index": kwObject, "trigger": kwObject,
	"exec": kwExec, "execute": kwExec, "declare": kwDeclare, "waitfor": kwWaitfor, "delay": kwDelay, "time": kwDelay,
	"shutdown": kwShutdown, "create": kwCreate, "alter": kwCreate, "truncate": kwCreate,
	"outfile": kwOutfile, "dumpfile": kwOutfile, "with": kwWith,
	"information_schema": kwStrong, "xp_cmdshell": kwStrong, "sp_executesql": kwStrong, "sp_oacreate": kwStrong,
	"sqlite_master": kwStrong, "sysobjects": kwStrong, "syscolumns": kwStrong, "load_file": kwStrong,
	"dbms_pipe": kwStrong, "dbms_lock": kwStrong, "utl_inaddr": kwStrong, "utl_http": kwStrong, "pg_sleep": kwStrong,
	"sys_eval": kwStrong, "sys_exec": kwStrong, "pg_read_file": kwStrong, "xp_dirtree": kwStrong,
	"sleep": kwSleep, "benchmark": kwSleep,
	"if": kwFunc, "ascii": kwFunc, "ord": kwFunc, "substring": kwFunc, "substr": kwFunc, "mid": kwFunc,
	"length": kwFunc, "char": kwFunc, "chr": kwFunc, "concat": kwFunc, "concat_ws": kwFunc, "group_concat": kwFunc,
	"cast": kwFunc, "convert": kwFunc, "count": kwFunc, "exists": kwFunc, "elt": kwFunc, "make_set": kwFunc,
	"hex": kwFunc, "unhex": kwFunc, "md5": kwFunc, "randomblob": kwFunc, "rand": kwFunc, "floor": kwFunc,
	"case": kwFunc, "iif": kwFunc, "nvl": kwFunc, "coalesce": kwFunc, "instr": kwFunc, "left": kwFunc, "right": kwFunc,
	"extractvalue": kwXMLErr, "updatexml": kwXMLErr,
	"version": kwInfo, "current_user": kwInfo, "system_user": kwInfo, "session_user": kwInfo,
	"schema_name": kwInfo, "db_name": kwInfo, "user_name": kwInfo,
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '$' || c >= 0x80
}

// tokenize cuts a folded text into tokens (into sc.toks).
func (sc *Scratch) tokenize(text []byte) []token {
	t := sc.toks[:0]
	var quotes [3]int // ' " `
	parens := 0
	n := len(text)
	for i := 0; i < n; {
		c := text[i]
		start := int32(i)
		switch {
		case c == ' ' || c == '\n' || c == '+':
			i++
			continue
		case c >= 'a' && c <= 'z' || c == '_' || c >= 0x80:
			j := i + 1
			for j < n && isWordByte(text[j]) {
				j++
			}
			var kw kwID
			if j-i <= 20 {
				kw = sqlKeywords[string(text[i:j])]
			}
			t = append(t, token{kind: tWord, kw: kw, pos: start})
			i = j
			continue
		case c >= '0' && c <= '9':
			// as MySQL lexes a number, so that 1e0union is 1e0 union
			j := numberEnd(text, i)
			t = append(t, token{kind: tNum, pos: start})
			i = j
			continue
		case c == '\'' || c == '"' || c == '`':
			q := 0
			if c == '"' {
				q = 1
			} else if c == '`' {
				q = 2
			}
			quotes[q]++
			t = append(t, token{kind: tQuote, ch: c, odd: quotes[q]%2 == 1, pos: start})
		case c == '(':
			parens++
			t = append(t, token{kind: tLParen, pos: start})
		case c == ')':
			parens--
			t = append(t, token{kind: tRParen, odd: parens < 0, pos: start})
		case c == ';':
			t = append(t, token{kind: tSemi, pos: start})
		case c == '@':
			t = append(t, token{kind: tAt, pos: start})
		case c == '=':
			t = append(t, token{kind: tCmp, ch: '=', pos: start})
		case c == '<' || c == '>':
			if i+1 < n && (text[i+1] == '=' || c == '<' && text[i+1] == '>') {
				i++
			}
			t = append(t, token{kind: tCmp, ch: c, pos: start})
		case c == '!' && i+1 < n && text[i+1] == '=':
			i++
			t = append(t, token{kind: tCmp, ch: '!', pos: start})
		case c == '|' && i+1 < n && text[i+1] == '|':
			i++
			t = append(t, token{kind: tOr, pos: start})
		case c == '&' && i+1 < n && text[i+1] == '&':
			i++
			t = append(t, token{kind: tAnd, pos: start})
		case c == '-' && i+1 < n && text[i+1] == '-' && (i+2 == n || !isWordByte(text[i+2])):
			t = append(t, token{kind: tComment, pos: start})
			i += 2
			continue
		case c == '#' && (i+1 == n || !isWordByte(text[i+1])):
			t = append(t, token{kind: tComment, pos: start})
		case c == '/' && i+1 < n && text[i+1] == '*':
			if i+2 < n && text[i+2] == '!' {
				// MySQL runs what is inside /*!50000 ... */
				i += 3
				for i < n && text[i] >= '0' && text[i] <= '9' {
					i++
				}
				continue
			}
			end := indexFrom(text, i+2, '*', '/')
			if end < 0 {
				t = append(t, token{kind: tComment, pos: start})
				i = n
				continue
			}
			i = end + 2 // a closed comment is a space
			continue
		case c == '*' && i+1 < n && text[i+1] == '/':
			i += 2 // the end of a /*! comment
			continue
		default:
			t = append(t, token{kind: tOther, ch: c, pos: start})
		}
		i++
	}
	sc.toks = t
	return t
}

// numberEnd is where the number at i ends: 0x and 0b literals, digits with
// a fraction and an exponent.
func numberEnd(text []byte, i int) int {
	n := len(text)
	digits := func(j int) int {
		for j < n && text[j] >= '0' && text[j] <= '9' {
			j++
		}
		return j
	}
	if text[i] == '0' && i+1 < n && (text[i+1] == 'x' || text[i+1] == 'b') {
		j := i + 2
		for j < n && isHex(text[j]) {
			j++
		}
		return j
	}
	j := digits(i)
	if j < n && text[j] == '.' {
		j = digits(j + 1)
	}
	if j < n && text[j] == 'e' {
		k := j + 1
		if k < n && (text[k] == '+' || text[k] == '-') {
			k++
		}
		if k < n && text[k] >= '0' && text[k] <= '9' {
			j = digits(k)
		}
	}
	return j
}

// indexFrom finds the pair a, b in text at or after from.
func indexFrom(text []byte, from int, a, b byte) int {
	for i := from; i+1 < len(text); i++ {
		if text[i] == a && text[i+1] == b {
			return i
		}
	}
	return -1
}

func scanSQL(text []byte, _ hints, sc *Scratch) int {
	t := sc.tokenize(text)
	for i := range t {
		if sqlAt(text, t, i) {
			return int(t[i].pos)
		}
	}
	if v := errorProbe(t); v >= 0 {
		return v
	}
	return -1
}

func (t token) is(kind tokKind, kw kwID) bool { return t.kind == kind && t.kw == kw }

// at returns t[i], or a zero token past the end.
func at(t []token, i int) token {
	if i < 0 || i >= len(t) {
		return token{}
	}
	return t[i]
}

// sqlAt says whether an injection starts at token i.
func sqlAt(text []byte, t []token, i int) bool {
	tk := t[i]
	switch tk.kind {
	case tWord:
		switch tk.kw {
		case kwUnion:
			return unionSelect(t, i)
		case kwOr, kwAnd, kwXor, kwHaving:
			return breakOut(t, i-1) && condition(t, i+1, afterQuote(t, i))
		case kwOrder, kwGroup:
			return at(t, i+1).is(tWord, kwBy) && at(t, i+2).kind == tNum &&
				(breakOut(t, i-1) && i > 0 || at(t, i+3).kind == tComment)
		case kwStrong:
			return true
		case kwSleep:
			// sleep(5) as the value, or followed by what ends an injection;
			// "sleep(8) is not a function" is a sentence
			if at(t, i+1).kind != tLParen || at(t, i+2).kind != tNum {
				return false
			}
			e := operandEnd(t, i)
			return valueStart(t, i) || e >= 0 && injectionEnd(at(t, e))
		case kwXMLErr:
			return at(t, i+1).kind == tLParen
		case kwInfo, kwObject:
			return isInfoCall(t, i)
		case kwFunc:
			// char(65,66), concat(0x7e,...): an injection spelling what it
			// cannot quote
			return at(t, i+1).kind == tLParen && spelled(text, t, i)
		case kwWaitfor:
			return at(t, i+1).is(tWord, kwDelay) && at(t, i+2).kind == tQuote
		case kwInto:
			return at(t, i+1).is(tWord, kwOutfile)
		}
	case tOr, tAnd:
		return breakOut(t, i-1) && condition(t, i+1, afterQuote(t, i))
	case tQuote:
		next := at(t, i+1)
		switch {
		case tk.odd && next.kind == tComment:
			return true // admin'--
		case tk.odd && next.kind == tSemi && at(t, i+2).kind == tComment:
			return true // ';--
		case next.kind == tCmp && next.ch == '=' && at(t, i+2).kind == tQuote && valueStart(t, i):
			return true // '='
		}
		// 'a'='a
		return (next.kind == tWord || next.kind == tNum) && at(t, i+2).kind == tQuote && at(t, i+2).ch == tk.ch &&
			at(t, i+3).kind == tCmp && at(t, i+4).kind == tQuote &&
			(at(t, i+5).kind == tWord || at(t, i+5).kind == tNum)
	case tRParen:
		return tk.odd && at(t, i+1).kind == tComment
	case tNum:
		// id=1-- , id=1#
		return valueStart(t, i) && at(t, i+1).kind == tComment
	case tSemi:
		return stacked(t, i)
	case tAt:
		// @@version, @@datadir
		return at(t, i+1).kind == tAt && at(t, i+2).kind == tWord
	}
	return false
}

// valueStart says whether token i starts a value: the text's first token,
// or one right after the pair's '=' or a path's '/' (a sign may come first).
func valueStart(t []token, i int) bool {
	if at(t, i-1).kind == tOther && (at(t, i-1).ch == '-' || at(t, i-1).ch == '+') {
		i--
	}
	if i == 0 {
		return true
	}
	p := t[i-1]
	if p.kind == tOther && p.ch == '/' {
		return true
	}
	// name=value: the '=' after the first word
	return p.kind == tCmp && p.ch == '=' && i-1 == 1 && t[0].kind == tWord
}

// breakOut says whether token i ends what the server quoted or bracketed:
// an odd quote, an unmatched ')', a number that is the whole value; or i is
// before the value (the condition starts it: "or 1=1").
func breakOut(t []token, i int) bool {
	if i < 0 {
		return true
	}
	switch tk := t[i]; tk.kind {
	case tQuote, tRParen:
		return tk.odd
	case tNum:
		return valueStart(t, i)
	}
	return valueStart(t, i+1)
}

// condition says whether what starts at token k is a condition an
// injection adds: 1=1, 'a'='a', x like y, true, sleep(5), (select ...).
// afterQuote lets a bare number do (' or 1--).
func condition(t []token, k int, afterQuote bool) bool {
	opened := 0
	for skip := 0; skip < 3; skip++ {
		tk := at(t, k)
		if tk.kind == tLParen || tk.is(tWord, kwNot) || tk.kind == tOther && tk.ch == '!' {
			if tk.kind == tLParen {
				opened++
			}
			k++
			continue
		}
		break
	}
	tk := at(t, k)
	switch {
	case tk.is(tWord, kwSelect), tk.is(tWord, kwTrue), tk.is(tWord, kwFalse), tk.is(tWord, kwNull):
		return true
	case tk.kind == tWord && tk.kw != kwNone && tk.kw >= kwStrong && at(t, k+1).kind == tLParen:
		return true // sleep(5), ascii(substring(...)), extractvalue(...)
	}
	e := operandEnd(t, k)
	if e < 0 {
		return false
	}
	// the parentheses opened before the operand close after it: or(1)=(1)
	for ; opened > 0 && at(t, e).kind == tRParen; opened-- {
		e++
	}
	next := at(t, e)
	if next.kind == tCmp || next.is(tWord, kwLike) || next.is(tWord, kwNot) && at(t, e+1).is(tWord, kwLike) {
		return true
	}
	// ' or 1-- : nothing but the number before the end
	return afterQuote && tk.kind == tNum && (e == len(t) || next.kind == tComment || next.kind == tSemi)
}

// operandEnd is the index after the operand starting at k ('a', 1, x,
// @@version, a function call), or -1.
func operandEnd(t []token, k int) int {
	tk := at(t, k)
	switch tk.kind {
	case tQuote:
		for j := k + 1; j < min(len(t), k+8); j++ {
			if t[j].kind == tQuote && t[j].ch == tk.ch {
				return j + 1
			}
		}
		return -1
	case tNum:
		return k + 1
	case tWord:
		if at(t, k+1).kind == tLParen {
			depth := 0
			for j := k + 1; j < min(len(t), k+64); j++ {
				switch t[j].kind {
				case tLParen:
					depth++
				case tRParen:
					if depth--; depth == 0 {
						return j + 1
					}
				}
			}
			return -1
		}
		return k + 1
	case tAt:
		if at(t, k+1).kind == tAt && at(t, k+2).kind == tWord {
			return k + 3
		}
	}
	return -1
}

// unionSelect: UNION [ALL|DISTINCT] [(] SELECT.
func unionSelect(t []token, i int) bool {
	j := i + 1
	for j < len(t) && j < i+4 && (t[j].kind == tLParen || t[j].is(tWord, kwAll) || t[j].is(tWord, kwDistinct)) {
		j++
	}
	return at(t, j).is(tWord, kwSelect)
}

// isInfoCall: version(), database(), user() — empty parentheses.
func isInfoCall(t []token, i int) bool {
	return at(t, i+1).kind == tLParen && at(t, i+2).kind == tRParen && (t[i].kw == kwInfo || t[i].kw == kwObject)
}

// injectionEnd says whether tk is what follows an injected condition: the
// end, a comment, a comparison, a quote, ';' or a boolean.
func injectionEnd(tk token) bool {
	switch tk.kind {
	case 0, tComment, tCmp, tQuote, tSemi, tOr, tAnd, tRParen:
		return true
	case tWord:
		return tk.kw == kwOr || tk.kw == kwAnd || tk.kw == kwXor
	}
	return false
}

// afterQuote says whether the boolean at i follows a quote or a bracket
// (rather than a number): then a bare number is a condition (' or 1--).
func afterQuote(t []token, i int) bool {
	p := at(t, i-1)
	return p.kind == tQuote || p.kind == tRParen
}

// spelled says whether the call at i spells a value as numbers: char(65,66),
// chr(65), or any of these functions given a hex literal (concat(0x7e,...)).
func spelled(text []byte, t []token, i int) bool {
	arg := at(t, i+2)
	if arg.kind != tNum {
		return false
	}
	if p := int(arg.pos); p+2 < len(text) && text[p] == '0' && text[p+1] == 'x' && isHex(text[p+2]) {
		return true
	}
	name := text[t[i].pos:]
	isChar := len(name) >= 4 && string(name[:4]) == "char" || len(name) >= 3 && string(name[:3]) == "chr"
	next := at(t, i+3)
	return isChar && (next.kind == tRParen || next.kind == tOther && next.ch == ',')
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' }

// stacked: a statement after ';', with a break-out before it or a shape
// no sentence has.
func stacked(t []token, i int) bool {
	k := i + 1
	s := at(t, k)
	if s.kind != tWord {
		return false
	}
	next, after := at(t, k+1), at(t, k+2)
	ctx := i > 0 && breakOut(t, i-1)
	switch s.kw {
	case kwSelect:
		return ctx || next.kind == tNum || next.kind == tAt || next.kind == tOther && next.ch == '*' ||
			next.kind == tWord && next.kw >= kwStrong && after.kind == tLParen || next.is(tWord, kwNull)
	case kwDrop, kwCreate:
		return ctx || next.is(tWord, kwObject)
	case kwInsert:
		return ctx || next.is(tWord, kwInto)
	case kwDelete:
		return ctx || next.is(tWord, kwFrom)
	case kwUpdate:
		return ctx || next.kind == tWord && after.is(tWord, kwSet)
	case kwExec:
		return ctx || next.kind == tWord || next.kind == tLParen
	case kwDeclare:
		return ctx || next.kind == tAt
	case kwWaitfor:
		return ctx || next.is(tWord, kwDelay)
	case kwShutdown:
		return ctx || next.kind == 0 || next.kind == tComment || next.is(tWord, kwWith)
	}
	return false
}

// errorProbe: a value that is a number (or nothing) and a quote, maybe
// closing brackets: id=1' , id=1") , q=' — what a scanner sends first to see
// whether the server's SQL breaks. It returns the value's offset, or -1.
func errorProbe(t []token) int {
	n := len(t)
	for n > 0 && t[n-1].kind == tRParen {
		n--
	}
	if n == 0 || t[n-1].kind != tQuote {
		return -1
	}
	q := n - 1
	v := q
	if at(t, v-1).kind == tOther && at(t, v-1).ch == '\\' {
		v--
	}
	if at(t, v-1).kind == tNum {
		v--
	}
	if !valueStart(t, v) {
		return -1
	}
	return int(t[v].pos)
}
