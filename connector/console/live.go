package console

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// keepAlive is how often an idle event stream sends a comment, so proxies keep it open.
const keepAlive = 15 * time.Second

// sse is one server-sent event stream.
type sse struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func startSSE(w http.ResponseWriter) *sse {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	s := &sse{w: w, rc: http.NewResponseController(w)}
	s.rc.Flush()
	return s
}

// send writes one event; data may span lines.
func (s *sse) send(event, data string) error {
	var b strings.Builder
	if event != "" {
		fmt.Fprintf(&b, "event: %s\n", event)
	}
	for _, line := range strings.Split(data, "\n") {
		b.WriteString("data: ")
		b.WriteString(strings.TrimSuffix(line, "\r"))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	if _, err := s.w.Write([]byte(b.String())); err != nil {
		return err
	}
	return s.rc.Flush()
}

func (s *sse) comment() error {
	if _, err := s.w.Write([]byte(": keep-alive\n\n")); err != nil {
		return err
	}
	return s.rc.Flush()
}

// poll sends the rows fragment whenever it changes: the status of the routes (and so the
// connections' summaries) is asked for every LivePeriod, through the control service like
// everything else, so changes made elsewhere (the CLI, another replica) show up too.
func (c *Console) poll(w http.ResponseWriter, r *http.Request, render func(ctx context.Context) (string, error)) {
	ctx := r.Context()
	s := startSSE(w)
	tick := time.NewTicker(c.opts.LivePeriod)
	defer tick.Stop()
	last, lastSent := "", time.Now()
	for {
		out, err := render(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.log.Debug("console: live view", "path", r.URL.Path, "err", err)
		} else if out != last {
			if s.send("rows", out) != nil {
				return
			}
			last, lastSent = out, time.Now()
		} else if time.Since(lastSent) > keepAlive {
			if s.comment() != nil {
				return
			}
			lastSent = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// rowsPage is a page of rows: the connections or the routes.
type rowsPage[R any] struct {
	base
	Rows []R
}

// rowsHandlers returns the handlers of a list page (template name, which is also its tab and
// the path under Base) and of its live rows, both drawn by rows: the live fragment is the
// page's own "rows" template, so both always show the same.
func rowsHandlers[R any](c *Console, name, title string, rows func(context.Context) ([]R, error)) (page, live func(http.ResponseWriter, *http.Request, *session)) {
	page = func(w http.ResponseWriter, r *http.Request, s *session) {
		p := &rowsPage[R]{base: newBase(r, s, name, title)}
		p.Live = Base + "live/" + name
		p.Flash = flash(r, p.Lang)
		var err error
		if p.Rows, err = rows(r.Context()); err != nil {
			c.fail(w, r, http.StatusBadGateway, "err.control", err)
			return
		}
		c.render(w, r, http.StatusOK, name, p)
	}
	live = func(w http.ResponseWriter, r *http.Request, s *session) {
		lang := langOf(r)
		c.poll(w, r, func(ctx context.Context) (string, error) {
			rs, err := rows(ctx)
			if err != nil {
				return "", err
			}
			return c.fragment(name, "rows", &rowsPage[R]{base: base{Lang: lang}, Rows: rs})
		})
	}
	return page, live
}
