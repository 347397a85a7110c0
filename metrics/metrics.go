// Package metrics defines every Prometheus metric Spigot exports, in this one
// file. Metrics are registered on a registry the caller injects (no global
// registration), so each server, and each test, has its own.
//
// Names follow spigot_<subsystem>_<name>_<unit> in base units; counters end in
// _total.
//
//	spigot_server_time_to_first_token_seconds   histogram  request start to its first token written
//	spigot_server_inter_token_latency_seconds   histogram  time between a choice's tokens as written
//	spigot_server_e2e_request_latency_seconds   histogram  request start to its end, for requests that finished
//	spigot_http_requests_total{route,code}      counter    HTTP requests by route pattern and status
//	spigot_engine_queued_requests               gauge      requests waiting to start
//	spigot_engine_running_sequences             gauge      sequences being decoded
//	spigot_engine_prompt_tokens_total           counter    prompt tokens computed (prefix cache hits excluded)
//	spigot_engine_generated_tokens_total        counter    tokens generated
//	spigot_engine_steps_total                   counter    forward steps run
//	spigot_engine_requests_finished_total{reason} counter  sequences ended: stop, length, canceled, error
//	spigot_kvcache_blocks_used                  gauge      KV cache blocks held by running sequences
//	spigot_kvcache_blocks_capacity              gauge      KV cache blocks in the pool
//	spigot_kvcache_prefix_query_tokens_total    counter    prompt tokens looked up in the prefix cache
//	spigot_kvcache_prefix_hit_tokens_total      counter    of which were found cached
//	spigot_kvcache_prefix_hit_ratio             gauge      hit tokens / query tokens since start
//
// The engine's figures are read from [engine.Engine.Stats] when the registry
// is scraped, so they cost nothing between scrapes.
package metrics

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/spigot-llm/spigot/engine"
)

// Metrics holds the metrics that the server observes itself; the engine's
// are collected from its Stats at scrape time (see [Metrics.SetEngine]).
type Metrics struct {
	// TTFT is observed once per request that produced a token: from the
	// request's arrival to the write of its first token.
	TTFT prometheus.Histogram
	// InterToken is observed once per token after a choice's first: the
	// time since that choice's previous write, divided among the tokens the
	// write carried.
	InterToken prometheus.Histogram
	// E2E is observed once per request that finished normally: from its
	// arrival to its last byte.
	E2E prometheus.Histogram

	http   *prometheus.CounterVec
	engine atomic.Pointer[func() engine.Stats]
}

// NewRegistry returns a registry with the Go runtime and process collectors,
// ready for [New].
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// New creates the metrics and registers them on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		TTFT: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "spigot", Subsystem: "server", Name: "time_to_first_token_seconds",
			Help:    "Time from a request's arrival to the write of its first generated token.",
			Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
		}),
		InterToken: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "spigot", Subsystem: "server", Name: "inter_token_latency_seconds",
			Help:    "Time between consecutive generated tokens of a choice, as written to the client.",
			Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
		}),
		E2E: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "spigot", Subsystem: "server", Name: "e2e_request_latency_seconds",
			Help:    "Time from a generation request's arrival to its end, for requests that finished normally.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}),
		http: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "spigot", Subsystem: "http", Name: "requests_total",
			Help: "HTTP requests answered, by route pattern and status code.",
		}, []string{"route", "code"}),
	}
	reg.MustRegister(m.TTFT, m.InterToken, m.E2E, m.http, engineCollector{m})
	return m
}

// Request counts one answered HTTP request.
func (m *Metrics) Request(route string, code int) {
	m.http.WithLabelValues(route, strconv.Itoa(code)).Inc()
}

// SetEngine makes the registry report the engine's state from stats, called
// at each scrape. Before it is called (while the model loads) the engine's
// metrics are absent.
func (m *Metrics) SetEngine(stats func() engine.Stats) { m.engine.Store(&stats) }

func desc(subsystem, name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName("spigot", subsystem, name), help, labels, nil)
}

var (
	descQueued      = desc("engine", "queued_requests", "Requests waiting in the engine's queue to start.")
	descRunning     = desc("engine", "running_sequences", "Sequences being decoded.")
	descPrompt      = desc("engine", "prompt_tokens_total", "Prompt tokens computed (prefix cache hits excluded).")
	descGenerated   = desc("engine", "generated_tokens_total", "Tokens generated.")
	descSteps       = desc("engine", "steps_total", "Forward steps run.")
	descFinished    = desc("engine", "requests_finished_total", "Engine requests (one per choice) ended, by reason: stop, length, canceled, error.", "reason")
	descBlocksUsed  = desc("kvcache", "blocks_used", "KV cache blocks held by running sequences.")
	descBlocksCap   = desc("kvcache", "blocks_capacity", "KV cache blocks in the pool.")
	descPrefixQuery = desc("kvcache", "prefix_query_tokens_total", "Prompt tokens looked up in the prefix cache.")
	descPrefixHit   = desc("kvcache", "prefix_hit_tokens_total", "Prompt tokens found in the prefix cache.")
	descHitRatio    = desc("kvcache", "prefix_hit_ratio", "Prefix cache hit tokens divided by query tokens since start (0 before any query).")
)

// engineCollector reports the engine's Stats at scrape time.
type engineCollector struct{ m *Metrics }

func (c engineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueued, descRunning, descPrompt, descGenerated, descSteps, descFinished,
		descBlocksUsed, descBlocksCap, descPrefixQuery, descPrefixHit, descHitRatio} {
		ch <- d
	}
}

func (c engineCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.m.engine.Load()
	if f == nil {
		return
	}
	s := (*f)()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descQueued, float64(s.Queued))
	gauge(descRunning, float64(s.Running))
	counter(descPrompt, s.PromptTokens)
	counter(descGenerated, s.GeneratedTokens)
	counter(descSteps, s.Steps)
	counter(descFinished, s.FinishedStop, "stop")
	counter(descFinished, s.FinishedLength, "length")
	counter(descFinished, s.FinishedCanceled, "canceled")
	counter(descFinished, s.FinishedError, "error")
	gauge(descBlocksUsed, float64(s.BlocksInUse))
	gauge(descBlocksCap, float64(s.Blocks))
	counter(descPrefixQuery, s.PrefixQueryTokens)
	counter(descPrefixHit, s.PrefixHitTokens)
	ratio := 0.0
	if s.PrefixQueryTokens > 0 {
		ratio = float64(s.PrefixHitTokens) / float64(s.PrefixQueryTokens)
	}
	gauge(descHitRatio, ratio)
}
