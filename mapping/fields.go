package mapping

import (
	"bytes"
	"fmt"
	"io"
	"net/mail"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message/charset"
	"github.com/mailbus/mailbus/schemas"
)

// utf8Text returns s as valid UTF-8. Raw UTF-8 is legal in headers (RFC 6532) and kept as is;
// other 8-bit bytes are read in the message's charset when it declares one, else as
// windows-1252, with a warning.
func (m *mapper) utf8Text(where, s string) string {
	if utf8.ValidString(s) {
		return s
	}
	if m.fallback != "" {
		if r, err := charset.Reader(m.fallback, strings.NewReader(s)); err == nil {
			if b, err := io.ReadAll(r); err == nil && utf8.Valid(b) {
				m.warn("8-bit bytes in %s: read as %s", where, m.fallback)
				return string(b)
			}
		}
	}
	m.warn("8-bit bytes in %s: read as windows-1252", where)
	return bestEffortUTF8([]byte(s))
}

// encodedWord matches an RFC 2047 encoded-word left undecoded.
var encodedWord = regexp.MustCompile(`=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=`)

// text decodes an unstructured header value: 8-bit bytes, then RFC 2047 encoded-words.
func (m *mapper) text(where, v string) string {
	v = m.utf8Text(where, v)
	if !strings.Contains(v, "=?") {
		return v
	}
	m.where = where
	d, err := m.words.DecodeHeader(v)
	if err != nil {
		m.warn("cannot decode %s: %v: kept as is", where, err)
		return v
	}
	if strings.Contains(d, "=?") && encodedWord.MatchString(d) {
		m.warn("broken encoded-word in %s: kept as is", where)
	}
	if !utf8.ValidString(d) {
		m.warn("invalid UTF-8 in encoded-word of %s: read as windows-1252", where)
		d = bestEffortUTF8([]byte(d))
	}
	return d
}

// wordCharset is the CharsetReader of the RFC 2047 decoder. An unknown charset keeps the raw
// bytes (with a warning) instead of failing the whole header.
func (m *mapper) wordCharset(label string, in io.Reader) (io.Reader, error) {
	r, err := charset.Reader(label, in)
	if err != nil {
		m.warn("unknown charset %q in %s: kept raw bytes", label, m.where)
		return in, nil
	}
	return r, nil
}

// decodeCharset converts b from charset cs to UTF-8. where names the part for warnings.
func (m *mapper) decodeCharset(b []byte, cs, where string) string {
	if utf8Label(cs) {
		// Mislabelled UTF-8 (us-ascii, or no charset at all) is the common case: accept it.
		if !utf8.Valid(b) {
			m.warn("invalid UTF-8 in %s: read as windows-1252", where)
			return bestEffortUTF8(b)
		}
		return string(b)
	}
	cs = strings.ToLower(strings.Trim(cs, " \t\"'"))
	r, err := charset.Reader(cs, bytes.NewReader(b))
	if err != nil {
		m.warn("unknown charset %q in %s: kept raw bytes", cs, where)
		return bestEffortUTF8(b)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		m.warn("cannot decode %s from %s: %v: kept raw bytes", where, cs, err)
		return bestEffortUTF8(b)
	}
	return bestEffortUTF8(out)
}

// utf8Label reports whether decodeCharset reads the charset cs as UTF-8.
func utf8Label(cs string) bool {
	switch strings.ToLower(strings.Trim(cs, " \t\"'")) {
	case "", "utf-8", "utf8", "us-ascii", "ascii":
		return true
	}
	return false
}

// dropCR removes the '\r' of every "\r\n" in b, in place.
func dropCR(b []byte) []byte {
	i := bytes.Index(b, []byte("\r\n"))
	if i < 0 {
		return b
	}
	w := i
	for r := i; r < len(b); r++ {
		if b[r] == '\r' && r+1 < len(b) && b[r+1] == '\n' {
			continue
		}
		b[w] = b[r]
		w++
	}
	return b[:w]
}

