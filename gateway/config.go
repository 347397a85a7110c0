package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Kinds of upstream servers.
const (
	KindSpigot = "spigot" // Spigot: OpenAI API, /ready, /metrics with the engine's queue gauges
	KindOpenAI = "openai" // any OpenAI-compatible server (vLLM, llama.cpp, ...): /health
	KindTGI    = "tgi"    // Hugging Face TGI: /generate_stream, /health
	KindOllama = "ollama" // Ollama: /api/generate, /api/chat (NDJSON), /api/version
)

// Config is the gateway's configuration file (YAML). Unknown keys are
// errors. See example.yaml.
type Config struct {
	// Upstreams are the servers requests are routed to.
	Upstreams []UpstreamConfig `yaml:"upstreams"`
	// Health configures the active and passive checks.
	Health HealthConfig `yaml:"health"`
	// Routing configures upstream selection.
	Routing RoutingConfig `yaml:"routing"`
	// Auth lists the client keys and their rate limits (none: open).
	Auth AuthConfig `yaml:"auth"`
	// Limits bounds the gateway's own load.
	Limits LimitsConfig `yaml:"limits"`
	// CORS lets browser pages from other origins call the gateway.
	CORS CORSConfig `yaml:"cors"`
	// Streams configures resumable streams, and how gateway instances
	// find each other's (see the package doc).
	Streams StreamsConfig `yaml:"streams"`
}

// StreamsConfig configures resumable streams. A streamed generation's
// events are kept by the gateway instance that runs it; a client that
// reconnects (GET /v1/streams/ID with Last-Event-ID, a WebSocket or gRPC
// resume) gets the rest. With several instances, set Advertise and the
// same Secret on each: a stream's id then names the instance that owns
// it, signed, and any instance forwards a resume to the owner.
type StreamsConfig struct {
	// ResumeWindow is how long a stream whose client went away keeps
	// running for the client to resume it (then it is canceled), and how
	// long a finished stream's events are kept. Default 60s; a negative
	// value turns resuming off (a disconnect cancels at once).
	ResumeWindow time.Duration `yaml:"resume_window"`
	// Advertise is this instance's base URL as the other instances reach
	// it, with ${VAR}s taken from the environment (on Kubernetes, the
	// pod's IP: http://${POD_IP}:8080, POD_IP set from status.podIP).
	// Empty: a single instance; stream ids name no owner.
	Advertise string `yaml:"advertise"`
	// Secret signs the owner named in stream ids (HMAC-SHA256), so that
	// no client can make an instance forward to an address of its
	// choosing. The same on every instance; required with Advertise.
	Secret string `yaml:"secret"`
	// SecretEnv names an environment variable holding Secret instead.
	SecretEnv string `yaml:"secret_env"`
	// MaxMemory caps the memory the events of finished streams hold while
	// they wait out their window, in bytes or with a KiB, MiB or GiB
	// suffix; beyond it the oldest are forgotten first. Default 64MiB.
	MaxMemory Size `yaml:"max_memory"`
}

// Size is a number of bytes, written in YAML as a number or with a KiB,
// MiB or GiB suffix ("64MiB").
type Size int64

