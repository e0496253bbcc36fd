package connlog

import "testing"

// TestTruncateUTF8: a long subject is cut at a character boundary, never inside one.
func TestTruncateUTF8(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly", 7, "exactly"},
		{"abcdef", 3, "abc…"},
		{"Заявка", 5, "За…"}, // 5 bytes end inside "я" (2 bytes each)
		{"Заявка", 4, "За…"},
	} {
		if got := truncateUTF8(tc.in, tc.n); got != tc.want {
			t.Errorf("truncateUTF8(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
