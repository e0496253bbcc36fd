package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/connlog"
	"github.com/mailbus/mailbus/connector/oauth2"
	"github.com/mailbus/mailbus/connector/secrets"
	"github.com/mailbus/mailbus/connector/store"
	"github.com/mailbus/mailbus/connector/validate"
	"github.com/mailbus/mailbus/schemas"
)

// ServiceName is the name of the control service ($SRV.PING.mailbus, nats micro ls).
const ServiceName = "mailbus"

// requestTimeout bounds the work of one control request, so a stuck KV read cannot hold
// the endpoint (whose requests are handled one at a time) for long.
const requestTimeout = 10 * time.Second

// errorHeaderCodes are the Nats-Service-Error-Code values of each error code: HTTP status
// numbers, as nats micro tools expect; the JSON body carries the named code.
var errorHeaderCodes = map[string]string{
	schemas.CodeInvalid:     "400",
	schemas.CodeNotFound:    "404",
	schemas.CodeConflict:    "409",
	schemas.CodeUnavailable: "503",
	schemas.CodeInternal:    "500",
}

// Check checks conn against its server for connection.test: it connects, logs in, selects
// each of mailboxes, and says what failed in the reply. ts gets the OAuth2 tokens of an
// oauth2 connection (nil for the others). The wiring supplies it: the check speaks IMAP or
// EWS, which the control service does not know.
type Check func(ctx context.Context, conn schemas.Connection, mailboxes []string, ts *oauth2.Source) (*schemas.Reply, error)

// StatusReader reads how the routes' workers are doing, for route.status and route.list.
type StatusReader interface {
	// Local returns the status of the route's worker on this replica; false when the route
	// does not run here.
	Local(route string) (schemas.RouteStatus, bool)
	// Remote returns the status that the replica holding the route's lease last wrote
	// (at most a lease renewal old), with that replica as Owner; false when no replica
	// holds it.
	Remote(ctx context.Context, route string) (schemas.RouteStatus, bool)
}

// Config is what the control service works with.
type Config struct {
	Names    bus.Names
	Version  string // the build's version, shown by $SRV.INFO
	Instance string // this replica, in the service's metadata
	Store    *store.Store
	Sealer   *secrets.Sealer
	// JS reads the connection logs.
	JS jetstream.JetStream
	// State holds the route checkpoints, removed with their route; nil: none to remove.
	State jetstream.KeyValue
	// Check runs connection.test; nil answers that checks are unavailable.
	Check Check
	// Status reads route statuses; nil: a route's status says only disabled or stopped.
	Status StatusReader
	Logger *slog.Logger
}

// control answers the control commands on <prefix>.control.<entity>.<op>.
type control struct {
	Config
	// nc answers the requests; a list reply stays within its server's max payload.
	nc *nats.Conn
}

// handler serves one command: the request body in, the reply out (OK is set by the caller)
// or an error, a *schemas.Error for a refusal.
type handler func(ctx context.Context, data []byte) (*schemas.Reply, error)

