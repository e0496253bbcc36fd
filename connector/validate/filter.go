package validate

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mailbus/mailbus/schemas"
)

// FilterDate is the layout of a filter's since and before.
const FilterDate = "2006-01-02"

// maxFilterText bounds a filter string: a search key, not a document.
const maxFilterText = 1000

// Filter checks a route's filter; errors name the field in JSON path form
// (filter.headers[1].name, filter.since).
func Filter(f *schemas.RouteFilter) *schemas.Error {
	for _, t := range []struct{ field, v string }{
		{"filter.from", f.From}, {"filter.to", f.To}, {"filter.cc", f.Cc}, {"filter.subject", f.Subject},
	} {
		if e := checkFilterText(t.field, t.v); e != nil {
			return e
		}
	}
	for i, h := range f.Headers {
		field := fmt.Sprintf("filter.headers[%d]", i)
		if h.Name == "" {
			return Invalid(field+".name", "%s.name is required", field)
		}
		if !headerNameRule.MatchString(h.Name) {
			return Invalid(field+".name", "header name %q: want printable ASCII without spaces or colons", h.Name)
		}
		if e := checkFilterText(field+".contains", h.Contains); e != nil {
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
		t, err := time.Parse(FilterDate, d.v)
		if err != nil {
			return Invalid(d.field, "%s %q: want a date YYYY-MM-DD", d.field, d.v)
		}
		*d.t = t
	}
	if !since.IsZero() && !before.IsZero() && !since.Before(before) {
		return Invalid("filter.before", "filter.before %s must be after filter.since %s: no message could match", f.Before, f.Since)
	}
	if f.MinSize < 0 {
		return Invalid("filter.minSize", "filter.minSize %d: want 0 or more bytes", f.MinSize)
	}
	if f.MaxSize < 0 {
		return Invalid("filter.maxSize", "filter.maxSize %d: want 0 (no limit) or more bytes", f.MaxSize)
	}
	if f.MaxSize > 0 && f.MaxSize < f.MinSize {
		return Invalid("filter.maxSize", "filter.maxSize %d is below filter.minSize %d: no message could match", f.MaxSize, f.MinSize)
	}
	return nil
}

func checkFilterText(field, v string) *schemas.Error {
	switch {
	case len(v) > maxFilterText:
		return Invalid(field, "%s: %d bytes, want at most %d", field, len(v), maxFilterText)
	case !utf8.ValidString(v):
		return Invalid(field, "%s is not valid UTF-8", field)
	case strings.ContainsFunc(v, func(r rune) bool { return r < ' ' || r == 0x7f }):
		return Invalid(field, "%s %q must not contain line breaks or control characters", field, v)
	}
	return nil
}
