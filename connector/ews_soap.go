package connector

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mailbus/mailbus/connector/engine"
)

// The SOAP and EWS namespaces. Requests write the prefixes soap:, t: and m: literally
// (encoding/xml cannot choose prefixes) and bind them on the envelope; replies are read by
// local name, whatever prefixes the server picked.
const (
	nsSOAP     = "http://schemas.xmlsoap.org/soap/envelope/"
	nsTypes    = "http://schemas.microsoft.com/exchange/services/2006/types"
	nsMessages = "http://schemas.microsoft.com/exchange/services/2006/messages"
)

type soapEnvelope struct {
	XMLName  xml.Name `xml:"soap:Envelope"`
	SOAP     string   `xml:"xmlns:soap,attr"`
	Types    string   `xml:"xmlns:t,attr"`
	Messages string   `xml:"xmlns:m,attr"`
	Header   struct {
		Version struct {
			Version string `xml:"Version,attr"`
		} `xml:"t:RequestServerVersion"`
		Impersonation *ewsImpersonation `xml:"t:ExchangeImpersonation,omitempty"`
	} `xml:"soap:Header"`
	Body struct {
		Op any
	} `xml:"soap:Body"`
}

// ewsImpersonation makes a request act for a mailbox: the SMTP address of its owner.
type ewsImpersonation struct {
	SMTP string `xml:"t:ConnectingSID>t:PrimarySmtpAddress"`
}

// soapReply is a reply envelope whose body holds a T or a fault.
type soapReply[T any] struct {
	Body struct {
		Fault *soapFault `xml:"Fault"`
		Reply T          `xml:",any"`
	} `xml:"Body"`
}

type soapFault struct {
	Code   string `xml:"faultcode"`
	String string `xml:"faultstring"`
	Detail struct {
		ResponseCode string        `xml:"ResponseCode"`
		Message      string        `xml:"Message"`
		XML          ewsMessageXML `xml:"MessageXml"`
	} `xml:"detail"`
}

func (f *soapFault) err() error {
	code := f.Detail.ResponseCode
	if code == "" {
		_, code, _ = strings.Cut(f.Code, ":")
	}
	return &ewsError{Code: code, Message: f.String, BackOff: f.Detail.XML.backOff()}
}

// ewsMessageXML carries the details of an error; ErrorServerBusy puts BackOffMilliseconds here.
type ewsMessageXML struct {
	Values []struct {
		Name  string `xml:"Name,attr"`
		Value string `xml:",chardata"`
	} `xml:"Value"`
}

func (m ewsMessageXML) backOff() time.Duration {
	for _, v := range m.Values {
		if v.Name == "BackOffMilliseconds" {
			if ms, err := strconv.ParseInt(strings.TrimSpace(v.Value), 10, 64); err == nil && ms > 0 {
				return time.Duration(ms) * time.Millisecond
			}
		}
	}
	return 0
}

// ewsResponseMessage is what every per-item or per-folder response message starts with.
type ewsResponseMessage struct {
	Class string        `xml:"ResponseClass,attr"`
	Text  string        `xml:"MessageText"`
	Code  string        `xml:"ResponseCode"`
	XML   ewsMessageXML `xml:"MessageXml"`
}

// err is the message's error; a Warning is no error.
func (m *ewsResponseMessage) err() error {
	if m.Class != "Error" {
		return nil
	}
	return &ewsError{Code: m.Code, Message: m.Text, BackOff: m.XML.backOff()}
}

// ewsID is an ItemId or FolderId. The ChangeKey is left out of requests: mailbus only sets
// the read flag, deletes or moves, and overwrites whatever changed meanwhile.
type ewsID struct {
	ID        string `xml:"Id,attr"`
	ChangeKey string `xml:"ChangeKey,attr,omitempty"`
}

// ewsFolder names a folder: a distinguished one ("inbox") or one by its id.
type ewsFolder struct {
	Distinguished *ewsID `xml:"t:DistinguishedFolderId"`
	Folder        *ewsID `xml:"t:FolderId"`
}