// Start adds the control service to nc. ctx is the parent of every request's context.
// Stop the returned service before draining nc.
func Start(ctx context.Context, nc *nats.Conn, cfg Config) (micro.Service, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &control{Config: cfg, nc: nc}
	svc, err := micro.AddService(nc, micro.Config{
		Name:        ServiceName,
		Version:     serviceVersion(cfg.Version),
		Description: "mailbus control plane: connections and routes",
		Metadata:    map[string]string{"instance": cfg.Instance, "build": cfg.Version},
		ErrorHandler: func(_ micro.Service, e *micro.NATSError) {
			c.Logger.Error("control service", "subject", e.Subject, "err", e.Description)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("control service: %w", err)
	}
	endpoints := []struct {
		entity, op string
		h          handler
		timeout    time.Duration
		parallel   int // requests handled at once (0: one at a time, in order)
	}{
		{"connection", "put", c.connectionPut, 0, 0},
		{"connection", "get", c.connectionGet, 0, 0},
		{"connection", "list", c.connectionList, 0, 0},
		{"connection", "delete", c.connectionDelete, 0, 0},
		// A check may wait seconds for a silent server before it can say why; checks run
		// side by side, so one silent server does not hold up the checks of the others.
		{"connection", "test", c.connectionTest, testRequestTimeout, testParallel},
		{"connection", "log", c.connectionLog, 0, 0},
		{"route", "put", c.routePut, 0, 0},
		{"route", "get", c.routeGet, 0, 0},
		{"route", "list", c.routeList, 0, 0},
		{"route", "delete", c.routeDelete, 0, 0},
		{"route", "status", c.routeStatus, 0, 0},
		{"definitions", "apply", c.definitionsApply, applyRequestTimeout, 0},
	}
	groups := map[string]micro.Group{}
	for _, e := range endpoints {
		g, ok := groups[e.entity]
		if !ok {
			g = svc.AddGroup(c.Names.ControlPrefix() + "." + e.entity)
			groups[e.entity] = g
		}
		// Endpoint names must be unique in the service; the subject is the group's plus op.
		if err := g.AddEndpoint(e.entity+"_"+e.op, c.serve(ctx, e.h, e.timeout, e.parallel), micro.WithEndpointSubject(e.op)); err != nil {
			svc.Stop()
			return nil, fmt.Errorf("control endpoint %s.%s: %w", e.entity, e.op, err)
		}
	}
	// The endpoints' subscriptions are still in the client's buffer: a round trip makes
	// sure the server has them before the caller says commands are taken (a
	// connection.put right after "mailbus ready" found no responders: TestListPages, in
	// CI). A failure is NATS being down, and the subscriptions go again on the reconnect.
	nc.FlushTimeout(5 * time.Second)
	return svc, nil
}

// serviceVersion is version as the SemVer micro requires: "v1.2.3" loses its v, and a
// build without a release version ("dev", "(devel)") shows as 0.0.0-dev.
func serviceVersion(v string) string {
	v = strings.TrimPrefix(v, "v")
	if semver.MatchString(v) {
		return v
	}
	return "0.0.0-dev"
}

// semver is the rule micro checks a service version with (semver.org).
var semver = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)

// serve turns a handler into a micro handler: decode, time limit, reply. With parallel,
// up to that many requests are handled at once; more wait for a free slot.
func (c *control) serve(ctx context.Context, h handler, timeout time.Duration, parallel int) micro.Handler {
	if timeout == 0 {
		timeout = requestTimeout
	}
	var slots chan struct{}
	if parallel > 1 {
		slots = make(chan struct{}, parallel)
	}
	return micro.ContextHandler(ctx, func(ctx context.Context, req micro.Request) {
		if slots == nil {
			c.handle(ctx, h, timeout, req, false)
			return
		}
		slots <- struct{}{}
		go func() {
			defer func() { <-slots }()
			c.handle(ctx, h, timeout, req, true)
		}()
	})
}

// handle answers one request; async says it runs after micro's handler returned.
func (c *control) handle(ctx context.Context, h handler, timeout time.Duration, req micro.Request, async bool) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	reply, err := h(ctx, req.Data())
	if err != nil {
		c.respondError(req, err, async)
		return
	}
	// A reply that carries its own error (a failed connection check) is a normal reply
	// with ok false, not a refused command.
	reply.OK = reply.Error == nil
	if err := req.RespondJSON(reply); err != nil {
		c.Logger.Warn("control reply not sent", "subject", req.Subject(), "err", err)
	}
}

// respondError is the one place an error becomes a control reply: the micro error headers
// and the JSON body {"ok":false,"error":{...}}. An async reply sets the headers itself:
// req.Error records the error in the request, which micro reads for its statistics once
// its handler returned, and that would race with a reply sent after it.
func (c *control) respondError(req micro.Request, err error, async bool) {
	e := wireError(err)
	if e.Code == schemas.CodeInternal {
		c.Logger.Error("control request failed", "subject", req.Subject(), "err", err)
	} else {
		c.Logger.Debug("control request refused", "subject", req.Subject(), "code", e.Code, "field", e.Field)
	}
	body, _ := json.Marshal(schemas.Reply{OK: false, Error: e})
	if async {
		err = req.Respond(body, micro.WithHeaders(micro.Headers{
			micro.ErrorCodeHeader: {errorHeaderCodes[e.Code]}, micro.ErrorHeader: {e.Error()},
		}))
	} else {
		err = req.Error(errorHeaderCodes[e.Code], e.Error(), body)
	}
	if err != nil {
		c.Logger.Warn("control reply not sent", "subject", req.Subject(), "err", err)
	}
}

// wireError sorts any error into the codes of the contract: refusals keep theirs, a
// request that ran out of time (NATS or JetStream not answering) is unavailable, anything
// else internal.
func wireError(err error) *schemas.Error {
	var e *schemas.Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrConnectionClosed):
		return &schemas.Error{Code: schemas.CodeUnavailable, Message: "storage did not answer in time: " + err.Error()}
	default:
		return &schemas.Error{Code: schemas.CodeInternal, Message: err.Error()}
	}
}

