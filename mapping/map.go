package mapping

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/mailbus/mailbus/schemas"
)

// DefaultMaxInlineBytes is the inline limit used when Options.MaxInlineBytes is zero.
const DefaultMaxInlineBytes = 262144

const (
	// maxBodyBytes caps TextBody and HtmlBody (before charset conversion) so a huge text part
	// cannot blow the memory; the rest is read and dropped, with a warning.
	maxBodyBytes = 16 << 20
	// maxDepth caps multipart nesting; deeper multiparts are kept as opaque attachments.
	maxDepth = 32
	// maxWarnings caps Warnings; a broken message can otherwise produce one per part.
	maxWarnings = 50
	// peekBytes is how much of an attached message is looked at for its Subject.
	peekBytes = 64 << 10
)

// Options are the route's mapping options. A nil *Options means defaults.
type Options struct {
	// Headers is the allow-list for CustomHeaders, matched case-insensitively. Nil means all
	// headers; an empty non-nil slice means none.
	Headers []string
	// Attributes are the rules that fill Event.Attributes, applied in order.
	Attributes []schemas.AttributeRule
	// MaxInlineBytes is the largest attachment kept in Content; larger ones go to Sink.
	// Zero or less means DefaultMaxInlineBytes.
	MaxInlineBytes int64
	// Sink receives attachments over MaxInlineBytes. When nil, such an attachment keeps no
	// content (only its Size and Sha256) and the event gets a warning.
	Sink Sink
}

// Sink stores an attachment too large to inline and returns where it is.
type Sink interface {
	// PutAttachment stores the decoded content read from r, which is valid only until
	// PutAttachment returns (its buffers are reused). index is the attachment's
	// position in Event.Attachments; a has every field set but Size and Sha256, which Map
	// fills once the content is read. The sink should read r to the end; whatever it leaves
	// is read and dropped by Map. An error fails Map with the error wrapped.
	PutAttachment(index int, a *schemas.Attachment, r io.Reader) (schemas.ObjectRef, error)
}

// SummingSink is a Sink that computes the SHA-256 of what it stores anyway (JetStream's
// object store does): Map then leaves hashing the content to it, which saves hashing every
// large attachment twice. Its PutAttachment must read r to the end and, when it returns
// no error, have set a.Sha256 to the lower-case hex SHA-256 of all it read.
type SummingSink interface {
	Sink
	SumsContent()
}

// ErrNoHeader is returned by Map for input without a single parsable header field; such a
// message cannot become an event and is dead-lettered by the connector.
var ErrNoHeader = errors.New("mapping: message has no parsable header")

// ErrPanic is returned (wrapped, with the panic's value) by Map for a message whose mapping
// panicked: a bug, on input nobody foresaw. The event would be incomplete in ways nobody
// can name, so there is none: the connector dead-letters the message with its raw copy.
var ErrPanic = errors.New("mapping: internal error")

// Result is what MapMessage returns.
type Result struct {
	Event *schemas.Event
	// Partial is set when Event keeps only part of the message: its structure was truncated
	// or broken, a body or the header was cut at a size cap, an attachment over the inline
	// limit had no sink, or a decoder skipped damaged input. Warnings say what; the caller
	// should keep the raw message (Event.RawRef) so that nothing is lost.
	Partial bool
}

// Map reads one RFC 5322 message from r and returns its event with the message-derived fields
// set: everything but Id, Route, Connection, Bus, Mailbox, UidValidity, Uid, ReceivedAt and
// RawRef. Size is the number of bytes read from r, which Map reads to the end.
//
// r is streamed: attachments over the inline limit pass through to opts.Sink, so memory does
// not grow with their size. Damage in the message (bad charset, broken encoding, truncation)
// becomes Event.Warnings, never an error. Map fails only with ErrNoHeader, with an error
// reading r, with an error from the sink, or with ErrPanic.
//
// Map does not say whether the event keeps the whole message; MapMessage does.
func Map(r io.Reader, opts *Options) (*schemas.Event, error) {
	res, err := MapMessage(r, opts)
	if err != nil {
		return nil, err
	}
	return res.Event, nil
}

