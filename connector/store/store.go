package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/secrets"
	"github.com/mailbus/mailbus/connector/validate"
	"github.com/mailbus/mailbus/schemas"
)

// putAttempts bounds the read-merge-write loop of a put that keeps losing the race to
// other writers of the same key.
const putAttempts = 8

// putBackoff is the first wait, doubled at each attempt, before a lost put tries again; a
// random part of it, so that two writers racing each other do not lose in step.
const putBackoff = 5 * time.Millisecond

// Store keeps the definitions in the config bucket: connection.<name> and route.<name>,
// JSON values, secrets sealed. Every write compares the revision it read, so concurrent
// puts of one key are applied one after the other and none is lost.
//
// The cross-key checks (a route's connection exists, a deleted connection has no routes)
// read one key and write another, so two replicas can still race past them; the supervisor
// copes with either outcome by reporting the route's status as an error.
type Store struct {
	kv     jetstream.KeyValue
	sealer *secrets.Sealer
}

// New returns the store of the definitions in the config bucket kv, sealing secrets with
// sealer.
func New(kv jetstream.KeyValue, sealer *secrets.Sealer) *Store {
	return &Store{kv: kv, sealer: sealer}
}

// errRetry says a write lost to a concurrent one and the put should start over.
var errRetry = errors.New("definition changed while writing")

// LostRace reports whether err is a compare-and-set failure of a KV write.
func LostRace(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}

// get reads one definition into v and returns its revision; ok is false when it is absent.
func (s *Store) get(ctx context.Context, key string, v any) (rev uint64, ok bool, err error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("get %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return 0, false, fmt.Errorf("get %s: %w", key, err)
	}
	return e.Revision(), true, nil
}

// write stores v under key if the key is still at rev (0: absent) and returns the new
// revision, or errRetry when another writer came first.
func (s *Store) write(ctx context.Context, key string, rev uint64, v any) (uint64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("put %s: %w", key, err)
	}
	newRev, err := PutRev(ctx, s.kv, key, b, rev)
	if LostRace(err) {
		return 0, errRetry
	}
	if err != nil {
		return 0, fmt.Errorf("put %s: %w", key, err)
	}
	return newRev, nil
}

// PutRev writes b under key if the key is still at rev (0: absent) and returns the new
// revision: the one compare-and-set KV write of definitions, checkpoints and sync states.
// A lost race fails with jetstream.ErrKeyExists or ErrKeyRevisionMismatch (see LostRace).
func PutRev(ctx context.Context, kv jetstream.KeyValue, key string, b []byte, rev uint64) (uint64, error) {
	if rev == 0 {
		return kv.Create(ctx, key, b)
	}
	return kv.Update(ctx, key, b, rev)
}

// retryPut runs attempt, one read-merge-write of key, until it wins the race with other
// writers or a check refuses it. When the request named a revision, the attempt after a
// lost race finds the stored revision moved on and refuses with a conflict.
func retryPut(key string, attempt func() error) error {
	for i := range putAttempts {
		if err := attempt(); !errors.Is(err, errRetry) {
			return err
		}
		time.Sleep(rand.N(putBackoff << i))
	}
	return validate.Conflict("", "%s kept changing while writing; try again", key)
}

// checkRevision refuses a put that asked for a revision other than the stored one.
func checkRevision(key string, want, stored uint64) *schemas.Error {
	if want != 0 && want != stored {
		return validate.Conflict("revision", "%s is at revision %d, not %d: read it again and retry", key, stored, want)
	}
	return nil
}

