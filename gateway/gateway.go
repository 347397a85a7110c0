package gateway

import (
	"context"
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/spigot-llm/spigot/api/openai"
	"github.com/spigot-llm/spigot/metrics"
)

// Options are what a Gateway needs besides its Config.
type Options struct {
	// Registry receives the gateway's metrics and is served at /metrics.
	// Nil means a new one from [metrics.NewRegistry].
	Registry *prometheus.Registry
	// Logger logs routing events. Nil discards them.
	Logger *slog.Logger
	// Transport sends requests to upstreams. Nil means a transport with
	// a 5 s dial timeout, no compression and many idle connections per
	// host.
	Transport http.RoundTripper
	// WriteTimeout bounds each write to a client (a client that reads
	// nothing for this long loses its request). 0 means 60 s.
	WriteTimeout time.Duration
	// KeepAlive is how long a client's stream may stay silent before an
	// SSE comment is sent on it, so that proxies do not time it out.
	// 0 means 15 s; negative, never.
	KeepAlive time.Duration
	// LookupNetIP resolves the host of an upstream with discovery: dns.
	// A [net.DNSError] with IsNotFound means the name has no address
	// (a headless Service with no ready pod); other errors keep the
	// addresses found before. Nil means [net.DefaultResolver]'s
	// LookupNetIP for "ip".
	LookupNetIP func(ctx context.Context, host string) ([]netip.Addr, error)
}

// Gateway routes OpenAI API requests to upstream servers. Create it with
// New; it checks its upstreams' health until Close.
type Gateway struct {
	cfg  Config
	opts Options
	log  *slog.Logger
	// ups is the upstreams, in configuration order (each discovery: dns
	// entry's by address); replaced, never changed, under upsMu.
	ups    atomic.Pointer[[]*Upstream]
	upsMu  sync.Mutex
	ctx    context.Context // done at Close
	client *http.Client
	reg    *prometheus.Registry
	m      *gatewayMetrics
	mux    *http.ServeMux
	now    func() time.Time
	keys   map[string]*clientKey // by SHA-256, hex
	// Admission: every key's class (and the keyless requests', anon).
	adm     *admission
	classes classList
	anon    *class

	streams  streams        // resumable sessions by id
	sessions sync.WaitGroup // running relays

	draining atomic.Bool
	// onContinue, if set (by tests), is called when a stream is continued
	// on another upstream, with the request and what was sent so far.
	onContinue func(r *request, text string, tokens int, byIDs bool)
	stop       context.CancelFunc
	wg         sync.WaitGroup // health and resolver loops
}

