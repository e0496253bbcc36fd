package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"testing"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/connector/oauth2"
	"github.com/mailbus/mailbus/connector/secrets"
	"github.com/mailbus/mailbus/connector/store"
	"github.com/mailbus/mailbus/schemas"
)

// TestSaveRefreshToken: a rotated refresh token replaces the stored one, sealed, only when
// the stored one is still the one that was used; one an operator put meanwhile stays.
func TestSaveRefreshToken(t *testing.T) {
	storage := testkit.StartStorage(t).Storage
	key := make([]byte, 32)
	rand.Read(key)
	sl, err := secrets.NewSealer(base64.StdEncoding.EncodeToString(key), nil)
	if err != nil {
		t.Fatalf("NewSealer() = %v", err)
	}
	st := store.New(storage.Config, sl)
	ctx := context.Background()
	old, operators, rotated := "rt-old-"+rand.Text(), "rt-operator-"+rand.Text(), "rt-rotated-"+rand.Text()
	c := schemas.Connection{Name: "c", Type: schemas.TypeIMAP, Host: "imap.example.com", Auth: schemas.AuthOAuth2,
		Username: "bot", OAuth2: &schemas.OAuth2{Provider: oauth2.ProviderGoogle, ClientID: "id", RefreshToken: old}}
	if _, err := st.PutConnection(ctx, c); err != nil {
		t.Fatalf("PutConnection() = %v", err)
	}

	// An operator replaced the token after the worker read it: the rotation is not stored.
	c.OAuth2.RefreshToken = operators
	if _, err := st.PutConnection(ctx, c); err != nil {
		t.Fatalf("PutConnection() = %v", err)
	}
	if saved, err := st.SaveRefreshToken(ctx, "c", old, rotated); saved || err != nil {
		t.Fatalf("SaveRefreshToken(over a changed token) = %v, %v; want false, nil", saved, err)
	}
	if got, ok := st.RefreshToken(ctx, "c"); !ok || got != operators {
		t.Fatalf("stored refresh token = %q, %v; want the operator's", got, ok)
	}

	// Over the token it used, it is stored, sealed, and the rest of the definition stays.
	before, _ := st.GetConnection(ctx, "c")
	if saved, err := st.SaveRefreshToken(ctx, "c", operators, rotated); !saved || err != nil {
		t.Fatalf("SaveRefreshToken() = %v, %v; want true, nil", saved, err)
	}
	if got, ok := st.RefreshToken(ctx, "c"); !ok || got != rotated {
		t.Fatalf("stored refresh token = %q, %v; want the rotated one", got, ok)
	}
	e, err := storage.Config.Get(ctx, bus.ConnectionKey("c"))
	if err != nil {
		t.Fatalf("Get() = %v", err)
	}
	if bytes.Contains(e.Value(), []byte(rotated)) || !bytes.Contains(e.Value(), []byte(`"refreshToken":"enc:v1:`)) {
		t.Fatalf("stored value = %s, want the refresh token sealed", e.Value())
	}
	after, _ := st.GetConnection(ctx, "c")
	if after.Revision == before.Revision || after.OAuth2.ClientID != "id" || after.OAuth2.TokenURL != "https://oauth2.googleapis.com/token" || after.Username != "bot" {
		t.Fatalf("after the save: %+v, before %+v", after, before)
	}
}
