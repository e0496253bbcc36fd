package connector

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf16"

	"golang.org/x/crypto/md4"
)

// fakeEWS is an Exchange server for tests: an httptest server that reads the SOAP requests
// as EWS documents them (namespaces and element order checked) and answers with replies
// shaped like the examples of the EWS reference. It holds one mailbox of messages.
type fakeEWS struct {
	t   *testing.T
	srv *httptest.Server

	mu    sync.Mutex
	items []*fakeItem // oldest first
	// folders maps display names (children of msgfolderroot) to folder ids.
	folders map[string]string
	seq     int

	// Auth is "", "basic", "ntlm" or "bearer"; User is DOMAIN\user for NTLM.
	auth, user, password string
	// validToken says whether a bearer token is good (auth bearer).
	validToken func(string) bool
	ntlmConns  map[string]bool    // remote addresses authenticated by NTLM
	challenges map[string][8]byte // pending NTLM challenges by remote address

	// Faults to inject.
	busy     time.Duration // the next request gets ErrorServerBusy with this back-off
	fail500  int           // the next fail500 requests get a bare HTTP 500
	badItems map[string]string
	// noMime holds items whose GetItem succeeds without MimeContent.
	noMime map[string]bool
	// dropMarkRead makes UpdateItem fail with HTTP 500 (a crash between publish and mark).
	dropMarkRead bool
	// denyImpersonation refuses every request that impersonates a mailbox.
	denyImpersonation bool
	// onGetItem, when set, is called before the n-th GetItem (from 1) is answered.
	onGetItem func(n int)

	// What was seen.
	ops        []string
	versions   []string
	suppress   []string // SuppressReadReceipts attribute of each UpdateItem ("" when absent)
	syncStates []string // SyncState of each SyncFolderItems ("" when absent)
	ntlmUsers  []string // DOMAIN\user of each NTLM authenticate message
	bearers    int      // requests with a good bearer token
	anchors    []string // X-AnchorMailbox of each request with a good bearer token
	imperson   []string // ExchangeImpersonation PrimarySmtpAddress of each request ("" when absent)
	ntlmNegs   int
	busyAt     time.Time
	afterBusy  time.Time
	pageSizes  []int
	// restrictions are the FindItem restrictions, as fakeExprString writes them.
	restrictions []string
	mimeGets     []string // ids of the items whose MIME content a GetItem returned
	headerGets   []string // ids of the items whose InternetMessageHeaders a GetItem returned
}

type fakeItem struct {
	id       string
	mime     []byte
	read     bool
	received time.Time
	folder   string // "inbox", "deleteditems" or a folder id
	created  int    // creation order, for SyncFolderItems
}

func newFakeEWS(t *testing.T, tls bool) *fakeEWS {
	f := &fakeEWS{
		t: t, folders: map[string]string{"Archive": "AAMkFolderArchive="},
		ntlmConns: map[string]bool{}, challenges: map[string][8]byte{}, badItems: map[string]string{},
		noMime: map[string]bool{},
	}
	if tls {
		f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	} else {
		f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	}
	t.Cleanup(f.srv.Close)
	return f
}

// host is the exchangeUrl of the fake: host:port and the EWS path.
func (f *fakeEWS) host() string {
	return strings.TrimPrefix(strings.TrimPrefix(f.srv.URL, "https://"), "http://") + "/EWS/Exchange.asmx"
}

// add puts n new unread messages in the inbox and returns their ids.
func (f *fakeEWS) add(n int) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for range n {
		f.seq++
		// Real ItemIds are long base64; the form matters only for the Id hash.
		id := base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("AAMkADk0-item-%04d-%s", f.seq, strings.Repeat("x", 60))))
		f.items = append(f.items, &fakeItem{
			id: id, mime: fakeMIME(f.seq), folder: "inbox", created: f.seq,
			received: time.Date(2026, 11, 25, 19, 0, f.seq, 0, time.UTC),
		})
		ids = append(ids, id)
	}
	return ids
}

