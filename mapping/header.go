package mapping

import (
	"bufio"
	"bytes"
	"io"
	"net/textproto"
	"sort"
	"strconv"
	"strings"
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
	budget := maxHeaderBytes
	body = br
	first := true
	for {
		line, rerr := readLine(br)
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
			if len(h) == 0 {
				warns = append(warns, headerFoldedWarning)
				continue
			}
			h[len(h)-1].Value = joinFolded(h[len(h)-1].Value, line)
			continue
		}
		name, value, ok := splitField(line)
		if !ok {
			if len(h) == 0 {
				return nil, nil, nil, ErrNoHeader
			}
			warns = append(warns, "header ends without a blank line: the rest read as body")
			body = io.MultiReader(bytes.NewReader(line), br)
			break
		}
		h = append(h, field{Name: name, Key: textproto.CanonicalMIMEHeaderKey(name), Value: joinFolded("", value)})
		if rerr == io.EOF {
			break
		}
	}
	if len(h) == 0 {
		return nil, nil, nil, ErrNoHeader
	}
	return h, body, warns, nil
}

// readLine reads one line including its end. A line longer than the header budget is cut:
// the rest is consumed and dropped so memory stays bounded.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) <= maxHeaderBytes {
			line = append(line, chunk...)
		}
		if err != bufio.ErrBufferFull {
			return line, err
		}
	}
}

// splitField splits "Name: value". The name must be printable ASCII without blanks; blanks
// before the colon are tolerated, as go-message does.
func splitField(line []byte) (name string, value []byte, ok bool) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return "", nil, false
	}
	n := bytes.TrimRight(line[:i], " \t")
	if len(n) == 0 {
		return "", nil, false
	}
	for _, c := range n {
		if c < 33 || c > 126 {
			return "", nil, false
		}
	}
	return string(n), line[i+1:], true
}

// joinFolded appends a (continuation) line to a field value, trimming blanks around the line
// break as go-message does.
func joinFolded(v string, line []byte) string {
	l := bytes.Trim(line, " \t\r\n")
	if len(l) == 0 {
		return v
	}
	if v == "" {
		return string(l)
	}
	return v + " " + string(l)
}

// parseParams parses a Content-Type or Content-Disposition value into its lower-case first
// token and parameters. It never fails: mime.ParseMediaType refuses common breakage (unquoted
// blanks, duplicate parameters) and only decodes RFC 2231 values in UTF-8 and US-ASCII, while
// mail in the wild uses windows-1251, iso-8859-1 and others there. Values that are RFC 2231
// encoded are returned as bytes in ext with their charset, for the caller to decode.
func parseParams(s string) (token string, params map[string]string, ext map[string]extValue) {
	token, rest, _ := strings.Cut(s, ";")
	token = strings.ToLower(strings.TrimSpace(token))
	raw := map[string]string{}
	var order []string
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
		if _, dup := raw[key]; !dup && key != "" {
			raw[key] = val
			order = append(order, key)
		}
	}

	params = map[string]string{}
	type section struct {
		n   int
		v   string
		enc bool
	}
	sections := map[string][]section{}
	for _, k := range order {
		name, idx, isSection := strings.Cut(k, "*")
		if !isSection {
			params[k] = raw[k]
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
		sections[name] = append(sections[name], section{n, raw[k], enc})
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

// extValue is an RFC 2231 parameter value: bytes in a charset.
type extValue struct {
	charset string
	value   []byte
}

// unquote reads a quoted string whose opening quote is already consumed; an unterminated one
// runs to the end. A backslash escapes only a quote or a backslash: Windows mailers put paths
// like "C:\dir\file.pdf" in quotes unescaped.
func unquote(s string) (val, rest string) {
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

func canonicalKey(name string) string { return textproto.CanonicalMIMEHeaderKey(name) }
