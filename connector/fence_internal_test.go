package connector

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFenceFiles: links that stay in the credential directory are followed (a Kubernetes
// secret volume is made of them), and a file that one of mailbus's own settings names is
// never read, even when it is a one-line file in the directory.
func TestFenceFiles(t *testing.T) {
	dir := t.TempDir()
	// A Kubernetes secret volume: key -> ..data/key, ..data -> ..2026_11_29_14_00_00.1
	if err := os.Mkdir(filepath.Join(dir, "..2026_11_29_14_00_00.1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "..2026_11_29_14_00_00.1", "imap"), []byte("k8s-pw\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..2026_11_29_14_00_00.1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/imap", filepath.Join(dir, "imap")); err != nil {
		t.Fatal(err)
	}
	token := filepath.Join(dir, "nats.token")
	if err := os.WriteFile(token, []byte("one-line-nats-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFence(Config{CredentialDir: dir, NATSCreds: token})

	for _, name := range []string{"imap", filepath.Join(dir, "imap"), "./..data/imap"} {
		if v, err := f.readFile(name); err != nil || v != "k8s-pw" {
			t.Errorf("readFile(%s) = %q, %v; want k8s-pw", name, v, err)
		}
	}
	v, err := f.readFile("nats.token")
	if err == nil || !strings.Contains(err.Error(), "own settings") || v != "" {
		t.Errorf("readFile(nats.token) = %q, %v; want refused as a file of mailbus's own settings", v, err)
	}
	if err != nil && strings.Contains(err.Error(), "one-line-nats-secret") {
		t.Error("the error contains what the file holds")
	}
}
