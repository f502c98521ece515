package state

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOptions tunes the Redis store; zero values take the defaults.
type RedisOptions struct {
	// Prefix is put in front of every key, so several node groups can
	// share one Redis. Default "mailnode:".
	Prefix string
	// Timeout bounds each command (dial, read, write). Default 1 s; a
	// slower Redis is a failure the caller answers with 4xx.
	Timeout time.Duration
}

// Redis is the shared store: every node of a group points at the same Redis
// and sees the same triplets and counters. Each Greylist and Rate operation is
// one Lua script — the same rules as greyStep and rateStep — so it is atomic
// whatever the other nodes do at the same moment, and costs one round trip.
// Keys carry their own TTL (PX) and disappear by themselves. Times come from
// the caller's clock: keep the nodes' clocks in step (NTP), as mail needs
// anyway. The two keys of a greylisting step are not hash-tagged: use a
// single Redis (or Sentinel), not Redis Cluster.
type Redis struct {
	c      *redis.Client
	prefix string
}

// OpenRedis connects to url (redis://, rediss:// or unix://) and checks that
// the server answers.
func OpenRedis(ctx context.Context, url string, opt RedisOptions) (*Redis, error) {
	o, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("state: redis: %w", err)
	}
	if opt.Timeout <= 0 {
		opt.Timeout = time.Second
	}
	o.DialTimeout, o.ReadTimeout, o.WriteTimeout = opt.Timeout, opt.Timeout, opt.Timeout
	o.ContextTimeoutEnabled = true
	// One retry at most: Postfix waits for the answer, and a Redis that is
	// down should turn into a 4xx quickly.
	o.MaxRetries = 1
	s := NewRedis(redis.NewClient(o), opt)
	if err := s.c.Ping(ctx).Err(); err != nil {
		s.c.Close()
		return nil, fmt.Errorf("state: redis %s: %w", o.Addr, err)
	}
	return s, nil
}

// OpenRedisSentinel connects to the master the sentinels at addrs know as
// master, and checks that it answers. The client follows the master across a
// failover: it asks the sentinels for the master's address whenever it
// dials, and drops its connections when they announce a switch. While there
// is no master, commands fail within the timeout (the caller answers 4xx).
func OpenRedisSentinel(ctx context.Context, master string, addrs []string, password string, opt RedisOptions) (*Redis, error) {
	if opt.Timeout <= 0 {
		opt.Timeout = time.Second
	}
	c := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:    master,
		SentinelAddrs: addrs,
		Password:      password,
		DialTimeout:   opt.Timeout,
		ReadTimeout:   opt.Timeout,
		WriteTimeout:  opt.Timeout,
		// As OpenRedis: one retry at most, so that a dead master turns
		// into a 4xx within a few timeouts rather than a stalled Postfix.
		MaxRetries:            1,
		ContextTimeoutEnabled: true,
		// Two dials per try rather than go-redis's five: with the master
		// and every sentinel gone a step fails in about a second, not
		// several, and Postfix's own retry of the policy service follows.
		DialerRetries:      2,
		DialerRetryTimeout: 100 * time.Millisecond,
	})
	s := NewRedis(c, opt)
	if err := s.c.Ping(ctx).Err(); err != nil {
		s.c.Close()
		return nil, fmt.Errorf("state: redis master %q via sentinels %s: %w", master, strings.Join(addrs, ","), err)
	}
	return s, nil
}

// NewRedis wraps an existing client.
func NewRedis(c *redis.Client, opt RedisOptions) *Redis {
	if opt.Prefix == "" {
		opt.Prefix = "mailnode:"
	}
	return &Redis{c: c, prefix: opt.Prefix}
}

