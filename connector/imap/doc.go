// Package imap is the IMAP source of mailbus: a route's sessions with an IMAP server
// (dial, TLS, login with a password, NTLM or OAuth2), the cycle (select, search above the
// checkpoint, the route's filter, FETCH in byte-sized batches streamed into the engine,
// the after action and the checkpoint once the engine has the acknowledgements), IDLE and
// polling between cycles, and the classification of IMAP's failures (IsPermanent).
//
// It implements engine.Source and knows neither the Exchange source nor the control plane.
package imap
