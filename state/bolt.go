package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BoltOptions tunes the bbolt store; zero values take the defaults.
type BoltOptions struct {
	// FlushInterval is how long a buffered update waits for its commit to
	// begin: the buffer is committed (and fsynced) in one transaction once
	// its oldest update is this old, or at once after a commit that took
	// longer. Default 200 ms.
	FlushInterval time.Duration
	// MaxLag bounds what a crash can lose: while the oldest update not yet
	// on disk is older than MaxLag, every operation that would write fails
	// with ErrBehind instead of acknowledging more (refreshes excepted:
	// they are dropped, see admit). Default 1 s.
	MaxLag time.Duration
	// LockTimeout is how long Open waits for another process to release
	// the file. Default 1 s.
	LockTimeout time.Duration
	// Clock decides which entries the background sweeper deletes as
	// expired; it must be the clock the callers use. Default time.Now.
	Clock Clock
	// SweepInterval is the time from the end of one sweep pass (or the
	// start) to the next: a pass visits every key and deletes the expired
	// ones, in chunks of sweepChunk keys, one chunk per commit, SweepPause
	// or more apart. Default 1 min.
	SweepInterval time.Duration
	// SweepPause is the least time between two chunks of a pass; the
	// pause is also at least twice what the last chunk's commit took, so
	// a pass takes at most a third of a core (less on a busy machine, where
	// commits take longer) and decisions keep the rest. Default 20 ms.
	SweepPause time.Duration

	commitDelay time.Duration // tests: added to every commit, inside its transaction
	mapSize     int           // tests: the file's initial mapping (0: poolMapSize), see readPool
	poolDelay   time.Duration // tests: between a commit's end and the read pool's refresh
	commitSpin  time.Duration // tests: CPU time burnt in every commit, inside its transaction
	noHand      bool          // tests: the low thread never hands a commit over (boltprio.go)
	noLow       bool          // tests: every commit at the process's priority
}