// New returns a Gateway for cfg (as ParseConfig returns it) and starts
// its health checks.
func New(cfg *Config, opts Options) *Gateway {
	if opts.Registry == nil {
		opts.Registry = metrics.NewRegistry()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case opts.KeepAlive == 0:
		opts.KeepAlive = 15 * time.Second
	case opts.KeepAlive < 0:
		opts.KeepAlive = 0
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 60 * time.Second
	}
	if opts.Transport == nil {
		opts.Transport = &http.Transport{
			Proxy:              http.ProxyFromEnvironment,
			DialContext:        (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			DisableCompression: true, // bytes pass through as the upstream sent them
			// Keep as many idle connections to one upstream as streams
			// a busy gateway has on it: with fewer, every burst past
			// the pool opens new connections and closes them after
			// (TestOverhead at 500 streams: ~250 new ones a burst).
			MaxIdleConns:        4096,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     90 * time.Second,
		}
	}
	if opts.LookupNetIP == nil {
		opts.LookupNetIP = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	g := &Gateway{cfg: *cfg, opts: opts, log: opts.Logger, reg: opts.Registry,
		client: &http.Client{Transport: opts.Transport}, now: time.Now}
	g.streams.budget = int64(cfg.Streams.MaxMemory)
	var ups []*Upstream
	for i, uc := range cfg.Upstreams {
		if uc.Discovery == DiscoveryNone {
			ups = append(ups, newUpstream(uc, i, true))
		}
	}
	g.ups.Store(&ups)
	g.adm = &admission{max: cfg.Limits.MaxInFlight}
	g.anon = &class{share: 1}
	g.classes = classList{g.anon}
	if len(cfg.Auth.Keys) > 0 {
		g.keys = map[string]*clientKey{}
		for _, kc := range cfg.Auth.Keys {
			k := newClientKey(kc)
			k.class = &class{share: kc.Share, maxConc: kc.MaxConcurrent}
			g.classes = append(g.classes, k.class)
			g.keys[kc.SHA256] = k
		}
	}
	g.m = newGatewayMetrics(g.reg, g)
	g.routes()
	ctx, cancel := context.WithCancel(context.Background())
	g.ctx, g.stop = ctx, cancel
	g.upsMu.Lock()
	for _, u := range ups {
		g.startHealth(u)
	}
	g.upsMu.Unlock()
	for i, uc := range cfg.Upstreams {
		if uc.Discovery == DiscoveryDNS {
			g.wg.Add(1)
			go g.resolveLoop(ctx, i)
		}
	}
	return g
}

// startHealth starts u's health loop; upsMu is held.
func (g *Gateway) startHealth(u *Upstream) {
	ctx, cancel := context.WithCancel(g.ctx)
	u.stopHealth = cancel
	g.wg.Add(1)
	go g.healthLoop(ctx, u)
}

// Close stops the health checks, cancels the relays still running
// (streams no client reads, kept for a resume) and closes idle upstream
// connections. Stop the HTTP server first: requests in progress go on
// until then.
func (g *Gateway) Close() {
	g.stop()
	g.wg.Wait()
	g.sessions.Wait()
	g.client.CloseIdleConnections()
}

// Drain makes /ready answer 503 (a load balancer in front stops sending
// requests) while requests go on being served.
func (g *Gateway) Drain() { g.draining.Store(true) }

// Upstreams returns the upstreams, in configuration order, those found by
// discovery: dns in their entry's place (by address), draining ones
// included until their last request ends. The slice must not be
// modified.
func (g *Gateway) Upstreams() []*Upstream { return *g.ups.Load() }

// healthLoop checks u at once and then every interval until ctx is done.
func (g *Gateway) healthLoop(ctx context.Context, u *Upstream) {
	defer g.wg.Done()
	t := time.NewTicker(g.cfg.Health.Interval)
	defer t.Stop()
	for {
		ok := u.check(ctx, g.client, g.cfg.Health.Timeout)
		if ctx.Err() != nil {
			return
		}
		u.mu.Lock()
		was := u.activeOK
		u.activeOK = ok
		u.mu.Unlock()
		if ok && !u.joined.Load() {
			u.joined.Store(true)
			g.log.Info("upstream joined", "upstream", u.cfg.Name)
		} else if was != ok {
			g.log.Info("upstream health changed", "upstream", u.cfg.Name, "healthy", ok)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (g *Gateway) routes() {
	mux := http.NewServeMux()
	g.mux = mux
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /ready", g.handleReady)
	metricsHandler := promhttp.HandlerFor(g.reg, promhttp.HandlerOpts{})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		if g.authenticate(w, r, false) {
			metricsHandler.ServeHTTP(w, r)
		}
	})
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		if g.authenticate(w, r, false) {
			g.handleModels(w, r)
		}
	})
	mux.HandleFunc("POST /v1/completions", func(w http.ResponseWriter, r *http.Request) {
		g.serveGenerate(w, r, openai.Completion)
	})
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		g.serveGenerate(w, r, openai.Chat)
	})
	mux.HandleFunc("GET /v1/streams/{id}", g.handleStream)
	mux.HandleFunc("POST /v1/streams/{id}/cancel", g.handleCancel)
	mux.HandleFunc("GET /v1/ws", g.handleWS)
	for _, path := range []string{"/tokenize", "/detokenize"} {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
			if g.authenticate(w, r, false) {
				g.handleTokenize(w, r)
			}
		})
	}
	for path, allow := range map[string]string{"/health": "GET", "/ready": "GET", "/metrics": "GET", "/v1/models": "GET",
		"/v1/completions": "POST", "/v1/chat/completions": "POST", "/tokenize": "POST", "/detokenize": "POST"} {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			openai.WriteError(w, openai.MethodNotAllowed(r.Method, r.URL.Path, allow))
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		openai.WriteError(w, openai.NotFound(r.URL.Path))
	})
}

