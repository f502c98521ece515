package main

import (
	"strings"
	"testing"
)

// why takes an address as the log writes it (<...>) or bare, and refuses
// a question that is neither a queue id nor an address before reading
// any log.
func TestWhyQuestion(t *testing.T) {
	const log = "../../maillog/testdata/why-srs.log"
	for _, q := range []string{"sales@example.com", "<sales@example.com>", " sales@example.com "} {
		out, errs, code := runApp(t, "why", "--since", "87600h", "--maillog", log, q)
		if code != 0 || !strings.Contains(out, "4jk3pk5sTQzm4wJ from=<eve@outside.test> (sent on as <SRS0=") {
			t.Errorf("why %q: exit %d\nstdout: %s\nstderr: %s", q, code, out, errs)
		}
	}
	for q, want := range map[string]string{
		"":           "the question is missing: give a queue id or an address",
		"  ":         "the question is missing",
		"alice":      "the question is neither a queue id (6 to 20 letters and digits) nor an address (with @)",
		"a b@x.test": "the question holds a character no address has (' ')",
	} {
		out, errs, code := runApp(t, "why", "--maillog", "/nonexistent/log", q)
		if code != 2 || out != "" || !strings.Contains(errs, "why: "+want) {
			t.Errorf("why %q: exit %d, want 2 with %q\nstdout: %s\nstderr: %s", q, code, want, out, errs)
		}
	}
}