// addresses parses every occurrence of an address header. An unparsable list is salvaged
// element by element and the raw text is named in a warning.
func (m *mapper) addresses(h header, key string) []schemas.Address {
	out := []schemas.Address{}
	where := headerWhere(key)
	for _, f := range h {
		if f.Key != key {
			continue
		}
		v := m.utf8Text(where, f.Value)
		if strings.Trim(v, " \t,;") == "" {
			continue
		}
		m.where = where
		n := len(out)
		var fast bool
		if out, fast = fastAddressList(v, m.words, out); fast {
			for i := n; i < len(out); i++ {
				// As below: a decoded name may hold encoded-words of its own.
				if strings.Contains(out[i].Name, "=?") {
					out[i].Name = m.text(where, out[i].Name)
				}
			}
			continue
		}
		list, err := m.addrParser.ParseList(v)
		if bare, ok := bareLocal(v); err != nil && ok {
			// The whole field is one bare local part: the warning below is enough.
			m.warn("address %q in %s has no domain: kept as written", clip(bare, 100), m.where)
			list, err = []*mail.Address{{Address: bare}}, nil
		}
		if err != nil {
			list = m.salvageAddresses(v)
			m.warn("bad address list in %s %q: kept %d address(es)", key, clip(v, 200), len(list))
		}
		for _, a := range list {
			name := a.Name
			// net/mail leaves encoded-words inside quotes alone; Outlook writes them that way.
			if strings.Contains(name, "=?") {
				name = m.text(where, name)
			}
			out = append(out, schemas.Address{Name: name, Address: a.Address})
		}
	}
	return out
}

// headerWhere is "header "+key for the address headers without an allocation each.
func headerWhere(key string) string {
	switch key {
	case "From":
		return "header From"
	case "To":
		return "header To"
	case "Cc":
		return "header Cc"
	case "Bcc":
		return "header Bcc"
	case "Reply-To":
		return "header Reply-To"
	}
	return "header " + key
}

// bareLocal returns s as an address without a domain ("foo", "<foo>"): one word, no '@'.
func bareLocal(s string) (string, bool) {
	bare := strings.Trim(s, " \t<>\"'")
	return bare, bare != "" && !strings.ContainsAny(bare, " \t<>\",;:@()[]")
}

// looseAddress finds something that looks like an address in a broken list element.
var looseAddress = regexp.MustCompile(`[^\s<>()\[\],;:"]+@[^\s<>()\[\],;:"]+`)

func (m *mapper) salvageAddresses(v string) []*mail.Address {
	var out []*mail.Address
	parts := splitList(v)
	for i, part := range parts {
		// Drop a group's display name ("Team: a@x") and its terminator.
		part = strings.Trim(part, " \t;")
		if i := strings.IndexByte(part, ':'); i >= 0 && !strings.ContainsAny(part[:i], `"<@`) {
			part = part[i+1:]
		}
		if strings.TrimSpace(part) == "" {
			continue
		}
		if a, err := m.addrParser.Parse(part); err == nil {
			out = append(out, a)
			continue
		}
		found := looseAddress.FindAllString(part, -1)
		for _, s := range found {
			a := &mail.Address{Address: s}
			if len(found) == 1 {
				a.Name = strings.Trim(strings.Replace(part, s, "", 1), ` <>"'(),`)
			}
			out = append(out, a)
		}
		// No domain: a bare local part ("From: foo", as cron and some scripts write) is kept
		// as written rather than dropped; but a word before "Name <address>" is the start of
		// a display name cut at its unquoted comma ("Smith, John <js@x.org>").
		nameCut := i+1 < len(parts) && strings.Contains(parts[i+1], "<")
		if len(found) == 0 && !nameCut {
			if bare, ok := bareLocal(part); ok {
				m.warn("address %q in %s has no domain: kept as written", clip(bare, 100), m.where)
				out = append(out, &mail.Address{Address: bare})
			}
		}
	}
	return out
}