func ewsDistinguishedFolder(id string) ewsFolder { return ewsFolder{Distinguished: &ewsID{ID: id}} }

// ewsDistinguished are the distinguished folders a route's mailbox may name (case-insensitive).
var ewsDistinguished = []string{
	"inbox", "deleteditems", "drafts", "junkemail", "outbox", "sentitems",
	"archiveinbox", "conversationhistory", "msgfolderroot",
}

type ewsFieldURI struct {
	FieldURI string `xml:"FieldURI,attr"`
}

type ewsIsEqualTo struct {
	Field    ewsFieldURI `xml:"t:FieldURI"`
	Constant struct {
		Value string `xml:"Value,attr"`
	} `xml:"t:FieldURIOrConstant>t:Constant"`
}

func ewsEquals(field, value string) ewsIsEqualTo {
	r := ewsIsEqualTo{Field: ewsFieldURI{field}}
	r.Constant.Value = value
	return r
}

type ewsShape struct {
	BaseShape string `xml:"t:BaseShape"`
	// Additional is a pointer so that it is left out when nil: EWS refuses an empty
	// AdditionalProperties.
	Additional *ewsProperties `xml:"t:AdditionalProperties"`
}

type ewsProperties struct {
	Fields []ewsFieldURI `xml:"t:FieldURI"`
}

func ewsWithProperties(fields ...string) ewsShape {
	p := &ewsProperties{}
	for _, f := range fields {
		p.Fields = append(p.Fields, ewsFieldURI{f})
	}
	return ewsShape{BaseShape: "IdOnly", Additional: p}
}

// ewsItem is an item as FindItem and SyncFolderItems list it. Received is listed here
// because in a GetItem reply it comes after the MIME content, too late for an event that is
// published as soon as its MIME is mapped.
type ewsItem struct {
	ID       ewsID  `xml:"ItemId"`
	IsRead   bool   `xml:"IsRead"`
	Received string `xml:"DateTimeReceived"`
}

// ewsItemsReply is the reply of UpdateItem, DeleteItem and MoveItem: one message per item.
type ewsItemsReply struct {
	ResponseMessages struct {
		Messages []ewsResponseMessage `xml:",any"`
	} `xml:"ResponseMessages"`
}

// errors returns one error per item, nil where the item succeeded.
func (r *ewsItemsReply) errors(op string, n int) ([]error, error) {
	msgs := r.ResponseMessages.Messages
	if len(msgs) != n {
		return nil, fmt.Errorf("ews %s: %d response messages for %d items", op, len(msgs), n)
	}
	errs := make([]error, n)
	for i := range msgs {
		errs[i] = msgs[i].err()
	}
	return errs, nil
}

type findItemRequest struct {
	XMLName   xml.Name `xml:"m:FindItem"`
	Traversal string   `xml:"Traversal,attr"`
	Shape     ewsShape `xml:"m:ItemShape"`
	Page      struct {
		Max       int    `xml:"MaxEntriesReturned,attr"`
		Offset    int    `xml:"Offset,attr"`
		BasePoint string `xml:"BasePoint,attr"`
	} `xml:"m:IndexedPageItemView"`
	Restriction ewsRestriction `xml:"m:Restriction"`
	Sort        struct {
		Order string      `xml:"Order,attr"`
		Field ewsFieldURI `xml:"t:FieldURI"`
	} `xml:"m:SortOrder>t:FieldOrder"`
	Folder ewsFolder `xml:"m:ParentFolderIds"`
}

type findItemReply struct {
	Messages []findItemMessage `xml:"ResponseMessages>FindItemResponseMessage"`
}

type findItemMessage struct {
	ewsResponseMessage
	Root struct {
		Total int  `xml:"TotalItemsInView,attr"`
		Last  bool `xml:"IncludesLastItemInRange,attr"`
		Items struct {
			Items []ewsItem `xml:",any"`
		} `xml:"Items"`
	} `xml:"RootFolder"`
}

