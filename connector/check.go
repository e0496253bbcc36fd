package connector

import (
	"context"

	"github.com/mailbus/mailbus/connector/check"
	"github.com/mailbus/mailbus/connector/control"
	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/connector/oauth2"
	"github.com/mailbus/mailbus/schemas"
)

// CheckConnection runs the stages of a connection check against c, whose secrets are
// already resolved (see check.Run). An oauth2 connection's refresh token the endpoint
// replaces is not stored (the control service's check stores it). Its probe is not signed
// (only a deployment's control service can sign one), so routes publish it like any mail
// should they see it before it is removed.
func CheckConnection(ctx context.Context, c schemas.Connection, mailboxes []string) *schemas.Reply {
	return check.Run(ctx, c, mailboxes, nil, nil)
}

// connectionCheck is the control service's connection check (control.Check): the check
// of c, its probe signed with the deployment's key, so the routes pass over it; nil
// probes: unsigned.
func connectionCheck(probes *engine.ProbeKeys) control.Check {
	return func(ctx context.Context, c schemas.Connection, mailboxes []string, ts *oauth2.Source) (*schemas.Reply, error) {
		var key []byte
		if probes != nil {
			var err error
			if key, err = probes.Get(ctx); err != nil {
				return nil, err
			}
		}
		return check.Run(ctx, c, mailboxes, ts, key), nil
	}
}
