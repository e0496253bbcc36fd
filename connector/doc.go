// Package connector is the mailbus runtime: NATS connection and storage, the definitions
// store in KV, the control service, the route supervisor, the IMAP and Exchange sources, and
// the per-bus publishers. One file per concern.
//
// The shape of every route is that of a source with acks: fetch a message, map it, publish
// it to JetStream, and only once JetStream acknowledged the event touch the mailbox and
// advance the checkpoint.
package connector
