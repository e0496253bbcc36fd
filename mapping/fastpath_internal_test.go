package mapping

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
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
	if !wok || note != "" || want.Year() < 1 || want.Year() > 9999 || !want.UTC().Equal(got) || got.Location() != time.UTC {
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
