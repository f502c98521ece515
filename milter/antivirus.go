package milter

import (
	"context"
	"time"

	"github.com/mailnode/mailnode/antivirus"
	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/inventory"
)

// The SMTP replies of the virus scan.
const (
	// ReplyVirus is followed by the signature name (antivirus.ReplyName).
	ReplyVirus = "550 5.7.1 Virus found: "
	// ReplyAntivirus defers a message the scanner could not scan, with
	// spam.antivirus.on_failure: tempfail.
	ReplyAntivirus = "451 4.7.1 Virus scan temporarily unavailable, try again later"
)

// The reasons of a shadow-mode would_reject of the virus scan.
const (
	ReasonVirus    Reason = "antivirus: virus found"
	ReasonAVFailed Reason = "antivirus: scan failed, on_failure tempfail"
)

// The antivirus results of the decision line and of
// mailnode_milter_antivirus_scans_total.
const (
	AVClean = "clean"
	AVVirus = "virus"
	AVError = "error" // the scanner failed: on_failure decided
)

// Antivirus is milterd's virus scan (spam.antivirus): every spam-checked
// message (Verify) and, with ScanOutbound, every message milterd signs is
// streamed to clamd while it arrives — the headers at the end of the
// headers, then each body chunk as the MTA sends it, nothing kept — and
// clamd's answer is read at the end of the message, after the signature or
// the inbound chain, which run while clamd scans.
//
//   - a virus: 550 5.7.1 Virus found: <signature>, whatever else the
//     message earned (shadow mode: would_reject).
//   - clamd down, slow (Clamd.Timeout per step) or answering an error
//     (e.g. over its StreamMaxLength): with Tempfail 451 4.7.1
//     (ReplyAntivirus), otherwise the message goes on unscanned; either
//     way antivirus=error is logged and counted.
type Antivirus struct {
	Clamd        *antivirus.Clamd
	Tempfail     bool
	ScanOutbound bool
}

// NewAntivirus returns the scan of spam.antivirus, nil when it is absent.
func NewAntivirus(a *inventory.Antivirus) *Antivirus {
	if a == nil {
		return nil
	}
	return &Antivirus{
		Clamd:        &antivirus.Clamd{Address: a.Address},
		Tempfail:     a.OnFailure == "tempfail",
		ScanOutbound: a.ScansOutbound(),
	}
}

// scans reports whether a message of action is scanned.
func (a *Antivirus) scans(action Action) bool {
	return a != nil && (action == Verify || (action == Sign && a.ScanOutbound))
}

// AVResult is the scan's part of the Decision record.
type AVResult struct {
	Result    string // AVClean, AVVirus, AVError; "" when not scanned
	Virus     string // the signature name as clamd gave it
	Err       string // AVError: what went wrong
	Truncated bool   // only the first antivirus.DefaultMaxBytes were scanned
	Took      time.Duration
}

// startScan opens the scan and streams the header block.
func (t *Transaction) startScan() {
	t.scan = t.f.Antivirus.Clamd.Start(context.Background())
	var b []byte
	for _, h := range t.headers {
		b = append(b, h.Name...)
		b = append(b, ':')
		b = dkim.AppendCRLF(b, h.Value)
		b = append(b, '\r', '\n')
	}
	b = append(b, '\r', '\n')
	t.scan.Write(b)
}

// finishedScan is a scan whose stream has ended: clamd is scanning.
type finishedScan struct {
	s     *antivirus.Scan
	start time.Time
}

// finishScan ends the stream, so that clamd scans while the rest of End
// (the signature, the inbound chain) runs.
func (t *Transaction) finishScan() *finishedScan {
	f := &finishedScan{s: t.scan, start: time.Now()}
	t.scan = nil
	f.s.Finish()
	return f
}

// applyScan reads clamd's answer and lets it decide over res. The answer
// is read here, in the message's goroutine, rather than by one of its own
// waiting from the end of the stream: clamd has often answered by now,
// and a reader parked meanwhile costs milterd wake-ups (measured: a
// quarter of its added time per message); so Took is the time from the
// end of the stream until the answer was read, at least End's own work.
func (t *Transaction) applyScan(ctx context.Context, f *finishedScan, res *Result) {
	r, err := f.s.Wait(ctx)
	av := AVResult{Result: AVClean, Truncated: r.Truncated, Took: time.Since(f.start)}
	switch {
	case err != nil:
		av.Result, av.Err = AVError, err.Error()
	case r.Virus != "":
		av.Result, av.Virus = AVVirus, r.Virus
	}
	d := &t.decision
	d.Antivirus = av
	t.f.Metrics.observeAntivirus(av)
	reply := ""
	switch {
	case av.Result == AVVirus:
		reply = ReplyVirus + antivirus.ReplyName(av.Virus)
	case av.Result == AVError && t.f.Antivirus.Tempfail && !res.Reject:
		reply = ReplyAntivirus
	default:
		return
	}
	if t.f.Shadow {
		if d.WouldReject == "" || reply[0] == '5' {
			d.WouldReject = reply
			d.WouldReason = ReasonVirus
			if av.Result == AVError {
				d.WouldReason = ReasonAVFailed
			}
		}
		return
	}
	if reply[0] == '5' {
		res.Reject, res.TempFail, res.Quarantine = true, false, ""
	} else {
		res.TempFail, res.Quarantine = true, ""
	}
	res.Reply = reply
}
