package connector

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"

	"github.com/mailbus/mailbus/schemas"
)

// Where passwordFrom may read, unless MAILBUS_CREDENTIAL_ENV_PREFIX and
// MAILBUS_CREDENTIAL_DIR say otherwise.
const (
	DefaultCredentialEnvPrefix = "MAILBUS_CRED_"
	DefaultCredentialDir       = "/run/secrets"
)

// maxCredentialFile bounds what passwordFrom.file reads: a password, not a document.
const maxCredentialFile = 16 << 10

// envNameRule is what a portable environment variable name looks like.
var envNameRule = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ownSettingPrefixes are name prefixes of mailbus's own settings, present and future, that
// passwordFrom.env never reads whatever MAILBUS_CREDENTIAL_ENV_PREFIX says: NATS
// credentials, the secret key, the console token and the fence's own settings.
var ownSettingPrefixes = []string{
	EnvPrefix + "_NATS_", EnvPrefix + "_SECRET", EnvPrefix + "_ADMIN", EnvPrefix + "_CREDENTIAL_",
	EnvPrefix + "_ALLOWED_",
}

// fence says where connection secrets may come from and which servers a connection may
// name: the control plane is trusted with telling mailbus where to log in, not with reading
// the process's environment and files, nor with sending stored secrets elsewhere. A nil
// fence is the default one.
type fence struct {
	envPrefix string
	dir       string
	own       map[string]bool // mailbus's own settings (upper case), never read by passwordFrom.env
	ownFiles  []string        // files mailbus's own settings name, never read by passwordFrom.file
	hosts     []string        // allowed host patterns, lower case; empty: any
}

// newFence makes the fence of cfg, whose Check has filled the defaults.
func newFence(cfg Config) *fence {
	f := &fence{
		envPrefix: cfg.CredentialEnvPrefix,
		dir:       filepath.Clean(cfg.CredentialDir),
		own:       ownSettings(),
	}
	if f.envPrefix == "" {
		f.envPrefix = DefaultCredentialEnvPrefix
	}
	if cfg.CredentialDir == "" {
		f.dir = DefaultCredentialDir
	}
	for _, p := range []string{cfg.NATSCreds, cfg.NATSNKey, cfg.NATSTLSCA, cfg.NATSTLSCert, cfg.NATSTLSKey} {
		if p != "" {
			f.ownFiles = append(f.ownFiles, p)
		}
	}
	for _, h := range strings.Split(cfg.AllowedHosts, ",") {
		if h = normalHost(h); h != "" {
			f.hosts = append(f.hosts, h)
		}
	}
	return f
}

// defaultFence is the fence of a sealer made without one.
var defaultFence = newFence(Config{})

// ownSettings is the name of every variable Config reads, in upper case.
func ownSettings() map[string]bool {
	own := map[string]bool{}
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		if name := t.Field(i).Tag.Get("envconfig"); name != "" {
			own[strings.ToUpper(EnvPrefix+"_"+name)] = true
		}
	}
	return own
}

// checkHostPattern refuses an entry of MAILBUS_ALLOWED_HOSTS that is not a host name, an
// address, or *. followed by a domain.
func checkHostPattern(p string) error {
	if strings.TrimSpace(p) == "" {
		return nil // "a,b," is a list of two
	}
	h := strings.TrimPrefix(normalHost(p), "*.")
	if h == "" || strings.ContainsAny(h, "*/:@ ") && net.ParseIP(h) == nil {
		return fmt.Errorf("MAILBUS_ALLOWED_HOSTS: %q: want a host name, an address or *.domain", p)
	}
	return nil
}

// normalHost is a host as patterns and names are compared: trimmed, lower case, without a
// trailing dot or the brackets of an IPv6 address.
func normalHost(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	return strings.TrimSuffix(h, ".")
}

