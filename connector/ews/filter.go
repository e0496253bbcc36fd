package ews

import (
	"context"
	"encoding/xml"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mailbus/mailbus/connector/filter"
)

// How an Exchange route applies its filter. FindItem (select unseen) carries a restriction
// of what EWS searches reliably: Subject (Contains, substring, ignoring case), the received
// date and the size. From, To, Cc and other headers are checked by mailbus on the item's
// InternetMessageHeaders (a GetItem without the MIME content), and so is everything when the
// route reads SyncFolderItems (select all, or after none), which takes no restriction.

// restriction is the m:Restriction of a FindItem: one search expression.
type restriction struct {
	Expr any
}

type exprAnd struct {
	XMLName xml.Name `xml:"t:And"`
	Exprs   []any
}

type constant struct {
	Value string `xml:"Value,attr"`
}

// compare is IsEqualTo, IsGreaterThanOrEqualTo, IsLessThan... (the XMLName says which).
type compare struct {
	XMLName  xml.Name
	Field    fieldURI `xml:"t:FieldURI"`
	Constant constant `xml:"t:FieldURIOrConstant>t:Constant"`
}

func compareTo(op, field, value string) compare {
	return compare{XMLName: xml.Name{Local: "t:" + op}, Field: fieldURI{field}, Constant: constant{value}}
}

type containsExpr struct {
	XMLName    xml.Name `xml:"t:Contains"`
	Mode       string   `xml:"ContainmentMode,attr"`
	Comparison string   `xml:"ContainmentComparison,attr"`
	Field      fieldURI `xml:"t:FieldURI"`
	Constant   constant `xml:"t:Constant"`
}

// unreadRestriction is IsRead = false, and with the expressions exprs, all of them.
func unreadRestriction(exprs []any) restriction {
	unread := compareTo("IsEqualTo", "message:IsRead", "false")
	if len(exprs) == 0 {
		return restriction{Expr: unread}
	}
	return restriction{Expr: exprAnd{Exprs: append([]any{unread}, exprs...)}}
}

// serverCondition reports whether a FindItem restriction expresses c.
func serverCondition(c filter.Condition) bool {
	return c.Kind != filter.Header || c.Name == "Subject"
}

// expressions are the search expressions of conditions that serverCondition took.
// Dates are days in UTC, as DateTimeReceived is.
func expressions(conds []filter.Condition) []any {
	var out []any
	for _, c := range conds {
		switch c.Kind {
		case filter.Header:
			out = append(out, containsExpr{Mode: "Substring", Comparison: "IgnoreCase",
				Field: fieldURI{"item:Subject"}, Constant: constant{c.Value}})
		case filter.Since:
			out = append(out, compareTo("IsGreaterThanOrEqualTo", "item:DateTimeReceived", c.Date.Format(time.RFC3339)))
		case filter.Before:
			out = append(out, compareTo("IsLessThan", "item:DateTimeReceived", c.Date.Format(time.RFC3339)))
		case filter.MinSize:
			out = append(out, compareTo("IsGreaterThanOrEqualTo", "item:Size", strconv.FormatInt(c.Size, 10)))
		case filter.MaxSize:
			out = append(out, compareTo("IsLessThanOrEqualTo", "item:Size", strconv.FormatInt(c.Size, 10)))
		}
	}
	return out
}

// Filter is an Exchange route's filter, split between the server and mailbus. It is used
// by one route's goroutine at a time.
type Filter struct {
	restrict []any          // FindItem search expressions (unread routes)
	local    *filter.Filter // checked on the headers; nil: nothing
	sync     bool           // the route reads SyncFolderItems: nothing is remembered
	// passed holds the unread items passed over by the filter: they stay unread, so
	// FindItem lists them again every cycle, and they are neither fetched nor counted again.
	// A cycle keeps only those it saw again (prev is the last cycle's).
	passed, prev map[string]bool
}

