package imap

import (
	"slices"
	"testing"
)

// TestBatchLenEndsShort: a cycle's batches take every candidate once, none more than
// maxFetchBatch; a cycle of 2*fetchBatch candidates or more ends with at most fetchBatch,
// so that the after action nothing overlaps is short, and a shorter one is not split.
func TestBatchLenEndsShort(t *testing.T) {
	for _, c := range []struct{ uids, avgSize int }{
		{1, 0}, {256, 0}, {511, 0}, {511, 1250}, {512, 1250}, {700, 1250}, {2048, 1250},
		{2304, 1250}, {20000, 1250}, {20000, 0}, {5000, 190_000}, {100_000, 10},
	} {
		s := &imapSession{uids: make([]candidate, c.uids), avgSize: c.avgSize}
		var lens []int
		for len(s.uids) > 0 {
			n := s.batchLen()
			if n <= 0 || n > maxFetchBatch {
				t.Fatalf("%d uids, average %d bytes: batch of %d after %v", c.uids, c.avgSize, n, lens)
			}
			lens = append(lens, n)
			s.uids = s.uids[n:]
		}
		if last := lens[len(lens)-1]; c.uids >= 2*fetchBatch && last > fetchBatch {
			t.Errorf("%d uids, average %d bytes: batches %v end with %d, want at most %d", c.uids, c.avgSize, lens, last, fetchBatch)
		}
		if c.avgSize > 0 && c.uids < 2*fetchBatch && !slices.Equal(lens, []int{c.uids}) {
			t.Errorf("%d uids, average %d bytes: batches %v, want one", c.uids, c.avgSize, lens)
		}
	}
}
