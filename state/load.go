package state

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bulk loading fills a store with greylist entries in the format the
// Greylister writes, without a decision per entry: a migration from another
// greylisting server, or a benchmark that needs millions of triplets. The
// entries are indistinguishable from written ones (TestLoadedTripletsDecide).

// TripletEntry is the entry the greylisting rules store for triplet t first
// seen at first and, when passes > 0, passed passes times, the last at last:
// the key of GreylistKeys, the value "first,last,passes" (Unix ms) and the
// expiry greyStep gives it (retry window after the first attempt for an
// unpassed triplet, expire after the last use for a passed one, each plus
// the same margin).
func TripletEntry(t Triplet, first, last time.Time, passes int, window, expire time.Duration) Entry {
	key, _ := GreylistKeys(t)
	if passes <= 0 {
		passes, last = 0, first
	}
	e := Entry{Key: key, Value: tripletValue(first.UnixMilli(), last.UnixMilli(), int64(passes))}
	if passes == 0 {
		e.ExpiresAt = first.Add(window + expiryMargin)
	} else {
		e.ExpiresAt = last.Add(expire + expiryMargin)
	}
	return e
}

// LoadBolt writes the entries next yields into the bbolt file at path,
// creating it if needed, in transactions of batch entries (default 100,000),
// each written in key order. The file must not be open elsewhere (policyd
// holds it while it runs). An entry already past ExpiresAt is written as
// well: the sweeper deletes it later. Every entry goes to the kept tree (a
// migration brings mostly passed triplets; where an entry lives changes
// what a commit rewrites, not what a decision reads: Bolt). It returns how
// many were written.
// Entries yielded in ascending key order load fastest (bbolt appends).
func LoadBolt(path string, batch int, next func() (Entry, bool)) (int, error) {
	if batch <= 0 {
		batch = 100_000
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return 0, fmt.Errorf("state: bbolt: %s is in use by another process (policyd?): %w", path, err)
		}
		return 0, fmt.Errorf("state: bbolt: open %s: %w", path, err)
	}
	defer db.Close()
	type kv struct{ k, v []byte }
	buf := make([]kv, 0, batch)
	total := 0
	commit := func() error {
		if len(buf) == 0 {
			return nil
		}
		sort.Slice(buf, func(i, j int) bool { return string(buf[i].k) < string(buf[j].k) })
		err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists(bucketName)
			if err != nil {
				return err
			}
			for _, e := range buf {
				if err := b.Put(e.k, e.v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("state: bbolt: load %s: %w", path, err)
		}
		total += len(buf)
		buf = buf[:0]
		return nil
	}
	for {
		e, ok := next()
		if !ok {
			break
		}
		buf = append(buf, kv{[]byte(e.Key), encodeRec(e.Value, e.ExpiresAt)})
		if len(buf) == batch {
			if err := commit(); err != nil {
				return total, err
			}
		}
	}
	return total, commit()
}

// Load writes entries with their expiry (SET key value PXAT ms), pipelined; an
// entry already past ExpiresAt is not stored (Redis drops it at once, as
// it would have expired). Callers load large sets in slices of a few
// thousand entries.
func (s *Redis) Load(ctx context.Context, entries []Entry) error {
	p := s.c.Pipeline()
	now := time.Now()
	n := 0
	for _, e := range entries {
		if !e.ExpiresAt.After(now) {
			continue
		}
		p.Do(ctx, "SET", s.prefix+e.Key, e.Value, "PXAT", e.ExpiresAt.UnixMilli())
		n++
	}
	if n == 0 {
		return nil
	}
	if _, err := p.Exec(ctx); err != nil {
		return redisErr(err)
	}
	return nil
}

// CountBolt counts the entries in the bbolt file at path and how many of
// them are expired at now. The file must not be open elsewhere.
func CountBolt(path string, now time.Time) (total, expired int, err error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		return 0, 0, fmt.Errorf("state: bbolt: open %s: %w", path, err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		for _, b := range txTrees(tx).each() {
			err := b.ForEach(func(_, v []byte) error {
				total++
				if _, exp, ok := decodeRec(v); !ok || exp.Before(now) {
					expired++
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return total, expired, err
}