// greyLua is greyStep. KEYS: triplet, client. ARGV: now, delay, window,
// expire, awl_after, touch, margin (milliseconds). Returns verdict, wait,
// first, passes, client count.
var greyLua = redis.NewScript(`
local now, delay, window, expire = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local awl, touch, margin = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local function ints(s, n)
  if not s then return nil end
  local t = {}
  for p in string.gmatch(s, '[^,]+') do t[#t+1] = tonumber(p) end
  if #t ~= n then return nil end
  for i = 1, n do if t[i] == nil then return nil end end
  return t
end
local cnt, clast = 0, -1
local c = ints(redis.call('GET', KEYS[2]), 2)
if c and now - c[2] <= expire then cnt, clast = c[1], c[2] end
if awl > 0 and cnt >= awl then
  if now - clast >= touch then
    redis.call('SET', KEYS[2], string.format('%d,%d', cnt, now), 'PX', expire + margin)
  end
  return {4, 0, 0, 0, cnt}
end
local first, last, passes, known = 0, 0, 0, false
local t = ints(redis.call('GET', KEYS[1]), 3)
if t then
  first, last, passes = t[1], t[2], t[3]
  known = (passes == 0 and now - first <= window) or (passes > 0 and now - last <= expire)
end
if not known then
  redis.call('SET', KEYS[1], string.format('%d,%d,0', now, now), 'PX', window + margin)
  return {1, delay, now, 0, cnt}
end
if passes == 0 and now - first < delay then
  return {2, first + delay - now, first, 0, cnt}
end
if passes == 0 and (clast < 0 or now - clast >= touch) then
  cnt = cnt + 1
  redis.call('SET', KEYS[2], string.format('%d,%d', cnt, now), 'PX', expire + margin)
end
if passes == 0 or now - last >= touch then
  passes = passes + 1
  redis.call('SET', KEYS[1], string.format('%d,%d,%d', first, now, passes), 'PX', expire + margin)
end
return {3, 0, first, passes, cnt}
`)

// rateLua is rateStep. KEYS: counter. ARGV: now, bucket, buckets, dm, dr,
// lm, lr, margin. Returns allowed (0/1), messages, recipients, retry_after.
var rateLua = redis.NewScript(`
local now, bs, nb = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local dm, dr, lm, lr = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local margin = tonumber(ARGV[8])
local cur = math.floor(now / bs)
local kept, sm, sr = {}, 0, 0
local v = redis.call('GET', KEYS[1])
if v then
  for i, m, r in string.gmatch(v, '(%-?%d+):(%d+):(%d+)') do
    i, m, r = tonumber(i), tonumber(m), tonumber(r)
    if i > cur - nb and i <= cur + 1 then
      kept[#kept+1] = {i, m, r}
      sm, sr = sm + m, sr + r
    end
  end
end
table.sort(kept, function(a, b) return a[1] < b[1] end)
local function fits(m, r) return (lm <= 0 or m + dm <= lm) and (lr <= 0 or r + dr <= lr) end
if not fits(sm, sr) then
  local m, r, retry = sm, sr, 0
  for _, b in ipairs(kept) do
    m, r = m - b[2], r - b[3]
    if fits(m, r) then retry = (b[1] + nb) * bs - now; break end
  end
  return {0, sm, sr, retry}
end
if dm > 0 or dr > 0 then
  local found = false
  for _, b in ipairs(kept) do
    if b[1] == cur then b[2], b[3], found = b[2] + dm, b[3] + dr, true end
  end
  if not found then
    kept[#kept+1] = {cur, dm, dr}
    table.sort(kept, function(a, b) return a[1] < b[1] end)
  end
  local parts = {}
  for i, b in ipairs(kept) do parts[i] = string.format('%d:%d:%d', b[1], b[2], b[3]) end
  redis.call('SET', KEYS[1], table.concat(parts, ';'), 'PX', (kept[#kept][1] + nb) * bs - now + margin)
end
return {1, sm + dm, sr + dr, 0}
`)

func redisErr(err error) error { return fmt.Errorf("state: redis: %w", err) }

// Greylist implements Store.
func (s *Redis) Greylist(ctx context.Context, op GreyOp) (GreyOutcome, error) {
	r, err := greyLua.Run(ctx, s.c, []string{s.prefix + op.Triplet, s.prefix + op.Client},
		op.Now.UnixMilli(), ms(op.Delay), ms(op.RetryWindow), ms(op.Expire), op.AWLAfter,
		ms(touchEvery), ms(expiryMargin)).Int64Slice()
	if err != nil {
		return GreyOutcome{}, redisErr(err)
	}
	if len(r) != 5 {
		return GreyOutcome{}, redisErr(fmt.Errorf("greylist script returned %d values", len(r)))
	}
	out := GreyOutcome{
		Verdict:     Verdict(r[0]),
		Wait:        time.Duration(r[1]) * time.Millisecond,
		Passes:      int(r[3]),
		ClientCount: int(r[4]),
	}
	if out.Verdict != VerdictAWL {
		out.First = time.UnixMilli(r[2])
	}
	return out, nil
}

