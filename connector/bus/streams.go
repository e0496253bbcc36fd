package bus

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Storage is every JetStream resource mailbus uses, created or updated at start.
type Storage struct {
	Config  jetstream.KeyValue
	State   jetstream.KeyValue
	Leases  jetstream.KeyValue
	Objects jetstream.ObjectStore
	// Writer puts objects without waiting for them (the mapping's attachments).
	Writer *ObjectWriter
}

// Connection logs are kept this long and this large, whichever comes first.
const (
	logMaxAge   = 7 * 24 * time.Hour
	logMaxBytes = 256 << 20
	// LeaseTTL is how long a replica's heartbeat key lives without renewal: the time a
	// killed replica's routes wait for another to take them over.
	LeaseTTL = 10 * time.Second
)

// objectAgeMargin is added to the object store's age limit. An object is stored just
// before the event that refers to it is published (and stored again, fresh, whenever the
// message is processed again), so it is always a little older than its event; the margin
// covers that moment, so that no event outlives its objects.
const objectAgeMargin = time.Hour

// Unlimited is the value of a byte limit without a limit (JetStream's -1).
const Unlimited = -1

// StorageConfig says what the streams and buckets look like and who owns them. The zero
// value of an age is no age limit.
type StorageConfig struct {
	Replicas int
	// Dedup is the duplicate window of the bus and dead-letter streams.
	Dedup time.Duration
	// EventsMaxAge and EventsMaxBytes (Unlimited, or bytes) limit each bus stream.
	EventsMaxAge   time.Duration
	EventsMaxBytes int64
	// DeadMaxAge limits the dead-letter stream.
	DeadMaxAge time.Duration
	// CheckOnly creates and changes nothing: every stream and bucket must exist already
	// (MAILBUS_MANAGE_STREAMS=false).
	CheckOnly bool
}

// DefaultStorageConfig is the storage of the default environment, with replicas and dedup.
func DefaultStorageConfig(replicas int, dedup time.Duration) StorageConfig {
	return StorageConfig{
		Replicas: replicas, Dedup: dedup,
		EventsMaxAge: 168 * time.Hour, EventsMaxBytes: Unlimited, DeadMaxAge: 720 * time.Hour,
	}
}

// ObjectMaxAge is the age limit of the object store: as long as the longest-lived event
// (or dead letter) that can refer to an object, plus objectAgeMargin; 0 (none) when either
// stream keeps its messages without an age limit.
func (sc StorageConfig) ObjectMaxAge() time.Duration {
	if sc.EventsMaxAge == 0 || sc.DeadMaxAge == 0 {
		return 0
	}
	return max(sc.EventsMaxAge, sc.DeadMaxAge) + objectAgeMargin
}

// EnsureStorage is OpenStorage with the default limits and mailbus owning the streams.
func EnsureStorage(ctx context.Context, js jetstream.JetStream, n Names, replicas int, dedup time.Duration) (*Storage, error) {
	return OpenStorage(ctx, js, n, DefaultStorageConfig(replicas, dedup))
}

// streams lists the streams of sc: the bus streams, the dead letters and the logs.
func (sc StorageConfig) streams(n Names) []jetstream.StreamConfig {
	maxBytes := sc.EventsMaxBytes
	if maxBytes == 0 {
		maxBytes = Unlimited
	}
	out := make([]jetstream.StreamConfig, 0, Buses+2)
	for bus := range Buses {
		out = append(out, jetstream.StreamConfig{
			Name:        n.BusStream(bus),
			Description: fmt.Sprintf("mailbus events of data bus %d", bus),
			Subjects:    []string{fmt.Sprintf("%s.bus.%d.>", n.Prefix, bus)},
			Storage:     jetstream.FileStorage,
			Replicas:    sc.Replicas,
			Duplicates:  sc.Dedup,
			MaxAge:      sc.EventsMaxAge,
			MaxBytes:    maxBytes,
		})
	}
	return append(out,
		jetstream.StreamConfig{
			Name:        n.DeadStream(),
			Description: "mailbus dead letters: messages that could not become events",
			Subjects:    []string{n.Prefix + ".dead.>"},
			Storage:     jetstream.FileStorage,
			Replicas:    sc.Replicas,
			Duplicates:  sc.Dedup,
			MaxAge:      sc.DeadMaxAge,
			MaxBytes:    Unlimited,
		},
		jetstream.StreamConfig{
			Name:        n.LogStream(),
			Description: "mailbus connection logs",
			Subjects:    []string{n.Prefix + ".log.>"},
			Storage:     jetstream.FileStorage,
			Replicas:    sc.Replicas,
			MaxAge:      logMaxAge,
			MaxBytes:    logMaxBytes,
		})
}

