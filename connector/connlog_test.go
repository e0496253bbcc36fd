package connector_test

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/connlog"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/schemas"
)

// connLogJS starts an embedded NATS server with mailbus's streams.
func connLogJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	return testkit.StartStorage(t).JS
}

// writeEveryEvent writes one entry of every kind a route worker writes, the login error
// carrying the password as a careless server might echo it.
func writeEveryEvent(l *connlog.Log, c *schemas.Connection) {
	for _, e := range []schemas.LogEntry{
		{Event: connlog.EventConnect, Message: "connected to imap.example.com:993 (encryption ssl)"},
		{Event: connlog.EventLogin, Message: "logged in as bot@example.com (auth basic)"},
		{Event: connlog.EventPoll, Message: pollMessage(2)},
		{Event: connlog.EventPublished, Message: `UID 42 <abc@example.org> "Заявка #42" (5678 bytes) published as support_imap/INBOX/1700000000/42 on bus 0`},
		{Event: connlog.EventAction, Message: "markRead: 1 messages (UIDs 42)"},
		{Level: connlog.LevelError, Event: connlog.EventLogin, Message: fmt.Sprintf("login with %s refused", c.Password)},
		{Level: connlog.LevelWarn, Event: connlog.EventState, Message: "retry in 1s: login refused"},
		{Level: connlog.LevelWarn, Event: connlog.EventUIDValidity, Message: "UIDVALIDITY changed from 1700000000 to 1700000001"},
		{Level: connlog.LevelWarn, Event: connlog.EventError, Message: "UID 43 cannot become an event"},
	} {
		e.Route = "r"
		l.Write(c, e)
	}
}

func pollMessage(n int) string {
	return fmt.Sprintf("INBOX: %d found, %d published, 0 dead-lettered", n, n)
}

func writePoll(l *connlog.Log, c *schemas.Connection, n int) {
	l.Write(c, schemas.LogEntry{Route: "r", Event: connlog.EventPoll, Message: pollMessage(n)})
}

func readConnLog(t *testing.T, js jetstream.JetStream, req schemas.LogRequest) *schemas.Reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := connlog.Read(ctx, js, bus.Names{Prefix: "mail"}, req)
	if err != nil {
		t.Fatalf("connlog.Read() = %v", err)
	}
	assertNoCheckSecret(t, r, checkPassword)
	return r
}

func flushConnLog(t *testing.T, l *connlog.Log) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Flush(ctx); err != nil {
		t.Fatalf("Flush() = %v", err)
	}
}

func logEvents(entries []schemas.LogEntry) string {
	var l []string
	for _, e := range entries {
		l = append(l, e.Event)
	}
	return strings.Join(l, " ")
}

func TestConnLogLevels(t *testing.T) {
	js := connLogJS(t)
	l := connlog.New(js, bus.Names{Prefix: "mail"}, slog.New(slog.DiscardHandler))
	for _, tc := range []struct {
		level string
		want  string
	}{
		{schemas.LogFull, "connect login poll published action login state uidvalidity error"},
		{schemas.LogErrors, "login state uidvalidity error"},
		{schemas.LogOff, ""},
	} {
		t.Run(tc.level, func(t *testing.T) {
			c := &schemas.Connection{Name: "c_" + tc.level, Password: checkPassword, LogLevel: tc.level, Encryption: "ssl"}
			writeEveryEvent(l, c)
			flushConnLog(t, l)
			r := readConnLog(t, js, schemas.LogRequest{Name: c.Name})
			if !r.OK {
				t.Fatalf("OK = false, Error = %v", r.Error)
			}
			if got := logEvents(r.Entries); got != tc.want {
				t.Errorf("events = %q, want %q", got, tc.want)
			}
			for _, e := range r.Entries {
				if e.Route != "r" || e.Time.IsZero() || e.Level == "" || e.Message == "" {
					t.Errorf("entry %+v, want route, time, level and message", e)
				}
				if e.Event == connlog.EventLogin && e.Level == connlog.LevelError && !strings.Contains(e.Message, "[redacted]") {
					t.Errorf("login error %q, want the password redacted", e.Message)
				}
			}
		})
	}
}

// TestConnLogLevelChange: the level is read at each write, so a change applies at once.
func TestConnLogLevelChange(t *testing.T) {
	js := connLogJS(t)
	l := connlog.New(js, bus.Names{Prefix: "mail"}, slog.New(slog.DiscardHandler))
	c := &schemas.Connection{Name: "c", LogLevel: schemas.LogOff}
	l.Write(c, schemas.LogEntry{Route: "r", Event: connlog.EventLogin, Message: "logged in"})
	c.LogLevel = schemas.LogFull
	writePoll(l, c, 0)
	c.LogLevel = schemas.LogErrors
	writePoll(l, c, 0)
	l.Write(c, schemas.LogEntry{Level: connlog.LevelError, Route: "r", Event: connlog.EventPoll, Message: "connection reset"})
	flushConnLog(t, l)
	r := readConnLog(t, js, schemas.LogRequest{Name: "c"})
	if got, want := logEvents(r.Entries), "poll poll"; got != want {
		t.Errorf("events = %q, want %q", got, want)
	}
	if n := len(r.Entries); n == 2 && r.Entries[1].Level != connlog.LevelError {
		t.Errorf("last entry %+v, want the error", r.Entries[1])
	}
}

