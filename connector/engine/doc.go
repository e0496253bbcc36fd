// Package engine runs a route over any source of mail. A Source (IMAP, Exchange: each in
// its own package) lists what is pending above its checkpoint and streams each message
// into a Batch; the engine maps it (mapping.MapMessage, a panic recovered into a dead
// letter), publishes its event (Msg-Id <route>/<Id>, CloudEvents headers) without
// waiting, throttles the bytes held for a retry, waits for the acknowledgements in order
// and publishes the failed ones again in rounds once NATS is back, judges duplicate
// acknowledgements, dead-letters what cannot become an event (with a raw copy the source
// fetches again), and keeps the route's status, metrics and connection log. Only then does
// it call the batch's Ack, in which the source touches the mailbox and moves its
// checkpoint: the rule "the mailbox is changed only after JetStream acknowledged" lives
// here once.
//
// Engine.Run is the route's worker: sessions of cycles, with backoff after a failure as
// the source judges it (Source.Judge). The package also holds what every worker shares:
// the Runtime, the StatusBoard, the probe keys, the session slots and the stall watchdog.
// It imports no source.
package engine