// PutConnection validates and stores a connection. A put without a password (or without
// an OAuth2 secret) keeps the stored one, unless it changes where the secret is sent (see
// keepSecrets); a put with passwordFrom drops a stored password.
// It returns the stored definition, sealed, with its revision.
func (s *Store) PutConnection(ctx context.Context, in schemas.Connection) (schemas.Connection, error) {
	if e := validate.Connection(&in); e != nil {
		return in, e
	}
	if e := s.sealer.Probe(&in); e != nil {
		return in, e
	}
	want := in.Revision
	in.Revision, in.PasswordSet = 0, false
	if in.OAuth2 != nil {
		o := *in.OAuth2
		o.AccessTokenSet, o.ClientSecretSet, o.RefreshTokenSet = false, false, false
		in.OAuth2 = &o
	}
	// Seal what the request brought before merging, so kept values (already sealed) are
	// never sealed twice.
	if err := s.sealer.SealConnection(&in); err != nil {
		return in, err
	}
	key := bus.ConnectionKey(in.Name)
	var out schemas.Connection
	err := retryPut(key, func() error {
		var cur schemas.Connection
		rev, ok, err := s.get(ctx, key, &cur)
		if err != nil {
			return err
		}
		if e := checkRevision(key, want, rev); e != nil {
			return e
		}
		out = in
		if ok {
			if e := keepSecrets(&out, &cur); e != nil {
				return e
			}
		}
		if e := validate.Credentials(&out); e != nil {
			return e
		}
		out.Revision, err = s.write(ctx, key, rev, out)
		return err
	})
	return out, err
}

// keepSecrets copies into c the stored secrets the put left out, as long as c sends them
// where and how the stored definition did (see Rebound). When c changes that, a stored
// secret c would use must come with the put again, or the put is refused naming the field;
// one c has no use for (another auth, or an access token beside a new way to get one) is
// dropped.
func keepSecrets(c, stored *schemas.Connection) *schemas.Error {
	why := Rebound(c, stored)
	if c.Password == "" && c.PasswordFrom == nil && stored.Password != "" {
		switch {
		case why == "":
			c.Password = stored.Password
		case c.Auth == schemas.AuthBasic || c.Auth == schemas.AuthWindows:
			return validate.Invalid("password", "this put changes %s: the stored password is only sent where it was given for, so give the password again", why)
		}
	}
	if c.OAuth2 == nil || stored.OAuth2 == nil {
		return nil
	}
	o, so := *c.OAuth2, stored.OAuth2
	c.OAuth2 = &o
	if why == "" {
		for _, f := range [][2]*string{
			{&o.AccessToken, &so.AccessToken},
			{&o.ClientSecret, &so.ClientSecret},
			{&o.RefreshToken, &so.RefreshToken},
		} {
			if *f[0] == "" {
				*f[0] = *f[1]
			}
		}
		return nil
	}
	if c.Auth != schemas.AuthOAuth2 {
		return nil
	}
	for _, f := range []struct {
		field       string
		put, stored string
	}{
		{"oauth2.clientSecret", o.ClientSecret, so.ClientSecret},
		{"oauth2.refreshToken", o.RefreshToken, so.RefreshToken},
	} {
		if f.put == "" && f.stored != "" {
			return validate.Invalid(f.field, "this put changes %s: the stored %s is only sent where it was given for, so give it again", why, f.field)
		}
	}
	// A stored access token is needed only when nothing else gets one.
	if o.AccessToken == "" && so.AccessToken != "" && o.RefreshToken == "" && o.ClientSecret == "" {
		return validate.Invalid("oauth2.accessToken", "this put changes %s: the stored oauth2.accessToken is only sent where it was given for, so give it again", why)
	}
	return nil
}

