package imap

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-message/textproto"

	"github.com/mailbus/mailbus/connector/connlog"
	"github.com/mailbus/mailbus/connector/filter"
	"github.com/mailbus/mailbus/schemas"
)

// headerBatch is how many headers one FETCH of the local filter check asks for.
const headerBatch = 1000

// imapFilterState is what a session knows about its route's filter between cycles.
type imapFilterState struct {
	// asciiOnly: the server refused SEARCH CHARSET UTF-8 (BADCHARSET), so conditions with
	// other than ASCII are checked on the header by mailbus.
	asciiOnly bool
	// top and passed are the last filter's: the highest UID it looked at and how many
	// messages it passed over, for pass once the cycle's batches are done.
	top    imap.UID
	passed int
}

// filter narrows uids (what the route selects above the checkpoint, in order) to the
// messages its filter matches: one UID SEARCH with the filter's criteria over the same UID
// range, then, for what the server could not express, a FETCH of the header alone. The
// bodies of the messages passed over are never fetched.
func (s *imapSession) filter(ctx context.Context, uids []imap.UID) ([]imap.UID, error) {
	s.flt.top, s.flt.passed = 0, 0
	f := s.w.filter
	if f == nil || len(uids) == 0 {
		return uids, nil
	}
	top := uids[len(uids)-1]
	matched := uids
	for {
		asciiOnly := s.flt.asciiOnly
		remote, local := f.Split(func(c filter.Condition) bool { return !asciiOnly || c.ASCII() })
		var err error
		if len(remote) > 0 {
			matched, err = s.searchFilter(ctx, uids, remote)
		}
		var ierr *imap.Error
		if errors.As(err, &ierr) && ierr.Code == imap.ResponseCodeBadCharset && !asciiOnly {
			s.flt.asciiOnly = true
			s.w.connLog(slog.LevelInfo, connlog.EventPoll, "the server cannot search in UTF-8: conditions with other than ASCII are checked on the header by mailbus")
			continue
		}
		if err != nil {
			return nil, err
		}
		if local != nil && len(matched) > 0 {
			if matched, err = s.checkHeaders(ctx, matched, local); err != nil {
				return nil, err
			}
		}
		break
	}
	s.flt.top, s.flt.passed = top, len(uids)-len(matched)
	if s.flt.passed > 0 {
		s.w.connLog(slog.LevelDebug, connlog.EventPoll, fmt.Sprintf("filter: %d of %d messages match", len(matched), len(uids)))
	}
	return matched, nil
}

// searchFilter is the UID SEARCH of the conditions remote over the range of uids; the
// result is kept to uids, since mail may have arrived (or changed flags) since uids.
func (s *imapSession) searchFilter(ctx context.Context, uids []imap.UID, remote []filter.Condition) ([]imap.UID, error) {
	crit := imapCriteria(remote)
	crit.UID = []imap.UIDSet{{{Start: uids[0], Stop: uids[len(uids)-1]}}}
	var data *imap.SearchData
	err := Within(ctx, CommandTimeout, s.c, func() (err error) {
		data, err = s.c.UIDSearch(&crit, nil).Wait()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("uid search (filter): %w", err)
	}
	hits := data.AllUIDs()
	slices.Sort(hits)
	return slices.DeleteFunc(slices.Clone(uids), func(u imap.UID) bool {
		_, found := slices.BinarySearch(hits, u)
		return !found
	}), nil
}

// imapCriteria turns conditions into SEARCH keys. FROM, TO, CC and SUBJECT are the
// header keys of those names (go-imap writes them so); sizes are exclusive in IMAP
// (LARGER n: more than n bytes), inclusive in a filter.
func imapCriteria(conds []filter.Condition) imap.SearchCriteria {
	var crit imap.SearchCriteria
	for _, c := range conds {
		switch c.Kind {
		case filter.Header:
			crit.Header = append(crit.Header, imap.SearchCriteriaHeaderField{Key: c.Name, Value: c.Value})
		case filter.Since:
			crit.Since = c.Date
		case filter.Before:
			crit.Before = c.Date
		case filter.MinSize:
			crit.Larger = c.Size - 1
		case filter.MaxSize:
			crit.Smaller = c.Size + 1
		}
	}
	return crit
}

// checkHeaders fetches the header, size and INTERNALDATE of uids (never the body) and
// keeps those that meet local.
func (s *imapSession) checkHeaders(ctx context.Context, uids []imap.UID, local *filter.Filter) ([]imap.UID, error) {
	var out []imap.UID
	section := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, Peek: true}
	for chunk := range slices.Chunk(uids, headerBatch) {
		var msgs []*imapclient.FetchMessageBuffer
		err := Within(ctx, CommandTimeout, s.c, func() (err error) {
			msgs, err = s.c.Fetch(imap.UIDSetNum(chunk...), &imap.FetchOptions{
				UID: true, RFC822Size: true, InternalDate: true,
				BodySection: []*imap.FetchItemBodySection{section},
			}).Collect()
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("uid fetch header (filter): %w", err)
		}
		for _, m := range msgs {
			if m.UID == 0 {
				continue
			}
			facts := &filter.Facts{Size: m.RFC822Size, Received: m.InternalDate}
			hdr, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(m.FindBodySection(section))))
			if err != nil {
				// The mapping will name what is wrong: a broken header goes to the dead
				// letters rather than vanishing in a filter.
				out = append(out, m.UID)
				continue
			}
			for fields := hdr.Fields(); fields.Next(); {
				facts.Add(fields.Key(), fields.Value())
			}
			if local.Match(facts) {
				out = append(out, m.UID)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// pass moves the checkpoint past the messages the cycle's filter passed over, once every
// message it matched is done: they are left untouched, and counted.
func (s *imapSession) pass(ctx context.Context) error {
	top, n := s.flt.top, s.flt.passed
	s.flt.top, s.flt.passed = 0, 0
	if top == 0 {
		return nil
	}
	if uint32(top) > s.cp.LastUid {
		s.cp.LastUid = uint32(top)
		if err := s.w.cps.Save(ctx, s.cp); err != nil {
			return err
		}
	}
	s.w.status(func(st *schemas.RouteStatus) {
		st.LastUid = s.cp.LastUid
		st.Filtered += uint64(n)
	})
	return nil
}
