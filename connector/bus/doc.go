// Package bus is mailbus's NATS runtime: the names of every subject, stream and bucket
// (Names), creating or checking the streams, KV buckets and object store (OpenStorage), the
// per-bus publishing pipelines (Publishers), the objects of a message (attachments too
// large for an event, stored without waiting by the ObjectWriter; raw copies; FitPayload
// moving content out of an event above the NATS max payload), dead letters, the JSON of an event, the connection with its options
// and reconnects (Connect, Dial, AwaitNATS), and the embedded server.
//
// It knows no mail server and no route: the engine and the control plane use it.
package bus