// Bolt is the embedded store: one bbolt file owned by one process.
//
// Durability: operations are answered from memory and a background goroutine
// commits them once the oldest is FlushInterval (200 ms) old, in one fsynced
// transaction. A crash (SIGKILL, power loss) loses at most the updates
// acknowledged since the last commit began — normally under FlushInterval
// plus one commit, and never more than MaxLag (1 s): once the oldest update
// not yet on disk is older than MaxLag/2, new updates wait for the commit in
// progress (a burst is slowed to the disk's pace), and once it is older than
// MaxLag they fail with ErrBehind
// (the caller answers 4xx) until the disk catches up. A lost update is
// harmless in kind: a triplet recorded again waits one more delay, a sender
// gets a few messages more. Decisions that write nothing never wait, and
// refreshes (a passing entry's expiry pushed back) are dropped instead of
// waiting while the disk is behind (admit). The file itself is never
// corrupted by a crash (bbolt's copy-on-write B+tree and meta pages);
// TestBoltCrash kills a writer with SIGKILL under load to show both.
//
// Reads of known triplets and whitelisted clients write nothing (see
// touchEvery), so the steady state is read-mostly; expired entries are
// deleted by a sweeper in the commit goroutine: SweepInterval after the
// last pass ended, a pass over the whole file, a chunk of keys per commit
// with a pause of at least twice the chunk's commit between chunks, so a
// pass over ten million keys ends within minutes and leaves most of the
// CPU to the decisions.
//
// Decisions read the file through read transactions the commit goroutine
// opens after each commit and lends one reader at a time, so they never
// wait for bbolt's meta lock while a commit holds it (boltread.go).
//
// The file holds two trees (bbolt buckets). Entries kept for weeks (passed
// triplets, clients' counts) live in the kept tree, which at a large site
// holds millions; entries kept for hours (triplets waiting for their
// retry, rate counters: write.brief) live in the brief tree, which holds
// what a retry window brings. A new triplet is a write to a random key,
// and in a tree of ten million keys nearly every such write rewrites a
// 4 KiB page of its own (15,700 pages for a commit of 8,000 new triplets);
// in the brief tree the same writes share its fewer pages. A read looks in
// the kept tree, then in the brief one; a commit that writes a key to one
// tree deletes it from the other in the same transaction, so a key lives
// in one of them (a file written before the brief tree existed holds every
// key in the kept tree, and its entries move as they are written).
type Bolt struct {
	db    *bolt.DB
	opt   BoltOptions
	seed  maphash.Seed
	locks [64]sync.Mutex // per-key serialisation of read-modify-write steps

	mu       sync.Mutex
	pending  map[string]brec // acknowledged, not yet committed
	flushing map[string]brec // being committed right now
	pendOld  time.Time       // when the oldest entry of pending was written (zero: none)
	flushOld time.Time       // the same for flushing
	closed   bool
	flushErr error

	flushed chan struct{} // closed and replaced after every commit attempt
	gen     uint64        // successful commits (guarded by mu): see readPool

	fmu       sync.Mutex    // one commit at a time
	sweepFrom []byte        // where the next chunk of a pass starts, nil: at the top (guarded by fmu)
	sweepKept bool          // the pass is in the kept tree (it visits the brief tree first; guarded by fmu)
	sweeping  bool          // a pass is under way (guarded by fmu)
	lastChunk time.Duration // how long the last commit with a sweep chunk took (guarded by fmu)

	kick chan struct{}
	stop chan struct{}
	done chan struct{}

	rp       readPool     // read transactions lent to decisions (boltread.go)
	mapSize  int          // how much of the file bbolt maps
	pageSize int          // bbolt's page size
	hwm      atomic.Int64 // the file's end in use after the last commit (bytes)
	warm     *warmer      // reads the file into the page cache (boltwarm.go); nil: not
	low      lowThread    // runs commits at a lower priority (boltprio.go); nil: none
	lowErr   error        // why there is no low thread
	gate     prioGate     // which commits it runs (used by run only)
}

// brec is a buffered value; del marks a deletion (from both trees), brief
// a value for the brief tree.
type brec struct {
	val   []byte // encoded: 8-byte expiry (Unix ms, big endian) + value
	del   bool
	brief bool
}

// The file's two trees (see Bolt): bucketName is the kept tree, the one
// bucket of files written before the brief tree.
var (
	bucketName  = []byte("mailnode-state")
	briefBucket = []byte("mailnode-state-brief")
)

// trees are the file's two buckets as one transaction sees them.
type trees struct{ kept, brief *bolt.Bucket }

func txTrees(tx *bolt.Tx) trees {
	return trees{kept: tx.Bucket(bucketName), brief: tx.Bucket(briefBucket)}
}

// each lists the trees the file has, the kept tree first (a read-only
// handle on a file written before the brief tree sees only the kept one).
func (t trees) each() []*bolt.Bucket {
	out := make([]*bolt.Bucket, 0, 2)
	for _, b := range []*bolt.Bucket{t.kept, t.brief} {
		if b != nil {
			out = append(out, b)
		}
	}
	return out
}

// get returns key's stored bytes (nil: in neither tree).
func (t trees) get(key []byte) []byte {
	if v := t.kept.Get(key); v != nil {
		return v
	}
	return t.brief.Get(key)
}

const sweepChunk = 5000

