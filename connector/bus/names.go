package bus

import (
	"strconv"
	"strings"
)

// Buses is the number of data buses; a route's bus is 0..Buses-1.
const Buses = 4

// Names derives every subject, stream and bucket name from the subject prefix, as the
// contract lists them (prefix "mail": mail.bus.0.r, MAIL_BUS_0, mail_config...).
type Names struct {
	Prefix string
}

func (n Names) upper() string { return strings.ToUpper(n.Prefix) }

// BusSubject is the subject of a route's events.
func (n Names) BusSubject(bus int, route string) string {
	return n.Prefix + ".bus." + strconv.Itoa(bus) + "." + route
}

// BusStream is the stream of one data bus.
func (n Names) BusStream(bus int) string { return n.upper() + "_BUS_" + strconv.Itoa(bus) }

// DeadSubject is the subject of a route's dead letters.
func (n Names) DeadSubject(route string) string { return n.Prefix + ".dead." + route }

// DeadStream holds the dead letters of every route.
func (n Names) DeadStream() string { return n.upper() + "_DEAD" }

// LogSubject is the subject of a connection's log entries.
func (n Names) LogSubject(connection string) string { return n.Prefix + ".log." + connection }

// LogStream holds the connection logs.
func (n Names) LogStream() string { return n.upper() + "_LOG" }

// ConfigBucket is the KV bucket of definitions (keys connection.<name>, route.<name>).
func (n Names) ConfigBucket() string { return n.Prefix + "_config" }

// StateBucket is the KV bucket of route checkpoints (key route.<name>).
func (n Names) StateBucket() string { return n.Prefix + "_state" }

// LeasesBucket is the KV bucket of route ownership leases.
func (n Names) LeasesBucket() string { return n.Prefix + "_leases" }

// ObjectBucket is the object store of large attachments and raw messages.
func (n Names) ObjectBucket() string { return n.Prefix + "_attachments" }

// ControlPrefix is the first part of every control subject: <prefix>.control.
func (n Names) ControlPrefix() string { return n.Prefix + ".control" }

// ConnectionKey and RouteKey are the keys of definitions and checkpoints.
func ConnectionKey(name string) string { return "connection." + name }

// RouteKey is the key of a route's definition in the config bucket and of its checkpoint
// in the state bucket.
func RouteKey(name string) string { return "route." + name }