// findUnread lists up to max unread items of folder from offset, oldest first, and whether
// more follow; filter are search expressions the items must meet too.
func (c *ewsClient) findUnread(ctx context.Context, folder ewsFolder, offset, max int, filter ...any) ([]ewsItem, bool, error) {
	m, err := c.findItem(ctx, folder, offset, max, filter)
	if err != nil {
		return nil, false, err
	}
	return m.Root.Items.Items, !m.Root.Last, nil
}

// countUnread returns how many unread items folder holds.
func (c *ewsClient) countUnread(ctx context.Context, folder ewsFolder) (int, error) {
	m, err := c.findItem(ctx, folder, 0, 1, nil)
	if err != nil {
		return 0, err
	}
	return m.Root.Total, nil
}

func (c *ewsClient) findItem(ctx context.Context, folder ewsFolder, offset, max int, filter []any) (*findItemMessage, error) {
	req := findItemRequest{Traversal: "Shallow", Shape: ewsWithProperties("item:DateTimeReceived"), Folder: folder}
	req.Page.Max, req.Page.Offset, req.Page.BasePoint = max, offset, "Beginning"
	req.Restriction = ewsUnreadRestriction(filter)
	req.Sort.Order, req.Sort.Field = "Ascending", ewsFieldURI{"item:DateTimeReceived"}
	var r findItemReply
	if err := ewsCall(ctx, c, "FindItem", req, &r); err != nil {
		return nil, err
	}
	if len(r.Messages) != 1 {
		return nil, fmt.Errorf("ews FindItem: %d response messages for one folder", len(r.Messages))
	}
	m := &r.Messages[0]
	if err := m.err(); err != nil {
		return nil, fmt.Errorf("ews FindItem: %w", err)
	}
	return m, nil
}

type syncFolderItemsRequest struct {
	XMLName    xml.Name  `xml:"m:SyncFolderItems"`
	Shape      ewsShape  `xml:"m:ItemShape"`
	Folder     ewsFolder `xml:"m:SyncFolderId"`
	SyncState  string    `xml:"m:SyncState,omitempty"`
	MaxChanges int       `xml:"m:MaxChangesReturned"`
	SyncScope  string    `xml:"m:SyncScope"`
}

type syncFolderItemsReply struct {
	Messages []struct {
		ewsResponseMessage
		SyncState string `xml:"SyncState"`
		Last      bool   `xml:"IncludesLastItemInRange"`
		Creates   []struct {
			Item ewsItem `xml:",any"`
		} `xml:"Changes>Create"`
	} `xml:"ResponseMessages>SyncFolderItemsResponseMessage"`
}

// syncItems returns the items created in folder since state (all of them for an empty
// state), at most max, with the state to ask from next and whether this was the last batch.
func (c *ewsClient) syncItems(ctx context.Context, folder ewsFolder, state string, max int) ([]ewsItem, string, bool, error) {
	req := syncFolderItemsRequest{
		Shape:  ewsWithProperties("message:IsRead", "item:DateTimeReceived"),
		Folder: folder, SyncState: state, MaxChanges: max, SyncScope: "NormalItems",
	}
	var r syncFolderItemsReply
	if err := ewsCall(ctx, c, "SyncFolderItems", req, &r); err != nil {
		return nil, "", false, err
	}
	if len(r.Messages) != 1 {
		return nil, "", false, fmt.Errorf("ews SyncFolderItems: %d response messages for one folder", len(r.Messages))
	}
	m := r.Messages[0]
	if err := m.err(); err != nil {
		return nil, "", false, fmt.Errorf("ews SyncFolderItems: %w", err)
	}
	items := make([]ewsItem, 0, len(m.Creates))
	for _, cr := range m.Creates {
		items = append(items, cr.Item)
	}
	return items, m.SyncState, m.Last, nil
}

