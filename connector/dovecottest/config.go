package dovecottest

import (
	"bytes"
	"text/template"
)

// configTmpl is a Dovecot 2.3 configuration that keeps everything under Dir. It is read
// with -c, so nothing of the system's /etc/dovecot applies.
var configTmpl = template.Must(template.New("dovecot.conf").Parse(`# Written by mailbus connector/dovecottest.
protocols = imap
listen = 127.0.0.1
base_dir = {{.Dir}}/run
state_dir = {{.Dir}}/state
instance_name = mailbus-test
log_path = {{.Dir}}/dovecot.log
default_login_user = dovenull
default_internal_user = dovecot

ssl = yes
ssl_cert = <{{.Dir}}/cert.pem
ssl_key = <{{.Dir}}/key.pem
ssl_min_protocol = TLSv1.2

# Tests log in over plain IMAP too; STARTTLS is still offered.
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose_passwords = no
auth_failure_delay = 0
passdb {
  driver = passwd-file
  args = scheme=PLAIN {{.Dir}}/passwd
}
userdb {
  driver = passwd-file
  args = {{.Dir}}/passwd
}

mail_location = maildir:~/Maildir
# Speed over durability: a test's mail never outlives the test.
mail_fsync = never

# Tests open many connections at once; the defaults (100 processes, 10 connections per
# user and address) are far too low for them.
default_process_limit = 1000
default_client_limit = 4000
protocol imap {
  mail_max_userip_connections = 1000
{{- if .IMAPCapability}}
  imap_capability = {{.IMAPCapability}}
{{- end}}
}

# Failed logins from one address would otherwise slow every later login from it (up to
# 15 s, good passwords too): all tests come from 127.0.0.1. Dovecot's documented switch.
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}

service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = {{.Port}}
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = {{.TLSPort}}
    ssl = yes
  }
}
`))

type configData struct {
	Dir            string
	Port, TLSPort  int
	IMAPCapability string
}

func renderConfig(d configData) []byte {
	var b bytes.Buffer
	if err := configTmpl.Execute(&b, d); err != nil {
		panic(err) // the template is static and the data plain; only a bug lands here
	}
	return b.Bytes()
}