// testRequestTimeout bounds a connection check: every stage has its own shorter limit.
const testRequestTimeout = 60 * time.Second

// testParallel is how many connection checks one replica runs at once.
const testParallel = 8

// connectionTest checks a saved connection ({"name":"x"}) or an unsaved draft, validated
// as a put is and never stored. A draft never uses stored secrets: it could send them to a
// server they were not given for, so it must carry its own.
func (c *control) connectionTest(ctx context.Context, data []byte) (*schemas.Reply, error) {
	var conn schemas.Connection
	var only map[string]json.RawMessage
	draft := true
	if json.Unmarshal(data, &only) == nil && len(only) == 1 && only["name"] != nil {
		var in schemas.NameRequest
		if e := validate.Decode(data, &in); e != nil {
			return nil, e
		}
		stored, err := c.Store.GetConnection(ctx, in.Name)
		if err != nil {
			return nil, err
		}
		conn, draft = stored, false
	} else {
		if e := validate.Decode(data, &conn); e != nil {
			return nil, e
		}
		if e := validate.Connection(&conn); e != nil {
			return nil, e
		}
		if e := c.Sealer.Probe(&conn); e != nil {
			return nil, e
		}
		// Sealed like a put's, so a draft cannot pass off a copied ciphertext as its own.
		if err := c.Sealer.SealConnection(&conn); err != nil {
			return nil, err
		}
		if e := validate.Credentials(&conn); e != nil {
			if e.Field == "password" || e.Field == "oauth2" {
				e.Message += " (a test of an unsaved connection does not use stored secrets: give them, or test the saved connection by name)"
			}
			return nil, e
		}
	}
	conn, err := c.Sealer.Usable(conn)
	if err != nil {
		var e *schemas.Error
		if errors.As(err, &e) {
			return nil, e
		}
		return nil, &schemas.Error{Code: schemas.CodeInvalid, Field: "passwordFrom", Message: err.Error()}
	}
	routes, err := c.Store.ListRoutes(ctx)
	if err != nil {
		return nil, err
	}
	var mailboxes []string
	for _, r := range routes {
		if r.Connection == conn.Name && !slices.Contains(mailboxes, r.Mailbox) {
			mailboxes = append(mailboxes, r.Mailbox)
		}
	}
	var ts *oauth2.Source
	if conn.Auth == schemas.AuthOAuth2 {
		ts = oauth2.NewSource(&conn, c.checkTokens(ctx, &conn, draft))
	}
	if c.Check == nil {
		return nil, &schemas.Error{Code: schemas.CodeUnavailable, Message: "connection checks are not available on this replica"}
	}
	return c.Check(ctx, conn, mailboxes, ts)
}

// checkTokens is where the check of conn reads and stores its refresh token. The stored
// refresh token is read again before the refresh and, when the endpoint replaces it, the
// new one is stored. A draft's own other refresh token is used as it is and its
// replacement kept nowhere (nil). A saved connection always uses the store: its token
// differs from the stored one only when a route rotated it since conn was read, and the
// token in conn is then revoked (TestOAuthRotatedRefreshToken failed so, now and then).
func (c *control) checkTokens(ctx context.Context, conn *schemas.Connection, draft bool) oauth2.RefreshStore {
	if !draft {
		return c.Store
	}
	if !c.sameTokenEndpoint(ctx, conn) {
		return nil
	}
	if conn.OAuth2 != nil && conn.OAuth2.RefreshToken != "" {
		if stored, ok := c.Store.RefreshToken(ctx, conn.Name); !ok || stored != conn.OAuth2.RefreshToken {
			return nil
		}
	}
	return c.Store
}

// sameTokenEndpoint reports whether a draft sends its tokens where the saved connection
// of its name does: only then may its check read the stored refresh token and store the
// one the endpoint rotates it to.
func (c *control) sameTokenEndpoint(ctx context.Context, draft *schemas.Connection) bool {
	stored, err := c.Store.GetConnection(ctx, draft.Name)
	return err == nil && store.Rebound(draft, &stored) == ""
}

