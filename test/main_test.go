package test

import (
	"testing"

	"github.com/mailnode/mailnode/test/harness"
)

// TestMain runs every test of this package inside a fresh network
// namespace (see harness.Main): nothing can reach off the machine.
func TestMain(m *testing.M) { harness.Main(m) }