func TestConnLogRead(t *testing.T) {
	js := connLogJS(t)
	l := connlog.New(js, bus.Names{Prefix: "mail"}, slog.New(slog.DiscardHandler))
	c := &schemas.Connection{Name: "support_imap", Password: checkPassword, LogLevel: schemas.LogFull}
	other := &schemas.Connection{Name: "other", LogLevel: schemas.LogFull}
	for i := range 20 {
		writePoll(l, c, i)
		writePoll(l, other, 100)
	}
	flushConnLog(t, l)
	time.Sleep(10 * time.Millisecond)
	since := time.Now()
	time.Sleep(10 * time.Millisecond)
	l.Write(c, schemas.LogEntry{Level: connlog.LevelError, Route: "r", Event: connlog.EventPoll,
		Message: fmt.Sprintf("read INBOX: connection reset\nby peer (password %s)", checkPassword)})
	writePoll(l, c, 7)
	flushConnLog(t, l)

	t.Run("all", func(t *testing.T) {
		r := readConnLog(t, js, schemas.LogRequest{Name: c.Name})
		if len(r.Entries) != 22 {
			t.Fatalf("%d entries, want 22 (no entries of other)", len(r.Entries))
		}
		for i := 1; i < len(r.Entries); i++ {
			if r.Entries[i].Time.Before(r.Entries[i-1].Time) {
				t.Errorf("entry %d older than entry %d: want newest last", i, i-1)
			}
		}
	})
	t.Run("limit keeps the newest", func(t *testing.T) {
		r := readConnLog(t, js, schemas.LogRequest{Name: c.Name, Limit: 4})
		want := []string{pollMessage(18), pollMessage(19)}
		if len(r.Entries) != 4 || r.Entries[0].Message != want[0] || r.Entries[1].Message != want[1] || r.Entries[3].Event != "poll" {
			t.Errorf("entries = %+v, want the last 4", r.Entries)
		}
	})
	t.Run("since", func(t *testing.T) {
		r := readConnLog(t, js, schemas.LogRequest{Name: c.Name, Since: &since})
		if got, want := logEvents(r.Entries), "poll poll"; got != want || r.Entries[0].Level != connlog.LevelError {
			t.Errorf("entries = %+v, want the error and the poll after since", r.Entries)
		}
		future := time.Now().Add(time.Hour)
		if r := readConnLog(t, js, schemas.LogRequest{Name: c.Name, Since: &future}); !r.OK || len(r.Entries) != 0 {
			t.Errorf("since the future: %+v, want ok and no entries", r)
		}
	})
	t.Run("text", func(t *testing.T) {
		r := readConnLog(t, js, schemas.LogRequest{Name: c.Name, Since: &since, Format: "text"})
		line := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (info|warn|error) route=r [a-z]+: [^\n]+$`)
		lines := strings.Split(strings.TrimSuffix(r.Text, "\n"), "\n")
		if len(lines) != 2 || len(r.Entries) != 0 {
			t.Fatalf("Text = %q, Entries = %d, want 2 lines and no entries", r.Text, len(r.Entries))
		}
		for _, l := range lines {
			if !line.MatchString(l) {
				t.Errorf("line %q, want time level route=r event: message", l)
			}
		}
		if !strings.Contains(lines[0], " error route=r poll: read INBOX: connection reset by peer (password [redacted])") {
			t.Errorf("line %q, want the error on one line with the password redacted", lines[0])
		}
	})
	t.Run("unknown connection", func(t *testing.T) {
		if r := readConnLog(t, js, schemas.LogRequest{Name: "nobody"}); !r.OK || len(r.Entries) != 0 {
			t.Errorf("reply %+v, want ok and no entries", r)
		}
	})
	t.Run("bad requests", func(t *testing.T) {
		for _, tc := range []struct {
			req   schemas.LogRequest
			field string
		}{
			{schemas.LogRequest{Name: "c", Limit: 10001}, "limit"},
			{schemas.LogRequest{Name: "c", Limit: -1}, "limit"},
			{schemas.LogRequest{Name: "c.>"}, "name"},
			{schemas.LogRequest{Name: ""}, "name"},
			{schemas.LogRequest{Name: "c", Format: "xml"}, "format"},
		} {
			r := readConnLog(t, js, tc.req)
			if r.OK || r.Error == nil || r.Error.Code != schemas.CodeInvalid || r.Error.Field != tc.field {
				t.Errorf("%+v: reply %+v, want invalid %s", tc.req, r, tc.field)
			}
		}
	})
}

// TestConnLogNil: a worker without a log (nil) can call the helpers all the same.
func TestConnLogNil(t *testing.T) {
	var l *connlog.Log
	writeEveryEvent(l, &schemas.Connection{Name: "c", LogLevel: schemas.LogFull})
	if err := l.Flush(context.Background()); err != nil {
		t.Errorf("Flush() = %v", err)
	}
}
