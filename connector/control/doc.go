// Package control is the control plane: the NATS micro service "mailbus" that answers
// <prefix>.control.<entity>.<op> (connections, routes, definitions.apply), keeps the
// definitions in the store, and turns every refusal into the contract's error codes in
// one place. It knows no mail source: the connection check and the routes' statuses are
// handed to it (Config.Check, Config.Status) by the wiring in connector.
package control
