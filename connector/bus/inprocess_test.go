package bus

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// stamped is n bytes that tell which write they came from: a byte out of order or lost shows.
func stamped(seq, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(seq*31 + i)
	}
	return b
}

// TestQueuedConnOrder: everything written arrives, in order, writes of every size (a few
// bytes to more than the queue holds), including what is still queued at Close.
func TestQueuedConnOrder(t *testing.T) {
	client, server := net.Pipe()
	q := newQueuedConn(client)
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(server)
		got <- b
	}()
	var want []byte
	for i := range 400 {
		n := 1 + (i*7919)%(70<<10)
		if i%100 == 0 {
			n = queuedMax + 1
		}
		p := stamped(i, n)
		want = append(want, p...)
		if k, err := q.Write(p); k != n || err != nil {
			t.Fatalf("write %d: Write() = %d, %v", i, k, err)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("server read %d bytes, want the %d written, in order", len(b), len(want))
	}
}

// TestQueuedConnWaitsForRoom: writes are taken at once while the queue has room, even
// when the server reads nothing (the bytes the pump is handing over count as queued until
// the server took them); then a write waits for room until its deadline, and what was
// taken arrives, in order, once the server reads again.
func TestQueuedConnWaitsForRoom(t *testing.T) {
	client, server := net.Pipe()
	q := newQueuedConn(client)
	defer q.Close()
	first, second := stamped(0, 1000), stamped(1, queuedMax-1000)
	done := make(chan error, 1)
	go func() {
		_, err := q.Write(first)
		if err == nil {
			_, err = q.Write(second) // fills the queue
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("writes into a queue with room waited")
	}
	q.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := q.Write([]byte{1}); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write to a full queue: %v, want the deadline exceeded", err)
	}
	q.SetWriteDeadline(time.Time{})
	got := make([]byte, len(first)+len(second))
	if _, err := io.ReadFull(server, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, append(first, second...)) {
		t.Fatal("the server read other bytes than the two writes taken, in order")
	}
}

// TestQueuedConnFailed: once the pipe fails (the server closed it), writes fail, rather
// than queue for nobody; nats.go then reconnects.
func TestQueuedConnFailed(t *testing.T) {
	client, server := net.Pipe()
	q := newQueuedConn(client)
	defer q.Close()
	server.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := q.Write([]byte("PING\r\n")); err != nil {
			if !errors.Is(err, io.ErrClosedPipe) {
				t.Fatalf("Write() = %v, want the pipe's error", err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("writes still succeed 5 s after the server closed the pipe")
		}
		time.Sleep(time.Millisecond)
	}
}