// Rebound says what c changes, against the stored definition, of where and how its
// secrets are sent: the server (type, host, port, exchangeUrl), who logs in (username,
// domain, auth), the protection on the wire (encryption none after ssl or tls, certificate
// checks turned off) and, for OAuth2, the token endpoint and the client (tokenUrl,
// clientId, tenant, provider). "" when nothing of that changed.
func Rebound(c, stored *schemas.Connection) string {
	var changed []string
	diff := func(field string, a, b any) {
		if a != b {
			changed = append(changed, field)
		}
	}
	diff("type", c.Type, stored.Type)
	diff("host", strings.ToLower(c.Host), strings.ToLower(stored.Host))
	diff("port", c.Port, stored.Port)
	diff("exchangeUrl", c.ExchangeURL, stored.ExchangeURL)
	diff("username", c.Username, stored.Username)
	diff("domain", c.Domain, stored.Domain)
	diff("auth", c.Auth, stored.Auth)
	if c.Encryption == schemas.EncryptionNone && stored.Encryption != schemas.EncryptionNone {
		changed = append(changed, "encryption (to none)")
	}
	if c.TLSInsecureSkipVerify && !stored.TLSInsecureSkipVerify {
		changed = append(changed, "tlsInsecureSkipVerify (to true)")
	}
	var o, so schemas.OAuth2
	if c.OAuth2 != nil {
		o = *c.OAuth2
	}
	if stored.OAuth2 != nil {
		so = *stored.OAuth2
	}
	diff("oauth2.tokenUrl", o.TokenURL, so.TokenURL)
	diff("oauth2.clientId", o.ClientID, so.ClientID)
	diff("oauth2.tenant", o.Tenant, so.Tenant)
	diff("oauth2.provider", o.Provider, so.Provider)
	return strings.Join(changed, ", ")
}

// GetConnection reads one connection, sealed.
func (s *Store) GetConnection(ctx context.Context, name string) (schemas.Connection, error) {
	if e := validate.Name("name", name); e != nil {
		return schemas.Connection{}, e
	}
	var c schemas.Connection
	rev, ok, err := s.get(ctx, bus.ConnectionKey(name), &c)
	if err != nil {
		return c, err
	}
	if !ok {
		return c, validate.NotFound("no connection named %s", name)
	}
	c.Revision = rev
	return c, nil
}

// DeleteConnection removes a connection no route uses.
func (s *Store) DeleteConnection(ctx context.Context, name string) error {
	c, err := s.GetConnection(ctx, name)
	if err != nil {
		return err
	}
	routes, err := s.ListRoutes(ctx)
	if err != nil {
		return err
	}
	var users []string
	for _, r := range routes {
		if r.Connection == name {
			users = append(users, r.Name)
		}
	}
	if len(users) > 0 {
		return validate.Conflict("name", "connection %s is used by route %s: delete or move the route first", name, strings.Join(users, ", "))
	}
	return s.delete(ctx, bus.ConnectionKey(name), c.Revision)
}

