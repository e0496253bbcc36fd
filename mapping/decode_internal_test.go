package mapping

import (
	"bytes"
	"encoding/base64"
	"io"
	"testing"
	"testing/iotest"
)

// FuzzBase64FastPath: the standard decoder's fast path decodes exactly what the lenient
// loop alone decodes, and counts the same damage, however the input is split.
func FuzzBase64FastPath(f *testing.F) {
	line := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("mailbus!"), 20))
	for _, s := range []string{
		line[:76] + "\r\n" + line[76:152] + "\r\n" + line[152:] + "\r\n",
		"QQ==QUJD\r\n", "QUJD\r\nQQ\r\n==\r\n", "QU JD\r\nQ*JD\n", "QUJ-_w\n\n", "QUI=\r\nQUJD", "QUJDQ",
		// lines of changing length, some a break short of the last one's
		"QUJDQUJD\r\nQUJD\r\nQUJ\r\nQUJDQUJD\r\n", "QUJD\nQ\nQUJ\nQUJD\nQU\n\nQUJD\n", "QUJDQUJD\nQU\r\nQUJD\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var slow base64Reader
		want := slow.flush(slow.decodeSlow(in, nil))
		for _, r := range []io.Reader{bytes.NewReader(in), iotest.OneByteReader(bytes.NewReader(in)), iotest.HalfReader(bytes.NewReader(in))} {
			d := &base64Reader{r: r}
			got, err := io.ReadAll(d)
			if err != nil {
				t.Fatalf("ReadAll() = %v", err)
			}
			if !bytes.Equal(got, want) || d.bad != slow.bad {
				t.Fatalf("decode(%q) = %q, %d bad; lenient loop alone: %q, %d bad", in, got, d.bad, want, slow.bad)
			}
		}
	})
}

// BenchmarkBase64Reader decodes 1 MB of base64 in 76-character CRLF lines, as mailers
// write attachments.
func BenchmarkBase64Reader(b *testing.B) {
	raw := bytes.Repeat([]byte("mailbus!"), 1<<17)
	enc := base64.StdEncoding.EncodeToString(raw)
	var in bytes.Buffer
	for len(enc) > 76 {
		in.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	in.WriteString(enc + "\r\n")
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(in.Len()))
	for b.Loop() {
		d := &base64Reader{r: bytes.NewReader(in.Bytes())}
		for {
			if _, err := d.Read(buf); err != nil {
				break
			}
		}
	}
}
