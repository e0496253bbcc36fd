package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/mailbus/mailbus/schemas"
)

// routeFields are the route form's inputs, by JSON path.
var routeFields = []string{"connection", "name", "disabled", "description", "bus", "mailbox", "select", "backlog", "after", "moveTo"}

type routeRow struct {
	schemas.RouteStatus
	Name, Connection string
	Bus              int
	Disabled         bool
}

func (c *Console) routeRows(ctx context.Context) ([]routeRow, error) {
	reply, err := c.list(ctx, "route", true)
	if err != nil {
		return nil, err
	}
	rows := make([]routeRow, len(reply.Routes))
	for i, rt := range reply.Routes {
		rows[i] = routeRow{Name: rt.Name, Connection: rt.Connection, Bus: rt.Bus, Disabled: rt.Disabled}
		if i < len(reply.Statuses) {
			rows[i].RouteStatus = reply.Statuses[i]
		}
	}
	return rows, nil
}

type routePage struct {
	base
	R           schemas.Route
	New         bool
	Original    string
	Bus         string
	Connections []string
	Errors      map[string]string
	FormError   string
}

func (p *routePage) lang() string                  { return p.Lang }
func (p *routePage) fieldError(name string) string { return p.Errors[name] }

func (c *Console) connectionNames(ctx context.Context) ([]string, error) {
	reply, err := c.list(ctx, "connection", false)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(reply.Connections))
	for i, cn := range reply.Connections {
		names[i] = cn.Name
	}
	return names, nil
}

func (c *Console) routeForm(w http.ResponseWriter, r *http.Request, s *session) {
	p := &routePage{base: newBase(r, s, "routes", "route.new")}
	names, err := c.connectionNames(r.Context())
	if err != nil {
		c.controlFail(w, r, err)
		return
	}
	p.Connections = names
	name := r.URL.Query().Get("name")
	if name == "" {
		p.New = true
		p.R = schemas.Route{Mailbox: "INBOX", Select: schemas.SelectAll, Backlog: schemas.BacklogUnseen, After: schemas.AfterMarkRead,
			Connection: r.URL.Query().Get("connection")}
	} else {
		reply, err := c.request(r.Context(), "route", "get", schemas.NameRequest{Name: name})
		if err != nil {
			c.controlFail(w, r, err)
			return
		}
		p.R = *reply.Route
		p.Original = name
		p.Title = fmt.Sprintf(tr(p.Lang, "route.edit"), name)
	}
	p.Bus = strconv.Itoa(p.R.Bus)
	c.render(w, r, http.StatusOK, "route", p)
}

func (c *Console) routeSave(w http.ResponseWriter, r *http.Request, s *session) {
	f := r.PostForm
	p := &routePage{base: newBase(r, s, "routes", "route.new"), Original: f.Get("original")}
	p.New = p.Original == ""
	if !p.New {
		p.Title = fmt.Sprintf(tr(p.Lang, "route.edit"), p.Original)
	}
	names, err := c.connectionNames(r.Context())
	if err != nil {
		c.controlFail(w, r, err)
		return
	}
	p.Connections = names
	var rt schemas.Route
	name := strings.TrimSpace(f.Get("name"))
	if p.Original != "" && p.Original == name {
		reply, err := c.request(r.Context(), "route", "get", schemas.NameRequest{Name: name})
		var e *schemas.Error
		switch {
		case err == nil:
			rt = *reply.Route
		case errors.As(err, &e) && e.Code == schemas.CodeNotFound:
		default:
			c.controlFail(w, r, err)
			return
		}
		if rev, err := strconv.ParseUint(f.Get("revision"), 10, 64); err == nil {
			rt.Revision = rev
		}
	}
	rt.Connection = f.Get("connection")
	rt.Name = name
	rt.Disabled = f.Get("disabled") != ""
	rt.Description = f.Get("description")
	rt.Mailbox = strings.TrimSpace(f.Get("mailbox"))
	rt.Select = f.Get("select")
	rt.Backlog = f.Get("backlog")
	rt.After = f.Get("after")
	rt.MoveTo = strings.TrimSpace(f.Get("moveTo"))
	rt.Bus = 0
	p.R = rt
	p.Bus = strings.TrimSpace(f.Get("bus"))

	data, err := json.Marshal(rt)
	if err != nil {
		c.controlFail(w, r, err)
		return
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		c.controlFail(w, r, err)
		return
	}
	putNumber(m, "bus", p.Bus)

	c.save(w, r, "route", p.Original, rt.Name, m, p)
}

func (p *routePage) setError(e *schemas.Error) {
	field := formField(e.Field)
	if slices.Contains(routeFields, field) {
		p.Errors = map[string]string{field: e.Message}
	}
	p.FormError = fmt.Sprintf(tr(p.Lang, "common.formErr"), e.Error())
}

func (c *Console) routeDelete(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PostForm.Get("name")
	if _, err := c.request(r.Context(), "route", "delete", schemas.NameRequest{Name: name}); err != nil {
		c.controlFail(w, r, err)
		return
	}
	http.Redirect(w, r, Base+"routes?deleted="+url.QueryEscape(name), http.StatusSeeOther)
}