func fakeMIME(n int) []byte {
	return []byte(fmt.Sprintf("From: Sender <sender@example.org>\r\nTo: Support <support@example.com>\r\n"+
		"Subject: message %d\r\nMessage-ID: <m%d@example.org>\r\nDate: Wed, 25 Nov 2026 18:59:58 +0000\r\n"+
		"X-Ticket-Id: %d\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbody of message %d\r\n", n, n, n, n))
}

func (f *fakeEWS) item(id string) *fakeItem {
	for _, it := range f.items {
		if it.id == id {
			return it
		}
	}
	return nil
}

func (f *fakeEWS) unread(folder string) []*fakeItem {
	var out []*fakeItem
	for _, it := range f.items {
		if it.folder == folder && !it.read {
			out = append(out, it)
		}
	}
	return out
}

func (f *fakeEWS) countOps(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, o := range f.ops {
		if o == op {
			n++
		}
	}
	return n
}

func (f *fakeEWS) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/EWS/Exchange.asmx" {
		http.NotFound(w, r)
		return
	}
	if !f.authorized(w, r) {
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/xml") {
		f.t.Errorf("fake EWS: Content-Type %q, want text/xml", ct)
	}
	env, err := fakeParseXML(body)
	if err != nil {
		f.t.Errorf("fake EWS: request is not XML: %v\n%s", err, body)
		http.Error(w, "bad xml", http.StatusBadRequest)
		return
	}
	if err := fakeCheckSOAP(env); err != nil {
		f.t.Errorf("fake EWS: %v\n%s", err, body)
		f.fault(w, "ErrorSchemaValidation", err.Error(), 0)
		return
	}
	op := env.child("Body").kids[0]

	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, op.name.Local)
	f.versions = append(f.versions, env.child("Header").child("RequestServerVersion").attr("Version"))
	imp := ""
	if n := env.child("Header").child("ExchangeImpersonation").child("ConnectingSID").child("PrimarySmtpAddress"); n != nil {
		imp = n.text
	}
	f.imperson = append(f.imperson, imp)
	if imp != "" && f.denyImpersonation {
		f.fault(w, "ErrorImpersonateUserDenied", "The account does not have permission to impersonate the requested user.", 0)
		return
	}
	if f.busy > 0 {
		f.fault(w, "ErrorServerBusy", "The server cannot service this request right now. Try again later.", f.busy)
		f.busy, f.busyAt = 0, time.Now()
		return
	}
	if !f.busyAt.IsZero() && f.afterBusy.IsZero() {
		f.afterBusy = time.Now()
	}
	if f.fail500 > 0 {
		f.fail500--
		http.Error(w, "Internal Server Error", http.StatusInternalServerError)
		return
	}

	var reply string
	switch op.name.Local {
	case "FindItem":
		reply = f.findItem(op)
	case "GetItem":
		if f.onGetItem != nil {
			f.onGetItem(strings.Count(strings.Join(f.ops, " "), "GetItem"))
		}
		reply = f.getItem(op)
	case "UpdateItem":
		if f.dropMarkRead {
			http.Error(w, "Internal Server Error", http.StatusInternalServerError)
			return
		}
		reply = f.updateItem(op)
	case "SyncFolderItems":
		reply = f.syncFolderItems(op)
	case "DeleteItem", "MoveItem":
		reply = f.moveItems(op)
	case "FindFolder":
		reply = f.findFolder(op)
	default:
		f.t.Errorf("fake EWS: unexpected operation %s", op.name.Local)
		f.fault(w, "ErrorInvalidRequest", "unexpected operation", 0)
		return
	}
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	io.WriteString(w, fakeReplyHead+reply+fakeReplyTail)
}