// UnmarshalYAML reads a size.
func (z *Size) UnmarshalYAML(n *yaml.Node) error {
	s := strings.TrimSpace(n.Value)
	mult := int64(1)
	for suffix, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if v, ok := strings.CutSuffix(s, suffix); ok {
			s, mult = strings.TrimSpace(v), m
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 || v > math.MaxInt64/mult {
		return fmt.Errorf("line %d: %q is not a size (bytes, or a number with KiB, MiB or GiB)", n.Line, n.Value)
	}
	*z = Size(v * mult)
	return nil
}

// LimitsConfig bounds the gateway's own load.
type LimitsConfig struct {
	// MaxInFlight caps the generation requests the gateway has in flight
	// (streams included, until their end); more wait, and are admitted
	// fairly across keys (see auth.keys' share and the package doc).
	// 0 means no cap.
	MaxInFlight int `yaml:"max_in_flight"`
}

// CORSConfig configures cross-origin requests from browsers.
type CORSConfig struct {
	// AllowedOrigins are the origins (scheme://host[:port]) whose pages
	// may call the gateway; "*" allows any. None: CORS is off.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// AllowedHeaders are the request headers a page may send. Default
	// Authorization and Content-Type.
	AllowedHeaders []string `yaml:"allowed_headers"`
	// MaxAge is how long a browser may cache a preflight's answer.
	// Default 10m.
	MaxAge time.Duration `yaml:"max_age"`
}

// UpstreamConfig is one upstream server.
type UpstreamConfig struct {
	// Name identifies the upstream in metrics and logs; unique.
	Name string `yaml:"name"`
	// Kind is spigot, openai, tgi or ollama: the API the upstream speaks.
	Kind string `yaml:"kind"`
	// URL is the base URL, such as http://10.0.0.5:8080 (no /v1).
	URL string `yaml:"url"`
	// Models are the model names the upstream serves; requests naming one
	// of them may go to it.
	Models []string `yaml:"models"`
	// APIKey, if set, is sent as "Authorization: Bearer APIKey".
	APIKey string `yaml:"api_key"`
	// APIKeyEnv names an environment variable holding the key instead.
	APIKeyEnv string `yaml:"api_key_env"`
	// Weight scales the upstream's share: its load is divided by it, and
	// its rendezvous score favours it in proportion. 0 means 1.
	Weight float64 `yaml:"weight"`
	// Discovery is how the URL's host becomes upstreams: "" (the default),
	// one upstream, however many addresses the name has; or "dns": the
	// host is a DNS name, such as a Kubernetes headless Service's, resolved
	// every ResolveInterval, and each address it resolves to is an
	// upstream of its own, named NAME/ADDRESS, with this entry's kind,
	// models, key and weight and the URL with the address for the host.
	// See the package doc.
	Discovery string `yaml:"discovery"`
	// ResolveInterval is how often a "dns" upstream's name is resolved
	// again. Default 5s (the TTL of a Kubernetes Service's records).
	ResolveInterval time.Duration `yaml:"resolve_interval"`
}

// Discovery modes.
const (
	DiscoveryNone = ""    // the URL is one upstream
	DiscoveryDNS  = "dns" // one upstream per address of the URL's host
)

// HealthConfig configures health checking.
type HealthConfig struct {
	// Interval between active checks (GET /ready on spigot, /health on
	// openai and tgi, /api/version on ollama) and /metrics scrapes of
	// spigot upstreams. Default 5s.
	Interval time.Duration `yaml:"interval"`
	// Timeout of one check. Default 2s.
	Timeout time.Duration `yaml:"timeout"`
	// Cooldown is how long a request failure (connection error, 5xx,
	// stream cut) keeps an upstream out of rotation. Default 10s.
	Cooldown time.Duration `yaml:"cooldown"`
}

// RoutingConfig configures upstream selection; see the package doc.
type RoutingConfig struct {
	// PrefixBytes is how many leading bytes of the prompt (or of the
	// messages' JSON) make up the affinity key. Default 1024; negative
	// turns affinity off.
	PrefixBytes int `yaml:"prefix_bytes"`
	// AffinityFactor: the affine upstream is kept unless its load exceeds
	// AffinityFactor × (least load + 1). Default 2.
	AffinityFactor float64 `yaml:"affinity_factor"`
	// MaxAttempts caps the upstreams one request may try, failovers
	// included. Default 3.
	MaxAttempts int `yaml:"max_attempts"`
	// StallTimeout: a stream's upstream that sends nothing (no response
	// headers, then no event) for this long is treated as cut off, and the
	// stream fails over. Default 5m (Envoy's stream idle timeout).
	StallTimeout time.Duration `yaml:"stall_timeout"`
}

// ParseConfig reads a configuration from YAML, strictly: unknown keys,
// a second document, missing or invalid fields are errors. Defaults are
// filled in, and the *_env fields and ${VAR}s read from the process's
// environment.
func ParseConfig(data []byte) (*Config, error) { return ParseConfigEnv(data, os.Getenv) }

// ParseConfigEnv is [ParseConfig] with the environment's variables from
// getenv.
func ParseConfigEnv(data []byte, getenv func(string) string) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("gateway: config: empty")
		}
		return nil, fmt.Errorf("gateway: config: %w", err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("gateway: config: more than one YAML document")
	}
	if err := c.check(getenv); err != nil {
		return nil, fmt.Errorf("gateway: config: %w", err)
	}
	return &c, nil
}

// LoadConfig reads and parses a configuration file.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseConfig(data)
}

