package dovecottest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// EnvSwitch is the environment variable that turns Dovecot tests on ("1").
const EnvSwitch = "MAILBUS_TEST_DOVECOT"

// mailUser is the existing unprivileged account that owns all mail. Dovecot refuses to
// access mail as root.
const mailUser = "nobody"

const (
	startTimeout = 10 * time.Second
	stopTimeout  = 5 * time.Second
)

// Enabled reports whether the switch is on.
func Enabled() bool { return os.Getenv(EnvSwitch) == "1" }

// Options configures a Server. A nil *Options means the zero value.
type Options struct {
	// Users maps user names to passwords; empty means {"alice": "secret"}.
	Users map[string]string
	// CertHosts are more DNS names or IP addresses for the server certificate, which
	// always covers localhost, 127.0.0.1 and ::1.
	CertHosts []string
	// CertNotAfter is when the certificate expires; zero means a year from now. A time in
	// the past makes an expired certificate.
	CertNotAfter time.Time
	// IMAPCapability, when set, replaces the capabilities Dovecot announces once logged in
	// (its imap_capability setting), to play an older server: WithoutMove is Dovecot's own
	// list less MOVE. Dovecot still runs a command it no longer announces; a client that
	// reads the capabilities, as mailbus does, never sends it.
	IMAPCapability string
}

// WithoutMove is Dovecot 2.3's post-login capability list without MOVE (UIDPLUS kept), for
// Options.IMAPCapability.
const WithoutMove = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY " +
	"THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE " +
	"UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH " +
	"ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY SNIPPET=FUZZY PREVIEW=FUZZY " +
	"PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY"

// Server is a running Dovecot with its own config in a temp dir.
//
// Stop and Restart may not be called concurrently with each other; Stop may be called
// from any goroutine.
type Server struct {
	Addr    string         // 127.0.0.1:port, plain IMAP with STARTTLS offered
	TLSAddr string         // 127.0.0.1:port, IMAPS (TLS from the first byte)
	CA      *x509.CertPool // trusts the server certificate
	CertPEM []byte         // the server certificate, PEM-encoded
	Dir     string         // holds dovecot.conf, dovecot.log, run/, state/ and mail/

	uid, gid int
	users    map[string]string
	imapCaps string        // Options.IMAPCapability
	seq      atomic.Uint64 // makes Deliver's file names unique

	mu   sync.Mutex
	proc *process // nil while stopped
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the master has exited
	err  error         // cmd.Wait's result, set before done is closed
}

// Start starts Dovecot or skips the test when the switch is off. With the switch on, any
// failure (binary missing, config error) is t.Fatal, never a skip. The server is stopped
// and its directory removed in t.Cleanup.
func Start(t testing.TB, opts *Options) *Server {
	t.Helper()
	if !Enabled() {
		t.Skipf("Dovecot tests are off; set %s=1 to run them", EnvSwitch)
	}
	if opts == nil {
		opts = &Options{}
	}
	if os.Geteuid() != 0 {
		t.Fatalf("dovecottest: Dovecot's master must run as root (euid %d)", os.Geteuid())
	}
	if _, err := exec.LookPath("dovecot"); err != nil {
		t.Fatalf("dovecottest: %v (run .ci/install-dovecot.sh)", err)
	}
	users := opts.Users
	if len(users) == 0 {
		users = map[string]string{"alice": "secret"}
	}
	for u, p := range users {
		if !validUser.MatchString(u) {
			t.Fatalf("dovecottest: user name %q: want letters, digits and .-_@ only", u)
		}
		if strings.ContainsAny(p, ":\r\n") {
			t.Fatalf("dovecottest: password of %q: a passwd-file cannot hold ':' or line breaks", u)
		}
	}
	uid, gid, err := lookupMailUser()
	if err != nil {
		t.Fatalf("dovecottest: %v", err)
	}

	dir, err := makeDir(t.Name())
	if err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("dovecottest: remove %s: %v", dir, err)
		}
	})

	s := &Server{Dir: dir, uid: uid, gid: gid, users: users, imapCaps: opts.IMAPCapability}
	if err := s.writeFiles(opts); err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	// Registered after the removal, so it runs before it.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dovecottest: tail of %s:\n%s", s.logPath(), s.logTail())
		}
		s.Stop()
	})

	// Another process may take a port between choosing it and Dovecot binding it; one
	// more try with fresh ports makes that harmless.
	for try := 1; ; try++ {
		if err := s.choosePorts(); err != nil {
			t.Fatalf("dovecottest: %v", err)
		}
		err := s.start()
		if err == nil {
			return s
		}
		if try < 2 && strings.Contains(err.Error(), "Address already in use") {
			t.Logf("dovecottest: retrying with other ports: %v", err)
			continue
		}
		t.Fatalf("dovecottest: %v", err)
	}
}

