package console

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestTranslationsComplete: every English text has a Russian one with the same verbs.
func TestTranslationsComplete(t *testing.T) {
	verbs := regexp.MustCompile(`%[a-z]`)
	for key, en := range messages["en"] {
		ru, ok := messages["ru"][key]
		if !ok {
			t.Errorf("no Russian text for %q", key)
			continue
		}
		if a, b := verbs.FindAllString(en, -1), verbs.FindAllString(ru, -1); len(a) != len(b) {
			t.Errorf("%q: English has %v, Russian %v", key, a, b)
		}
	}
	for key := range messages["ru"] {
		if _, ok := messages["en"][key]; !ok {
			t.Errorf("Russian text %q has no English one", key)
		}
	}
}

// TestTranslationKeysExist: every key the templates and the code name has a text; a
// missing one would show the key itself.
func TestTranslationKeysExist(t *testing.T) {
	keys := regexp.MustCompile(`"((?:nav|login|err|common|conn|route|ev|state|app)\.[A-Za-z0-9.]+|app)"`)
	files, _ := filepath.Glob("templates/*.html")
	gofiles, _ := filepath.Glob("*.go")
	for _, f := range append(files, gofiles...) {
		if strings.HasSuffix(f, "_test.go") || f == "i18n.go" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range keys.FindAllStringSubmatch(string(b), -1) {
			if strings.HasSuffix(m[1], ".") {
				continue // a prefix completed with printf
			}
			if _, ok := messages["en"][m[1]]; !ok {
				t.Errorf("%s names %q, which has no text", f, m[1])
			}
		}
	}
}