// delete removes key if it is still at rev.
func (s *Store) delete(ctx context.Context, key string, rev uint64) error {
	err := s.kv.Delete(ctx, key, jetstream.LastRevision(rev))
	if LostRace(err) {
		return validate.Conflict("name", "%s changed while deleting; read it again and retry", key)
	}
	if err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// ListConnections returns every connection, sealed, sorted by name.
func (s *Store) ListConnections(ctx context.Context) ([]schemas.Connection, error) {
	return list[schemas.Connection](ctx, s, "connection", func(c *schemas.Connection, rev uint64) string {
		c.Revision = rev
		return c.Name
	})
}

// PutRoute validates and stores a route whose connection exists. Routes may share a
// mailbox (each gets every mail it selects), except when one of them deletes or moves what
// it took: the others would lose that mail, so such a put is refused with a conflict.
func (s *Store) PutRoute(ctx context.Context, in schemas.Route) (schemas.Route, error) {
	if e := validate.Route(&in); e != nil {
		return in, e
	}
	want := in.Revision
	in.Revision = 0
	key := bus.RouteKey(in.Name)
	var out schemas.Route
	err := retryPut(key, func() error {
		var cur schemas.Route
		rev, _, err := s.get(ctx, key, &cur)
		if err != nil {
			return err
		}
		if e := checkRevision(key, want, rev); e != nil {
			return e
		}
		var c schemas.Connection
		if _, ok, err := s.get(ctx, bus.ConnectionKey(in.Connection), &c); err != nil {
			return err
		} else if !ok {
			return validate.Invalid("connection", "no connection named %s", in.Connection)
		}
		if e, err := s.sharedMailbox(ctx, &in); e != nil || err != nil {
			if err != nil {
				return err
			}
			return e
		}
		out = in
		out.Revision, err = s.write(ctx, key, rev, out)
		return err
	})
	return out, err
}

// sharedMailbox refuses r when it would share its connection and mailbox with another route
// and one of the two deletes or moves the mail it took.
func (s *Store) sharedMailbox(ctx context.Context, r *schemas.Route) (*schemas.Error, error) {
	routes, err := s.ListRoutes(ctx)
	if err != nil {
		return nil, err
	}
	removes := func(after string) bool { return after == schemas.AfterDelete || after == schemas.AfterMove }
	for _, o := range routes {
		if o.Name == r.Name || o.Connection != r.Connection || !sameMailbox(o.Mailbox, r.Mailbox) {
			continue
		}
		switch {
		case removes(r.After):
			return validate.Conflict("after", "route %s reads mailbox %s of connection %s too: with after %s this route would take the mail away from it; use after markRead or none, or another mailbox",
				o.Name, r.Mailbox, r.Connection, r.After), nil
		case removes(o.After):
			return validate.Conflict("mailbox", "route %s reads mailbox %s of connection %s with after %s, which takes the mail away from every other route on it; use another mailbox, or change route %s first",
				o.Name, r.Mailbox, r.Connection, o.After, o.Name), nil
		}
	}
	return nil, nil
}

// sharedMailboxes is sharedMailbox for the routes of an apply, against each other and
// against the stored routes that stay (with prune, those declared).
func (s *Store) sharedMailboxes(ctx context.Context, routes []schemas.Route, req *schemas.ApplyRequest) error {
	stored, err := s.ListRoutes(ctx)
	if err != nil {
		return err
	}
	key := func(r *schemas.Route) string {
		mb := r.Mailbox
		if strings.EqualFold(mb, validate.DefaultMailbox) {
			mb = validate.DefaultMailbox
		}
		return r.Connection + "\x00" + mb
	}
	inRequest := make(map[string]bool, len(routes))
	for _, r := range routes {
		inRequest[r.Name] = true
	}
	var keep map[string]bool
	if req.Prune && req.Declared != nil {
		keep = make(map[string]bool, len(req.Declared.Routes))
		for _, n := range req.Declared.Routes {
			keep[n] = true
		}
	}
	byMailbox := map[string][]schemas.Route{}
	for _, r := range stored {
		if !inRequest[r.Name] && (keep == nil || keep[r.Name]) {
			byMailbox[key(&r)] = append(byMailbox[key(&r)], r)
		}
	}
	for _, r := range routes {
		byMailbox[key(&r)] = append(byMailbox[key(&r)], r)
	}
	removes := func(after string) bool { return after == schemas.AfterDelete || after == schemas.AfterMove }
	// The routes that delete or move first: the refusal names the one to change.
	order := make([]int, 0, len(routes))
	for i, r := range routes {
		if removes(r.After) {
			order = append(order, i)
		}
	}
	for i, r := range routes {
		if !removes(r.After) {
			order = append(order, i)
		}
	}
	for _, i := range order {
		r := routes[i]
		for _, o := range byMailbox[key(&r)] {
			switch {
			case o.Name == r.Name:
			case removes(r.After):
				return applyError("route", i, r.Name, validate.Conflict("after", "route %s reads mailbox %s of connection %s too: with after %s this route would take the mail away from it; use after markRead or none, or another mailbox",
					o.Name, r.Mailbox, r.Connection, r.After))
			case removes(o.After):
				return applyError("route", i, r.Name, validate.Conflict("mailbox", "route %s reads mailbox %s of connection %s with after %s, which takes the mail away from every other route on it; use another mailbox, or change route %s first",
					o.Name, r.Mailbox, r.Connection, o.After, o.Name))
			}
		}
	}
	return nil
}

// fillRouteDefaults gives a route stored by an earlier version the fields it lacks.
func fillRouteDefaults(r *schemas.Route) {
	if r.Backlog == "" {
		r.Backlog = schemas.BacklogUnseen
	}
}

// sameMailbox compares mailbox names as IMAP does: INBOX in any case is INBOX.
func sameMailbox(a, b string) bool {
	if strings.EqualFold(a, validate.DefaultMailbox) && strings.EqualFold(b, validate.DefaultMailbox) {
		return true
	}
	return a == b
}

// GetRoute reads one route.
func (s *Store) GetRoute(ctx context.Context, name string) (schemas.Route, error) {
	if e := validate.Name("name", name); e != nil {
		return schemas.Route{}, e
	}
	var r schemas.Route
	rev, ok, err := s.get(ctx, bus.RouteKey(name), &r)
	if err != nil {
		return r, err
	}
	if !ok {
		return r, validate.NotFound("no route named %s", name)
	}
	r.Revision = rev
	fillRouteDefaults(&r)
	return r, nil
}

// DeleteRoute removes a route.
func (s *Store) DeleteRoute(ctx context.Context, name string) error {
	r, err := s.GetRoute(ctx, name)
	if err != nil {
		return err
	}
	return s.delete(ctx, bus.RouteKey(name), r.Revision)
}

// ListRoutes returns every route sorted by name.
func (s *Store) ListRoutes(ctx context.Context) ([]schemas.Route, error) {
	return list[schemas.Route](ctx, s, "route", func(r *schemas.Route, rev uint64) string {
		r.Revision = rev
		fillRouteDefaults(r)
		return r.Name
	})
}

// list reads every live definition of a kind ("connection", "route"); set stores the
// revision in a value and returns its name, for sorting.
func list[T any](ctx context.Context, s *Store, kind string, set func(*T, uint64) string) ([]T, error) {
	w, err := s.kv.WatchFiltered(ctx, []string{kind + ".*"}, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", kind, err)
	}
	defer w.Stop()
	type named struct {
		name string
		v    T
	}
	var all []named
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("list %s: %w", kind, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("list %s: watcher stopped", kind)
			}
			if e == nil { // the initial values are all here
				slices.SortFunc(all, func(a, b named) int { return strings.Compare(a.name, b.name) })
				out := make([]T, len(all))
				for i, n := range all {
					out[i] = n.v
				}
				return out, nil
			}
			var v T
			if err := json.Unmarshal(e.Value(), &v); err != nil {
				return nil, fmt.Errorf("list %s: %s: %w", kind, e.Key(), err)
			}
			all = append(all, named{set(&v, e.Revision()), v})
		}
	}
}