// ServeHTTP serves the gateway's routes.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g.cors(w, r) {
		return
	}
	g.mux.ServeHTTP(w, r)
}

// handleReady answers 200 while some upstream is healthy and the gateway
// is not draining.
func (g *Gateway) handleReady(w http.ResponseWriter, r *http.Request) {
	if g.draining.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "shutting down"})
		return
	}
	ok, n := g.ready()
	if !ok {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "no healthy upstream"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "healthy_upstreams": n})
}

// ready reports whether the gateway takes requests (it is not draining
// and some upstream is healthy), and how many upstreams are healthy.
func (g *Gateway) ready() (bool, int) {
	now := g.now()
	n := 0
	for _, u := range g.Upstreams() {
		if u.Healthy(now) {
			n++
		}
	}
	return n > 0 && !g.draining.Load(), n
}

// handleModels lists the union of the upstreams' configured models.
// owned_by names the configuration's upstream entries that serve each.
func (g *Gateway) handleModels(w http.ResponseWriter, r *http.Request) {
	owners := map[string][]string{}
	for _, u := range g.cfg.Upstreams {
		for _, m := range u.Models {
			owners[m] = append(owners[m], u.Name)
		}
	}
	ids := make([]string, 0, len(owners))
	for id := range owners {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	list := openai.ModelList{Object: "list", Data: []openai.Model{}}
	for _, id := range ids {
		owned := ""
		for i, o := range owners[id] {
			if i > 0 {
				owned += ","
			}
			owned += o
		}
		list.Data = append(list.Data, openai.Model{ID: id, Object: "model", OwnedBy: owned})
	}
	writeJSON(w, http.StatusOK, list)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// serves reports whether some upstream entry of the configuration serves
// model ("" matches any), found by discovery: dns or not.
func (g *Gateway) serves(model string) bool {
	for _, u := range g.cfg.Upstreams {
		if model == "" || slices.Contains(u.Models, model) {
			return true
		}
	}
	return false
}

// pick chooses the upstream for a request's next attempt among those that
// serve model and were not tried; see the package doc for the policy.
// hit reports, for a request with an affinity key, whether the key's own
// upstream was chosen. It returns nil when no upstream is left.
func (g *Gateway) pick(model string, key uint64, hasKey bool, tried []*Upstream) (u *Upstream, hit bool) {
	now := g.now()
	var cands []*Upstream
	var fallback []*Upstream // unhealthy ones: used only when none is healthy
outer:
	for _, c := range g.Upstreams() {
		if model != "" && !c.models[model] || c.draining.Load() || !c.joined.Load() {
			continue
		}
		for _, t := range tried {
			if t == c {
				continue outer
			}
		}
		if c.Healthy(now) {
			cands = append(cands, c)
		} else {
			fallback = append(fallback, c)
		}
	}
	if len(cands) == 0 {
		cands = fallback
	}
	if len(cands) == 0 {
		return nil, false
	}
	if !hasKey {
		key = rand.Uint64() // ties among the least loaded fall at random
	}
	var best, least *Upstream
	var bestScore, leastScore, leastLoad float64
	for _, c := range cands {
		s, l := c.rendezvous(key), c.load()
		if best == nil || s > bestScore {
			best, bestScore = c, s
		}
		if least == nil || l < leastLoad || (l == leastLoad && s > leastScore) {
			least, leastScore, leastLoad = c, s, l
		}
	}
	if hasKey && best.load() <= g.cfg.Routing.AffinityFactor*(leastLoad+1) {
		return best, true
	}
	return least, hasKey && least == best
}
