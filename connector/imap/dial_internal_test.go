package imap

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"testing"
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
