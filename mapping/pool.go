package mapping

import (
	"bufio"
	"io"
	"sync"
)

// The buffers of one message's mapping (its reader, a multipart's reader, a part's transfer
// decoder, a text body) live no longer than the mapping of the message or of the part, and
// nothing of the event refers to them: each is taken from a pool and put back when its
// message or part is done. They were most of the bytes allocated for a small message
// (about 14 of 18 KB).

// bufioPool holds readers of multipartBufferSize (bufio's default size, too).
var bufioPool sync.Pool // of *bufio.Reader

// getBufio returns a reader of r of its own, never r itself: bufio.NewReaderSize returns
// r when it is a *bufio.Reader already (a quoted-printable body of the message's own
// reader), which would then be put back in the pool while the message still reads it.
func getBufio(r io.Reader) *bufio.Reader {
	br, _ := bufioPool.Get().(*bufio.Reader)
	if br == nil {
		br = bufio.NewReaderSize(nil, multipartBufferSize)
	}
	br.Reset(r)
	return br
}

func putBufio(br *bufio.Reader) {
	br.Reset(nil) // let go of the source
	bufioPool.Put(br)
}

var base64Pool sync.Pool // of *base64Reader

func getBase64(r io.Reader) *base64Reader {
	d, _ := base64Pool.Get().(*base64Reader)
	if d == nil {
		return &base64Reader{r: r}
	}
	// The arrays are scratch space, written before they are read.
	d.r, d.buf, d.quad, d.n, d.bad, d.err = r, nil, 0, 0, 0, nil
	return d
}

func putBase64(d *base64Reader) {
	d.r, d.buf, d.err = nil, nil, nil
	base64Pool.Put(d)
}

// maxPooledBody is the largest text body buffer kept for reuse.
const maxPooledBody = 1 << 20

var bodyPool sync.Pool // of *[]byte

// readBody reads r to its end or up to limit bytes into a reused buffer. The caller puts
// the buffer back with bodyPool.Put(pooled) once it no longer uses b.
func readBody(r io.Reader, limit int) (b []byte, pooled *[]byte, err error) {
	pooled, _ = bodyPool.Get().(*[]byte)
	if pooled == nil {
		pooled = new([]byte)
	}
	b = (*pooled)[:0]
	for len(b) < limit {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // grow as io.ReadAll does
		}
		n, rerr := r.Read(b[len(b):min(cap(b), limit)])
		b = b[:len(b)+n]
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			err = rerr
			break
		}
	}
	if cap(b) <= maxPooledBody {
		*pooled = b
	} else {
		*pooled = nil
	}
	return b, pooled, err
}
