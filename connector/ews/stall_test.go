package ews

import (
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
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

// TestStallReaderCutsAStalledReply: a read that makes no progress for d closes the body,
// which ends the read, and the reader says it stalled.
func TestStallReaderCutsAStalledReply(t *testing.T) {
	sr := newStallReader(&hangingBody{closed: make(chan struct{})}, 50*time.Millisecond)
	defer sr.stop()
	done := make(chan error, 1)
	go func() {
		_, err := sr.Read(make([]byte, 10))
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !sr.stalled() {
			t.Errorf("Read() = %v, stalled %t; want an error and stalled", err, sr.stalled())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read() still blocked 10s after the stall timeout of 50ms")
	}
}

// TestStallReaderIgnoresTheCallersPace: the time the caller takes between reads is not the
// server's: a slow consumer of a prompt reply is never cut.
func TestStallReaderIgnoresTheCallersPace(t *testing.T) {
	body := io.NopCloser(strings.NewReader("0123456789"))
	sr := newStallReader(body, 20*time.Millisecond)
	defer sr.stop()
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
	if string(got) != "0123456789" || sr.stalled() {
		t.Errorf("read %q, stalled %t; want the whole body, not stalled", got, sr.stalled())
	}
}
