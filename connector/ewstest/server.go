package ewstest

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/x509"
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

	"github.com/mailbus/mailbus/schemas"
	"golang.org/x/crypto/md4"
)

// Server is an Exchange server for tests: an httptest server that reads the SOAP requests
// as EWS documents them (namespaces and element order checked) and answers with replies
// shaped like the examples of the EWS reference. It holds one mailbox of messages.
//
// The exported fields are its settings, the faults to inject and what it saw. Set them
// before the first request, or hold the server's lock (Lock) to read or change them while
// a route runs; so for the items Item and Unread return. The other methods take the lock
// themselves. A request the fake finds malformed
// fails the test it was made for.
type Server struct {
	t   testing.TB
	srv *httptest.Server

	mu sync.Mutex
	// Items is the mailbox, oldest first.
	Items []*Item
	// Folders maps display names (children of msgfolderroot) to folder ids; it starts
	// with Archive.
	Folders map[string]string
	seq     int

	// Auth is "", "basic", "ntlm" or "bearer"; User is DOMAIN\user for NTLM.
	Auth, User, Password string
	// ValidToken says whether a bearer token is good (auth bearer).
	ValidToken func(string) bool
	ntlmConns  map[string]bool    // remote addresses authenticated by NTLM
	challenges map[string][8]byte // pending NTLM challenges by remote address

	// Faults to inject.
	Busy    time.Duration // the next request gets ErrorServerBusy with this back-off
	Fail500 int           // the next Fail500 requests get a bare HTTP 500
	// BadItems maps item ids to the error code their GetItem answers.
	BadItems map[string]string
	// NoMIME holds items whose GetItem succeeds without MimeContent.
	NoMIME map[string]bool
	// DropMarkRead makes UpdateItem fail with HTTP 500 (a crash between publish and mark).
	DropMarkRead bool
	// DenyImpersonation refuses every request that impersonates a mailbox.
	DenyImpersonation bool
	// OnGetItem, when set, is called before the n-th GetItem (from 1) is answered, with
	// the lock held.
	OnGetItem func(n int)

	// What was seen.
	Ops              []string  // the operation of each request
	Versions         []string  // RequestServerVersion of each request
	Suppress         []string  // SuppressReadReceipts attribute of each UpdateItem ("" when absent)
	SyncStates       []string  // SyncState of each SyncFolderItems ("" when absent)
	NTLMUsers        []string  // DOMAIN\user of each NTLM authenticate message
	Bearers          int       // requests with a good bearer token
	Anchors          []string  // X-AnchorMailbox of each request with a good bearer token
	Impersonated     []string  // ExchangeImpersonation PrimarySmtpAddress of each request ("" when absent)
	NTLMNegotiations int       // NTLM NEGOTIATE messages
	BusyAt           time.Time // when ErrorServerBusy was answered
	AfterBusy        time.Time // when the next request came
	PageSizes        []int     // MaxEntriesReturned of each FindItem
	// Restrictions are the FindItem restrictions, written compactly, e.g.
	// And(IsEqualTo(message:IsRead,false),Contains(item:Subject,счёт)).
	Restrictions []string
	MIMEGets     []string // ids of the items whose MIME content a GetItem returned
	HeaderGets   []string // ids of the items whose InternetMessageHeaders a GetItem returned
}

// Item is one message of the mailbox.
type Item struct {
	ID       string
	MIME     []byte
	Read     bool
	Received time.Time
	Folder   string // "inbox", "deleteditems" or a folder id
	Created  int    // creation order, for SyncFolderItems
}

// New starts a fake Exchange server, over https (with httptest's certificate) when tls
// is set, and stops it when the test ends.
func New(t testing.TB, tls bool) *Server {
	f := &Server{
		t: t, Folders: map[string]string{"Archive": "AAMkFolderArchive="},
		ntlmConns: map[string]bool{}, challenges: map[string][8]byte{}, BadItems: map[string]string{},
		NoMIME: map[string]bool{},
	}
	if tls {
		f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	} else {
		f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	}
	t.Cleanup(f.srv.Close)
	return f
}

