package srs

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// The secrets and day of the vectors below, which Debian's postsrsd 1.10
// (libsrs2's algorithm) made from a secrets file with these two lines,
// for the domain example.com, on 2026-12-06.
var (
	vectorSecrets = [][]byte{[]byte("mailnode-test-secret-0123456789"), []byte("second-secret-abcdefghijklmnop")}
	vectorDay     = time.Date(2026, 12, 6, 8, 21, 16, 0, time.UTC)
)

func vectorSRS(t testing.TB) *SRS {
	t.Helper()
	s, err := New(vectorSecrets...)
	if err != nil {
		t.Fatal(err)
	}
	s.Now = func() time.Time { return vectorDay }
	return s
}

// TestPostsrsdVectors: Forward writes what postsrsd writes for the same
// secret, day and forwarder, byte for byte, for SRS0, SRS1 from an SRS0 and
// SRS1 from an SRS1 (also with the "+" separator); Reverse reads them, and
// their lower-cased forms (as Postfix's table lookups pass them), back to
// what postsrsd reverses them to.
func TestPostsrsdVectors(t *testing.T) {
	s := vectorSRS(t)
	for _, v := range []struct{ sender, fwd, rev string }{
		{"alice@orig.example", "SRS0=7ODV=JZ=orig.example=alice@example.com", "alice@orig.example"},
		{"Alice.Smith@Orig.Example", "SRS0=Muux=JZ=Orig.Example=Alice.Smith@example.com", "Alice.Smith@Orig.Example"},
		{"SRS0=abcd=XY=orig.example=alice@fwd1.example", "SRS1=bxmX=fwd1.example==abcd=XY=orig.example=alice@example.com",
			"SRS0=abcd=XY=orig.example=alice@fwd1.example"},
		{"SRS1=wxyz=first.example==abcd=XY=orig.example=alice@fwd2.example", "SRS1=inVi=first.example==abcd=XY=orig.example=alice@example.com",
			"SRS0=abcd=XY=orig.example=alice@first.example"},
		{"SRS0+abcd=XY=orig.example=alice@fwd1.example", "SRS1=5MJt=fwd1.example=+abcd=XY=orig.example=alice@example.com",
			"SRS0+abcd=XY=orig.example=alice@fwd1.example"},
	} {
		got, err := s.Forward(v.sender, "example.com")
		if err != nil || got != v.fwd {
			t.Errorf("Forward(%q) = %q, %v; postsrsd: %q", v.sender, got, err, v.fwd)
		}
		for _, a := range []string{v.fwd, strings.ToLower(v.fwd), strings.ToUpper(v.fwd)} {
			rev, err := s.Reverse(a)
			if err != nil || !strings.EqualFold(rev, v.rev) {
				t.Errorf("Reverse(%q) = %q, %v; want %q", a, rev, err, v.rev)
			}
		}
	}
	// The second secret verifies but does not sign.
	second, _ := New(vectorSecrets[1], vectorSecrets[0])
	second.Now = s.Now
	a, _ := second.Forward("bob@orig.example", "example.com")
	if b, _ := s.Forward("bob@orig.example", "example.com"); a == b {
		t.Fatalf("both secrets make the same address %q", a)
	}
	if rev, err := s.Reverse(a); err != nil || rev != "bob@orig.example" {
		t.Errorf("an address of the second secret: %q, %v", rev, err)
	}
	only, _ := New(vectorSecrets[0])
	only.Now = s.Now
	if _, err := only.Reverse(a); !errors.Is(err, ErrHash) {
		t.Errorf("an address of a secret no longer listed: %v, want ErrHash", err)
	}
}

func TestRoundTrip(t *testing.T) {
	s := vectorSRS(t)
	for _, sender := range []string{
		"alice@orig.example", "a.b-c+tag@sub.orig.example", "x=y@orig.example", "user@xn--bcher-kva.example",
		"SRS0=abcd=XY=orig.example=alice@fwd1.example", "srs1=abcd=first.example==abcd=xy=orig.example=alice@fwd1.example",
		"a@b.c", "0123456789012345678901234567890123456789012345678901234567890123@orig.example",
	} {
		fwd, err := s.Forward(sender, "Example.COM")
		if err != nil {
			t.Fatalf("Forward(%q): %v", sender, err)
		}
		if !IsSRS(fwd) || !strings.HasSuffix(fwd, "@Example.COM") {
			t.Errorf("Forward(%q) = %q", sender, fwd)
		}
		rev, err := s.Reverse(fwd)
		if err != nil {
			t.Fatalf("Reverse(%q): %v", fwd, err)
		}
		want := sender
		if l := localPart(sender); isTag(l, '1') {
			// SRS1 of an SRS1 goes back to the first forwarder.
			rest := l[5:]
			_, rest, _ = strings.Cut(rest, "=")
			first, user, _ := strings.Cut(rest, "=")
			want = "SRS0" + user + "@" + first
		}
		if rev != want {
			t.Errorf("Reverse(Forward(%q)) = %q, want %q", sender, rev, want)
		}
		if low, err := s.Reverse(strings.ToLower(fwd)); err != nil || !strings.EqualFold(low, want) {
			t.Errorf("Reverse of the lower-cased %q = %q, %v", fwd, low, err)
		}
	}
}

