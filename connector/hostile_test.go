package connector

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// HostileIMAP is the IMAP server of someone who may send control commands and wants the
// secrets mailbus keeps (exported for the package's external tests). It greets, offers
// LOGIN and the SASL mechanisms mailbus uses, records every byte it receives (command
// lines, literals, SASL responses, which it also decodes) and refuses every login.
type HostileIMAP struct {
	ln net.Listener

	mu    sync.Mutex
	raw   bytes.Buffer // every byte received, on every connection, in order
	sasl  [][]byte     // the decoded SASL responses
	conns int
	wg    sync.WaitGroup
}

// hostileCaps is what the server offers: no STARTTLS, no SASL-IR (so the client sends its
// response after a continuation), no LOGINDISABLED.
const hostileCaps = "IMAP4rev1 AUTH=PLAIN AUTH=LOGIN AUTH=XOAUTH2 AUTH=OAUTHBEARER"

// literalRule finds the literal announced at the end of a command line: {n} or {n+}.
var literalRule = regexp.MustCompile(`\{(\d+)(\+?)\}$`)

func StartHostileIMAP(t *testing.T) *HostileIMAP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen() = %v", err)
	}
	h := &HostileIMAP{ln: ln}
	go h.accept()
	t.Cleanup(func() {
		ln.Close()
		h.wg.Wait()
	})
	return h
}

// Host is the address a connection names.
func (h *HostileIMAP) Host() string { return "127.0.0.1" }

// Port is the port a connection names.
func (h *HostileIMAP) Port() int { return h.ln.Addr().(*net.TCPAddr).Port }

// Connections is how many connections the server accepted.
func (h *HostileIMAP) Connections() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.conns
}

// Received is everything the server was sent, followed by the decoded SASL responses.
func (h *HostileIMAP) Received() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := bytes.Clone(h.raw.Bytes())
	for _, s := range h.sasl {
		out = append(out, '\n')
		out = append(out, s...)
	}
	return out
}

// Leaked returns the secrets that reached the server: as sent, quoted, or in base64.
func (h *HostileIMAP) Leaked(secrets ...string) []string {
	return leakedIn(h.Received(), secrets)
}

// leakedIn returns the secrets found in got, as they are, with the escapes of an IMAP
// quoted string, or in base64.
func leakedIn(got []byte, secrets []string) []string {
	var found []string
	for _, s := range secrets {
		if s == "" {
			continue
		}
		quoted := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s)
		for _, form := range []string{s, quoted, base64.StdEncoding.EncodeToString([]byte(s))} {
			if bytes.Contains(got, []byte(form)) {
				found = append(found, s)
				break
			}
		}
	}
	return found
}

func (h *HostileIMAP) accept() {
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return
		}
		h.mu.Lock()
		h.conns++
		h.mu.Unlock()
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			defer c.Close()
			h.serve(c)
		}()
	}
}

// record keeps what was received.
func (h *HostileIMAP) record(b []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.raw.Write(b)
}

// serve speaks just enough IMAP to be sent a password: greeting, CAPABILITY, LOGIN and
// AUTHENTICATE (both refused), NOOP, LOGOUT.
func (h *HostileIMAP) serve(c net.Conn) {
	r := bufio.NewReader(c)
	send := func(format string, args ...any) bool {
		_, err := fmt.Fprintf(c, format+"\r\n", args...)
		return err == nil
	}
	if !send("* OK [CAPABILITY %s] hostile IMAP ready", hostileCaps) {
		return
	}
	for {
		line, err := h.command(r, c)
		if err != nil {
			return
		}
		tag, rest, _ := strings.Cut(line, " ")
		verb, args, _ := strings.Cut(rest, " ")
		switch strings.ToUpper(verb) {
		case "CAPABILITY":
			send("* CAPABILITY %s", hostileCaps)
			send("%s OK CAPABILITY done", tag)
		case "NOOP", "ID":
			send("%s OK done", tag)
		case "LOGIN":
			send("%s NO [AUTHENTICATIONFAILED] thank you", tag)
		case "AUTHENTICATE":
			// The initial response, if the client sent one inline, is recorded with the line.
			if _, ir, ok := strings.Cut(args, " "); ok {
				h.decodeSASL(ir)
			} else {
				send("+ ")
				resp, err := h.line(r)
				if err != nil {
					return
				}
				h.decodeSASL(resp)
			}
			send("%s NO [AUTHENTICATIONFAILED] thank you", tag)
		case "LOGOUT":
			send("* BYE")
			send("%s OK LOGOUT done", tag)
			return
		default:
			send("%s BAD not here", tag)
		}
	}
}