// MapMessage is Map, and tells whether the event keeps only part of the message.
func MapMessage(r io.Reader, opts *Options) (res *Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			res, err = nil, fmt.Errorf("%w: %v", ErrPanic, p)
		}
	}()
	m := newMapper(opts)
	m.counter.r = r
	m.src = &m.counter
	br := getBufio(m.src)
	defer putBufio(br)

	h, body, warns, err := readHeader(br)
	if err != nil {
		if m.src.err != nil {
			return nil, fmt.Errorf("mapping: read message: %w", m.src.err)
		}
		return nil, err
	}
	for _, w := range warns {
		m.warn("%s", w)
	}
	m.partial = m.partial || headerCut(warns)
	if err := m.run(h, body); err != nil {
		return nil, err
	}
	// Read the rest (an epilogue, or what a broken structure left) so Size is the message's.
	if _, err := io.Copy(io.Discard, br); err != nil {
		return nil, fmt.Errorf("mapping: read message: %w", err)
	}
	if m.src.err != nil {
		return nil, fmt.Errorf("mapping: read message: %w", m.src.err)
	}
	m.ev.Size = m.src.n
	return &Result{Event: m.finish(), Partial: m.partial}, nil
}

// run maps the body, then the header.
func (m *mapper) run(h header, body io.Reader) error {
	mt, params, _ := parseParams(h.value("Content-Type"))
	if strings.TrimSpace(h.value("Content-Type")) == "" {
		mt = "text/plain"
	}
	if cs := strings.ToLower(params["charset"]); cs != "utf-8" && cs != "us-ascii" {
		m.fallback = cs
	}
	// The body first: a text part may tell the charset of 8-bit header bytes.
	if err := m.entity(h, mt, params, body, "", 0); err != nil {
		return err
	}
	m.headers(h)
	m.attributes(h)
	return nil
}

type mapper struct {
	opts       Options
	ev         *schemas.Event
	warnings   []string
	dropped    int
	src        *countingReader
	words      *mime.WordDecoder
	addrParser *mail.AddressParser
	// wordDecoder and addressParser are what words and addrParser point to, and counter
	// what src points to, allocated with the mapper.
	wordDecoder   mime.WordDecoder
	addressParser mail.AddressParser
	counter       countingReader
	// fallback is the charset used for 8-bit header bytes: the message's own, if it names one.
	fallback string
	// where names what is being decoded, for warnings raised from callbacks.
	where string
	// truncated is set once a truncation was reported, so enclosing multiparts stay quiet.
	truncated bool
	// partial is set once something of the message is not in the event (Result.Partial).
	partial bool
}

func newMapper(opts *Options) *mapper {
	m := &mapper{ev: &schemas.Event{
		References:    []string{},
		ReplyTo:       []schemas.Address{},
		To:            []schemas.Address{},
		Cc:            []schemas.Address{},
		Bcc:           []schemas.Address{},
		Attachments:   []schemas.Attachment{},
		CustomHeaders: []schemas.CustomHeader{},
		Attributes:    map[string]string{},
	}}
	if opts != nil {
		m.opts = *opts
	}
	if m.opts.MaxInlineBytes <= 0 {
		m.opts.MaxInlineBytes = DefaultMaxInlineBytes
	}
	m.wordDecoder = mime.WordDecoder{CharsetReader: m.wordCharset}
	m.words = &m.wordDecoder
	m.addressParser = mail.AddressParser{WordDecoder: m.words}
	m.addrParser = &m.addressParser
	return m
}

func (m *mapper) warn(format string, args ...any) {
	if len(m.warnings) >= maxWarnings {
		m.dropped++
		return
	}
	w := fmt.Sprintf(format, args...)
	for _, seen := range m.warnings {
		if seen == w {
			return
		}
	}
	m.warnings = append(m.warnings, w)
}

