package deploy_test

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.yaml.in/yaml/v3"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/store"
)

// envNames are the MAILBUS_ variables the program reads, from connector.Config's tags, so a
// manifest naming a variable that does not exist fails here.
func envNames(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	typ := reflect.TypeFor[connector.Config]()
	for i := range typ.NumField() {
		tag := typ.Field(i).Tag.Get("envconfig")
		if tag == "" {
			t.Fatalf("connector.Config.%s has no envconfig tag", typ.Field(i).Name)
		}
		names[connector.EnvPrefix+"_"+tag] = true
	}
	return names
}

func checkEnv(t *testing.T, file string, env map[string]bool, names []string) {
	t.Helper()
	for _, n := range names {
		// MAILBUS_CRED_* are mailbox passwords for passwordFrom.env, not settings.
		if strings.HasPrefix(n, "MAILBUS_") && !strings.HasPrefix(n, connector.DefaultCredentialEnvPrefix) && !env[n] {
			t.Errorf("%s sets %s, which mailbus does not read", file, n)
		}
	}
}

// yamlDocs parses every document of a YAML file.
func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []map[string]any
	for {
		var d map[string]any
		if err := dec.Decode(&d); err != nil {
			if err.Error() == "EOF" {
				break
			}
			t.Fatalf("parse %s: %v", path, err)
		}
		docs = append(docs, d)
	}
	if len(docs) == 0 {
		t.Fatalf("%s: no YAML documents", path)
	}
	return docs
}

func TestDockerCompose(t *testing.T) {
	docs := yamlDocs(t, "docker-compose.yml")
	services, _ := docs[0]["services"].(map[string]any)
	for _, s := range []string{"nats", "mailbus", "dovecot"} {
		if services[s] == nil {
			t.Fatalf("docker-compose.yml: no service %q", s)
		}
	}
	mb := services["mailbus"].(map[string]any)
	env := mb["environment"].(map[string]any)
	var names []string
	for k := range env {
		names = append(names, k)
	}
	checkEnv(t, "docker-compose.yml", envNames(t), names)
	for _, f := range []string{"nats/nats-server.conf", "dovecot/dovecot.conf", "dovecot/passwd"} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("docker-compose.yml mounts %s: %v", f, err)
		}
	}
}

func TestKubernetes(t *testing.T) {
	env := envNames(t)
	files, _ := filepath.Glob("kubernetes/*.yaml")
	if len(files) == 0 {
		t.Fatal("no Kubernetes manifests")
	}
	kinds := map[string]bool{}
	for _, f := range files {
		for _, d := range yamlDocs(t, f) {
			kind, _ := d["kind"].(string)
			if kind == "" || d["apiVersion"] == nil {
				t.Fatalf("%s: a document without kind or apiVersion", f)
			}
			kinds[kind] = true
			switch kind {
			case "Secret":
				data := d["stringData"].(map[string]any)
				var names []string
				for k := range data {
					names = append(names, k)
				}
				checkEnv(t, f, env, names)
			case "Deployment":
				checkSidecar(t, f, d, env)
			}
		}
	}
	if !kinds["Secret"] || !kinds["Deployment"] {
		t.Fatalf("want a Secret and a Deployment, have %v", kinds)
	}
}

