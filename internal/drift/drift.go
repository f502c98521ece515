// Package drift compares the inventory a daemon runs with the one the
// installed Postfix config was rendered from.
//
// render-config writes the inventory's digest (inventory.Digest) to
// postfix/mailnode-inventory.digest, installed in postfix.config_directory
// with main.cf. policyd and milterd load the inventory themselves, so the
// two can part: someone edits the inventory and reloads the daemons without
// installing the rendered config, or installs a config rendered from an
// inventory the daemons have not reloaded. A Guard notices, at start, on
// reload and every minute, and says so until the two agree again.
package drift

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailnode/mailnode/internal/daemon"
)

// DigestFile is the file under render-config's postfix/ (installed in
// postfix.config_directory with the rest of the Postfix config) that holds
// the digest of the inventory rendered (inventory.Digest) and a newline.
const DigestFile = "mailnode-inventory.digest"

// Interval is how often a Guard looks at the installed digest between
// reloads.
const Interval = time.Minute

// State is one comparison.
type State struct {
	Running   string // digest of the inventory the daemon runs
	Installed string // digest in the installed config; "" when missing or unreadable
	File      string // the installed digest file
	Err       error  // why Installed is "" (missing file, unreadable)
}

// Drift reports whether the installed config is not known to come from the
// running inventory (a missing digest file counts: nothing says it does).
func (s State) Drift() bool { return s.Running != s.Installed }

// Warning is the one-line explanation of a drift, "" when there is none.
func (s State) Warning() string {
	switch {
	case !s.Drift():
		return ""
	case s.Err != nil:
		return fmt.Sprintf("inventory drift: the installed Postfix config has no readable digest (%v); render-config and install it", s.Err)
	default:
		return fmt.Sprintf("inventory drift: running %s, installed Postfix config rendered from %s; render-config and install it, or reload the daemons", s.Running, s.Installed)
	}
}

// ReadInstalled reads the digest render-config left in configDir
// (postfix.config_directory).
func ReadInstalled(configDir string) (digest, file string, err error) {
	file = filepath.Join(configDir, DigestFile)
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return "", file, fmt.Errorf("%s is missing", file)
	}
	if err != nil {
		return "", file, err
	}
	d := strings.TrimSpace(string(b))
	if !strings.HasPrefix(d, "sha256:") {
		return "", file, fmt.Errorf("%s: not a digest", file)
	}
	return d, file, nil
}

// Guard keeps the running digest and the last comparison of one daemon.
type Guard struct {
	Daemon string       // "policyd", "milterd": the log prefix
	Log    *slog.Logger // nil: slog.Default()
	// OnCheck, when set, is called with every comparison (the metrics).
	OnCheck func(State)

	mu        sync.Mutex
	running   string
	configDir string
	last      State
	checked   bool
}

// Set records the inventory now running (at start and after a successful
// reload), logs its digest and compares it with the installed one. A drift
// is logged as a warning every time Set finds one.
func (g *Guard) Set(digest, configDir string) State {
	g.mu.Lock()
	g.running, g.configDir = digest, configDir
	g.mu.Unlock()
	g.log().Info(g.Daemon+": inventory digest", "digest", digest, "config_directory", configDir)
	return g.check(true)
}

// Check compares again; a drift is logged when it appears or changes, its
// end when it ends.
func (g *Guard) Check() State { return g.check(false) }

func (g *Guard) check(always bool) State {
	g.mu.Lock()
	s := State{Running: g.running}
	dir := g.configDir
	g.mu.Unlock()
	s.Installed, s.File, s.Err = ReadInstalled(dir)

	g.mu.Lock()
	prev, had := g.last, g.checked
	g.last, g.checked = s, true
	g.mu.Unlock()
	changed := !had || prev.Running != s.Running || prev.Installed != s.Installed
	switch {
	case s.Drift() && (always || changed):
		g.log().Warn(g.Daemon+": "+s.Warning(), "running", s.Running, "installed", s.Installed, "file", s.File)
	case !s.Drift() && had && prev.Drift():
		g.log().Info(g.Daemon+": inventory drift over: the installed Postfix config comes from the running inventory", "digest", s.Running)
	}
	if g.OnCheck != nil {
		g.OnCheck(s)
	}
	return s
}

// State is the last comparison.
func (g *Guard) State() State {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.last
}

// Start runs Run in a goroutine (interval 0: Interval) and returns the
// function that stops it.
func (g *Guard) Start(interval time.Duration) (stop func()) {
	if interval <= 0 {
		interval = Interval
	}
	ctx, cancel := context.WithCancel(context.Background())
	go g.Run(ctx, interval)
	return cancel
}

// Run compares every interval until ctx ends.
func (g *Guard) Run(ctx context.Context, interval time.Duration) {
	daemon.Every(ctx, interval, func() { g.Check() })
}

func (g *Guard) log() *slog.Logger {
	if g.Log != nil {
		return g.Log
	}
	return slog.Default()
}

// Gauges export a daemon's last comparison as metrics, under the daemon's
// prefix (mailnode_policy, mailnode_milter): PREFIX_inventory_info{digest}
// and PREFIX_inventory_installed_info{digest} (always 1), and
// PREFIX_inventory_drift (1 while they differ). Warning gives the
// explanation for /healthz.
type Gauges struct {
	info, installed *prometheus.GaugeVec
	drift           prometheus.Gauge

	mu                             sync.Mutex
	warning                        string
	runningDigest, installedDigest string
}

// NewGauges makes the gauges; daemon names the process in their help.
func NewGauges(prefix, daemon string) *Gauges {
	return &Gauges{
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: prefix + "_inventory_info",
			Help: "Always 1; digest is the sha256 of the inventory file " + daemon + " runs.",
		}, []string{"digest"}),
		installed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: prefix + "_inventory_installed_info",
			Help: "Always 1; digest is the one render-config left in postfix.config_directory (\"\" when missing).",
		}, []string{"digest"}),
		drift: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: prefix + "_inventory_drift",
			Help: "1 while the installed Postfix config was not rendered from the inventory " + daemon + " runs, else 0.",
		}),
	}
}

// Collectors are the gauges, for a registry.
func (g *Gauges) Collectors() []prometheus.Collector {
	return []prometheus.Collector{g.info, g.installed, g.drift}
}

// Set records a comparison (a Guard's OnCheck).
func (g *Gauges) Set(running, installed, warning string) {
	g.info.Reset()
	g.info.WithLabelValues(running).Set(1)
	g.installed.Reset()
	g.installed.WithLabelValues(installed).Set(1)
	if warning != "" {
		g.drift.Set(1)
	} else {
		g.drift.Set(0)
	}
	g.mu.Lock()
	g.warning, g.runningDigest, g.installedDigest = warning, running, installed
	g.mu.Unlock()
}

// Digests are the last comparison's digests: the running inventory's and
// the installed config's ("" when missing).
func (g *Gauges) Digests() (running, installed string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.runningDigest, g.installedDigest
}

// Warning is the last comparison's warning, "" when there is none.
func (g *Gauges) Warning() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.warning
}