// splitList splits an address list on commas that are outside quotes, comments and angle
// brackets.
func splitList(s string) []string {
	var parts []string
	var quoted bool
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && quoted:
			i++
		case c == '"':
			quoted = !quoted
		case quoted:
		case c == '<' || c == '(':
			depth++
		case (c == '>' || c == ')') && depth > 0:
			depth--
		case c == ',' && depth == 0:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// msgIDs returns the message ids in v with their angle brackets. Ids without brackets (from
// broken mailers) are returned as the blank-separated words of v.
func msgIDs(v string) []string {
	ids := []string{}
	rest := v
	for {
		i := strings.IndexByte(rest, '<')
		if i < 0 {
			break
		}
		j := strings.IndexByte(rest[i:], '>')
		if j < 0 {
			break
		}
		id := rest[i : i+j+1]
		if !printableASCII(id) { // blanks inside (folded, or broken): dropped
			id = strings.Join(strings.Fields(id), "")
		}
		if len(id) > 2 {
			ids = append(ids, id)
		}
		rest = rest[i+j+1:]
	}
	if len(ids) == 0 {
		ids = append(ids, strings.Fields(v)...)
	}
	return ids
}

// printableASCII reports whether s is all printable ASCII, without blanks: what
// strings.Fields leaves as one field.
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// zones are the time zone names seen in Date headers: RFC 5322's obsolete ones (which
// net/mail accepts but reads as UTC) and a few common others.
var zones = map[string]string{
	"UT": "+0000", "UTC": "+0000", "GMT": "+0000", "Z": "+0000",
	"EST": "-0500", "EDT": "-0400", "CST": "-0600", "CDT": "-0500",
	"MST": "-0700", "MDT": "-0600", "PST": "-0800", "PDT": "-0700",
	"CET": "+0100", "CEST": "+0200", "MET": "+0100", "MEST": "+0200", "EET": "+0200",
	"EEST": "+0300", "MSK": "+0300", "JST": "+0900", "KST": "+0900", "HKT": "+0800",
}

// dateLayouts are tried after net/mail.ParseDate, for dates that ignore RFC 5322.
var dateLayouts = []string{
	"Mon, 2 January 2006 15:04:05 -0700",
	"Monday, 2 January 2006 15:04:05 -0700",
	"Monday, 2 Jan 2006 15:04:05 -0700",
	"Mon Jan 2 15:04:05 -0700 2006",
	"2006-01-02T15:04:05Z07:00",
	"2006-01-02 15:04:05 -0700",
}

// dateLayoutsNoZone are read as UTC, with a warning.
var dateLayoutsNoZone = []string{
	"Mon, 2 Jan 2006 15:04:05",
	"2 Jan 2006 15:04:05",
	"Mon, 2 Jan 2006 15:04",
	"Mon Jan 2 15:04:05 2006",
	"2006-01-02 15:04:05",
	"2006-01-02T15:04:05",
}

// parseDate parses a Date header leniently. note says what was assumed, if anything.
func parseDate(v string) (t time.Time, note string, ok bool) {
	s := stripComments(v)
	f := strings.Fields(strings.ReplaceAll(s, ",", ", "))
	if len(f) == 0 {
		return time.Time{}, "", false
	}
	// "Mon ,2 Jan" and "Mon,2 Jan" both become "Mon, 2 Jan".
	s = strings.ReplaceAll(strings.Join(f, " "), " ,", ",")
	last := f[len(f)-1]
	if z, ok := zones[strings.ToUpper(last)]; ok {
		s = strings.TrimSuffix(s, last) + z
	} else if len(last) == 6 && (last[0] == '+' || last[0] == '-') && last[3] == ':' {
		s = strings.TrimSuffix(s, last) + last[:3] + last[4:] // +01:00
	} else if isAlpha(last) && len(f) >= 5 {
		note = fmt.Sprintf("unknown time zone %q in Date: read as UTC", last)
		s = strings.TrimSuffix(s, last) + "+0000"
	}
	if t, err := mail.ParseDate(s); err == nil {
		return t, note, true
	}
	for _, l := range dateLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, note, true
		}
	}
	for _, l := range dateLayoutsNoZone {
		if t, err := time.Parse(l, s); err == nil {
			return t, "Date has no time zone: read as UTC", true
		}
	}
	return time.Time{}, "", false
}