// connectionLog reads a connection's log from its stream, so any replica can answer.
func (c *control) connectionLog(ctx context.Context, data []byte) (*schemas.Reply, error) {
	var in schemas.LogRequest
	if e := validate.Decode(data, &in); e != nil {
		return nil, e
	}
	if _, err := c.Store.GetConnection(ctx, in.Name); err != nil {
		return nil, err
	}
	r, err := connlog.Read(ctx, c.JS, c.Names, in)
	if err != nil {
		return nil, &schemas.Error{Code: schemas.CodeUnavailable, Message: "reading the log: " + err.Error()}
	}
	if !r.OK {
		return nil, r.Error
	}
	return r, nil
}

// applyRequestTimeout bounds one definitions.apply: a few thousand definitions, each read
// and perhaps written.
const applyRequestTimeout = 2 * time.Minute

// definitionsApply applies many definitions at once (mailbus apply).
func (c *control) definitionsApply(ctx context.Context, data []byte) (*schemas.Reply, error) {
	var req schemas.ApplyRequest
	if e := validate.Decode(data, &req); e != nil {
		return nil, e
	}
	changes, err := c.Store.Apply(ctx, &req)
	if err != nil {
		return nil, err
	}
	return &schemas.Reply{Changes: changes}, nil
}

func (c *control) connectionPut(ctx context.Context, data []byte) (*schemas.Reply, error) {
	var in schemas.Connection
	if e := validate.Decode(data, &in); e != nil {
		return nil, e
	}
	out, err := c.Store.PutConnection(ctx, in)
	if err != nil {
		return nil, err
	}
	r := secrets.Redact(out)
	return &schemas.Reply{Connection: &r}, nil
}

