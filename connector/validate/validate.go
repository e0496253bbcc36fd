package validate

import (
	"fmt"
	"net"
	"net/mail"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/filter"
	"github.com/mailbus/mailbus/connector/oauth2"
	"github.com/mailbus/mailbus/schemas"
)

// Defaults a definition gets for what it leaves out.
const (
	// DefaultPollInterval is a connection's pollInterval when it gives none.
	DefaultPollInterval = 60 * time.Second
	minPollInterval     = time.Second
	// DefaultMailbox is a route's mailbox when it gives none.
	DefaultMailbox = "INBOX"
)

// ExchangeVersions are the EWS versions a connection may name.
var ExchangeVersions = []string{
	"Exchange2007_SP1", "Exchange2010", "Exchange2010_SP1", "Exchange2010_SP2",
	"Exchange2013", "Exchange2013_SP1", "Exchange2016", "Exchange2019",
}

var (
	// nameRule is the seed's "system name": it becomes a subject token and a KV key.
	nameRule = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)
	// schemeRule finds a protocol people paste from a browser or a mail client.
	schemeRule = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*://`)
	// headerNameRule is RFC 5322 field-name: printable ASCII except the colon.
	headerNameRule = regexp.MustCompile(`^[!-9;-~]+$`)
)

// The error constructors: every refusal of the control plane is one of these codes.

// Invalid refuses a field's value: a bad request, nothing changed.
func Invalid(field, format string, args ...any) *schemas.Error {
	return &schemas.Error{Code: schemas.CodeInvalid, Field: field, Message: fmt.Sprintf(format, args...)}
}

// NotFound says the named definition does not exist.
func NotFound(format string, args ...any) *schemas.Error {
	return &schemas.Error{Code: schemas.CodeNotFound, Field: "name", Message: fmt.Sprintf(format, args...)}
}

// Conflict refuses a request that clashes with what is stored (a revision, another
// definition).
func Conflict(field, format string, args ...any) *schemas.Error {
	return &schemas.Error{Code: schemas.CodeConflict, Field: field, Message: fmt.Sprintf(format, args...)}
}

// Name applies the system-name rule to a field.
func Name(field, v string) *schemas.Error {
	if v == "" {
		return Invalid(field, "%s is required", field)
	}
	if !nameRule.MatchString(v) {
		return Invalid(field, "%s %q: use 1 to 64 letters, digits or _", field, v)
	}
	return nil
}

// oneOf refuses a value outside an enumeration.
func oneOf(field, v string, allowed ...string) *schemas.Error {
	if slices.Contains(allowed, v) {
		return nil
	}
	return Invalid(field, "%s %q: want one of %s", field, v, strings.Join(allowed, ", "))
}

// checkAddress refuses a host or EWS URL with a protocol, a space or (for a host) a path or
// a port, the mistakes people make when pasting from a browser.
func checkAddress(field, v string, pathAllowed bool) *schemas.Error {
	if v == "" {
		return Invalid(field, "%s is required", field)
	}
	if m := schemeRule.FindString(v); m != "" {
		return Invalid(field, "%s must not include a protocol: drop %q", field, m)
	}
	if strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return Invalid(field, "%s %q must not contain spaces or control characters", field, v)
	}
	if !pathAllowed {
		if strings.ContainsAny(v, "/?#@") {
			return Invalid(field, "%s %q: want a host name or address only, without a path", field, v)
		}
		if _, _, err := net.SplitHostPort(v); err == nil {
			return Invalid(field, "%s %q must not include a port: set port instead", field, v)
		}
	}
	return nil
}