// OpenBolt opens (creating if needed) the bbolt file at path.
func OpenBolt(path string, opt BoltOptions) (*Bolt, error) {
	if opt.FlushInterval <= 0 {
		opt.FlushInterval = 200 * time.Millisecond
	}
	if opt.MaxLag <= 0 {
		opt.MaxLag = time.Second
	}
	if opt.LockTimeout <= 0 {
		opt.LockTimeout = time.Second
	}
	if opt.SweepInterval <= 0 {
		opt.SweepInterval = time.Minute
	}
	if opt.SweepPause <= 0 {
		opt.SweepPause = 20 * time.Millisecond
	}
	if path == "" {
		return nil, errors.New("state: bbolt: no path")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("state: bbolt: %w", err)
	}
	mapSize := opt.mapSize
	if mapSize == 0 {
		mapSize = poolMapSize
	}
	warm := newWarmer(path)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opt.LockTimeout, InitialMmapSize: max(mapSize, 0)})
	if err != nil && mapSize > 0 && errors.Is(err, syscall.ENOMEM) {
		// No room for the mapping (a limit on address space, RLIMIT_AS):
		// the file mapped at its own size, and reads open their own
		// transactions, as bbolt may remap (readPool).
		mapSize = 0
		db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: opt.LockTimeout})
	}
	if err != nil {
		warm.discard()
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("state: bbolt: %s is in use by another process (policyd?): %w", path, err)
		}
		return nil, fmt.Errorf("state: bbolt: open %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketName); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(briefBucket)
		return err
	}); err != nil {
		warm.discard()
		db.Close()
		return nil, fmt.Errorf("state: bbolt: %s: %w", path, err)
	}
	s := &Bolt{
		db:       db,
		opt:      opt,
		seed:     maphash.MakeSeed(),
		pending:  map[string]brec{},
		flushed:  make(chan struct{}),
		kick:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		mapSize:  mapSize,
		pageSize: db.Info().PageSize,
	}
	s.afterCommit(0)
	if warm == nil {
		warm = newWarmer(path) // the file is there now
	}
	s.warm = warm
	warm.start()
	s.gate.maxLag = opt.MaxLag
	if opt.noLow {
		s.lowErr = errors.New("off (test)")
	} else {
		s.low, s.lowErr = startLowThread(commitNice)
	}
	go s.run()
	return s, nil
}

// CommitNice says how many nice steps below the process the commits run
// (boltprio.go), or why they run at its priority.
func (s *Bolt) CommitNice() (int, error) {
	if s.low == nil {
		return 0, s.lowErr
	}
	return commitNice, nil
}

// DB exposes the bbolt handle (tests check its consistency with tx.Check).
func (s *Bolt) DB() *bolt.DB { return s.db }

func encodeRec(val string, exp time.Time) []byte {
	b := make([]byte, 8+len(val))
	binary.BigEndian.PutUint64(b, uint64(exp.UnixMilli()))
	copy(b[8:], val)
	return b
}

func decodeRec(b []byte) (val string, exp time.Time, ok bool) {
	if len(b) < 8 {
		return "", time.Time{}, false
	}
	return string(b[8:]), time.UnixMilli(int64(binary.BigEndian.Uint64(b))), true
}

// lockKeys takes the per-key locks of keys in a fixed order.
func (s *Bolt) lockKeys(keys ...string) func() {
	idx := make([]int, 0, len(keys))
	for _, k := range keys {
		i := int(maphash.String(s.seed, k) % uint64(len(s.locks)))
		dup := false
		for _, j := range idx {
			dup = dup || i == j
		}
		if !dup {
			idx = append(idx, i)
		}
	}
	sort.Ints(idx)
	for _, i := range idx {
		s.locks[i].Lock()
	}
	return func() {
		for _, i := range idx {
			s.locks[i].Unlock()
		}
	}
}

