package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
	"golang.org/x/sync/errgroup"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/validate"
	"github.com/mailbus/mailbus/schemas"
)

// Definitions is a set of connections and routes: the file of mailbus apply and of
// MAILBUS_DEFINITIONS. Its entries decode into the schemas types, so every field of a
// connection or a route can be written there.
type Definitions struct {
	Connections []schemas.Connection `json:"connections,omitempty"`
	Routes      []schemas.Route      `json:"routes,omitempty"`
}

// Names lists the names of the definitions.
func (d *Definitions) Names() *schemas.DefinitionNames {
	n := &schemas.DefinitionNames{Connections: []string{}, Routes: []string{}}
	for _, c := range d.Connections {
		n.Connections = append(n.Connections, c.Name)
	}
	for _, r := range d.Routes {
		n.Routes = append(n.Routes, r.Name)
	}
	return n
}

// DefinitionError is a definition refused, named by file, kind, position and name; Err
// names the field.
type DefinitionError struct {
	File  string
	Kind  string // connection or route; "" for the file as a whole
	Index int
	Name  string
	Err   *schemas.Error
}

// Error reads "defs.yaml: connection support_imap (connections[0]): field port: ...".
func (e *DefinitionError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File + ": ")
	}
	if e.Kind != "" {
		if e.Name != "" {
			fmt.Fprintf(&b, "%s %s (%ss[%d]): ", e.Kind, e.Name, e.Kind, e.Index)
		} else {
			fmt.Fprintf(&b, "%ss[%d]: ", e.Kind, e.Index)
		}
	}
	if e.Err.Field != "" {
		b.WriteString("field " + e.Err.Field + ": ")
	}
	b.WriteString(e.Err.Message)
	return b.String()
}

// Unwrap returns the refusal.
func (e *DefinitionError) Unwrap() error { return e.Err }

// ReadDefinitions reads and checks a definitions file (ParseDefinitions), expanding
// secret references from the process environment.
func ReadDefinitions(path string) (*Definitions, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseDefinitions(path, data, os.LookupEnv)
}

// ParseDefinitions reads a definitions file named file: JSON, or YAML of one or more
// documents, each an object with the keys connections and routes. Unknown keys and fields
// are refused. A secret field (password, oauth2.accessToken, clientSecret, refreshToken)
// whose whole value is ${NAME} takes the value of the variable NAME from lookup, so the
// file itself need not hold it. Every definition is then checked as a put checks it (its
// defaults filled in), names must be unique, and the first problem is returned as a
// *DefinitionError.
func ParseDefinitions(file string, data []byte, lookup func(string) (string, bool)) (*Definitions, error) {
	fileErr := func(format string, args ...any) error {
		return &DefinitionError{File: file, Err: validate.Invalid("", format, args...)}
	}
	var docs []map[string]json.RawMessage
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		var doc map[string]json.RawMessage
		dec := json.NewDecoder(bytes.NewReader(t))
		if err := dec.Decode(&doc); err != nil {
			return nil, fileErr("not valid JSON: %v", err)
		}
		if _, err := dec.Token(); err != io.EOF {
			return nil, fileErr("unexpected data after the JSON object at offset %d", dec.InputOffset())
		}
		docs = append(docs, doc)
	} else {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var v any
			err := dec.Decode(&v)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fileErr("not valid YAML: %v", err)
			}
			if v == nil {
				continue
			}
			m, ok := v.(map[string]any)
			if !ok {
				return nil, fileErr("want a mapping with connections and routes at the top, got %T", v)
			}
			doc := map[string]json.RawMessage{}
			for k, x := range m {
				b, err := json.Marshal(x)
				if err != nil {
					return nil, fileErr("%s: %v", k, err)
				}
				doc[k] = b
			}
			docs = append(docs, doc)
		}
	}
	d := &Definitions{}
	for _, doc := range docs {
		for _, k := range slices.Sorted(maps.Keys(doc)) {
			if k != "connections" && k != "routes" {
				return nil, fileErr("unknown key %q: want connections and routes", k)
			}
		}
		var err error
		if d.Connections, err = decodeItems(file, "connection", doc["connections"], d.Connections, lookup); err != nil {
			return nil, err
		}
		if d.Routes, err = decodeItems(file, "route", doc["routes"], d.Routes, nil); err != nil {
			return nil, err
		}
	}
	if err := d.Check(); err != nil {
		var de *DefinitionError
		if errors.As(err, &de) {
			de.File = file
		}
		return nil, err
	}
	return d, nil
}

