package engine

import (
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// ProgressWatch is the stall watchdog of a read from a mail server: it closes the
// connection when a read makes no progress for d. A FETCH or GetItem of large mail may
// take long as a whole, but not stall.
type ProgressWatch struct {
	d       time.Duration
	t       *time.Timer
	fired   atomic.Bool
	timeout error
}

// NewProgressWatch makes the watch of c, disarmed. timeout is the error Explain names
// as the cause when the watch cut the connection.
func NewProgressWatch(c io.Closer, d time.Duration, timeout error) *ProgressWatch {
	p := &ProgressWatch{d: d, timeout: timeout}
	p.t = time.AfterFunc(d, func() {
		p.fired.Store(true)
		c.Close()
	})
	p.t.Stop()
	return p
}

// Arm starts the watch (again) before a read.
func (p *ProgressWatch) Arm() { p.t.Reset(p.d) }

// Disarm stops the watch after a read.
func (p *ProgressWatch) Disarm() { p.t.Stop() }

// Stop ends the watch.
func (p *ProgressWatch) Stop() { p.t.Stop() }

// Fired reports whether the watch cut the connection.
func (p *ProgressWatch) Fired() bool { return p.fired.Load() }

// Explain names the stall as the cause of err when the watch cut the connection.
func (p *ProgressWatch) Explain(err error) error {
	if p.fired.Load() {
		return fmt.Errorf("no progress in %s: %w (%w)", p.d, p.timeout, err)
	}
	return err
}

// ProgressReader arms the watch W around every read of R.
type ProgressReader struct {
	R io.Reader
	W *ProgressWatch
}

func (r *ProgressReader) Read(p []byte) (int, error) {
	r.W.Arm()
	n, err := r.R.Read(p)
	r.W.Disarm()
	return n, err
}