// lag says whether one more update may be buffered now: brake when the
// oldest update not yet on disk is older than half of MaxLag (the update
// should wait for the commit in progress, so a burst larger than the disk
// can take is slowed down to the disk's pace), err (ErrBehind) beyond
// MaxLag (a crash must not lose more), or ErrClosed; done is closed when
// the commit in progress ends.
func (s *Bolt) lag() (brake bool, done <-chan struct{}, wait time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, nil, 0, ErrClosed
	}
	oldest := s.flushOld
	if oldest.IsZero() {
		oldest = s.pendOld
	}
	var age time.Duration
	if !oldest.IsZero() {
		age = time.Since(oldest)
	}
	switch {
	case age <= s.opt.MaxLag/2:
		return false, nil, 0, nil
	case age > s.opt.MaxLag:
		if s.flushErr != nil {
			return false, nil, 0, fmt.Errorf("%w: %v", ErrBehind, s.flushErr)
		}
		return false, nil, 0, ErrBehind
	}
	return true, s.flushed, s.opt.MaxLag - age + time.Millisecond, nil
}

// writable waits until one more update may be buffered (lag), or fails.
func (s *Bolt) writable(ctx context.Context) error {
	for {
		brake, done, wait, err := s.lag()
		if err != nil || !brake {
			return err
		}
		boltBraked.Add(1)
		select {
		case s.kick <- struct{}{}:
		default:
		}
		t := time.NewTimer(wait)
		select {
		case <-done:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("state: bbolt: waiting for the disk: %w", ctx.Err())
		}
		t.Stop()
	}
}

// Outcomes of admit.
const (
	admitBuffer = iota // buffer the writes
	admitDone          // nothing to buffer: answer
	admitWait          // wait for the disk (writable), then take the step again
)

// admit decides what becomes of a step's writes. A step that writes
// nothing is answered whatever the disk's state: it needs nothing from the
// disk but the read it made. One whose writes are all refreshes is answered
// at once too, its writes dropped (and counted), while the disk is behind:
// that costs nothing but an expiry pushed back less far. Any other write
// waits at the brake (admitWait: the caller lets its key locks go, waits
// and takes the step again, since the values may change meanwhile) or
// fails with ErrBehind.
func (s *Bolt) admit(ws ...*write) (int, error) {
	refresh, writes := true, false
	for _, w := range ws {
		if w != nil {
			writes = true
			refresh = refresh && w.refresh
		}
	}
	if !writes {
		return admitDone, nil
	}
	brake, _, _, err := s.lag()
	switch {
	case err == ErrClosed:
		return 0, err
	case (brake || err != nil) && refresh:
		boltDropped.Add(1)
		return admitDone, nil
	case err != nil:
		return 0, err
	case brake:
		return admitWait, nil
	}
	return admitBuffer, nil
}

// Counts of every bbolt store in the process (BoltTotals).
var boltBraked, boltDropped, boltWarmed, boltLow, boltRaised, boltStarved, boltCrowded atomic.Int64

// BoltCounts are counts over every bbolt store a process opened.
type BoltCounts struct {
	Braked  int64 // updates that waited for the disk at the writers' brake
	Dropped int64 // refreshes dropped because the disk was behind (admit)
	Read    int64 // bytes of the files read into the page cache (boltwarm.go)
	Low     int64 // commits run at the lower priority (boltprio.go)
	Raised  int64 // commits the low thread began and handed over, as it waited for a CPU
	Starved int64 // commits the low thread finished that waited too long for a CPU while other processes kept the cores busy (a hold-off began)
	Crowded int64 // the same while policyd's own work kept them busy (no hold-off)
}

// BoltTotals returns the counts; policyd exports them as metrics.
func BoltTotals() BoltCounts {
	return BoltCounts{Braked: boltBraked.Load(), Dropped: boltDropped.Load(), Read: boltWarmed.Load(),
		Low: boltLow.Load(), Raised: boltRaised.Load(), Starved: boltStarved.Load(), Crowded: boltCrowded.Load()}
}

