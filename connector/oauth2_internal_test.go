package connector

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/mailbus/mailbus/connector/secrets"
	"github.com/mailbus/mailbus/schemas"
)

// TestSaveRefreshToken: a rotated refresh token replaces the stored one, sealed, only when
// the stored one is still the one that was used; one an operator put meanwhile stays.
func TestSaveRefreshToken(t *testing.T) {
	rt := newEWSRuntime(t)
	key := make([]byte, 32)
	rand.Read(key)
	sl, err := secrets.NewSealer(base64.StdEncoding.EncodeToString(key), nil)
	if err != nil {
		t.Fatalf("NewSealer() = %v", err)
	}
	st := &store{kv: rt.Storage.Config, sealer: sl}
	ctx := context.Background()
	old, operators, rotated := "rt-old-"+rand.Text(), "rt-operator-"+rand.Text(), "rt-rotated-"+rand.Text()
	c := schemas.Connection{Name: "c", Type: schemas.TypeIMAP, Host: "imap.example.com", Auth: schemas.AuthOAuth2,
		Username: "bot", OAuth2: &schemas.OAuth2{Provider: ProviderGoogle, ClientID: "id", RefreshToken: old}}
	if _, err := st.PutConnection(ctx, c); err != nil {
		t.Fatalf("PutConnection() = %v", err)
	}

	// An operator replaced the token after the worker read it: the rotation is not stored.
	c.OAuth2.RefreshToken = operators
	if _, err := st.PutConnection(ctx, c); err != nil {
		t.Fatalf("PutConnection() = %v", err)
	}
	if saved, err := st.saveRefreshToken(ctx, "c", old, rotated); saved || err != nil {
		t.Fatalf("saveRefreshToken(over a changed token) = %v, %v; want false, nil", saved, err)
	}
	if got, ok := st.refreshToken(ctx, "c"); !ok || got != operators {
		t.Fatalf("stored refresh token = %q, %v; want the operator's", got, ok)
	}

	// Over the token it used, it is stored, sealed, and the rest of the definition stays.
	before, _ := st.GetConnection(ctx, "c")
	if saved, err := st.saveRefreshToken(ctx, "c", operators, rotated); !saved || err != nil {
		t.Fatalf("saveRefreshToken() = %v, %v; want true, nil", saved, err)
	}
	if got, ok := st.refreshToken(ctx, "c"); !ok || got != rotated {
		t.Fatalf("stored refresh token = %q, %v; want the rotated one", got, ok)
	}
	e, err := rt.Storage.Config.Get(ctx, ConnectionKey("c"))
	if err != nil {
		t.Fatalf("Get() = %v", err)
	}
	if bytes.Contains(e.Value(), []byte(rotated)) || !bytes.Contains(e.Value(), []byte(`"refreshToken":"enc:v1:`)) {
		t.Fatalf("stored value = %s, want the refresh token sealed", e.Value())
	}
	after, _ := st.GetConnection(ctx, "c")
	if after.Revision == before.Revision || after.OAuth2.ClientID != "id" || after.OAuth2.TokenURL != googleTokenURL || after.Username != "bot" {
		t.Fatalf("after the save: %+v, before %+v", after, before)
	}
}

// TestSummariseTokenError: the endpoint's refusals are permanent and name the field to fix,
// its troubles are temporary, and neither repeats the response body.
func TestSummariseTokenError(t *testing.T) {
	const body = `{"error_description":"secret-echo rt-123"}`
	for _, tc := range []struct {
		grant, code string
		status      int
		field       string // "" : temporary
	}{
		{grantRefresh, "invalid_grant", 400, "oauth2.refreshToken"},
		{grantClient, "invalid_client", 401, "oauth2.clientSecret"},
		{grantClient, "", 401, "oauth2.clientSecret"},
		{grantRefresh, "invalid_scope", 400, "oauth2.scopes"},
		{grantRefresh, "unsupported_grant_type", 400, "oauth2"},
		{grantRefresh, "", 404, "oauth2"},
		{grantRefresh, "Bad Thing <b>", 400, "oauth2"},
		{grantRefresh, "", 503, ""},
		{grantRefresh, "temporarily_unavailable", 400, ""},
		{grantRefresh, "", 429, ""},
	} {
		re := &oauth2.RetrieveError{Response: &http.Response{StatusCode: tc.status}, Body: []byte(body),
			ErrorCode: tc.code, ErrorDescription: "secret-echo rt-123"}
		err := summariseTokenError(tc.grant, re)
		var te *tokenError
		if !errors.As(err, &te) || te.field != tc.field || IsPermanent(err) != (tc.field != "") {
			t.Errorf("%s %d: %v (permanent %v), want field %q", tc.code, tc.status, err, IsPermanent(err), tc.field)
		}
		if strings.Contains(err.Error(), "secret-echo") || strings.Contains(err.Error(), "<b>") {
			t.Errorf("%s %d: %q repeats the body", tc.code, tc.status, err)
		}
	}
	// The library's own complaints may quote the body; the transport's are kept.
	if err := summariseTokenError(grantRefresh, errors.New("oauth2: cannot parse json: secret-echo")); strings.Contains(err.Error(), "secret-echo") || IsPermanent(err) {
		t.Errorf("parse error = %v", err)
	}
	if err := summariseTokenError(grantRefresh, errors.New("dial tcp: connection refused")); !strings.Contains(err.Error(), "connection refused") || IsPermanent(err) {
		t.Errorf("transport error = %v", err)
	}
}