// Restart starts the server again on the same ports and with the same mail, stopping it
// first if it is running.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		t.Fatalf("dovecottest: restart: %v", err)
	}
}

// Stop stops the server and all its processes, cutting off connected clients, and blocks
// until they are gone. It does nothing if the server is not running.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *Server) stopLocked() {
	p := s.proc
	if p == nil {
		return
	}
	s.proc = nil
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// The master is gone; sweep any child that outlived it. The group id cannot have
	// been reused while a member is still alive.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// Maildir returns the Maildir path of a user (for benchmarks that fill it with
// gen_maildir.py; call Chown afterwards).
func (s *Server) Maildir(user string) string {
	return filepath.Join(s.Dir, "mail", user, "Maildir")
}

// Deliver writes a raw message straight into user's Maildir/new, as an MTA would, and
// returns the file name; the server sees it as a new, unseen message.
func (s *Server) Deliver(t testing.TB, user string, raw []byte) string {
	t.Helper()
	if _, ok := s.users[user]; !ok {
		t.Fatalf("dovecottest: Deliver: no user %q", user)
	}
	md := s.Maildir(user)
	now := time.Now()
	name := fmt.Sprintf("%d.M%dP%dQ%d.mailbus-test,S=%d", now.Unix(), now.Nanosecond()/1000,
		os.Getpid(), s.seq.Add(1), len(raw))
	tmp := filepath.Join(md, "tmp", name)
	// Written in tmp/ and renamed, so the server never sees half a message.
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		t.Fatalf("dovecottest: Deliver: %v", err)
	}
	if err := os.Chown(tmp, s.uid, s.gid); err != nil {
		t.Fatalf("dovecottest: Deliver: %v", err)
	}
	if err := os.Rename(tmp, filepath.Join(md, "new", name)); err != nil {
		t.Fatalf("dovecottest: Deliver: %v", err)
	}
	return name
}

// Chown gives everything under user's mail directory to the mail user, for benchmarks
// that filled the Maildir as root: Dovecot cannot work in files it does not own.
func (s *Server) Chown(t testing.TB, user string) {
	t.Helper()
	err := filepath.WalkDir(filepath.Join(s.Dir, "mail", user), func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, s.uid, s.gid)
	})
	if err != nil {
		t.Fatalf("dovecottest: Chown: %v", err)
	}
}

var validUser = regexp.MustCompile(`^[A-Za-z0-9._@-]+$`)

func lookupMailUser() (uid, gid int, err error) {
	u, err := user.Lookup(mailUser)
	if err != nil {
		return 0, 0, fmt.Errorf("look up mail user: %w", err)
	}
	if uid, err = strconv.Atoi(u.Uid); err != nil {
		return 0, 0, fmt.Errorf("mail user %s: uid %q: %w", mailUser, u.Uid, err)
	}
	if gid, err = strconv.Atoi(u.Gid); err != nil {
		return 0, 0, fmt.Errorf("mail user %s: gid %q: %w", mailUser, u.Gid, err)
	}
	return uid, gid, nil
}

// makeDir makes a 0755 directory that Dovecot's unprivileged processes can reach.
// t.TempDir will not do: it lies in a 0700 directory.
func makeDir(testName string) (string, error) {
	name := regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(testName, "_")
	// Unix socket paths under base_dir are limited to about 100 bytes.
	if len(name) > 20 {
		name = name[:20]
	}
	dir, err := os.MkdirTemp("", "dovecottest-"+name+"-")
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	if len(dir) > 70 {
		os.RemoveAll(dir)
		return "", fmt.Errorf("temporary directory %s is too long for Dovecot's sockets; set a shorter TMPDIR", dir)
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			os.RemoveAll(dir)
			return "", err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			os.RemoveAll(dir)
			return "", fmt.Errorf("%s (mode %v) is not searchable by Dovecot's unprivileged processes; set TMPDIR elsewhere", p, fi.Mode().Perm())
		}
		if p == filepath.Dir(p) {
			return dir, nil
		}
	}
}

