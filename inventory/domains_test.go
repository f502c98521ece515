package inventory

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/mailnode/mailnode/test/invgen"
)

// TestSplitMatchesWholeDocument: the per-domain path and the whole-document
// path give the same inventory and the same problems, for every test input.
func TestSplitMatchesWholeDocument(t *testing.T) {
	inputs := cutInputs(t)
	for name, data := range inputs {
		t.Run(name, func(t *testing.T) {
			whole, werr := parse(data, nil, "f.yaml", LoadOptions{})
			split, serr := Parse(data, "f.yaml")
			if fmt.Sprint(werr) != fmt.Sprint(serr) {
				t.Fatalf("problems differ\nwhole:\n%v\nsplit:\n%v", werr, serr)
			}
			if whole == nil || split == nil {
				if whole != split {
					t.Fatal("one path returned an inventory, the other did not")
				}
				return
			}
			if !reflect.DeepEqual(whole.Owners(), split.Owners()) || !reflect.DeepEqual(whole.VirtualAliases(), split.VirtualAliases()) {
				t.Fatal("indexes differ")
			}
			w, s := *whole, *split
			w.idx, s.idx = nil, nil
			s.Digest = "" // set by ParseWith, over either path
			if !reflect.DeepEqual(w, s) {
				t.Fatalf("inventories differ")
			}
		})
	}
	if _, _, ok := splitDomains(invgen.Generate(3, 5)); !ok {
		t.Error("a plain generated inventory must take the per-domain path")
	}
	for _, name := range []string{"domains inline", "anchor", "second document"} {
		if _, _, ok := splitDomains(inputs[name]); ok {
			t.Errorf("%s: must take the whole-document path", name)
		}
	}
}

// BenchmarkLoad10k loads 10,000 domains with 100,000 mailboxes, the size
// render-config must handle in under 2 s and 256 MiB.
func BenchmarkLoad10k(b *testing.B) {
	data := invgen.Generate(10000, 100000)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := Parse(data, "bench.yaml"); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzSplitMatchesWholeDocument: for any input, the per-domain path never
// disagrees with the whole-document path (same problems or same domains).
func FuzzSplitMatchesWholeDocument(f *testing.F) {
	f.Add([]byte(small))
	f.Add(invgen.Generate(4, 9))
	f.Add([]byte("node: {hostname: mx.example.org}\ndomains:\n- name: a.test\n  class: relay\nunix_users: [root]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		whole, werr := parse(data, nil, "f.yaml", LoadOptions{})
		split, serr := Parse(data, "f.yaml")
		// Both paths must agree on whether the inventory is valid and, when it
		// is, on every domain. The problem lists of a broken document may
		// differ in how much is reported (the unit test pins them for the
		// inventories in testdata).
		if (werr == nil) != (serr == nil) {
			t.Fatalf("validity differs\nwhole:\n%v\nsplit:\n%v", werr, serr)
		}
		if (whole == nil) != (split == nil) {
			t.Fatal("one path returned an inventory, the other did not")
		}
		if whole != nil && !reflect.DeepEqual(whole.Domains, split.Domains) {
			t.Fatal("domains differ")
		}
		// The streamed load (LoadWith) reads the bytes as Parse does.
		streamed, err := loadStream(bytes.NewReader(data), "f.yaml", LoadOptions{})
		if errors.Is(err, errChunk) {
			return // read again whole: Parse's own path
		}
		if fmt.Sprint(err) != fmt.Sprint(serr) || (streamed == nil) != (split == nil) {
			t.Fatalf("the stream differs\nparse:\n%v\nstream:\n%v", serr, err)
		}
		if split != nil && (streamed.Digest != split.Digest || !reflect.DeepEqual(streamed.Domains, split.Domains)) {
			t.Fatal("streamed domains differ")
		}
	})
}
