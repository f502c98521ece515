package mailauth

import (
	"fmt"
	"sync"
	"testing"
)

// TestParseFromCache: answers from the cache are the parser's, for valid
// and invalid values, when values share a slot, and under concurrent use.
func TestParseFromCache(t *testing.T) {
	values := []string{
		"Alice <alice@sender.test>", "alice@sender.test", " \"Alice, A.\" <alice@sender.test>",
		"=?utf-8?q?Al=C3=AFce?= <alice@sender.test>", "a@x.test, b@y.test", "Alice\r\n <alice@sender.test>",
		"not an address", "", "<>", "Alice <alice@sender.test",
	}
	for i := 0; i < 600; i++ { // more than the cache has slots: collisions
		values = append(values, fmt.Sprintf("User %d <u%d@sender.test>", i, i))
	}
	check := func(t *testing.T, v string) {
		got, gerr := ParseFrom(v)
		want, werr := addressParser.ParseList(Unfold(v))
		if (gerr == nil) != (werr == nil) || len(got) != len(want) {
			t.Errorf("ParseFrom(%q) = %v, %v; parser: %v, %v", v, got, gerr, want, werr)
			return
		}
		for i := range got {
			if got[i].Address != want[i].Address || got[i].Name != want[i].Name {
				t.Errorf("ParseFrom(%q)[%d] = %v; parser: %v", v, i, got[i], want[i])
			}
		}
	}
	for round := 0; round < 2; round++ {
		for _, v := range values {
			check(t, v)
		}
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := range 2000 {
				check(t, values[(i*7+g*13)%len(values)])
			}
		}(g)
	}
	wg.Wait()
}
