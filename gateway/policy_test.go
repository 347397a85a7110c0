package gateway

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestScrapeLoad(t *testing.T) {
	for _, tc := range []struct {
		in            string
		queued, runng int64
	}{
		{"# HELP x\nspigot_engine_queued_requests 3\nspigot_engine_running_sequences 4\n", 3, 4},
		{"spigot_engine_running_sequences 2\n", -1, 2},
		{"spigot_engine_queued_requests NaN\nspigot_engine_running_sequences -1\n", -1, -1},
		{"spigot_engine_queued_requests_total 9\n", -1, -1},
		{"", -1, -1},
	} {
		q, r := scrapeLoad(strings.NewReader(tc.in))
		if q != tc.queued || r != tc.runng {
			t.Errorf("scrapeLoad(%q) = %d, %d, want %d, %d", tc.in, q, r, tc.queued, tc.runng)
		}
	}
}

// TestRendezvousWeights: over many keys, each upstream owns a share of
// them in proportion to its weight, and removing one moves only its keys.
func TestRendezvousWeights(t *testing.T) {
	ups := []*Upstream{
		newUpstream(UpstreamConfig{Name: "a", Weight: 1}, 0, true),
		newUpstream(UpstreamConfig{Name: "b", Weight: 1}, 0, true),
		newUpstream(UpstreamConfig{Name: "c", Weight: 2}, 0, true),
	}
	owner := func(ups []*Upstream, key uint64) string {
		var best *Upstream
		var bs float64
		for _, u := range ups {
			if s := u.rendezvous(key); best == nil || s > bs {
				best, bs = u, s
			}
		}
		return best.cfg.Name
	}
	const n = 20000
	count := map[string]int{}
	moved := 0
	for i := range n {
		key := prefixKey([]byte(fmt.Sprintf("prompt %d", i)), 1024)
		o := owner(ups, key)
		count[o]++
		if o2 := owner(ups[:2], key); o != "c" && o2 != o {
			moved++
		}
	}
	for name, want := range map[string]float64{"a": 0.25, "b": 0.25, "c": 0.5} {
		// 20000 keys: the standard deviation of a share is under 0.004.
		if got := float64(count[name]) / n; math.Abs(got-want) > 0.02 {
			t.Errorf("%s owns %.3f of the keys, want %.2f", name, got, want)
		}
	}
	if moved != 0 {
		t.Errorf("removing c moved %d keys of a and b", moved)
	}
}

func TestLoad(t *testing.T) {
	u := newUpstream(UpstreamConfig{Name: "a", Weight: 2}, 0, true)
	u.inflight.Store(3)
	if got := u.load(); got != 1.5 {
		t.Errorf("load with 3 in flight, weight 2 = %g, want 1.5", got)
	}
	u.queued.Store(4)
	u.running.Store(6)
	if got := u.load(); got != 5 {
		t.Errorf("load with 10 reported = %g, want 5", got)
	}
}

func TestMetricsLint(t *testing.T) {
	gwy := newGW(t, testConfig(t, "http://127.0.0.1:1"))
	problems, err := testutil.GatherAndLint(gwy.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "spigot_gateway") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}