// Connection checks a connection as a put carries it and fills its defaults: port
// 993 for ssl else 143, encryption ssl, auth basic, logLevel errors, pollInterval 60s. A
// port or pollInterval of 0 counts as absent, since JSON 0 and a missing number look the
// same once decoded. Checks that need the stored definition (a password is set) are in the
// store.
func Connection(c *schemas.Connection) *schemas.Error {
	if e := Name("name", c.Name); e != nil {
		return e
	}
	if c.Type == "" {
		return Invalid("type", "type is required: imap or exchange")
	}
	if e := oneOf("type", c.Type, schemas.TypeIMAP, schemas.TypeExchange); e != nil {
		return e
	}
	if c.Encryption == "" {
		c.Encryption = schemas.EncryptionSSL
	}
	if e := oneOf("encryption", c.Encryption, schemas.EncryptionNone, schemas.EncryptionSSL, schemas.EncryptionTLS); e != nil {
		return e
	}
	switch c.Type {
	case schemas.TypeIMAP:
		if e := checkAddress("host", c.Host, false); e != nil {
			return e
		}
		if c.Port < 0 || c.Port > 65535 {
			return Invalid("port", "port %d: want 1..65535", c.Port)
		}
		if c.Port == 0 {
			c.Port = 143
			if c.Encryption == schemas.EncryptionSSL {
				c.Port = 993
			}
		}
	case schemas.TypeExchange:
		if e := checkAddress("exchangeUrl", c.ExchangeURL, true); e != nil {
			return e
		}
		if c.ExchangeVersion == "" {
			return Invalid("exchangeVersion", "exchangeVersion is required: one of %s", strings.Join(ExchangeVersions, ", "))
		}
		if e := oneOf("exchangeVersion", c.ExchangeVersion, ExchangeVersions...); e != nil {
			return e
		}
		if c.Port < 0 || c.Port > 65535 {
			return Invalid("port", "port %d: want 1..65535", c.Port)
		}
	}

	if c.Auth == "" {
		c.Auth = schemas.AuthBasic
	}
	if e := oneOf("auth", c.Auth, schemas.AuthNone, schemas.AuthBasic, schemas.AuthWindows, schemas.AuthOAuth2); e != nil {
		return e
	}
	switch c.Auth {
	case schemas.AuthBasic:
		if c.Username == "" {
			return Invalid("username", "username is required for auth basic")
		}
	case schemas.AuthWindows:
		if c.Username == "" {
			return Invalid("username", "username is required for auth windows")
		}
		if c.Domain == "" && !strings.Contains(c.Username, `\`) {
			return Invalid("domain", `domain is required for auth windows (or give username as DOMAIN\user)`)
		}
	case schemas.AuthOAuth2:
		if e := oauth2.Validate(c.OAuth2); e != nil {
			return e
		}
	}
	if p := c.PasswordFrom; p != nil {
		if (p.Env == "") == (p.File == "") {
			return Invalid("passwordFrom", "passwordFrom: set exactly one of env and file")
		}
		if c.Password != "" {
			return Invalid("passwordFrom", "give password or passwordFrom, not both")
		}
	}

	if c.LogLevel == "" {
		c.LogLevel = schemas.LogErrors
	}
	if e := oneOf("logLevel", c.LogLevel, schemas.LogFull, schemas.LogErrors, schemas.LogOff); e != nil {
		return e
	}
	switch d := time.Duration(c.PollInterval); {
	case d == 0:
		c.PollInterval = schemas.Duration(DefaultPollInterval)
	case d < minPollInterval:
		return Invalid("pollInterval", "pollInterval %s: want at least %s", d, minPollInterval)
	}
	for i, r := range c.TestRecipients {
		field := fmt.Sprintf("testRecipients[%d]", i)
		a, err := mail.ParseAddress(r)
		if err != nil || a.Name != "" || a.Address != r {
			return Invalid(field, "%s %q: want a bare e-mail address such as bot@example.com", field, r)
		}
	}
	return nil
}

// Credentials is the part of the connection check that needs the stored definition: a
// connection that logs in must have a password, a passwordFrom, or (oauth2) a token or what
// gets one; an oauth2 provider's scopes are filled in here, since they depend on the grant.
func Credentials(c *schemas.Connection) *schemas.Error {
	switch c.Auth {
	case schemas.AuthBasic, schemas.AuthWindows:
		if c.Password == "" && c.PasswordFrom == nil {
			return Invalid("password", "password or passwordFrom is required for auth %s", c.Auth)
		}
	case schemas.AuthOAuth2:
		return oauth2.CheckSecrets(c.OAuth2, c.Type)
	}
	return nil
}

// Route checks a route as a put carries it and fills its defaults: mailbox INBOX,
// select all, backlog unseen, after markRead. Whether its connection exists is checked by the store.
func Route(r *schemas.Route) *schemas.Error {
	if e := Name("name", r.Name); e != nil {
		return e
	}
	if e := Name("connection", r.Connection); e != nil {
		return e
	}
	if r.Bus < 0 || r.Bus >= bus.Buses {
		return Invalid("bus", "bus %d: want 0..%d", r.Bus, bus.Buses-1)
	}
	if r.Mailbox == "" {
		r.Mailbox = DefaultMailbox
	}
	if r.Select == "" {
		r.Select = schemas.SelectAll
	}
	if e := oneOf("select", r.Select, schemas.SelectUnseen, schemas.SelectAll); e != nil {
		return e
	}
	if r.Backlog == "" {
		r.Backlog = schemas.BacklogUnseen
	}
	if e := oneOf("backlog", r.Backlog, schemas.BacklogUnseen, schemas.BacklogAll, schemas.BacklogNone); e != nil {
		return e
	}
	if r.After == "" {
		r.After = schemas.AfterMarkRead
	}
	if e := oneOf("after", r.After, schemas.AfterMarkRead, schemas.AfterNone, schemas.AfterDelete, schemas.AfterMove); e != nil {
		return e
	}
	if r.After == schemas.AfterMove && r.MoveTo == "" {
		return Invalid("moveTo", "moveTo is required for after move")
	}
	if r.After != schemas.AfterMove && r.MoveTo != "" {
		return Invalid("moveTo", "moveTo is only used with after move")
	}
	for i, h := range r.Headers {
		if !headerNameRule.MatchString(h) {
			return Invalid(fmt.Sprintf("headers[%d]", i), "header name %q: want printable ASCII without spaces or colons", h)
		}
	}
	if r.Filter.IsZero() {
		r.Filter = nil
	} else if e := filter.Validate(r.Filter); e != nil {
		return e
	}
	seen := make(map[string]bool, len(r.Attributes))
	for i, a := range r.Attributes {
		field := fmt.Sprintf("attributes[%d]", i)
		if a.Name == "" {
			return Invalid(field+".name", "attribute name is required")
		}
		if seen[a.Name] {
			return Invalid(field+".name", "attribute %q is defined twice", a.Name)
		}
		seen[a.Name] = true
		switch h, isHeader := strings.CutPrefix(a.From, "header:"); {
		case isHeader:
			if !headerNameRule.MatchString(h) {
				return Invalid(field+".from", "header name %q: want printable ASCII without spaces or colons", h)
			}
		case a.From == "subject" || a.From == "from" || a.From == "text":
		default:
			return Invalid(field+".from", "from %q: want header:<Name>, subject, from or text", a.From)
		}
		if a.Regex != "" {
			if _, err := regexp.Compile(a.Regex); err != nil {
				return Invalid(field+".regex", "regex does not compile: %v", err)
			}
		}
	}
	return nil
}
