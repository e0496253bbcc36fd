package mapping_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"mime"
	"strings"
	"time"
	"unicode/utf8"
)

// benchCorpus returns n messages shaped like those of ../shared/bench/gen_maildir.py, which
// bench/run.sh reads through Dovecot: what Python's email package writes for the same
// choices (RFC 2047 names and subjects, folded address lists, base64 UTF-8 bodies,
// multipart/alternative and mixed with RFC 2231 file names). A port rather than the
// script's output so that the benchmarks and the event hashes need no Python and no files.
//
// profile "small": short text-only messages (about 2 KB); "mixed": text and text+html
// bodies, 35 % with 1-3 attachments of 2 KB to maxAttachment bytes (1.5 MB in the script).
// The script writes lines ending in "\n"; Dovecot sends them over IMAP ending in "\r\n",
// which crlf chooses.
func benchCorpus(profile string, n int, seed uint64, maxAttachment int, crlf bool) [][]byte {
	rnd := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	out := make([][]byte, n)
	for i := range out {
		out[i] = benchMessage(i, rnd, profile, maxAttachment)
		if crlf {
			out[i] = bytes.ReplaceAll(out[i], []byte("\n"), []byte("\r\n"))
		}
	}
	return out
}

var (
	benchNames = []string{"Иван Петров", "Zoë Müller", "John Smith", "李雷", "Ana García", "Service Desk"}
	benchWords = strings.Fields("invoice order payment request заявка счёт договор support ticket update " +
		"shipment delivery report quarterly budget review approval")
)

func pick[T any](rnd *rand.Rand, s []T) T { return s[rnd.IntN(len(s))] }

// between returns a number in [lo, hi], as Python's randint.
func between(rnd *rand.Rand, lo, hi int) int { return lo + rnd.IntN(hi-lo+1) }

