package imap

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"testing"
	"time"
)

// TestReadAheadConn: whatever the sizes of writes and reads, the bytes come through in
// order, and a connection that caught up holds no buffer.
func TestReadAheadConn(t *testing.T) {
	want := make([]byte, 3<<20)
	for i := range want {
		want[i] = byte(rand.N(256))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		s, err := ln.Accept()
		if err != nil {
			return
		}
		defer s.Close()
		for rest := want; len(rest) > 0; {
			n := min(len(rest), 1+rand.N(200<<10))
			s.Write(rest[:n])
			rest = rest[n:]
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := &readAheadConn{Conn: raw}
	defer c.Close()
	got, err := io.ReadAll(bufio.NewReaderSize(c, 4096))
	if err != nil {
		t.Fatalf("ReadAll() = %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, not the %d sent", len(got), len(want))
	}
	if c.buf != nil {
		t.Errorf("the buffer is still held at EOF")
	}
}

// TestReadAheadConnDeadlines: the read deadline, set lazily, still holds as imapclient
// sets it: a read past it times out (at most deadlineSlack late), a later deadline or none
// replaces an earlier one, and the one left by a timeout does not cut the next read.
func TestReadAheadConnDeadlines(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	send := make(chan time.Duration)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			return
		}
		defer s.Close()
		for after := range send { // one byte after each delay asked for
			time.Sleep(after)
			s.Write([]byte{'x'})
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := &readAheadConn{Conn: raw}
	defer c.Close()
	buf := make([]byte, 1)

	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	began := time.Now()
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a read past its deadline = %v; want a timeout", err)
	}
	if took := time.Since(began); took < 100*time.Millisecond || took > 100*time.Millisecond+deadlineSlack+time.Second {
		t.Errorf("the read timed out after %v; want between 100ms and 100ms + %v", took, deadlineSlack)
	}

	c.SetReadDeadline(time.Time{}) // imapclient's between responses: none
	send <- 1500 * time.Millisecond
	if _, err := c.Read(buf); err != nil {
		t.Fatalf("a read without a deadline = %v; want the byte sent after 1.5s", err)
	}

	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	send <- 0
	if _, err := c.Read(buf); err != nil {
		t.Fatalf("a prompt read = %v", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second)) // later than the one set on the connection
	send <- 1500 * time.Millisecond
	if _, err := c.Read(buf); err != nil {
		t.Fatalf("a read within its later deadline = %v; want the byte sent after 1.5s", err)
	}
	close(send)
}

// TestReadAheadConnDeadlineRace: a deadline set from another goroutine while a read is
// on its way, as imapclient's reader does while STARTTLS's handshake reads, is no data
// race (the race detector fails this test on one).
func TestReadAheadConnDeadlineRace(t *testing.T) {
	client, server := net.Pipe()
	c := &readAheadConn{Conn: client}
	defer c.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 100 {
			c.SetReadDeadline(time.Now().Add(time.Duration(i+1) * time.Second))
		}
		c.SetReadDeadline(time.Time{})
	}()
	go server.Write(make([]byte, 100))
	buf := make([]byte, 1)
	for range 100 {
		if _, err := c.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	<-done
}
