//go:build unix

package connector

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailbus/mailbus/connector/bus"
)

// NATSProcess is a NATS server with JetStream, as mailbus embeds it (StartEmbedded), in a
// process of its own (the test binary, running TestNATSServerChild), so that a test can
// kill it with SIGKILL, or freeze it, and start it again on the same port and store.
// Exported for the black-box tests, as export_test.go files do.
type NATSProcess struct {
	t    *testing.T
	Dir  string
	Addr string // host:port, kept across restarts
	cmd  *exec.Cmd
}

// StartNATSProcess starts a NATS server process on a free port; it is killed at cleanup.
func StartNATSProcess(t *testing.T) *NATSProcess {
	p := &NATSProcess{t: t, Dir: t.TempDir(), Addr: "127.0.0.1:-1"}
	p.Start()
	t.Cleanup(p.Kill)
	return p
}

// Start runs the server and waits until it takes clients (its store recovered).
func (p *NATSProcess) Start() {
	p.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestNATSServerChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "MAILBUS_TEST_CHILD=nats", "MAILBUS_TEST_NATS_LISTEN="+p.Addr, "MAILBUS_TEST_NATS_DIR="+p.Dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		p.t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start nats server: %v", err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "nats listening on "); ok {
				addr <- a
				break
			}
		}
		io.Copy(io.Discard, out)
	}()
	select {
	case p.Addr = <-addr:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		p.t.Fatalf("nats server on %s: not ready in 60s", p.Addr)
	}
	p.cmd = cmd
}

// URL is the server's client URL.
func (p *NATSProcess) URL() string { return "nats://" + p.Addr }

// Kill sends SIGKILL: nothing is flushed, no client is told.
func (p *NATSProcess) Kill() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Kill()
	p.cmd.Wait()
	p.cmd = nil
}

// Freeze stops the server with SIGSTOP: its connections stay open and what clients send
// is neither read nor answered, until Kill.
func (p *NATSProcess) Freeze() {
	if p.cmd != nil {
		p.cmd.Process.Signal(syscall.SIGSTOP)
	}
}

// TestNATSServerChild is the server of NATSProcess; it runs only there.
func TestNATSServerChild(t *testing.T) {
	if os.Getenv("MAILBUS_TEST_CHILD") != "nats" {
		t.Skip("runs as the NATS server of a fault test")
	}
	s, err := bus.StartEmbedded(os.Getenv("MAILBUS_TEST_NATS_LISTEN"), os.Getenv("MAILBUS_TEST_NATS_DIR"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("nats listening on " + s.Addr().String())
	s.WaitForShutdown() // never: the test kills it
}
