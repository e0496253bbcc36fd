package connector

import (
	"fmt"
	"mime"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message/charset"

	"github.com/mailbus/mailbus/connector/validate"
	"github.com/mailbus/mailbus/schemas"
)

// A route's filter is a list of conditions, all of which a message must meet. Each source
// hands the server what it can express (IMAP: UID SEARCH, Exchange: a FindItem restriction)
// and checks the rest itself on the message's header, read before and instead of its body.

type condKind int

const (
	condHeader  condKind = iota // a header contains value ("": the header is present)
	condSince                   // received on date or later
	condBefore                  // received before date
	condMinSize                 // size >= size
	condMaxSize                 // size <= size
)

// condition is one condition of a filter.
type condition struct {
	kind  condKind
	name  string // condHeader: the header name (From, To, Cc, Subject or the route's)
	value string // condHeader: the substring, as given
	date  time.Time
	size  int64
}

// ascii reports whether the condition is plain ASCII, which every IMAP server searches.
func (c condition) ascii() bool {
	for i := 0; i < len(c.value); i++ {
		if c.value[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// mailFilter is a route's filter ready to use; nil takes every message.
type mailFilter struct {
	conds []condition
}

// newMailFilter compiles a validated filter; nil for none (or one without conditions).
func newMailFilter(f *schemas.RouteFilter) (*mailFilter, error) {
	if f.IsZero() {
		return nil, nil
	}
	if e := validate.Filter(f); e != nil {
		return nil, fmt.Errorf("%s: %s", e.Field, e.Message)
	}
	m := &mailFilter{}
	for _, h := range []struct{ name, v string }{{"From", f.From}, {"To", f.To}, {"Cc", f.Cc}, {"Subject", f.Subject}} {
		if h.v != "" {
			m.conds = append(m.conds, condition{kind: condHeader, name: h.name, value: h.v})
		}
	}
	for _, h := range f.Headers {
		m.conds = append(m.conds, condition{kind: condHeader, name: h.Name, value: h.Contains})
	}
	if f.Since != "" {
		d, _ := time.Parse(validate.FilterDate, f.Since)
		m.conds = append(m.conds, condition{kind: condSince, date: d})
	}
	if f.Before != "" {
		d, _ := time.Parse(validate.FilterDate, f.Before)
		m.conds = append(m.conds, condition{kind: condBefore, date: d})
	}
	if f.MinSize > 0 {
		m.conds = append(m.conds, condition{kind: condMinSize, size: f.MinSize})
	}
	if f.MaxSize > 0 {
		m.conds = append(m.conds, condition{kind: condMaxSize, size: f.MaxSize})
	}
	return m, nil
}

// split divides the filter into what the server evaluates (server says which conditions it
// can express) and what mailbus checks on the header (nil when nothing is left).
func (f *mailFilter) split(server func(condition) bool) (remote []condition, local *mailFilter) {
	for _, c := range f.conds {
		if server(c) {
			remote = append(remote, c)
		} else {
			if local == nil {
				local = &mailFilter{}
			}
			local.conds = append(local.conds, c)
		}
	}
	return remote, local
}

// mailFacts is what the local check of a message looks at: its header (raw values by
// lower-case name, in order), its size and when it was received.
type mailFacts struct {
	header   map[string][]string
	size     int64
	received time.Time
}

func (m *mailFacts) add(name, value string) {
	if m.header == nil {
		m.header = make(map[string][]string)
	}
	k := strings.ToLower(name)
	m.header[k] = append(m.header[k], value)
}

// filterWords decodes RFC 2047 encoded words; an unknown charset leaves the word as it is.
var filterWords = &mime.WordDecoder{CharsetReader: charset.Reader}

// match reports whether m meets every condition of f, with IMAP SEARCH's semantics: a
// header condition holds when one occurrence of the header, decoded and unfolded, contains
// the value ignoring case; dates compare the day of reception, ignoring time and zone.
func (f *mailFilter) match(m *mailFacts) bool {
	for _, c := range f.conds {
		switch c.kind {
		case condHeader:
			if !headerContains(m.header[strings.ToLower(c.name)], c.value) {
				return false
			}
		case condSince, condBefore:
			if m.received.IsZero() {
				return false
			}
			y, mo, d := m.received.Date()
			day := time.Date(y, mo, d, 0, 0, 0, 0, time.UTC)
			if c.kind == condSince && day.Before(c.date) || c.kind == condBefore && !day.Before(c.date) {
				return false
			}
		case condMinSize:
			if m.size < c.size {
				return false
			}
		case condMaxSize:
			if m.size > c.size {
				return false
			}
		}
	}
	return true
}

func headerContains(values []string, sub string) bool {
	sub = strings.ToLower(sub)
	for _, v := range values {
		if d, err := filterWords.DecodeHeader(v); err == nil {
			v = d
		}
		v = strings.NewReplacer("\r\n", "", "\n", "").Replace(v)
		if strings.Contains(strings.ToLower(v), sub) {
			return true
		}
	}
	return false
}
