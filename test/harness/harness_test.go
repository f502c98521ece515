package harness

import (
	"bytes"
	"testing"
	"time"
)

// The client and the sink agree byte for byte, dot-stuffing included.
func TestSendToSink(t *testing.T) {
	s, err := StartSink("127.0.0.1:0", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	msg := []byte("Subject: x\r\n\r\n.starts with a dot\r\n..two\r\nend\r\n")
	tr, err := Send(s.Addr, Envelope{From: "a@x.test", To: []string{"b@y.test", "c@y.test"}, Data: msg})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Banner.Code != 220 || tr.Mail.Code != 250 || len(tr.Rcpt) != 2 || tr.DataCmd.Code != 354 || tr.Final.Code != 250 {
		t.Fatalf("transcript: %+v", tr)
	}
	got, err := s.Wait(1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := got[0]
	if m.From != "a@x.test" || len(m.To) != 2 || m.To[1] != "c@y.test" || !bytes.Equal(m.Data, msg) {
		t.Errorf("sink got from %q to %v:\n%q\nwant:\n%q", m.From, m.To, m.Data, msg)
	}
	if tr.EHLO.Lines[0] != "sink.test" || len(tr.EHLO.Lines) != 3 {
		t.Errorf("EHLO reply lines: %q", tr.EHLO.Lines)
	}
}

func TestReplyText(t *testing.T) {
	r := Reply{Code: 550, Lines: []string{"5.1.1 <x@y>: unknown", "second"}}
	if got := r.Text(); got != "550 5.1.1 <x@y>: unknown\n550 second" {
		t.Errorf("Text() = %q", got)
	}
	if r.OK() || !(Reply{Code: 354}).OK() {
		t.Error("OK()")
	}
}

func TestSetGet(t *testing.T) {
	doc := map[string]any{"policy": map[string]any{"listen": "x"}}
	Set(doc, "policy.greylist.enabled", true)
	Set(doc, "policy.listen", "y")
	if Get(doc, "policy.greylist.enabled") != true || Get(doc, "policy.listen") != "y" || Get(doc, "nope.x") != nil {
		t.Errorf("doc: %v", doc)
	}
}

func TestSplitMbox(t *testing.T) {
	mbox := []byte("From a@x  Mon Mar  2 10:00:00 2026\nSubject: 1\n\nbody\n\nFrom b@x  Mon Mar  2 10:00:01 2026\nSubject: 2\n\nbody2\n\n")
	ms := SplitMbox("f", mbox)
	if len(ms) != 2 || !bytes.HasPrefix(ms[1].Data, []byte("From b@x ")) || !bytes.Contains(ms[0].Data, []byte("Subject: 1\n")) {
		t.Errorf("split: %q", ms)
	}
}
