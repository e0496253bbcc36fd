package connector

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Storage is every JetStream resource mailbus uses, created or updated at start.
type Storage struct {
	Config  jetstream.KeyValue
	State   jetstream.KeyValue
	Leases  jetstream.KeyValue
	Objects jetstream.ObjectStore
}

// Connection logs are kept this long and this large, whichever comes first.
const (
	logMaxAge   = 7 * 24 * time.Hour
	logMaxBytes = 256 << 20
	// LeaseTTL is how long a replica's heartbeat key lives without renewal: the time a
	// killed replica's routes wait for another to take them over.
	LeaseTTL = 10 * time.Second
)

// EnsureStorage creates or updates, idempotently, the bus streams, the dead-letter and log
// streams, the KV buckets and the object store.
func EnsureStorage(ctx context.Context, js jetstream.JetStream, n Names, replicas int, dedup time.Duration) (*Storage, error) {
	streams := make([]jetstream.StreamConfig, 0, Buses+2)
	for bus := range Buses {
		streams = append(streams, jetstream.StreamConfig{
			Name:        n.BusStream(bus),
			Description: fmt.Sprintf("mailbus events of data bus %d", bus),
			Subjects:    []string{fmt.Sprintf("%s.bus.%d.>", n.Prefix, bus)},
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
			Duplicates:  dedup,
		})
	}
	streams = append(streams,
		jetstream.StreamConfig{
			Name:        n.DeadStream(),
			Description: "mailbus dead letters: messages that could not become events",
			Subjects:    []string{n.Prefix + ".dead.>"},
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
			Duplicates:  dedup,
		},
		jetstream.StreamConfig{
			Name:        n.LogStream(),
			Description: "mailbus connection logs",
			Subjects:    []string{n.Prefix + ".log.>"},
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
			MaxAge:      logMaxAge,
			MaxBytes:    logMaxBytes,
		})
	for _, cfg := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return nil, fmt.Errorf("stream %s: %w", cfg.Name, err)
		}
	}

	var s Storage
	var err error
	if s.Config, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: n.ConfigBucket(), Description: "mailbus connection and route definitions",
		History: 5, Storage: jetstream.FileStorage, Replicas: replicas,
	}); err != nil {
		return nil, fmt.Errorf("kv %s: %w", n.ConfigBucket(), err)
	}
	if s.State, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: n.StateBucket(), Description: "mailbus route checkpoints",
		Storage: jetstream.FileStorage, Replicas: replicas,
	}); err != nil {
		return nil, fmt.Errorf("kv %s: %w", n.StateBucket(), err)
	}
	if s.Leases, err = ensureLeases(ctx, js, n.LeasesBucket(), replicas); err != nil {
		return nil, fmt.Errorf("kv %s: %w", n.LeasesBucket(), err)
	}
	if s.Objects, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket: n.ObjectBucket(), Description: "mailbus large attachments and raw messages",
		Storage: jetstream.FileStorage, Replicas: replicas,
	}); err != nil {
		return nil, fmt.Errorf("object store %s: %w", n.ObjectBucket(), err)
	}
	return &s, nil
}

// ensureLeases creates the leases bucket: no age limit (a route lease lasts as long as its
// owner), per-key TTLs for the instance keys, and markers when they expire so that the
// other replicas see a replica go. A bucket of the earlier layout (every key aged out by
// the bucket's MaxAge) is made anew: its instance keys have no TTL of their own and
// would never expire without it. Leases are soft state; every replica must run the new
// layout, so replicas of an earlier build are stopped before an upgrade.
func ensureLeases(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (jetstream.KeyValue, error) {
	if kv, err := js.KeyValue(ctx, bucket); err == nil {
		if st, err := kv.Status(ctx); err == nil && st.TTL() > 0 {
			if err := js.DeleteKeyValue(ctx, bucket); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
				return nil, err
			}
		}
	}
	return js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: bucket, Description: "mailbus route ownership leases",
		LimitMarkerTTL: LeaseTTL, Storage: jetstream.FileStorage, Replicas: replicas,
	})
}
