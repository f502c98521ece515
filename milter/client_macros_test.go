package milter

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	gomilter "github.com/d--j/go-milter"
	"github.com/mailnode/mailnode/milter/miltertest"
	"github.com/mailnode/mailnode/spam"
	"github.com/mailnode/mailnode/test/harness"
)

// clientEngine is a spam engine that records the client each message came
// from, as milterd describes it to a real engine.
type clientEngine struct {
	mu   sync.Mutex
	seen []seenClient
}

type seenClient struct{ addr, name, helo string }

func (e *clientEngine) Name() string { return "client" }
func (e *clientEngine) Check(_ context.Context, m *spam.Message) (*spam.Report, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seen = append(e.seen, seenClient{m.ClientAddr, m.ClientName, m.Helo})
	return &spam.Report{}, nil
}

// A session driven the way Postfix 3.7 drives milterd: go-milter's client
// with Postfix's offer, which sends no connect event once milterd declines
// it, then HELO, and the client macros with MAIL. Each session's connect
// data contradicts its macros, so only a milterd that takes the client
// from the macros passes, and one that ignored them would see no client
// at all (no local submission, no address for SPF).
func TestClientFromMailMacros(t *testing.T) {
	eng := &clientEngine{}
	f := spamFilter(t, eng, nil)
	logs := &harness.SyncBuffer{}
	f.Log = slog.New(slog.NewTextHandler(logs, nil))
	c := miltertest.NewClient("unix", startServer(t, f, nil))

	type session struct {
		name     string
		helo     string
		macros   map[string]string
		from, to string
		wantLog  string // in milterd's decision line
		signed   bool
	}
	for _, tc := range []session{
		{
			name: "smtpd: an outside client whose name did not verify",
			helo: "mx.sender.test",
			macros: map[string]string{"{client_addr}": "198.51.100.7", "{client_name}": "unknown",
				"{client_port}": "40000", "{client_resolve}": "TEMP"},
			from: "news@sender.test", to: "bob@example.com",
			wantLog: "client=198.51.100.7 origin=none sender=news@sender.test",
		},
		{
			name: "cleanup: sendmail(1) on the node",
			helo: "localhost",
			macros: map[string]string{"{client_addr}": "127.0.0.1", "{client_name}": "localhost",
				"{client_port}": "0", "i": "4LOCAL"},
			from: "alice@example.com", to: "carol@partner.org",
			wantLog: "queue_id=4LOCAL client=127.0.0.1 origin=local", signed: true,
		},
		{
			name: "smtpd without a port is not cleanup's pseudo client",
			helo: "localhost",
			macros: map[string]string{"{client_addr}": "127.0.0.1", "{client_name}": "localhost",
				"{client_port}": "0", "{client_resolve}": "OK", "i": "4NOTLOCAL"},
			from: "alice@example.com", to: "carol@partner.org",
			// The example inventory trusts loopback: signed as a trust host's.
			wantLog: "queue_id=4NOTLOCAL client=127.0.0.1 origin=trust", signed: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			macros := gomilter.NewMacroBag()
			s, err := c.Session(macros)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if !s.ProtocolOption(gomilter.OptNoConnect) || s.ProtocolOption(gomilter.OptNoHelo) {
				t.Fatal("want no connect event and the HELO event negotiated")
			}
			// Not sent (OptNoConnect): a milterd that still read it would
			// take 203.0.113.250 for the client.
			if _, err := s.Conn("connect.invalid", gomilter.FamilyInet, 2525, "203.0.113.250"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Helo(tc.helo); err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.macros {
				macros.Set(k, v)
			}
			m := &miltertest.Message{Sender: tc.from, Rcpts: []string{tc.to},
				Headers: hdrs("From", tc.from, "To", tc.to, "Subject", "macros",
					"Date", "Sun, 01 Mar 2026 12:00:00 +0000", "Message-ID", "<"+tc.name[:5]+"@test>"),
				Body: []byte("hello\r\n")}
			for _, step := range []func() (*gomilter.Action, error){
				func() (*gomilter.Action, error) { return s.Mail(m.Sender, "") },
				func() (*gomilter.Action, error) { return s.Rcpt(tc.to, "") },
				s.DataStart,
			} {
				if act, err := step(); err != nil || act.Type != gomilter.ActionContinue {
					t.Fatalf("%+v %v", act, err)
				}
			}
			for _, h := range m.Headers {
				if _, err := s.HeaderField(h.Name, h.Value, nil); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.HeaderEnd(); err != nil {
				t.Fatal(err)
			}
			mods, act, err := s.BodyReadFrom(bytes.NewReader(m.Body))
			if err != nil || act.Type != gomilter.ActionAccept {
				t.Fatalf("end of message: %+v %v", act, err)
			}
			signed := false
			for _, mod := range mods {
				signed = signed || mod.Type == gomilter.ActionInsertHeader && mod.HeaderName == "DKIM-Signature"
			}
			if signed != tc.signed {
				t.Errorf("signed %v, want %v", signed, tc.signed)
			}
			if !strings.Contains(logs.String(), tc.wantLog) {
				t.Errorf("no %q in milterd's log:\n%s", tc.wantLog, logs)
			}
		})
	}

	// The outside client's message was checked: the engine saw the address
	// and the name as the connect event used to give them, and the HELO name.
	eng.mu.Lock()
	defer eng.mu.Unlock()
	want := seenClient{"198.51.100.7", "[198.51.100.7]", "mx.sender.test"}
	if len(eng.seen) != 1 || eng.seen[0] != want {
		t.Errorf("the engine saw %+v, want [%+v]", eng.seen, want)
	}
	if !strings.Contains(logs.String(), "spf=pass") {
		t.Errorf("SPF did not pass for the client in the macros:\n%s", logs)
	}
}
