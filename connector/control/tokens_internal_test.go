package control

import (
	"context"
	"testing"

	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/connector/secrets"
	"github.com/mailbus/mailbus/connector/store"
	"github.com/mailbus/mailbus/schemas"
)

// TestCheckTokensSavedConnectionRotated: the check of a saved connection keeps the store
// for its refresh token even when the token it read is no longer the stored one. That
// happens when a route rotated it in between, and the token read is then revoked: without
// the store the check refreshed with it and reported "put a new refreshToken"
// (TestOAuthRotatedRefreshToken, now and then). A draft with a token of its own still
// keeps nothing.
func TestCheckTokensSavedConnectionRotated(t *testing.T) {
	n := testkit.StartStorage(t)
	sealer := &secrets.Sealer{}
	c := &control{Config: Config{Store: store.New(n.Storage.Config, sealer), Sealer: sealer}}
	ctx := context.Background()
	conn := schemas.Connection{Name: "oauth", Type: "imap", Host: "127.0.0.1", Port: 993, Encryption: "ssl",
		Auth: schemas.AuthOAuth2, Username: "alice",
		OAuth2: &schemas.OAuth2{TokenURL: "https://login.example.org/token", ClientID: "id", ClientSecret: "s", RefreshToken: "rt-1"}}
	if _, err := c.Store.PutConnection(ctx, conn); err != nil {
		t.Fatalf("PutConnection = %v", err)
	}
	read, err := c.Store.GetConnection(ctx, "oauth")
	if err != nil {
		t.Fatal(err)
	}
	if saved, err := c.Store.SaveRefreshToken(ctx, "oauth", "rt-1", "rt-2"); !saved || err != nil {
		t.Fatalf("SaveRefreshToken = %t, %v", saved, err) // the route's rotation
	}
	if got := c.checkTokens(ctx, &read, false); got == nil {
		t.Error("the check of the saved connection has no store: it refreshes with the revoked rt-1")
	}
	draft := conn
	draft.OAuth2 = &schemas.OAuth2{TokenURL: conn.OAuth2.TokenURL, ClientID: "id", ClientSecret: "s", RefreshToken: "rt-mine"}
	if got := c.checkTokens(ctx, &draft, true); got != nil {
		t.Error("a draft with its own refresh token would store the one it is rotated to")
	}
}