func (m *mapper) finish() *schemas.Event {
	m.ev.Warnings = append([]string{}, m.warnings...)
	if m.dropped > 0 {
		m.ev.Warnings = append(m.ev.Warnings, fmt.Sprintf("%d more warnings not shown", m.dropped))
	}
	return m.ev
}

// mapped are the headers with a field of their own (plus every Content-*), so not custom.
var mapped = map[string]bool{
	"From": true, "To": true, "Cc": true, "Bcc": true, "Reply-To": true, "Subject": true,
	"Date": true, "Message-Id": true, "In-Reply-To": true, "References": true, "Mime-Version": true,
}

func (m *mapper) headers(h header) {
	ev := m.ev
	ev.Subject = m.text("header Subject", h.value("Subject"))
	ev.Date = m.date(h)
	if from := m.addresses(h, "From"); len(from) > 0 {
		ev.From = &from[0]
	}
	ev.ReplyTo = m.addresses(h, "Reply-To")
	ev.To = m.addresses(h, "To")
	ev.Cc = m.addresses(h, "Cc")
	ev.Bcc = m.addresses(h, "Bcc")
	if ids := msgIDs(m.utf8Text("header Message-ID", h.value("Message-Id"))); len(ids) > 0 {
		ev.MessageId = ids[0]
	}
	if ids := msgIDs(m.utf8Text("header In-Reply-To", h.value("In-Reply-To"))); len(ids) > 0 {
		ev.InReplyTo = ids[0]
	}
	for _, v := range h.values("References") {
		ev.References = append(ev.References, msgIDs(m.utf8Text("header References", v))...)
	}

	var allow map[string]bool
	if m.opts.Headers != nil {
		allow = map[string]bool{}
		for _, n := range m.opts.Headers {
			allow[strings.ToLower(strings.TrimSpace(n))] = true
		}
	}
	// The custom headers' ListValues are carved from one array, each with room for its
	// first value only, so that a second value (append) moves that header's to an array
	// of its own: an allocation per header less.
	var values []string
	var keys []string // canonical key of each custom header, while they are few
	var index map[string]int
	for _, f := range h {
		if mapped[f.Key] || strings.HasPrefix(f.Key, "Content-") {
			continue
		}
		if allow != nil && !allow[strings.ToLower(f.Key)] {
			continue
		}
		v := f.Value
		if !plainText(v) {
			v = m.text("header "+f.Name, v)
		}
		i := -1
		if index != nil {
			if j, ok := index[f.Key]; ok {
				i = j
			}
		} else {
			for j, k := range keys {
				if k == f.Key {
					i = j
					break
				}
			}
		}
		if i >= 0 {
			ev.CustomHeaders[i].ListValues = append(ev.CustomHeaders[i].ListValues, v)
			continue
		}
		if index == nil && len(keys) == 16 { // many: look them up in a map from now on
			index = make(map[string]int, 32)
			for j, k := range keys {
				index[k] = j
			}
		}
		if index != nil {
			index[f.Key] = len(ev.CustomHeaders)
		} else {
			keys = append(keys, f.Key)
		}
		if len(values) == cap(values) {
			values = make([]string, 0, max(8, len(h)-len(ev.CustomHeaders)))
		}
		values = append(values, v)
		n := len(values)
		ev.CustomHeaders = append(ev.CustomHeaders, schemas.CustomHeader{Name: f.Name, Value: v, ListValues: values[n-1 : n : n]})
	}
}

// plainText reports whether text(where, v) is v itself: valid UTF-8 without an
// encoded-word. It saves making the where of a value that needs no decoding.
func plainText(v string) bool {
	return !strings.Contains(v, "=?") && utf8.ValidString(v)
}

