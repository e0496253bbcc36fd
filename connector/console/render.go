package console

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mailbus/mailbus/schemas"
)

// base is what every page's layout needs.
type base struct {
	Lang  string
	Title string
	Nav   string // the active menu entry
	CSRF  string
	Flash string
	Live  string // the event stream URL the page's script follows, if any
	Here  string // this page's URL, for the language switch
}

// newBase fills the layout's data for a logged-in page.
func newBase(r *http.Request, s *session, nav, title string) base {
	lang := langOf(r)
	b := base{Lang: lang, Title: tr(lang, title), Nav: nav, Here: r.URL.RequestURI()}
	if s != nil {
		b.CSRF = s.CSRF
	}
	return b
}

// pageSet is one page's templates: the layout, the page, and its fragments.
type pageSet struct{ t *template.Template }

var pageNames = []string{"login", "error", "connections", "connection", "routes", "route", "events"}

func funcs() template.FuncMap {
	return template.FuncMap{
		"t": tr,
		"tf": func(lang, key string, args ...any) string {
			return fmt.Sprintf(tr(lang, key), args...)
		},
		"when": func(t *time.Time) string {
			if t == nil || t.IsZero() {
				return "—"
			}
			return t.UTC().Format("2006-01-02 15:04:05")
		},
		"list":     func(v ...string) []string { return v },
		"field":    newField,
		"oauth":    oauthValue,
		"oauthSet": oauthSet,
		"evrow":    func(lang string, r evRow) *evRowData { return &evRowData{Lang: lang, evRow: r} },
		"join":     strings.Join,
		"langs":    func() []string { return langs },
		// withLang is the URL of here in another language: the query kept, lang added.
		"withLang": func(here, lang string) string {
			u, err := url.Parse(here)
			if err != nil {
				return "?lang=" + lang
			}
			q := u.Query()
			q.Set("lang", lang)
			u.RawQuery = q.Encode()
			return u.RequestURI()
		},
	}
}

func parsePages() (map[string]*pageSet, error) {
	out := map[string]*pageSet{}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs()).ParseFS(templateFS, "templates/layout.html", "templates/fields.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: templates of %s: %w", name, err)
		}
		out[name] = &pageSet{t: t}
	}
	return out, nil
}

// render executes the page into a buffer first, so a template error is a clean 500 and
// not half a page.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, page string, data any) {
	var buf bytes.Buffer
	if err := c.pages[page].t.ExecuteTemplate(&buf, "layout", data); err != nil {
		c.log.Error("console: render", "page", page, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// fragment renders one named template of a page (table rows for the live views).
func (c *Console) fragment(page, name string, data any) (string, error) {
	var buf bytes.Buffer
	if err := c.pages[page].t.ExecuteTemplate(&buf, name, data); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// formPage is a page with a form whose inputs can carry a refusal.
type formPage interface {
	lang() string
	fieldError(name string) string
}

func (p *connectionPage) lang() string                  { return p.Lang }
func (p *connectionPage) fieldError(name string) string { return p.Errors[name] }

// fieldData is what the input templates need.
type fieldData struct {
	Lang, Name, ID, Label, Hint, Error string
	Value                              any
}

func newField(p formPage, name, label string, value any, hint string) fieldData {
	return fieldData{Lang: p.lang(), Name: name, ID: strings.ReplaceAll(name, ".", "-"), Label: label,
		Value: value, Hint: hint, Error: p.fieldError(name)}
}

func oauthValue(o *schemas.OAuth2, key string) string {
	if o == nil {
		return ""
	}
	switch key {
	case "tokenUrl":
		return o.TokenURL
	case "tenant":
		return o.Tenant
	case "clientId":
		return o.ClientID
	}
	return ""
}

func oauthSet(o *schemas.OAuth2, key string) bool {
	if o == nil {
		return false
	}
	switch key {
	case "clientSecret":
		return o.ClientSecretSet
	case "refreshToken":
		return o.RefreshTokenSet
	case "accessToken":
		return o.AccessTokenSet
	}
	return false
}
