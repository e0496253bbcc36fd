// Package supervisor runs the routes of a replica: it follows the definitions in the
// config bucket and runs one worker per enabled route, made by the worker factories it is
// given, on the replica that holds the route's lease. Leases spread the routes over the
// live replicas (each writes a heartbeat key) and fence a replica that lost one.
package supervisor
