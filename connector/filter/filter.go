// Package filter is a route's filter: the conditions a message must meet, validated and
// compiled. Each source hands the server what it can express (IMAP: UID SEARCH, Exchange: a
// FindItem restriction) and checks the rest itself on the message's header, read before
// and instead of its body. It knows no source.
package filter

import (
	"fmt"
	"mime"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message/charset"

	"github.com/mailbus/mailbus/schemas"
)

// DateLayout is the layout of since and before.
const DateLayout = "2006-01-02"

// maxText bounds a filter string: a search key, not a document.
const maxText = 1000

// headerName is RFC 5322 field-name: printable ASCII except the colon.
var headerName = regexp.MustCompile(`^[!-9;-~]+$`)

// Kind is what a condition looks at.
type Kind int

// The kinds of condition.
const (
	Header  Kind = iota // a header contains Value ("": the header is present)
	Since               // received on Date or later
	Before              // received before Date
	MinSize             // size >= Size
	MaxSize             // size <= Size
)

// Condition is one condition of a filter.
type Condition struct {
	Kind  Kind
	Name  string // Header: the header name (From, To, Cc, Subject or the route's)
	Value string // Header: the substring, as given
	Date  time.Time
	Size  int64
}

// ASCII reports whether the condition is plain ASCII, which every IMAP server searches.
func (c Condition) ASCII() bool {
	for i := 0; i < len(c.Value); i++ {
		if c.Value[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// Filter is a route's filter ready to use; nil takes every message.
type Filter struct {
	conds []Condition
}

// New compiles a route's filter; nil for none (or one without conditions). A filter that
// Validate refuses is an error.
func New(f *schemas.RouteFilter) (*Filter, error) {
	if f.IsZero() {
		return nil, nil
	}
	if e := Validate(f); e != nil {
		return nil, fmt.Errorf("%s: %s", e.Field, e.Message)
	}
	m := &Filter{}
	for _, h := range []struct{ name, v string }{{"From", f.From}, {"To", f.To}, {"Cc", f.Cc}, {"Subject", f.Subject}} {
		if h.v != "" {
			m.conds = append(m.conds, Condition{Kind: Header, Name: h.name, Value: h.v})
		}
	}
	for _, h := range f.Headers {
		m.conds = append(m.conds, Condition{Kind: Header, Name: h.Name, Value: h.Contains})
	}
	if f.Since != "" {
		d, _ := time.Parse(DateLayout, f.Since)
		m.conds = append(m.conds, Condition{Kind: Since, Date: d})
	}
	if f.Before != "" {
		d, _ := time.Parse(DateLayout, f.Before)
		m.conds = append(m.conds, Condition{Kind: Before, Date: d})
	}
	if f.MinSize > 0 {
		m.conds = append(m.conds, Condition{Kind: MinSize, Size: f.MinSize})
	}
	if f.MaxSize > 0 {
		m.conds = append(m.conds, Condition{Kind: MaxSize, Size: f.MaxSize})
	}
	return m, nil
}

// Split divides the filter into what the server evaluates (server says which conditions it
// can express) and what mailbus checks on the header (nil when nothing is left).
func (f *Filter) Split(server func(Condition) bool) (remote []Condition, local *Filter) {
	for _, c := range f.conds {
		if server(c) {
			remote = append(remote, c)
		} else {
			if local == nil {
				local = &Filter{}
			}
			local.conds = append(local.conds, c)
		}
	}
	return remote, local
}

// Facts is what the local check of a message looks at: its header (raw values, in order),
// its size and when it was received.
type Facts struct {
	header   map[string][]string // by lower-case name
	Size     int64
	Received time.Time
}

// Add records one header field, as it came (encoded words and folding are undone by Match).
func (m *Facts) Add(name, value string) {
	if m.header == nil {
		m.header = make(map[string][]string)
	}
	k := strings.ToLower(name)
	m.header[k] = append(m.header[k], value)
}

// words decodes RFC 2047 encoded words; an unknown charset leaves the word as it is.
var words = &mime.WordDecoder{CharsetReader: charset.Reader}

// Match reports whether m meets every condition of f, with IMAP SEARCH's semantics: a
// header condition holds when one occurrence of the header, decoded and unfolded, contains
// the value ignoring case; dates compare the day of reception, ignoring time and zone.
func (f *Filter) Match(m *Facts) bool {
	for _, c := range f.conds {
		switch c.Kind {
		case Header:
			if !headerContains(m.header[strings.ToLower(c.Name)], c.Value) {
				return false
			}
		case Since, Before:
			if m.Received.IsZero() {
				return false
			}
			y, mo, d := m.Received.Date()
			day := time.Date(y, mo, d, 0, 0, 0, 0, time.UTC)
			if c.Kind == Since && day.Before(c.Date) || c.Kind == Before && !day.Before(c.Date) {
				return false
			}
		case MinSize:
			if m.Size < c.Size {
				return false
			}
		case MaxSize:
			if m.Size > c.Size {
				return false
			}
		}
	}
	return true
}

func headerContains(values []string, sub string) bool {
	sub = strings.ToLower(sub)
	for _, v := range values {
		if d, err := words.DecodeHeader(v); err == nil {
			v = d
		}
		v = strings.NewReplacer("\r\n", "", "\n", "").Replace(v)
		if strings.Contains(strings.ToLower(v), sub) {
			return true
		}
	}
	return false
}

// Validate checks a route's filter; errors name the field in JSON path form
// (filter.headers[1].name, filter.since).
func Validate(f *schemas.RouteFilter) *schemas.Error {
	for _, t := range []struct{ field, v string }{
		{"filter.from", f.From}, {"filter.to", f.To}, {"filter.cc", f.Cc}, {"filter.subject", f.Subject},
	} {
		if e := checkText(t.field, t.v); e != nil {
			return e
		}
	}
	for i, h := range f.Headers {
		field := fmt.Sprintf("filter.headers[%d]", i)
		if h.Name == "" {
			return invalid(field+".name", "%s.name is required", field)
		}
		if !headerName.MatchString(h.Name) {
			return invalid(field+".name", "header name %q: want printable ASCII without spaces or colons", h.Name)
		}
		if e := checkText(field+".contains", h.Contains); e != nil {
			return e
		}
	}
	var since, before time.Time
	for _, d := range []struct {
		field, v string
		t        *time.Time
	}{{"filter.since", f.Since, &since}, {"filter.before", f.Before, &before}} {
		if d.v == "" {
			continue
		}
		t, err := time.Parse(DateLayout, d.v)
		if err != nil {
			return invalid(d.field, "%s %q: want a date YYYY-MM-DD", d.field, d.v)
		}
		*d.t = t
	}
	if !since.IsZero() && !before.IsZero() && !since.Before(before) {
		return invalid("filter.before", "filter.before %s must be after filter.since %s: no message could match", f.Before, f.Since)
	}
	if f.MinSize < 0 {
		return invalid("filter.minSize", "filter.minSize %d: want 0 or more bytes", f.MinSize)
	}
	if f.MaxSize < 0 {
		return invalid("filter.maxSize", "filter.maxSize %d: want 0 (no limit) or more bytes", f.MaxSize)
	}
	if f.MaxSize > 0 && f.MaxSize < f.MinSize {
		return invalid("filter.maxSize", "filter.maxSize %d is below filter.minSize %d: no message could match", f.MaxSize, f.MinSize)
	}
	return nil
}

func checkText(field, v string) *schemas.Error {
	switch {
	case len(v) > maxText:
		return invalid(field, "%s: %d bytes, want at most %d", field, len(v), maxText)
	case !utf8.ValidString(v):
		return invalid(field, "%s is not valid UTF-8", field)
	case strings.ContainsFunc(v, func(r rune) bool { return r < ' ' || r == 0x7f }):
		return invalid(field, "%s %q must not contain line breaks or control characters", field, v)
	}
	return nil
}

func invalid(field, format string, args ...any) *schemas.Error {
	return &schemas.Error{Code: schemas.CodeInvalid, Field: field, Message: fmt.Sprintf(format, args...)}
}
