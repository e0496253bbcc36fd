// Package client is a small client of mailbus's control plane over NATS: the requests of
// the mailbus CLI, typed. Every call takes a context; without a deadline a call waits at
// most DefaultTimeout (a connection check and an apply longer).
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/connlog"
	"github.com/mailbus/mailbus/schemas"
)

// DefaultTimeout bounds a request whose context has no deadline.
const DefaultTimeout = 15 * time.Second

// Longer bounds for the requests that do more: a check waits for the mail server, an apply
// writes thousands of definitions.
const (
	testTimeout  = 75 * time.Second
	applyTimeout = 3 * time.Minute
)

// Client sends control requests on <prefix>.control.<entity>.<op>.
type Client struct {
	nc    *nats.Conn
	names bus.Names
}

// New returns a client of the mailbus whose subjects start with prefix ("mail"). The
// caller keeps nc and closes it.
func New(nc *nats.Conn, prefix string) *Client {
	return &Client{nc: nc, names: bus.Names{Prefix: prefix}}
}

// ErrNoService is returned when no mailbus answers on the control subjects.
var ErrNoService = errors.New("no mailbus answers on the control subjects: is it running, with the same MAILBUS_NATS_URL and MAILBUS_SUBJECT_PREFIX?")

// Do sends req (marshalled to JSON) to entity.op and returns the reply. A refusal is
// returned as the reply's *schemas.Error; a reply with ok false but no refusal (a failed
// connection check) is returned as it is.
func (c *Client) Do(ctx context.Context, entity, op string, req any, timeout time.Duration) (*schemas.Reply, error) {
	if _, ok := ctx.Deadline(); !ok {
		if timeout == 0 {
			timeout = DefaultTimeout
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	data, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	subject := c.names.ControlPrefix() + "." + entity + "." + op
	msg, err := c.nc.RequestWithContext(ctx, subject, data)
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, ErrNoService
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", subject, err)
	}
	var r schemas.Reply
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		return nil, fmt.Errorf("%s: reply is not JSON: %w", subject, err)
	}
	if !r.OK && r.Error != nil && len(r.Stages) == 0 {
		return &r, r.Error
	}
	return &r, nil
}

// Connections lists every connection, secrets redacted.
func (c *Client) Connections(ctx context.Context) ([]schemas.Connection, error) {
	var all []schemas.Connection
	err := c.list(ctx, "connection", schemas.ListRequest{}, func(r *schemas.Reply) { all = append(all, r.Connections...) })
	return all, err
}

// PageSize is how many definitions the client asks for in one page of a list; the
// service sends fewer when they would not fit in one NATS message.
const PageSize = 1000

// list reads a whole list page by page, handing each reply to add; each page waits at
// most DefaultTimeout when ctx has no deadline. A service from before
// paging refuses limit as an unknown field: then the list is asked for in one piece.
func (c *Client) list(ctx context.Context, entity string, req schemas.ListRequest, add func(*schemas.Reply)) error {
	req.Limit = PageSize
	for {
		r, err := c.Do(ctx, entity, "list", req, 0)
		var e *schemas.Error
		if req.After == "" && errors.As(err, &e) && e.Code == schemas.CodeInvalid && e.Field == "limit" && strings.Contains(e.Message, "unknown") {
			req.Limit = 0
			r, err = c.Do(ctx, entity, "list", req, 0)
		}
		if err != nil {
			return err
		}
		add(r)
		if r.Next == "" {
			return nil
		}
		if r.Next <= req.After {
			return fmt.Errorf("%s.list: the page after %q did not move on (next %q)", entity, req.After, r.Next)
		}
		req.After = r.Next
	}
}

// Connection reads one connection, secrets redacted.
func (c *Client) Connection(ctx context.Context, name string) (*schemas.Connection, error) {
	r, err := c.Do(ctx, "connection", "get", schemas.NameRequest{Name: name}, 0)
	if err != nil {
		return nil, err
	}
	return r.Connection, nil
}

// Routes lists every route.
func (c *Client) Routes(ctx context.Context) ([]schemas.Route, error) {
	var all []schemas.Route
	err := c.list(ctx, "route", schemas.ListRequest{}, func(r *schemas.Reply) { all = append(all, r.Routes...) })
	return all, err
}

// Route reads one route.
func (c *Client) Route(ctx context.Context, name string) (*schemas.Route, error) {
	r, err := c.Do(ctx, "route", "get", schemas.NameRequest{Name: name}, 0)
	if err != nil {
		return nil, err
	}
	return r.Route, nil
}

// Status reads one route's status.
func (c *Client) Status(ctx context.Context, route string) (*schemas.RouteStatus, error) {
	r, err := c.Do(ctx, "route", "status", schemas.NameRequest{Name: route}, 0)
	if err != nil {
		return nil, err
	}
	if r.Status != nil && r.Status.Route == "" {
		r.Status.Route = route
	}
	return r.Status, nil
}

// Statuses reads the status of every route.
func (c *Client) Statuses(ctx context.Context) ([]schemas.RouteStatus, error) {
	var all []schemas.RouteStatus
	err := c.list(ctx, "route", schemas.ListRequest{Status: true}, func(r *schemas.Reply) { all = append(all, r.Statuses...) })
	return all, err
}

// Test runs the staged check of a saved connection. The reply's OK says whether it
// passed; its Stages say how far it got.
func (c *Client) Test(ctx context.Context, name string) (*schemas.Reply, error) {
	return c.Do(ctx, "connection", "test", schemas.NameRequest{Name: name}, testTimeout)
}

// Log reads a connection's log as text lines, since since (all that is kept when nil).
func (c *Client) Log(ctx context.Context, name string, since *time.Time) (string, error) {
	r, err := c.Do(ctx, "connection", "log", schemas.LogRequest{
		Name: name, Since: since, Limit: connlog.MaxLimit, Format: "text",
	}, 0)
	if err != nil {
		return "", err
	}
	return r.Text, nil
}

// DeleteConnection deletes a connection no route uses.
func (c *Client) DeleteConnection(ctx context.Context, name string) error {
	_, err := c.Do(ctx, "connection", "delete", schemas.NameRequest{Name: name}, 0)
	return err
}

// DeleteRoute deletes a route.
func (c *Client) DeleteRoute(ctx context.Context, name string) error {
	_, err := c.Do(ctx, "route", "delete", schemas.NameRequest{Name: name}, 0)
	return err
}