func (c *control) connectionGet(ctx context.Context, data []byte) (*schemas.Reply, error) {
	var req schemas.NameRequest
	if e := validate.Decode(data, &req); e != nil {
		return nil, e
	}
	out, err := c.Store.GetConnection(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	r := secrets.Redact(out)
	return &schemas.Reply{Connection: &r}, nil
}

func (c *control) connectionList(ctx context.Context, data []byte) (*schemas.Reply, error) {
	var req schemas.ListRequest
	if e := validate.Decode(data, &req); e != nil {
		return nil, e
	}
	if e := checkList(req); e != nil {
		return nil, e
	}
	all, err := c.Store.ListConnections(ctx)
	if err != nil {
		return nil, err
	}
	all, more := pageWindow(all, req, func(d schemas.Connection) string { return d.Name })
	for i := range all {
		all[i] = secrets.Redact(all[i])
	}
	n, next, e := c.fit(req, len(all), more, func(i int) any { return all[i] }, nil, func(i int) string { return all[i].Name })
	if e != nil {
		return nil, e
	}
	return &schemas.Reply{Connections: all[:n], Next: next}, nil
}

func (c *control) connectionDelete(ctx context.Context, data []byte) (*schemas.Reply, error) {
	var req schemas.NameRequest
	if e := validate.Decode(data, &req); e != nil {
		return nil, e
	}
	if err := c.Store.DeleteConnection(ctx, req.Name); err != nil {
		return nil, err
	}
	return &schemas.Reply{}, nil
}

func (c *control) routePut(ctx context.Context, data []byte) (*schemas.Reply, error) {
	var in schemas.Route
	if e := validate.Decode(data, &in); e != nil {
		return nil, e
	}
	out, err := c.Store.PutRoute(ctx, in)
	if err != nil {
		return nil, err
	}
	return &schemas.Reply{Route: &out}, nil
}

func (c *control) routeGet(ctx context.Context, data []byte) (*schemas.Reply, error) {
	var req schemas.NameRequest
	if e := validate.Decode(data, &req); e != nil {
		return nil, e
	}
	out, err := c.Store.GetRoute(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	return &schemas.Reply{Route: &out}, nil
}

func (c *control) routeList(ctx context.Context, data []byte) (*schemas.Reply, error) {
	var req schemas.ListRequest
	if e := validate.Decode(data, &req); e != nil {
		return nil, e
	}
	if e := checkList(req); e != nil {
		return nil, e
	}
	all, err := c.Store.ListRoutes(ctx)
	if err != nil {
		return nil, err
	}
	all, more := pageWindow(all, req, func(d schemas.Route) string { return d.Name })
	var statuses []schemas.RouteStatus
	var status func(int) any
	if req.Status {
		for _, r := range all {
			statuses = append(statuses, c.statusOf(ctx, r))
		}
		status = func(i int) any { return statuses[i] }
	}
	n, next, e := c.fit(req, len(all), more, func(i int) any { return all[i] }, status, func(i int) string { return all[i].Name })
	if e != nil {
		return nil, e
	}
	reply := &schemas.Reply{Routes: all[:n], Next: next}
	if req.Status {
		reply.Statuses = statuses[:n]
	}
	return reply, nil
}

// replyOverhead is what a list reply needs besides its items: the envelope, the next
// cursor and the micro headers of the reply message.
const replyOverhead = 4 << 10

// defaultMaxPayload is nats-server's default max payload, for when the connection does not
// know its server's (between reconnects).
const defaultMaxPayload = 1 << 20

// checkList refuses a list request's bad paging fields.
func checkList(req schemas.ListRequest) *schemas.Error {
	if req.Limit < 0 {
		return validate.Invalid("limit", "limit must not be negative, got %d", req.Limit)
	}
	return nil
}

// pageWindow is the part of a list sorted by name that a request may get: the names after
// req.After, and with req.Limit at most that many; more says whether others follow it.
func pageWindow[T any](all []T, req schemas.ListRequest, name func(T) string) (window []T, more bool) {
	if req.After != "" {
		i, _ := slices.BinarySearchFunc(all, req.After, func(d T, after string) int {
			if name(d) <= after {
				return -1
			}
			return 1
		})
		all = all[i:]
	}
	if req.Limit > 0 && len(all) > req.Limit {
		return all[:req.Limit], true
	}
	return all, false
}

// fit says how many of the n items of a list window (see pageWindow; more: others follow
// it), with the status of each route when status is not nil, go into the reply so that it
// stays within the max payload of the NATS server: with a limit, as many as fit, and next
// names the last of them when others follow; without a limit all of them, or the request
// is refused. name gives an item's name.
func (c *control) fit(req schemas.ListRequest, n int, more bool, item, status func(int) any, name func(int) string) (int, string, *schemas.Error) {
	maxPayload := int(c.nc.MaxPayload()) // the server's, after any reconnect
	if maxPayload <= 0 {
		maxPayload = defaultMaxPayload
	}
	budget := maxPayload - replyOverhead
	size, fits := 0, n
	for i := range n {
		b, _ := json.Marshal(item(i))
		size += len(b) + 1
		if status != nil {
			b, _ = json.Marshal(status(i))
			size += len(b) + 1
		}
		if size > budget {
			fits = i
			break
		}
	}
	switch {
	case fits < n && req.Limit == 0:
		return 0, "", validate.Invalid("limit", "the list is larger than the NATS server's max payload (%d bytes): ask for it in pages with limit, and after set to the next of each reply", maxPayload)
	case fits < n:
		fits = max(fits, 1) // a page moves on even when one item is that large
		return fits, name(fits - 1), nil
	case more && n > 0:
		return n, name(n - 1), nil
	}
	return n, "", nil
}

func (c *control) routeDelete(ctx context.Context, data []byte) (*schemas.Reply, error) {
	var req schemas.NameRequest
	if e := validate.Decode(data, &req); e != nil {
		return nil, e
	}
	if err := c.Store.DeleteRoute(ctx, req.Name); err != nil {
		return nil, err
	}
	// A route created again under this name starts afresh, not from this checkpoint.
	if c.State != nil {
		if err := store.PurgeCheckpoint(ctx, c.State, req.Name); err != nil {
			return nil, err
		}
	}
	return &schemas.Reply{}, nil
}

func (c *control) routeStatus(ctx context.Context, data []byte) (*schemas.Reply, error) {
	var req schemas.NameRequest
	if e := validate.Decode(data, &req); e != nil {
		return nil, e
	}
	r, err := c.Store.GetRoute(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	st := c.statusOf(ctx, r)
	return &schemas.Reply{Status: &st}, nil
}

// statusOf is a route's status: from its worker when the route runs here; else, when
// another replica holds its lease, the status that replica last wrote into the lease (at
// most a lease renewal old), with that replica as owner; else what the definition says
// (disabled, or stopped: no replica runs it).
func (c *control) statusOf(ctx context.Context, r schemas.Route) schemas.RouteStatus {
	if c.Status != nil {
		if st, ok := c.Status.Local(r.Name); ok {
			return st
		}
	}
	st := schemas.RouteStatus{Route: r.Name, State: schemas.StateStopped}
	if r.Disabled {
		st.State = schemas.StateDisabled
		return st
	}
	if c.Status != nil {
		if remote, ok := c.Status.Remote(ctx, r.Name); ok {
			return remote
		}
	}
	return st
}
