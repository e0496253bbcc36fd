package mapping

import (
	"bufio"
	"bytes"
	"io"
	"net/textproto"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// maxHeaderBytes bounds the header block kept in memory; fields past it are skipped.
const maxHeaderBytes = 1 << 20

// field is one header field: Name as written, Key canonical (for lookups), Value unfolded and
// still raw (not yet decoded).
type field struct {
	Name, Key, Value string
}

type header []field

// get returns the first value of the field with the canonical key.
func (h header) get(key string) (string, bool) {
	for _, f := range h {
		if f.Key == key {
			return f.Value, true
		}
	}
	return "", false
}

func (h header) value(key string) string {
	v, _ := h.get(key)
	return v
}

func (h header) values(key string) []string {
	var vs []string
	for _, f := range h {
		if f.Key == key {
			vs = append(vs, f.Value)
		}
	}
	return vs
}

// readHeader's warnings for lines of the header it drops.
const (
	headerCutWarning    = "header larger than 1 MiB: the rest of it was skipped"
	headerFoldedWarning = "header starts with a folded line: skipped"
)

// headerCut reports whether readHeader's warnings say that part of the header was dropped.
func headerCut(warns []string) bool {
	for _, w := range warns {
		if w == headerCutWarning || w == headerFoldedWarning {
			return true
		}
	}
	return false
}

// readHeader reads the top-level header. It is more lenient than go-message's: an mbox
// "From " line is skipped, and a line that is not a field ends the header (the line becomes
// the first line of the body, as Python's email package does) instead of failing. Only when not
// a single field can be read is the result ErrNoHeader. body is where the body starts.
func readHeader(br *bufio.Reader) (h header, body io.Reader, warns []string, err error) {
	hb := getHeaderBuilder()
	defer putHeaderBuilder(hb)
	budget := maxHeaderBytes
	body = br
	first := true
	for {
		line, rerr := hb.readLine(br)
		if rerr != nil && rerr != io.EOF {
			return nil, nil, nil, rerr
		}
		if rerr == io.EOF && len(line) == 0 {
			break // header only, no body
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break // the blank line
		}
		if first && bytes.HasPrefix(line, []byte("From ")) {
			first = false
			continue
		}
		first = false
		budget -= len(line)
		if budget < 0 {
			if budget+len(line) >= 0 {
				warns = append(warns, headerCutWarning)
			}
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if hb.fields() == 0 {
				warns = append(warns, headerFoldedWarning)
				continue
			}
			hb.fold(line)
			continue
		}
		name, value, ok := splitField(line)
		if !ok {
			if hb.fields() == 0 {
				return nil, nil, nil, ErrNoHeader
			}
			warns = append(warns, "header ends without a blank line: the rest read as body")
			body = io.MultiReader(bytes.NewReader(bytes.Clone(line)), br)
			break
		}
		hb.add(name, value)
		if rerr == io.EOF {
			break
		}
	}
	if hb.fields() == 0 {
		return nil, nil, nil, ErrNoHeader
	}
	return hb.header(), body, warns, nil
}

// headerBuilder collects the fields of a header in one buffer, which becomes one string
// when the header is complete: a header cost an allocation for every line read, and two
// for every field (name and value) and every folded line. The fields' strings are
// substrings of that one.
type headerBuilder struct {
	buf   []byte
	spans []fieldSpan
	line  []byte // a line longer than the reader's buffer
}

// fieldSpan is a field in headerBuilder.buf: its name is buf[name:value], its value
// buf[value:end].
type fieldSpan struct{ name, value, end int }

var headerPool sync.Pool // of *headerBuilder

func getHeaderBuilder() *headerBuilder {
	if hb, _ := headerPool.Get().(*headerBuilder); hb != nil {
		return hb
	}
	return &headerBuilder{buf: make([]byte, 0, 2048), spans: make([]fieldSpan, 0, 32)}
}

// maxPooledHeader is the largest buffer of a headerBuilder kept for reuse.
const maxPooledHeader = 64 << 10

func putHeaderBuilder(hb *headerBuilder) {
	if cap(hb.buf) > maxPooledHeader || cap(hb.line) > maxPooledHeader || cap(hb.spans) > 1024 {
		return
	}
	hb.buf, hb.spans, hb.line = hb.buf[:0], hb.spans[:0], hb.line[:0]
	headerPool.Put(hb)
}

func (hb *headerBuilder) fields() int { return len(hb.spans) }

// add adds a field, its value trimmed of blanks and the line end.
func (hb *headerBuilder) add(name, value []byte) {
	start := len(hb.buf)
	hb.buf = append(hb.buf, name...)
	v := len(hb.buf)
	hb.buf = append(hb.buf, bytes.Trim(value, " \t\r\n")...)
	hb.spans = append(hb.spans, fieldSpan{start, v, len(hb.buf)})
}

// fold adds a continuation line to the last field, trimming blanks around the line break
// as go-message does. The last field's value is at the end of buf.
func (hb *headerBuilder) fold(line []byte) {
	l := bytes.Trim(line, " \t\r\n")
	if len(l) == 0 {
		return
	}
	last := &hb.spans[len(hb.spans)-1]
	if last.end > last.value {
		hb.buf = append(hb.buf, ' ')
	}
	hb.buf = append(hb.buf, l...)
	last.end = len(hb.buf)
}

// header returns the fields added.
func (hb *headerBuilder) header() header {
	if len(hb.spans) == 0 {
		return nil
	}
	s := string(hb.buf)
	h := make(header, len(hb.spans))
	for i, sp := range hb.spans {
		name := s[sp.name:sp.value]
		h[i] = field{Name: name, Key: canonicalKey(name), Value: s[sp.value:sp.end]}
	}
	return h
}

// readLine reads one line including its end. A line longer than the header budget is cut:
// the rest is consumed and dropped so memory stays bounded. The line is valid until the
// next read from br or the next readLine.
func (hb *headerBuilder) readLine(br *bufio.Reader) ([]byte, error) {
	chunk, err := br.ReadSlice('\n')
	if err != bufio.ErrBufferFull {
		return chunk, err
	}
	line := append(hb.line[:0], chunk...)
	for err == bufio.ErrBufferFull {
		chunk, err = br.ReadSlice('\n')
		if len(line)+len(chunk) <= maxHeaderBytes {
			line = append(line, chunk...)
		}
	}
	hb.line = line
	return line, err
}

// splitField splits "Name: value". The name must be printable ASCII without blanks; blanks
// before the colon are tolerated, as go-message does.
func splitField(line []byte) (name, value []byte, ok bool) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return nil, nil, false
	}
	n := bytes.TrimRight(line[:i], " \t")
	if len(n) == 0 {
		return nil, nil, false
	}
	for _, c := range n {
		if c < 33 || c > 126 {
			return nil, nil, false
		}
	}
	return n, line[i+1:], true
}

