package console

import (
	"regexp"
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
