package mapping

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net/mail"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/charset"
	"github.com/mailbus/mailbus/schemas"
)

// checkFastDate fails when fastDate accepts v and parseDate, the full reading, gives
// anything else for it.
func checkFastDate(t *testing.T, v string) {
	t.Helper()
	got, ok := fastDate(v)
	if !ok {
		return
	}
	want, note, wok := parseDate(v)
	if !wok || note != "" || want.UTC().Year() < 1 || want.UTC().Year() > 9999 || !want.UTC().Equal(got) || got.Location() != time.UTC {
		t.Errorf("fastDate(%q) = %v; parseDate = %v, %q, %v", v, got, want, note, wok)
	}
}

func TestFastDate(t *testing.T) {
	accepted := 0
	for _, v := range DateForms {
		checkFastDate(t, v)
		if _, ok := fastDate(v); ok {
			accepted++
		}
	}
	// Random values of the form, in and out of range.
	rnd := rand.New(rand.NewPCG(1, 2))
	days := []string{"Mon", "tue", "WED", "Thu", "Fri", "Sat", "Sun", "Xyz", "Mo"}
	months := []string{"Jan", "feb", "MAR", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec", "Foo", "Sept"}
	for range 20000 {
		v := fmt.Sprintf("%s, %d %s %04d %02d:%02d:%02d %c%02d%02d", days[rnd.IntN(len(days))], rnd.IntN(33),
			months[rnd.IntN(len(months))], rnd.IntN(10001), rnd.IntN(26), rnd.IntN(62), rnd.IntN(62),
			"+-"[rnd.IntN(2)], rnd.IntN(26), rnd.IntN(62))
		if rnd.IntN(4) == 0 {
			v += " (" + months[rnd.IntN(len(months))] + ")"
		}
		checkFastDate(t, v)
		if _, ok := fastDate(v); ok {
			accepted++
		}
	}
	if accepted < 1000 {
		t.Errorf("fastDate accepted only %d values: the test no longer tests it", accepted)
	}
	for _, v := range []string{"Thu, 5 Nov 2026 03:22:30 +0000", "Thu, 05 Nov 2026 03:22:30 -0700 (PDT)"} {
		if _, ok := fastDate(v); !ok {
			t.Errorf("fastDate(%q) not accepted", v)
		}
	}
}

func FuzzFastDate(f *testing.F) {
	for _, v := range DateForms {
		f.Add(v)
	}
	f.Fuzz(checkFastDate)
}

// addressDecoders are the RFC 2047 decoders the address lists are compared with: the
// mapper's kind (any charset, an unknown one kept raw) and one without a CharsetReader,
// which fails words in other charsets than UTF-8, US-ASCII and ISO-8859-1.
var addressDecoders = []*mime.WordDecoder{
	{CharsetReader: func(label string, in io.Reader) (io.Reader, error) {
		if r, err := charset.Reader(label, in); err == nil {
			return r, nil
		}
		return in, nil
	}},
	{},
}

// checkFastAddressList fails when fastAddressList accepts s and net/mail gives anything
// else for it, or when it refuses s and changes out.
func checkFastAddressList(t *testing.T, s string) (accepted bool) {
	t.Helper()
	for _, dec := range addressDecoders {
		prefix := []schemas.Address{{Name: "kept", Address: "kept@example.com"}}
		got, ok := fastAddressList(s, dec, prefix)
		if len(got) == 0 || got[0] != prefix[0] {
			t.Fatalf("fastAddressList(%q) lost what out held: %v", s, got)
		}
		if !ok {
			if len(got) != 1 {
				t.Errorf("fastAddressList(%q) refused the list but appended %v", s, got[1:])
			}
			continue
		}
		accepted = true
		want, err := (&mail.AddressParser{WordDecoder: dec}).ParseList(s)
		if err != nil {
			t.Errorf("fastAddressList(%q) = %v; net/mail: %v", s, got[1:], err)
			continue
		}
		if len(want) != len(got)-1 {
			t.Errorf("fastAddressList(%q) = %v; net/mail: %v", s, got[1:], want)
			continue
		}
		for i, a := range want {
			if got[i+1].Name != a.Name || got[i+1].Address != a.Address {
				t.Errorf("fastAddressList(%q)[%d] = %+v; net/mail: %+v", s, i, got[i+1], *a)
			}
		}
	}
	return accepted
}

func TestFastAddressList(t *testing.T) {
	accepted := 0
	for _, s := range AddressForms {
		if checkFastAddressList(t, s) {
			accepted++
		}
	}
	if accepted < 20 {
		t.Errorf("fastAddressList accepted %d of the forms, want most of the plain ones", accepted)
	}
	for _, s := range []string{"a@b", "Ana =?utf-8?q?Garc=C3=ADa?= <a@b>, b@c", `"Doe, John" <john@example.com>`} {
		if !checkFastAddressList(t, s) {
			t.Errorf("fastAddressList(%q) not accepted", s)
		}
	}
	// Lists made of pieces, plain and not.
	names := []string{"", "Alice", "Alice Example", "Alice  Example", "Alice\tB", "J. R.", ".x.", "Zoë",
		"=?utf-8?q?Zo=C3=AB?=", "=?utf-8?b?0JjQstCw0L0=?=", "Ana =?utf-8?q?Garc=C3=ADa?=", "=?utf-8?q?a?= =?utf-8?q?b?=",
		"=?utf-8?q?a?= x =?utf-8?q?b?=", "=?utf-8?q??=", "x =?utf-8?q??= y", "=?iso-8859-1?q?J=F6rg?=", "=?koi8-r?b?6dfBzg==?=",
		"=?x-none?q?a?=", "=?utf-8?q?bad", "=?utf-8?b?!?=", "=?utf-8?Q?a?b?=", "\"Q\"", "a(b)", "a@b", "a,b", "a:b", "a;b", "a[b]", "a\\b",
		`"Doe, John"`, `"a\"b"`, `"a\\b"`, `""`, `"" Bob`, `Bob ""`, `"=?utf-8?q?Zo=C3=AB?="`, `=?utf-8?q?a?= "q" =?utf-8?q?b?=`, `"unclosed`,
		"\"tab\there\"", "\"ctl\x01\"", "\"esc\\\x01\"", `"Zoë \"Z\""`, `"\Zoë"`, `"x"y`, `x"y"`, `"a"."b"`, `"a@b"`, `"<a@b>"`, `"trailing\`}
	addrs := []string{"a@b", "alice@example.com", "a.b@c.d", ".a@b", "a.@b", "a..b@c", "a@b.", "a@.b", "a@", "@b", "a",
		"zoë@例え.jp", "x+y@z", "a@[1.2.3.4]", "\"a b\"@c", "a @b", "a@ b", "a@b@c", "a<b@c", "a>b@c"}
	forms := []string{"%s <%s>", "%s<%s>", "%s  <%s>", "%s < %s>", "%s <%s >", "%[2]s", " %[2]s ", "%[2]s (%[1]s)", "%s %s", "%s <%s>>", "<%[2]s>", "%s <%s"}
	seps := []string{", ", ",", " , ", ",,", ", ,", " ", "; "}
	rnd := rand.New(rand.NewPCG(3, 4))
	item := func() string {
		return fmt.Sprintf(forms[rnd.IntN(len(forms))], names[rnd.IntN(len(names))], addrs[rnd.IntN(len(addrs))])
	}
	accepted = 0
	for range 30000 {
		s := item()
		for range rnd.IntN(4) {
			s += seps[rnd.IntN(len(seps))] + item()
		}
		if rnd.IntN(8) == 0 {
			s = seps[rnd.IntN(len(seps))] + s + seps[rnd.IntN(len(seps))]
		}
		if checkFastAddressList(t, s) {
			accepted++
		}
	}
	if accepted < 500 {
		t.Errorf("fastAddressList accepted %d of the generated lists: the test no longer tests it", accepted)
	}
}

func FuzzFastAddressList(f *testing.F) {
	for _, s := range AddressForms {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkFastAddressList(t, s) })
}

// TestGetBufioOwnReader: a pooled reader is put back when its part is done, so it must
// never be the reader it reads from, which lives on (a quoted-printable body read from the
// message's own reader). bufio.NewReaderSize returned its source when that was a
// *bufio.Reader already, and with the pool empty the message's reader went into the pool
// while the message was still read from it.
func TestGetBufioOwnReader(t *testing.T) {
	for range 3 {
		runtime.GC() // empties the pool (twice: its victim cache too)
		runtime.GC()
		src := bufio.NewReader(strings.NewReader("a body"))
		br := getBufio(src)
		if br == src {
			t.Fatal("getBufio(r) returned r itself")
		}
		if b, _ := io.ReadAll(br); string(b) != "a body" {
			t.Fatalf("read %q through getBufio", b)
		}
		putBufio(br)
	}
}
