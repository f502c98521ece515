package inventory

import "testing"

func TestRecipientDelimiter(t *testing.T) {
	// With several delimiters the first one in the address splits, as in
	// Postfix: all-staff+x@ would be all@ here.
	dash := mustParse(t, "postfix: {recipient_delimiter: \"+-\"}\n"+small)
	for _, c := range []struct{ addr, base string }{
		{"Bob-News@Example.COM.", "bob@example.com"},
		{"all-staff@example.com", "all-staff@example.com"}, // an address of its own: never split
		{"all-staff+x@example.com", "all@example.com"},
		{"mailer-daemon@example.com", "mailer-daemon@example.com"},
		{"owner-list@example.com", "owner-list@example.com"}, // Postfix's exceptions when "-" delimits
		{"list-request@example.com", "list-request@example.com"},
	} {
		if got := dash.BaseAddress(c.addr); got != c.base {
			t.Errorf("with +-: BaseAddress(%q) = %q, want %q", c.addr, got, c.base)
		}
		checkLookup(t, dash, c.addr)
	}
	inv := mustParse(t, "postfix: {recipient_delimiter: \"+\"}\n"+small)
	for _, c := range []struct{ addr, base string }{
		{"bob+news@example.com", "bob@example.com"},
		{"Bob+News@Example.COM.", "bob@example.com"},
		{"bob-news@example.com", "bob-news@example.com"},
		{"bob+a+b@example.com", "bob@example.com"},
		{"all-staff@example.com", "all-staff@example.com"}, // an address of its own: never split
		{"all-staff+x@example.com", "all-staff@example.com"},
		{"bob+@example.com", "bob+@example.com"}, // empty extension
		{"+bob@example.com", "+bob@example.com"}, // nothing before the delimiter
		{"postmaster+x@example.com", "postmaster@example.com"},
		{"bob+news@corp-b.test", "bob+news@corp-b.test"}, // relay domain: the next hop decides
		{"bob+news@example.org", "bob+news@example.org"}, // outside
		{"root+cron@mx1.example.com", "root@mx1.example.com"},
	} {
		if got := inv.BaseAddress(c.addr); got != c.base {
			t.Errorf("BaseAddress(%q) = %q, want %q", c.addr, got, c.base)
		}
		checkLookup(t, inv, c.addr)
	}
	if a := inv.LookupAddress("All-Staff+Weekly@example.com"); !a.List || a.Base != "all-staff@example.com" {
		t.Errorf("a list with an extension: %+v", a)
	}
	if a := inv.LookupAddress("bob@example.com"); a.Base != "" {
		t.Errorf("no extension, Base %q", a.Base)
	}
	for _, c := range []struct {
		login, sender string
		ok            bool
	}{
		{"alice@example.com", "alice+lists@example.com", true},
		{"alice@example.com", "a.smith+x@example.com", true},
		{"alice@example.com", "bob+x@example.com", false},
		{"bob@example.com", "bob+news@example.com", true},
		{"bob@example.com", "bob-news@example.com", false},
		{"bob@example.com", "all-staff+x@example.com", false},
	} {
		if got := inv.MayUseSender(c.login, c.sender); got != c.ok {
			t.Errorf("MayUseSender(%q, %q) = %v", c.login, c.sender, got)
		}
	}
	// Without the field, nothing is split.
	plain := mustParse(t, small)
	if got := plain.BaseAddress("bob+news@example.com"); got != "bob+news@example.com" {
		t.Errorf("no delimiter: %q", got)
	}
	if plain.MayUseSender("bob@example.com", "bob+news@example.com") || plain.IsList("all-staff+x@example.com") {
		t.Error("no delimiter: an extension was split off")
	}
}
