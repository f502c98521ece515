package spam

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Learning: a user's verdict (a message moved into the Junk folder is
// spam, one moved out of it ham) trains the engine's Bayes classifier.
// dovecot.spam_learning runs `mailnode learn spam|ham` from IMAPSieve,
// which calls these.

// Class is what a message is learned as.
type Class string

// The two classes a message can be learned as.
const (
	ClassSpam Class = "spam"
	ClassHam  Class = "ham"
)

// ParseClass reads "spam" or "ham".
func ParseClass(s string) (Class, error) {
	switch Class(s) {
	case ClassSpam, ClassHam:
		return Class(s), nil
	}
	return "", fmt.Errorf("%q is not spam or ham", s)
}

// Learner trains a spam engine with one message.
type Learner interface {
	// Learn teaches the engine that msg is of class c. A message the
	// engine has already learned as that class is not an error.
	Learn(ctx context.Context, c Class, msg []byte) error
}

// RspamdLearner learns through rspamd's controller worker: POST
// /learnspam or /learnham with the message as the body. rspamd accepts it
// from its secure_ip addresses (default: the host itself) without a
// password.
type RspamdLearner struct {
	ControllerURL string // e.g. http://127.0.0.1:11334
	Client        *http.Client
}

// Learn implements Learner.
func (r *RspamdLearner) Learn(ctx context.Context, c Class, msg []byte) error {
	url := strings.TrimSuffix(r.ControllerURL, "/") + "/learn" + string(c)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(msg))
	if err != nil {
		return engineErr("rspamd", err)
	}
	client := r.Client
	if client == nil {
		client = rspamdClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return engineErr("rspamd", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	var reply struct {
		Success bool   `json:"success"`
		Error   string `json:"error"`
	}
	json.Unmarshal(body, &reply)
	switch {
	case resp.StatusCode == http.StatusOK && reply.Success:
		return nil
	case resp.StatusCode == http.StatusAlreadyReported:
		// 208: "<id> has been already learned as spam, ignore it".
		return nil
	case reply.Error != "":
		return engineErr("rspamd", fmt.Errorf("%s: %s (HTTP %d)", url, reply.Error, resp.StatusCode))
	}
	return engineErr("rspamd", fmt.Errorf("%s: HTTP %d: %.200q", url, resp.StatusCode, body))
}

// SpamdLearner learns through spamd's TELL command (spamd must run with
// --allow-tell): Message-class spam or ham, Set: local (the Bayes
// database, not a remote blocklist).
type SpamdLearner struct {
	Address string // host:port, or the path of a unix socket
}

// Learn implements Learner.
func (s *SpamdLearner) Learn(ctx context.Context, c Class, msg []byte) error {
	conn, err := spamdSend(ctx, s.Address, fmt.Sprintf("TELL SPAMC/1.5\r\nMessage-class: %s\r\nSet: local\r\nContent-length: %d\r\n\r\n", c, len(msg)), msg)
	if err != nil {
		return err
	}
	defer conn.Close()
	return readTell(bufio.NewReader(io.LimitReader(conn, maxReply)))
}

// readTell checks spamd's reply to TELL: "SPAMD/1.5 0 EX_OK" and a
// DidSet: local header (or none when the message was known already,
// which spamd answers the same way).
func readTell(r *bufio.Reader) error {
	status, err := r.ReadString('\n')
	if err != nil {
		return engineErr("spamd", fmt.Errorf("TELL: no reply: %v", err))
	}
	f := strings.Fields(status)
	if len(f) < 3 || !strings.HasPrefix(f[0], "SPAMD/") {
		return engineErr("spamd", fmt.Errorf("TELL: unexpected reply %q", strings.TrimSpace(status)))
	}
	if f[1] != "0" {
		return engineErr("spamd", fmt.Errorf("TELL refused: %s (does spamd run with --allow-tell?)", strings.TrimSpace(strings.Join(f[1:], " "))))
	}
	return nil
}
