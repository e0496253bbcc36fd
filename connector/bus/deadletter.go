package bus

import (
	"encoding/json"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/schemas"
)

// DeadLetter is published on <prefix>.dead.<route> for a message that could not become an
// event (the mapping refused it, panicked, or the event is too large). The raw message is in
// the object store at RawRef (nil when even that failed: the server returned no body).
// The message counts as processed: the route's after action is applied and the checkpoint
// moves past it, so it never blocks the route; but a message without a raw copy is neither
// deleted nor moved, since the mailbox holds its only copy.
type DeadLetter struct {
	Route       string             `json:"route"`
	Connection  string             `json:"connection"`
	Mailbox     string             `json:"mailbox"`
	UidValidity uint32             `json:"uidValidity"`
	Uid         uint32             `json:"uid"`
	Error       string             `json:"error"`
	RawRef      *schemas.ObjectRef `json:"rawRef"`
}

// DeadLetterMsg is the NATS message of a dead letter. Its Msg-Id is
// dead/<route>/<event id>, so a message dead-lettered again after a crash is deduplicated
// like an event, and each route sharing the mailbox stores its own.
func DeadLetterMsg(subject, eventID string, d *DeadLetter) (*nats.Msg, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(subject)
	m.Data = b
	m.Header.Set(jetstream.MsgIDHeader, "dead/"+d.Route+"/"+eventID)
	m.Header.Set("Content-Type", "application/json")
	return m, nil
}