// entity maps one MIME entity whose header is already read; mt and params are its content
// type. path is its IMAP part number ("" for the root).
func (m *mapper) entity(h header, mt string, params map[string]string, body io.Reader, path string, depth int) error {
	if !strings.HasPrefix(mt, "multipart/") {
		return m.leaf(h, mt, params, body, path)
	}
	where := "part " + partName(path)
	if path == "" {
		where = "the body"
	}
	if depth >= maxDepth {
		m.warn("%s nested deeper than %d: kept as an attachment", where, maxDepth)
		return m.leaf(h, mt, params, body, path)
	}
	boundary := params["boundary"]
	if boundary == "" {
		m.warn("%s in %s has no boundary: read as text", mt, where)
		return m.leaf(h, "text/plain", nil, body, path)
	}

	// Keep what comes before the first boundary: if there is none, that is the whole body.
	pre := &capture{r: body, max: maxBodyBytes}
	parent, _ := body.(*multipartPart)
	mr := newMultipartReader(pre, boundary, parent)
	defer putBufio(mr.br)
	n := 0
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			if m.src.err != nil {
				return fmt.Errorf("mapping: read message: %w", m.src.err)
			}
			if n == 0 {
				m.warn("%s in %s: boundary %q not found: read as text", mt, where, clip(boundary, 70))
				m.partial = m.partial || pre.overflow
				return m.leaf(nil, "text/plain", nil, pre.bytes(), path)
			}
			m.partial = true
			if !m.truncated {
				m.warn("%s in %s is truncated: kept the parts before", mt, where)
				m.truncated = true
			}
			break
		}
		if n == 0 {
			pre.stop()
		}
		n++
		ph := p.Header
		for _, w := range p.Warnings {
			m.partial = true
			m.warn("%s in %s", w, "part "+partName(path)+"."+strconv.Itoa(n))
		}
		def := "text/plain"
		if mt == "multipart/digest" {
			def = "message/rfc822"
		}
		cmt, cparams := def, map[string]string(nil)
		if v := ph.value("Content-Type"); strings.TrimSpace(v) != "" {
			cmt, cparams, _ = parseParams(v)
		}
		child := strconv.Itoa(n)
		if path != "" {
			child = path + "." + child
		}
		if err := m.entity(ph, cmt, cparams, p, child, depth+1); err != nil {
			return err
		}
	}
	return nil
}

func partName(path string) string {
	if path == "" {
		return "1"
	}
	return path
}

// leaf maps a non-multipart entity: a body or an attachment.
func (m *mapper) leaf(h header, mt string, params map[string]string, body io.Reader, path string) error {
	where := "part " + partName(path)
	if !strings.Contains(mt, "/") {
		// RFC 2045 section 5.2: an invalid Content-Type means text/plain.
		m.warn("bad Content-Type %q in %s: read as text/plain", clip(mt, 70), where)
		mt = "text/plain"
	}
	disp, dparams, dext := parseParams(h.value("Content-Disposition"))
	var cext map[string]extValue
	if ct := h.value("Content-Type"); strings.IndexByte(ct, '*') >= 0 {
		// Only a parameter name with a '*' makes an RFC 2231 value: without one the
		// Content-Type need not be parsed a second time.
		_, _, cext = parseParams(ct)
	}
	name := m.paramText(where, "filename", dparams, dext)
	if name == "" {
		name = m.paramText(where, "name", params, cext)
	}

	enc := h.value("Content-Transfer-Encoding")
	dec := transferDecoder(enc, body)
	defer dec.release()
	if !dec.known {
		m.warn("unknown transfer encoding %q in %s: kept raw", clip(enc, 40), where)
	}
	src := &softEOF{r: &dec, m: m, where: where}

	isText := mt == "text/plain" || mt == "text/html"
	taken := mt == "text/plain" && m.ev.TextBody != "" || mt == "text/html" && m.ev.HtmlBody != ""
	var err error
	if isText && disp != "attachment" && name == "" && !taken {
		err = m.body(mt, params, src, where)
	} else {
		err = m.attachment(h, mt, disp, name, src, where)
	}
	if err != nil {
		return err
	}
	if n := dec.damage(); n > 0 {
		m.partial = true
		m.warn("broken %s in %s: %d bad characters", strings.ToLower(strings.TrimSpace(enc)), where, n)
	}
	return nil
}

