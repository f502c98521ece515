package milter

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/spam"
	"github.com/mailnode/mailnode/test/harness"
)

// TestShadowSpamVerdicts: in shadow mode the spam gate's verdicts are
// made, their headers added, and logged with what enforce mode would
// have answered, but the message is neither refused, deferred nor held.
func TestShadowSpamVerdicts(t *testing.T) {
	gtube := spamMsg{body: "x\r\n" + spam.GTUBE + "\r\n"}
	for _, tc := range []struct {
		name    string
		edit    func(*inventory.Spam)
		enforce func(Result) bool
		wantLog string
		wantTag bool
	}{
		{"reject", nil, func(r Result) bool { return r.Reject && r.Reply == ReplySpam },
			`mode=shadow cell=outside/none->local would_reject="550 5.7.1 Message rejected as spam"`, true},
		{"quarantine", func(s *inventory.Spam) { s.Quarantine = true }, func(r Result) bool { return r.Quarantine == QuarantineSpam },
			`mode=shadow cell=outside/none->local would_hold="mailnode: spam score at or above reject_score"`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := spamFilter(t, nil, tc.edit)
			if r := gtube.run(f); !tc.enforce(r) {
				t.Fatalf("enforce mode: %+v", r)
			}
			f.Shadow = true
			buf := &harness.SyncBuffer{}
			f.Log = slog.New(slog.NewTextHandler(buf, nil))
			r := gtube.run(f)
			if r.Reject || r.TempFail || r.Quarantine != "" || r.Reply != "" {
				t.Errorf("shadow mode refused or held: %+v", r)
			}
			if got := header(r, "X-Spam-Status"); !strings.HasPrefix(got, "Yes, score=") {
				t.Errorf("shadow mode: X-Spam-Status %q, want the verdict's headers", got)
			}
			if tagged := strings.Contains(strings.Join(changes(r), "\n"), "Subject#1: [SPAM] hello"); tagged != tc.wantTag {
				t.Errorf("subject tagged %v, want %v: %q", tagged, tc.wantTag, changes(r))
			}
			if !strings.Contains(buf.String(), tc.wantLog) || !strings.Contains(buf.String(), "disposition="+tc.name) {
				t.Errorf("shadow decision log lacks %s:\n%s", tc.wantLog, buf)
			}
		})
	}
	t.Run("ham has no would_reject", func(t *testing.T) {
		f := spamFilter(t, nil, nil)
		f.Shadow = true
		buf := &harness.SyncBuffer{}
		f.Log = slog.New(slog.NewTextHandler(buf, nil))
		if r := (spamMsg{}).run(f); r.Reject || r.TempFail {
			t.Fatalf("%+v", r)
		}
		if strings.Contains(buf.String(), "would_") || strings.Contains(buf.String(), "mode=shadow") {
			t.Errorf("accepted mail logged as a would-be refusal:\n%s", buf)
		}
	})
}
