package statetest

import (
	"os"
	"strings"
	"testing"
)

// TestRedisSettingsMatchRole: every setting the tests and benchmarks give
// their Redis is a line of the configuration the Ansible role writes, so
// the figures measured with them are the deployed Redis's.
func TestRedisSettingsMatchRole(t *testing.T) {
	b, err := os.ReadFile("../../ansible/roles/mailnode/templates/redis.conf.j2")
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		lines[strings.Join(strings.Fields(l), " ")] = true
	}
	if len(RedisSettings) == 0 {
		t.Fatal("no settings")
	}
	for _, s := range RedisSettings {
		if !lines[s] {
			t.Errorf("the role's redis.conf.j2 has no line %q", s)
		}
	}
}
