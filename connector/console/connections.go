package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mailbus/mailbus/schemas"
)

// exchangeVersions are the choices of the Exchange version field; the control service
// decides what it accepts (TestExchangeVersionsMatch keeps the two lists equal).
var exchangeVersions = []string{
	"Exchange2007_SP1", "Exchange2010", "Exchange2010_SP1", "Exchange2010_SP2",
	"Exchange2013", "Exchange2013_SP1", "Exchange2016", "Exchange2019",
}

// ExchangeVersions returns the versions the form offers.
func ExchangeVersions() []string { return slices.Clone(exchangeVersions) }

// connFields are the form's inputs in the product page's order, by JSON path: a refused
// put's field is shown next to the input of the same name.
var connFields = []string{
	"name", "disabled", "description", "logLevel", "type", "host", "port", "encryption",
	"verifyWithoutSending", "testRecipients", "exchangeUrl", "exchangeVersion", "auth",
	"username", "password", "domain", "pollInterval",
	"oauth2.provider", "oauth2.tokenUrl", "oauth2.tenant", "oauth2.clientId",
	"oauth2.clientSecret", "oauth2.refreshToken", "oauth2.accessToken", "oauth2.scopes",
}

type connRow struct {
	Name, Type, Host string
	Disabled         bool
	Routes           []stateCount
	Check            *checkSummary
}

type stateCount struct {
	State string
	N     int
}