// paramText returns the decoded value of a Content-Type or Content-Disposition parameter:
// RFC 2231 (with any charset) wins over the plain value, which may hold RFC 2047 words.
func (m *mapper) paramText(where, key string, params map[string]string, ext map[string]extValue) string {
	if e, ok := ext[key]; ok {
		return m.decodeCharset(e.value, e.charset, key+" of "+where)
	}
	if v := params[key]; plainText(v) {
		return v
	}
	return m.text(key+" of "+where, params[key])
}

// body sets TextBody or HtmlBody from a text part.
func (m *mapper) body(mt string, params map[string]string, r io.Reader, where string) error {
	b, pooled, err := readBody(r, maxBodyBytes+1)
	defer bodyPool.Put(pooled)
	if err != nil {
		return err
	}
	if len(b) > maxBodyBytes {
		b = b[:maxBodyBytes]
		n, err := io.Copy(io.Discard, r)
		if err != nil {
			return err
		}
		m.partial = true
		m.warn("%s in %s is larger than %d MiB: cut, %d bytes dropped", mt, where, maxBodyBytes>>20, n+1)
	}
	cs := strings.ToLower(params["charset"])
	var text string
	if utf8Label(cs) {
		// Line ends dropped from the bytes rather than from the string: a string fewer.
		// The same text, since a '\r' is never part of a UTF-8 sequence, valid or not.
		text = m.decodeCharset(dropCR(b), cs, where)
	} else {
		text = strings.ReplaceAll(m.decodeCharset(b, cs, where), "\r\n", "\n")
	}
	if m.fallback == "" && cs != "" && cs != "utf-8" && cs != "us-ascii" {
		m.fallback = cs
	}
	if mt == "text/html" {
		m.ev.HtmlBody = text
	} else {
		m.ev.TextBody = text
	}
	return nil
}

// softEOF ends a part at truncation (an unexpected end of input inside a part) with a warning,
// so neither the mapper nor a sink sees an error for what is only a broken message. A failure
// reading the source itself is still an error.
type softEOF struct {
	r     io.Reader
	m     *mapper
	where string
}

func (s *softEOF) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err == nil || err == io.EOF {
		return n, err
	}
	if s.m.src.err != nil {
		return n, fmt.Errorf("mapping: read message: %w", s.m.src.err)
	}
	s.m.partial = true
	if !s.m.truncated {
		s.m.truncated = true
		switch {
		case errors.Is(err, errEnclosingBoundary):
			s.m.warn("%s ends at a boundary of an enclosing multipart, before its own: kept what was there, and read on", s.where)
		case errors.Is(err, io.ErrUnexpectedEOF):
			s.m.warn("message truncated in %s: kept what was there", s.where)
		default:
			s.m.warn("cannot read %s: %v: kept what was there", s.where, err)
		}
	}
	return n, io.EOF
}

// countingReader counts the bytes read from the message and remembers the first error that
// is not io.EOF, which tells a failing source apart from a broken message.
type countingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	return n, err
}

// capture keeps up to max bytes read through it until stop.
type capture struct {
	r        io.Reader
	buf      []byte
	max      int
	stopped  bool
	overflow bool // more than max bytes went through before stop
}

func (c *capture) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if !c.stopped {
		room := min(c.max-len(c.buf), n)
		c.buf = append(c.buf, p[:max(room, 0)]...)
		c.overflow = c.overflow || room < n
	}
	return n, err
}

func (c *capture) stop() { c.stopped, c.buf = true, nil }

func (c *capture) bytes() io.Reader { return strings.NewReader(string(c.buf)) }
