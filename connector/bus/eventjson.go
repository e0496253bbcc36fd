package bus

import (
	"fmt"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/segmentio/asm/base64"

	"github.com/mailbus/mailbus/schemas"
)

// MarshalEvent is json.Marshal(ev), byte for byte, written by hand. encoding/json took 29 %
// of a route's CPU on small mail (its reflection, and its scan of what each MarshalJSON
// returns), and encodes a []byte with the standard library's base64 encoder, at a tenth of
// the speed of the vectorised one used here (issue 20). FuzzMarshalEvent holds the two
// equal, for events of random content in every field: a field added to schemas.Event and
// not here fails it.
func MarshalEvent(ev *schemas.Event) ([]byte, error) {
	size := 1024 + len(ev.TextBody) + len(ev.HtmlBody)
	for _, a := range ev.Attachments {
		size += 256 + base64.StdEncoding.EncodedLen(len(a.Content))
	}
	return appendEvent(make([]byte, 0, size), ev)
}

// appendEvent appends the JSON of ev to b, its fields in the order of the struct.
func appendEvent(b []byte, ev *schemas.Event) ([]byte, error) {
	var err error
	b = append(b, `{"Id":`...)
	b = appendString(b, ev.Id)
	b = append(b, `,"Route":`...)
	b = appendString(b, ev.Route)
	b = append(b, `,"Connection":`...)
	b = appendString(b, ev.Connection)
	b = append(b, `,"Bus":`...)
	b = strconv.AppendInt(b, int64(ev.Bus), 10)
	b = append(b, `,"Mailbox":`...)
	b = appendString(b, ev.Mailbox)
	b = append(b, `,"UidValidity":`...)
	b = strconv.AppendUint(b, uint64(ev.UidValidity), 10)
	b = append(b, `,"Uid":`...)
	b = strconv.AppendUint(b, uint64(ev.Uid), 10)
	b = append(b, `,"ReceivedAt":`...)
	if b, err = appendTime(b, ev.ReceivedAt); err != nil {
		return nil, err
	}
	b = append(b, `,"MessageId":`...)
	b = appendString(b, ev.MessageId)
	b = append(b, `,"InReplyTo":`...)
	b = appendString(b, ev.InReplyTo)
	b = append(b, `,"References":`...)
	b = appendStrings(b, ev.References)
	b = append(b, `,"Date":`...)
	if b, err = appendTime(b, ev.Date); err != nil {
		return nil, err
	}
	b = append(b, `,"Subject":`...)
	b = appendString(b, ev.Subject)
	b = append(b, `,"From":`...)
	if ev.From == nil {
		b = append(b, "null"...)
	} else {
		b = appendAddress(b, ev.From)
	}
	b = append(b, `,"ReplyTo":`...)
	b = appendAddresses(b, ev.ReplyTo)
	b = append(b, `,"To":`...)
	b = appendAddresses(b, ev.To)
	b = append(b, `,"Cc":`...)
	b = appendAddresses(b, ev.Cc)
	b = append(b, `,"Bcc":`...)
	b = appendAddresses(b, ev.Bcc)
	b = append(b, `,"TextBody":`...)
	b = appendString(b, ev.TextBody)
	b = append(b, `,"HtmlBody":`...)
	b = appendString(b, ev.HtmlBody)
	b = append(b, `,"Attachments":`...)
	if ev.Attachments == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range ev.Attachments {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendAttachment(b, &ev.Attachments[i])
		}
		b = append(b, ']')
	}
	b = append(b, `,"CustomHeaders":`...)
	if ev.CustomHeaders == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, h := range ev.CustomHeaders {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"Name":`...)
			b = appendString(b, h.Name)
			b = append(b, `,"Value":`...)
			b = appendString(b, h.Value)
			b = append(b, `,"ListValues":`...)
			b = appendStrings(b, h.ListValues)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = append(b, `,"Attributes":`...)
	if ev.Attributes == nil {
		b = append(b, "null"...)
	} else {
		keys := make([]string, 0, len(ev.Attributes))
		for k := range ev.Attributes {
			keys = append(keys, k)
		}
		slices.Sort(keys) // as encoding/json orders a map
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendString(b, ev.Attributes[k])
		}
		b = append(b, '}')
	}
	b = append(b, `,"Size":`...)
	b = strconv.AppendInt(b, ev.Size, 10)
	if ev.RawRef != nil {
		b = append(b, `,"RawRef":`...)
		b = appendObjectRef(b, ev.RawRef)
	}
	b = append(b, `,"Warnings":`...)
	b = appendStrings(b, ev.Warnings)
	return append(b, '}'), nil
}

func appendAttachment(b []byte, a *schemas.Attachment) []byte {
	b = append(b, `{"Name":`...)
	b = appendString(b, a.Name)
	b = append(b, `,"Extension":`...)
	b = appendString(b, a.Extension)
	b = append(b, `,"ContentType":`...)
	b = appendString(b, a.ContentType)
	b = append(b, `,"Size":`...)
	b = strconv.AppendInt(b, a.Size, 10)
	b = append(b, `,"Sha256":`...)
	b = appendString(b, a.Sha256)
	b = append(b, `,"ContentId":`...)
	b = appendString(b, a.ContentId)
	b = append(b, `,"Inline":`...)
	b = strconv.AppendBool(b, a.Inline)
	if len(a.Content) > 0 {
		b = append(b, `,"Content":"`...)
		n, k := len(b), base64.StdEncoding.EncodedLen(len(a.Content))
		b = slices.Grow(b, k)[:n+k]
		base64.StdEncoding.Encode(b[n:], a.Content)
		b = append(b, '"')
	}
	if a.ContentRef != nil {
		b = append(b, `,"ContentRef":`...)
		b = appendObjectRef(b, a.ContentRef)
	}
	return append(b, '}')
}

func appendObjectRef(b []byte, r *schemas.ObjectRef) []byte {
	b = append(b, `{"Bucket":`...)
	b = appendString(b, r.Bucket)
	b = append(b, `,"Object":`...)
	b = appendString(b, r.Object)
	return append(b, '}')
}

func appendAddress(b []byte, a *schemas.Address) []byte {
	b = append(b, `{"Name":`...)
	b = appendString(b, a.Name)
	b = append(b, `,"Address":`...)
	b = appendString(b, a.Address)
	return append(b, '}')
}

func appendAddresses(b []byte, as []schemas.Address) []byte {
	if as == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i := range as {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendAddress(b, &as[i])
	}
	return append(b, ']')
}

func appendStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

// appendTime is a *time.Time as encoding/json writes it: null, or its MarshalJSON (which
// refuses a year outside 0–9999).
func appendTime(b []byte, t *time.Time) ([]byte, error) {
	if t == nil {
		return append(b, "null"...), nil
	}
	j, err := t.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("json: error calling MarshalJSON for type *time.Time: %w", err)
	}
	return append(b, j...), nil
}

// appendString is encoding/json's string encoding, HTML escaping included: quotes,
// backslashes and control characters escaped, <, > and & as \u003c and so on, invalid
// UTF-8 as \ufffd, and U+2028 and U+2029 escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if jsonSafe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// jsonSafe is the ASCII that appendString writes as it is.
var jsonSafe = func() (safe [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		switch c {
		case '"', '\\', '<', '>', '&':
		default:
			safe[c] = true
		}
	}
	return safe
}()