// decodeItems appends the definitions of a list to into, each decoded strictly.
func decodeItems[T any](file, kind string, list json.RawMessage, into []T, lookup func(string) (string, bool)) ([]T, error) {
	if len(list) == 0 || string(list) == "null" {
		return into, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(list, &items); err != nil {
		return nil, &DefinitionError{File: file, Err: validate.Invalid(kind+"s", "%ss: want a list", kind)}
	}
	for _, raw := range items {
		i := len(into)
		var named struct {
			Name string `json:"name"`
		}
		json.Unmarshal(raw, &named)
		var v T
		if e := validate.Decode(raw, &v); e != nil {
			return nil, &DefinitionError{File: file, Kind: kind, Index: i, Name: named.Name, Err: e}
		}
		if c, ok := any(&v).(*schemas.Connection); ok && lookup != nil {
			if e := expandSecrets(c, lookup); e != nil {
				return nil, &DefinitionError{File: file, Kind: kind, Index: i, Name: named.Name, Err: e}
			}
		}
		into = append(into, v)
	}
	return into, nil
}

// expandSecrets replaces each secret whose whole value is ${NAME} with the variable NAME.
func expandSecrets(c *schemas.Connection, lookup func(string) (string, bool)) *schemas.Error {
	fields := []struct {
		name string
		v    *string
	}{{"password", &c.Password}}
	if o := c.OAuth2; o != nil {
		fields = append(fields, []struct {
			name string
			v    *string
		}{{"oauth2.accessToken", &o.AccessToken}, {"oauth2.clientSecret", &o.ClientSecret}, {"oauth2.refreshToken", &o.RefreshToken}}...)
	}
	for _, f := range fields {
		name, ok := strings.CutPrefix(*f.v, "${")
		if !ok || !strings.HasSuffix(name, "}") {
			continue
		}
		name = strings.TrimSuffix(name, "}")
		v, set := lookup(name)
		if !set || v == "" {
			return validate.Invalid(f.name, "environment variable %s is not set", name)
		}
		*f.v = v
	}
	return nil
}

// Check checks every definition as a put does, filling in its defaults, and that no name
// is given twice; the first problem is a *DefinitionError.
func (d *Definitions) Check() error {
	seen := map[string]bool{}
	for i := range d.Connections {
		c := &d.Connections[i]
		if e := validate.Connection(c); e != nil {
			return &DefinitionError{Kind: "connection", Index: i, Name: c.Name, Err: e}
		}
		if seen[c.Name] {
			return &DefinitionError{Kind: "connection", Index: i, Name: c.Name, Err: validate.Invalid("name", "connection %s is defined twice", c.Name)}
		}
		seen[c.Name] = true
	}
	seen = map[string]bool{}
	for i := range d.Routes {
		r := &d.Routes[i]
		if e := validate.Route(r); e != nil {
			return &DefinitionError{Kind: "route", Index: i, Name: r.Name, Err: e}
		}
		if seen[r.Name] {
			return &DefinitionError{Kind: "route", Index: i, Name: r.Name, Err: validate.Invalid("name", "route %s is defined twice", r.Name)}
		}
		seen[r.Name] = true
	}
	return nil
}

// applyParallel is how many definitions an apply reads or writes at once.
const applyParallel = 32

// planned is one definition's change and, for a create or an update, what to write.
type planned struct {
	change schemas.Change
	key    string
	rev    uint64
	value  []byte
}

// Apply brings the stored definitions to req: definitions that differ from the stored ones
// are written with a compare-and-set of the revision read, equal ones are left alone, so
// applying the same definitions again changes nothing, and replicas applying them at once
// write each only once. Every definition is checked (and every change planned) before
// anything is written: a refusal changes nothing. With req.Prune, the stored definitions
// req.Declared does not name are deleted, routes first.
func (s *Store) Apply(ctx context.Context, req *schemas.ApplyRequest) ([]schemas.Change, error) {
	defs := Definitions{Connections: req.Connections, Routes: req.Routes}
	if err := defs.Check(); err != nil {
		var de *DefinitionError
		if errors.As(err, &de) {
			return nil, applyError(de.Kind, de.Index, de.Name, de.Err)
		}
		return nil, err
	}
	declared := map[string]bool{}
	if req.Declared != nil {
		for _, n := range req.Declared.Connections {
			declared[n] = true
		}
	}
	inRequest := map[string]bool{}
	for _, c := range defs.Connections {
		inRequest[c.Name] = true
	}
	if req.Prune {
		if req.Declared == nil {
			return nil, validate.Invalid("declared", "prune needs declared: the names of every definition to keep")
		}
		for i, r := range defs.Routes {
			if !declared[r.Connection] && !inRequest[r.Connection] {
				return nil, applyError("route", i, r.Name, validate.Invalid("connection", "connection %s is not declared, and prune would delete it", r.Connection))
			}
		}
	}

	if err := s.sharedMailboxes(ctx, defs.Routes, req); err != nil {
		return nil, err
	}

	// Plan: read every definition, decide, and refuse before writing anything.
	var known sync.Map // connection name -> bool (stored)
	connPlans := make([]planned, len(defs.Connections))
	routePlans := make([]planned, len(defs.Routes))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(applyParallel)
	for i, c := range defs.Connections {
		g.Go(func() error {
			p, err := s.planConnection(gctx, c)
			if e := (*schemas.Error)(nil); errors.As(err, &e) {
				return applyError("connection", i, c.Name, e)
			}
			connPlans[i] = p
			return err
		})
	}
	for i, r := range defs.Routes {
		g.Go(func() error {
			if !inRequest[r.Connection] && !(req.DryRun && declared[r.Connection]) {
				ok, err := s.connectionExists(gctx, &known, r.Connection)
				if err != nil {
					return err
				}
				if !ok {
					return applyError("route", i, r.Name, validate.Invalid("connection", "no connection named %s", r.Connection))
				}
			}
			p, err := s.planRoute(gctx, r)
			routePlans[i] = p
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	if !req.DryRun {
		if err := s.writePlans(ctx, connPlans, func(ctx context.Context, i int) (planned, error) {
			return s.planConnection(ctx, defs.Connections[i])
		}); err != nil {
			return nil, err
		}
		if err := s.writePlans(ctx, routePlans, func(ctx context.Context, i int) (planned, error) {
			return s.planRoute(ctx, defs.Routes[i])
		}); err != nil {
			return nil, err
		}
	}
	changes := make([]schemas.Change, 0, len(connPlans)+len(routePlans))
	for _, p := range slices.Concat(connPlans, routePlans) {
		changes = append(changes, p.change)
	}
	if req.Prune {
		deleted, err := s.prune(ctx, req.Declared, defs.Names(), req.DryRun)
		if err != nil {
			return changes, err
		}
		changes = append(changes, deleted...)
	}
	return changes, nil
}

// applyError names the definition of a refusal in its field: connections[3].host.
func applyError(kind string, i int, name string, e *schemas.Error) *schemas.Error {
	field := fmt.Sprintf("%ss[%d]", kind, i)
	if e.Field != "" {
		field += "." + e.Field
	}
	return &schemas.Error{Code: e.Code, Field: field, Message: fmt.Sprintf("%s %s: %s", kind, name, e.Message)}
}

// connectionExists reports whether a connection is stored, asking once per name.
func (s *Store) connectionExists(ctx context.Context, known *sync.Map, name string) (bool, error) {
	if v, ok := known.Load(name); ok {
		return v.(bool), nil
	}
	var c schemas.Connection
	_, ok, err := s.get(ctx, bus.ConnectionKey(name), &c)
	if err != nil {
		return false, err
	}
	known.Store(name, ok)
	return ok, nil
}

// writePlans writes the creates and updates of plans side by side. A write that lost the
// race to another writer is planned again from what that one wrote (replan), so replicas
// applying the same definitions converge on one revision.
func (s *Store) writePlans(ctx context.Context, plans []planned, replan func(context.Context, int) (planned, error)) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(applyParallel)
	for i := range plans {
		if plans[i].change.Action == schemas.ActionUnchanged {
			continue
		}
		g.Go(func() error {
			p := plans[i]
			return retryPut(p.key, func() error {
				if p.change.Action == schemas.ActionUnchanged {
					plans[i] = p
					return nil
				}
				rev, err := s.write(gctx, p.key, p.rev, json.RawMessage(p.value))
				if errors.Is(err, errRetry) {
					if p, err = replan(gctx, i); err != nil {
						return err
					}
					return errRetry
				}
				if err != nil {
					return err
				}
				p.change.Revision = rev
				plans[i] = p
				return nil
			})
		})
	}
	return g.Wait()
}

// planConnection decides what applying c does: c as a put would store it (secrets the
// file leaves out kept from the stored definition) compared with the stored one, secrets
// opened.
func (s *Store) planConnection(ctx context.Context, c schemas.Connection) (planned, error) {
	key := bus.ConnectionKey(c.Name)
	p := planned{key: key, change: schemas.Change{Kind: "connection", Name: c.Name}}
	if e := s.sealer.Probe(&c); e != nil {
		return p, e
	}
	c.Revision, c.PasswordSet = 0, false
	if c.OAuth2 != nil {
		o := *c.OAuth2
		o.AccessTokenSet, o.ClientSecretSet, o.RefreshTokenSet = false, false, false
		c.OAuth2 = &o
	}
	var cur schemas.Connection
	rev, ok, err := s.get(ctx, key, &cur)
	if err != nil {
		return p, err
	}
	p.rev = rev
	opened := ok
	if ok {
		if cur.OAuth2 != nil {
			o := *cur.OAuth2
			cur.OAuth2 = &o
		}
		opened = s.sealer.OpenConnection(&cur) == nil
		cur.Revision = 0
		if opened {
			if e := keepSecrets(&c, &cur); e != nil {
				return p, e
			}
		}
	}
	if e := validate.Credentials(&c); e != nil {
		return p, e
	}
	want, err := json.Marshal(c)
	if err != nil {
		return p, err
	}
	switch {
	case !ok:
		p.change.Action = schemas.ActionCreate
	default:
		had, _ := json.Marshal(cur)
		if opened && bytes.Equal(had, want) {
			p.change.Action, p.change.Revision = schemas.ActionUnchanged, rev
			return p, nil
		}
		p.change.Action, p.change.Fields = schemas.ActionUpdate, changedFields(had, want)
	}
	if err := s.sealer.SealConnection(&c); err != nil {
		return p, err
	}
	p.value, err = json.Marshal(c)
	return p, err
}

// planRoute decides what applying r does.
func (s *Store) planRoute(ctx context.Context, r schemas.Route) (planned, error) {
	r.Revision = 0
	key := bus.RouteKey(r.Name)
	p := planned{key: key, change: schemas.Change{Kind: "route", Name: r.Name}}
	var cur schemas.Route
	rev, ok, err := s.get(ctx, key, &cur)
	if err != nil {
		return p, err
	}
	p.rev = rev
	if p.value, err = json.Marshal(r); err != nil {
		return p, err
	}
	if !ok {
		p.change.Action = schemas.ActionCreate
		return p, nil
	}
	cur.Revision = 0
	had, _ := json.Marshal(cur)
	if bytes.Equal(had, p.value) {
		p.change.Action, p.change.Revision = schemas.ActionUnchanged, rev
		return p, nil
	}
	p.change.Action, p.change.Fields = schemas.ActionUpdate, changedFields(had, p.value)
	return p, nil
}

// changedFields names the top-level fields that differ between two JSON objects.
func changedFields(a, b []byte) []string {
	var x, y map[string]json.RawMessage
	json.Unmarshal(a, &x)
	json.Unmarshal(b, &y)
	var out []string
	for k := range maps.Keys(x) {
		if !bytes.Equal(x[k], y[k]) {
			out = append(out, k)
		}
	}
	for k := range maps.Keys(y) {
		if _, ok := x[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// prune deletes the stored routes, then connections, that neither keep nor applied names.
func (s *Store) prune(ctx context.Context, keep, applied *schemas.DefinitionNames, dryRun bool) ([]schemas.Change, error) {
	kept := func(lists ...[]string) map[string]bool {
		m := map[string]bool{}
		for _, l := range lists {
			for _, n := range l {
				m[n] = true
			}
		}
		return m
	}
	keepRoutes, keepConns := kept(keep.Routes, applied.Routes), kept(keep.Connections, applied.Connections)
	routes, err := s.ListRoutes(ctx)
	if err != nil {
		return nil, err
	}
	conns, err := s.ListConnections(ctx)
	if err != nil {
		return nil, err
	}
	var changes []schemas.Change
	type gone struct {
		key string
		rev uint64
	}
	var routeKeys, connKeys []gone
	for _, r := range routes {
		if !keepRoutes[r.Name] {
			changes = append(changes, schemas.Change{Kind: "route", Name: r.Name, Action: schemas.ActionDelete})
			routeKeys = append(routeKeys, gone{bus.RouteKey(r.Name), r.Revision})
		}
	}
	for _, c := range conns {
		if !keepConns[c.Name] {
			changes = append(changes, schemas.Change{Kind: "connection", Name: c.Name, Action: schemas.ActionDelete})
			connKeys = append(connKeys, gone{bus.ConnectionKey(c.Name), c.Revision})
		}
	}
	if dryRun {
		return changes, nil
	}
	for _, keys := range [][]gone{routeKeys, connKeys} {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(applyParallel)
		for _, k := range keys {
			g.Go(func() error { return s.delete(gctx, k.key, k.rev) })
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
	}
	return changes, nil
}