// fastDate reads the one form nearly every mailer writes, "Mon, 2 Jan 2006 15:04:05 -0700"
// (the day in one or two digits, single blanks, and at most a comment at the end, as in
// "+0000 (UTC)"), and returns the time in UTC. It gives what parseDate gives for such a
// value without parseDate's rewriting and net/mail's trying of its layouts one after
// another, each failure allocating an error: that was a tenth of the mapping of small mail.
// ok is false for any other value, and for values out of range, which parseDate then reads.
func fastDate(v string) (t time.Time, ok bool) {
	// "Mon, 2 Jan 2006 15:04:05 -0700" is 30 bytes, 31 with a two-digit day.
	if i := strings.IndexByte(v, '('); i >= 0 {
		// A comment at the end, without parentheses inside: stripComments removes it and
		// strings.Fields the blank before it.
		if i == 0 || v[i-1] != ' ' || v[len(v)-1] != ')' || strings.ContainsAny(v[i+1:len(v)-1], "()") {
			return time.Time{}, false
		}
		v = v[:i-1]
	}
	if len(v) == 30 {
		v = v[:5] + "0" + v[5:] // no allocation: the result does not escape
	}
	if len(v) != 31 || v[3] != ',' || v[4] != ' ' || v[7] != ' ' || v[11] != ' ' || v[16] != ' ' ||
		v[19] != ':' || v[22] != ':' || v[25] != ' ' || v[26] != '+' && v[26] != '-' {
		return time.Time{}, false
	}
	if lookupName(shortDays[:], v[0:3]) < 0 {
		return time.Time{}, false
	}
	month := lookupName(shortMonths[:], v[8:11]) + 1
	day, ok1 := digits(v[5:7])
	year, ok2 := digits(v[12:16])
	hour, ok3 := digits(v[17:19])
	minute, ok4 := digits(v[20:22])
	sec, ok5 := digits(v[23:25])
	zh, ok6 := digits(v[27:29])
	zm, ok7 := digits(v[29:31])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && ok7) || month < 1 || year < 1 ||
		hour > 23 || minute > 59 || sec > 59 || zh > 23 || zm > 59 ||
		day < 1 || day > time.Date(year, time.Month(month)+1, 0, 0, 0, 0, 0, time.UTC).Day() {
		return time.Time{}, false
	}
	offset := time.Duration(zh*60+zm) * time.Minute
	if v[26] == '-' {
		offset = -offset
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, 0, time.UTC).Add(-offset), true
}

var (
	shortDays   = [...]string{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}
	shortMonths = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}
)

// lookupName returns the index of s in names, ignoring ASCII case as time.Parse does, or -1.
func lookupName(names []string, s string) int {
next:
	for i, n := range names {
		for j := 0; j < len(n); j++ {
			if c := s[j]; c != n[j] && c|0x20 != n[j]|0x20 {
				continue next
			}
		}
		return i
	}
	return -1
}

// digits returns the value of a string of ASCII digits.
func digits(s string) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

func isAlpha(s string) bool {
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return s != ""
}

// stripComments removes (comments), which may nest.
func stripComments(s string) string {
	if !strings.Contains(s, "(") {
		return s
	}
	var b strings.Builder
	depth := 0
	for _, c := range s {
		switch {
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteRune(c)
		}
	}
	return b.String()
}

func (m *mapper) date(h header) *time.Time {
	v, ok := h.get("Date")
	if !ok || strings.TrimSpace(v) == "" {
		m.warn("no Date header")
		return nil
	}
	v = m.utf8Text("header Date", v)
	t, ok := fastDate(v)
	var note string
	if !ok {
		if t, note, ok = parseDate(v); !ok {
			m.warn("unparsable Date %q: left empty", clip(v, 100))
			return nil
		}
	}
	// The year in UTC, as the event has it: RFC 3339 and encoding/json cannot write one
	// outside 1..9999, and 31 Dec 9999 23:59:59 -0100 is in year 10000 there (the event
	// then failed to encode, for the fast path too).
	if t = t.UTC(); t.Year() < 1 || t.Year() > 9999 {
		m.warn("Date %q out of range: left empty", clip(v, 100))
		return nil
	}
	if note != "" {
		m.warn("%s", note)
	}
	return &t
}

// clip shortens s for a warning, on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
