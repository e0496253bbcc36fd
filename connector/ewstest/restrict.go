package ewstest

import (
	"bufio"
	"bytes"
	"fmt"
	"mime"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-message/charset"
)

// The fake's FindItem restrictions and header-only GetItem: it applies a restriction to its
// items as Exchange does (And, Or, Not, the comparisons and Contains on the fields below),
// so a route's filter is tested against a server that really narrows the listing.

// AddMail puts raw messages in the inbox, unread, and returns their ids.
func (f *Server) AddMail(raws ...[]byte) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for _, raw := range raws {
		f.seq++
		id := fmt.Sprintf("AAMkADk0-mail-%04d-%s", f.seq, strings.Repeat("y", 60))
		f.Items = append(f.Items, &Item{
			ID: id, MIME: raw, Folder: "inbox", Created: f.seq,
			Received: time.Date(2026, 11, 25, 19, 0, f.seq, 0, time.UTC),
		})
		ids = append(ids, id)
	}
	return ids
}

// header reads the header of an item's MIME; values stay raw (encoded words and all),
// as InternetMessageHeaders gives them.
func header(it *Item) textproto.MIMEHeader {
	h, _ := textproto.NewReader(bufio.NewReader(bytes.NewReader(it.MIME))).ReadMIMEHeader()
	return h
}

// fakeField is the value of an item's property a restriction names.
func (f *Server) field(uri string, it *Item) (string, bool) {
	switch uri {
	case "message:IsRead":
		return strconv.FormatBool(it.Read), true
	case "item:Subject":
		s := header(it).Get("Subject")
		if d, err := (&mime.WordDecoder{CharsetReader: charset.Reader}).DecodeHeader(s); err == nil {
			s = d
		}
		return s, true
	case "item:DateTimeReceived":
		return it.Received.Format(time.RFC3339), true
	case "item:Size":
		return strconv.Itoa(len(it.MIME)), true
	}
	f.t.Errorf("fake EWS: restriction on unsupported field %s", uri)
	return "", false
}

// restrict evaluates the search expression n for it.
func (f *Server) restrict(n *node, it *Item) bool {
	switch op := n.name.Local; op {
	case "And", "Or":
		for _, k := range n.kids {
			if f.restrict(k, it) != (op == "And") {
				return op == "Or"
			}
		}
		return op == "And"
	case "Not":
		return !f.restrict(n.kids[0], it)
	case "Contains":
		v, _ := f.field(n.child("FieldURI").attr("FieldURI"), it)
		want := n.child("Constant").attr("Value")
		if n.attr("ContainmentMode") != "Substring" || n.attr("ContainmentComparison") != "IgnoreCase" {
			f.t.Errorf("fake EWS: Contains %s/%s, want Substring/IgnoreCase", n.attr("ContainmentMode"), n.attr("ContainmentComparison"))
		}
		return strings.Contains(strings.ToLower(v), strings.ToLower(want))
	case "IsEqualTo", "IsNotEqualTo", "IsGreaterThan", "IsGreaterThanOrEqualTo", "IsLessThan", "IsLessThanOrEqualTo":
		uri := n.child("FieldURI").attr("FieldURI")
		v, _ := f.field(uri, it)
		want := n.child("FieldURIOrConstant").child("Constant").attr("Value")
		var cmp int
		switch uri {
		case "item:Size":
			a, _ := strconv.Atoi(v)
			b, err := strconv.Atoi(want)
			if err != nil {
				f.t.Errorf("fake EWS: %s %q is not a number", uri, want)
			}
			cmp = a - b
		case "item:DateTimeReceived":
			a, _ := time.Parse(time.RFC3339, v)
			b, err := time.Parse(time.RFC3339, want)
			if err != nil {
				f.t.Errorf("fake EWS: %s %q is not a date-time", uri, want)
			}
			cmp = a.Compare(b)
		default:
			cmp = strings.Compare(v, want)
		}
		switch op {
		case "IsEqualTo":
			return cmp == 0
		case "IsNotEqualTo":
			return cmp != 0
		case "IsGreaterThan":
			return cmp > 0
		case "IsGreaterThanOrEqualTo":
			return cmp >= 0
		case "IsLessThan":
			return cmp < 0
		default:
			return cmp <= 0
		}
	}
	f.t.Errorf("fake EWS: unsupported search expression %s", n.name.Local)
	return false
}

// exprString writes a search expression compactly, e.g.
// And(IsEqualTo(message:IsRead,false),Contains(item:Subject,счёт)).
func exprString(n *node) string {
	switch n.name.Local {
	case "And", "Or", "Not":
		var kids []string
		for _, k := range n.kids {
			kids = append(kids, exprString(k))
		}
		return n.name.Local + "(" + strings.Join(kids, ",") + ")"
	case "Contains":
		return fmt.Sprintf("Contains(%s,%s)", n.child("FieldURI").attr("FieldURI"), n.child("Constant").attr("Value"))
	}
	return fmt.Sprintf("%s(%s,%s)", n.name.Local, n.child("FieldURI").attr("FieldURI"),
		n.child("FieldURIOrConstant").child("Constant").attr("Value"))
}

// requiresUnread reports whether n can only match unread items: IsRead=false, alone or
// in an And.
func requiresUnread(n *node) bool {
	switch n.name.Local {
	case "IsEqualTo":
		return n.child("FieldURI").attr("FieldURI") == "message:IsRead" &&
			n.child("FieldURIOrConstant").child("Constant").attr("Value") == "false"
	case "And":
		for _, k := range n.kids {
			if requiresUnread(k) {
				return true
			}
		}
	}
	return false
}

// getHeaders answers a GetItem without MimeContent: the internet headers, size and
// reception time, as mailbus's filter asks for them.
func (f *Server) getHeaders(op *node, props []string) string {
	for _, p := range []string{"item:InternetMessageHeaders", "item:Size", "item:DateTimeReceived"} {
		if !strings.Contains(strings.Join(props, " "), p) {
			f.t.Errorf("GetItem without MimeContent asks for %v, want %s", props, p)
		}
	}
	var b strings.Builder
	for _, id := range op.child("ItemIds").kids {
		it := f.Item(id.attr("Id"))
		if it == nil {
			b.WriteString(errorMessage("GetItem", "ErrorItemNotFound", "The specified object was not found in the store."))
			continue
		}
		f.HeaderGets = append(f.HeaderGets, it.ID)
		var hs strings.Builder
		h, _ := textproto.NewReader(bufio.NewReader(bytes.NewReader(it.MIME))).ReadMIMEHeader()
		for name, vs := range h {
			for _, v := range vs {
				fmt.Fprintf(&hs, `<t:InternetMessageHeader HeaderName="%s">%s</t:InternetMessageHeader>`, xmlText(name), xmlText(v))
			}
		}
		fmt.Fprintf(&b, `<m:GetItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Items><t:Message>`+
			`<t:ItemId Id="%s" ChangeKey="CQAAABYAAAA"/><t:DateTimeReceived>%s</t:DateTimeReceived><t:Size>%d</t:Size>`+
			`<t:InternetMessageHeaders>%s</t:InternetMessageHeaders></t:Message></m:Items></m:GetItemResponseMessage>`,
			it.ID, it.Received.Format(time.RFC3339), len(it.MIME), hs.String())
	}
	return fmt.Sprintf(`<m:GetItemResponse %s><m:ResponseMessages>%s</m:ResponseMessages></m:GetItemResponse>`, replyNS, b.String())
}
