package engine

import (
	"errors"
	"fmt"
)

// Mail server sessions and open files. Every IMAP session, and the HTTP connection an
// Exchange route keeps, is a socket, and a socket is a file descriptor. A process may open
// only so many (RLIMIT_NOFILE, ulimit -n); when its routes take them all, the NATS
// connection and, with the embedded server, the JetStream store cannot open the files they
// need, and every route stops: checkpoint and lease writes time out, the heartbeat lapses
// (seen in a scale test whose IMAP server shared the process: 10,000 routes and their
// server's 10,000 sessions under a limit of 20,000). So routes hold a session only within a
// budget that leaves a reserve for everything else; a route over it waits in backoff, its
// status saying why, and takes a free slot on a later try.

// SessionReserveMin is the least number of the process's files no route session may
// take; the reserve is a tenth of the limit when that is more.
const SessionReserveMin = 256

// ErrNoSessionSlot is the error of a route that found every session slot taken.
var ErrNoSessionSlot = errors.New("no file descriptor left for another mail server session")

// SessionSlots counts the mail server sessions open at once against the budget.
type SessionSlots struct {
	slots      chan struct{} // nil: no limit known
	fileLimit  int
	budget     int
	reserveFor int
}

// Budget tells the limits: the open files limit, the sessions allowed, and the files kept
// for everything else; all 0 without a budget.
func (s *SessionSlots) Budget() (fileLimit, sessions, reserved int) {
	return s.fileLimit, s.budget, s.reserveFor
}

// NewSessionSlots sizes the budget from the limit of open files, fileLimit (0: none known,
// no budget).
func NewSessionSlots(fileLimit int) *SessionSlots {
	s := &SessionSlots{fileLimit: fileLimit}
	if fileLimit <= 0 {
		return s
	}
	s.reserveFor = max(SessionReserveMin, fileLimit/10)
	s.budget = max(fileLimit-s.reserveFor, 1)
	s.slots = make(chan struct{}, s.budget)
	return s
}

// Take holds a slot until release is called; when every slot is taken it returns a
// temporary error that names the limits. A nil *SessionSlots has no limit.
func (s *SessionSlots) Take() (release func(), err error) {
	if s == nil || s.slots == nil {
		return func() {}, nil
	}
	select {
	case s.slots <- struct{}{}:
		var done bool
		return func() {
			if !done {
				done = true
				<-s.slots
			}
		}, nil
	default:
		return nil, fmt.Errorf("%w: this process may open %d files (ulimit -n), %d of them are kept for NATS and its store, and the other %d are in use by routes: raise the limit, or run more replicas",
			ErrNoSessionSlot, s.fileLimit, s.reserveFor, s.budget)
	}
}
