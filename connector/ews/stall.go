package ews

import (
	"io"
	"sync/atomic"
	"time"
)

// stallReader reads a streamed reply and closes it when one read makes no progress for d:
// a GetItem of large mail may take long as a whole, but not stall. Closing the body is what
// unblocks a read from a server that stopped sending.
type stallReader struct {
	r     io.Reader
	d     time.Duration
	t     *time.Timer
	fired atomic.Bool
}

func newStallReader(rc io.ReadCloser, d time.Duration) *stallReader {
	s := &stallReader{r: rc, d: d}
	s.t = time.AfterFunc(d, func() {
		s.fired.Store(true)
		rc.Close()
	})
	s.t.Stop()
	return s
}

// Read arms the timer for the time of the read only: the time the caller takes between
// reads (mapping, publishing) is not the server's.
func (s *stallReader) Read(p []byte) (int, error) {
	s.t.Reset(s.d)
	n, err := s.r.Read(p)
	s.t.Stop()
	return n, err
}

func (s *stallReader) stop() { s.t.Stop() }

// stalled reports whether the reply was closed for want of progress.
func (s *stallReader) stalled() bool { return s.fired.Load() }
