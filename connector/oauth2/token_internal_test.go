package oauth2

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	oauth2 "golang.org/x/oauth2"

	"github.com/mailbus/mailbus/connector/retry"
)

// TestSummariseTokenError: the endpoint's refusals are permanent and name the field to fix,
// its troubles are temporary, and neither repeats the response body.
func TestSummariseTokenError(t *testing.T) {
	const body = `{"error_description":"secret-echo rt-123"}`
	for _, tc := range []struct {
		grant, code string
		status      int
		field       string // "" : temporary
	}{
		{GrantRefresh, "invalid_grant", 400, "oauth2.refreshToken"},
		{GrantClient, "invalid_client", 401, "oauth2.clientSecret"},
		{GrantClient, "", 401, "oauth2.clientSecret"},
		{GrantRefresh, "invalid_scope", 400, "oauth2.scopes"},
		{GrantRefresh, "unsupported_grant_type", 400, "oauth2"},
		{GrantRefresh, "", 404, "oauth2"},
		{GrantRefresh, "Bad Thing <b>", 400, "oauth2"},
		{GrantRefresh, "", 503, ""},
		{GrantRefresh, "temporarily_unavailable", 400, ""},
		{GrantRefresh, "", 429, ""},
	} {
		re := &oauth2.RetrieveError{Response: &http.Response{StatusCode: tc.status}, Body: []byte(body),
			ErrorCode: tc.code, ErrorDescription: "secret-echo rt-123"}
		err := summariseTokenError(tc.grant, re)
		var te *TokenError
		if !errors.As(err, &te) || te.Field != tc.field || retry.Marked(err) != (tc.field != "") {
			t.Errorf("%s %d: %v (permanent %v), want field %q", tc.code, tc.status, err, retry.Marked(err), tc.field)
		}
		if strings.Contains(err.Error(), "secret-echo") || strings.Contains(err.Error(), "<b>") {
			t.Errorf("%s %d: %q repeats the body", tc.code, tc.status, err)
		}
	}
	// The library's own complaints may quote the body; the transport's are kept.
	if err := summariseTokenError(GrantRefresh, errors.New("oauth2: cannot parse json: secret-echo")); strings.Contains(err.Error(), "secret-echo") || retry.Marked(err) {
		t.Errorf("parse error = %v", err)
	}
	if err := summariseTokenError(GrantRefresh, errors.New("dial tcp: connection refused")); !strings.Contains(err.Error(), "connection refused") || retry.Marked(err) {
		t.Errorf("transport error = %v", err)
	}
}
