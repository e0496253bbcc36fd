package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/mailbus/mailbus/connector/store"
	"github.com/mailbus/mailbus/schemas"
)

// ApplyOptions change what Apply does.
type ApplyOptions struct {
	// DryRun reports the changes and writes nothing.
	DryRun bool
	// Prune deletes the stored connections and routes the definitions leave out.
	Prune bool
}

// batchBytes bounds the definitions of one request below the server's max payload.
const batchBytes = 512 << 10

// Apply brings the stored definitions to defs, which must have passed Check, and returns
// what changed (or would change), connections first, then routes, then deletions.
//
// The definitions go in requests of at most batchBytes, so any number fit. Nothing is
// written unless all of them are accepted: a dry run of the whole set comes first (reads
// only), and only the definitions it finds to differ are sent again to be written. A route
// naming a connection the file does not define must name a stored one.
func (c *Client) Apply(ctx context.Context, defs *store.Definitions, opt ApplyOptions) ([]schemas.Change, error) {
	file := map[string]bool{}
	for _, d := range defs.Connections {
		file[d.Name] = true
	}
	for i, r := range defs.Routes {
		if file[r.Connection] {
			continue
		}
		if opt.Prune {
			return nil, &store.DefinitionError{Kind: "route", Index: i, Name: r.Name, Err: &schemas.Error{
				Code: schemas.CodeInvalid, Field: "connection",
				Message: fmt.Sprintf("connection %s is not in the file, and --prune would delete it", r.Connection)}}
		}
		if _, err := c.Connection(ctx, r.Connection); err != nil {
			var e *schemas.Error
			if errors.As(err, &e) && e.Code == schemas.CodeNotFound {
				return nil, &store.DefinitionError{Kind: "route", Index: i, Name: r.Name, Err: &schemas.Error{
					Code: schemas.CodeInvalid, Field: "connection",
					Message: fmt.Sprintf("no connection named %s, in the file or stored", r.Connection)}}
			}
			return nil, err
		}
		file[r.Connection] = true // stored: asked once
	}

	plan, err := c.applyAll(ctx, defs, true)
	if err != nil {
		return nil, err
	}
	if !opt.DryRun {
		changed := &store.Definitions{}
		for i, ch := range plan[:len(defs.Connections)] {
			if ch.Action != schemas.ActionUnchanged {
				changed.Connections = append(changed.Connections, defs.Connections[i])
			}
		}
		for i, ch := range plan[len(defs.Connections):] {
			if ch.Action != schemas.ActionUnchanged {
				changed.Routes = append(changed.Routes, defs.Routes[i])
			}
		}
		done, err := c.applyAll(ctx, changed, false)
		if err != nil {
			return nil, err
		}
		byKey := map[[2]string]schemas.Change{}
		for _, ch := range done {
			byKey[[2]string{ch.Kind, ch.Name}] = ch
		}
		for i, ch := range plan {
			if d, ok := byKey[[2]string{ch.Kind, ch.Name}]; ok {
				plan[i] = d
			}
		}
	}
	if opt.Prune {
		r, err := c.Do(ctx, "definitions", "apply", schemas.ApplyRequest{
			DryRun: opt.DryRun, Prune: true, Declared: defs.Names(),
		}, applyTimeout)
		if err != nil {
			return plan, err
		}
		plan = append(plan, r.Changes...)
	}
	return plan, nil
}

// applyAll sends defs in batches, connections before routes, and returns the changes in
// the order of defs.
func (c *Client) applyAll(ctx context.Context, defs *store.Definitions, dryRun bool) ([]schemas.Change, error) {
	var out []schemas.Change
	send := func(req *schemas.ApplyRequest, offset int) error {
		r, err := c.Do(ctx, "definitions", "apply", req, applyTimeout)
		if err != nil {
			var e *schemas.Error
			if errors.As(err, &e) {
				return shiftIndex(e, req, offset)
			}
			return err
		}
		out = append(out, r.Changes...)
		return nil
	}
	if err := batches(defs.Connections, func(items []schemas.Connection, offset int) error {
		return send(&schemas.ApplyRequest{Connections: items, DryRun: dryRun}, offset)
	}); err != nil {
		return nil, err
	}
	inFile := map[string]bool{}
	for _, d := range defs.Connections {
		inFile[d.Name] = true
	}
	err := batches(defs.Routes, func(items []schemas.Route, offset int) error {
		req := &schemas.ApplyRequest{Routes: items, DryRun: dryRun}
		if dryRun { // the file's connections are not stored yet
			req.Declared = &schemas.DefinitionNames{Connections: []string{}, Routes: []string{}}
			for _, r := range items {
				if inFile[r.Connection] && !slices.Contains(req.Declared.Connections, r.Connection) {
					req.Declared.Connections = append(req.Declared.Connections, r.Connection)
				}
			}
		}
		return send(req, offset)
	})
	return out, err
}

// batches calls send with runs of items of at most batchBytes of JSON, and the index of
// each run's first item.
func batches[T any](items []T, send func([]T, int) error) error {
	start, size := 0, 0
	for i := range items {
		b, err := json.Marshal(items[i])
		if err != nil {
			return err
		}
		if i > start && size+len(b) > batchBytes {
			if err := send(items[start:i], start); err != nil {
				return err
			}
			start, size = i, 0
		}
		size += len(b)
	}
	if start < len(items) {
		return send(items[start:], start)
	}
	return nil
}

// shiftIndex turns a refusal's connections[i] of a batch into the position in the whole
// set, as a *store.DefinitionError.
func shiftIndex(e *schemas.Error, req *schemas.ApplyRequest, offset int) error {
	var kind string
	var i int
	var rest string
	for _, k := range []string{"connection", "route"} {
		if n, _ := fmt.Sscanf(e.Field, k+"s[%d]", &i); n == 1 {
			kind = k
			break
		}
	}
	if kind == "" {
		return e
	}
	prefix := fmt.Sprintf("%ss[%d]", kind, i)
	rest = e.Field[len(prefix):]
	if len(rest) > 0 && rest[0] == '.' {
		rest = rest[1:]
	}
	name := ""
	if kind == "connection" && i < len(req.Connections) {
		name = req.Connections[i].Name
	} else if kind == "route" && i < len(req.Routes) {
		name = req.Routes[i].Name
	}
	msg := e.Message
	if p := kind + " " + name + ": "; len(msg) > len(p) && msg[:len(p)] == p {
		msg = msg[len(p):]
	}
	return &store.DefinitionError{Kind: kind, Index: offset + i, Name: name,
		Err: &schemas.Error{Code: e.Code, Field: rest, Message: msg}}
}
