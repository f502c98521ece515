package state

import (
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// Reading without bbolt's meta lock.
//
// Every bbolt transaction, read-only ones too, takes the database's meta
// lock to begin, and a commit holds that lock while it returns the pages
// the previous commit freed to the free list: at ten million entries, with
// some 15,000 pages freed by a commit of a few thousand random keys, for
// up to 5 ms, and every decision that opened its read transaction then
// waited for it (a runtime trace of policyd at 5,000 decisions/s: half of
// the decisions slower than 1.5 ms were waiting there).
//
// So decisions borrow read transactions the commit goroutine opened right
// after the last commit (readPool). Each is lent to one goroutine at a
// time (bbolt's rule for a transaction) and tagged with the number of
// commits it sees; a reader that looked at the buffer after a later commit
// ended opens its own, as before, since a buffered update leaves the buffer
// when its commit ends. Stale ones are rolled back by the commit goroutine
// before its next commit, so they pin at most one commit's freed pages.
//
// An open read transaction blocks bbolt from remapping the file, and a
// commit that needs a larger mapping would wait for it: the pool would
// deadlock the commit. The file is therefore mapped at poolMapSize from
// the start (address space, not memory: only the pages read are resident),
// and before each commit the pool is emptied and lending stops whenever
// the file's end plus what the commit could add might reach the mapping;
// reads then open their own transactions, and a remap proceeds as soon as
// the borrowed ones come back (a reader never waits while holding one).

// poolMapSize is the size bbolt maps the file at: beyond it (minus one
// commit's growth) reads stop borrowing. 64 GiB of address space on 64-bit
// systems (a file of ten million triplets is 2.5 GiB); none on 32-bit
// ones, whose address space could not take it.
var poolMapSize = func() int {
	if strconv.IntSize < 64 {
		return 0
	}
	return 64 << 30
}()

// readPoolSize is how many transactions the commit goroutine opens after
// each commit; a reader finding none idle opens its own.
func readPoolSize() int { return min(max(2*runtime.GOMAXPROCS(0)+2, 4), 32) }

type pooledTx struct {
	tx  *bolt.Tx
	t   trees
	gen uint64 // the commits it sees (Bolt.gen when it was opened)
}

type readPool struct {
	mu      sync.Mutex
	gen     uint64      // the tag of the idle ones
	idle    []*pooledTx // opened after commit gen, not lent
	retired []*bolt.Tx  // returned after a later commit: rolled back before the next
	direct  bool        // not lending: the next commit may remap the file

	lent          atomic.Int64 // reads served by a borrowed transaction
	missed        atomic.Int64 // reads that opened their own
	directCommits atomic.Int64 // commits made with lending stopped
}

// get lends an idle transaction that sees at least commit gen, or nil.
func (p *readPool) get(gen uint64) *pooledTx {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.idle)
	if p.direct || n == 0 || p.gen < gen {
		p.missed.Add(1)
		return nil
	}
	t := p.idle[n-1]
	p.idle = p.idle[:n-1]
	p.lent.Add(1)
	return t
}

// put takes a borrowed transaction back.
func (p *readPool) put(t *pooledTx) {
	p.mu.Lock()
	switch {
	case p.direct:
		// A commit that may remap is waiting for it: close it now.
		p.mu.Unlock()
		t.tx.Rollback()
		return
	case t.gen == p.gen:
		p.idle = append(p.idle, t)
	default:
		// Rolling back takes the meta lock, which a commit may hold:
		// the commit goroutine does it.
		p.retired = append(p.retired, t.tx)
	}
	p.mu.Unlock()
}

// takeAll empties the pool (idle and retired) and sets whether it lends.
func (p *readPool) takeAll(direct bool) []*bolt.Tx {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.retired
	for _, t := range p.idle {
		out = append(out, t.tx)
	}
	p.idle, p.retired, p.direct = nil, nil, direct
	return out
}

func rollbackAll(txs []*bolt.Tx) {
	for _, tx := range txs {
		tx.Rollback()
	}
}

// beforeCommit runs in the commit goroutine before each commit of up to
// keys keys: it rolls the stale transactions back, and empties the pool and
// stops lending if the commit could reach the end of the mapping.
func (s *Bolt) beforeCommit(keys int) {
	if !s.roomFor(keys) {
		s.rp.directCommits.Add(1)
		rollbackAll(s.rp.takeAll(true))
		return
	}
	s.rp.mu.Lock()
	stale := s.rp.retired
	s.rp.retired = nil
	s.rp.mu.Unlock()
	rollbackAll(stale)
}

// roomFor says whether a commit of keys keys surely ends inside the mapping.
// A put or delete rewrites at most the pages on its path from the root,
// and a split at most doubles them; a key written to one tree and deleted
// from the other rewrites two such paths: eighteen pages a key allows nine
// levels in all (a tree of ten million keys has four, the brief tree
// fewer), and the free list, written anew, takes a page per 500 ids.
func (s *Bolt) roomFor(keys int) bool {
	if s.mapSize <= 0 {
		return false
	}
	st := s.db.Stats()
	pages := int64(keys)*18 + int64(st.FreePageN+st.PendingPageN)/500 + 64
	return s.hwm.Load()+pages*int64(s.pageSize) < int64(s.mapSize)
}

// afterCommit runs in the commit goroutine after each commit attempt:
// gen is the number of successful commits. The idle transactions, opened
// before, are rolled back and fresh ones opened, unless the file's end is
// too near the mapping's (lending then stays stopped: beforeCommit would
// stop it anyway).
func (s *Bolt) afterCommit(gen uint64) {
	rollbackAll(s.rp.takeAll(true))
	fresh := make([]*pooledTx, 0, readPoolSize())
	for i := range cap(fresh) {
		tx, err := s.db.Begin(false)
		if err != nil {
			break
		}
		if i == 0 {
			s.hwm.Store(tx.Size()) // every one sees the same commit
		}
		t := txTrees(tx)
		if t.kept == nil || t.brief == nil || !s.roomFor(0) {
			tx.Rollback()
			break
		}
		fresh = append(fresh, &pooledTx{tx: tx, t: t, gen: gen})
	}
	s.rp.mu.Lock()
	s.rp.idle, s.rp.gen, s.rp.direct = fresh, gen, len(fresh) == 0
	s.rp.mu.Unlock()
}

// inFile runs fn with the file's trees as it holds them after at least
// commit gen (Bolt.gen read with the buffer): through a borrowed
// transaction when one is idle, else its own. What fn keeps of the bytes
// it reads it must copy.
func (s *Bolt) inFile(gen uint64, fn func(t trees)) error {
	if t := s.rp.get(gen); t != nil {
		fn(t.t)
		s.rp.put(t)
		return nil
	}
	return s.db.View(func(tx *bolt.Tx) error {
		fn(txTrees(tx))
		return nil
	})
}

// readFile decodes keys[i] from the file into vals[i] for each i in miss.
func (s *Bolt) readFile(gen uint64, keys []string, miss []int, vals []string) error {
	return s.inFile(gen, func(t trees) {
		for _, i := range miss {
			if v := t.get([]byte(keys[i])); v != nil {
				vals[i], _, _ = decodeRec(v)
			}
		}
	})
}

// readFileRaw calls found with key's stored bytes, if the file has it.
func (s *Bolt) readFileRaw(gen uint64, key string, found func(v []byte)) error {
	return s.inFile(gen, func(t trees) {
		if v := t.get([]byte(key)); v != nil {
			found(v)
		}
	})
}
