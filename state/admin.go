package state

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// List writes the entries under prefix ("" = all of mailnode's), sorted by
// key, one per line: key, value, expiry and what the value means. It returns
// how many it wrote. `mailnode state list` is this.
func List(ctx context.Context, st Store, prefix string, now time.Time, w io.Writer) (int, error) {
	var es []Entry
	for _, p := range listPrefixes(prefix) {
		if err := st.Scan(ctx, p, func(e Entry) error { es = append(es, e); return nil }); err != nil {
			return 0, err
		}
	}
	sort.Slice(es, func(i, j int) bool { return es[i].Key < es[j].Key })
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, e := range es {
		exp := "-"
		if !e.ExpiresAt.IsZero() {
			exp = e.ExpiresAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\texpires %s\t%s\n", e.Key, e.Value, exp, Describe(e, now))
	}
	return len(es), tw.Flush()
}

// Count returns how many live entries start with prefix (the greylist's
// size: PrefixTriplet). A store that can count without reading the values
// does (Redis: SCAN alone, no GET per key); the others are scanned.
func Count(ctx context.Context, st Store, prefix string) (int, error) {
	if c, ok := st.(interface {
		Count(context.Context, string) (int, error)
	}); ok {
		return c.Count(ctx, prefix)
	}
	n := 0
	err := st.Scan(ctx, prefix, func(Entry) error { n++; return nil })
	return n, err
}

// listPrefixes keeps List and DeleteMatching to mailnode's own keys.
func listPrefixes(prefix string) []string {
	if prefix == "" {
		return []string{PrefixGrey, PrefixRate}
	}
	return []string{prefix}
}

// DeleteMatching deletes every entry whose key starts with prefix, which
// must be one of mailnode's (grey/..., rate/...), and returns how many.
func DeleteMatching(ctx context.Context, st Store, prefix string) (int, error) {
	if !strings.HasPrefix(prefix, PrefixGrey) && !strings.HasPrefix(prefix, PrefixRate) {
		return 0, fmt.Errorf("state: refusing to delete by prefix %q: it must start with %s or %s", prefix, PrefixGrey, PrefixRate)
	}
	var keys []string
	if err := st.Scan(ctx, prefix, func(e Entry) error { keys = append(keys, e.Key); return nil }); err != nil {
		return 0, err
	}
	n := 0
	for _, k := range keys {
		ok, err := st.Delete(ctx, k)
		if err != nil {
			return n, err
		}
		if ok {
			n++
		}
	}
	return n, nil
}
