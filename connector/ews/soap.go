package ews

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
		Impersonation *impersonation `xml:"t:ExchangeImpersonation,omitempty"`
	} `xml:"soap:Header"`
	Body struct {
		Op any
	} `xml:"soap:Body"`
}

// impersonation makes a request act for a mailbox: the SMTP address of its owner.
type impersonation struct {
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
		ResponseCode string     `xml:"ResponseCode"`
		Message      string     `xml:"Message"`
		XML          messageXML `xml:"MessageXml"`
	} `xml:"detail"`
}

func (f *soapFault) err() error {
	code := f.Detail.ResponseCode
	if code == "" {
		_, code, _ = strings.Cut(f.Code, ":")
	}
	return &Error{Code: code, Message: f.String, BackOff: f.Detail.XML.backOff()}
}

// messageXML carries the details of an error; ErrorServerBusy puts BackOffMilliseconds here.
type messageXML struct {
	Values []struct {
		Name  string `xml:"Name,attr"`
		Value string `xml:",chardata"`
	} `xml:"Value"`
}

func (m messageXML) backOff() time.Duration {
	for _, v := range m.Values {
		if v.Name == "BackOffMilliseconds" {
			if ms, err := strconv.ParseInt(strings.TrimSpace(v.Value), 10, 64); err == nil && ms > 0 {
				return time.Duration(ms) * time.Millisecond
			}
		}
	}
	return 0
}

// responseMessage is what every per-item or per-folder response message starts with.
type responseMessage struct {
	Class string     `xml:"ResponseClass,attr"`
	Text  string     `xml:"MessageText"`
	Code  string     `xml:"ResponseCode"`
	XML   messageXML `xml:"MessageXml"`
}

// err is the message's error; a Warning is no error.
func (m *responseMessage) err() error {
	if m.Class != "Error" {
		return nil
	}
	return &Error{Code: m.Code, Message: m.Text, BackOff: m.XML.backOff()}
}

// ID is an ItemId or FolderId. The ChangeKey is left out of requests: mailbus only sets
// the read flag, deletes or moves, and overwrites whatever changed meanwhile.
type ID struct {
	ID        string `xml:"Id,attr"`
	ChangeKey string `xml:"ChangeKey,attr,omitempty"`
}

// Folder names a folder: a distinguished one ("inbox") or one by its id.
type Folder struct {
	Distinguished *ID `xml:"t:DistinguishedFolderId"`
	Folder        *ID `xml:"t:FolderId"`
}

// DistinguishedFolder is the folder EWS knows by the name id: "inbox", "junkemail"...
func DistinguishedFolder(id string) Folder { return Folder{Distinguished: &ID{ID: id}} }

// distinguished are the distinguished folders a route's mailbox may name (case-insensitive).
var distinguished = []string{
	"inbox", "deleteditems", "drafts", "junkemail", "outbox", "sentitems",
	"archiveinbox", "conversationhistory", "msgfolderroot",
}

type fieldURI struct {
	FieldURI string `xml:"FieldURI,attr"`
}

type isEqualTo struct {
	Field    fieldURI `xml:"t:FieldURI"`
	Constant struct {
		Value string `xml:"Value,attr"`
	} `xml:"t:FieldURIOrConstant>t:Constant"`
}

func equals(field, value string) isEqualTo {
	r := isEqualTo{Field: fieldURI{field}}
	r.Constant.Value = value
	return r
}

type shape struct {
	BaseShape string `xml:"t:BaseShape"`
	// Additional is a pointer so that it is left out when nil: EWS refuses an empty
	// AdditionalProperties.
	Additional *properties `xml:"t:AdditionalProperties"`
}

type properties struct {
	Fields []fieldURI `xml:"t:FieldURI"`
}

func withProperties(fields ...string) shape {
	p := &properties{}
	for _, f := range fields {
		p.Fields = append(p.Fields, fieldURI{f})
	}
	return shape{BaseShape: "IdOnly", Additional: p}
}

// Item is an item as FindItem and SyncFolderItems list it. Received is listed here
// because in a GetItem reply it comes after the MIME content, too late for an event that is
// published as soon as its MIME is mapped.
type Item struct {
	ID       ID     `xml:"ItemId"`
	IsRead   bool   `xml:"IsRead"`
	Received string `xml:"DateTimeReceived"`
}

// itemsReply is the reply of UpdateItem, DeleteItem and MoveItem: one message per item.
type itemsReply struct {
	ResponseMessages struct {
		Messages []responseMessage `xml:",any"`
	} `xml:"ResponseMessages"`
}

