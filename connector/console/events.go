package console

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/schemas"
)

// recentEvents is how many of a bus's latest events the page shows at first.
const recentEvents = 50

// evRow is the part of an event the page shows; the rest is behind the JSON link.
type evRow struct {
	Bus         int
	Seq         uint64
	At          time.Time
	Route       string
	Subject     string
	From        string
	Attachments []string
}

type eventsPage struct {
	base
	Bus   int
	Buses []int
	After uint64
	Rows  []evRow
}

// lightEvent decodes only what a row needs, skipping bodies and attachment contents.
type lightEvent struct {
	Route       string           `json:"Route"`
	Subject     string           `json:"Subject"`
	From        *schemas.Address `json:"From"`
	Attachments []struct {
		Name string `json:"Name"`
	} `json:"Attachments"`
}

func busOf(r *http.Request) (int, bool) {
	s := r.URL.Query().Get("bus")
	if s == "" {
		return 0, true
	}
	b, err := strconv.Atoi(s)
	return b, err == nil && b >= 0 && b <= 3
}

func (c *Console) streamName(bus int) string {
	return strings.ToUpper(c.prefix) + "_BUS_" + strconv.Itoa(bus)
}

func toRow(bus int, seq uint64, at time.Time, data []byte) evRow {
	row := evRow{Bus: bus, Seq: seq, At: at}
	var ev lightEvent
	if json.Unmarshal(data, &ev) == nil {
		row.Route, row.Subject = ev.Route, ev.Subject
		if ev.From != nil {
			row.From = ev.From.Address
			if ev.From.Name != "" {
				row.From = ev.From.Name + " <" + ev.From.Address + ">"
			}
		}
		for _, a := range ev.Attachments {
			row.Attachments = append(row.Attachments, a.Name)
		}
	}
	return row
}

func (c *Console) eventsPage(w http.ResponseWriter, r *http.Request, s *session) {
	bus, ok := busOf(r)
	if !ok {
		c.fail(w, r, http.StatusBadRequest, "err.notFound", r.URL.Query().Get("bus"))
		return
	}
	p := &eventsPage{base: newBase(r, s, "events", "ev.title"), Bus: bus, Buses: []int{0, 1, 2, 3}}
	rows, last, err := c.recent(r.Context(), bus)
	if err != nil {
		c.fail(w, r, http.StatusBadGateway, "err.control", err.Error())
		return
	}
	p.Rows, p.After = rows, last
	p.Live = Base + "live/events?bus=" + strconv.Itoa(bus) + "&after=" + strconv.FormatUint(last, 10)
	c.render(w, r, http.StatusOK, "events", p)
}

// recent reads the bus's latest events, newest first, and the stream's last sequence.
func (c *Console) recent(ctx context.Context, bus int) ([]evRow, uint64, error) {
	js, err := jetstream.New(c.nc)
	if err != nil {
		return nil, 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	st, err := js.Stream(ctx, c.streamName(bus))
	if err != nil {
		return nil, 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, 0, err
	}
	var rows []evRow
	last := info.State.LastSeq
	for seq := last; seq >= info.State.FirstSeq && seq > 0 && len(rows) < recentEvents; seq-- {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		rows = append(rows, toRow(bus, seq, m.Time, m.Data))
	}
	return rows, last, nil
}

// eventJSON serves one event as stored.
func (c *Console) eventJSON(w http.ResponseWriter, r *http.Request, s *session) {
	bus, ok := busOf(r)
	seq, err := strconv.ParseUint(r.URL.Query().Get("seq"), 10, 64)
	if !ok || err != nil {
		c.fail(w, r, http.StatusBadRequest, "err.notFound", r.URL.RawQuery)
		return
	}
	js, err := jetstream.New(c.nc)
	if err != nil {
		c.fail(w, r, http.StatusBadGateway, "err.control", err.Error())
		return
	}
	st, err := js.Stream(r.Context(), c.streamName(bus))
	if err != nil {
		c.fail(w, r, http.StatusBadGateway, "err.control", err.Error())
		return
	}
	m, err := st.GetMsg(r.Context(), seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		c.fail(w, r, http.StatusNotFound, "err.notFound", r.URL.RawQuery)
		return
	}
	if err != nil {
		c.fail(w, r, http.StatusBadGateway, "err.control", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Disposition", `inline; filename="event-`+strconv.Itoa(bus)+`-`+strconv.FormatUint(seq, 10)+`.json"`)
	w.Write(m.Data)
}

// liveEvents streams a bus's events after the given sequence, as rendered rows.
func (c *Console) liveEvents(w http.ResponseWriter, r *http.Request, s *session) {
	bus, ok := busOf(r)
	if !ok {
		http.Error(w, "bus: want 0..3", http.StatusBadRequest)
		return
	}
	after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
	ctx := r.Context()
	js, err := jetstream.New(c.nc)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	cfg := jetstream.OrderedConsumerConfig{InactiveThreshold: 30 * time.Second, DeliverPolicy: jetstream.DeliverNewPolicy}
	if after > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, after+1
	}
	cons, err := js.OrderedConsumer(ctx, c.streamName(bus), cfg)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	lang := langOf(r)
	out := startSSE(w)
	for ctx.Err() == nil {
		// A short wait, so a closed page or a shutdown ends the loop soon.
		batch, err := cons.Fetch(20, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			time.Sleep(time.Second)
			continue
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			html, err := c.fragment("events", "row", &evRowData{Lang: lang, evRow: toRow(bus, md.Sequence.Stream, md.Timestamp, m.Data())})
			if err != nil {
				c.log.Error("console: render", "err", err)
				return
			}
			if out.send("event", html) != nil {
				return
			}
		}
		if n == 0 && out.comment() != nil {
			return
		}
	}
}

type evRowData struct {
	Lang string
	evRow
}
