package imap

import (
	"context"
	"fmt"
	"time"

	"github.com/mailbus/mailbus/connector/engine"

	"github.com/mailbus/mailbus/connector/retry"
	"github.com/mailbus/mailbus/schemas"
)

// wait returns when the next cycle is due: at once when new mail was announced, else after
// the poll interval. With IDLE the server announces new mail as it arrives; the poll stays
// as a safety net and is the only trigger without IDLE. reselect is false when the
// cycle is due to announced mail, true for the poll. When the session's access token
// (oauth2) is due for renewal first, it returns errTokenRenew instead.
func (s *imapSession) wait(ctx context.Context) (reselect bool, err error) {
	s.w.status(func(st *schemas.RouteStatus) { st.State = schemas.StateIdle })
	select {
	case <-s.wake:
		return false, nil
	default:
	}
	d := s.w.pollInterval()
	if !s.renewAt.IsZero() {
		left := time.Until(s.renewAt)
		if left <= 0 {
			return false, errTokenRenew
		}
		d = min(d, left)
	}
	if s.idle {
		reselect, err = s.waitIdle(ctx, min(d, idleRestart))
	} else {
		reselect, err = s.waitPoll(ctx, d)
	}
	if err == nil && !s.renewAt.IsZero() && !time.Now().Before(s.renewAt) {
		return false, errTokenRenew
	}
	return reselect, err
}

// waitIdle sits in IDLE until EXISTS, the end of d, or a dead connection.
func (s *imapSession) waitIdle(ctx context.Context, d time.Duration) (reselect bool, err error) {
	// Mail that arrived since the last command may have been announced to nobody: some
	// servers (go-imap's) only send what is queued when a command asks. A NOOP does.
	if news, err := s.noop(ctx); news || err != nil {
		return false, err
	}
	var idle interface {
		Close() error
		Wait() error
	}
	err = Within(ctx, CommandTimeout, s.c, func() (err error) {
		idle, err = s.c.Idle()
		return err
	})
	if err != nil {
		return false, fmt.Errorf("idle: %w", err)
	}
	defer s.w.met.Idling()()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-s.c.Closed():
		return false, fmt.Errorf("idle: %w", engine.ErrClosedByServer)
	case <-s.wake:
	case <-t.C:
		reselect = true
	}
	// DONE, then the tagged OK: a server that does not answer is a dead connection.
	err = Within(ctx, CommandTimeout, s.c, func() error {
		if err := idle.Close(); err != nil {
			return err
		}
		return idle.Wait()
	})
	if err != nil {
		return false, fmt.Errorf("idle done: %w", err)
	}
	return reselect, nil
}

// waitPoll waits d, with a NOOP every noopInterval: it keeps the connection from timing
// out, notices a dead one, and lets the server tell of new mail (EXISTS) early.
func (s *imapSession) waitPoll(ctx context.Context, d time.Duration) (reselect bool, err error) {
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return true, nil
		}
		if !retry.Sleep(ctx, min(left, noopInterval)) {
			return false, ctx.Err()
		}
		if time.Until(deadline) <= 0 {
			return true, nil
		}
		if news, err := s.noop(ctx); news || err != nil {
			return false, err
		}
	}
}

// noop sends a NOOP, which makes the server send what it has queued, and reports whether
// that announced new mail (EXISTS).
func (s *imapSession) noop(ctx context.Context) (news bool, err error) {
	if err := Within(ctx, CommandTimeout, s.c, func() error { return s.c.Noop().Wait() }); err != nil {
		return false, fmt.Errorf("noop: %w", err)
	}
	select {
	case <-s.wake:
		return true, nil
	default:
		return false, nil
	}
}
