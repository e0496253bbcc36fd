package connector

import (
	"context"
	"encoding/xml"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/mailbus/mailbus/connector/connlog"
	"github.com/mailbus/mailbus/connector/filter"
	"github.com/mailbus/mailbus/schemas"
)

// How an Exchange route applies its filter. FindItem (select unseen) carries a restriction
// of what EWS searches reliably: Subject (Contains, substring, ignoring case), the received
// date and the size. From, To, Cc and other headers are checked by mailbus on the item's
// InternetMessageHeaders (a GetItem without the MIME content), and so is everything when the
// route reads SyncFolderItems (select all, or after none), which takes no restriction.

// ewsRestriction is the m:Restriction of a FindItem: one search expression.
type ewsRestriction struct {
	Expr any
}

type ewsAnd struct {
	XMLName xml.Name `xml:"t:And"`
	Exprs   []any
}

type ewsConstant struct {
	Value string `xml:"Value,attr"`
}

// ewsCompare is IsEqualTo, IsGreaterThanOrEqualTo, IsLessThan... (the XMLName says which).
type ewsCompare struct {
	XMLName  xml.Name
	Field    ewsFieldURI `xml:"t:FieldURI"`
	Constant ewsConstant `xml:"t:FieldURIOrConstant>t:Constant"`
}

func ewsCompareTo(op, field, value string) ewsCompare {
	return ewsCompare{XMLName: xml.Name{Local: "t:" + op}, Field: ewsFieldURI{field}, Constant: ewsConstant{value}}
}

type ewsContains struct {
	XMLName    xml.Name    `xml:"t:Contains"`
	Mode       string      `xml:"ContainmentMode,attr"`
	Comparison string      `xml:"ContainmentComparison,attr"`
	Field      ewsFieldURI `xml:"t:FieldURI"`
	Constant   ewsConstant `xml:"t:Constant"`
}

// ewsUnreadRestriction is IsRead = false, and with the conditions of filter, all of them.
func ewsUnreadRestriction(filter []any) ewsRestriction {
	unread := ewsCompareTo("IsEqualTo", "message:IsRead", "false")
	if len(filter) == 0 {
		return ewsRestriction{Expr: unread}
	}
	return ewsRestriction{Expr: ewsAnd{Exprs: append([]any{unread}, filter...)}}
}

// ewsServerCondition reports whether a FindItem restriction expresses c.
func ewsServerCondition(c filter.Condition) bool {
	return c.Kind != filter.Header || c.Name == "Subject"
}

// ewsExpressions are the search expressions of conditions that ewsServerCondition took.
// Dates are days in UTC, as DateTimeReceived is.
func ewsExpressions(conds []filter.Condition) []any {
	var out []any
	for _, c := range conds {
		switch c.Kind {
		case filter.Header:
			out = append(out, ewsContains{Mode: "Substring", Comparison: "IgnoreCase",
				Field: ewsFieldURI{"item:Subject"}, Constant: ewsConstant{c.Value}})
		case filter.Since:
			out = append(out, ewsCompareTo("IsGreaterThanOrEqualTo", "item:DateTimeReceived", c.Date.Format(time.RFC3339)))
		case filter.Before:
			out = append(out, ewsCompareTo("IsLessThan", "item:DateTimeReceived", c.Date.Format(time.RFC3339)))
		case filter.MinSize:
			out = append(out, ewsCompareTo("IsGreaterThanOrEqualTo", "item:Size", strconv.FormatInt(c.Size, 10)))
		case filter.MaxSize:
			out = append(out, ewsCompareTo("IsLessThanOrEqualTo", "item:Size", strconv.FormatInt(c.Size, 10)))
		}
	}
	return out
}

// ewsFilter is an Exchange route's filter, split between the server and mailbus.
type ewsFilter struct {
	restrict []any          // FindItem search expressions (unread routes)
	local    *filter.Filter // checked on the headers; nil: nothing
	// passed holds the unread items passed over by the filter: they stay unread, so
	// FindItem lists them again every cycle, and they are neither fetched nor counted again.
	// A cycle keeps only those it saw again (prev is the last cycle's).
	passed, prev map[string]bool
}

func newEWSFilter(f *filter.Filter, sync bool) *ewsFilter {
	if f == nil {
		return &ewsFilter{}
	}
	if sync {
		return &ewsFilter{local: f}
	}
	remote, local := f.Split(ewsServerCondition)
	return &ewsFilter{restrict: ewsExpressions(remote), local: local}
}

// items keeps the items whose headers meet the filter's local conditions, and returns how
// many it passed over (those passed over in an earlier cycle included).
func (w *ewsWorker) filterItems(ctx context.Context, items []ewsItem) ([]ewsItem, int, error) {
	f := w.filter
	if f.local == nil || len(items) == 0 {
		return items, 0, nil
	}
	var ask []ewsItem
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
	ids := make([]ewsID, len(ask))
	for i, it := range ask {
		ids[i] = it.ID
	}
	facts, err := w.client.getHeaders(ctx, ids)
	if err != nil {
		return nil, 0, err
	}
	var keep []ewsItem
	newly := 0
	for i, it := range ask {
		// An item whose headers the server would not give is left to the batch, whose
		// GetItem says why (gone, or a dead letter).
		if facts[i] == nil || f.local.Match(facts[i]) {
			keep = append(keep, it)
			continue
		}
		if !w.sync {
			f.passed[it.ID.ID] = true
		}
		passed++
		newly++
	}
	if newly > 0 {
		w.connLog(slog.LevelDebug, connlog.EventPoll, fmt.Sprintf("filter: passed over %d of %d items", newly, len(ask)))
		w.status(func(s *schemas.RouteStatus) { s.Filtered += uint64(newly) })
	}
	return keep, passed, nil
}

// newCycle forgets the items passed over that the last cycle did not see again.
func (f *ewsFilter) newCycle() {
	f.prev, f.passed = f.passed, make(map[string]bool)
}

type getHeadersReply struct {
	Messages []struct {
		ewsResponseMessage
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

// getHeaders fetches the internet headers, size and reception time of ids (never their
// MIME content) in one GetItem; an item the server reports an error for is nil.
func (c *ewsClient) getHeaders(ctx context.Context, ids []ewsID) ([]*filter.Facts, error) {
	req := getItemRequest{IDs: ewsBareIDs(ids)}
	req.Shape = ewsWithProperties("item:InternetMessageHeaders", "item:Size", "item:DateTimeReceived")
	var r getHeadersReply
	if err := ewsCall(ctx, c, "GetItem", req, &r); err != nil {
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