// OpenStorage makes sure the bus streams, the dead-letter and log streams, the KV buckets
// and the object store exist, and returns the buckets. What is missing is created; of
// what exists, only the settings mailbus owns are brought to sc (subjects, duplicate
// window, age and byte limits, replicas; history and marker TTL of the buckets) and every
// other setting an operator made (placement, mirrors, sources, compression, other limits)
// is kept. With sc.CheckOnly nothing is created or changed, and a missing stream or
// bucket, or a stream without the subjects mailbus publishes on, is an error naming it.
func OpenStorage(ctx context.Context, js jetstream.JetStream, n Names, sc StorageConfig) (*Storage, error) {
	for _, cfg := range sc.streams(n) {
		if err := ensureStream(ctx, js, cfg, sc.CheckOnly); err != nil {
			return nil, err
		}
	}

	var s Storage
	var err error
	if s.Config, err = ensureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket: n.ConfigBucket(), Description: "mailbus connection and route definitions",
		History: 5, Storage: jetstream.FileStorage, Replicas: sc.Replicas,
	}, sc.CheckOnly); err != nil {
		return nil, err
	}
	if s.State, err = ensureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket: n.StateBucket(), Description: "mailbus route checkpoints",
		Storage: jetstream.FileStorage, Replicas: sc.Replicas,
	}, sc.CheckOnly); err != nil {
		return nil, err
	}
	if s.Leases, err = ensureLeases(ctx, js, n.LeasesBucket(), sc.Replicas, sc.CheckOnly); err != nil {
		return nil, err
	}
	if s.Objects, err = ensureObjects(ctx, js, jetstream.ObjectStoreConfig{
		Bucket: n.ObjectBucket(), Description: "mailbus large attachments and raw messages",
		Storage: jetstream.FileStorage, Replicas: sc.Replicas, TTL: sc.ObjectMaxAge(),
	}, sc.CheckOnly); err != nil {
		return nil, err
	}
	if s.Writer, err = NewObjectWriter(js.Conn(), s.Objects, n.ObjectBucket()); err != nil {
		return nil, err
	}
	return &s, nil
}

// ErrStorageCheck is a stream or bucket that MAILBUS_MANAGE_STREAMS=false found missing or
// unfit: mailbus refuses to start rather than create or change it.
var ErrStorageCheck = errors.New("MAILBUS_MANAGE_STREAMS=false: mailbus creates and changes no stream or bucket")

// errMissing says what is missing.
var errMissing = fmt.Errorf("missing (%w)", ErrStorageCheck)

// ensureStream creates the stream of want when it is missing, else brings the settings
// mailbus owns to want. With checkOnly it only checks that the stream takes want's subjects.
func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig, checkOnly bool) error {
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if checkOnly {
			return fmt.Errorf("stream %s (subjects %s): %w", want.Name, strings.Join(want.Subjects, " "), errMissing)
		}
		_, err = js.CreateStream(ctx, want)
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			if err != nil {
				return fmt.Errorf("stream %s: %w", want.Name, err)
			}
			return nil
		}
		s, err = js.Stream(ctx, want.Name) // another replica created it meanwhile
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", want.Name, err)
	}
	cur := s.CachedInfo().Config
	if checkOnly {
		for _, sub := range want.Subjects {
			if !subjectsCover(cur.Subjects, sub) {
				return fmt.Errorf("stream %s takes subjects %s, not %s that mailbus publishes on (%w)",
					want.Name, strings.Join(cur.Subjects, " "), sub, ErrStorageCheck)
			}
		}
		return nil
	}
	return updateOwned(ctx, js, cur, func(c *jetstream.StreamConfig) {
		c.Subjects = want.Subjects
		c.Replicas = want.Replicas
		c.MaxAge = want.MaxAge
		c.MaxBytes = want.MaxBytes
		if want.Duplicates != 0 { // 0 leaves the server's default, as it was created
			c.Duplicates = want.Duplicates
		}
	})
}

// updateOwned updates the stream of cur with what own changes in a copy of it, when that
// changes anything: the settings own leaves alone stay as they are.
func updateOwned(ctx context.Context, js jetstream.JetStream, cur jetstream.StreamConfig, own func(*jetstream.StreamConfig)) error {
	upd := cur
	upd.Subjects = append([]string(nil), cur.Subjects...)
	own(&upd)
	if reflect.DeepEqual(cur, upd) {
		return nil
	}
	if _, err := js.UpdateStream(ctx, upd); err != nil {
		return fmt.Errorf("stream %s: update: %w", cur.Name, err)
	}
	return nil
}

// subjectsCover reports whether one of the filters matches every subject sub matches.
func subjectsCover(filters []string, sub string) bool {
	for _, f := range filters {
		if subjectSubset(sub, f) {
			return true
		}
	}
	return false
}

// subjectSubset reports whether every subject matching sub also matches filter.
func subjectSubset(sub, filter string) bool {
	st, ft := strings.Split(sub, "."), strings.Split(filter, ".")
	for i, f := range ft {
		if f == ">" {
			return i < len(st)
		}
		if i >= len(st) {
			return false
		}
		switch {
		case f == "*" && st[i] != ">":
		case f == st[i]:
		default:
			return false
		}
	}
	return len(st) == len(ft)
}

