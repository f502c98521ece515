package harness

import (
	"fmt"
	"os/exec"
	"strings"
)

// imapClient is a real IMAP client, Python's imaplib: it logs in over
// STARTTLS (trusting the node's certificate), runs the operations given on
// its command line in turn and prints one result line each.
//
//	subscribed            -> "SUBSCRIBED <folder>" per subscribed folder
//	count FOLDER          -> "COUNT FOLDER N"
//	move FROM TO          -> "MOVED FROM TO N": every message of FROM, with MOVE
//	move FROM TO WORD     -> the same for the messages whose Subject has WORD
//	append FOLDER FILE    -> "APPENDED FOLDER": the message in FILE
const imapClient = `
import imaplib, ssl, sys
host, port, user, password, cafile = sys.argv[1:6]
ops = sys.argv[6:]
OPS = ("subscribed", "count", "move", "append")
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False
m = imaplib.IMAP4(host, int(port))
m.starttls(ssl_context=ctx)
m.login(user, password)
def ok(r):
    typ, data = r
    if typ != "OK":
        raise SystemExit("IMAP: %s %r" % (typ, data))
    return data
while ops:
    op = ops.pop(0)
    if op == "subscribed":
        for line in ok(m.lsub('""', "*")):
            if line:
                print("SUBSCRIBED " + line.decode().rsplit(" ", 1)[1].strip('"'))
    elif op == "count":
        folder = ops.pop(0)
        data = ok(m.select(folder))
        print("COUNT %s %d" % (folder, int(data[0])))
    elif op == "move":
        src, dst = ops.pop(0), ops.pop(0)
        word = ops.pop(0) if ops and ops[0] not in OPS else None
        ok(m.select(src))
        if word is None:
            uids = ok(m.uid("SEARCH", None, "ALL"))[0].split()
        else:
            uids = ok(m.uid("SEARCH", None, "SUBJECT", word))[0].split()
        if uids:
            ok(m.uid("MOVE", b",".join(uids).decode(), dst))
        print("MOVED %s %s %d" % (src, dst, len(uids)))
    elif op == "append":
        folder, path = ops.pop(0), ops.pop(0)
        with open(path, "rb") as f:
            ok(m.append(folder, None, None, f.read()))
        print("APPENDED " + folder)
    else:
        raise SystemExit("unknown operation " + op)
m.logout()
`

// IMAPSession logs in to the node's IMAP service as user with python3's imaplib
// (STARTTLS, trusting CertFile), runs ops ("subscribed", "count FOLDER",
// "move FROM TO", "append FOLDER FILE", see imapClient) and returns the
// result lines.
func (n *Node) IMAPSession(user, pass string, ops ...string) ([]string, error) {
	host, port, _ := strings.Cut(n.IMAP, ":")
	args := []string{"-c", imapClient, host, port, user, pass, n.CertFile}
	for _, op := range ops {
		args = append(args, strings.Fields(op)...)
	}
	out, err := exec.Command("python3", args...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("imap %s %q: %v\n%s", user, ops, err, out)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n"), nil
}