// connectionRows is the list: each connection with the states of its routes and the last
// check run from this console.
func (c *Console) connectionRows(ctx context.Context) ([]connRow, error) {
	conns, err := c.list(ctx, "connection", false)
	if err != nil {
		return nil, err
	}
	routes, err := c.list(ctx, "route", true)
	if err != nil {
		return nil, err
	}
	states := map[string]map[string]int{}
	for i, rt := range routes.Routes {
		st := schemas.StateStopped
		if i < len(routes.Statuses) {
			st = routes.Statuses[i].State
		}
		if states[rt.Connection] == nil {
			states[rt.Connection] = map[string]int{}
		}
		states[rt.Connection][st]++
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rows := make([]connRow, 0, len(conns.Connections))
	for _, cn := range conns.Connections {
		row := connRow{Name: cn.Name, Type: cn.Type, Disabled: cn.Disabled, Host: hostOf(&cn)}
		for st, n := range states[cn.Name] {
			row.Routes = append(row.Routes, stateCount{st, n})
		}
		sort.Slice(row.Routes, func(i, j int) bool { return row.Routes[i].State < row.Routes[j].State })
		if sum, ok := c.checks[cn.Name]; ok {
			row.Check = &sum
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func hostOf(cn *schemas.Connection) string {
	if cn.Type == schemas.TypeExchange {
		return cn.ExchangeURL
	}
	if cn.Port != 0 {
		return cn.Host + ":" + strconv.Itoa(cn.Port)
	}
	return cn.Host
}

// connectionPage is the form.
type connectionPage struct {
	base
	C          schemas.Connection // as stored (redacted) or as typed; never a secret
	New        bool
	Original   string
	Port       string
	Poll       string
	Recipients string
	Scopes     string
	Verify     bool
	Errors     map[string]string
	FormError  string
	Retype     bool
	Check      *checkView
	Versions   []string
	LogFrom    string
	LogTo      string
}

// checkView is a connection check's outcome for the page.
type checkView struct {
	Lang    string
	Note    string
	OK      bool
	Error   string
	Field   string
	Stages  []schemas.Stage
	Mailbox *schemas.MailboxCheck
	Caps    string
}

func (c *Console) connectionForm(w http.ResponseWriter, r *http.Request, s *session) {
	p := &connectionPage{base: newBase(r, s, "connections", "conn.new"), Versions: exchangeVersions}
	name := r.URL.Query().Get("name")
	if name == "" {
		p.New = true
		v := true
		p.C = schemas.Connection{Type: schemas.TypeIMAP, Encryption: schemas.EncryptionSSL,
			Auth: schemas.AuthBasic, LogLevel: schemas.LogErrors, VerifyWithoutSending: &v}
		p.Poll = "60s"
	} else {
		reply, err := c.request(r.Context(), "connection", "get", schemas.NameRequest{Name: name})
		if err != nil {
			c.controlFail(w, r, err)
			return
		}
		p.C = *reply.Connection
		p.Original = name
		p.Title = fmt.Sprintf(tr(p.Lang, "conn.edit"), name)
	}
	p.fill()
	c.render(w, r, http.StatusOK, "connection", p)
}

// fill derives the text inputs from C.
func (p *connectionPage) fill() {
	if p.C.Port != 0 {
		p.Port = strconv.Itoa(p.C.Port)
	}
	if p.C.PollInterval != 0 {
		p.Poll = time.Duration(p.C.PollInterval).String()
	}
	p.Recipients = strings.Join(p.C.TestRecipients, ", ")
	p.Verify = p.C.VerifyWithoutSending == nil || *p.C.VerifyWithoutSending
	if p.C.OAuth2 != nil {
		p.Scopes = strings.Join(p.C.OAuth2.Scopes, " ")
	}
}

// connectionRequest turns the posted form into the JSON of a put or a draft check. It
// starts from the stored definition of the same name, so what the form does not show
// (idle, passwordFrom, ...) is kept; empty secrets are left out, so the stored ones are
// kept. Numbers and durations go as typed: the control service judges them.
func (c *Console) connectionRequest(ctx context.Context, f url.Values) (map[string]any, *connectionPage, error) {
	p := &connectionPage{Original: f.Get("original"), Versions: exchangeVersions}
	var cn schemas.Connection
	if p.Original != "" && p.Original == f.Get("name") {
		reply, err := c.request(ctx, "connection", "get", schemas.NameRequest{Name: p.Original})
		var e *schemas.Error
		switch {
		case err == nil:
			cn = *reply.Connection
		case errors.As(err, &e) && e.Code == schemas.CodeNotFound:
		default:
			return nil, nil, err
		}
		if rev, err := strconv.ParseUint(f.Get("revision"), 10, 64); err == nil {
			cn.Revision = rev
		}
	}
	cn.PasswordSet = false
	cn.Name = strings.TrimSpace(f.Get("name"))
	cn.Disabled = f.Get("disabled") != ""
	cn.Description = f.Get("description")
	cn.LogLevel = f.Get("logLevel")
	cn.Type = f.Get("type")
	cn.Host = strings.TrimSpace(f.Get("host"))
	cn.Encryption = f.Get("encryption")
	verify := f.Get("verifyWithoutSending") != ""
	cn.VerifyWithoutSending = &verify
	cn.TestRecipients = nil
	for _, a := range strings.Split(f.Get("testRecipients"), ",") {
		if a = strings.TrimSpace(a); a != "" {
			cn.TestRecipients = append(cn.TestRecipients, a)
		}
	}
	cn.ExchangeURL = strings.TrimSpace(f.Get("exchangeUrl"))
	cn.ExchangeVersion = f.Get("exchangeVersion")
	if cn.Type != schemas.TypeExchange {
		cn.ExchangeURL, cn.ExchangeVersion = "", ""
	}
	cn.Auth = f.Get("auth")
	cn.Username = strings.TrimSpace(f.Get("username"))
	cn.Password = f.Get("password")
	cn.Domain = strings.TrimSpace(f.Get("domain"))
	if cn.Auth == schemas.AuthOAuth2 {
		o := &schemas.OAuth2{}
		if cn.OAuth2 != nil {
			*o = *cn.OAuth2
		}
		o.AccessTokenSet, o.ClientSecretSet, o.RefreshTokenSet = false, false, false
		o.Provider = f.Get("oauth2.provider")
		o.TokenURL = strings.TrimSpace(f.Get("oauth2.tokenUrl"))
		o.Tenant = strings.TrimSpace(f.Get("oauth2.tenant"))
		o.ClientID = strings.TrimSpace(f.Get("oauth2.clientId"))
		o.ClientSecret = f.Get("oauth2.clientSecret")
		o.RefreshToken = f.Get("oauth2.refreshToken")
		o.AccessToken = f.Get("oauth2.accessToken")
		o.Scopes = strings.Fields(f.Get("oauth2.scopes"))
		cn.OAuth2 = o
	} else {
		cn.OAuth2 = nil
	}
	cn.Port, cn.PollInterval = 0, 0

	p.C = cn
	p.C.Password = ""
	if p.C.OAuth2 != nil {
		o := *p.C.OAuth2
		o.AccessToken, o.ClientSecret, o.RefreshToken = "", "", ""
		p.C.OAuth2 = &o
	}
	p.Port = strings.TrimSpace(f.Get("port"))
	p.Poll = strings.TrimSpace(f.Get("pollInterval"))
	p.Recipients = f.Get("testRecipients")
	p.Verify = verify
	p.Scopes = f.Get("oauth2.scopes")
	p.Retype = cn.Password != "" || (cn.OAuth2 != nil && (cn.OAuth2.ClientSecret != "" || cn.OAuth2.RefreshToken != "" || cn.OAuth2.AccessToken != ""))

	data, err := json.Marshal(cn)
	if err != nil {
		return nil, nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, nil, err
	}
	delete(m, "passwordSet")
	putNumber(m, "port", p.Port)
	if p.Poll != "" {
		m["pollInterval"] = p.Poll
	} else {
		delete(m, "pollInterval")
	}
	return m, p, nil
}

// sameDefinition says whether a form's request holds what is stored (secrets aside).
func sameDefinition(req map[string]any, stored *schemas.Connection) bool {
	norm := func(v any) any {
		b, err := json.Marshal(v)
		if err != nil {
			return nil
		}
		var m map[string]any
		json.Unmarshal(b, &m)
		for _, k := range []string{"revision", "passwordSet", "password"} {
			delete(m, k)
		}
		if o, ok := m["oauth2"].(map[string]any); ok {
			for _, k := range []string{"accessTokenSet", "clientSecretSet", "refreshTokenSet"} {
				delete(o, k)
			}
		}
		return m
	}
	return reflect.DeepEqual(norm(req), norm(stored))
}

// putNumber sets m[key] to the typed text: a JSON number when it is one, else the text
// itself, so the control service names the field and says what it wants.
func putNumber(m map[string]any, key, text string) {
	switch {
	case text == "":
		delete(m, key)
	case json.Valid([]byte(text)) && strings.Trim(text, "0123456789-") == "":
		m[key] = json.Number(text)
	default:
		m[key] = text
	}
}

// postedConnection reads the posted connection form into a control request and the page
// that shows it again; false when the page was answered already (a control failure).
func (c *Console) postedConnection(w http.ResponseWriter, r *http.Request, s *session) (map[string]any, *connectionPage, bool) {
	req, p, err := c.connectionRequest(r.Context(), r.PostForm)
	if err != nil {
		c.controlFail(w, r, err)
		return nil, nil, false
	}
	p.base = newBase(r, s, "connections", "conn.new")
	p.New = p.Original == ""
	if !p.New {
		p.Title = fmt.Sprintf(tr(p.Lang, "conn.edit"), p.Original)
	}
	return req, p, true
}

func (c *Console) connectionSave(w http.ResponseWriter, r *http.Request, s *session) {
	req, p, ok := c.postedConnection(w, r, s)
	if !ok {
		return
	}
	c.save(w, r, "connection", p.Original, p.C.Name, req, p)
}

// setError puts a refusal next to the input it names, or above the form.
func (p *connectionPage) setError(e *schemas.Error) {
	field := formField(e.Field)
	if slices.Contains(connFields, field) {
		p.Errors = map[string]string{field: e.Message}
	}
	p.FormError = fmt.Sprintf(tr(p.Lang, "common.formErr"), e.Error())
}

// save puts the definition body of entity ("connection", "route") from its form page p
// (which shows a refusal next to its input),
// refusing first a new name (original is the name it was opened with) that would
// overwrite another definition without asking. Then it goes back to the list, or shows the
// form again with the refusal next to its field.
func (c *Console) save(w http.ResponseWriter, r *http.Request, entity, original, name string, body any, p interface{ setError(*schemas.Error) }) {
	if original != name && name != "" {
		if _, err := c.request(r.Context(), entity, "get", schemas.NameRequest{Name: name}); err == nil {
			p.setError(&schemas.Error{Code: schemas.CodeConflict, Field: "name",
				Message: fmt.Sprintf("a %s %q exists already: open it to change it", entity, name)})
			c.render(w, r, http.StatusConflict, entity, p)
			return
		}
	}
	reply, err := c.request(r.Context(), entity, "put", body)
	var e *schemas.Error
	if errors.As(err, &e) {
		p.setError(e)
		c.render(w, r, http.StatusUnprocessableEntity, entity, p)
		return
	}
	if err != nil {
		c.controlFail(w, r, err)
		return
	}
	saved := name
	switch {
	case reply.Connection != nil:
		saved = reply.Connection.Name
	case reply.Route != nil:
		saved = reply.Route.Name
	}
	http.Redirect(w, r, Base+entity+"s?saved="+url.QueryEscape(saved), http.StatusSeeOther)
}

// formField maps a JSON path to the form input that holds it: testRecipients[1] is the
// testRecipients input.
func formField(path string) string {
	if i := strings.IndexByte(path, '['); i >= 0 {
		path = path[:i]
	}
	return path
}

func (c *Console) connectionCheck(w http.ResponseWriter, r *http.Request, s *session) {
	req, p, ok := c.postedConnection(w, r, s)
	if !ok {
		return
	}
	delete(req, "revision")
	// The control service tests a draft with the secrets it holds only: with none typed, a
	// saved connection is tested by name, and the page says when the form differs from it.
	var body any = req
	var note string
	if !p.Retype && p.Original != "" && p.Original == p.C.Name {
		if stored, err := c.request(r.Context(), "connection", "get", schemas.NameRequest{Name: p.Original}); err == nil {
			body = schemas.NameRequest{Name: p.Original}
			if !sameDefinition(req, stored.Connection) {
				note = tr(p.Lang, "conn.check.saved")
			}
		}
	}
	reply, err := c.request(r.Context(), "connection", "test", body)
	if err != nil {
		c.controlFail(w, r, err)
		return
	}
	v := &checkView{Lang: p.Lang, OK: reply.OK, Stages: reply.Stages, Mailbox: reply.Mailbox,
		Caps: strings.Join(reply.Capabilities, " "), Note: note}
	if reply.Error != nil {
		v.Error, v.Field = reply.Error.Message, formField(reply.Error.Field)
		if len(reply.Stages) == 0 && reply.Error.Code == schemas.CodeInvalid {
			p.setError(reply.Error)
		}
	}
	if len(reply.Stages) > 0 || reply.OK {
		sum := checkSummary{At: time.Now(), OK: reply.OK, Message: tr(p.Lang, "conn.check.ok")}
		if !reply.OK && reply.Error != nil {
			sum.Message = reply.Error.Message
		}
		c.mu.Lock()
		c.checks[p.C.Name] = sum
		c.mu.Unlock()
	}
	p.Check = v
	if r.Header.Get("X-Console-Fragment") == "check" {
		out, err := c.fragment("connection", "check", v)
		if err != nil {
			c.log.Error("console: render", "err", err)
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(out))
		return
	}
	c.render(w, r, http.StatusOK, "connection", p)
}

func (c *Console) connectionDelete(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PostForm.Get("name")
	if _, err := c.request(r.Context(), "connection", "delete", schemas.NameRequest{Name: name}); err != nil {
		c.controlFail(w, r, err)
		return
	}
	http.Redirect(w, r, Base+"connections?deleted="+url.QueryEscape(name), http.StatusSeeOther)
}

// logTimeLayouts are what the from/to inputs accept: datetime-local's forms, RFC 3339, a date.
var logTimeLayouts = []string{"2006-01-02T15:04", "2006-01-02T15:04:05", time.RFC3339, "2006-01-02"}

func parseLogTime(s string) (*time.Time, bool) {
	if s == "" {
		return nil, true
	}
	for _, l := range logTimeLayouts {
		if t, err := time.ParseInLocation(l, s, time.UTC); err == nil {
			return &t, true
		}
	}
	return nil, false
}

// connectionLog sends the connection's log as a text file, entries from..to.
func (c *Console) connectionLog(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	name := q.Get("name")
	from, ok1 := parseLogTime(q.Get("from"))
	to, ok2 := parseLogTime(q.Get("to"))
	if !ok1 || !ok2 {
		bad := q.Get("from")
		if ok1 {
			bad = q.Get("to")
		}
		c.fail(w, r, http.StatusBadRequest, "conn.log.badTime", bad)
		return
	}
	// The text is the control service's own (as mailbus log prints it); "to" is applied
	// here, by each line's leading time.
	reply, err := c.request(r.Context(), "connection", "log",
		schemas.LogRequest{Name: name, Since: from, Limit: maxLogEntries, Format: "text"})
	if err != nil {
		c.controlFail(w, r, err)
		return
	}
	text := reply.Text
	if to != nil {
		var b strings.Builder
		for line := range strings.Lines(text) {
			stamp, _, _ := strings.Cut(line, " ")
			if at, err := time.Parse(time.RFC3339, stamp); err == nil && at.After(*to) {
				continue
			}
			b.WriteString(line)
		}
		text = b.String()
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`-log.txt"`)
	w.Write([]byte(text))
}

// maxLogEntries is the most the control service gives in one read.
const maxLogEntries = 10000

// controlFail shows a refusal (not found, conflict) or an unreachable control service.
func (c *Console) controlFail(w http.ResponseWriter, r *http.Request, err error) {
	var e *schemas.Error
	if errors.As(err, &e) {
		status := http.StatusUnprocessableEntity
		switch e.Code {
		case schemas.CodeNotFound:
			status = http.StatusNotFound
		case schemas.CodeConflict:
			status = http.StatusConflict
		}
		lang := langOf(r)
		c.render(w, r, status, "error", &errorPage{
			base:    base{Lang: lang, Title: tr(lang, "err.title"), Here: Base + "connections"},
			Message: e.Error(),
		})
		return
	}
	c.log.Warn("console: control request failed", "err", err)
	c.fail(w, r, http.StatusBadGateway, "err.control", err.Error())
}

// flash is the notice of a redirect after a save or a delete.
func flash(r *http.Request, lang string) string {
	q := r.URL.Query()
	if n := q.Get("saved"); n != "" {
		return fmt.Sprintf(tr(lang, "common.saved"), n)
	}
	if n := q.Get("deleted"); n != "" {
		return fmt.Sprintf(tr(lang, "common.deleted"), n)
	}
	return ""
}
