package engine

import (
	"context"
	"io"
	"time"
)

// Source is a mailbox as the engine reads it: one per route, made by the route's kind
// of connection (IMAP, Exchange). It is shaped after Redpanda Connect's
// service.BatchInput (Connect, ReadBatch returning the messages and their ack function,
// Close), fitted to mail: a message is streamed into the mapping and never held whole,
// so ReadBatch hands each message to the batch as it arrives rather than returning it,
// and the source can be asked for a raw copy again when a message must go to the dead
// letters.
//
// The engine calls its methods from one goroutine: Connect; then cycles of Poll and
// ReadBatch until it returns no Ack; Wait between cycles; Close when the session fails or
// the route stops.
type Source interface {
	// Connect opens a session with the mail server: dial, log in, load the checkpoint.
	Connect(ctx context.Context) error
	// Poll begins a cycle: it lists what is pending above the checkpoint. With reselect
	// the mailbox is looked at afresh (a poll); without, the source may trust the state
	// its session holds (news announced by IDLE).
	Poll(ctx context.Context, reselect bool) error
	// ReadBatch reads the next batch of what Poll listed into b: it adds each message
	// (Batch.Add) and streams its raw bytes into the mapping (Batch.Map, then
	// Batch.Publish), never holding a whole message. It returns the Ack of the batch, or a
	// nil Ack once the cycle has nothing left.
	ReadBatch(ctx context.Context, b *Batch) (Ack, error)
	// Raw fetches the raw message of it again and hands it to put (which stores it). It
	// returns false, and no error, when the server has no body for it.
	Raw(ctx context.Context, it *Item, put func(io.Reader) error) (bool, error)
	// Wait returns when the next cycle is due: news announced (IDLE, reselect false), the
	// poll interval over (reselect true), or ErrRenew when the session must log in again.
	Wait(ctx context.Context) (reselect bool, err error)
	// Close ends the session.
	Close() error
	// Judge sorts a failure of the source: permanent (retrying soon cannot fix it), a
	// timeout of the server, and how long the server asked to be left alone (0: the
	// engine's backoff).
	Judge(err error) Verdict
}

// Ack acts on the messages of a batch once the engine has waited for their events'
// acknowledgements: Items()[:done] are done (acknowledged, dead-lettered or passed over),
// in the batch's order; failed, when not nil, is why the others are not. Only then does
// the source touch the mailbox (the route's after action) and advance its checkpoint, for
// the done ones alone. The batch fails with what it returns, else with failed.
type Ack func(ctx context.Context, done int, failed error) error

// Verdict is how a source judges one of its failures.
type Verdict struct {
	// Permanent: retrying soon cannot fix it (credentials, a missing mailbox); the route
	// is parked in state error and retried slowly.
	Permanent bool
	// Timeout: the server gave no answer in time; the status says it as it is.
	Timeout bool
	// Wait is how long the server asked to be left alone; 0: the engine's backoff.
	Wait time.Duration
}
