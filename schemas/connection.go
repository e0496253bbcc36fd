package schemas

// Connection types.
const (
	TypeIMAP     = "imap"
	TypeExchange = "exchange"
)

// Encryption modes: none is plain TCP, ssl is TLS from the first byte, tls is STARTTLS.
const (
	EncryptionNone = "none"
	EncryptionSSL  = "ssl"
	EncryptionTLS  = "tls"
)

// Authentication kinds. Windows is NTLM with DOMAIN\user.
const (
	AuthNone    = "none"
	AuthBasic   = "basic"
	AuthWindows = "windows"
	AuthOAuth2  = "oauth2"
)

// Connection log levels: full logs every message processed, errors only failures and state
// changes, off nothing.
const (
	LogFull   = "full"
	LogErrors = "errors"
	LogOff    = "off"
)

// Connection is a mail server definition: an IMAP server or an Exchange (EWS) endpoint.
// Secrets (Password, OAuth2 secrets) are never returned in replies: PasswordSet says
// whether one is stored.
type Connection struct {
	Name        string `json:"name"`
	Disabled    bool   `json:"disabled"`
	Description string `json:"description"`
	Type        string `json:"type"`

	Host       string `json:"host,omitempty"`
	Port       int    `json:"port,omitempty"`
	Encryption string `json:"encryption"`

	ExchangeURL     string `json:"exchangeUrl,omitempty"`
	ExchangeVersion string `json:"exchangeVersion,omitempty"`

	Auth         string        `json:"auth"`
	Username     string        `json:"username,omitempty"`
	Password     string        `json:"password,omitempty"`
	PasswordSet  bool          `json:"passwordSet,omitempty"`
	PasswordFrom *SecretSource `json:"passwordFrom,omitempty"`
	Domain       string        `json:"domain,omitempty"`
	OAuth2       *OAuth2       `json:"oauth2,omitempty"`

	PollInterval Duration `json:"pollInterval,omitempty"`
	// Idle turns IMAP IDLE on where the server has it; nil means true.
	Idle     *bool  `json:"idle,omitempty"`
	LogLevel string `json:"logLevel"`
	// VerifyWithoutSending makes the connection check read-only; nil means true.
	VerifyWithoutSending  *bool    `json:"verifyWithoutSending,omitempty"`
	TestRecipients        []string `json:"testRecipients,omitempty"`
	TLSInsecureSkipVerify bool     `json:"tlsInsecureSkipVerify"`

	// Revision is the KV revision of the stored definition. In a put it is optional: when
	// set, the put succeeds only if the stored revision is still this one.
	Revision uint64 `json:"revision,omitempty"`
}

// IdleEnabled reports whether IMAP IDLE is wanted (the default).
func (c *Connection) IdleEnabled() bool { return c.Idle == nil || *c.Idle }

// ReadOnlyCheck reports whether the connection check must not append a probe (the default).
func (c *Connection) ReadOnlyCheck() bool {
	return c.VerifyWithoutSending == nil || *c.VerifyWithoutSending
}

// SecretSource reads a secret from the environment or a file instead of a literal, for
// Kubernetes secrets. Exactly one field is set.
type SecretSource struct {
	Env  string `json:"env,omitempty"`
	File string `json:"file,omitempty"`
}

// OAuth2 holds the token settings of an oauth2 connection. Tokens come from RefreshToken
// (refresh_token grant), else from ClientID and ClientSecret (client_credentials grant),
// else AccessToken is used as it is. AccessToken, ClientSecret and RefreshToken are secrets:
// replies carry the *Set flags instead.
type OAuth2 struct {
	// Provider is google or microsoft: it fills TokenURL and Scopes when they are empty.
	Provider     string `json:"provider,omitempty"`
	AccessToken  string `json:"accessToken,omitempty"`
	TokenURL     string `json:"tokenUrl,omitempty"`
	ClientID     string `json:"clientId,omitempty"`
	ClientSecret string `json:"clientSecret,omitempty"`
	RefreshToken string `json:"refreshToken,omitempty"`
	// Tenant is the Microsoft directory id or domain in the microsoft TokenURL.
	Tenant          string   `json:"tenant,omitempty"`
	Scopes          []string `json:"scopes,omitempty"`
	AccessTokenSet  bool     `json:"accessTokenSet,omitempty"`
	ClientSecretSet bool     `json:"clientSecretSet,omitempty"`
	RefreshTokenSet bool     `json:"refreshTokenSet,omitempty"`
}
