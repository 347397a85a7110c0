package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of one attempt on an upstream (the outcome label of
// spigot_gateway_upstream_requests_total).
const (
	outcomeOK          = "ok"           // the upstream answered in full
	outcomeClientError = "client_error" // a 4xx other than 429, passed on to the client
	outcomeRejected    = "rejected"     // 429: retried elsewhere, not ejected
	outcomeFailed      = "failed"       // connection error, 5xx or a cut stream: retried and ejected
	outcomeCanceled    = "canceled"     // the client went away
)

// gatewayMetrics are the gateway's own series, all named
// spigot_gateway_*. They sit here rather than in package metrics, which
// holds the server's, because only the gateway registers them.
//
//	spigot_gateway_upstream_requests_total{upstream,outcome}  counter    attempts by upstream and outcome (ok, client_error, rejected, failed, canceled)
//	spigot_gateway_affinity_total{result}                     counter    first choices of requests with a prompt: hit (the prefix's upstream) or miss (load moved it)
//	spigot_gateway_failovers_total{stage}                     counter    requests moved to another upstream: before_first_token or mid_stream
//	spigot_gateway_ttft_overhead_seconds                      histogram  the gateway's share of a stream's time to first token
//	spigot_gateway_rate_limited_total{key,reason}             counter    requests refused for a client key over its rate limit: reason requests or tokens
//	spigot_gateway_admission_wait_seconds                     histogram  time generation requests waited for max_in_flight or their key's max_concurrent
//	spigot_gateway_upstream_healthy{upstream}                 gauge      1 if the upstream takes new requests, else 0
//	spigot_gateway_upstream_in_flight{upstream}               gauge      requests the gateway has open on the upstream
//	spigot_gateway_upstream_queued{upstream}                  gauge      queue depth last scraped from a spigot upstream
//	spigot_gateway_upstream_running{upstream}                 gauge      running sequences last scraped from a spigot upstream
type gatewayMetrics struct {
	requests  *prometheus.CounterVec
	affinity  *prometheus.CounterVec
	failovers *prometheus.CounterVec
	overhead  prometheus.Histogram
	limited   *prometheus.CounterVec

	admissionWait prometheus.Histogram
}

func newGatewayMetrics(reg prometheus.Registerer, g *Gateway) *gatewayMetrics {
	m := &gatewayMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "spigot", Subsystem: "gateway", Name: "upstream_requests_total",
			Help: "Requests sent to upstreams (each attempt), by upstream and outcome: ok, client_error, rejected, failed, canceled.",
		}, []string{"upstream", "outcome"}),
		affinity: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "spigot", Subsystem: "gateway", Name: "affinity_total",
			Help: "Routing decisions for prompts: hit when the prompt prefix's upstream was kept, miss when load moved the request.",
		}, []string{"result"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "spigot", Subsystem: "gateway", Name: "failovers_total",
			Help: "Requests moved to another upstream after a failure, by stage: before_first_token or mid_stream.",
		}, []string{"stage"}),
		overhead: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "spigot", Subsystem: "gateway", Name: "ttft_overhead_seconds",
			Help:    "Time to first token at the gateway minus the upstream's own (routing, retries before the first token, copying).",
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
		}),
	}
	m.limited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "spigot", Subsystem: "gateway", Name: "rate_limited_total",
		Help: "Requests refused with 429 because their client key was over its rate limit, by key name and reason: requests or tokens.",
	}, []string{"key", "reason"})
	m.admissionWait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "spigot", Subsystem: "gateway", Name: "admission_wait_seconds",
		Help:    "Time generation requests waited for limits.max_in_flight or their key's max_concurrent.",
		Buckets: []float64{0.0001, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
	})
	reg.MustRegister(m.requests, m.affinity, m.failovers, m.overhead, m.limited, m.admissionWait, upstreamCollector{g})
	return m
}

var (
	descHealthy  = prometheus.NewDesc("spigot_gateway_upstream_healthy", "1 if the upstream takes new requests (its active check passed and no failure ejected it), else 0.", []string{"upstream"}, nil)
	descInFlight = prometheus.NewDesc("spigot_gateway_upstream_in_flight", "Requests the gateway has open on the upstream.", []string{"upstream"}, nil)
	descQueued   = prometheus.NewDesc("spigot_gateway_upstream_queued", "Queue depth last scraped from a spigot upstream's /metrics (0 for other kinds).", []string{"upstream"}, nil)
	descRunning  = prometheus.NewDesc("spigot_gateway_upstream_running", "Running sequences last scraped from a spigot upstream's /metrics (0 for other kinds).", []string{"upstream"}, nil)
)

// upstreamCollector reports the upstreams' state at scrape time.
type upstreamCollector struct{ g *Gateway }

func (c upstreamCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descHealthy
	ch <- descInFlight
	ch <- descQueued
	ch <- descRunning
}

func (c upstreamCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.g.now()
	for _, u := range c.g.Upstreams() {
		h := 0.0
		if u.Healthy(now) {
			h = 1
		}
		ch <- prometheus.MustNewConstMetric(descHealthy, prometheus.GaugeValue, h, u.cfg.Name)
		ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(u.inflight.Load()), u.cfg.Name)
		ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(u.queued.Load()), u.cfg.Name)
		ch <- prometheus.MustNewConstMetric(descRunning, prometheus.GaugeValue, float64(u.running.Load()), u.cfg.Name)
	}
}
