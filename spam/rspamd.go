package spam

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Rspamd asks a real rspamd over its HTTP protocol: POST /checkv2 with the
// message as the body and the envelope in request headers (IP, Helo, From,
// Rcpt, Queue-Id, Hostname, MTA-Name), as rspamd's own milter proxy does.
type Rspamd struct {
	URL     string        // spam.rspamd_url, e.g. http://127.0.0.1:11333
	Timeout time.Duration // bounds one check; DefaultEngineTimeout when 0
	Client  *http.Client  // nil: a private client without proxies
}

// DefaultEngineTimeout bounds one engine check when none is configured.
const DefaultEngineTimeout = 15 * time.Second

// maxReply bounds what is read of an engine's answer.
const maxReply = 1 << 20

var rspamdClient = &http.Client{Transport: &http.Transport{
	Proxy:               nil, // never an HTTP proxy from the environment
	MaxIdleConnsPerHost: 16,
	IdleConnTimeout:     30 * time.Second,
}}

// Name implements Engine.
func (r *Rspamd) Name() string { return "rspamd" }

type rspamdReply struct {
	IsSkipped     bool    `json:"is_skipped"`
	Score         float64 `json:"score"`
	RequiredScore float64 `json:"required_score"`
	Action        string  `json:"action"`
	Symbols       map[string]struct {
		Name  string  `json:"name"`
		Score float64 `json:"score"`
	} `json:"symbols"`
	Error string `json:"error"`
}

// Check implements Engine.
func (r *Rspamd) Check(ctx context.Context, m *Message) (*Report, error) {
	t := r.Timeout
	if t <= 0 {
		t = DefaultEngineTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, t)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(r.URL, "/")+"/checkv2", bytes.NewReader(m.Data))
	if err != nil {
		return nil, engineErr("rspamd", err)
	}
	h := req.Header
	set := func(k, v string) {
		if v = headerSafe(v); v != "" {
			h.Add(k, v)
		}
	}
	set("IP", m.ClientAddr)
	set("Helo", m.Helo)
	if m.ClientName != "" && m.ClientName != "unknown" {
		set("Hostname", m.ClientName)
	}
	if m.Sender != "" {
		set("From", m.Sender)
	} else {
		h.Set("From", "<>")
	}
	for _, rc := range m.Rcpts {
		set("Rcpt", rc)
	}
	set("Queue-Id", m.QueueID)
	set("MTA-Name", m.Hostname)
	c := r.Client
	if c == nil {
		c = rspamdClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, engineErr("rspamd", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return nil, engineErr("rspamd", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, engineErr("rspamd", fmt.Errorf("HTTP %s: %.200s", resp.Status, body))
	}
	var rep rspamdReply
	if err := json.Unmarshal(body, &rep); err != nil {
		return nil, engineErr("rspamd", fmt.Errorf("reply: %w", err))
	}
	if rep.Error != "" {
		return nil, engineErr("rspamd", fmt.Errorf("%.200s", rep.Error))
	}
	if rep.Action == "" && !rep.IsSkipped {
		return nil, engineErr("rspamd", fmt.Errorf("reply without action: %.200s", body))
	}
	out := &Report{Score: rep.Score, Required: rep.RequiredScore, Action: rep.Action}
	for name, s := range rep.Symbols {
		if s.Name != "" {
			name = s.Name
		}
		out.Symbols = append(out.Symbols, Symbol{Name: name, Score: s.Score, HasScore: true})
	}
	sortSymbols(out.Symbols)
	return out, nil
}

// headerSafe drops control characters from a value sent in a request header.
func headerSafe(v string) string {
	if strings.IndexFunc(v, func(r rune) bool { return r < ' ' || r == 0x7f }) < 0 {
		return v
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return -1
		}
		return r
	}, v)
}
