package spam

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestReadTell(t *testing.T) {
	for reply, ok := range map[string]bool{
		"SPAMD/1.5 0 EX_OK\r\nDidSet: local\r\n\r\n":      true,
		"SPAMD/1.5 0 EX_OK\r\n\r\n":                       true, // known already: nothing set
		"SPAMD/1.5 69 Bad header line: Message-class\r\n": false,
		"SPAMD/1.1 76 TELL commands are not enabled\r\n":  false,
		"HTTP/1.0 400 Bad Request\r\n":                    false,
		"":                                                false,
	} {
		err := readTell(bufio.NewReader(strings.NewReader(reply)))
		if (err == nil) != ok {
			t.Errorf("readTell(%q) = %v, want ok=%v", reply, err, ok)
		}
	}
}

// The controller's answers as rspamd 3.4 gives them; the learning itself
// is tested end to end against the real rspamd (test/mailbox_e2e_test.go).
func TestRspamdLearnerReplies(t *testing.T) {
	var path, body string
	status, reply := 200, `{"success":true}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		path, body = r.URL.Path, string(b)
		w.WriteHeader(status)
		io.WriteString(w, reply)
	}))
	defer srv.Close()
	l := &RspamdLearner{ControllerURL: srv.URL + "/"}
	if err := l.Learn(context.Background(), ClassHam, []byte("Subject: x\r\n\r\nhi\r\n")); err != nil || path != "/learnham" || !strings.Contains(body, "hi") {
		t.Errorf("learn ham: %v, path %q, body %q", err, path, body)
	}
	status, reply = 208, `{"error":"<x> has been already learned as spam, ignore it"}`
	if err := l.Learn(context.Background(), ClassSpam, []byte("x")); err != nil || path != "/learnspam" {
		t.Errorf("learned already: %v, path %q", err, path)
	}
	status, reply = 404, `{"error":"cannot find statfile"}`
	if err := l.Learn(context.Background(), ClassSpam, []byte("x")); err == nil || !strings.Contains(err.Error(), "cannot find statfile") {
		t.Errorf("refused: %v", err)
	}
	if _, err := ParseClass("junk"); err == nil {
		t.Error("ParseClass accepted junk")
	}
}