func TestTamper(t *testing.T) {
	s := vectorSRS(t)
	fwd, _ := s.Forward("alice@orig.example", "example.com") // SRS0=7ODV=JZ=orig.example=alice@example.com
	for _, bad := range []string{
		strings.Replace(fwd, "alice", "alicf", 1),               // another local part
		strings.Replace(fwd, "orig.example", "evil.example", 1), // another domain
		strings.Replace(fwd, "7ODV", "7ODW", 1),                 // another hash
		strings.Replace(fwd, "=JZ=", "=JY=", 1),                 // another day (yesterday: in the window, hash fails)
		"SRS0=7ODV=JZ=orig.example=alice=x@example.com",         // appended to the local part
	} {
		if _, err := s.Reverse(bad); !errors.Is(err, ErrHash) {
			t.Errorf("Reverse(%q): %v, want ErrHash", bad, err)
		}
	}
	other, _ := New([]byte("another-secret-of-another-node"))
	other.Now = s.Now
	if _, err := other.Reverse(fwd); !errors.Is(err, ErrHash) {
		t.Errorf("another secret reversed %q: %v", fwd, err)
	}
}

func TestExpiry(t *testing.T) {
	s := vectorSRS(t)
	made := vectorDay
	fwd, _ := s.Forward("alice@orig.example", "example.com")
	for _, c := range []struct {
		at time.Time
		ok bool
	}{
		{made, true},
		{made.Add(-24 * time.Hour), true}, // made "tomorrow": a clock ahead
		{made.Add(-48 * time.Hour), false},
		{made.Add(21 * 24 * time.Hour), true},
		{made.Add(22 * 24 * time.Hour), false},
		{made.Add(1024 * 24 * time.Hour), true}, // the stamp wraps every 1024 days, as libsrs2's
		{made.Add(500 * 24 * time.Hour), false},
	} {
		s.Now = func() time.Time { return c.at }
		_, err := s.Reverse(fwd)
		if c.ok && err != nil || !c.ok && !errors.Is(err, ErrExpired) {
			t.Errorf("at %s: %v (valid: %v)", c.at.Format(time.DateOnly), err, c.ok)
		}
	}
	s.Now = func() time.Time { return made.Add(5 * 24 * time.Hour) }
	s.MaxAge = 3
	if _, err := s.Reverse(fwd); !errors.Is(err, ErrExpired) {
		t.Errorf("MaxAge 3 after 5 days: %v", err)
	}
	// SRS1 carries no timestamp of ours: it does not expire here.
	s.MaxAge = 0
	s1, _ := s.Forward("SRS0=abcd=XY=orig.example=alice@fwd1.example", "example.com")
	s.Now = func() time.Time { return made.Add(400 * 24 * time.Hour) }
	if _, err := s.Reverse(s1); err != nil {
		t.Errorf("SRS1 after 400 days: %v", err)
	}
}

func TestTimestamp(t *testing.T) {
	if got := Timestamp(vectorDay); got != "JZ" {
		t.Errorf("Timestamp(%s) = %q, postsrsd wrote JZ", vectorDay, got)
	}
	if got := Timestamp(time.Unix(0, 0)); got != "AA" {
		t.Errorf("epoch: %q", got)
	}
	if got := Timestamp(time.Unix(1023*day+5, 0)); got != "77" {
		t.Errorf("day 1023: %q", got)
	}
	if got := Timestamp(time.Unix(1024*day, 0)); got != "AA" {
		t.Errorf("day 1024: %q", got)
	}
}