// line reads and records one line, without its CRLF.
func (h *HostileIMAP) line(r *bufio.Reader) (string, error) {
	l, err := r.ReadString('\n')
	h.record([]byte(l))
	if err != nil {
		return "", err
	}
	return strings.TrimRight(l, "\r\n"), nil
}

// command reads one command with its literals, which are recorded and inlined.
func (h *HostileIMAP) command(r *bufio.Reader, w io.Writer) (string, error) {
	var cmd strings.Builder
	for {
		l, err := h.line(r)
		if err != nil {
			return "", err
		}
		m := literalRule.FindStringSubmatch(l)
		if m == nil {
			cmd.WriteString(l)
			return cmd.String(), nil
		}
		n, _ := strconv.Atoi(m[1])
		if m[2] == "" { // a synchronizing literal waits for the go-ahead
			fmt.Fprintf(w, "+ go ahead\r\n")
		}
		lit := make([]byte, n)
		if _, err := io.ReadFull(r, lit); err != nil {
			h.record(lit)
			return "", err
		}
		h.record(lit)
		cmd.WriteString(strings.TrimSuffix(l, m[0]))
		cmd.Write(lit)
	}
}

// decodeSASL keeps a SASL response decoded, so a test finds what it carries.
func (h *HostileIMAP) decodeSASL(b64 string) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
	if err != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sasl = append(h.sasl, b)
}

// HostileTokenEndpoint is an OAuth2 token endpoint (or EWS endpoint) of the same someone:
// it records every request (headers, Basic credentials decoded, body) and refuses it.
type HostileTokenEndpoint struct {
	srv *httptest.Server

	mu       sync.Mutex
	requests [][]byte // each request as received: request line, headers, body
}

func StartHostileTokenEndpoint(t *testing.T) *HostileTokenEndpoint {
	t.Helper()
	e := &HostileTokenEndpoint{}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b bytes.Buffer
		fmt.Fprintf(&b, "%s %s\n", r.Method, r.URL)
		r.Header.Write(&b)
		if u, p, ok := r.BasicAuth(); ok { // decoded, so a test finds what it carries
			fmt.Fprintf(&b, "basic auth: %s %s\n", u, p)
		}
		io.Copy(&b, r.Body)
		e.mu.Lock()
		e.requests = append(e.requests, b.Bytes())
		e.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":"invalid_grant"}`)
	}))
	t.Cleanup(e.srv.Close)
	return e
}

// URL is the token URL a connection names.
func (e *HostileTokenEndpoint) URL() string { return e.srv.URL + "/token" }

// Requests is how many requests the endpoint received.
func (e *HostileTokenEndpoint) Requests() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.requests)
}

// Leaked returns the secrets that reached the endpoint: as sent, URL-encoded in a form, or
// in base64 (Basic auth).
func (e *HostileTokenEndpoint) Leaked(secrets ...string) []string {
	e.mu.Lock()
	all := bytes.Join(e.requests, []byte("\n"))
	e.mu.Unlock()
	var found []string
	for _, s := range secrets {
		if len(leakedIn(all, []string{s})) > 0 || (s != "" && bytes.Contains(all, []byte(url.QueryEscape(s)))) {
			found = append(found, s)
		}
	}
	return found
}