// read returns the current values of keys: buffered ones first, then the file.
func (s *Bolt) read(keys ...string) ([]string, error) {
	vals := make([]string, len(keys))
	var miss []int
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	gen := s.gen
	for i, k := range keys {
		r, ok := s.pending[k]
		if !ok {
			r, ok = s.flushing[k]
		}
		if !ok {
			miss = append(miss, i)
			continue
		}
		if !r.del {
			vals[i], _, _ = decodeRec(r.val)
		}
	}
	s.mu.Unlock()
	if len(miss) == 0 {
		return vals, nil
	}
	if err := s.readFile(gen, keys, miss, vals); err != nil {
		return nil, fmt.Errorf("state: bbolt: read: %w", err)
	}
	return vals, nil
}

func (s *Bolt) buffer(now time.Time, keys []string, ws []*write) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, w := range ws {
		if w == nil {
			continue
		}
		if s.pendOld.IsZero() {
			s.pendOld = time.Now()
		}
		s.pending[keys[i]] = brec{val: encodeRec(w.val, now.Add(w.ttl)), brief: w.brief}
	}
}

// Greylist implements Store.
func (s *Bolt) Greylist(ctx context.Context, op GreyOp) (GreyOutcome, error) {
	return step(s, ctx, op.Now, []string{op.Triplet, op.Client}, func(v []string) ([]*write, GreyOutcome) {
		wt, wc, out := greyStep(v[0], v[1], op)
		return []*write{wt, wc}, out
	})
}

// Rate implements Store.
func (s *Bolt) Rate(ctx context.Context, op RateOp) (RateOutcome, error) {
	return step(s, ctx, op.Now, []string{op.Key}, func(v []string) ([]*write, RateOutcome) {
		w, out := rateStep(v[0], op)
		return []*write{w}, out
	})
}

// step takes one read-modify-write step on keys under their locks: f
// turns the values read into the writes (one per key, nil: none) and the
// outcome. The writes are buffered as admit decides; after a wait at the
// brake the step is taken again, since the values may have changed.
func step[T any](s *Bolt, ctx context.Context, at time.Time, keys []string, f func(vals []string) ([]*write, T)) (T, error) {
	var zero T
	for {
		unlock := s.lockKeys(keys...)
		v, err := s.read(keys...)
		if err != nil {
			unlock()
			return zero, err
		}
		ws, out := f(v)
		a, err := s.admit(ws...)
		if a == admitBuffer && err == nil {
			s.buffer(at, keys, ws)
		}
		unlock()
		switch {
		case err != nil:
			return zero, err
		case a != admitWait:
			return out, nil
		}
		if err := s.writable(ctx); err != nil {
			return zero, err
		}
	}
}

// Get implements Store.
func (s *Bolt) Get(ctx context.Context, key string) (Entry, bool, error) {
	s.mu.Lock()
	gen := s.gen
	r, ok := s.pending[key]
	if !ok {
		r, ok = s.flushing[key]
	}
	s.mu.Unlock()
	if !ok {
		var found bool
		err := s.readFileRaw(gen, key, func(v []byte) { r, found = brec{val: bytes.Clone(v)}, true })
		if err != nil {
			return Entry{}, false, fmt.Errorf("state: bbolt: %w", err)
		}
		if !found {
			return Entry{}, false, nil
		}
	}
	if r.del {
		return Entry{}, false, nil
	}
	v, exp, _ := decodeRec(r.val)
	return Entry{Key: key, Value: v, ExpiresAt: exp}, true, nil
}