// TestKubernetesDefinitions: the sidecar declares its connection and route in a ConfigMap
// applied at start (MAILBUS_DEFINITIONS), which mailbus accepts, with the password read from
// a file of a mounted Secret, under /run/secrets.
func TestKubernetesDefinitions(t *testing.T) {
	var defsText string
	var pod map[string]any
	secrets := map[string]map[string]any{}
	files, _ := filepath.Glob("kubernetes/*.yaml")
	for _, f := range files {
		for _, d := range yamlDocs(t, f) {
			name, _ := d["metadata"].(map[string]any)["name"].(string)
			switch d["kind"] {
			case "ConfigMap":
				if name == "mailbus-definitions" {
					defsText, _ = d["data"].(map[string]any)["definitions.yaml"].(string)
				}
			case "Secret":
				secrets[name], _ = d["stringData"].(map[string]any)
			case "Deployment":
				pod = d["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
			}
		}
	}
	if defsText == "" || pod == nil {
		t.Fatal("want a ConfigMap mailbus-definitions with definitions.yaml and a Deployment")
	}
	defs, err := store.ParseDefinitions("definitions.yaml", []byte(defsText), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("the ConfigMap's definitions: %v", err)
	}
	if len(defs.Connections) == 0 || len(defs.Routes) == 0 {
		t.Fatalf("the ConfigMap defines %d connections and %d routes, want both", len(defs.Connections), len(defs.Routes))
	}

	volumes := map[string]map[string]any{}
	for _, v := range pod["volumes"].([]any) {
		v := v.(map[string]any)
		volumes[v["name"].(string)] = v
	}
	var sidecar map[string]any
	for _, c := range pod["containers"].([]any) {
		if c := c.(map[string]any); c["name"] == "mailbus" {
			sidecar = c
		}
	}
	mounts := map[string]map[string]any{} // mount path -> volume
	for _, m := range sidecar["volumeMounts"].([]any) {
		m := m.(map[string]any)
		mounts[m["mountPath"].(string)] = volumes[m["name"].(string)]
	}
	// volumeAt returns the volume mounted where path is, and the path inside it.
	volumeAt := func(path string) (map[string]any, string) {
		for dir, v := range mounts {
			if rest, ok := strings.CutPrefix(path, dir+"/"); ok {
				return v, rest
			}
		}
		return nil, ""
	}
	var defsPath string
	for _, e := range sidecar["env"].([]any) {
		if e := e.(map[string]any); e["name"] == "MAILBUS_DEFINITIONS" {
			defsPath, _ = e["value"].(string)
		}
	}
	v, key := volumeAt(defsPath)
	if cm, _ := v["configMap"].(map[string]any); cm["name"] != "mailbus-definitions" || key != "definitions.yaml" {
		t.Errorf("MAILBUS_DEFINITIONS=%q is not the ConfigMap's definitions.yaml as mounted", defsPath)
	}
	for _, c := range defs.Connections {
		if c.PasswordFrom == nil || c.PasswordFrom.File == "" || c.Password != "" {
			t.Errorf("connection %s: want the password from a file (passwordFrom.file)", c.Name)
			continue
		}
		if !strings.HasPrefix(c.PasswordFrom.File, "/run/secrets/") {
			t.Errorf("connection %s: passwordFrom.file %s is not under /run/secrets", c.Name, c.PasswordFrom.File)
		}
		v, key := volumeAt(c.PasswordFrom.File)
		sec, _ := v["secret"].(map[string]any)
		name, _ := sec["secretName"].(string)
		if secrets[name] == nil || secrets[name][key] == nil {
			t.Errorf("connection %s: passwordFrom.file %s is no key of a mounted Secret", c.Name, c.PasswordFrom.File)
		}
	}
}

func checkSidecar(t *testing.T, file string, d map[string]any, env map[string]bool) {
	t.Helper()
	pod := d["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	containers := pod["containers"].([]any)
	if len(containers) < 2 {
		t.Fatalf("%s: want an app and the mailbus sidecar in one Pod", file)
	}
	for _, c := range containers {
		c := c.(map[string]any)
		if c["name"] != "mailbus" {
			continue
		}
		probes := map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
		for probe, path := range probes {
			p, _ := c[probe].(map[string]any)
			get, _ := p["httpGet"].(map[string]any)
			if get["path"] != path {
				t.Errorf("%s: mailbus %s path = %v, want %s", file, probe, get["path"], path)
			}
		}
		if c["envFrom"] == nil {
			t.Errorf("%s: mailbus takes no env from the Secret", file)
		}
		var names []string
		for _, e := range c["env"].([]any) {
			names = append(names, e.(map[string]any)["name"].(string))
		}
		checkEnv(t, file, env, names)
		return
	}
	t.Fatalf("%s: no container named mailbus", file)
}

// TestNATSConfig parses the NATS configuration with the server's own parser, runs a server
// with it and checks the permissions: only admin may send control commands, and readers may
// only read the bus.
func TestNATSConfig(t *testing.T) {
	t.Setenv("NATS_ADMIN_PASSWORD", "a-pass")
	t.Setenv("NATS_MAILBUS_PASSWORD", "m-pass")
	t.Setenv("NATS_READER_PASSWORD", "r-pass")
	opts, err := server.ProcessConfigFile("nats/nats-server.conf")
	if err != nil {
		t.Fatalf("ProcessConfigFile() = %v", err)
	}
	if !opts.JetStream {
		t.Fatal("JetStream is not enabled")
	}
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
	opts.StoreDir = t.TempDir()
	opts.NoSigs, opts.NoLog = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("NewServer() = %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	defer s.Shutdown()

	connect := func(user, pass string) (*nats.Conn, chan error) {
		errs := make(chan error, 10)
		nc, err := nats.Connect(s.ClientURL(), nats.UserInfo(user, pass),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return nc, errs
	}
	admin, adminErrs := connect("admin", "a-pass")
	service, serviceErrs := connect("mailbus", "m-pass")
	reader, readerErrs := connect("reader", "r-pass")

	denied := func(errs chan error) bool {
		select {
		case err := <-errs:
			return strings.Contains(err.Error(), "Permissions Violation")
		case <-time.After(time.Second):
			return false
		}
	}
	allowed := func(name string, nc *nats.Conn, errs chan error) {
		t.Helper()
		if err := nc.Flush(); err != nil {
			t.Fatalf("%s: flush: %v", name, err)
		}
		select {
		case err := <-errs:
			t.Fatalf("%s: %v", name, err)
		case <-time.After(200 * time.Millisecond):
		}
	}

	// The service listens on control subjects and publishes events.
	ctl, err := service.SubscribeSync("mail.control.>")
	if err != nil {
		t.Fatal(err)
	}
	allowed("mailbus subscribes to mail.control.>", service, serviceErrs)
	admin.Publish("mail.control.route.list", []byte("{}"))
	allowed("admin publishes a control command", admin, adminErrs)
	if _, err := ctl.NextMsg(2 * time.Second); err != nil {
		t.Fatalf("control command from admin not delivered: %v", err)
	}

	reader.Publish("mail.control.route.delete", []byte(`{"name":"x"}`))
	reader.Flush()
	if !denied(readerErrs) {
		t.Fatal("reader may publish a control command")
	}
	service.Publish("mail.control.route.delete", []byte(`{"name":"x"}`))
	service.Flush()
	if !denied(serviceErrs) {
		t.Fatal("the mailbus user may publish a control command")
	}
	if _, err := ctl.NextMsg(300 * time.Millisecond); err == nil {
		t.Fatal("a refused control command was delivered")
	}

	bus, _ := reader.SubscribeSync("mail.bus.>")
	allowed("reader subscribes to mail.bus.>", reader, readerErrs)
	service.Publish("mail.bus.0.r", []byte("{}"))
	allowed("mailbus publishes an event", service, serviceErrs)
	if _, err := bus.NextMsg(2 * time.Second); err != nil {
		t.Fatalf("event not delivered to reader: %v", err)
	}
	reader.SubscribeSync("mail.log.>")
	reader.Flush()
	if !denied(readerErrs) {
		t.Fatal("reader may subscribe to mail.log.>")
	}
}

// TestStaticBuild builds the binary with the go build command of the Dockerfile, flags and
// environment as written there, and checks the result is a static executable: the image is
// FROM scratch and has no C library.
func TestStaticBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the whole binary")
	}
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	// Join continued lines, then find "CGO_ENABLED=0 go build ... ./cmd/mailbus".
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	m := regexp.MustCompile(`(CGO_ENABLED=0) go build (.*?) -o \S+ (\./cmd/mailbus)`).FindStringSubmatch(text)
	if m == nil {
		t.Fatal("Dockerfile: no 'CGO_ENABLED=0 go build ... -o X ./cmd/mailbus' line")
	}
	args := []string{"build"}
	args = append(args, splitFlags(strings.ReplaceAll(m[2], "${VERSION}", "test"))...)
	out := filepath.Join(t.TempDir(), "mailbus")
	args = append(args, "-o", out, m[3])
	cmd := exec.Command("go", args...)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), m[1])
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %v: %v\n%s", args, err, msg)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("binary has an ELF interpreter: it is dynamically linked")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Fatalf("binary needs shared libraries %v", libs)
	}
	v, err := exec.Command(out, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(v), "test") {
		t.Fatalf("mailbus version = %q, %v; want the version set by -ldflags", v, err)
	}
}

// splitFlags splits a flag list on spaces, keeping "-ldflags=..." quoted values whole.
func splitFlags(s string) []string {
	var out []string
	for _, f := range regexp.MustCompile(`\S+="[^"]*"|\S+`).FindAllString(s, -1) {
		out = append(out, strings.ReplaceAll(f, `"`, ""))
	}
	return out
}