// Lock holds the server still: a request waits until Unlock.
func (f *Server) Lock() { f.mu.Lock() }

// Unlock lets requests on.
func (f *Server) Unlock() { f.mu.Unlock() }

// Host is the exchangeUrl of the fake: host:port and the EWS path.
func (f *Server) Host() string {
	return strings.TrimPrefix(strings.TrimPrefix(f.srv.URL, "https://"), "http://") + "/EWS/Exchange.asmx"
}

// Connection is an exchange connection to the fake with basic auth, as a test starts from:
// exch, user CORP\bot, password s3cret!, exchangeVersion Exchange2016, no TLS. The fake
// checks no credentials until the test sets Auth.
func (f *Server) Connection() schemas.Connection {
	return schemas.Connection{
		Name: "exch", Type: schemas.TypeExchange, ExchangeURL: f.Host(), ExchangeVersion: "Exchange2016",
		Encryption: schemas.EncryptionNone, Auth: schemas.AuthBasic, Username: "bot", Domain: "CORP", Password: "s3cret!",
	}
}

// Certificate is the server's certificate (with tls), for a test's root pool.
func (f *Server) Certificate() *x509.Certificate { return f.srv.Certificate() }

// Add puts n new unread messages (MIME(1), MIME(2)... counting on from the last) in the
// inbox and returns their ids.
func (f *Server) Add(n int) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.AddLocked(n)
}

// AddLocked is Add for a caller that holds the lock: it can set flags before a route sees
// the items.
func (f *Server) AddLocked(n int) []string {
	var ids []string
	for range n {
		f.seq++
		// Real ItemIds are long base64; the form matters only for the Id hash.
		id := base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("AAMkADk0-item-%04d-%s", f.seq, strings.Repeat("x", 60))))
		f.Items = append(f.Items, &Item{
			ID: id, MIME: MIME(f.seq), Folder: "inbox", Created: f.seq,
			Received: time.Date(2026, 11, 25, 19, 0, f.seq, 0, time.UTC),
		})
		ids = append(ids, id)
	}
	return ids
}

// MIME is the n-th message Add puts in the mailbox: Subject "message n", Message-ID
// <mn@example.org>, X-Ticket-Id n.
func MIME(n int) []byte {
	return []byte(fmt.Sprintf("From: Sender <sender@example.org>\r\nTo: Support <support@example.com>\r\n"+
		"Subject: message %d\r\nMessage-ID: <m%d@example.org>\r\nDate: Wed, 25 Nov 2026 18:59:58 +0000\r\n"+
		"X-Ticket-Id: %d\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbody of message %d\r\n", n, n, n, n))
}

// Item returns the item with id, or nil. While a route runs, hold the lock around it and
// the use of the item.
func (f *Server) Item(id string) *Item {
	for _, it := range f.Items {
		if it.ID == id {
			return it
		}
	}
	return nil
}

// Unread returns the unread items of folder ("inbox", "deleteditems" or a folder id).
// While a route runs, hold the lock around it.
func (f *Server) Unread(folder string) []*Item {
	var out []*Item
	for _, it := range f.Items {
		if it.Folder == folder && !it.Read {
			out = append(out, it)
		}
	}
	return out
}

// ReadCount is how many items are read.
func (f *Server) ReadCount() int { return f.count(func(it *Item) bool { return it.Read }) }

// FolderCount is how many items folder holds.
func (f *Server) FolderCount(folder string) int {
	return f.count(func(it *Item) bool { return it.Folder == folder })
}

func (f *Server) count(match func(*Item) bool) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, it := range f.Items {
		if match(it) {
			n++
		}
	}
	return n
}

// CountOps is how many requests of operation op (FindItem, GetItem...) came.
func (f *Server) CountOps(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, o := range f.Ops {
		if o == op {
			n++
		}
	}
	return n
}