// Rate implements Store.
func (s *Redis) Rate(ctx context.Context, op RateOp) (RateOutcome, error) {
	r, err := rateLua.Run(ctx, s.c, []string{s.prefix + op.Key},
		op.Now.UnixMilli(), ms(rateBucket), RateBuckets, op.Messages, op.Recipients,
		op.MaxMessages, op.MaxRecipts, ms(expiryMargin)).Int64Slice()
	if err != nil {
		return RateOutcome{}, redisErr(err)
	}
	if len(r) != 4 {
		return RateOutcome{}, redisErr(fmt.Errorf("rate script returned %d values", len(r)))
	}
	return RateOutcome{
		Allowed:    r[0] == 1,
		Messages:   int(r[1]),
		Recipients: int(r[2]),
		RetryAfter: time.Duration(r[3]) * time.Millisecond,
	}, nil
}

// Get implements Store.
func (s *Redis) Get(ctx context.Context, key string) (Entry, bool, error) {
	k := s.prefix + key
	p := s.c.Pipeline()
	g := p.Get(ctx, k)
	t := p.PTTL(ctx, k)
	if _, err := p.Exec(ctx); err != nil {
		if errors.Is(err, redis.Nil) {
			return Entry{}, false, nil
		}
		return Entry{}, false, redisErr(err)
	}
	e := Entry{Key: key, Value: g.Val()}
	if d := t.Val(); d > 0 {
		e.ExpiresAt = time.Now().Add(d)
	}
	return e, true, nil
}

// globEscape quotes the glob characters SCAN MATCH knows.
func globEscape(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[]\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Scan implements Store.
func (s *Redis) Scan(ctx context.Context, prefix string, fn func(Entry) error) error {
	it := s.c.Scan(ctx, 0, globEscape(s.prefix+prefix)+"*", 1000).Iterator()
	var batch []string
	emit := func() error {
		if len(batch) == 0 {
			return nil
		}
		p := s.c.Pipeline()
		gs := make([]*redis.StringCmd, len(batch))
		ts := make([]*redis.DurationCmd, len(batch))
		for i, k := range batch {
			gs[i], ts[i] = p.Get(ctx, k), p.PTTL(ctx, k)
		}
		if _, err := p.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return redisErr(err)
		}
		for i, k := range batch {
			if gs[i].Err() != nil { // gone meanwhile
				continue
			}
			e := Entry{Key: strings.TrimPrefix(k, s.prefix), Value: gs[i].Val()}
			if d := ts[i].Val(); d > 0 {
				e.ExpiresAt = time.Now().Add(d)
			}
			if err := fn(e); err != nil {
				return err
			}
		}
		batch = batch[:0]
		return nil
	}
	for it.Next(ctx) {
		batch = append(batch, it.Val())
		if len(batch) == 500 {
			if err := emit(); err != nil {
				return err
			}
		}
	}
	if err := it.Err(); err != nil {
		return redisErr(err)
	}
	return emit()
}

// Count counts the keys under prefix with SCAN alone (state.Count): keys
// expire by themselves, so every key SCAN returns is live. SCAN may return
// a key twice while Redis rehashes; the count is then a little high.
func (s *Redis) Count(ctx context.Context, prefix string) (int, error) {
	it := s.c.Scan(ctx, 0, globEscape(s.prefix+prefix)+"*", 1000).Iterator()
	n := 0
	for it.Next(ctx) {
		n++
	}
	if err := it.Err(); err != nil {
		return n, redisErr(err)
	}
	return n, nil
}

// Delete implements Store.
func (s *Redis) Delete(ctx context.Context, key string) (bool, error) {
	n, err := s.c.Del(ctx, s.prefix+key).Result()
	if err != nil {
		return false, redisErr(err)
	}
	return n > 0, nil
}

// Close implements Store.
func (s *Redis) Close() error { return s.c.Close() }
