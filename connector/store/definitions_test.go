package store_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/mailbus/mailbus/connector/store"
	"github.com/mailbus/mailbus/schemas"
)

// readDefs reads testdata/defs.yaml: two connections (one password from ${SUPPORT_PASSWORD},
// one passwordFrom) and two routes.
func readDefs(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("testdata/defs.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// lookup is an environment holding only vars.
func lookup(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

// TestParseDefinitions: a file's definitions come back checked as a put checks them, their
// defaults filled in, a ${NAME} secret taken from the environment given, and passwordFrom
// left for the worker to resolve; a JSON file reads the same.
func TestParseDefinitions(t *testing.T) {
	defs := readDefs(t)
	d, err := store.ParseDefinitions("defs.yaml", []byte(defs), lookup(map[string]string{"SUPPORT_PASSWORD": "s3cret"}))
	if err != nil {
		t.Fatalf("ParseDefinitions() = %v", err)
	}
	if len(d.Connections) != 2 || len(d.Routes) != 2 {
		t.Fatalf("ParseDefinitions() = %d connections, %d routes; want 2, 2", len(d.Connections), len(d.Routes))
	}
	c, sales := d.Connections[0], d.Connections[1]
	if c.Password != "s3cret" || c.Port != 993 || c.Encryption != schemas.EncryptionSSL || c.Auth != schemas.AuthBasic {
		t.Errorf("support_imap = %+v; want the password from the environment, port 993, ssl, basic", c)
	}
	if sales.Password != "" || sales.PasswordFrom == nil || sales.PasswordFrom.Env != "MAILBUS_CRED_SALES_PASSWORD" || sales.Port != 143 {
		t.Errorf("sales_imap = %+v; want passwordFrom kept, no password, port 143", sales)
	}
	r := d.Routes[0]
	if r.Mailbox != "INBOX" || r.Select != schemas.SelectAll || r.Backlog != schemas.BacklogUnseen || r.After != schemas.AfterMarkRead {
		t.Errorf("support_inbox = %+v; want the defaults INBOX, all, unseen, markRead", r)
	}
	n := d.Names()
	if strings.Join(n.Connections, ",") != "support_imap,sales_imap" || strings.Join(n.Routes, ",") != "support_inbox,sales_inbox" {
		t.Errorf("Names() = %+v", n)
	}

	j, err := store.ParseDefinitions("defs.json", []byte(`{"connections":[{"name":"c","type":"imap","host":"h","username":"u","password":"p"}],"routes":[{"name":"r","connection":"c","bus":3}]}`), lookup(nil))
	if err != nil {
		t.Fatalf("ParseDefinitions(JSON) = %v", err)
	}
	if len(j.Connections) != 1 || j.Connections[0].Port != 993 || len(j.Routes) != 1 || j.Routes[0].Bus != 3 {
		t.Errorf("ParseDefinitions(JSON) = %+v", j)
	}
}

// TestParseDefinitionsRefuses: a bad file is refused with a *DefinitionError naming the
// file, the definition and the field.
func TestParseDefinitionsRefuses(t *testing.T) {
	defs := readDefs(t)
	env := lookup(map[string]string{"SUPPORT_PASSWORD": "s3cret"})
	for _, tc := range []struct{ name, file, want string }{
		{"bad port", strings.Replace(defs, "    encryption: tls\n", "    encryption: tls\n    port: 70000\n", 1),
			"defs.yaml: connection sales_imap (connections[1]): field port: port 70000: want 1..65535"},
		{"unknown field", strings.Replace(defs, "    bus: 2\n", "    buss: 2\n", 1),
			`defs.yaml: route sales_inbox (routes[1]): field buss: unknown field`},
		{"wrong type", strings.Replace(defs, "    bus: 2\n", "    bus: two\n", 1),
			`defs.yaml: route sales_inbox (routes[1]): field bus: bus: want`},
		{"bus out of range", strings.Replace(defs, "    bus: 2\n", "    bus: 4\n", 1),
			`defs.yaml: route sales_inbox (routes[1]): field bus: bus 4: want 0..3`},
		{"twice", strings.Replace(defs, "name: sales_inbox", "name: support_inbox", 1),
			"defs.yaml: route support_inbox (routes[1]): field name: route support_inbox is defined twice"},
		{"env unset", strings.Replace(defs, "${SUPPORT_PASSWORD}", "${NO_SUCH_VARIABLE}", 1),
			"defs.yaml: connection support_imap (connections[0]): field password: environment variable NO_SUCH_VARIABLE is not set"},
		{"top-level key", defs + "streams: []\n", `defs.yaml: unknown key "streams": want connections and routes`},
		{"not yaml", "connections: [\n", "defs.yaml: not valid YAML"},
		{"json trailing data", `{"routes":[]} {}`, "defs.yaml: unexpected data after the JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := store.ParseDefinitions("defs.yaml", []byte(tc.file), env)
			var de *store.DefinitionError
			if !errors.As(err, &de) || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("ParseDefinitions() = %v\nwant %s...", err, tc.want)
			}
		})
	}
}