// Listings are the listing requests (SyncFolderItems and FindItem) so far, in order.
func (f *Server) Listings() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, op := range f.Ops {
		if op == "SyncFolderItems" || op == "FindItem" {
			out = append(out, op)
		}
	}
	return out
}

func (f *Server) serve(w http.ResponseWriter, r *http.Request) {
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
	env, err := parseXML(body)
	if err != nil {
		f.t.Errorf("fake EWS: request is not XML: %v\n%s", err, body)
		http.Error(w, "bad xml", http.StatusBadRequest)
		return
	}
	if err := checkSOAP(env); err != nil {
		f.t.Errorf("fake EWS: %v\n%s", err, body)
		f.fault(w, "ErrorSchemaValidation", err.Error(), 0)
		return
	}
	op := env.child("Body").kids[0]

	f.mu.Lock()
	defer f.mu.Unlock()
	f.Ops = append(f.Ops, op.name.Local)
	f.Versions = append(f.Versions, env.child("Header").child("RequestServerVersion").attr("Version"))
	imp := ""
	if n := env.child("Header").child("ExchangeImpersonation").child("ConnectingSID").child("PrimarySmtpAddress"); n != nil {
		imp = n.text
	}
	f.Impersonated = append(f.Impersonated, imp)
	if imp != "" && f.DenyImpersonation {
		f.fault(w, "ErrorImpersonateUserDenied", "The account does not have permission to impersonate the requested user.", 0)
		return
	}
	if f.Busy > 0 {
		f.fault(w, "ErrorServerBusy", "The server cannot service this request right now. Try again later.", f.Busy)
		f.Busy, f.BusyAt = 0, time.Now()
		return
	}
	if !f.BusyAt.IsZero() && f.AfterBusy.IsZero() {
		f.AfterBusy = time.Now()
	}
	if f.Fail500 > 0 {
		f.Fail500--
		http.Error(w, "Internal Server Error", http.StatusInternalServerError)
		return
	}

	var reply string
	switch op.name.Local {
	case "FindItem":
		reply = f.findItem(op)
	case "GetItem":
		if f.OnGetItem != nil {
			f.OnGetItem(strings.Count(strings.Join(f.Ops, " "), "GetItem"))
		}
		reply = f.getItem(op)
	case "UpdateItem":
		if f.DropMarkRead {
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
	io.WriteString(w, replyHead+reply+replyTail)
}

// The reply envelope, as Exchange 2016 sends it.
const (
	replyHead = `<?xml version="1.0" encoding="utf-8"?>` +
		`<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header>` +
		`<h:ServerVersionInfo MajorVersion="15" MinorVersion="1" MajorBuildNumber="2507" MinorBuildNumber="6" Version="V2017_07_11" ` +
		`xmlns:h="http://schemas.microsoft.com/exchange/services/2006/types" xmlns="http://schemas.microsoft.com/exchange/services/2006/types" ` +
		`xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema"/></s:Header>` +
		`<s:Body xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">`
	replyTail = `</s:Body></s:Envelope>`
	replyNS   = `xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"`
)

func (f *Server) fault(w http.ResponseWriter, code, msg string, backOff time.Duration) {
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
		`</detail></s:Fault></s:Body></s:Envelope>`, code, xmlText(msg), code, xmlText(msg), detail)
}

func xmlText(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

func errorMessage(op, code, text string) string {
	return fmt.Sprintf(`<m:%sResponseMessage ResponseClass="Error"><m:MessageText>%s</m:MessageText>`+
		`<m:ResponseCode>%s</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey></m:%sResponseMessage>`,
		op, xmlText(text), code, op)
}

// folderOf resolves a ParentFolderIds, SyncFolderId or ToFolderId element.
func (f *Server) folderOf(n *node) string {
	if d := n.child("DistinguishedFolderId"); d != nil {
		return d.attr("Id")
	}
	return n.child("FolderId").attr("Id")
}

func (f *Server) findItem(op *node) string {
	if op.attr("Traversal") != "Shallow" {
		f.t.Errorf("FindItem Traversal = %q", op.attr("Traversal"))
	}
	r := op.child("Restriction")
	if len(r.kids) != 1 {
		f.t.Errorf("FindItem restriction with %d expressions, want 1", len(r.kids))
		return ""
	}
	f.Restrictions = append(f.Restrictions, exprString(r.kids[0]))
	if !requiresUnread(r.kids[0]) {
		f.t.Errorf("FindItem restriction %s does not require IsRead=false", exprString(r.kids[0]))
	}
	fo := op.child("SortOrder").child("FieldOrder")
	if fo.attr("Order") != "Ascending" || fo.child("FieldURI").attr("FieldURI") != "item:DateTimeReceived" {
		f.t.Errorf("FindItem sort is not DateTimeReceived ascending")
	}
	view := op.child("IndexedPageItemView")
	max, _ := strconv.Atoi(view.attr("MaxEntriesReturned"))
	offset, _ := strconv.Atoi(view.attr("Offset"))
	f.PageSizes = append(f.PageSizes, max)
	var all []*Item
	folder := f.folderOf(op.child("ParentFolderIds"))
	for _, it := range f.Items {
		if it.Folder == folder && f.restrict(r.kids[0], it) {
			all = append(all, it)
		}
	}
	page := all[min(offset, len(all)):min(offset+max, len(all))]
	var b strings.Builder
	for _, it := range page {
		fmt.Fprintf(&b, `<t:Message><t:ItemId Id="%s" ChangeKey="CQAAABYAAAA"/>%s</t:Message>`, it.ID, f.received(op, it))
	}
	return fmt.Sprintf(`<m:FindItemResponse %s><m:ResponseMessages><m:FindItemResponseMessage ResponseClass="Success">`+
		`<m:ResponseCode>NoError</m:ResponseCode><m:RootFolder IndexedPagingOffset="%d" TotalItemsInView="%d" IncludesLastItemInRange="%t">`+
		`<t:Items>%s</t:Items></m:RootFolder></m:FindItemResponseMessage></m:ResponseMessages></m:FindItemResponse>`,
		replyNS, offset+len(page), len(all), offset+len(page) >= len(all), b.String())
}

// received is the DateTimeReceived element of it when the request's ItemShape asks for it.
func (f *Server) received(op *node, it *Item) string {
	for _, p := range op.child("ItemShape").child("AdditionalProperties").kids {
		if p.attr("FieldURI") == "item:DateTimeReceived" {
			return "<t:DateTimeReceived>" + it.Received.Format(time.RFC3339) + "</t:DateTimeReceived>"
		}
	}
	return ""
}

func (f *Server) getItem(op *node) string {
	var props []string
	for _, p := range op.child("ItemShape").child("AdditionalProperties").kids {
		props = append(props, p.attr("FieldURI"))
	}
	if !slices.Contains(props, "item:MimeContent") {
		return f.getHeaders(op, props)
	}
	var b strings.Builder
	for _, id := range op.child("ItemIds").kids {
		it := f.Item(id.attr("Id"))
		switch {
		case it == nil:
			b.WriteString(errorMessage("GetItem", "ErrorItemNotFound", "The specified object was not found in the store."))
		case f.BadItems[it.ID] != "":
			b.WriteString(errorMessage("GetItem", f.BadItems[it.ID], "The item cannot be read."))
		case f.NoMIME[it.ID]:
			fmt.Fprintf(&b, `<m:GetItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Items><t:Message>`+
				`<t:ItemId Id="%s" ChangeKey="CQAAABYAAAA"/><t:DateTimeReceived>%s</t:DateTimeReceived></t:Message></m:Items></m:GetItemResponseMessage>`,
				it.ID, it.Received.Format(time.RFC3339))
		default:
			f.MIMEGets = append(f.MIMEGets, it.ID)
			fmt.Fprintf(&b, `<m:GetItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Items><t:Message>`+
				`<t:MimeContent CharacterSet="UTF-8">%s</t:MimeContent><t:ItemId Id="%s" ChangeKey="CQAAABYAAAA"/>`+
				`<t:DateTimeReceived>%s</t:DateTimeReceived><t:Size>%d</t:Size></t:Message></m:Items></m:GetItemResponseMessage>`,
				base64.StdEncoding.EncodeToString(it.MIME), it.ID, it.Received.Format(time.RFC3339), len(it.MIME))
		}
	}
	return fmt.Sprintf(`<m:GetItemResponse %s><m:ResponseMessages>%s</m:ResponseMessages></m:GetItemResponse>`, replyNS, b.String())
}

func (f *Server) updateItem(op *node) string {
	if op.attr("MessageDisposition") != "SaveOnly" || op.attr("ConflictResolution") != "AlwaysOverwrite" {
		f.t.Errorf("UpdateItem MessageDisposition=%q ConflictResolution=%q", op.attr("MessageDisposition"), op.attr("ConflictResolution"))
	}
	f.Suppress = append(f.Suppress, op.attr("SuppressReadReceipts"))
	var b strings.Builder
	for _, ch := range op.child("ItemChanges").kids {
		set := ch.child("Updates").child("SetItemField")
		if set.child("FieldURI").attr("FieldURI") != "message:IsRead" || set.child("Message").child("IsRead").text != "true" {
			f.t.Errorf("UpdateItem change is not IsRead=true")
		}
		it := f.Item(ch.child("ItemId").attr("Id"))
		if it == nil {
			b.WriteString(errorMessage("UpdateItem", "ErrorItemNotFound", "The specified object was not found in the store."))
			continue
		}
		it.Read = true
		fmt.Fprintf(&b, `<m:UpdateItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>`+
			`<m:Items><t:Message><t:ItemId Id="%s" ChangeKey="CQAAABYAAAB"/></t:Message></m:Items>`+
			`<m:ConflictResults><t:Count>0</t:Count></m:ConflictResults></m:UpdateItemResponseMessage>`, it.ID)
	}
	return fmt.Sprintf(`<m:UpdateItemResponse %s><m:ResponseMessages>%s</m:ResponseMessages></m:UpdateItemResponse>`, replyNS, b.String())
}

func (f *Server) moveItems(op *node) string {
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
	for _, id := range f.Folders {
		exists = exists || id == to
	}
	for _, id := range op.child("ItemIds").kids {
		it := f.Item(id.attr("Id"))
		switch {
		case it == nil:
			b.WriteString(errorMessage(name, "ErrorItemNotFound", "The specified object was not found in the store."))
			continue
		case !exists:
			b.WriteString(errorMessage(name, "ErrorToFolderNotFound", "The destination folder does not exist."))
			continue
		}
		it.Folder = to
		fmt.Fprintf(&b, `<m:%sResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode></m:%sResponseMessage>`, name, name)
	}
	return fmt.Sprintf(`<m:%sResponse %s><m:ResponseMessages>%s</m:ResponseMessages></m:%sResponse>`, name, replyNS, b.String(), name)
}

// syncFolderItems reports creations only; its SyncState is the creation number reached,
// base64 as real ones are.
func (f *Server) syncFolderItems(op *node) string {
	state := ""
	if s := op.child("SyncState"); s != nil {
		state = s.text
	}
	f.SyncStates = append(f.SyncStates, state)
	from := 0
	if state != "" {
		b, err := base64.StdEncoding.DecodeString(state)
		n, err2 := strconv.Atoi(strings.TrimPrefix(string(b), "sync:"))
		if err != nil || err2 != nil {
			return fmt.Sprintf(`<m:SyncFolderItemsResponse %s><m:ResponseMessages>%s</m:ResponseMessages></m:SyncFolderItemsResponse>`,
				replyNS, errorMessage("SyncFolderItems", "ErrorInvalidSyncStateData", "The synchronization state data is corrupt or otherwise invalid."))
		}
		from = n
	}
	max, _ := strconv.Atoi(op.child("MaxChangesReturned").text)
	folder := f.folderOf(op.child("SyncFolderId"))
	var b strings.Builder
	reached, n, last := from, 0, true
	for _, it := range f.Items {
		if it.Created <= from || it.Folder != folder {
			continue
		}
		if n == max {
			last = false
			break
		}
		fmt.Fprintf(&b, `<t:Create><t:Message><t:ItemId Id="%s" ChangeKey="CQAAABYAAAA"/>%s<t:IsRead>%t</t:IsRead></t:Message></t:Create>`,
			it.ID, f.received(op, it), it.Read)
		reached, n = it.Created, n+1
	}
	next := base64.StdEncoding.EncodeToString([]byte("sync:" + strconv.Itoa(reached)))
	return fmt.Sprintf(`<m:SyncFolderItemsResponse %s><m:ResponseMessages><m:SyncFolderItemsResponseMessage ResponseClass="Success">`+
		`<m:ResponseCode>NoError</m:ResponseCode><m:SyncState>%s</m:SyncState><m:IncludesLastItemInRange>%t</m:IncludesLastItemInRange>`+
		`<m:Changes>%s</m:Changes></m:SyncFolderItemsResponseMessage></m:ResponseMessages></m:SyncFolderItemsResponse>`,
		replyNS, next, last, b.String())
}

func (f *Server) findFolder(op *node) string {
	name := op.child("Restriction").child("IsEqualTo").child("FieldURIOrConstant").child("Constant").attr("Value")
	var b strings.Builder
	if id, ok := f.Folders[name]; ok && f.folderOf(op.child("ParentFolderIds")) == "msgfolderroot" {
		fmt.Fprintf(&b, `<t:Folder><t:FolderId Id="%s" ChangeKey="AQAAABYAAAA"/></t:Folder>`, id)
	}
	return fmt.Sprintf(`<m:FindFolderResponse %s><m:ResponseMessages><m:FindFolderResponseMessage ResponseClass="Success">`+
		`<m:ResponseCode>NoError</m:ResponseCode><m:RootFolder TotalItemsInView="%d" IncludesLastItemInRange="true">`+
		`<t:Folders>%s</t:Folders></m:RootFolder></m:FindFolderResponseMessage></m:ResponseMessages></m:FindFolderResponse>`,
		replyNS, strings.Count(b.String(), "<t:Folder>"), b.String())
}

// node is a parsed XML element, namespaces resolved.
type node struct {
	name  xml.Name
	attrs []xml.Attr
	kids  []*node
	text  string
}

// child returns the first child named local, or nil.
func (n *node) child(local string) *node {
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

func (n *node) attr(local string) string {
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

func parseXML(b []byte) (*node, error) {
	dec := xml.NewDecoder(bytes.NewReader(b))
	var stack []*node
	var root *node
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
			n := &node{name: tok.Name, attrs: tok.Attr}
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
	nsSOAP     = "http://schemas.xmlsoap.org/soap/envelope/"
	nsTypes    = "http://schemas.microsoft.com/exchange/services/2006/types"
	nsMessages = "http://schemas.microsoft.com/exchange/services/2006/messages"
)

// messagesNS are the elements of the messages namespace (m:) in the requests mailbus
// sends; every other element in the body is of the types namespace (t:).
var messagesNS = []string{
	"FindItem", "ItemShape", "IndexedPageItemView", "Restriction", "SortOrder", "ParentFolderIds",
	"GetItem", "ItemIds", "UpdateItem", "ItemChanges", "SyncFolderItems", "SyncFolderId",
	"SyncState", "MaxChangesReturned", "SyncScope", "DeleteItem", "MoveItem", "ToFolderId",
	"FindFolder", "FolderShape",
}

// order is the documented sequence of the children of the elements mailbus sends:
// EWS validates requests against its schema, where order matters.
var order = map[string][]string{
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

// nonEmpty are elements the schema requires at least one child of.
var nonEmpty = []string{"AdditionalProperties", "ItemIds", "ItemChanges", "Updates", "ParentFolderIds", "SyncFolderId", "ToFolderId", "Restriction"}

// checkSOAP checks the envelope, the namespace of every element and the order of children.
func checkSOAP(env *node) error {
	if env.name != (xml.Name{Space: nsSOAP, Local: "Envelope"}) {
		return fmt.Errorf("root %v, want soap Envelope", env.name)
	}
	h, b := env.child("Header"), env.child("Body")
	if h == nil || h.name.Space != nsSOAP || b == nil || b.name.Space != nsSOAP || len(b.kids) != 1 {
		return fmt.Errorf("want a soap Header and a soap Body with one operation")
	}
	if v := h.child("RequestServerVersion"); v == nil || v.name.Space != nsTypes || v.attr("Version") == "" {
		return fmt.Errorf("no t:RequestServerVersion with a Version")
	}
	var walk func(n *node) error
	walk = func(n *node) error {
		want := nsTypes
		if slices.Contains(messagesNS, n.name.Local) {
			want = nsMessages
		}
		if n.name.Space != want {
			return fmt.Errorf("%s in namespace %q, want %q", n.name.Local, n.name.Space, want)
		}
		if slices.Contains(nonEmpty, n.name.Local) && len(n.kids) == 0 {
			return fmt.Errorf("%s is empty", n.name.Local)
		}
		if order, ok := order[n.name.Local]; ok {
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
func (f *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch f.Auth {
	case "basic":
		u, p, ok := r.BasicAuth()
		if ok && u == f.User && p == f.Password {
			return true
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="mail.example.com"`)
	case "ntlm":
		return f.ntlm(w, r)
	case "bearer":
		// As Exchange Online: a 401 with a Bearer challenge for a missing or bad token.
		if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && f.ValidToken(tok) {
			f.Bearers++
			f.Anchors = append(f.Anchors, r.Header.Get("X-AnchorMailbox"))
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
func (f *Server) ntlm(w http.ResponseWriter, r *http.Request) bool {
	if f.ntlmConns[r.RemoteAddr] {
		return true
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "NTLM ")
	msg, err := base64.StdEncoding.DecodeString(token)
	switch {
	case !ok || err != nil || len(msg) < 12 || string(msg[:8]) != "NTLMSSP\x00":
		w.Header().Set("WWW-Authenticate", "NTLM")
	case binary.LittleEndian.Uint32(msg[8:]) == 1:
		f.NTLMNegotiations++
		var ch [8]byte
		rand.Read(ch[:])
		f.challenges[r.RemoteAddr] = ch
		w.Header().Set("WWW-Authenticate", "NTLM "+base64.StdEncoding.EncodeToString(ntlmChallenge(ch)))
	case binary.LittleEndian.Uint32(msg[8:]) == 3:
		user, domain, ok := f.ntlmVerify(msg, f.challenges[r.RemoteAddr])
		f.NTLMUsers = append(f.NTLMUsers, domain+`\`+user)
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

// ntlmChallenge is a CHALLENGE message (MS-NLMP 2.2.1.2): Unicode, NTLM, extended session
// security, and a target info holding only MsvAvEOL.
func ntlmChallenge(ch [8]byte) []byte {
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
func (f *Server) ntlmVerify(msg []byte, ch [8]byte) (user, domain string, ok bool) {
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
	domain, user = fromUTF16LE(dom), fromUTF16LE(usr)
	wantDomain, wantUser, _ := strings.Cut(f.User, `\`)
	if len(nt) < 16 || user != wantUser || !strings.EqualFold(domain, wantDomain) {
		return user, domain, false
	}
	h := md4.New()
	h.Write(utf16LE(f.Password))
	key := hmacMD5(h.Sum(nil), utf16LE(strings.ToUpper(user)+domain))
	proof := hmacMD5(key, ch[:], nt[16:])
	return user, domain, hmac.Equal(proof, nt[:16])
}

func hmacMD5(key []byte, data ...[]byte) []byte {
	m := hmac.New(md5.New, key)
	for _, d := range data {
		m.Write(d)
	}
	return m.Sum(nil)
}

func utf16LE(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return b
}

func fromUTF16LE(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}