// The reply envelope, as Exchange 2016 sends it.
const (
	fakeReplyHead = `<?xml version="1.0" encoding="utf-8"?>` +
		`<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header>` +
		`<h:ServerVersionInfo MajorVersion="15" MinorVersion="1" MajorBuildNumber="2507" MinorBuildNumber="6" Version="V2017_07_11" ` +
		`xmlns:h="http://schemas.microsoft.com/exchange/services/2006/types" xmlns="http://schemas.microsoft.com/exchange/services/2006/types" ` +
		`xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema"/></s:Header>` +
		`<s:Body xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">`
	fakeReplyTail = `</s:Body></s:Envelope>`
	fakeReplyNS   = `xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"`
)

func (f *fakeEWS) fault(w http.ResponseWriter, code, msg string, backOff time.Duration) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	detail := ""
	if backOff > 0 {
		detail = fmt.Sprintf(`<t:MessageXml xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">`+
			`<t:Value Name="BackOffMilliseconds">%d</t:Value></t:MessageXml>`, backOff.Milliseconds())
	}
	fmt.Fprintf(w, `<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>`+
		`<faultcode xmlns:a="http://schemas.microsoft.com/exchange/services/2006/types">a:%s</faultcode>`+
		`<faultstring xml:lang="en-US">%s</faultstring><detail>`+
		`<e:ResponseCode xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">%s</e:ResponseCode>`+
		`<e:Message xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">%s</e:Message>%s`+
		`</detail></s:Fault></s:Body></s:Envelope>`, code, fakeXMLText(msg), code, fakeXMLText(msg), detail)
}