// NewFilter splits f for a route that reads FindItem of the unread items (sync false: the
// server takes what a restriction expresses) or SyncFolderItems (sync true: mailbus checks
// everything on the headers). A nil f takes every item.
func NewFilter(f *filter.Filter, sync bool) *Filter {
	if f == nil {
		return &Filter{}
	}
	if sync {
		return &Filter{local: f, sync: true}
	}
	remote, local := f.Split(serverCondition)
	return &Filter{restrict: expressions(remote), local: local}
}

// Items keeps the items whose headers meet the filter's local conditions, fetching those
// headers from c (never the MIME content), and returns how many it passed over (those
// passed over in an earlier cycle included). newly, when items were passed over for the
// first time, is told how many of how many asked about.
func (f *Filter) Items(ctx context.Context, c *Client, items []Item, newly func(n, of int)) ([]Item, int, error) {
	if f.local == nil || len(items) == 0 {
		return items, 0, nil
	}
	var ask []Item
	passed := 0
	for _, it := range items {
		if f.passed[it.ID.ID] || f.prev[it.ID.ID] {
			f.passed[it.ID.ID] = true
			passed++
			continue
		}
		ask = append(ask, it)
	}
	if len(ask) == 0 {
		return nil, passed, nil
	}
	ids := make([]ID, len(ask))
	for i, it := range ask {
		ids[i] = it.ID
	}
	facts, err := c.GetHeaders(ctx, ids)
	if err != nil {
		return nil, 0, err
	}
	var keep []Item
	n := 0
	for i, it := range ask {
		// An item whose headers the server would not give is left to the batch, whose
		// GetItem says why (gone, or a dead letter).
		if facts[i] == nil || f.local.Match(facts[i]) {
			keep = append(keep, it)
			continue
		}
		if !f.sync {
			f.passed[it.ID.ID] = true
		}
		passed++
		n++
	}
	if n > 0 && newly != nil {
		newly(n, len(ask))
	}
	return keep, passed, nil
}

// NewCycle forgets the items passed over that the last cycle did not see again. A route
// reading FindItem calls it at the start of each cycle.
func (f *Filter) NewCycle() {
	f.prev, f.passed = f.passed, make(map[string]bool)
}

type getHeadersReply struct {
	Messages []struct {
		responseMessage
		Items struct {
			Items []struct {
				Headers []struct {
					Name  string `xml:"HeaderName,attr"`
					Value string `xml:",chardata"`
				} `xml:"InternetMessageHeaders>InternetMessageHeader"`
				Size     int64  `xml:"Size"`
				Received string `xml:"DateTimeReceived"`
			} `xml:",any"`
		} `xml:"Items"`
	} `xml:"ResponseMessages>GetItemResponseMessage"`
}

// GetHeaders fetches the internet headers, size and reception time of ids (never their
// MIME content) in one GetItem; an item the server reports an error for is nil.
func (c *Client) GetHeaders(ctx context.Context, ids []ID) ([]*filter.Facts, error) {
	req := getItemRequest{IDs: bareIDs(ids)}
	req.Shape = withProperties("item:InternetMessageHeaders", "item:Size", "item:DateTimeReceived")
	var r getHeadersReply
	if err := call(ctx, c, "GetItem", req, &r); err != nil {
		return nil, err
	}
	if len(r.Messages) != len(ids) {
		return nil, fmt.Errorf("ews GetItem (headers): %d response messages for %d items", len(r.Messages), len(ids))
	}
	out := make([]*filter.Facts, len(ids))
	for i, m := range r.Messages {
		if m.err() != nil || len(m.Items.Items) != 1 {
			continue
		}
		it := m.Items.Items[0]
		facts := &filter.Facts{Size: it.Size}
		if t, err := time.Parse(time.RFC3339, strings.TrimSpace(it.Received)); err == nil {
			facts.Received = t.UTC()
		}
		for _, h := range it.Headers {
			facts.Add(h.Name, h.Value)
		}
		out[i] = facts
	}
	return out, nil
}
