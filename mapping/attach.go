package mapping

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"mime"
	"path"
	"strings"
	"sync"
	"unicode"

	"github.com/mailbus/mailbus/schemas"
)

// attachment adds an attachment from a part: inline when it fits the limit, otherwise
// streamed to the sink. Only the first MaxInlineBytes+1 bytes are ever held.
func (m *mapper) attachment(h header, mt, disp, name string, r io.Reader, where string) error {
	index := len(m.ev.Attachments)
	a := schemas.Attachment{ContentType: mt, ContentId: contentID(h.value("Content-Id"))}
	a.Inline = a.ContentId != "" && disp != "attachment"

	if name == "" && (mt == "message/rfc822" || mt == "message/global") {
		br := bufio.NewReaderSize(r, peekBytes)
		peek, _ := br.Peek(peekBytes)
		if s := m.subjectOf(peek); s != "" {
			name = strings.NewReplacer("/", "_", `\`, "_").Replace(s) + ".eml"
		}
		r = br
	}
	a.Name = cleanName(name)
	if a.Name == "" {
		a.Name = fmt.Sprintf("attachment-%d.%s", index+1, extensionFor(mt))
	}
	a.Extension = extension(a.Name)

	limit := m.opts.MaxInlineBytes
	buf, pooled, err := readInline(r, limit+1)
	if pooled != nil {
		defer inlinePool.Put(pooled)
	}
	if err != nil {
		return err
	}
	if int64(len(buf)) <= limit {
		sum := sha256.Sum256(buf)
		a.Size, a.Sha256 = int64(len(buf)), hex.EncodeToString(sum[:])
		if len(buf) > 0 {
			if pooled != nil {
				buf = bytes.Clone(buf)
			}
			a.Content = buf
		}
		m.ev.Attachments = append(m.ev.Attachments, a)
		return nil
	}

	hr := &hashReader{r: io.MultiReader(bytes.NewReader(buf), r), h: sha256.New()}
	_, summing := m.opts.Sink.(SummingSink)
	if summing {
		hr.h = nil
	}
	if m.opts.Sink != nil {
		ref, err := m.opts.Sink.PutAttachment(index, &a, hr)
		if err != nil {
			if m.src.err != nil {
				return fmt.Errorf("mapping: read message: %w", m.src.err)
			}
			return fmt.Errorf("mapping: store attachment %d %q: %w", index, a.Name, err)
		}
		a.ContentRef = &ref
	} else {
		m.partial = true
		m.warn("attachment %q in %s is over the inline limit and there is no sink: content not kept", a.Name, where)
	}
	// Whatever the sink left is read too, so Size and Sha256 cover the whole content.
	if _, err := io.Copy(io.Discard, hr); err != nil {
		return err
	}
	a.Size = hr.n
	if !summing {
		a.Sha256 = hex.EncodeToString(hr.h.Sum(nil))
	}
	m.ev.Attachments = append(m.ev.Attachments, a)
	return nil
}

// maxPooledInline is the largest buffer readInline reuses.
const maxPooledInline = 1<<20 + 1

var inlinePool sync.Pool // of *[]byte

// readInline reads up to n bytes of r, the start of an attachment. Up to maxPooledInline
// it reads into a reused buffer, returned as pooled for the caller to put back in
// inlinePool once nothing refers to it: io.ReadAll grew a buffer from 512 bytes for each
// attachment, allocating about three times the bytes it kept (and as much again for one
// over the limit, which goes to the sink), so that the attachments of mixed mail made a
// fifth of all the garbage of an ingest. An inline attachment now costs one copy of its
// exact size. Larger limits keep io.ReadAll, which allocates only what the attachment has.
func readInline(r io.Reader, n int64) (buf []byte, pooled *[]byte, err error) {
	if n > maxPooledInline {
		buf, err = io.ReadAll(io.LimitReader(r, n))
		return buf, nil, err
	}
	pooled, _ = inlinePool.Get().(*[]byte)
	if pooled == nil || int64(cap(*pooled)) < n {
		b := make([]byte, n)
		pooled = &b
	}
	k, err := io.ReadFull(r, (*pooled)[:n])
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		err = nil
	}
	return (*pooled)[:k], pooled, err
}

// subjectOf returns the decoded Subject of an attached message from its first bytes. Warnings
// about that inner header are not the outer message's, so a throw-away mapper decodes it.
func (m *mapper) subjectOf(peek []byte) string {
	h, _, _, err := readHeader(bufio.NewReader(bytes.NewReader(peek)))
	if err != nil {
		return ""
	}
	inner := newMapper(nil)
	return strings.TrimSpace(inner.text("Subject", h.value("Subject")))
}

type hashReader struct {
	r io.Reader
	h hash.Hash // nil: counting only
	n int64
}

func (hr *hashReader) Read(p []byte) (int, error) {
	n, err := hr.r.Read(p)
	if hr.h != nil {
		hr.h.Write(p[:n])
	}
	hr.n += int64(n)
	return n, err
}

func contentID(v string) string {
	v = strings.TrimSpace(v)
	v = strings.TrimPrefix(v, "<")
	v = strings.TrimSuffix(v, ">")
	return strings.TrimSpace(v)
}

// cleanName makes a file name safe to use: no directories (a name like "../../x" or
// "C:\x\y.pdf" keeps its last element), no control characters, at most 255 bytes.
func cleanName(name string) string {
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, name)
	name = strings.TrimSpace(name)
	if name == "." || name == ".." {
		return ""
	}
	if len(name) > 255 {
		ext := path.Ext(name)
		if len(ext) > 16 {
			ext = ""
		}
		name = clip(name, 255-len(ext)-len("…")) + ext
	}
	return name
}

// extension returns the lower-case extension of a file name without the dot, or "" when the
// name has none or what follows the last dot does not look like one ("v1.2 final").
func extension(name string) string {
	ext := path.Ext(name)
	if len(ext) < 2 || len(ext) > 11 {
		return ""
	}
	ext = strings.ToLower(ext[1:])
	for _, c := range ext {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '+') {
			return ""
		}
	}
	return ext
}

// extensions are the extensions for generated names. The table comes first because
// mime.ExtensionsByType returns several in alphabetical order (".asc" for text/plain) and
// depends on the system's mime.types.
var extensions = map[string]string{
	"application/pdf": "pdf", "application/octet-stream": "bin", "application/zip": "zip",
	"application/gzip": "gz", "application/x-gzip": "gz", "application/json": "json",
	"application/xml": "xml", "application/rtf": "rtf", "application/ics": "ics",
	"application/msword": "doc", "application/vnd.ms-excel": "xls", "application/vnd.ms-powerpoint": "ppt",
	"application/vnd.openxmlformats-officedocument.wordprocessingml.document":   "docx",
	"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet":         "xlsx",
	"application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
	"application/pkcs7-signature":                                               "p7s", "application/x-pkcs7-signature": "p7s",
	"application/pkcs7-mime": "p7m", "application/x-pkcs7-mime": "p7m",
	"application/pgp-signature": "asc", "application/pgp-encrypted": "asc", "application/pgp-keys": "asc",
	"application/ms-tnef": "dat", "application/vnd.ms-tnef": "dat",
	"image/jpeg": "jpg", "image/jpg": "jpg", "image/pjpeg": "jpg", "image/png": "png", "image/gif": "gif",
	"image/webp": "webp", "image/bmp": "bmp", "image/tiff": "tif", "image/svg+xml": "svg",
	"text/plain": "txt", "text/html": "html", "text/calendar": "ics", "text/csv": "csv",
	"text/xml": "xml", "text/rtf": "rtf", "text/vcard": "vcf", "text/x-vcard": "vcf",
	"text/markdown": "md", "text/enriched": "txt", "text/rfc822-headers": "txt",
	"message/rfc822": "eml", "message/global": "eml",
	"message/delivery-status": "txt", "message/disposition-notification": "txt",
	"audio/mpeg": "mp3", "video/mp4": "mp4",
}

func extensionFor(mt string) string {
	if ext, ok := extensions[mt]; ok {
		return ext
	}
	if exts, _ := mime.ExtensionsByType(mt); len(exts) > 0 {
		if ext := extension("x" + exts[0]); ext != "" {
			return ext
		}
	}
	return "bin"
}
