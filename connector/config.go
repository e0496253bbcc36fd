package connector

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/secrets"
)

// nameToken is what a subject prefix may be.
var nameToken = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// Config is the process configuration, read from MAILBUS_* environment variables by
// envconfig. The names and defaults are part of the outside contract.
type Config struct {
	NATSURL      string `envconfig:"NATS_URL"`
	NATSCreds    string `envconfig:"NATS_CREDS"`
	NATSNKey     string `envconfig:"NATS_NKEY"`
	NATSUser     string `envconfig:"NATS_USER"`
	NATSPassword string `envconfig:"NATS_PASSWORD"`
	NATSToken    string `envconfig:"NATS_TOKEN"`
	NATSTLSCA    string `envconfig:"NATS_TLS_CA"`
	NATSTLSCert  string `envconfig:"NATS_TLS_CERT"`
	NATSTLSKey   string `envconfig:"NATS_TLS_KEY"`

	EmbeddedListen string `envconfig:"EMBEDDED_LISTEN" default:"127.0.0.1:4222"`
	DataDir        string `envconfig:"DATA_DIR" default:"./mailbus-data"`

	SubjectPrefix  string        `envconfig:"SUBJECT_PREFIX" default:"mail"`
	StreamReplicas int           `envconfig:"STREAM_REPLICAS" default:"1"`
	DedupWindow    time.Duration `envconfig:"DEDUP_WINDOW" default:"10m"`
	MaxInlineBytes int64         `envconfig:"MAX_INLINE_BYTES" default:"262144"`
	SecretKey      string        `envconfig:"SECRET_KEY"`
	HTTPAddr       string        `envconfig:"HTTP_ADDR" default:":8080"`
	// AdminToken turns the admin console at /ui/ on and is its login token.
	AdminToken string `envconfig:"ADMIN_TOKEN"`
	Instance   string `envconfig:"INSTANCE"`

	EventsMaxAge   time.Duration `envconfig:"EVENTS_MAX_AGE" default:"168h"`
	EventsMaxBytes ByteSize      `envconfig:"EVENTS_MAX_BYTES" default:"unlimited"`
	DeadMaxAge     time.Duration `envconfig:"DEAD_MAX_AGE" default:"720h"`
	// ManageStreams nil means true, so that a Config made in code manages its streams.
	ManageStreams *bool  `envconfig:"MANAGE_STREAMS" default:"true"`
	Definitions   string `envconfig:"DEFINITIONS"`
	LogLevel      string `envconfig:"LOG_LEVEL" default:"info"`
	LogFormat     string `envconfig:"LOG_FORMAT" default:"json"`

	// Where a connection's passwordFrom may read (see docs/security.md): variables whose
	// name starts with CredentialEnvPrefix (never mailbus's own settings) and regular files
	// in CredentialDir. Empty means the default.
	CredentialEnvPrefix string `envconfig:"CREDENTIAL_ENV_PREFIX" default:"MAILBUS_CRED_"`
	CredentialDir       string `envconfig:"CREDENTIAL_DIR" default:"/run/secrets"`
	// AllowedHosts is a comma list of host patterns (imap.example.com, *.example.com) that
	// hosts, Exchange URLs and OAuth2 token URLs may name; empty: any. A string, not a
	// slice, so that Config stays comparable.
	AllowedHosts string `envconfig:"ALLOWED_HOSTS"`
}

// EnvPrefix is the envconfig prefix of every variable.
const EnvPrefix = "MAILBUS"

// Where passwordFrom may read, unless MAILBUS_CREDENTIAL_ENV_PREFIX and
// MAILBUS_CREDENTIAL_DIR say otherwise.
const (
	DefaultCredentialEnvPrefix = secrets.DefaultEnvPrefix
	DefaultCredentialDir       = secrets.DefaultDir
)

// fence is where c's connections may read passwordFrom and which hosts they may name.
func (c *Config) fence() *secrets.Fence {
	return secrets.NewFence(secrets.FenceConfig{
		EnvPrefix: c.CredentialEnvPrefix, Dir: c.CredentialDir, AllowedHosts: c.AllowedHosts,
		OwnVars:  ownSettings(),
		OwnFiles: []string{c.NATSCreds, c.NATSNKey, c.NATSTLSCA, c.NATSTLSCert, c.NATSTLSKey},
	})
}

// ownSettings is the name of every variable Config reads, in upper case.
func ownSettings() []string {
	var own []string
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		if name := t.Field(i).Tag.Get("envconfig"); name != "" {
			own = append(own, strings.ToUpper(EnvPrefix+"_"+name))
		}
	}
	return own
}

