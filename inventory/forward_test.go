package inventory

import "testing"

func TestForwardsOutside(t *testing.T) {
	src := `
node: {hostname: mx1.example.com, addresses: [192.0.2.1]}
postfix: {recipient_delimiter: "+"}
domains:
  - name: example.com
    mailboxes:
      - {user: alice, password: "{SHA512-CRYPT}$6$x", aliases: [a.smith]}
      - {user: bob, password: "{SHA512-CRYPT}$6$x"}
    aliases:
      postmaster: alice
      sales: [alice, "carol@partner.org"]
      ext: "x@elsewhere.test"
      chain: staff
      inner: [bob, a.smith]
    lists:
      staff: [alice, "y@example.net"]
    transports: {tickets: "lmtp:[127.0.0.1]:8024"}
  - name: example.net
    mailboxes: [{user: y, password: "{SHA512-CRYPT}$6$x"}]
    aliases:
      out: "z@elsewhere.test"
  - name: partner.org
    class: relay
`
	cases := map[string]bool{
		"sales@example.com":      true,  // one target in a relay domain
		"SALES@Example.COM":      true,  // any case
		"sales+q3@example.com":   true,  // the delimiter form
		"ext@example.com":        true,  // outside
		"out@example.net":        true,  // another local domain
		"postmaster@example.com": false, // a mailbox
		"inner@example.com":      false, // mailboxes through an alias of a mailbox
		"chain@example.com":      false, // to a list whose members are local
		"staff@example.com":      false,
		"alice@example.com":      false,
		"a.smith@example.com":    false,
		"tickets@example.com":    false, // a transport is a delivery
		"carol@partner.org":      false, // relay traffic itself is not forwarded
		"x@elsewhere.test":       false,
		"nobody@example.com":     false,
		"":                       false,
	}
	for _, keep := range []Keep{KeepAll, KeepDecisions, KeepDomains} {
		inv, err := ParseWith([]byte(src), "t.yaml", LoadOptions{Keep: keep})
		if err != nil {
			t.Fatal(err)
		}
		for rcpt, want := range cases {
			if got := inv.ForwardsOutside(rcpt); got != want {
				t.Errorf("keep %d: ForwardsOutside(%q) = %v, want %v", keep, rcpt, got, want)
			}
		}
	}
}