func fakeXMLText(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

func fakeErrorMessage(op, code, text string) string {
	return fmt.Sprintf(`<m:%sResponseMessage ResponseClass="Error"><m:MessageText>%s</m:MessageText>`+
		`<m:ResponseCode>%s</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey></m:%sResponseMessage>`,
		op, fakeXMLText(text), code, op)
}

// folderOf resolves a ParentFolderIds, SyncFolderId or ToFolderId element.
func (f *fakeEWS) folderOf(n *fakeNode) string {
	if d := n.child("DistinguishedFolderId"); d != nil {
		return d.attr("Id")
	}
	return n.child("FolderId").attr("Id")
}

func (f *fakeEWS) findItem(op *fakeNode) string {
	if op.attr("Traversal") != "Shallow" {
		f.t.Errorf("FindItem Traversal = %q", op.attr("Traversal"))
	}
	r := op.child("Restriction")
	if len(r.kids) != 1 {
		f.t.Errorf("FindItem restriction with %d expressions, want 1", len(r.kids))
		return ""
	}
	f.restrictions = append(f.restrictions, fakeExprString(r.kids[0]))
	if !fakeRequiresUnread(r.kids[0]) {
		f.t.Errorf("FindItem restriction %s does not require IsRead=false", fakeExprString(r.kids[0]))
	}
	fo := op.child("SortOrder").child("FieldOrder")
	if fo.attr("Order") != "Ascending" || fo.child("FieldURI").attr("FieldURI") != "item:DateTimeReceived" {
		f.t.Errorf("FindItem sort is not DateTimeReceived ascending")
	}
	view := op.child("IndexedPageItemView")
	max, _ := strconv.Atoi(view.attr("MaxEntriesReturned"))
	offset, _ := strconv.Atoi(view.attr("Offset"))
	f.pageSizes = append(f.pageSizes, max)
	var all []*fakeItem
	folder := f.folderOf(op.child("ParentFolderIds"))
	for _, it := range f.items {
		if it.folder == folder && f.restrict(r.kids[0], it) {
			all = append(all, it)
		}
	}
	page := all[min(offset, len(all)):min(offset+max, len(all))]
	var b strings.Builder
	for _, it := range page {
		fmt.Fprintf(&b, `<t:Message><t:ItemId Id="%s" ChangeKey="CQAAABYAAAA"/>%s</t:Message>`, it.id, f.received(op, it))
	}
	return fmt.Sprintf(`<m:FindItemResponse %s><m:ResponseMessages><m:FindItemResponseMessage ResponseClass="Success">`+
		`<m:ResponseCode>NoError</m:ResponseCode><m:RootFolder IndexedPagingOffset="%d" TotalItemsInView="%d" IncludesLastItemInRange="%t">`+
		`<t:Items>%s</t:Items></m:RootFolder></m:FindItemResponseMessage></m:ResponseMessages></m:FindItemResponse>`,
		fakeReplyNS, offset+len(page), len(all), offset+len(page) >= len(all), b.String())
}

// received is the DateTimeReceived element of it when the request's ItemShape asks for it.
func (f *fakeEWS) received(op *fakeNode, it *fakeItem) string {
	for _, p := range op.child("ItemShape").child("AdditionalProperties").kids {
		if p.attr("FieldURI") == "item:DateTimeReceived" {
			return "<t:DateTimeReceived>" + it.received.Format(time.RFC3339) + "</t:DateTimeReceived>"
		}
	}
	return ""
}

func (f *fakeEWS) getItem(op *fakeNode) string {
	var props []string
	for _, p := range op.child("ItemShape").child("AdditionalProperties").kids {
		props = append(props, p.attr("FieldURI"))
	}
	if !slices.Contains(props, "item:MimeContent") {
		return f.getHeaders(op, props)
	}
	var b strings.Builder
	for _, id := range op.child("ItemIds").kids {
		it := f.item(id.attr("Id"))
		switch {
		case it == nil:
			b.WriteString(fakeErrorMessage("GetItem", "ErrorItemNotFound", "The specified object was not found in the store."))
		case f.badItems[it.id] != "":
			b.WriteString(fakeErrorMessage("GetItem", f.badItems[it.id], "The item cannot be read."))
		case f.noMime[it.id]:
			fmt.Fprintf(&b, `<m:GetItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Items><t:Message>`+
				`<t:ItemId Id="%s" ChangeKey="CQAAABYAAAA"/><t:DateTimeReceived>%s</t:DateTimeReceived></t:Message></m:Items></m:GetItemResponseMessage>`,
				it.id, it.received.Format(time.RFC3339))
		default:
			f.mimeGets = append(f.mimeGets, it.id)
			fmt.Fprintf(&b, `<m:GetItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Items><t:Message>`+
				`<t:MimeContent CharacterSet="UTF-8">%s</t:MimeContent><t:ItemId Id="%s" ChangeKey="CQAAABYAAAA"/>`+
				`<t:DateTimeReceived>%s</t:DateTimeReceived><t:Size>%d</t:Size></t:Message></m:Items></m:GetItemResponseMessage>`,
				base64.StdEncoding.EncodeToString(it.mime), it.id, it.received.Format(time.RFC3339), len(it.mime))
		}
	}
	return fmt.Sprintf(`<m:GetItemResponse %s><m:ResponseMessages>%s</m:ResponseMessages></m:GetItemResponse>`, fakeReplyNS, b.String())
}

func (f *fakeEWS) updateItem(op *fakeNode) string {
	if op.attr("MessageDisposition") != "SaveOnly" || op.attr("ConflictResolution") != "AlwaysOverwrite" {
		f.t.Errorf("UpdateItem MessageDisposition=%q ConflictResolution=%q", op.attr("MessageDisposition"), op.attr("ConflictResolution"))
	}
	f.suppress = append(f.suppress, op.attr("SuppressReadReceipts"))
	var b strings.Builder
	for _, ch := range op.child("ItemChanges").kids {
		set := ch.child("Updates").child("SetItemField")
		if set.child("FieldURI").attr("FieldURI") != "message:IsRead" || set.child("Message").child("IsRead").text != "true" {
			f.t.Errorf("UpdateItem change is not IsRead=true")
		}
		it := f.item(ch.child("ItemId").attr("Id"))
		if it == nil {
			b.WriteString(fakeErrorMessage("UpdateItem", "ErrorItemNotFound", "The specified object was not found in the store."))
			continue
		}
		it.read = true
		fmt.Fprintf(&b, `<m:UpdateItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>`+
			`<m:Items><t:Message><t:ItemId Id="%s" ChangeKey="CQAAABYAAAB"/></t:Message></m:Items>`+
			`<m:ConflictResults><t:Count>0</t:Count></m:ConflictResults></m:UpdateItemResponseMessage>`, it.id)
	}
	return fmt.Sprintf(`<m:UpdateItemResponse %s><m:ResponseMessages>%s</m:ResponseMessages></m:UpdateItemResponse>`, fakeReplyNS, b.String())
}

func (f *fakeEWS) moveItems(op *fakeNode) string {
	name, to := op.name.Local, "deleteditems"
	if name == "DeleteItem" {
		if op.attr("DeleteType") != "MoveToDeletedItems" {
			f.t.Errorf("DeleteItem DeleteType = %q", op.attr("DeleteType"))
		}
	} else {
		to = f.folderOf(op.child("ToFolderId"))
	}
	var b strings.Builder
	exists := op.child("ToFolderId") == nil || op.child("ToFolderId").child("DistinguishedFolderId") != nil
	for _, id := range f.folders {
		exists = exists || id == to
	}
	for _, id := range op.child("ItemIds").kids {
		it := f.item(id.attr("Id"))
		switch {
		case it == nil:
			b.WriteString(fakeErrorMessage(name, "ErrorItemNotFound", "The specified object was not found in the store."))
			continue
		case !exists:
			b.WriteString(fakeErrorMessage(name, "ErrorToFolderNotFound", "The destination folder does not exist."))
			continue
		}
		it.folder = to
		fmt.Fprintf(&b, `<m:%sResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode></m:%sResponseMessage>`, name, name)
	}
	return fmt.Sprintf(`<m:%sResponse %s><m:ResponseMessages>%s</m:ResponseMessages></m:%sResponse>`, name, fakeReplyNS, b.String(), name)
}

// syncFolderItems reports creations only; its SyncState is the creation number reached,
// base64 as real ones are.
func (f *fakeEWS) syncFolderItems(op *fakeNode) string {
	state := ""
	if s := op.child("SyncState"); s != nil {
		state = s.text
	}
	f.syncStates = append(f.syncStates, state)
	from := 0
	if state != "" {
		b, err := base64.StdEncoding.DecodeString(state)
		n, err2 := strconv.Atoi(strings.TrimPrefix(string(b), "sync:"))
		if err != nil || err2 != nil {
			return fmt.Sprintf(`<m:SyncFolderItemsResponse %s><m:ResponseMessages>%s</m:ResponseMessages></m:SyncFolderItemsResponse>`,
				fakeReplyNS, fakeErrorMessage("SyncFolderItems", "ErrorInvalidSyncStateData", "The synchronization state data is corrupt or otherwise invalid."))
		}
		from = n
	}
	max, _ := strconv.Atoi(op.child("MaxChangesReturned").text)
	folder := f.folderOf(op.child("SyncFolderId"))
	var b strings.Builder
	reached, n, last := from, 0, true
	for _, it := range f.items {
		if it.created <= from || it.folder != folder {
			continue
		}
		if n == max {
			last = false
			break
		}
		fmt.Fprintf(&b, `<t:Create><t:Message><t:ItemId Id="%s" ChangeKey="CQAAABYAAAA"/>%s<t:IsRead>%t</t:IsRead></t:Message></t:Create>`,
			it.id, f.received(op, it), it.read)
		reached, n = it.created, n+1
	}
	next := base64.StdEncoding.EncodeToString([]byte("sync:" + strconv.Itoa(reached)))
	return fmt.Sprintf(`<m:SyncFolderItemsResponse %s><m:ResponseMessages><m:SyncFolderItemsResponseMessage ResponseClass="Success">`+
		`<m:ResponseCode>NoError</m:ResponseCode><m:SyncState>%s</m:SyncState><m:IncludesLastItemInRange>%t</m:IncludesLastItemInRange>`+
		`<m:Changes>%s</m:Changes></m:SyncFolderItemsResponseMessage></m:ResponseMessages></m:SyncFolderItemsResponse>`,
		fakeReplyNS, next, last, b.String())
}

func (f *fakeEWS) findFolder(op *fakeNode) string {
	name := op.child("Restriction").child("IsEqualTo").child("FieldURIOrConstant").child("Constant").attr("Value")
	var b strings.Builder
	if id, ok := f.folders[name]; ok && f.folderOf(op.child("ParentFolderIds")) == "msgfolderroot" {
		fmt.Fprintf(&b, `<t:Folder><t:FolderId Id="%s" ChangeKey="AQAAABYAAAA"/></t:Folder>`, id)
	}
	return fmt.Sprintf(`<m:FindFolderResponse %s><m:ResponseMessages><m:FindFolderResponseMessage ResponseClass="Success">`+
		`<m:ResponseCode>NoError</m:ResponseCode><m:RootFolder TotalItemsInView="%d" IncludesLastItemInRange="true">`+
		`<t:Folders>%s</t:Folders></m:RootFolder></m:FindFolderResponseMessage></m:ResponseMessages></m:FindFolderResponse>`,
		fakeReplyNS, strings.Count(b.String(), "<t:Folder>"), b.String())
}

// fakeNode is a parsed XML element, namespaces resolved.
type fakeNode struct {
	name  xml.Name
	attrs []xml.Attr
	kids  []*fakeNode
	text  string
}

// child returns the first child named local, or nil.
func (n *fakeNode) child(local string) *fakeNode {
	if n == nil {
		return nil
	}
	for _, k := range n.kids {
		if k.name.Local == local {
			return k
		}
	}
	return nil
}

func (n *fakeNode) attr(local string) string {
	if n == nil {
		return ""
	}
	for _, a := range n.attrs {
		if a.Name.Local == local {
			return a.Value
		}
	}
	return ""
}

func fakeParseXML(b []byte) (*fakeNode, error) {
	dec := xml.NewDecoder(bytes.NewReader(b))
	var stack []*fakeNode
	var root *fakeNode
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return root, nil
		}
		if err != nil {
			return nil, err
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			n := &fakeNode{name: tok.Name, attrs: tok.Attr}
			if len(stack) == 0 {
				root = n
			} else {
				p := stack[len(stack)-1]
				p.kids = append(p.kids, n)
			}
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].text += strings.TrimSpace(string(tok))
			}
		}
	}
}