func TestMalformed(t *testing.T) {
	s := vectorSRS(t)
	for _, c := range []struct {
		addr string
		want error
	}{
		{"alice@example.com", ErrNotSRS},
		{"", ErrNotSRS},
		{"SRS0@example.com", ErrNotSRS},
		{"SRS0=@example.com", ErrNotSRS}, // nothing after the separator
		{"SRS2=abcd=JZ=orig=a@example.com", ErrNotSRS},
		{"SRS0_abcd=JZ=orig=a@example.com", ErrNotSRS},
		{"SRS0=abcd=JZ=orig@example.com", ErrMalformed},
		{"SRS0=abcd=JZ==a@example.com", ErrMalformed},
		{"SRS0=abcd=JZ=orig=@example.com", ErrMalformed},
		{"SRS0=abc=JZ=orig=a@example.com", ErrMalformed},
		{"SRS0=abcde=JZ=orig=a@example.com", ErrMalformed},
		{"SRS0=abcd=J=orig=a@example.com", ErrMalformed},
		{"SRS0=abcd=J1=orig=a@example.com", ErrMalformed},
		{"SRS0=abcd=JZZ=orig=a@example.com", ErrMalformed},
		{"SRS1=abcd@example.com", ErrMalformed},
		{"SRS1=abcd=first@example.com", ErrMalformed},
		{"SRS1=abcd=first=@example.com", ErrMalformed},
		{"SRS1=abcd==x@example.com", ErrMalformed},
	} {
		if _, err := s.Reverse(c.addr); !errors.Is(err, c.want) {
			t.Errorf("Reverse(%q): %v, want %v", c.addr, err, c.want)
		}
	}
	for _, c := range []struct{ sender, alias string }{
		{"alice", "example.com"}, {"@orig.example", "example.com"}, {"alice@", "example.com"}, {"alice@orig.example", ""},
		{"SRS1=abcd@fwd.example", "example.com"}, {"SRS1=abcd=first@fwd.example", "example.com"},
	} {
		if _, err := s.Forward(c.sender, c.alias); !errors.Is(err, ErrMalformed) {
			t.Errorf("Forward(%q, %q): %v, want ErrMalformed", c.sender, c.alias, err)
		}
	}
}

func TestNew(t *testing.T) {
	if _, err := New(); err == nil {
		t.Error("New without a secret")
	}
	if _, err := New([]byte("short")); err == nil || !strings.Contains(err.Error(), "at least 16") {
		t.Errorf("a short secret: %v", err)
	}
	k := []byte("0123456789abcdef")
	s, err := New(k)
	if err != nil {
		t.Fatal(err)
	}
	k[0] = 'X' // New keeps its own copy
	s.Now = func() time.Time { return vectorDay }
	a, _ := s.Forward("a@b.example", "c.example")
	s2, _ := New([]byte("0123456789abcdef"))
	s2.Now = s.Now
	if _, err := s2.Reverse(a); err != nil {
		t.Errorf("the secret changed under New: %v", err)
	}
}

func TestIsSRS(t *testing.T) {
	for a, want := range map[string]bool{
		"SRS0=x@d": true, "srs0+x@d": true, "Srs1-x": true, "SRS0=": false, "SRS0x@d": false, "SRS3=x@d": false,
		"alice@d": false, "SRS0=x": true, "srs=x@d": false,
	} {
		if IsSRS(a) != want {
			t.Errorf("IsSRS(%q) = %v", a, !want)
		}
	}
}

func TestParseSecrets(t *testing.T) {
	got, err := ParseSecrets([]byte("\n  first-secret-0123456789  \r\n\nsecond-secret-0123456789\n"))
	if err != nil || len(got) != 2 || string(got[0]) != "first-secret-0123456789" || string(got[1]) != "second-secret-0123456789" {
		t.Fatalf("%q, %v", got, err)
	}
	for _, bad := range []string{"", "\n\n  \n", "first-secret-0123456789\nshort\n"} {
		if _, err := ParseSecrets([]byte(bad)); err == nil {
			t.Errorf("ParseSecrets(%q) accepted", bad)
		}
	}
	if _, err := ParseSecrets([]byte("ok-secret-0123456789\nshort\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("the error does not name the line: %v", err)
	}
}

func FuzzReverse(f *testing.F) {
	s, _ := New(vectorSecrets...)
	s.Now = func() time.Time { return vectorDay }
	for _, a := range []string{"SRS0=7ODV=JZ=orig.example=alice@example.com", "SRS1=bxmX=fwd1.example==abcd=XY=orig.example=alice@example.com",
		"srs0=7odv=jz=orig.example=alice@example.com", "SRS0=====@", "SRS1==@x", "alice@example.com"} {
		f.Add(a)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		rev, err := s.Reverse(addr)
		if err != nil {
			if rev != "" {
				t.Fatalf("an error with an answer: %q %v", rev, err)
			}
			return
		}
		// Whatever reverses must have been made with the secret: making it
		// again from the answer gives the same address, ignoring case.
		if l := localPart(addr); isTag(l, '0') && l[4] == '=' {
			again, ferr := s.Forward(rev, "forwarder.example")
			if r := localPart(rev); ferr == nil && !isTag(r, '0') && !isTag(r, '1') {
				_, stamp, _ := strings.Cut(localPart(addr)[5:], "=")
				stamp, _, _ = strings.Cut(stamp, "=")
				if !strings.EqualFold(stamp, Timestamp(vectorDay)) {
					return // made on another day of the window
				}
				if !strings.EqualFold(localPart(again), l) {
					t.Fatalf("Reverse(%q) = %q, but that forwards as %q", addr, rev, again)
				}
			}
		}
	})
}