// itemsCall sends req, a request of n items answered by one message each (UpdateItem,
// DeleteItem, MoveItem), and returns one error per item, nil where the item succeeded.
func (c *Client) itemsCall(ctx context.Context, op string, req any, n int) ([]error, error) {
	var r itemsReply
	if err := call(ctx, c, op, req, &r); err != nil {
		return nil, err
	}
	return r.errors(op, n)
}

// errors returns one error per item, nil where the item succeeded.
func (r *itemsReply) errors(op string, n int) ([]error, error) {
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
	Shape     shape    `xml:"m:ItemShape"`
	Page      struct {
		Max       int    `xml:"MaxEntriesReturned,attr"`
		Offset    int    `xml:"Offset,attr"`
		BasePoint string `xml:"BasePoint,attr"`
	} `xml:"m:IndexedPageItemView"`
	Restriction restriction `xml:"m:Restriction"`
	Sort        struct {
		Order string   `xml:"Order,attr"`
		Field fieldURI `xml:"t:FieldURI"`
	} `xml:"m:SortOrder>t:FieldOrder"`
	Folder Folder `xml:"m:ParentFolderIds"`
}

type findItemReply struct {
	Messages []findItemMessage `xml:"ResponseMessages>FindItemResponseMessage"`
}

type findItemMessage struct {
	responseMessage
	Root struct {
		Total int  `xml:"TotalItemsInView,attr"`
		Last  bool `xml:"IncludesLastItemInRange,attr"`
		Items struct {
			Items []Item `xml:",any"`
		} `xml:"Items"`
	} `xml:"RootFolder"`
}

// FindUnread lists up to max unread items of folder from offset, oldest first, and whether
// more follow; the items meet f's server side too (nil f: every unread item).
func (c *Client) FindUnread(ctx context.Context, folder Folder, offset, max int, f *Filter) ([]Item, bool, error) {
	var exprs []any
	if f != nil {
		exprs = f.restrict
	}
	m, err := c.findItem(ctx, folder, offset, max, exprs)
	if err != nil {
		return nil, false, err
	}
	return m.Root.Items.Items, !m.Root.Last, nil
}

// CountUnread returns how many unread items folder holds.
func (c *Client) CountUnread(ctx context.Context, folder Folder) (int, error) {
	m, err := c.findItem(ctx, folder, 0, 1, nil)
	if err != nil {
		return 0, err
	}
	return m.Root.Total, nil
}