// Check fills derived defaults and refuses values the process cannot run with.
func (c *Config) Check() error {
	if c.Instance == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "mailbus"
		}
		c.Instance = h
	}
	if !nameToken.MatchString(c.SubjectPrefix) {
		return fmt.Errorf("MAILBUS_SUBJECT_PREFIX %q: want letters, digits, _ or -", c.SubjectPrefix)
	}
	if c.StreamReplicas < 1 || c.StreamReplicas > 5 {
		return fmt.Errorf("MAILBUS_STREAM_REPLICAS %d: want 1..5", c.StreamReplicas)
	}
	if c.DedupWindow < time.Second {
		return fmt.Errorf("MAILBUS_DEDUP_WINDOW %s: want at least 1s", c.DedupWindow)
	}
	for _, a := range []struct {
		name string
		age  time.Duration
	}{{"MAILBUS_EVENTS_MAX_AGE", c.EventsMaxAge}, {"MAILBUS_DEAD_MAX_AGE", c.DeadMaxAge}} {
		// JetStream refuses a duplicate window longer than the age limit.
		if a.age < 0 || (a.age > 0 && a.age < c.DedupWindow) {
			return fmt.Errorf("%s %s: want 0 (no limit) or at least MAILBUS_DEDUP_WINDOW (%s)", a.name, a.age, c.DedupWindow)
		}
	}
	if c.MaxInlineBytes < 0 {
		return fmt.Errorf("MAILBUS_MAX_INLINE_BYTES %d: want 0 or more", c.MaxInlineBytes)
	}
	if c.CredentialEnvPrefix == "" {
		c.CredentialEnvPrefix = DefaultCredentialEnvPrefix
	}
	if !secrets.ValidEnvName(c.CredentialEnvPrefix) {
		return fmt.Errorf("MAILBUS_CREDENTIAL_ENV_PREFIX %q: want letters, digits or _", c.CredentialEnvPrefix)
	}
	if c.CredentialDir == "" {
		c.CredentialDir = DefaultCredentialDir
	}
	if !filepath.IsAbs(c.CredentialDir) {
		return fmt.Errorf("MAILBUS_CREDENTIAL_DIR %q: want an absolute path", c.CredentialDir)
	}
	for _, h := range strings.Split(c.AllowedHosts, ",") {
		if err := secrets.CheckHostPattern(h); err != nil {
			return err
		}
	}
	return nil
}

// Storage is the storage cfg asks for.
func (c *Config) Storage() bus.StorageConfig {
	return bus.StorageConfig{
		Replicas: c.StreamReplicas, Dedup: c.DedupWindow,
		EventsMaxAge: c.EventsMaxAge, EventsMaxBytes: int64(c.EventsMaxBytes), DeadMaxAge: c.DeadMaxAge,
		CheckOnly: c.ManageStreams != nil && !*c.ManageStreams,
	}
}

// ByteSize is a number of bytes read from the environment: "unlimited" (or -1), or a whole
// number with an optional unit, K, M, G or T for powers of 1000 (KB, MB, ... too) and
// KiB, MiB, GiB, TiB for powers of 1024.
type ByteSize int64

// Decode implements envconfig.Decoder.
func (b *ByteSize) Decode(v string) error {
	v = strings.TrimSpace(v)
	if strings.EqualFold(v, "unlimited") || v == "-1" {
		*b = bus.Unlimited
		return nil
	}
	i := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' })
	num, unit := v, ""
	if i >= 0 {
		num, unit = v[:i], strings.TrimSpace(v[i:])
	}
	units := map[string]int64{
		"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
		"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
	}
	mul, ok := units[strings.ToLower(unit)]
	n, err := strconv.ParseInt(num, 10, 64)
	if !ok || err != nil || n <= 0 || n > (1<<62)/mul {
		return fmt.Errorf("%q: want unlimited or a size such as 10GiB", v)
	}
	*b = ByteSize(n * mul)
	return nil
}

// DialNATS connects a client of a running mailbus (the mailbus CLI) with the same
// MAILBUS_NATS_* settings; it tries once and does not reconnect.
func DialNATS(cfg Config) (*nats.Conn, error) { return bus.Dial(cfg.natsConn()) }

// natsConn is the NATS part of the configuration.
func (c Config) natsConn() bus.ConnConfig {
	return bus.ConnConfig{
		URL: c.NATSURL, Creds: c.NATSCreds, NKey: c.NATSNKey, User: c.NATSUser,
		Password: c.NATSPassword, Token: c.NATSToken,
		TLSCA: c.NATSTLSCA, TLSCert: c.NATSTLSCert, TLSKey: c.NATSTLSKey,
		Instance: c.Instance, EmbeddedListen: c.EmbeddedListen,
	}
}
