package mapping

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/segmentio/asm/base64"
	"golang.org/x/text/encoding/charmap"
)

// The transfer decoders below are written here, not taken from the standard library, because
// mail in the wild is broken in ways the strict decoders stop at: base64 with stray characters
// or padding in the middle, quoted-printable with bad escapes or control bytes. They decode
// everything they can and count what they had to skip, so the mapper can say so in a warning.

// base64Values maps a byte to its 6-bit value, or 0xFF. The URL-safe alphabet is accepted too:
// it costs nothing and some mailers use it.
var base64Values = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xFF
	}
	for i, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/" {
		t[c] = byte(i)
	}
	t['-'], t['_'] = 62, 63
	return t
}()

// base64Reader decodes base64 leniently: whitespace is skipped, other invalid bytes are skipped
// and counted, and '=' ends a quantum wherever it is, so concatenated padded blocks decode too.
type base64Reader struct {
	r    io.Reader
	in   [2048]byte
	flat [2048]byte // in without its line breaks
	out  [1536 + 3]byte
	buf  []byte // decoded bytes not yet returned
	quad uint32
	n    int   // sextets in quad
	bad  int64 // invalid characters skipped
	err  error
}

func (d *base64Reader) Read(p []byte) (int, error) {
	for len(d.buf) == 0 {
		if d.err != nil {
			return 0, d.err
		}
		n, err := d.r.Read(d.in[:])
		d.buf = d.decode(d.in[:n], d.out[:0])
		if err != nil {
			d.err = err
			d.buf = d.flush(d.buf)
		}
	}
	n := copy(p, d.buf)
	d.buf = d.buf[n:]
	return n, nil
}

// decode appends what in decodes to. Almost every chunk is plain base64 in lines of whole
// quanta, as encoders write it: its line breaks are dropped and the rest goes through a
// vectorised standard decoder in one call, some 20 times faster than the standard library
// line by line (base64 is most of the bytes of mail with attachments). The lenient loop
// takes whatever that decoder refuses, and the sextets of a quantum split between chunks.
// out must have room for len(in)*3/4+3 bytes more.
func (d *base64Reader) decode(in, out []byte) []byte {
	flat := d.flat[:0]
	step := 0 // length of the last line with its break: encoders write lines of one length
	for len(in) > 0 {
		// Looking for each line's end cost as much as decoding it, so a line as long as the
		// last one is taken as it comes when a '\n' ends it. Should that line hold a break
		// of its own after all, the fast decoder below either skips it or refuses the
		// chunk, which then goes through the lenient loop: the result is the same.
		line := in
		if step > 0 && len(in) >= step && in[step-1] == '\n' {
			line, in = in[:step-1], in[step:]
		} else if i := bytes.IndexByte(in, '\n'); i >= 0 {
			line, in, step = in[:i], in[i+1:], i+1
		} else {
			in = nil
		}
		// By hand rather than with bytes.TrimRight, whose cutset cost more than the copy.
		for len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		flat = append(flat, line...)
	}
	for d.n != 0 && len(flat) > 0 { // finish the quantum the last chunk began
		out = d.decodeSlow(flat[:1], out)
		flat = flat[1:]
	}
	if k := len(flat) &^ 3; k > 0 {
		if m, err := base64.StdEncoding.Decode(out[len(out):cap(out)], flat[:k]); err == nil {
			out = out[:len(out)+m]
			flat = flat[k:]
		}
	}
	return d.decodeSlow(flat, out)
}

func (d *base64Reader) decodeSlow(in, out []byte) []byte {
	for _, c := range in {
		v := base64Values[c]
		switch {
		case v != 0xFF:
			d.quad = d.quad<<6 | uint32(v)
			d.n++
			if d.n == 4 {
				out = append(out, byte(d.quad>>16), byte(d.quad>>8), byte(d.quad))
				d.n, d.quad = 0, 0
			}
		case c == '=':
			out = d.flush(out)
		case c == '\r' || c == '\n' || c == ' ' || c == '\t':
		default:
			d.bad++
		}
	}
	return out
}

// flush emits a partial quantum (missing padding is common and harmless); a single dangling
// sextet cannot make a byte and counts as damage.
func (d *base64Reader) flush(out []byte) []byte {
	switch d.n {
	case 1:
		d.bad++
	case 2:
		out = append(out, byte(d.quad>>4))
	case 3:
		out = append(out, byte(d.quad>>10), byte(d.quad>>2))
	}
	d.n, d.quad = 0, 0
	return out
}

// qpReader decodes quoted-printable leniently: "=XX" (either case) is a byte, "=" before a line
// end (after optional blanks) is a soft break, any other "=" is kept literally and counted.
// Unlike mime/quotedprintable it has no line-length limit and passes control bytes through.
// Trailing blanks of hard lines are kept: encoders escape the significant ones anyway.
type qpReader struct {
	br  *bufio.Reader
	bad int64
}

func (d *qpReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c, err := d.br.ReadByte()
		if err != nil {
			return n, err
		}
		if c != '=' {
			p[n] = c
			n++
			continue
		}
		next, _ := d.br.Peek(2)
		if len(next) == 2 && isHex(next[0]) && isHex(next[1]) {
			p[n] = unhex(next[0])<<4 | unhex(next[1])
			n++
			d.br.Discard(2)
			continue
		}
		if skip, ok := d.softBreak(); ok {
			d.br.Discard(skip)
			continue
		}
		p[n] = '='
		n++
		d.bad++
	}
	return n, nil
}

// softBreak reports whether the bytes after an '=' are optional blanks and a line end (or the
// end of input), and how many bytes that is.
func (d *qpReader) softBreak() (int, bool) {
	next, _ := d.br.Peek(80)
	for i, c := range next {
		switch c {
		case ' ', '\t', '\r':
		case '\n':
			return i + 1, true
		default:
			return 0, false
		}
	}
	// A short peek means the input ended: a trailing "=" is a soft break.
	return len(next), len(next) < 80
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}

// transfer is a reader that undoes a Content-Transfer-Encoding.
type transfer struct {
	io.Reader
	b64   *base64Reader
	qp    *qpReader
	known bool
}

// damage tells how many bad characters the decoder had to skip so far.
func (t *transfer) damage() int64 {
	switch {
	case t.b64 != nil:
		return t.b64.bad
	case t.qp != nil:
		return t.qp.bad
	}
	return 0
}

// release gives the decoder's buffers back; t must not be read after.
func (t *transfer) release() {
	if t.b64 != nil {
		putBase64(t.b64)
	}
	if t.qp != nil {
		putBufio(t.qp.br)
	}
	*t = transfer{}
}

// transferDecoder returns a reader that undoes the Content-Transfer-Encoding enc, which
// the caller releases when done. Unknown encodings are read raw (known is false).
func transferDecoder(enc string, r io.Reader) transfer {
	switch strings.ToLower(strings.TrimSpace(enc)) {
	case "base64":
		d := getBase64(r)
		return transfer{Reader: d, b64: d, known: true}
	case "quoted-printable":
		d := &qpReader{br: getBufio(r)}
		return transfer{Reader: d, qp: d, known: true}
	case "", "7bit", "8bit", "binary":
		return transfer{Reader: r, known: true}
	}
	return transfer{Reader: r}
}

// bestEffortUTF8 keeps the valid UTF-8 in b and reads each byte that is not as windows-1252,
// so nothing is dropped and the result is valid UTF-8.
func bestEffortUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b) + len(b)/4)
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size == 1 {
			r = charmap.Windows1252.DecodeByte(b[0])
		}
		sb.WriteRune(r)
		b = b[size:]
	}
	return sb.String()
}