func (c *Client) findItem(ctx context.Context, folder Folder, offset, max int, exprs []any) (*findItemMessage, error) {
	req := findItemRequest{Traversal: "Shallow", Shape: withProperties("item:DateTimeReceived"), Folder: folder}
	req.Page.Max, req.Page.Offset, req.Page.BasePoint = max, offset, "Beginning"
	req.Restriction = unreadRestriction(exprs)
	req.Sort.Order, req.Sort.Field = "Ascending", fieldURI{"item:DateTimeReceived"}
	var r findItemReply
	if err := call(ctx, c, "FindItem", req, &r); err != nil {
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
	XMLName    xml.Name `xml:"m:SyncFolderItems"`
	Shape      shape    `xml:"m:ItemShape"`
	Folder     Folder   `xml:"m:SyncFolderId"`
	SyncState  string   `xml:"m:SyncState,omitempty"`
	MaxChanges int      `xml:"m:MaxChangesReturned"`
	SyncScope  string   `xml:"m:SyncScope"`
}

type syncFolderItemsReply struct {
	Messages []struct {
		responseMessage
		SyncState string `xml:"SyncState"`
		Last      bool   `xml:"IncludesLastItemInRange"`
		Creates   []struct {
			Item Item `xml:",any"`
		} `xml:"Changes>Create"`
	} `xml:"ResponseMessages>SyncFolderItemsResponseMessage"`
}

// SyncItems returns the items created in folder since state (all of them for an empty
// state), at most max, with the state to ask from next and whether this was the last batch.
func (c *Client) SyncItems(ctx context.Context, folder Folder, state string, max int) ([]Item, string, bool, error) {
	req := syncFolderItemsRequest{
		Shape:  withProperties("message:IsRead", "item:DateTimeReceived"),
		Folder: folder, SyncState: state, MaxChanges: max, SyncScope: "NormalItems",
	}
	var r syncFolderItemsReply
	if err := call(ctx, c, "SyncFolderItems", req, &r); err != nil {
		return nil, "", false, err
	}
	if len(r.Messages) != 1 {
		return nil, "", false, fmt.Errorf("ews SyncFolderItems: %d response messages for one folder", len(r.Messages))
	}
	m := r.Messages[0]
	if err := m.err(); err != nil {
		return nil, "", false, fmt.Errorf("ews SyncFolderItems: %w", err)
	}
	items := make([]Item, 0, len(m.Creates))
	for _, cr := range m.Creates {
		items = append(items, cr.Item)
	}
	return items, m.SyncState, m.Last, nil
}

type getItemRequest struct {
	XMLName xml.Name `xml:"m:GetItem"`
	Shape   shape    `xml:"m:ItemShape"`
	IDs     []ID     `xml:"m:ItemIds>t:ItemId"`
}

// Got is one item of a GetItem reply.
type Got struct {
	ID       ID
	Received time.Time
	Size     int64
	// Err is the item's own error (ResponseClass Error); the other items are still good.
	Err error
}

// GetItems fetches the MIME content of ids in one GetItem and hands each item's decoded
// MIME to mime(i, r) while the reply is read, i being the item's index in ids (EWS answers
// in request order). r is valid only during the call; what mime leaves unread is skipped. An
// error from mime stops the whole call. The result has one entry per id; DateTimeReceived
// and Size follow the MIME in the reply, so they are only known from the result.
func (c *Client) GetItems(ctx context.Context, ids []ID, mime func(i int, r io.Reader) error) ([]Got, error) {
	req := getItemRequest{IDs: make([]ID, len(ids))}
	req.Shape = withProperties("item:MimeContent", "item:DateTimeReceived", "item:Size")
	for i, id := range ids {
		req.IDs[i] = ID{ID: id.ID}
	}
	rc, err := c.do(ctx, "GetItem", req)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	// Closing the body is what unblocks a read from a server that stopped sending.
	watch := engine.NewProgressWatch(rc, stallTimeout, nil)
	defer watch.Stop()
	got, err := readGetItem(&engine.ProgressReader{R: rc, W: watch}, mime)
	if err != nil && watch.Fired() {
		return nil, fmt.Errorf("ews GetItem: the server sent nothing for %s: %w", stallTimeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("ews GetItem: %w", err)
	}
	if len(got) != len(ids) {
		return nil, fmt.Errorf("ews GetItem: %d response messages for %d items", len(got), len(ids))
	}
	return got, nil
}

// readGetItem walks a GetItem reply token by token. encoding/xml returns an element's text
// as one token, and MimeContent can be tens of megabytes: so its text is read straight from
// br, which the decoder reads through byte by byte (it keeps no buffer of its own over an
// io.ByteReader), and decoded from base64 as it streams.
func readGetItem(r io.Reader, mime func(i int, r io.Reader) error) ([]Got, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	dec := xml.NewDecoder(br)
	var got []Got
	var msg responseMessage
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
			got = append(got, Got{})
			msg = responseMessage{}
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
			text := &elementText{br: br}
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

// elementText reads the text of the element whose start tag the decoder just returned, up
// to the '<' of the next tag, which it leaves for the decoder.
type elementText struct {
	br   *bufio.Reader
	done bool
}

var errMarkupInMIME = errors.New("read reply: unexpected markup in MimeContent")

func (t *elementText) Read(p []byte) (int, error) {
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
		return 0, errMarkupInMIME
	}
	n := copy(p, buf)
	t.br.Discard(n)
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

type updateItemRequest struct {
	XMLName              xml.Name     `xml:"m:UpdateItem"`
	MessageDisposition   string       `xml:"MessageDisposition,attr"`
	ConflictResolution   string       `xml:"ConflictResolution,attr"`
	SuppressReadReceipts bool         `xml:"SuppressReadReceipts,attr,omitempty"`
	Changes              []itemChange `xml:"m:ItemChanges>t:ItemChange"`
}

type itemChange struct {
	ID  ID `xml:"t:ItemId"`
	Set struct {
		Field  fieldURI `xml:"t:FieldURI"`
		IsRead bool     `xml:"t:Message>t:IsRead"`
	} `xml:"t:Updates>t:SetItemField"`
}

// MarkRead sets IsRead on ids in one UpdateItem, without sending read receipts where the
// server version allows it, and returns one error per item (nil where it worked).
func (c *Client) MarkRead(ctx context.Context, ids []ID) ([]error, error) {
	req := updateItemRequest{
		MessageDisposition:   "SaveOnly",
		ConflictResolution:   "AlwaysOverwrite",
		SuppressReadReceipts: c.canSuppressReadReceipts(),
	}
	req.Changes = make([]itemChange, len(ids))
	for i, id := range ids {
		req.Changes[i].ID = ID{ID: id.ID}
		req.Changes[i].Set.Field = fieldURI{"message:IsRead"}
		req.Changes[i].Set.IsRead = true
	}
	return c.itemsCall(ctx, "UpdateItem", req, len(ids))
}

type deleteItemRequest struct {
	XMLName    xml.Name `xml:"m:DeleteItem"`
	DeleteType string   `xml:"DeleteType,attr"`
	IDs        []ID     `xml:"m:ItemIds>t:ItemId"`
}

// DeleteItems moves ids to Deleted Items, as a mail client's delete does.
func (c *Client) DeleteItems(ctx context.Context, ids []ID) ([]error, error) {
	req := deleteItemRequest{DeleteType: "MoveToDeletedItems", IDs: bareIDs(ids)}
	return c.itemsCall(ctx, "DeleteItem", req, len(ids))
}

type moveItemRequest struct {
	XMLName xml.Name `xml:"m:MoveItem"`
	To      Folder   `xml:"m:ToFolderId"`
	IDs     []ID     `xml:"m:ItemIds>t:ItemId"`
}

// MoveItems moves ids to the folder to.
func (c *Client) MoveItems(ctx context.Context, ids []ID, to Folder) ([]error, error) {
	req := moveItemRequest{To: to, IDs: bareIDs(ids)}
	return c.itemsCall(ctx, "MoveItem", req, len(ids))
}

func bareIDs(ids []ID) []ID {
	out := make([]ID, len(ids))
	for i, id := range ids {
		out[i] = ID{ID: id.ID}
	}
	return out
}

type findFolderRequest struct {
	XMLName     xml.Name  `xml:"m:FindFolder"`
	Traversal   string    `xml:"Traversal,attr"`
	Shape       shape     `xml:"m:FolderShape"`
	Restriction isEqualTo `xml:"m:Restriction>t:IsEqualTo"`
	Parent      Folder    `xml:"m:ParentFolderIds"`
}

type findFolderReply struct {
	Messages []struct {
		responseMessage
		Root struct {
			Folders struct {
				Folders []struct {
					ID ID `xml:"FolderId"`
				} `xml:",any"`
			} `xml:"Folders"`
		} `xml:"RootFolder"`
	} `xml:"ResponseMessages>FindFolderResponseMessage"`
}

// ResolveFolder turns a route's mailbox into a folder. "" and INBOX are the inbox; a name
// of a distinguished folder (deleteditems, junkemail...) is that folder; anything else is a
// path of display names separated by "/", the first looked up under the top of the mailbox
// (so "Inbox/Tickets" is a subfolder of the inbox).
func (c *Client) ResolveFolder(ctx context.Context, mailbox string) (Folder, error) {
	if mailbox == "" || strings.EqualFold(mailbox, "INBOX") {
		return DistinguishedFolder("inbox"), nil
	}
	if d := strings.ToLower(mailbox); slices.Contains(distinguished, d) {
		return DistinguishedFolder(d), nil
	}
	folder := DistinguishedFolder("msgfolderroot")
	for name := range strings.SplitSeq(mailbox, "/") {
		req := findFolderRequest{Traversal: "Shallow", Shape: shape{BaseShape: "IdOnly"}, Parent: folder}
		req.Restriction = equals("folder:DisplayName", name)
		var r findFolderReply
		if err := call(ctx, c, "FindFolder", req, &r); err != nil {
			return Folder{}, err
		}
		if len(r.Messages) != 1 {
			return Folder{}, fmt.Errorf("ews FindFolder: %d response messages for one folder", len(r.Messages))
		}
		m := r.Messages[0]
		if err := m.err(); err != nil {
			return Folder{}, fmt.Errorf("ews FindFolder %q: %w", name, err)
		}
		folders := m.Root.Folders.Folders
		switch len(folders) {
		case 0:
			return Folder{}, &Error{Code: "ErrorFolderNotFound", Message: fmt.Sprintf("no folder %q in the mailbox", mailbox)}
		case 1:
			folder = Folder{Folder: &ID{ID: folders[0].ID.ID}}
		default:
			return Folder{}, fmt.Errorf("ews FindFolder: %d folders named %q", len(folders), name)
		}
	}
	return folder, nil
}
