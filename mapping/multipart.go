package mapping

// The multipart reader is go-message's textproto.MultipartReader (MIT), itself Go's
// mime/multipart (BSD), changed where they lose mail:
//
//   - A line is a delimiter only as RFC 2046 section 5.1.1 has it: "--" boundary, then
//     optional blanks (transport padding), then the end of the line; or the close delimiter
//     "--" boundary "--". Both readers also ended a part at "--" boundary followed by a blank
//     and any text (a line such as "--outer see below" quoted in a text part), then failed
//     to find the next part there, and everything after that line was lost.
//   - A part's header ends at its first line that is not a field, which becomes the first
//     line of its body (as readHeader does for the message), instead of failing: the part
//     after a delimiter that cut an inner multipart short often starts with body text.
//   - A preamble line longer than the read buffer is skipped, not taken for a missing
//     boundary.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
)

const (
	multipartBufferSize = 4096
	// maxPadding is the most blanks after a boundary that still make a delimiter line; a
	// longer run keeps the line in the part (it stays within the buffer, so the decision
	// never needs more than the buffer holds).
	maxPadding = 256
)

// multipartReader iterates over the parts of a multipart body.
type multipartReader struct {
	br *bufio.Reader
	// parent is the part of an enclosing multipart this one is read from, if any.
	parent *multipartPart

	current   *multipartPart
	partsRead int

	nl               []byte // "\r\n" or "\n" (set after seeing the first boundary line)
	nlDashBoundary   []byte // nl + "--boundary"
	dashBoundaryDash []byte // "--boundary--"
	dashBoundary     []byte // "--boundary"
}

// errEnclosingBoundary ends a part whose input ended at a delimiter of an enclosing
// multipart before the part's own delimiter came.
var errEnclosingBoundary = fmt.Errorf("%w: a boundary of an enclosing multipart came first", io.ErrUnexpectedEOF)

// newMultipartReader reads the multipart body r; parent is the enclosing multipart's part
// that r reads from (nil if none).
func newMultipartReader(r io.Reader, boundary string, parent *multipartPart) *multipartReader {
	b := []byte("\r\n--" + boundary + "--")
	return &multipartReader{
		parent:           parent,
		br:               getBufio(&stickyErrorReader{r: r}),
		nl:               b[:2],
		nlDashBoundary:   b[:len(b)-2],
		dashBoundaryDash: b[2:],
		dashBoundary:     b[2 : len(b)-2],
	}
}

// stickyErrorReader never calls Read again once an error has been seen.
type stickyErrorReader struct {
	r   io.Reader
	err error
}

func (r *stickyErrorReader) Read(p []byte) (n int, _ error) {
	if r.err != nil {
		return 0, r.err
	}
	n, r.err = r.r.Read(p)
	return n, r.err
}

// multipartPart is one part: its header, and its body to read.
type multipartPart struct {
	Header header
	// Warnings are what reading the header dropped.
	Warnings []string

	mr      *multipartReader
	n       int   // known data bytes waiting in mr.br
	total   int64 // total data bytes read already
	err     error // error to return when n == 0
	readErr error // read error observed from mr.br
}

// NextPart returns the next part, or io.EOF after the close delimiter.
func (r *multipartReader) NextPart() (*multipartPart, error) {
	if r.current != nil {
		io.Copy(io.Discard, r.current)
	}
	expectNewPart := false
	for {
		line, err := r.br.ReadSlice('\n')
		if err == bufio.ErrBufferFull && r.partsRead == 0 {
			// A long preamble line: not a boundary, whatever it starts with.
			for err == bufio.ErrBufferFull {
				_, err = r.br.ReadSlice('\n')
			}
			if err == nil {
				continue
			}
		}
		if err == io.EOF && r.isFinalBoundary(line) {
			return nil, io.EOF
		}
		if err != nil {
			return nil, fmt.Errorf("multipart: NextPart: %w", err)
		}
		if r.isBoundaryDelimiterLine(line) {
			r.partsRead++
			p := &multipartPart{mr: r}
			p.Header, p.Warnings, err = readPartHeader(r.br)
			if err != nil {
				return nil, err
			}
			r.current = p
			return p, nil
		}
		if r.isFinalBoundary(line) {
			return nil, io.EOF
		}
		if expectNewPart {
			return nil, fmt.Errorf("multipart: expecting a new part; got line %q", clip(string(line), 100))
		}
		if r.partsRead == 0 {
			continue // preamble
		}
		// The line break between a part's body and the delimiter that follows it.
		if bytes.Equal(line, r.nl) {
			expectNewPart = true
			continue
		}
		return nil, fmt.Errorf("multipart: unexpected line in NextPart: %q", clip(string(line), 100))
	}
}