// parseParams parses a Content-Type or Content-Disposition value into its lower-case first
// token and parameters. It never fails: mime.ParseMediaType refuses common breakage (unquoted
// blanks, duplicate parameters) and only decodes RFC 2231 values in UTF-8 and US-ASCII, while
// mail in the wild uses windows-1251, iso-8859-1 and others there. Values that are RFC 2231
// encoded are returned as bytes in ext with their charset, for the caller to decode.
func parseParams(s string) (token string, params map[string]string, ext map[string]extValue) {
	token, rest, _ := strings.Cut(s, ";")
	token = strings.ToLower(strings.TrimSpace(token))
	// The parameters in order, the first of each name: in an array on the stack while
	// they are few (nearly always), and found again by a look-up in a map when many.
	var pairsArr [8]param
	pairs := pairsArr[:0]
	var seen map[string]bool
	sectioned := false
	for rest != "" {
		rest = strings.TrimLeft(rest, " \t;")
		if rest == "" {
			break
		}
		i := strings.IndexAny(rest, "=;")
		if i < 0 || rest[i] == ';' {
			// A parameter without a value: skip it.
			if i < 0 {
				break
			}
			rest = rest[i+1:]
			continue
		}
		key := strings.ToLower(strings.TrimSpace(rest[:i]))
		rest = strings.TrimLeft(rest[i+1:], " \t")
		var val string
		if strings.HasPrefix(rest, `"`) {
			val, rest = unquote(rest[1:])
		} else {
			j := strings.IndexByte(rest, ';')
			if j < 0 {
				j = len(rest)
			}
			val, rest = strings.TrimSpace(rest[:j]), rest[j:]
		}
		if key == "" || hasParam(pairs, seen, key) {
			continue
		}
		if seen == nil && len(pairs) == 32 {
			seen = make(map[string]bool, 64)
			for _, p := range pairs {
				seen[p.key] = true
			}
		}
		if seen != nil {
			seen[key] = true
		}
		pairs = append(pairs, param{key, val})
		sectioned = sectioned || strings.IndexByte(key, '*') >= 0
	}
	if len(pairs) == 0 {
		return token, nil, nil
	}

	params = make(map[string]string, len(pairs))
	if !sectioned {
		for _, p := range pairs {
			params[p.key] = p.val
		}
		return token, params, nil
	}
	type section struct {
		n   int
		v   string
		enc bool
	}
	sections := map[string][]section{}
	for _, p := range pairs {
		k := p.key
		name, idx, isSection := strings.Cut(k, "*")
		if !isSection {
			params[k] = p.val
			continue
		}
		enc := strings.HasSuffix(idx, "*") || idx == ""
		idx = strings.TrimSuffix(idx, "*")
		n := 0
		if idx != "" {
			var err error
			if n, err = strconv.Atoi(idx); err != nil || n < 0 || n > 999 {
				continue
			}
		}
		sections[name] = append(sections[name], section{n, p.val, enc})
	}
	for name, ss := range sections {
		sort.SliceStable(ss, func(i, j int) bool { return ss[i].n < ss[j].n })
		var e extValue
		var b []byte
		for i, s := range ss {
			v := s.v
			if !s.enc {
				b = append(b, v...)
				continue
			}
			if i == 0 {
				if cs, r, ok := strings.Cut(v, "'"); ok {
					if _, r2, ok := strings.Cut(r, "'"); ok {
						e.charset, v = strings.ToLower(strings.TrimSpace(cs)), r2
					}
				}
			}
			b = append(b, percentDecode(v)...)
		}
		e.value = b
		if ext == nil {
			ext = map[string]extValue{}
		}
		ext[name] = e
	}
	return token, params, ext
}