type getItemRequest struct {
	XMLName xml.Name `xml:"m:GetItem"`
	Shape   ewsShape `xml:"m:ItemShape"`
	IDs     []ewsID  `xml:"m:ItemIds>t:ItemId"`
}

// ewsGot is one item of a GetItem reply.
type ewsGot struct {
	ID       ewsID
	Received time.Time
	Size     int64
	// Err is the item's own error (ResponseClass Error); the other items are still good.
	Err error
}

// getItems fetches the MIME content of ids in one GetItem and hands each item's decoded
// MIME to mime(i, r) while the reply is read, i being the item's index in ids (EWS answers
// in request order). r is valid only during the call; what mime leaves unread is skipped. An
// error from mime stops the whole call. The result has one entry per id; DateTimeReceived
// and Size follow the MIME in the reply, so they are only known from the result.
func (c *ewsClient) getItems(ctx context.Context, ids []ewsID, mime func(i int, r io.Reader) error) ([]ewsGot, error) {
	req := getItemRequest{IDs: make([]ewsID, len(ids))}
	req.Shape = ewsWithProperties("item:MimeContent", "item:DateTimeReceived", "item:Size")
	for i, id := range ids {
		req.IDs[i] = ewsID{ID: id.ID}
	}
	rc, err := c.do(ctx, "GetItem", req)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	// Closing the body is what unblocks a read from a server that stopped sending.
	watch := engine.NewProgressWatch(rc, ewsStallTimeout, nil)
	defer watch.Stop()
	got, err := ewsReadGetItem(&engine.ProgressReader{R: rc, W: watch}, mime)
	if err != nil && watch.Fired() {
		return nil, fmt.Errorf("ews GetItem: the server sent nothing for %s: %w", ewsStallTimeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("ews GetItem: %w", err)
	}
	if len(got) != len(ids) {
		return nil, fmt.Errorf("ews GetItem: %d response messages for %d items", len(got), len(ids))
	}
	return got, nil
}

// ewsReadGetItem walks a GetItem reply token by token. encoding/xml returns an element's text
// as one token, and MimeContent can be tens of megabytes: so its text is read straight from
// br, which the decoder reads through byte by byte (it keeps no buffer of its own over an
// io.ByteReader), and decoded from base64 as it streams.
func ewsReadGetItem(r io.Reader, mime func(i int, r io.Reader) error) ([]ewsGot, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	dec := xml.NewDecoder(br)
	var got []ewsGot
	var msg ewsResponseMessage
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return got, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read reply: %w", err)
		}
		if end, ok := tok.(xml.EndElement); ok && end.Name.Local == "GetItemResponseMessage" && len(got) > 0 {
			got[len(got)-1].Err = msg.err()
			continue
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		cur := len(got) - 1
		if cur < 0 && se.Name.Local != "GetItemResponseMessage" && se.Name.Local != "Fault" {
			continue // the envelope and the elements around the messages
		}
		switch se.Name.Local {
		case "GetItemResponseMessage":
			got = append(got, ewsGot{})
			msg = ewsResponseMessage{}
			for _, a := range se.Attr {
				if a.Name.Local == "ResponseClass" {
					msg.Class = a.Value
				}
			}
		case "ResponseCode":
			err = dec.DecodeElement(&msg.Code, &se)
		case "MessageText":
			err = dec.DecodeElement(&msg.Text, &se)
		case "MessageXml":
			err = dec.DecodeElement(&msg.XML, &se)
		case "ItemId":
			if got[cur].ID.ID == "" {
				err = dec.DecodeElement(&got[cur].ID, &se)
			}
		case "DateTimeReceived":
			var s string
			if err = dec.DecodeElement(&s, &se); err == nil {
				got[cur].Received, err = time.Parse(time.RFC3339, strings.TrimSpace(s))
			}
		case "Size":
			var s string
			if err = dec.DecodeElement(&s, &se); err == nil {
				got[cur].Size, err = strconv.ParseInt(strings.TrimSpace(s), 10, 64)
			}
		case "MimeContent":
			text := &ewsElementText{br: br}
			err = mime(cur, base64.NewDecoder(base64.StdEncoding, text))
			if err == nil {
				_, err = io.Copy(io.Discard, text)
			}
			if err != nil {
				return nil, err
			}
		case "Fault":
			var f soapFault
			if err = dec.DecodeElement(&f, &se); err == nil {
				return nil, f.err()
			}
		}
		if err != nil {
			return nil, fmt.Errorf("read reply: %s: %w", se.Name.Local, err)
		}
	}
}

