package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spigot-llm/spigot/engine"
)

func TestLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.SetEngine(func() engine.Stats { return engine.Stats{} })
	m.TTFT.Observe(0.1)
	m.Request("/v1/completions", 200)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) > 0 {
		t.Errorf("lint: %+v %v", problems, err)
	}
	// NewRegistry's Go and process collectors lint clean too.
	if problems, err := testutil.GatherAndLint(NewRegistry()); err != nil || len(problems) > 0 {
		t.Errorf("lint of NewRegistry: %+v %v", problems, err)
	}
}

// TestEngineStats checks that the engine's figures appear, read at scrape
// time, only once SetEngine was called.
func TestEngineStats(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	if n, err := testutil.GatherAndCount(reg, "spigot_engine_queued_requests"); err != nil || n != 0 {
		t.Errorf("engine metrics before SetEngine: %d (%v)", n, err)
	}
	stats := engine.Stats{Queued: 3, Running: 2, BlocksInUse: 5, Blocks: 64, PrefixQueryTokens: 40, PrefixHitTokens: 10,
		PromptTokens: 30, GeneratedTokens: 7, Steps: 9, FinishedStop: 1, FinishedLength: 2, FinishedCanceled: 3, FinishedError: 4}
	m.SetEngine(func() engine.Stats { return stats })
	want := `
# HELP spigot_engine_queued_requests Requests waiting in the engine's queue to start.
# TYPE spigot_engine_queued_requests gauge
spigot_engine_queued_requests 3
# HELP spigot_engine_requests_finished_total Engine requests (one per choice) ended, by reason: stop, length, canceled, error.
# TYPE spigot_engine_requests_finished_total counter
spigot_engine_requests_finished_total{reason="canceled"} 3
spigot_engine_requests_finished_total{reason="error"} 4
spigot_engine_requests_finished_total{reason="length"} 2
spigot_engine_requests_finished_total{reason="stop"} 1
# HELP spigot_kvcache_blocks_used KV cache blocks held by running sequences.
# TYPE spigot_kvcache_blocks_used gauge
spigot_kvcache_blocks_used 5
# HELP spigot_kvcache_prefix_hit_ratio Prefix cache hit tokens divided by query tokens since start (0 before any query).
# TYPE spigot_kvcache_prefix_hit_ratio gauge
spigot_kvcache_prefix_hit_ratio 0.25
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "spigot_engine_queued_requests",
		"spigot_engine_requests_finished_total", "spigot_kvcache_blocks_used", "spigot_kvcache_prefix_hit_ratio"); err != nil {
		t.Error(err)
	}
	stats.Queued = 0 // read again at the next scrape
	if err := testutil.GatherAndCompare(reg, strings.NewReader(strings.Replace(want, "requests 3", "requests 0", 1)), "spigot_engine_queued_requests"); err != nil {
		t.Error(err)
	}
}

func TestRequests(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.Request("/v1/chat/completions", 200)
	m.Request("/v1/chat/completions", 200)
	m.Request("/v1/chat/completions", 429)
	if got := testutil.ToFloat64(m.http.WithLabelValues("/v1/chat/completions", "200")); got != 2 {
		t.Errorf("200s = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.http.WithLabelValues("/v1/chat/completions", "429")); got != 1 {
		t.Errorf("429s = %v, want 1", got)
	}
}