const (
	fakeNSSOAP     = "http://schemas.xmlsoap.org/soap/envelope/"
	fakeNSTypes    = "http://schemas.microsoft.com/exchange/services/2006/types"
	fakeNSMessages = "http://schemas.microsoft.com/exchange/services/2006/messages"
)

// fakeMessagesNS are the elements of the messages namespace (m:) in the requests mailbus
// sends; every other element in the body is of the types namespace (t:).
var fakeMessagesNS = []string{
	"FindItem", "ItemShape", "IndexedPageItemView", "Restriction", "SortOrder", "ParentFolderIds",
	"GetItem", "ItemIds", "UpdateItem", "ItemChanges", "SyncFolderItems", "SyncFolderId",
	"SyncState", "MaxChangesReturned", "SyncScope", "DeleteItem", "MoveItem", "ToFolderId",
	"FindFolder", "FolderShape",
}

// fakeOrder is the documented sequence of the children of the elements mailbus sends:
// EWS validates requests against its schema, where order matters.
var fakeOrder = map[string][]string{
	"FindItem":               {"ItemShape", "IndexedPageItemView", "Restriction", "SortOrder", "ParentFolderIds"},
	"GetItem":                {"ItemShape", "ItemIds"},
	"ItemShape":              {"BaseShape", "IncludeMimeContent", "AdditionalProperties"},
	"FolderShape":            {"BaseShape", "AdditionalProperties"},
	"SyncFolderItems":        {"ItemShape", "SyncFolderId", "SyncState", "Ignore", "MaxChangesReturned", "SyncScope"},
	"ItemChange":             {"ItemId", "Updates"},
	"SetItemField":           {"FieldURI", "Message"},
	"IsEqualTo":              {"FieldURI", "FieldURIOrConstant"},
	"IsNotEqualTo":           {"FieldURI", "FieldURIOrConstant"},
	"IsGreaterThan":          {"FieldURI", "FieldURIOrConstant"},
	"IsGreaterThanOrEqualTo": {"FieldURI", "FieldURIOrConstant"},
	"IsLessThan":             {"FieldURI", "FieldURIOrConstant"},
	"IsLessThanOrEqualTo":    {"FieldURI", "FieldURIOrConstant"},
	"Contains":               {"FieldURI", "Constant"},
	"MoveItem":               {"ToFolderId", "ItemIds"},
	"FindFolder":             {"FolderShape", "Restriction", "ParentFolderIds"},
}