// check validates c and fills in defaults.
func (c *Config) check(getenv func(string) string) error {
	if len(c.Upstreams) == 0 {
		return errors.New("no upstreams")
	}
	names := map[string]bool{}
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		where := fmt.Sprintf("upstreams[%d]", i)
		if u.Name == "" {
			return fmt.Errorf("%s: name is required", where)
		}
		if names[u.Name] {
			return fmt.Errorf("%s: name %q is used twice", where, u.Name)
		}
		if strings.Contains(u.Name, "/") {
			return fmt.Errorf("%s: name %q has a slash: NAME/ADDRESS is how upstreams found by discovery: dns are named", where, u.Name)
		}
		names[u.Name] = true
		switch u.Kind {
		case KindSpigot, KindOpenAI, KindTGI, KindOllama:
		case "":
			return fmt.Errorf("%s (%s): kind is required (spigot, openai, tgi or ollama)", where, u.Name)
		default:
			return fmt.Errorf("%s (%s): kind %q is not one of spigot, openai, tgi, ollama", where, u.Name, u.Kind)
		}
		p, err := url.Parse(u.URL)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("%s (%s): url %q is not an http(s) URL", where, u.Name, u.URL)
		}
		u.URL = strings.TrimSuffix(u.URL, "/")
		switch u.Discovery {
		case DiscoveryNone:
			if u.ResolveInterval != 0 {
				return fmt.Errorf("%s (%s): resolve_interval needs discovery: dns", where, u.Name)
			}
		case DiscoveryDNS:
			if p.Scheme != "http" {
				// The address replaces the name in the URL, so TLS would
				// check the certificate against the address.
				return fmt.Errorf("%s (%s): discovery: dns needs an http url, not %s", where, u.Name, p.Scheme)
			}
			if _, err := netip.ParseAddr(p.Hostname()); err == nil {
				return fmt.Errorf("%s (%s): discovery: dns needs a DNS name in the url, not the address %s", where, u.Name, p.Hostname())
			}
			if u.ResolveInterval < 0 {
				return fmt.Errorf("%s (%s): resolve_interval %v is negative", where, u.Name, u.ResolveInterval)
			}
			if u.ResolveInterval == 0 {
				u.ResolveInterval = 5 * time.Second
			}
		default:
			return fmt.Errorf("%s (%s): discovery %q is not dns (or absent)", where, u.Name, u.Discovery)
		}
		if len(u.Models) == 0 {
			return fmt.Errorf("%s (%s): models is required", where, u.Name)
		}
		for _, m := range u.Models {
			if m == "" {
				return fmt.Errorf("%s (%s): a model name is empty", where, u.Name)
			}
		}
		if u.Weight < 0 {
			return fmt.Errorf("%s (%s): weight %g is negative", where, u.Name, u.Weight)
		}
		if u.Weight == 0 {
			u.Weight = 1
		}
		if u.APIKeyEnv != "" {
			if u.APIKey != "" {
				return fmt.Errorf("%s (%s): set api_key or api_key_env, not both", where, u.Name)
			}
			u.APIKey = getenv(u.APIKeyEnv)
		}
	}
	h := &c.Health
	if h.Interval < 0 || h.Timeout < 0 || h.Cooldown < 0 {
		return errors.New("health: durations must not be negative")
	}
	if h.Interval == 0 {
		h.Interval = 5 * time.Second
	}
	if h.Timeout == 0 {
		h.Timeout = 2 * time.Second
	}
	if h.Cooldown == 0 {
		h.Cooldown = 10 * time.Second
	}
	if err := c.Auth.check(); err != nil {
		return err
	}
	if c.Limits.MaxInFlight < 0 {
		return fmt.Errorf("limits: max_in_flight %d is negative", c.Limits.MaxInFlight)
	}
	if err := c.CORS.check(); err != nil {
		return err
	}
	if err := c.Streams.check(getenv); err != nil {
		return err
	}
	r := &c.Routing
	if r.PrefixBytes == 0 {
		r.PrefixBytes = 1024
	}
	if r.AffinityFactor < 0 {
		return fmt.Errorf("routing: affinity_factor %g is negative", r.AffinityFactor)
	}
	if r.AffinityFactor == 0 {
		r.AffinityFactor = 2
	}
	if r.MaxAttempts < 0 {
		return fmt.Errorf("routing: max_attempts %d is negative", r.MaxAttempts)
	}
	if r.MaxAttempts == 0 {
		r.MaxAttempts = 3
	}
	if r.StallTimeout < 0 {
		return fmt.Errorf("routing: stall_timeout %v is negative", r.StallTimeout)
	}
	if r.StallTimeout == 0 {
		r.StallTimeout = 5 * time.Minute
	}
	return nil
}

func (s *StreamsConfig) check(getenv func(string) string) error {
	if s.ResumeWindow == 0 {
		s.ResumeWindow = 60 * time.Second
	}
	if s.MaxMemory == 0 {
		s.MaxMemory = 64 << 20
	}
	if s.SecretEnv != "" {
		if s.Secret != "" {
			return errors.New("streams: set secret or secret_env, not both")
		}
		s.Secret = getenv(s.SecretEnv)
		if s.Secret == "" {
			return fmt.Errorf("streams: secret_env %s is empty or not set", s.SecretEnv)
		}
	}
	if s.Advertise == "" {
		return nil
	}
	s.Advertise = os.Expand(s.Advertise, getenv)
	p, err := url.Parse(s.Advertise)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Hostname() == "" || (p.Path != "" && p.Path != "/") {
		return fmt.Errorf("streams: advertise %q is not an http(s) base URL", s.Advertise)
	}
	s.Advertise = strings.TrimSuffix(s.Advertise, "/")
	if len(s.Secret) < 16 {
		return errors.New("streams: advertise needs a secret (secret or secret_env) of at least 16 bytes, the same on every instance")
	}
	return nil
}
