package inventory

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"

	"github.com/mailnode/mailnode/test/invgen"
)

// cutInputs are the documents the cut into domains (in memory and
// streamed) must read exactly as the whole-document parse does: every test
// inventory, the cutter's shapes (including those it refuses), and shapes
// a stream meets (a line longer than the reader's buffer, no newline at
// the end).
func cutInputs(t *testing.T) map[string][]byte {
	inputs := map[string][]byte{"small": []byte(small), "generated": invgen.Generate(30, 200)}
	files, _ := filepath.Glob("testdata/bad/*.yaml")
	files = append(files, "../examples/inventory.yaml", "../examples/nullclient.yaml")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		inputs[f] = b
	}
	inputs["items at column 0"] = []byte("node: {hostname: mx.example.org}\ndomains:\n- name: a.test\n  class: relay\n- name: b.test\n  class: relay\nunix_users: [root]\n")
	inputs["key after domains"] = []byte("node: {hostname: mx.example.org}\ndomains:\n  - name: a.test\n    class: relay\n  # comment\n\n  - name: b.test\n    class: relay\nunix_users: [root, root]\n")
	inputs["comment before the first item"] = []byte("node: {hostname: mx.example.org}\ndomains:\n  # relays\n\n  - name: a.test\n    class: relay\n")
	inputs["domains inline"] = []byte("node: {hostname: mx.example.org}\ndomains: [{name: a.test, class: relay}]\n")
	inputs["anchor"] = []byte("node: {hostname: mx.example.org}\ndomains:\n  - &r {name: a.test, class: relay}\n  - name: b.test\n    class: relay\n")
	inputs["anchor after the domains"] = []byte("node: {hostname: mx.example.org}\ndomains:\n  - name: b.test\n    class: relay\nunix_users: [&u root]\n")
	inputs["bad item indent"] = []byte("node: {hostname: mx.example.org}\ndomains:\n  - name: a.test\n class: relay\n")
	inputs["second document"] = []byte("node: {hostname: mx.example.org}\ndomains:\n  - name: a.test\n    class: relay\n---\nnode: {}\n")
	inputs["unknown field in item"] = []byte("node: {hostname: mx.example.org}\ndomains:\n  - name: a.test\n    clas: relay\n  - name: b.test\n    mailboxes: {user: x}\n")
	inputs["syntax error in item"] = []byte("node: {hostname: mx.example.org}\ndomains:\n  - name: a.test\n    class: [relay\n  - name: b.test\n")
	inputs["no newline at the end"] = bytes.TrimSuffix(invgen.Generate(3, 20), []byte("\n"))
	inputs["empty"] = nil
	var long strings.Builder
	long.WriteString("node: {hostname: mx.example.org}\ndomains:\n  - name: a.test\n    class: relay\n    recipients: [")
	for i := 0; i < 20000; i++ { // about 150 KiB on one line
		fmt.Fprintf(&long, "user%d, ", i)
	}
	long.WriteString("last]\n")
	inputs["a line longer than the buffer"] = []byte(long.String())
	return inputs
}

// TestStreamMatchesParse: LoadWith, which reads the file as a stream, gives
// the inventory and the problems Parse gives for the same bytes, with every
// Keep, whether the document is cut into domains or read again whole.
func TestStreamMatchesParse(t *testing.T) {
	dir := t.TempDir()
	for name, data := range cutInputs(t) {
		path := filepath.Join(dir, "inventory.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, k := range []Keep{KeepAll, KeepDecisions, KeepDomains} {
			want, werr := ParseWith(data, path, LoadOptions{Keep: k})
			got, gerr := LoadWith(path, LoadOptions{Keep: k})
			if fmt.Sprint(werr) != fmt.Sprint(gerr) {
				t.Fatalf("%s, keep %d: problems differ\nparse:\n%v\nstream:\n%v", name, k, werr, gerr)
			}
			if (want == nil) != (got == nil) {
				t.Fatalf("%s, keep %d: one path returned an inventory, the other did not", name, k)
			}
			if want == nil {
				continue
			}
			if !reflect.DeepEqual(want.Owners(), got.Owners()) || !reflect.DeepEqual(want.VirtualAliases(), got.VirtualAliases()) {
				t.Fatalf("%s, keep %d: indexes differ", name, k)
			}
			w, g := *want, *got
			w.idx, g.idx = nil, nil
			if !reflect.DeepEqual(w, g) {
				t.Fatalf("%s, keep %d: inventories differ (digest %s, %s)", name, k, w.Digest, g.Digest)
			}
		}
	}
}

// The stream path is the one taken for a plain inventory, and it reads
// each byte once, at any read size.
func TestStreamCutsPlainInventory(t *testing.T) {
	data := invgen.Generate(40, 300)
	want, err := Parse(data, "f.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []io.Reader{bytes.NewReader(data), iotest.OneByteReader(bytes.NewReader(data)), iotest.HalfReader(bytes.NewReader(data))} {
		got, err := loadStream(r, "f.yaml", LoadOptions{Keep: KeepDecisions})
		if err != nil {
			t.Fatalf("%T: %v", r, err)
		}
		if got.Digest != want.Digest || len(got.Domains) != len(want.Domains) || !reflect.DeepEqual(got.Owners(), want.Owners()) {
			t.Fatalf("%T: the streamed inventory differs", r)
		}
	}
	if _, err := loadStream(bytes.NewReader([]byte("node: {hostname: mx.example.org}\ndomains:\n  - &a {name: a.test, class: relay}\n")), "f.yaml", LoadOptions{}); !errors.Is(err, errChunk) {
		t.Fatalf("an anchor must send the document to the whole path, got %v", err)
	}
}

// A file that fails half way is unreadable, and said so, not half loaded.
func TestStreamReadError(t *testing.T) {
	data := invgen.Generate(40, 300)
	r := io.MultiReader(bytes.NewReader(data[:len(data)/2]), iotest.ErrReader(errors.New("input/output error")))
	inv, err := loadStream(r, "f.yaml", LoadOptions{Keep: KeepDecisions})
	if inv != nil || err == nil || !strings.Contains(err.Error(), "input/output error") {
		t.Fatalf("got %v, %v", inv, err)
	}
	if _, err := LoadWith(t.TempDir(), LoadOptions{}); err == nil || !Unreadable(err) || !strings.Contains(err.Error(), "cannot read inventory") {
		t.Fatalf("a directory: %v", err)
	}
}

// A pipe is read once, whole: a document the cut refuses (here an anchor)
// could not be read again from it.
func TestLoadFromPipe(t *testing.T) {
	doc := []byte("node: {hostname: mx.example.org}\ndomains:\n  - &r {name: a.test, class: relay}\n  - name: b.test\n    class: relay\n")
	for _, d := range [][]byte{doc, invgen.Generate(3, 20)} {
		fifo := filepath.Join(t.TempDir(), "inventory.fifo")
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Skip("no FIFO here:", err)
		}
		go func() {
			if f, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
				f.Write(d)
				f.Close()
			}
		}()
		got, err := LoadWith(fifo, LoadOptions{Keep: KeepDecisions})
		if err != nil {
			t.Fatalf("a FIFO: %v", err)
		}
		if w, _ := Parse(d, "fifo"); got.Digest != w.Digest || len(got.Domains) != len(w.Domains) {
			t.Fatalf("a FIFO gave another inventory")
		}
	}
}