// Scan implements Store. It sees the file plus the buffered updates.
func (s *Bolt) Scan(ctx context.Context, prefix string, fn func(Entry) error) error {
	over := map[string]brec{}
	s.mu.Lock()
	for k, r := range s.flushing {
		over[k] = r
	}
	for k, r := range s.pending {
		over[k] = r
	}
	s.mu.Unlock()
	now := s.opt.Clock.now()
	emit := func(k string, raw []byte) error {
		v, exp, ok := decodeRec(raw)
		if !ok || exp.Before(now) {
			return nil
		}
		return fn(Entry{Key: k, Value: v, ExpiresAt: exp})
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, b := range txTrees(tx).each() {
			c := b.Cursor()
			p := []byte(prefix)
			for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
				if err := ctx.Err(); err != nil {
					return err
				}
				if _, ok := over[string(k)]; ok {
					continue
				}
				if err := emit(string(k), v); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for k, r := range over {
		if r.del || len(k) < len(prefix) || k[:len(prefix)] != prefix {
			continue
		}
		if err := emit(k, r.val); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements Store.
func (s *Bolt) Delete(ctx context.Context, key string) (bool, error) {
	if err := s.writable(ctx); err != nil {
		return false, err
	}
	unlock := s.lockKeys(key)
	defer unlock()
	_, ok, err := s.Get(ctx, key)
	if err != nil || !ok {
		return false, err
	}
	s.mu.Lock()
	if s.pendOld.IsZero() {
		s.pendOld = time.Now()
	}
	s.pending[key] = brec{del: true}
	s.mu.Unlock()
	return true, nil
}

// Flush commits everything buffered now and waits for it.
func (s *Bolt) Flush() error { return s.flush(false) }

// Close commits what is buffered and closes the file.
func (s *Bolt) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	s.warm.close()
	if s.low != nil {
		s.low.close()
	}
	err := s.flush(false)
	rollbackAll(s.rp.takeAll(true))
	if cerr := s.db.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("state: bbolt: close: %w", cerr)
	}
	return err
}

func (s *Bolt) run() {
	defer close(s.done)
	t := time.NewTimer(s.opt.FlushInterval)
	defer t.Stop()
	lastSweep := time.Now() // when the last pass ended (or the start)
	var chunkDue time.Time  // during a pass: when the next chunk may run
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.kick:
		}
		s.fmu.Lock()
		sweeping := s.sweeping
		s.fmu.Unlock()
		// A chunk of a pass goes with this commit when its pause is over,
		// or a new pass starts SweepInterval after the last one ended.
		chunk := sweeping && !time.Now().Before(chunkDue) ||
			!sweeping && time.Since(lastSweep) >= s.opt.SweepInterval
		s.commit(chunk)
		s.fmu.Lock()
		sweeping = s.sweeping
		if chunk {
			chunkDue = time.Now().Add(max(s.opt.SweepPause, 2*s.lastChunk))
			if !sweeping {
				// The pass is over; the next one starts SweepInterval after
				// this one ended, so a pass longer than SweepInterval is not
				// followed by another at once.
				lastSweep = time.Now()
			}
		}
		s.fmu.Unlock()
		t.Reset(s.nextCommit(sweeping, chunkDue))
	}
}

// commit runs one commit (flush) on the low thread when the gate lets it,
// or here at the process's priority. Errors are kept in flushErr and
// surface as ErrBehind.
func (s *Bolt) commit(chunk bool) {
	s.mu.Lock()
	work := chunk || len(s.pending) > 0
	var age time.Duration
	if !s.pendOld.IsZero() {
		age = time.Since(s.pendOld)
	}
	s.mu.Unlock()
	if s.low == nil || !work || !s.gate.low(time.Now(), age) {
		s.flush(chunk)
		return
	}
	began := time.Now()
	var j *commitJob
	var done bool
	r := s.low.run(func(check func() bool) {
		if s.opt.noHand {
			check = nil
		}
		if j = s.startCommit(chunk); j != nil && j.fill(check) {
			j.finish()
			done = true
		}
	})
	switch {
	case j == nil: // committed meanwhile (Flush)
		return
	case !done:
		// The thread waited for a CPU while it wrote the batch: the rest
		// here.
		boltRaised.Add(1)
		j.fill(nil)
		j.finish()
		return
	}
	boltLow.Add(1)
	wall := time.Since(began)
	switch s.gate.ran(time.Now(), wall, age+wall, r) {
	case ranCrowded:
		boltCrowded.Add(1)
	case ranStarved:
		boltStarved.Add(1)
	}
}

