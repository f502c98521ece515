package statetest

import "testing"

// FreePort's ports lie below the kernel's ephemeral range, where no
// connection's source port can take them before the server binds.
func TestFreePortBelowEphemeralRange(t *testing.T) {
	low := ephemeralLow()
	for i := 0; i < 50; i++ {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if p < freePortFloor || p >= low {
			t.Fatalf("FreePort gave %d, want [%d, %d)", p, freePortFloor, low)
		}
	}
}
