package schemas

import "time"

// EventType is the CloudEvents type of every mail event.
const EventType = "mail.received"

// Event is the mail-attribute event published on mail.bus.<bus>.<route>, one per message.
// The attribute names (To, Cc, Bcc, Attachments, CustomHeaders and their fields) come from
// the product page and downstream scenarios depend on them exactly. Array fields are always
// arrays, never null.
type Event struct {
	Id          string     `json:"Id"`
	Route       string     `json:"Route"`
	Connection  string     `json:"Connection"`
	Bus         int        `json:"Bus"`
	Mailbox     string     `json:"Mailbox"`
	UidValidity uint32     `json:"UidValidity"`
	Uid         uint32     `json:"Uid"`
	ReceivedAt  *time.Time `json:"ReceivedAt"`

	MessageId  string     `json:"MessageId"`
	InReplyTo  string     `json:"InReplyTo"`
	References []string   `json:"References"`
	Date       *time.Time `json:"Date"`
	Subject    string     `json:"Subject"`
	From       *Address   `json:"From"`
	ReplyTo    []Address  `json:"ReplyTo"`
	To         []Address  `json:"To"`
	Cc         []Address  `json:"Cc"`
	Bcc        []Address  `json:"Bcc"`

	TextBody string `json:"TextBody"`
	HtmlBody string `json:"HtmlBody"`

	Attachments   []Attachment      `json:"Attachments"`
	CustomHeaders []CustomHeader    `json:"CustomHeaders"`
	Attributes    map[string]string `json:"Attributes"`

	// Size is the size of the raw message in bytes.
	Size int64 `json:"Size"`
	// RawRef points at the raw message in the object store when the route asks for it.
	RawRef   *ObjectRef `json:"RawRef,omitempty"`
	Warnings []string   `json:"Warnings"`
}

// Address is a mailbox: a display name (decoded to UTF-8) and an e-mail address.
type Address struct {
	Name    string `json:"Name"`
	Address string `json:"Address"`
}

// Attachment is an attached file or inline part. Content holds the decoded bytes (base64 in
// JSON) when they fit the inline limit; otherwise ContentRef names the object holding them.
type Attachment struct {
	Name        string `json:"Name"`
	Extension   string `json:"Extension"`
	ContentType string `json:"ContentType"`
	Size        int64  `json:"Size"`
	Sha256      string `json:"Sha256"`
	ContentId   string `json:"ContentId"`
	Inline      bool   `json:"Inline"`
	// Content is omitted when ContentRef is set, and for an empty attachment.
	Content    []byte     `json:"Content,omitempty"`
	ContentRef *ObjectRef `json:"ContentRef,omitempty"`
}

// ObjectRef names an object in a JetStream object store.
type ObjectRef struct {
	Bucket string `json:"Bucket"`
	Object string `json:"Object"`
}

// CustomHeader is one header name with all its values: Value is the first occurrence and
// ListValues every occurrence in order.
type CustomHeader struct {
	Name       string   `json:"Name"`
	Value      string   `json:"Value"`
	ListValues []string `json:"ListValues"`
}