// nextCommit is how long the commit goroutine waits before the next commit:
// until the oldest buffered update is FlushInterval old (at once if it
// already is), FlushInterval when nothing is buffered, and no later than
// the next chunk of a sweep pass under way.
//
// Counting from the oldest update rather than from the end of the last
// commit keeps the oldest update a commit finds at FlushInterval old while
// commits take less than that (at one commit's length when they take
// longer): counted from the end, an update could wait a whole commit, then
// FlushInterval, then its own commit, and with commits of 150 ms (a few
// thousand random writes in a file of ten million entries) it reached the
// writers' brake at MaxLag/2 at the end of every third or fourth commit and
// stopped every decision for the rest of it (50-90 ms, TestBoltCommitPace).
func (s *Bolt) nextCommit(sweeping bool, chunkDue time.Time) time.Duration {
	s.mu.Lock()
	wait := s.opt.FlushInterval
	if !s.pendOld.IsZero() {
		wait -= time.Since(s.pendOld)
	}
	s.mu.Unlock()
	if sweeping {
		wait = min(wait, time.Until(chunkDue))
	}
	return max(wait, 0)
}

// flush commits pending (and, when sweep is set, deletes a chunk of expired
// entries in the same transaction).
func (s *Bolt) flush(sweep bool) error {
	j := s.startCommit(sweep)
	if j == nil {
		return nil
	}
	j.fill(nil)
	return j.finish()
}

// commitJob is one commit, taken in three steps so that the low thread can
// hand it over half-way (boltprio.go): startCommit takes the buffer and
// begins the transaction, fill writes the batch (and the sweep chunk) into
// it, finish commits it and updates the buffer. fmu is held from
// startCommit to the end of finish, which may run on another goroutine.
type commitJob struct {
	s         *Bolt
	sweep     bool
	batch     map[string]brec
	keys      []string // batch's keys in order: bbolt inserts in order far faster than at random
	next      int      // keys written so far
	spun      time.Duration
	filled    bool
	tx        *bolt.Tx
	err       error
	now       time.Time // the sweep's clock
	began     time.Time
	sweepNext []byte
}

// fillCheck is how many keys fill writes between two calls of its check.
const fillCheck = 32

// startCommit takes the buffer and begins a write transaction, or returns
// nil when there is nothing to commit.
func (s *Bolt) startCommit(sweep bool) *commitJob {
	s.fmu.Lock()
	s.mu.Lock()
	if len(s.pending) == 0 && !sweep {
		s.mu.Unlock()
		s.fmu.Unlock()
		return nil
	}
	s.flushing, s.pending = s.pending, map[string]brec{}
	s.flushOld, s.pendOld = s.pendOld, time.Time{}
	j := &commitJob{s: s, sweep: sweep, batch: s.flushing}
	s.mu.Unlock()

	n := len(j.batch)
	if sweep {
		n += sweepChunk
	}
	s.beforeCommit(n)
	j.now, j.began = s.opt.Clock.now(), time.Now()
	j.keys = make([]string, 0, len(j.batch))
	for k := range j.batch {
		j.keys = append(j.keys, k)
	}
	sort.Strings(j.keys)
	j.tx, j.err = s.db.Begin(true)
	return j
}

