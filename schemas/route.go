package schemas

// Select modes: all (the default) takes every message that arrives, whatever its flags;
// unseen takes only the unread ones, and counts the others (RouteStatus.SkippedSeen).
const (
	SelectUnseen = "unseen"
	SelectAll    = "all"
)

// Backlog modes: what a route takes of the mail already in its mailbox when it first starts
// or after its checkpoint was reset. unseen (the default) takes the unread messages, all
// takes every one, none takes nothing and starts with the mail that arrives next.
const (
	BacklogUnseen = "unseen"
	BacklogAll    = "all"
	BacklogNone   = "none"
)

// After actions, applied to a message only once JetStream acknowledged its event.
const (
	AfterMarkRead = "markRead"
	AfterNone     = "none"
	AfterDelete   = "delete"
	AfterMove     = "move"
)

// Route watches one mailbox of one connection and publishes its new mail on a data bus.
type Route struct {
	Name        string `json:"name"`
	Connection  string `json:"connection"`
	Disabled    bool   `json:"disabled"`
	Description string `json:"description"`
	// Bus is the data bus number 0..3: mail.bus.<bus>.<route>, stream MAIL_BUS_<bus>.
	Bus     int    `json:"bus"`
	Mailbox string `json:"mailbox"`
	Select  string `json:"select"`
	Backlog string `json:"backlog"`
	After   string `json:"after"`
	MoveTo  string `json:"moveTo"`
	// Headers is the allow-list of CustomHeaders (case-insensitive); nil means all.
	Headers    []string        `json:"headers"`
	Attributes []AttributeRule `json:"attributes"`
	IncludeRaw bool            `json:"includeRaw"`
	// Filter narrows the mail the route takes; nil (or empty) takes all it selects.
	Filter *RouteFilter `json:"filter,omitempty"`

	// Revision is the KV revision, as for Connection.
	Revision uint64 `json:"revision,omitempty"`
}

// AttributeRule fills Event.Attributes[Name] from a part of the message: From is
// "header:<Name>", "subject", "from" or "text". With Regex, the first group of the first
// match is the value (the whole match when the expression has no group).
type AttributeRule struct {
	Name  string `json:"name"`
	From  string `json:"from"`
	Regex string `json:"regex,omitempty"`
}

// RouteFilter is what a message must match for a route to take it: every condition given
// must hold (an empty string or 0 is no condition). Strings are case-insensitive
// substrings, as IMAP SEARCH defines them: From, To, Cc and Subject of the decoded header,
// Headers of the named header's value ("" as Contains: the header is present).
// Since and Before are dates (YYYY-MM-DD) compared with the day the message was received
// (IMAP INTERNALDATE, Exchange DateTimeReceived): since is that day or later, before is
// earlier than that day. MinSize and MaxSize bound the size in bytes, both inclusive.
type RouteFilter struct {
	From    string         `json:"from"`
	To      string         `json:"to"`
	Cc      string         `json:"cc"`
	Subject string         `json:"subject"`
	Headers []FilterHeader `json:"headers"`
	Since   string         `json:"since"`
	Before  string         `json:"before"`
	MinSize int64          `json:"minSize"`
	MaxSize int64          `json:"maxSize"`
}

// FilterHeader is one header condition of a RouteFilter: the header Name is present and
// one of its occurrences contains Contains (case-insensitive).
type FilterHeader struct {
	Name     string `json:"name"`
	Contains string `json:"contains"`
}

// IsZero reports whether f has no condition, so that it takes every message.
func (f *RouteFilter) IsZero() bool {
	return f == nil || (f.From == "" && f.To == "" && f.Cc == "" && f.Subject == "" &&
		len(f.Headers) == 0 && f.Since == "" && f.Before == "" && f.MinSize == 0 && f.MaxSize == 0)
}