// encodeWords writes a phrase as Python does: ASCII words as they are, a run of non-ASCII
// words as one encoded-word, Q when that is shorter, else B.
func encodeWords(s string) string {
	words := strings.Fields(s)
	var out []string
	for i := 0; i < len(words); {
		if isASCII(words[i]) {
			out = append(out, words[i])
			i++
			continue
		}
		j := i + 1
		for j < len(words) && !isASCII(words[j]) {
			j++
		}
		run := strings.Join(words[i:j], " ")
		q, b := mime.QEncoding.Encode("utf-8", run), mime.BEncoding.Encode("utf-8", run)
		if len(q) <= len(b) {
			out = append(out, q)
		} else {
			out = append(out, b)
		}
		i = j
	}
	return strings.Join(out, " ")
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func formatAddr(name, addr string) string { return encodeWords(name) + " <" + addr + ">" }

// fold writes a header field, breaking between items where the line would pass 78 columns.
func fold(b *bytes.Buffer, name string, items []string, sep string) {
	col := len(name) + 1
	b.WriteString(name + ":")
	for i, it := range items {
		if i > 0 {
			b.WriteString(sep)
			col += len(sep)
		}
		if col+1+len(it) > 78 && i > 0 {
			b.WriteString("\n")
			col = 0
		}
		b.WriteString(" " + it)
		col += 1 + len(it)
	}
	b.WriteString("\n")
}

func b64Lines(p []byte) string {
	s := base64.StdEncoding.EncodeToString(p)
	var sb strings.Builder
	sb.Grow(len(s) + len(s)/76 + 1)
	for len(s) > 76 {
		sb.WriteString(s[:76])
		sb.WriteByte('\n')
		s = s[76:]
	}
	sb.WriteString(s)
	sb.WriteByte('\n')
	return sb.String()
}

func benchMessage(i int, rnd *rand.Rand, profile string, maxAttachment int) []byte {
	var b bytes.Buffer
	b.WriteString("From: " + formatAddr(pick(rnd, benchNames), fmt.Sprintf("user%d@example.org", between(rnd, 1, 500))) + "\n")
	var to []string
	for j := range between(rnd, 1, 4) {
		to = append(to, formatAddr(pick(rnd, benchNames), fmt.Sprintf("rcpt%d@example.com", j)))
	}
	fold(&b, "To", to, ",")
	if rnd.Float64() < 0.4 {
		var cc []string
		for j := range between(rnd, 1, 3) {
			cc = append(cc, formatAddr(pick(rnd, benchNames), fmt.Sprintf("cc%d@example.net", j)))
		}
		fold(&b, "Cc", cc, ",")
	}
	var subj []string
	for range between(rnd, 3, 9) {
		subj = append(subj, pick(rnd, benchWords))
	}
	fold(&b, "Subject", strings.Fields(encodeWords(strings.Join(subj, " "))+fmt.Sprintf(" #%d", i)), "")
	fmt.Fprintf(&b, "Message-ID: <179596856321.21364.%d.%d@bench.example>\n", rnd.Uint64(), i)
	date := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC).Add(-time.Duration(rnd.IntN(86400*30)) * time.Second)
	b.WriteString("Date: " + date.Format("Mon, 02 Jan 2006 15:04:05 -0700") + "\n")
	fmt.Fprintf(&b, "X-Ticket-Id: %d\nX-Priority: %d\n", 100000+i, between(rnd, 1, 5))

	lines := between(rnd, 5, 60)
	if profile == "small" {
		lines = between(rnd, 2, 8)
	}
	var body strings.Builder
	for l := range lines {
		if l > 0 {
			body.WriteByte('\n')
		}
		for w := range 12 {
			if w > 0 {
				body.WriteByte(' ')
			}
			body.WriteString(pick(rnd, benchWords))
		}
	}
	text := body.String() + "\n"
	textPart := "Content-Type: text/plain; charset=\"utf-8\"\nContent-Transfer-Encoding: base64\n"
	if profile == "small" {
		b.WriteString(textPart + "MIME-Version: 1.0\n\n" + b64Lines([]byte(text)))
		return b.Bytes()
	}

	boundary := func() string { return fmt.Sprintf("===============%019d==", rnd.Uint64()%1e19) }
	// The body and its alternative, as one entity (header lines, blank line, body).
	entity := textPart + "\n" + b64Lines([]byte(text))
	if rnd.Float64() < 0.5 {
		html := "<html><body><p>" + strings.ReplaceAll(body.String(), "\n", "</p><p>") + "</p></body></html>\n"
		alt := boundary()
		entity = "Content-Type: multipart/alternative;\n boundary=\"" + alt + "\"\n\n" +
			"--" + alt + "\n" + textPart + "\n" + b64Lines([]byte(text)) + "\n" +
			"--" + alt + "\n" + textPart[:len("Content-Type: text/")] + "html" + textPart[len("Content-Type: text/plain"):] +
			"MIME-Version: 1.0\n\n" + b64Lines([]byte(html)) + "\n--" + alt + "--\n"
	}
	if rnd.Float64() >= 0.35 {
		b.WriteString("MIME-Version: 1.0\n" + entity)
		return b.Bytes()
	}
	mixed := boundary()
	b.WriteString("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"" + mixed + "\"\n\n")
	b.WriteString("--" + mixed + "\n" + entity + "\n")
	for a := range between(rnd, 1, 3) {
		size := pick(rnd, []int{2_000, 20_000, 150_000})
		if rnd.Float64() >= 0.9 {
			size = 1_500_000
		}
		size = min(size, maxAttachment)
		name := pick(rnd, []string{"отчёт", "invoice", "scan", "data"}) + fmt.Sprintf("_%d_%d.", i, a) +
			pick(rnd, []string{"pdf", "xlsx", "png", "txt"})
		content := make([]byte, size)
		rand.NewChaCha8([32]byte{byte(i), byte(a)}).Read(content)
		disp := "Content-Disposition: attachment; filename=\"" + name + "\"\n"
		if !isASCII(name) {
			disp = "Content-Disposition: attachment;\n filename*=utf-8''" + percentEncode(name) + "\n"
		}
		b.WriteString("--" + mixed + "\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n" +
			disp + "MIME-Version: 1.0\n\n" + b64Lines(content) + "\n")
	}
	b.WriteString("--" + mixed + "--\n")
	return b.Bytes()
}

func percentEncode(s string) string {
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < utf8.RuneSelf && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, "%%%02X", c)
		}
	}
	return sb.String()
}
