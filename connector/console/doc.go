// Package console is mailbus's admin console: the product page's forms in a browser,
// served under /ui/ on MAILBUS_HTTP_ADDR when MAILBUS_ADMIN_TOKEN is set.
//
// It holds no state of its own that matters: every read and every change is a request on
// the control subjects (mail.control.<entity>.<op>), so it validates exactly as the CLI and
// nats req do, and any replica serves it. It imports no source code (neither IMAP nor
// Exchange) and no connector internals; only schemas and NATS.
//
// Security: one login token (compared in constant time), then a stateless session cookie
// signed with a key derived from the token (HttpOnly, SameSite=Strict, Secure over TLS), a
// CSRF token bound to the session on every form, a cross-origin check on every unsafe
// request, a strict Content-Security-Policy (no inline script or style), and secrets are
// never rendered: a password field says whether one is set. Login attempts are
// rate-limited per client address.
//
// Pages are html/template and embedded files; one small hand-written script adds live
// updates (server-sent events) and in-place connection checks, and every page works
// without it, minus the live updates.
package console
