package connector_test

import (
	"strings"
	"testing"
)

// TestRouteFilterValidation puts routes with bad filters through the control plane: each
// is refused with the field that is wrong, and the config bucket does not change. A good
// filter is stored and read back as it was put.
func TestRouteFilterValidation(t *testing.T) {
	s := startService(t, svcConfig(t), nil, nil)
	s.ok("mail.control.connection.put", imapConnection("c1"))
	const rput = "mail.control.route.put"
	route := func(filter any) map[string]any {
		r := inboxRoute("r1", "c1")
		r["filter"] = filter
		return r
	}
	for _, tc := range []struct {
		name    string
		filter  any
		field   string
		message string
	}{
		{"line break in subject", map[string]any{"subject": "a\r\nb"}, "filter.subject", "line breaks"},
		{"control character in from", map[string]any{"from": "a\x00b"}, "filter.from", "control"},
		{"too long to", map[string]any{"to": strings.Repeat("x", 1001)}, "filter.to", "at most 1000"},
		{"header without name", map[string]any{"headers": []any{map[string]any{"name": "X-Ok"}, map[string]any{"contains": "x"}}}, "filter.headers[1].name", "required"},
		{"header name with space", map[string]any{"headers": []any{map[string]any{"name": "X Bad"}}}, "filter.headers[0].name", "header name"},
		{"header value with tab", map[string]any{"headers": []any{map[string]any{"name": "X-A", "contains": "a\tb"}}}, "filter.headers[0].contains", "control"},
		{"unknown header field", map[string]any{"headers": []any{map[string]any{"name": "X-A", "value": "b"}}}, "filter.headers[0].value", "unknown field"},
		{"unknown condition", map[string]any{"body": "invoice"}, "filter.body", "unknown field"},
		{"since not a date", map[string]any{"since": "yesterday"}, "filter.since", "YYYY-MM-DD"},
		{"since with a time", map[string]any{"since": "2026-11-01T00:00:00Z"}, "filter.since", "YYYY-MM-DD"},
		{"before not a day", map[string]any{"before": "2026-02-30"}, "filter.before", "YYYY-MM-DD"},
		{"before not after since", map[string]any{"since": "2026-11-02", "before": "2026-11-02"}, "filter.before", "after filter.since"},
		{"negative minSize", map[string]any{"minSize": -1}, "filter.minSize", "0 or more"},
		{"negative maxSize", map[string]any{"maxSize": -5}, "filter.maxSize", "0 (no limit)"},
		{"maxSize below minSize", map[string]any{"minSize": 1000, "maxSize": 10}, "filter.maxSize", "below filter.minSize"},
		{"size not a number", map[string]any{"minSize": "1k"}, "filter.minSize", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.snapshot()
			e := s.fail(rput, route(tc.filter), "invalid", tc.field)
			if !strings.Contains(e.Message, tc.message) {
				t.Errorf("message %q does not contain %q", e.Message, tc.message)
			}
			if after := s.snapshot(); after != before {
				t.Errorf("config bucket changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}

	good := map[string]any{
		"from": "@example.org", "subject": "Счёт", "since": "2026-11-01", "before": "2026-12-01",
		"headers": []any{map[string]any{"name": "X-Ticket-Id", "contains": ""}}, "minSize": 10, "maxSize": 1 << 20,
	}
	s.ok(rput, route(good))
	rep := s.ok("mail.control.route.get", map[string]any{"name": "r1"})
	if rep.Route == nil {
		t.Fatalf("route.get: no route")
	}
	f := rep.Route.Filter
	if f == nil || f.From != "@example.org" || f.Subject != "Счёт" || f.Since != "2026-11-01" || f.Before != "2026-12-01" ||
		len(f.Headers) != 1 || f.Headers[0].Name != "X-Ticket-Id" || f.MinSize != 10 || f.MaxSize != 1<<20 {
		t.Errorf("stored filter %+v, want what was put", f)
	}
	// An empty filter is no filter: stored without one.
	s.ok(rput, route(map[string]any{"subject": "", "headers": []any{}}))
	if rep = s.ok("mail.control.route.get", map[string]any{"name": "r1"}); rep.Route.Filter != nil {
		t.Errorf("empty filter stored: %+v", rep.Route.Filter)
	}
}
