package connector

import "github.com/mailbus/mailbus/connector/engine"

// The route runtime lives in connector/engine; these names keep the connector's API.

// Worker runs one route until ctx ends (see engine.Worker).
type Worker = engine.Worker

// RouteSpec is what a worker starts with: the route and its connection, secrets resolved.
type RouteSpec = engine.RouteSpec

// WorkerFactory makes the worker of a route; the supervisor picks one by connection type.
type WorkerFactory = engine.WorkerFactory

// Runtime is what every worker shares: NATS, storage, names and settings.
type Runtime = engine.Runtime

// StatusBoard holds the status of the routes this replica runs, for route.status.
type StatusBoard = engine.StatusBoard

// NewStatusBoard returns an empty board.
func NewStatusBoard() *StatusBoard { return engine.NewStatusBoard() }

// ErrNoSessionSlot is the error of a route that found every session slot taken.
var ErrNoSessionSlot = engine.ErrNoSessionSlot