// fill writes the batch and the sweep chunk into the transaction. With
// check set it asks check every fillCheck keys whether to stop, and says
// whether it got to the end (false: stopped; fill again to go on).
func (j *commitJob) fill(check func() bool) bool {
	if j.err != nil || j.filled {
		return true
	}
	t := txTrees(j.tx)
	for ; j.next < len(j.keys); j.next++ {
		if check != nil && j.next%fillCheck == 0 && check() {
			return false
		}
		k := []byte(j.keys[j.next])
		r := j.batch[j.keys[j.next]]
		// A key lives in one tree: written to one, it leaves the other
		// (bbolt's Delete of a missing key writes nothing).
		to, other := t.kept, t.brief
		if r.brief {
			to, other = t.brief, t.kept
		}
		j.err = other.Delete(k)
		if j.err == nil && r.del {
			j.err = to.Delete(k)
		} else if j.err == nil {
			j.err = to.Put(k, r.val)
		}
		if j.err != nil {
			return true
		}
	}
	for ; j.spun < j.s.opt.commitSpin; j.spun += time.Millisecond {
		if check != nil && check() {
			return false
		}
		spinCPU(time.Millisecond)
	}
	if check != nil && check() {
		return false
	}
	if j.sweep {
		b := t.brief
		if j.s.sweepKept {
			b = t.kept
		}
		j.sweepNext = sweepExpired(b, j.s.sweepFrom, j.now)
	}
	if j.s.opt.commitDelay > 0 {
		time.Sleep(j.s.opt.commitDelay)
	}
	j.filled = true
	return true
}

// finish commits the transaction (or rolls it back after an error), takes
// the batch out of the buffer, or back into it for the next attempt, and
// lets fmu go.
func (j *commitJob) finish() error {
	s := j.s
	defer s.fmu.Unlock()
	err := j.err
	switch {
	case j.tx != nil && err == nil:
		err = j.tx.Commit()
	case j.tx != nil:
		j.tx.Rollback()
	}
	sweep, batch := j.sweep, j.batch
	if sweep {
		s.lastChunk = time.Since(j.began)
	}
	if sweep && err == nil {
		// The pass goes on from the first key not visited, from the top
		// of the kept tree after the brief one, or ends.
		switch {
		case j.sweepNext != nil:
			s.sweepFrom, s.sweeping = j.sweepNext, true
		case !s.sweepKept:
			s.sweepFrom, s.sweepKept, s.sweeping = nil, true, true
		default:
			s.sweepFrom, s.sweepKept, s.sweeping = nil, false, false
		}
	} else if sweep {
		s.sweeping = true // the chunk is tried again at the next commit
	}

	s.mu.Lock()
	if err != nil {
		// Keep the batch for the next attempt, under anything newer.
		for k, r := range batch {
			if _, ok := s.pending[k]; !ok {
				s.pending[k] = r
			}
		}
		if !s.flushOld.IsZero() {
			s.pendOld = s.flushOld
		}
		s.flushErr = err
		err = fmt.Errorf("state: bbolt: commit: %w", err)
	} else {
		// The batch leaves the buffer in the same step as the commit count
		// grows: a read that no longer finds it there borrows only a
		// transaction that sees the commit (readPool).
		s.gen++
		s.flushErr = nil
	}
	s.flushing = nil
	s.flushOld = time.Time{}
	gen := s.gen
	s.mu.Unlock()
	if s.opt.poolDelay > 0 {
		time.Sleep(s.opt.poolDelay)
	}
	// Fresh read transactions before the writers the brake held back go on.
	s.afterCommit(gen)
	s.warm.committed()
	s.mu.Lock()
	close(s.flushed)
	s.flushed = make(chan struct{})
	s.mu.Unlock()
	return err
}

// sweepExpired deletes expired entries among at most sweepChunk keys from
// start, and returns where the next sweep continues (nil: from the top).
func sweepExpired(b *bolt.Bucket, start []byte, now time.Time) []byte {
	c := b.Cursor()
	var k, v []byte
	if start == nil {
		k, v = c.First()
	} else {
		k, v = c.Seek(start)
	}
	var dead [][]byte
	for n := 0; k != nil && n < sweepChunk; n++ {
		if _, exp, ok := decodeRec(v); !ok || exp.Before(now) {
			dead = append(dead, append([]byte(nil), k...))
		}
		k, v = c.Next()
	}
	var next []byte
	if k != nil {
		next = append([]byte(nil), k...)
	}
	for _, k := range dead {
		b.Delete(k)
	}
	return next
}
