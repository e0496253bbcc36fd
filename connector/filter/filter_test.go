package filter_test

import (
	"testing"
	"time"

	"github.com/mailbus/mailbus/connector/filter"
	"github.com/mailbus/mailbus/schemas"
)

// TestMatch: header conditions hold when one occurrence, decoded (RFC 2047) and unfolded,
// contains the value ignoring case; dates compare the day of reception in UTC, since
// inclusive and before exclusive; sizes are inclusive bounds. Every condition must hold.
func TestMatch(t *testing.T) {
	f, err := filter.New(&schemas.RouteFilter{
		From: "billing@", Subject: "счёт", Since: "2026-11-20", Before: "2026-11-26", MinSize: 100, MaxSize: 1000,
		Headers: []schemas.FilterHeader{{Name: "X-Tag", Contains: "high"}},
	})
	if err != nil || f == nil {
		t.Fatalf("New() = %v, %v", f, err)
	}
	facts := func(from, tag string) *filter.Facts {
		m := &filter.Facts{Size: 500, Received: time.Date(2026, 11, 25, 23, 59, 0, 0, time.UTC)}
		m.Add("From", from)
		m.Add("Subject", "=?UTF-8?B?0JLQsNGIINCh0KfQgdCiIOKEljM=?=") // "Ваш СЧЁТ №3", encoded
		m.Add("x-tag", "low")
		m.Add("X-Tag", tag)
		return m
	}
	good := func() *filter.Facts { return facts("Billing <BILLING@billing.example>", "very\r\n HIGH") } // the tag folded, second
	if !f.Match(good()) {
		t.Fatal("Match() = false for a message meeting every condition")
	}
	for name, spoil := range map[string]func(m *filter.Facts){
		"other sender":            func(m *filter.Facts) { *m = *facts("someone@example.net", "high") },
		"no X-Tag high":           func(m *filter.Facts) { *m = *facts("billing@billing.example", "hi gh") },
		"received the day before": func(m *filter.Facts) { m.Received = time.Date(2026, 11, 19, 23, 59, 0, 0, time.UTC) },
		"received on before":      func(m *filter.Facts) { m.Received = time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC) },
		"no reception time":       func(m *filter.Facts) { m.Received = time.Time{} },
		"one byte too small":      func(m *filter.Facts) { m.Size = 99 },
		"one byte too large":      func(m *filter.Facts) { m.Size = 1001 },
	} {
		m := good()
		spoil(m)
		if f.Match(m) {
			t.Errorf("%s: Match() = true", name)
		}
	}
	edge := good()
	edge.Size, edge.Received = 1000, time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	if !f.Match(edge) {
		t.Error("Match() = false on the bounds (size 1000, received on since)")
	}
}

// TestSplit: the server takes what it can express, mailbus keeps the rest; a filter the
// server takes whole leaves nothing local.
func TestSplit(t *testing.T) {
	f, _ := filter.New(&schemas.RouteFilter{From: "a@b", Subject: "Счёт", MinSize: 10})
	remote, local := f.Split(filter.Condition.ASCII)
	if len(remote) != 2 || local == nil {
		t.Fatalf("Split(ASCII) = %d remote, local %v; want From and MinSize remote, Subject local", len(remote), local)
	}
	m := &filter.Facts{}
	m.Add("Subject", "счёт №1")
	if !local.Match(m) {
		t.Error("the local part does not match on the subject alone")
	}
	if _, local := f.Split(func(filter.Condition) bool { return true }); local != nil {
		t.Errorf("Split(all) left %v local", local)
	}
}

// TestNewRefuses: a filter Validate refuses cannot be compiled, and the error names the field.
func TestNewRefuses(t *testing.T) {
	for _, rf := range []*schemas.RouteFilter{
		{Since: "2026-13-01"},
		{Subject: "a\r\nb"},
		{Headers: []schemas.FilterHeader{{Name: "X Bad"}}},
		{Since: "2026-11-26", Before: "2026-11-20"},
	} {
		if f, err := filter.New(rf); err == nil {
			t.Errorf("New(%+v) = %v, nil; want an error", rf, f)
		}
	}
	if f, err := filter.New(&schemas.RouteFilter{}); f != nil || err != nil {
		t.Errorf("New(empty) = %v, %v; want nil, nil", f, err)
	}
}