// streamOf returns the config of a bucket's stream.
func streamOf(ctx context.Context, js jetstream.JetStream, name string) (jetstream.StreamConfig, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return jetstream.StreamConfig{}, fmt.Errorf("stream %s: %w", name, err)
	}
	return s.CachedInfo().Config, nil
}

// ensureKV opens the bucket of cfg, creating it when it is missing; of a bucket that
// exists, only replicas and history are brought to cfg.
func ensureKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig, checkOnly bool) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if checkOnly {
			return nil, fmt.Errorf("kv %s: %w", cfg.Bucket, errMissing)
		}
		kv, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, cfg.Bucket)
		} else if err == nil {
			return kv, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("kv %s: %w", cfg.Bucket, err)
	}
	if checkOnly {
		return kv, nil
	}
	cur, err := streamOf(ctx, js, "KV_"+cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("kv %s: %w", cfg.Bucket, err)
	}
	history := max(cfg.History, 1)
	if err := updateOwned(ctx, js, cur, func(c *jetstream.StreamConfig) {
		c.Replicas = cfg.Replicas
		c.MaxMsgsPerSubject = int64(history)
		if cfg.LimitMarkerTTL != 0 {
			c.AllowMsgTTL = true
			c.SubjectDeleteMarkerTTL = cfg.LimitMarkerTTL
		}
	}); err != nil {
		return nil, fmt.Errorf("kv %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// ensureLeases creates the leases bucket: no age limit (a route lease lasts as long as its
// owner), per-key TTLs for the instance keys, and markers when they expire so that the
// other replicas see a replica go. A bucket of the earlier layout (every key aged out by
// the bucket's MaxAge) is made anew: its instance keys have no TTL of their own and
// would never expire without it. Leases are soft state; every replica must run the new
// layout, so replicas of an earlier build are stopped before an upgrade.
func ensureLeases(ctx context.Context, js jetstream.JetStream, bucket string, replicas int, checkOnly bool) (jetstream.KeyValue, error) {
	cfg := jetstream.KeyValueConfig{
		Bucket: bucket, Description: "mailbus route ownership leases",
		LimitMarkerTTL: LeaseTTL, Storage: jetstream.FileStorage, Replicas: replicas,
	}
	kv, err := js.KeyValue(ctx, bucket)
	if err == nil {
		if st, err := kv.Status(ctx); err == nil && st.TTL() > 0 {
			if checkOnly {
				return nil, fmt.Errorf("kv %s has an age limit (%s): leases need per-key TTLs and none on the bucket (%w)", bucket, st.TTL(), ErrStorageCheck)
			}
			if err := js.DeleteKeyValue(ctx, bucket); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
				return nil, fmt.Errorf("kv %s: %w", bucket, err)
			}
		}
	}
	kv, err = ensureKV(ctx, js, cfg, checkOnly)
	if err != nil || !checkOnly {
		return kv, err
	}
	cur, err := streamOf(ctx, js, "KV_"+bucket)
	if err != nil {
		return nil, fmt.Errorf("kv %s: %w", bucket, err)
	}
	if !cur.AllowMsgTTL || cur.SubjectDeleteMarkerTTL == 0 {
		return nil, fmt.Errorf("kv %s: want per-key TTLs and limit markers (nats kv add %s --marker-ttl %s) (%w)", bucket, bucket, LeaseTTL, ErrStorageCheck)
	}
	return kv, nil
}

// ensureObjects opens the object store of cfg, creating it when it is missing; of a store
// that exists, only replicas and the age limit are brought to cfg. Its byte limit is not
// mailbus's: an object must outlive the events referring to it, which a byte limit cannot
// promise, so mailbus sets none and keeps one an operator set.
func ensureObjects(ctx context.Context, js jetstream.JetStream, cfg jetstream.ObjectStoreConfig, checkOnly bool) (jetstream.ObjectStore, error) {
	os, err := js.ObjectStore(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if checkOnly {
			return nil, fmt.Errorf("object store %s: %w", cfg.Bucket, errMissing)
		}
		os, err = js.CreateObjectStore(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			os, err = js.ObjectStore(ctx, cfg.Bucket)
		} else if err == nil {
			return os, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", cfg.Bucket, err)
	}
	if checkOnly {
		return os, nil
	}
	cur, err := streamOf(ctx, js, "OBJ_"+cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", cfg.Bucket, err)
	}
	if err := updateOwned(ctx, js, cur, func(c *jetstream.StreamConfig) {
		c.Replicas = cfg.Replicas
		c.MaxAge = cfg.TTL
	}); err != nil {
		return nil, fmt.Errorf("object store %s: %w", cfg.Bucket, err)
	}
	return os, nil
}
