// Package connector is the mailbus runtime's wiring: New, Run and Config. It connects to
// NATS (connector/bus), opens the definitions store (connector/store), starts the control
// service (connector/control) with the connection check and the route statuses it needs,
// and the supervisor (connector/supervisor) with the worker factories of the IMAP and
// Exchange sources (connector/imap, connector/ews), which run on one engine
// (connector/engine). The packages beneath it never import it.
//
// The shape of every route is that of a source with acks: fetch a message, map it, publish
// it to JetStream, and only once JetStream acknowledged the event touch the mailbox and
// advance the checkpoint.
package connector