// isFinalBoundary reports whether line is the close delimiter (whatever follows it, as the
// part reader decides).
func (r *multipartReader) isFinalBoundary(line []byte) bool {
	return bytes.HasPrefix(line, r.dashBoundaryDash)
}

// isBoundaryDelimiterLine reports whether line is "--boundary", transport padding and a
// line end.
func (r *multipartReader) isBoundaryDelimiterLine(line []byte) bool {
	if !bytes.HasPrefix(line, r.dashBoundary) {
		return false
	}
	rest := skipLWSPChar(line[len(r.dashBoundary):])
	// Lines ending in a bare "\n" on the first boundary switch the reader to that mode: a
	// violation of the spec, common in practice.
	if r.partsRead == 0 && len(rest) == 1 && rest[0] == '\n' {
		r.nl = r.nl[1:]
		r.nlDashBoundary = r.nlDashBoundary[1:]
	}
	return bytes.Equal(rest, r.nl) || bytes.Equal(rest, []byte("\n"))
}

func skipLWSPChar(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// Read reads the body of the part, up to the next delimiter line.
func (p *multipartPart) Read(d []byte) (int, error) {
	br := p.mr.br
	// Read into the buffer until some data can be returned, or there is a reason to stop
	// (the delimiter or a read error).
	for p.n == 0 && p.err == nil {
		peek, _ := br.Peek(br.Buffered())
		p.n, p.err = scanUntilBoundary(peek, p.mr.dashBoundary, p.mr.nlDashBoundary, p.total, p.readErr)
		if p.n == 0 && p.err == nil {
			_, p.readErr = br.Peek(len(peek) + 1)
			if p.readErr == io.EOF {
				p.readErr = io.ErrUnexpectedEOF
				if par := p.mr.parent; par != nil && par.err == io.EOF && par.n == 0 {
					p.readErr = errEnclosingBoundary
				}
			}
		}
	}
	if p.n == 0 {
		return 0, p.err
	}
	n := min(len(d), p.n)
	n, _ = br.Read(d[:n])
	p.total += int64(n)
	p.n -= n
	if p.n == 0 {
		return n, p.err
	}
	return n, nil
}

// scanUntilBoundary returns how many bytes of buf are part data, and the error to return
// once they are read (io.EOF at the delimiter). dashBoundary is "--boundary",
// nlDashBoundary the same after the line break; total is how much of the part was read
// already (at 0 the part may start with the delimiter, without a line break before it);
// readErr is the error that followed the bytes in buf.
func scanUntilBoundary(buf, dashBoundary, nlDashBoundary []byte, total int64, readErr error) (int, error) {
	if total == 0 {
		if bytes.HasPrefix(buf, dashBoundary) {
			switch matchAfterPrefix(buf, dashBoundary, readErr) {
			case -1:
				return len(dashBoundary), nil
			case 0:
				return 0, nil
			case +1:
				return 0, io.EOF
			}
		}
		if bytes.HasPrefix(dashBoundary, buf) {
			return 0, readErr
		}
	}
	if i := bytes.Index(buf, nlDashBoundary); i >= 0 {
		switch matchAfterPrefix(buf[i:], nlDashBoundary, readErr) {
		case -1:
			return i + len(nlDashBoundary), nil
		case 0:
			return i, nil
		case +1:
			return i, io.EOF
		}
	}
	if bytes.HasPrefix(nlDashBoundary, buf) {
		return 0, readErr
	}
	// Anything up to the last line break is data; from there on too, unless it may be the
	// start of a delimiter.
	i := bytes.LastIndexByte(buf, nlDashBoundary[0])
	if i >= 0 && bytes.HasPrefix(nlDashBoundary, buf[i:]) {
		return i, nil
	}
	return len(buf), readErr
}

// matchAfterPrefix tells whether buf, which starts with prefix ("--boundary" with or
// without a line break before it), is a delimiter line: +1 it is, -1 it is not, 0 more input
// is needed to tell. It is one when prefix is followed by "--" (the close delimiter), or by
// at most maxPadding blanks and then a line end or the end of the input.
func matchAfterPrefix(buf, prefix []byte, readErr error) int {
	rest := buf[len(prefix):]
	more := func() int {
		if readErr != nil {
			return +1 // the input ends here: as good as a line end
		}
		return 0
	}
	if len(rest) == 0 {
		return more()
	}
	if rest[0] == '-' {
		switch {
		case len(rest) == 1 && readErr == nil:
			return 0
		case len(rest) > 1 && rest[1] == '-':
			return +1
		}
		return -1
	}
	i := 0
	for i < len(rest) && i <= maxPadding && (rest[i] == ' ' || rest[i] == '\t') {
		i++
	}
	if i > maxPadding {
		return -1
	}
	if i == len(rest) {
		return more()
	}
	switch rest[i] {
	case '\n':
		return +1
	case '\r':
		if i+1 == len(rest) {
			return more()
		}
		if rest[i+1] == '\n' {
			return +1
		}
	}
	return -1
}

// readPartHeader reads the header of a part. A line that is neither a field nor a
// continuation ends the header without being read: it is the body's first line. Fields
// beyond maxHeaderBytes are dropped, with a warning.
func readPartHeader(br *bufio.Reader) (header, []string, error) {
	hb := getHeaderBuilder()
	defer putHeaderBuilder(hb)
	var warns []string
	budget := maxHeaderBytes
	for {
		line, err := peekLine(br)
		if len(line) == 0 {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return hb.header(), warns, nil // the part ends in its header: the body reader says so
			}
			return hb.header(), warns, err
		}
		blank := len(bytes.TrimRight(line, "\r\n")) == 0
		folded := line[0] == ' ' || line[0] == '\t'
		_, _, isField := splitField(line)
		if !blank && !(folded && hb.fields() > 0) && !isField {
			return hb.header(), warns, nil
		}
		full, err := hb.readLine(br) // the whole line, however long
		if err == io.ErrUnexpectedEOF {
			err = io.EOF // the body reader reports the truncation
		}
		if err != nil && err != io.EOF {
			return hb.header(), warns, err
		}
		if blank {
			return hb.header(), warns, nil
		}
		budget -= len(full)
		if budget < 0 {
			if budget+len(full) >= 0 {
				warns = append(warns, headerCutWarning)
			}
			continue
		}
		if folded {
			hb.fold(full)
			continue
		}
		// The name as in the line peeked at: the colon was within it.
		name, value, _ := splitField(full)
		hb.add(name, value)
		if err == io.EOF {
			return hb.header(), warns, nil
		}
	}
}

// peekLine returns the next line without reading it: up to and including its "\n", or as
// much of it as the buffer holds.
func peekLine(br *bufio.Reader) ([]byte, error) {
	for {
		b, _ := br.Peek(br.Buffered())
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			return b[:i+1], nil
		}
		if len(b) == br.Size() {
			return b, nil
		}
		if _, err := br.Peek(len(b) + 1); err != nil {
			b, _ = br.Peek(br.Buffered())
			if i := bytes.IndexByte(b, '\n'); i >= 0 {
				return b[:i+1], nil
			}
			return b, err
		}
	}
}