// hostAllowed reports whether host matches an allowed pattern: the same name or address,
// or, for *.example.com, a name ending in .example.com.
func (f *fence) hostAllowed(host string) bool {
	if len(f.hosts) == 0 {
		return true
	}
	host = normalHost(host)
	for _, p := range f.hosts {
		if d, ok := strings.CutPrefix(p, "*."); ok {
			if strings.HasSuffix(host, "."+d) {
				return true
			}
		} else if host == p {
			return true
		}
	}
	return false
}

// check refuses a connection whose passwordFrom reads outside the fence or that names a
// host outside MAILBUS_ALLOWED_HOSTS. It reads nothing: a put is checked on any replica,
// and the file may be mounted only where the routes run.
func (f *fence) check(c *schemas.Connection) *schemas.Error {
	if f == nil {
		f = defaultFence
	}
	if p := c.PasswordFrom; p != nil {
		if p.Env != "" {
			if e := f.checkEnv(p.Env); e != nil {
				return e
			}
		}
		if p.File != "" {
			if _, e := f.credentialPath(p.File); e != nil {
				return e
			}
		}
	}
	if len(f.hosts) == 0 {
		return nil
	}
	switch c.Type {
	case schemas.TypeIMAP:
		if !f.hostAllowed(c.Host) {
			return errInvalid("host", "host %q is not in MAILBUS_ALLOWED_HOSTS", c.Host)
		}
	case schemas.TypeExchange:
		u, err := url.Parse("https://" + c.ExchangeURL)
		if err != nil || !f.hostAllowed(u.Hostname()) {
			return errInvalid("exchangeUrl", "exchangeUrl %q: its host is not in MAILBUS_ALLOWED_HOSTS", c.ExchangeURL)
		}
	}
	if c.Auth == schemas.AuthOAuth2 && c.OAuth2 != nil && c.OAuth2.TokenURL != "" {
		u, err := url.Parse(c.OAuth2.TokenURL)
		if err != nil || !f.hostAllowed(u.Hostname()) {
			return errInvalid("oauth2.tokenUrl", "oauth2.tokenUrl %q: its host is not in MAILBUS_ALLOWED_HOSTS", c.OAuth2.TokenURL)
		}
	}
	return nil
}

// checkEnv refuses a passwordFrom.env outside the prefix or naming a setting of mailbus.
func (f *fence) checkEnv(name string) *schemas.Error {
	const field = "passwordFrom.env"
	if !envNameRule.MatchString(name) {
		return errInvalid(field, "passwordFrom.env %q: want a variable name (letters, digits, _)", name)
	}
	up := strings.ToUpper(name)
	own := f.own[up]
	for _, p := range ownSettingPrefixes {
		own = own || strings.HasPrefix(up, p)
	}
	if own {
		return errInvalid(field, "passwordFrom.env %q: a setting of mailbus itself is never read as a password", name)
	}
	if !strings.HasPrefix(name, f.envPrefix) || name == f.envPrefix {
		return errInvalid(field, "passwordFrom.env %q: mailbus reads only variables named %s* (MAILBUS_CREDENTIAL_ENV_PREFIX)", name, f.envPrefix)
	}
	return nil
}

// credentialPath is where a passwordFrom.file lives: a relative name is taken inside the
// credential directory, an absolute one must be in it once cleaned. It returns the path
// relative to the directory.
func (f *fence) credentialPath(name string) (string, *schemas.Error) {
	const field = "passwordFrom.file"
	p := name
	if !filepath.IsAbs(p) {
		p = filepath.Join(f.dir, p)
	}
	rel, err := filepath.Rel(f.dir, filepath.Clean(p))
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", errInvalid(field, "passwordFrom.file %q: mailbus reads only files in %s (MAILBUS_CREDENTIAL_DIR)", name, f.dir)
	}
	return rel, nil
}

// readEnv reads a passwordFrom.env inside the fence.
func (f *fence) readEnv(name string) (string, error) {
	if e := f.checkEnv(name); e != nil {
		return "", e
	}
	v, ok := os.LookupEnv(name)
	if !ok || v == "" {
		return "", errInvalid("passwordFrom.env", "environment variable %s is not set", name)
	}
	return v, nil
}