// fakeNonEmpty are elements the schema requires at least one child of.
var fakeNonEmpty = []string{"AdditionalProperties", "ItemIds", "ItemChanges", "Updates", "ParentFolderIds", "SyncFolderId", "ToFolderId", "Restriction"}

// fakeCheckSOAP checks the envelope, the namespace of every element and the order of children.
func fakeCheckSOAP(env *fakeNode) error {
	if env.name != (xml.Name{Space: fakeNSSOAP, Local: "Envelope"}) {
		return fmt.Errorf("root %v, want soap Envelope", env.name)
	}
	h, b := env.child("Header"), env.child("Body")
	if h == nil || h.name.Space != fakeNSSOAP || b == nil || b.name.Space != fakeNSSOAP || len(b.kids) != 1 {
		return fmt.Errorf("want a soap Header and a soap Body with one operation")
	}
	if v := h.child("RequestServerVersion"); v == nil || v.name.Space != fakeNSTypes || v.attr("Version") == "" {
		return fmt.Errorf("no t:RequestServerVersion with a Version")
	}
	var walk func(n *fakeNode) error
	walk = func(n *fakeNode) error {
		want := fakeNSTypes
		if slices.Contains(fakeMessagesNS, n.name.Local) {
			want = fakeNSMessages
		}
		if n.name.Space != want {
			return fmt.Errorf("%s in namespace %q, want %q", n.name.Local, n.name.Space, want)
		}
		if slices.Contains(fakeNonEmpty, n.name.Local) && len(n.kids) == 0 {
			return fmt.Errorf("%s is empty", n.name.Local)
		}
		if order, ok := fakeOrder[n.name.Local]; ok {
			last := -1
			for _, k := range n.kids {
				i := slices.Index(order, k.name.Local)
				if i < 0 || i < last {
					return fmt.Errorf("%s: child %s out of the documented order %v", n.name.Local, k.name.Local, order)
				}
				last = i
			}
		}
		for _, k := range n.kids {
			if err := walk(k); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(b.kids[0])
}

// authorized runs the server side of Basic or NTLM authentication and reports whether the
// request may go on; when not, it has answered 401.
func (f *fakeEWS) authorized(w http.ResponseWriter, r *http.Request) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch f.auth {
	case "basic":
		u, p, ok := r.BasicAuth()
		if ok && u == f.user && p == f.password {
			return true
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="mail.example.com"`)
	case "ntlm":
		return f.ntlm(w, r)
	case "bearer":
		// As Exchange Online: a 401 with a Bearer challenge for a missing or bad token.
		if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && f.validToken(tok) {
			f.bearers++
			f.anchors = append(f.anchors, r.Header.Get("X-AnchorMailbox"))
			return true
		}
		w.Header().Set("WWW-Authenticate", `Bearer client_id="00000002-0000-0ff1-ce00-000000000000", error="invalid_token"`)
	default:
		return true
	}
	w.WriteHeader(http.StatusUnauthorized)
	return false
}

// ntlm authenticates the TCP connection as IIS does: 401 with "WWW-Authenticate: NTLM",
// then NEGOTIATE -> CHALLENGE -> AUTHENTICATE, whose NTLMv2 response is checked against the
// password. Later requests on that connection need no Authorization.
func (f *fakeEWS) ntlm(w http.ResponseWriter, r *http.Request) bool {
	if f.ntlmConns[r.RemoteAddr] {
		return true
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "NTLM ")
	msg, err := base64.StdEncoding.DecodeString(token)
	switch {
	case !ok || err != nil || len(msg) < 12 || string(msg[:8]) != "NTLMSSP\x00":
		w.Header().Set("WWW-Authenticate", "NTLM")
	case binary.LittleEndian.Uint32(msg[8:]) == 1:
		f.ntlmNegs++
		var ch [8]byte
		rand.Read(ch[:])
		f.challenges[r.RemoteAddr] = ch
		w.Header().Set("WWW-Authenticate", "NTLM "+base64.StdEncoding.EncodeToString(fakeNTLMChallenge(ch)))
	case binary.LittleEndian.Uint32(msg[8:]) == 3:
		user, domain, ok := f.ntlmVerify(msg, f.challenges[r.RemoteAddr])
		f.ntlmUsers = append(f.ntlmUsers, domain+`\`+user)
		delete(f.challenges, r.RemoteAddr)
		if ok {
			f.ntlmConns[r.RemoteAddr] = true
			return true
		}
		w.Header().Set("WWW-Authenticate", "NTLM")
	default:
		w.Header().Set("WWW-Authenticate", "NTLM")
	}
	w.WriteHeader(http.StatusUnauthorized)
	return false
}

// fakeNTLMChallenge is a CHALLENGE message (MS-NLMP 2.2.1.2): Unicode, NTLM, extended session
// security, and a target info holding only MsvAvEOL.
func fakeNTLMChallenge(ch [8]byte) []byte {
	const flags = 0x00000001 | 0x00000200 | 0x00080000 | 0x00800000
	b := make([]byte, 48, 52)
	copy(b, "NTLMSSP\x00")
	binary.LittleEndian.PutUint32(b[8:], 2)
	binary.LittleEndian.PutUint32(b[16:], 48) // empty TargetName at the end
	binary.LittleEndian.PutUint32(b[20:], flags)
	copy(b[24:], ch[:])
	binary.LittleEndian.PutUint16(b[40:], 4)
	binary.LittleEndian.PutUint16(b[42:], 4)
	binary.LittleEndian.PutUint32(b[44:], 48)
	return append(b, 0, 0, 0, 0)
}

// ntlmVerify reads the user and domain of an AUTHENTICATE message (MS-NLMP 2.2.1.3) and
// checks its NTLMv2 proof against the password.
func (f *fakeEWS) ntlmVerify(msg []byte, ch [8]byte) (user, domain string, ok bool) {
	field := func(at int) []byte {
		if len(msg) < at+8 {
			return nil
		}
		n, off := int(binary.LittleEndian.Uint16(msg[at:])), int(binary.LittleEndian.Uint32(msg[at+4:]))
		if off+n > len(msg) {
			return nil
		}
		return msg[off : off+n]
	}
	nt, dom, usr := field(20), field(28), field(36)
	domain, user = fakeFromUTF16(dom), fakeFromUTF16(usr)
	wantDomain, wantUser, _ := strings.Cut(f.user, `\`)
	if len(nt) < 16 || user != wantUser || !strings.EqualFold(domain, wantDomain) {
		return user, domain, false
	}
	h := md4.New()
	h.Write(fakeUTF16(f.password))
	key := fakeHMACMD5(h.Sum(nil), fakeUTF16(strings.ToUpper(user)+domain))
	proof := fakeHMACMD5(key, ch[:], nt[16:])
	return user, domain, hmac.Equal(proof, nt[:16])
}

func fakeHMACMD5(key []byte, data ...[]byte) []byte {
	m := hmac.New(md5.New, key)
	for _, d := range data {
		m.Write(d)
	}
	return m.Sum(nil)
}

func fakeUTF16(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return b
}

func fakeFromUTF16(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}