func (s *Server) confPath() string   { return filepath.Join(s.Dir, "dovecot.conf") }
func (s *Server) logPath() string    { return filepath.Join(s.Dir, "dovecot.log") }
func (s *Server) stderrPath() string { return filepath.Join(s.Dir, "dovecot.stderr") }

// writeFiles writes the certificate, the passwd-file and the users' empty Maildirs. The
// config follows once the ports are known.
func (s *Server) writeFiles(opts *Options) error {
	certPEM, keyPEM, err := selfSigned(opts.CertHosts, opts.CertNotAfter)
	if err != nil {
		return err
	}
	s.CertPEM = certPEM
	s.CA = x509.NewCertPool()
	s.CA.AppendCertsFromPEM(certPEM)
	// Dovecot's config process reads the key as root; nobody else needs it.
	if err := os.WriteFile(filepath.Join(s.Dir, "cert.pem"), certPEM, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.Dir, "key.pem"), keyPEM, 0o600); err != nil {
		return err
	}

	if err := os.Mkdir(filepath.Join(s.Dir, "mail"), 0o755); err != nil {
		return err
	}
	names := make([]string, 0, len(s.users))
	for u := range s.users {
		names = append(names, u)
	}
	sort.Strings(names)
	var passwd strings.Builder
	for _, u := range names {
		home := filepath.Join(s.Dir, "mail", u)
		// user:password:uid:gid:gecos:home:shell
		fmt.Fprintf(&passwd, "%s:{PLAIN}%s:%d:%d::%s::\n", u, s.users[u], s.uid, s.gid, home)
		for _, d := range []string{home, filepath.Join(home, "Maildir"), filepath.Join(home, "Maildir", "cur"),
			filepath.Join(home, "Maildir", "new"), filepath.Join(home, "Maildir", "tmp")} {
			if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
			if err := os.Chown(d, s.uid, s.gid); err != nil {
				return err
			}
		}
	}
	// The auth process runs as the dovecot user and must read it.
	return os.WriteFile(filepath.Join(s.Dir, "passwd"), []byte(passwd.String()), 0o644)
}

// choosePorts picks two free loopback ports and writes the config for them.
func (s *Server) choosePorts() error {
	var ports [2]int
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("find a free port: %w", err)
		}
		// Both stay open until both are chosen, so they differ.
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	s.TLSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	conf := renderConfig(configData{Dir: s.Dir, Port: ports[0], TLSPort: ports[1], IMAPCapability: s.imapCaps})
	return os.WriteFile(s.confPath(), conf, 0o644)
}

// start runs the master in the foreground and waits until both ports greet.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return errors.New("already running")
	}
	out, err := os.OpenFile(s.stderrPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close() // the child has its own copy
	cmd := exec.Command("dovecot", "-F", "-c", s.confPath())
	cmd.Dir = s.Dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start dovecot: %w", err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.proc = p

	if err := s.waitReady(p); err != nil {
		s.stopLocked()
		return fmt.Errorf("%w\n--- %s:\n%s", err, s.logPath(), s.logTail())
	}
	return nil
}

func (s *Server) waitReady(p *process) error {
	deadline := time.Now().Add(startTimeout)
	for _, a := range []struct {
		addr string
		tls  bool
	}{{s.Addr, false}, {s.TLSAddr, true}} {
		var err error
		for {
			select {
			case <-p.done:
				return fmt.Errorf("dovecot exited before it was ready: %v", p.err)
			default:
			}
			if err = greets(a.addr, a.tls, deadline); err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("dovecot not ready on %s after %v: %w", a.addr, startTimeout, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// greets reports whether addr accepts a connection and sends an IMAP "* OK" greeting.
func greets(addr string, useTLS bool, deadline time.Time) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(deadline)
	if useTLS {
		// Only readiness is checked here; the certificate may be expired on purpose.
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("TLS handshake: %w", err)
		}
		c = tc
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	if !strings.HasPrefix(line, "* OK") {
		return fmt.Errorf("greeting %q", strings.TrimSpace(line))
	}
	return nil
}

// logTail returns the last lines of Dovecot's stderr (startup errors land there before
// the log file is open) and of its log.
func (s *Server) logTail() string {
	var b strings.Builder
	for _, path := range []string{s.stderrPath(), s.logPath()} {
		data, err := os.ReadFile(path)
		if err != nil || len(data) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 30 {
			lines = lines[len(lines)-30:]
		}
		fmt.Fprintf(&b, "[%s]\n%s\n", filepath.Base(path), strings.Join(lines, "\n"))
	}
	if b.Len() == 0 {
		return "(no output)"
	}
	return b.String()
}