// readFile reads a passwordFrom.file inside the fence: a regular file in the credential
// directory, reached through symbolic links that stay in it, holding one line (a trailing
// newline is dropped). Errors name the file, never what it holds.
func (f *fence) readFile(name string) (string, error) {
	v, _, e := f.openFile(name)
	if e != nil {
		return "", e
	}
	return v, nil
}

// probe refuses at a put or a test what check cannot see without reading: a
// passwordFrom.file that is there but is no one-line regular file inside the directory.
// A missing one is let through: it may be mounted only where the routes run, and a route
// that finds none says so in its status.
func (f *fence) probe(c *schemas.Connection) *schemas.Error {
	if f == nil {
		f = defaultFence
	}
	if e := f.check(c); e != nil {
		return e
	}
	if p := c.PasswordFrom; p != nil && p.File != "" {
		if _, missing, e := f.openFile(p.File); e != nil && !missing {
			return e
		}
	}
	return nil
}

// openFile is readFile that also reports whether the file (or the directory) is missing.
func (f *fence) openFile(name string) (v string, missing bool, _ *schemas.Error) {
	const field = "passwordFrom.file"
	rel, e := f.credentialPath(name)
	if e != nil {
		return "", false, e
	}
	// os.Root resolves every link inside the directory and refuses one that leaves it.
	root, err := os.OpenRoot(f.dir)
	if err != nil {
		return "", errors.Is(err, fs.ErrNotExist), errInvalid(field, "credential directory: %v", err)
	}
	defer root.Close()
	// Stat before opening, so a FIFO or device never gets opened (and blocks).
	st, err := root.Stat(rel)
	if err := regularFile(st, err); err != nil {
		return "", errors.Is(err, fs.ErrNotExist), errInvalid(field, "file %s: %v", name, err)
	}
	fh, err := root.Open(rel)
	if err != nil {
		return "", errors.Is(err, fs.ErrNotExist), errInvalid(field, "file %s: %v", name, pathCause(err))
	}
	defer fh.Close()
	st, err = fh.Stat()
	if err := regularFile(st, err); err != nil {
		return "", false, errInvalid(field, "file %s: %v", name, err)
	}
	for _, own := range f.ownFiles {
		if o, err := os.Stat(own); err == nil && os.SameFile(o, st) {
			return "", false, errInvalid(field, "file %s: a file of mailbus's own settings is never read as a password", name)
		}
	}
	b, err := io.ReadAll(io.LimitReader(fh, maxCredentialFile+1))
	if err != nil {
		return "", false, errInvalid(field, "file %s: %v", name, pathCause(err))
	}
	if len(b) > maxCredentialFile {
		return "", false, errInvalid(field, "file %s is larger than %d bytes: want one line", name, maxCredentialFile)
	}
	// Mounted secrets often end with a newline nobody meant to be part of the password.
	v = strings.TrimSuffix(string(b), "\n")
	v = strings.TrimSuffix(v, "\r")
	if strings.ContainsAny(v, "\r\n") {
		return "", false, errInvalid(field, "file %s holds more than one line", name)
	}
	if v == "" {
		return "", false, errInvalid(field, "file %s is empty", name)
	}
	return v, false, nil
}

// regularFile turns a stat result into an error unless it is a regular file.
func regularFile(st fs.FileInfo, err error) error {
	if err != nil {
		return pathCause(err)
	}
	switch m := st.Mode(); {
	case m.IsRegular():
		return nil
	case m.IsDir():
		return errors.New("a directory, not a regular file")
	case m&fs.ModeNamedPipe != 0:
		return errors.New("a named pipe, not a regular file")
	case m&(fs.ModeDevice|fs.ModeCharDevice) != 0:
		return errors.New("a device, not a regular file")
	}
	return errors.New("not a regular file")
}

// pathCause is the cause of a path error without the path, which the message gives as the
// user wrote it.
func pathCause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		if strings.Contains(pe.Err.Error(), "escapes") {
			return errors.New("it leads out of the credential directory")
		}
		return pe.Err
	}
	return err
}
