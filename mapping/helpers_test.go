package mapping_test

import (
	"encoding/base64"
	"io"
)

// lineWriter breaks what it is given into 76-column lines, as base64 in mail is written.
type lineWriter struct {
	w   io.Writer
	col int
}

func (l *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(76-l.col, len(p))
		if _, err := l.w.Write(p[:k]); err != nil {
			return 0, err
		}
		p, l.col = p[k:], l.col+k
		if l.col == 76 {
			if _, err := l.w.Write([]byte("\n")); err != nil {
				return 0, err
			}
			l.col = 0
		}
	}
	return n, nil
}

func newBase64(w io.Writer) io.WriteCloser { return base64.NewEncoder(base64.StdEncoding, w) }