// param is a parameter of a Content-Type or Content-Disposition, its name in lower case.
type param struct{ key, val string }

// hasParam reports whether key is among pairs (or, when there are many, in seen).
func hasParam(pairs []param, seen map[string]bool, key string) bool {
	if seen != nil {
		return seen[key]
	}
	for _, p := range pairs {
		if p.key == key {
			return true
		}
	}
	return false
}

// extValue is an RFC 2231 parameter value: bytes in a charset.
type extValue struct {
	charset string
	value   []byte
}

// unquote reads a quoted string whose opening quote is already consumed; an unterminated one
// runs to the end. A backslash escapes only a quote or a backslash: Windows mailers put paths
// like "C:\dir\file.pdf" in quotes unescaped.
func unquote(s string) (val, rest string) {
	// Without a backslash before the closing quote the value is s up to it, as it is.
	if i := strings.IndexAny(s, `"\`); i < 0 {
		return s, ""
	} else if s[i] == '"' {
		return s[:i], s[i+1:]
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			if i+1 < len(s) && (s[i+1] == '"' || s[i+1] == '\\') {
				i++
			}
			b.WriteByte(s[i])
		case '"':
			return b.String(), s[i+1:]
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), ""
}

func percentDecode(s string) []byte {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		b = append(b, s[i])
	}
	return b
}

// canonicalKey is textproto.CanonicalMIMEHeaderKey, without its allocation for the names
// of every message that are not canonical as written.
func canonicalKey(name string) string {
	switch name {
	case "Message-ID":
		return "Message-Id"
	case "MIME-Version":
		return "Mime-Version"
	case "Content-ID":
		return "Content-Id"
	}
	return textproto.CanonicalMIMEHeaderKey(name)
}
