package connector

import (
	"fmt"
	"os"
	"time"
)

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
	LogLevel   string `envconfig:"LOG_LEVEL" default:"info"`
	LogFormat  string `envconfig:"LOG_FORMAT" default:"json"`
}

// EnvPrefix is the envconfig prefix of every variable.
const EnvPrefix = "MAILBUS"

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
	if c.MaxInlineBytes < 0 {
		return fmt.Errorf("MAILBUS_MAX_INLINE_BYTES %d: want 0 or more", c.MaxInlineBytes)
	}
	return nil
}
