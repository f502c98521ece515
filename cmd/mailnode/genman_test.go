package main

import (
	"strings"
	"testing"

	"github.com/mailnode/mailnode/internal/manpage"
)

func TestManPages(t *testing.T) {
	app := newApp()
	pages, err := manpage.Pages(app)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"mailnode.8"}
	for _, c := range app.Commands {
		if !c.Hidden {
			want = append(want, "mailnode-"+c.Name+".8")
		}
	}
	if len(pages) != len(want) {
		t.Errorf("got %d pages, want %d: %v", len(pages), len(want), want)
	}
	for _, name := range want {
		page, ok := pages[name]
		if !ok {
			t.Errorf("no page %s", name)
			continue
		}
		if !strings.HasPrefix(page, ".nh\n.TH "+strings.TrimSuffix(name, ".8")+" 8") {
			t.Errorf("%s: header %q", name, page[:min(len(page), 40)])
		}
	}
	if _, ok := pages["mailnode-gen-man.8"]; ok {
		t.Error("the hidden gen-man command has a page")
	}
	// Markdown would take "<text>" for HTML and drop it.
	if !strings.Contains(pages["mailnode-policyd.8"], `"550 5.7.1 <text>"`) {
		t.Error("mailnode-policyd.8 lost the <text> of the 550 reply")
	}
}