// RefreshToken returns the stored oauth2 refresh token of a connection, opened; ok is false
// when it cannot be read.
func (s *Store) RefreshToken(ctx context.Context, name string) (string, bool) {
	var c schemas.Connection
	_, ok, err := s.get(ctx, bus.ConnectionKey(name), &c)
	if err != nil || !ok || c.OAuth2 == nil {
		return "", false
	}
	rt, err := s.sealer.Open(name, c.OAuth2.RefreshToken)
	return rt, err == nil
}

// SaveRefreshToken replaces a connection's stored refresh token old with new, sealed, when
// the token endpoint rotated it. It writes with a compare-and-set and only over old: a
// refresh token an operator (or another replica) put meanwhile is left alone, and saved
// reports false.
func (s *Store) SaveRefreshToken(ctx context.Context, name, old, new string) (saved bool, err error) {
	key := bus.ConnectionKey(name)
	sealed, err := s.sealer.Seal(name, new)
	if err != nil {
		return false, err
	}
	err = retryPut(key, func() error {
		saved = false
		var c schemas.Connection
		rev, ok, err := s.get(ctx, key, &c)
		if err != nil || !ok || c.OAuth2 == nil {
			return err
		}
		if cur, err := s.sealer.Open(name, c.OAuth2.RefreshToken); err != nil || cur != old {
			return err
		}
		c.OAuth2.RefreshToken = sealed
		if _, err := s.write(ctx, key, rev, c); err != nil {
			return err
		}
		saved = true
		return nil
	})
	return saved, err
}
