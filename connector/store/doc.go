// Package store keeps what mailbus must remember in JetStream KV: the definitions of
// connections and routes in the config bucket (secrets sealed, every write a
// compare-and-set of the revision read), the definitions files of mailbus apply and
// MAILBUS_DEFINITIONS, and each route's checkpoint in the state bucket. PutRev is the one
// compare-and-set write they all use.
package store