// ewsElementText reads the text of the element whose start tag the decoder just returned, up
// to the '<' of the next tag, which it leaves for the decoder.
type ewsElementText struct {
	br   *bufio.Reader
	done bool
}

var errEWSMarkupInMIME = errors.New("read reply: unexpected markup in MimeContent")

func (t *ewsElementText) Read(p []byte) (int, error) {
	if t.done || len(p) == 0 {
		return 0, io.EOF
	}
	if t.br.Buffered() == 0 {
		if _, err := t.br.Peek(1); err != nil {
			return 0, io.ErrUnexpectedEOF
		}
	}
	buf, _ := t.br.Peek(min(len(p), t.br.Buffered()))
	if i := bytes.IndexByte(buf, '<'); i >= 0 {
		buf, t.done = buf[:i], true
	}
	// Base64 has no '&': an entity or CDATA would mean a reply this reader cannot follow.
	if bytes.IndexByte(buf, '&') >= 0 {
		return 0, errEWSMarkupInMIME
	}
	n := copy(p, buf)
	t.br.Discard(n)
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

type updateItemRequest struct {
	XMLName              xml.Name        `xml:"m:UpdateItem"`
	MessageDisposition   string          `xml:"MessageDisposition,attr"`
	ConflictResolution   string          `xml:"ConflictResolution,attr"`
	SuppressReadReceipts bool            `xml:"SuppressReadReceipts,attr,omitempty"`
	Changes              []ewsItemChange `xml:"m:ItemChanges>t:ItemChange"`
}

type ewsItemChange struct {
	ID  ewsID `xml:"t:ItemId"`
	Set struct {
		Field  ewsFieldURI `xml:"t:FieldURI"`
		IsRead bool        `xml:"t:Message>t:IsRead"`
	} `xml:"t:Updates>t:SetItemField"`
}

// markRead sets IsRead on ids in one UpdateItem, without sending read receipts where the
// server version allows it, and returns one error per item (nil where it worked).
func (c *ewsClient) markRead(ctx context.Context, ids []ewsID) ([]error, error) {
	req := updateItemRequest{
		MessageDisposition:   "SaveOnly",
		ConflictResolution:   "AlwaysOverwrite",
		SuppressReadReceipts: c.canSuppressReadReceipts(),
	}
	req.Changes = make([]ewsItemChange, len(ids))
	for i, id := range ids {
		req.Changes[i].ID = ewsID{ID: id.ID}
		req.Changes[i].Set.Field = ewsFieldURI{"message:IsRead"}
		req.Changes[i].Set.IsRead = true
	}
	var r ewsItemsReply
	if err := ewsCall(ctx, c, "UpdateItem", req, &r); err != nil {
		return nil, err
	}
	return r.errors("UpdateItem", len(ids))
}

type deleteItemRequest struct {
	XMLName    xml.Name `xml:"m:DeleteItem"`
	DeleteType string   `xml:"DeleteType,attr"`
	IDs        []ewsID  `xml:"m:ItemIds>t:ItemId"`
}

// deleteItems moves ids to Deleted Items, as a mail client's delete does.
func (c *ewsClient) deleteItems(ctx context.Context, ids []ewsID) ([]error, error) {
	req := deleteItemRequest{DeleteType: "MoveToDeletedItems", IDs: ewsBareIDs(ids)}
	var r ewsItemsReply
	if err := ewsCall(ctx, c, "DeleteItem", req, &r); err != nil {
		return nil, err
	}
	return r.errors("DeleteItem", len(ids))
}

type moveItemRequest struct {
	XMLName xml.Name  `xml:"m:MoveItem"`
	To      ewsFolder `xml:"m:ToFolderId"`
	IDs     []ewsID   `xml:"m:ItemIds>t:ItemId"`
}

// moveItems moves ids to the folder to.
func (c *ewsClient) moveItems(ctx context.Context, ids []ewsID, to ewsFolder) ([]error, error) {
	req := moveItemRequest{To: to, IDs: ewsBareIDs(ids)}
	var r ewsItemsReply
	if err := ewsCall(ctx, c, "MoveItem", req, &r); err != nil {
		return nil, err
	}
	return r.errors("MoveItem", len(ids))
}

func ewsBareIDs(ids []ewsID) []ewsID {
	out := make([]ewsID, len(ids))
	for i, id := range ids {
		out[i] = ewsID{ID: id.ID}
	}
	return out
}

type findFolderRequest struct {
	XMLName     xml.Name     `xml:"m:FindFolder"`
	Traversal   string       `xml:"Traversal,attr"`
	Shape       ewsShape     `xml:"m:FolderShape"`
	Restriction ewsIsEqualTo `xml:"m:Restriction>t:IsEqualTo"`
	Parent      ewsFolder    `xml:"m:ParentFolderIds"`
}

type findFolderReply struct {
	Messages []struct {
		ewsResponseMessage
		Root struct {
			Folders struct {
				Folders []struct {
					ID ewsID `xml:"FolderId"`
				} `xml:",any"`
			} `xml:"Folders"`
		} `xml:"RootFolder"`
	} `xml:"ResponseMessages>FindFolderResponseMessage"`
}

// resolveFolder turns a route's mailbox into a folder. "" and INBOX are the inbox; a name
// of a distinguished folder (deleteditems, junkemail...) is that folder; anything else is a
// path of display names separated by "/", the first looked up under the top of the mailbox
// (so "Inbox/Tickets" is a subfolder of the inbox).
func (c *ewsClient) resolveFolder(ctx context.Context, mailbox string) (ewsFolder, error) {
	if mailbox == "" || strings.EqualFold(mailbox, "INBOX") {
		return ewsDistinguishedFolder("inbox"), nil
	}
	if d := strings.ToLower(mailbox); slices.Contains(ewsDistinguished, d) {
		return ewsDistinguishedFolder(d), nil
	}
	folder := ewsDistinguishedFolder("msgfolderroot")
	for name := range strings.SplitSeq(mailbox, "/") {
		req := findFolderRequest{Traversal: "Shallow", Shape: ewsShape{BaseShape: "IdOnly"}, Parent: folder}
		req.Restriction = ewsEquals("folder:DisplayName", name)
		var r findFolderReply
		if err := ewsCall(ctx, c, "FindFolder", req, &r); err != nil {
			return ewsFolder{}, err
		}
		if len(r.Messages) != 1 {
			return ewsFolder{}, fmt.Errorf("ews FindFolder: %d response messages for one folder", len(r.Messages))
		}
		m := r.Messages[0]
		if err := m.err(); err != nil {
			return ewsFolder{}, fmt.Errorf("ews FindFolder %q: %w", name, err)
		}
		folders := m.Root.Folders.Folders
		switch len(folders) {
		case 0:
			return ewsFolder{}, &ewsError{Code: "ErrorFolderNotFound", Message: fmt.Sprintf("no folder %q in the mailbox", mailbox)}
		case 1:
			folder = ewsFolder{Folder: &ewsID{ID: folders[0].ID.ID}}
		default:
			return ewsFolder{}, fmt.Errorf("ews FindFolder: %d folders named %q", len(folders), name)
		}
	}
	return folder, nil
}
