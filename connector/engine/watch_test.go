package engine_test

import (
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailbus/mailbus/connector/engine"
)

// hangingBody is a reply body whose server stopped sending: a read blocks until Close.
type hangingBody struct {
	once   sync.Once
	closed chan struct{}
}

func (b *hangingBody) Read([]byte) (int, error) {
	<-b.closed
	return 0, errors.New("read on closed body")
}

func (b *hangingBody) Close() error {
	b.once.Do(func() { close(b.closed) })
	return nil
}

// TestProgressWatchCutsAStalledRead: a read that makes no progress for d closes the
// connection, which ends the read, and the watch says it fired and names the stall.
func TestProgressWatchCutsAStalledRead(t *testing.T) {
	body := &hangingBody{closed: make(chan struct{})}
	errStall := errors.New("stalled")
	w := engine.NewProgressWatch(body, 50*time.Millisecond, errStall)
	defer w.Stop()
	r := &engine.ProgressReader{R: body, W: w}
	done := make(chan error, 1)
	go func() {
		_, err := r.Read(make([]byte, 10))
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !w.Fired() || !errors.Is(w.Explain(err), errStall) {
			t.Errorf("Read() = %v, fired %t, explained %v; want an error, fired, the stall named", err, w.Fired(), w.Explain(err))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read() still blocked 10s after the watch of 50ms")
	}
}

// TestProgressWatchIgnoresTheCallersPace: the time the caller takes between reads is not
// the server's: a slow consumer of a prompt reply is never cut.
func TestProgressWatchIgnoresTheCallersPace(t *testing.T) {
	body := io.NopCloser(strings.NewReader("0123456789"))
	w := engine.NewProgressWatch(body, 20*time.Millisecond, nil)
	defer w.Stop()
	sr := &engine.ProgressReader{R: body, W: w}
	var got []byte
	buf := make([]byte, 3)
	for {
		n, err := sr.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Read() = %v", err)
		}
		time.Sleep(60 * time.Millisecond) // mapping and publishing what was read
	}
	if string(got) != "0123456789" || w.Fired() {
		t.Errorf("read %q, fired %t; want the whole body, not fired", got, w.Fired())
	}
}

// slowBody sends one byte every gap, n times, then hangs until Close (a server that
// stalls after some progress).
type slowBody struct {
	hangingBody
	gap time.Duration
	n   int
}

func (b *slowBody) Read(p []byte) (int, error) {
	if b.n == 0 {
		return b.hangingBody.Read(p)
	}
	time.Sleep(b.gap)
	b.n--
	p[0] = 'x'
	return 1, nil
}

// TestProgressWatchTimesEachRead: what counts is each read, not the whole: reads that
// each make progress within d are never cut, however long they take together, and a stall
// after them is cut d after its read began. (The watch only notes when a read begins, and
// its timer, when it fires, waits the rest of the read's d.)
func TestProgressWatchTimesEachRead(t *testing.T) {
	body := &slowBody{hangingBody: hangingBody{closed: make(chan struct{})}, gap: 10 * time.Millisecond, n: 30}
	w := engine.NewProgressWatch(body, 60*time.Millisecond, errors.New("stalled"))
	defer w.Stop()
	r := &engine.ProgressReader{R: body, W: w}
	buf := make([]byte, 1)
	for i := range 30 {
		if _, err := r.Read(buf); err != nil || w.Fired() {
			t.Fatalf("read %d (of bytes 10 ms apart, watch of 60 ms) = %v, fired %t; want a byte", i, err, w.Fired())
		}
	}
	began := time.Now()
	_, err := r.Read(buf)
	if took := time.Since(began); err == nil || !w.Fired() || took < 60*time.Millisecond {
		t.Errorf("the stalled read = %v after %v, fired %t; want it cut, not before 60ms", err, took, w.Fired())
	}
}
