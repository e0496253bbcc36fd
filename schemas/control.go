package schemas

import "time"

// Error codes of control replies.
const (
	CodeInvalid     = "invalid"
	CodeNotFound    = "not_found"
	CodeConflict    = "conflict"
	CodeUnavailable = "unavailable"
	CodeInternal    = "internal"
)

// Error is the error of a failed control request. Field names the offending field in JSON
// path form ("port", "oauth2.tokenUrl") when there is one.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// Error returns the message, with the field when there is one.
func (e *Error) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Message
	}
	return e.Message
}

// NameRequest asks for one definition by name (get, delete, test of a saved connection,
// route status).
type NameRequest struct {
	Name string `json:"name"`
}

// ListRequest asks for the definitions of a kind, in name order. Status adds each route's
// status to route.list.
//
// Limit and After page through a list too large for one NATS message: a page holds at
// most Limit definitions (fewer when more would not fit in the server's max payload),
// those named after After, and the reply's Next names the last of them when more follow.
// Without Limit the whole list (after After) is one reply, refused when it does not fit.
type ListRequest struct {
	Status bool   `json:"status,omitempty"`
	Limit  int    `json:"limit,omitempty"`
	After  string `json:"after,omitempty"`
}

// LogRequest reads a connection's log: at most Limit entries (newest last) since Since.
// Format "text" returns Text as plain lines instead of Entries.
type LogRequest struct {
	Name   string     `json:"name"`
	Limit  int        `json:"limit,omitempty"`
	Since  *time.Time `json:"since,omitempty"`
	Format string     `json:"format,omitempty"`
}

// Reply is the body of every control reply; only the fields of the request's kind are set.
type Reply struct {
	OK    bool   `json:"ok"`
	Error *Error `json:"error,omitempty"`

	Connection  *Connection   `json:"connection,omitempty"`
	Connections []Connection  `json:"connections,omitempty"`
	Route       *Route        `json:"route,omitempty"`
	Routes      []Route       `json:"routes,omitempty"`
	Status      *RouteStatus  `json:"status,omitempty"`
	Statuses    []RouteStatus `json:"statuses,omitempty"`
	// Next is set on a page of a list when more definitions follow: the After of the next
	// page's request.
	Next string `json:"next,omitempty"`

	// Connection check.
	Stages       []Stage       `json:"stages,omitempty"`
	Capabilities []string      `json:"capabilities,omitempty"`
	Mailbox      *MailboxCheck `json:"mailbox,omitempty"`

	// Connection log.
	Entries []LogEntry `json:"entries,omitempty"`
	Text    string     `json:"text,omitempty"`

	// Definitions applied.
	Changes []Change `json:"changes,omitempty"`
}

// ApplyRequest (definitions.apply) brings the stored definitions to the ones given:
// connections and routes that differ are written, equal ones left as they are (their
// revisions do not move). Nothing is written unless every definition is valid.
type ApplyRequest struct {
	Connections []Connection `json:"connections,omitempty"`
	Routes      []Route      `json:"routes,omitempty"`
	// DryRun reports the changes and writes nothing.
	DryRun bool `json:"dryRun,omitempty"`
	// Declared names every definition of the whole set, when it is applied in several
	// requests: a route may name a connection declared there (in a dry run, where it is
	// not written yet), and Prune deletes what it does not name.
	Declared *DefinitionNames `json:"declared,omitempty"`
	// Prune deletes the stored connections and routes Declared does not name.
	Prune bool `json:"prune,omitempty"`
}

// DefinitionNames names connections and routes.
type DefinitionNames struct {
	Connections []string `json:"connections"`
	Routes      []string `json:"routes"`
}

// Change actions.
const (
	ActionCreate    = "create"
	ActionUpdate    = "update"
	ActionUnchanged = "unchanged"
	ActionDelete    = "delete"
)

// Change is what an apply did, or would do in a dry run, to one definition.
type Change struct {
	Kind   string `json:"kind"` // connection or route
	Name   string `json:"name"`
	Action string `json:"action"`
	// Fields names the top-level fields an update changes (a secret by name only).
	Fields []string `json:"fields,omitempty"`
	// Revision is the definition's revision after the apply (0 in a dry run or a delete).
	Revision uint64 `json:"revision,omitempty"`
}

// Route states.
const (
	StateStarting = "starting"
	StateRunning  = "running"
	StateIdle     = "idle"
	StateBackoff  = "backoff"
	StateError    = "error"
	StateDisabled = "disabled"
	StateStopped  = "stopped"
)

// RouteStatus is what a route's worker is doing, as route.status reports it.
type RouteStatus struct {
	Route         string     `json:"route,omitempty"`
	State         string     `json:"state"`
	Owner         string     `json:"owner"`
	LastPollAt    *time.Time `json:"lastPollAt"`
	LastSuccessAt *time.Time `json:"lastSuccessAt"`
	LastError     string     `json:"lastError"`
	// Published counts events the stream stored; Duplicates those it dropped because it
	// held their Msg-Id already (a retry, or a publish after a crash).
	Published    uint64 `json:"published"`
	Duplicates   uint64 `json:"duplicates"`
	DeadLettered uint64 `json:"deadLettered"`
	// SkippedSeen counts messages select unseen passed over because they were already read.
	SkippedSeen uint64 `json:"skippedSeen"`
	UidValidity uint32 `json:"uidValidity"`
	LastUid     uint32 `json:"lastUid"`
	Pending     int64  `json:"pending"`
	// Filtered counts messages the route's filter passed over.
	Filtered uint64 `json:"filtered"`
}

// Stage is one timed step of a connection check.
type Stage struct {
	Stage  string `json:"stage"`
	OK     bool   `json:"ok"`
	MS     int64  `json:"ms"`
	Detail string `json:"detail,omitempty"`
	Error  string `json:"error,omitempty"`
}

// MailboxCheck is what the connection check found in a mailbox.
type MailboxCheck struct {
	Name        string `json:"name"`
	Messages    uint32 `json:"messages"`
	Unseen      uint32 `json:"unseen"`
	UidValidity uint32 `json:"uidValidity"`
	UidNext     uint32 `json:"uidNext"`
}

// LogEntry is one entry of a connection log (stream MAIL_LOG, subject mail.log.<connection>).
type LogEntry struct {
	Time    time.Time      `json:"time"`
	Level   string         `json:"level"`
	Route   string         `json:"route,omitempty"`
	Event   string         `json:"event"`
	Message string         `json:"message"`
	Fields  map[string]any `json:"fields,omitempty"`
}
