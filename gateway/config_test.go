package gateway

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestExampleConfig(t *testing.T) {
	data, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("VLLM_API_KEY", "secret")
	c, err := ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Upstreams) != 7 {
		t.Fatalf("%d upstreams, want 7", len(c.Upstreams))
	}
	kinds := map[string]bool{}
	for _, u := range c.Upstreams {
		kinds[u.Kind] = true
	}
	for _, k := range []string{KindSpigot, KindOpenAI, KindTGI, KindOllama} {
		if !kinds[k] {
			t.Errorf("example has no %s upstream", k)
		}
	}
	if got := c.Upstreams[2].Weight; got != 2 {
		t.Errorf("spigot-2 weight = %g, want 2", got)
	}
	if got := c.Upstreams[0].Weight; got != 1 {
		t.Errorf("spigot-0 weight = %g, want the default 1", got)
	}
	if len(c.Auth.Keys) != 2 || c.Auth.Keys[0].SHA256 != keyHash("sk-team-a") || c.Auth.Keys[0].Burst != 50 || c.Auth.Keys[1].RequestsPerMinute != 0 {
		t.Errorf("auth %+v", c.Auth)
	}
	if u := c.Upstreams[3]; u.Discovery != DiscoveryDNS || u.ResolveInterval != 5*time.Second {
		t.Errorf("pool = %+v, want discovery dns every 5s", u)
	}
	if got := c.Upstreams[4].APIKey; got != "secret" {
		t.Errorf("vllm api key = %q, want it from $VLLM_API_KEY", got)
	}
	if c.Health.Interval != 5*time.Second || c.Health.Cooldown != 10*time.Second || c.Routing.PrefixBytes != 1024 ||
		c.Routing.AffinityFactor != 2 || c.Routing.MaxAttempts != 3 {
		t.Errorf("health %+v routing %+v", c.Health, c.Routing)
	}
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig([]byte("upstreams:\n- {name: a, kind: spigot, url: 'http://h:1/', models: [m]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	u := c.Upstreams[0]
	if u.URL != "http://h:1" || u.Weight != 1 {
		t.Errorf("upstream = %+v, want the URL without its slash and weight 1", u)
	}
	if c.Health.Interval != 5*time.Second || c.Health.Timeout != 2*time.Second || c.Routing.MaxAttempts != 3 {
		t.Errorf("defaults: health %+v routing %+v", c.Health, c.Routing)
	}
}

func TestParseConfigDiscovery(t *testing.T) {
	c, err := ParseConfig([]byte("upstreams:\n- {name: pool, kind: spigot, url: 'http://spigot-headless:8080', models: [m], discovery: dns}\n" +
		"- {name: b, kind: spigot, url: 'http://spigot-headless:8080', models: [m], discovery: dns, resolve_interval: 2s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if u := c.Upstreams[0]; u.Discovery != DiscoveryDNS || u.ResolveInterval != 5*time.Second {
		t.Errorf("upstream = %+v, want discovery dns and the default resolve_interval 5s", u)
	}
	if got := c.Upstreams[1].ResolveInterval; got != 2*time.Second {
		t.Errorf("resolve_interval = %v, want 2s", got)
	}
}

func TestParseConfigErrors(t *testing.T) {
	up := "upstreams:\n- {name: a, kind: spigot, url: 'http://h:1', models: [m]}\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"empty", "", "empty"},
		{"no upstreams", "upstreams: []\n", "no upstreams"},
		{"unknown top key", up + "listen: x\n", "field listen not found"},
		{"unknown upstream key", "upstreams:\n- {name: a, kind: spigot, url: 'http://h', models: [m], wieght: 2}\n", "field wieght not found"},
		{"unknown health key", up + "health: {intervl: 1s}\n", "field intervl not found"},
		{"bad kind", "upstreams:\n- {name: a, kind: vllm, url: 'http://h', models: [m]}\n", `kind "vllm"`},
		{"no kind", "upstreams:\n- {name: a, url: 'http://h', models: [m]}\n", "kind is required"},
		{"no name", "upstreams:\n- {kind: spigot, url: 'http://h', models: [m]}\n", "name is required"},
		{"dup name", "upstreams:\n- {name: a, kind: spigot, url: 'http://h', models: [m]}\n- {name: a, kind: tgi, url: 'http://g', models: [m]}\n", "used twice"},
		{"bad url", "upstreams:\n- {name: a, kind: spigot, url: 'h:1', models: [m]}\n", "not an http(s) URL"},
		{"no models", "upstreams:\n- {name: a, kind: spigot, url: 'http://h'}\n", "models is required"},
		{"negative weight", "upstreams:\n- {name: a, kind: spigot, url: 'http://h', models: [m], weight: -1}\n", "negative"},
		{"bad duration", up + "health: {interval: soon}\n", "time.Duration"},
		{"negative factor", up + "routing: {affinity_factor: -1}\n", "affinity_factor"},
		{"two keys", "upstreams:\n- {name: a, kind: spigot, url: 'http://h', models: [m], api_key: x, api_key_env: Y}\n", "not both"},
		{"two documents", up + "---\n" + up, "more than one"},
		{"not a map", "- 1\n", "cannot unmarshal"},
		{"slash in name", "upstreams:\n- {name: a/b, kind: spigot, url: 'http://h', models: [m]}\n", "slash"},
		{"bad discovery", "upstreams:\n- {name: a, kind: spigot, url: 'http://h', models: [m], discovery: srv}\n", `discovery "srv"`},
		{"resolve_interval without dns", "upstreams:\n- {name: a, kind: spigot, url: 'http://h', models: [m], resolve_interval: 1s}\n", "needs discovery: dns"},
		{"dns with https", "upstreams:\n- {name: a, kind: spigot, url: 'https://h', models: [m], discovery: dns}\n", "needs an http url"},
		{"dns with an address", "upstreams:\n- {name: a, kind: spigot, url: 'http://10.0.0.1:80', models: [m], discovery: dns}\n", "not the address"},
		{"advertise without a secret", up + "streams: {advertise: 'http://10.0.0.1:8080'}\n", "needs a secret"},
		{"short secret", up + "streams: {advertise: 'http://10.0.0.1:8080', secret: short}\n", "at least 16 bytes"},
		{"advertise not a base URL", up + "streams: {advertise: 'http://10.0.0.1:8080/v1', secret: 0123456789abcdef}\n", "not an http(s) base URL"},
		{"advertise without scheme", up + "streams: {advertise: '10.0.0.1:8080', secret: 0123456789abcdef}\n", "not an http(s) base URL"},
		{"advertise with an unset variable", up + "streams: {advertise: 'http://${SPIGOT_TEST_UNSET_IP}:8080', secret: 0123456789abcdef}\n", "not an http(s) base URL"},
		{"secret twice", up + "streams: {secret: 0123456789abcdef, secret_env: X}\n", "not both"},
		{"secret_env unset", up + "streams: {secret_env: SPIGOT_TEST_UNSET_SECRET}\n", "empty or not set"},
		{"bad max_memory", up + "streams: {max_memory: lots}\n", "not a size"},
		{"negative max_memory", up + "streams: {max_memory: -1}\n", "not a size"},
		{"unknown streams key", up + "streams: {resume: 1s}\n", "field resume not found"},
		{"negative resolve_interval", "upstreams:\n- {name: a, kind: spigot, url: 'http://h', models: [m], discovery: dns, resolve_interval: -1s}\n", "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseConfig = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func FuzzParseConfig(f *testing.F) {
	if data, err := os.ReadFile("example.yaml"); err == nil {
		f.Add(data)
	}
	f.Add([]byte("upstreams:\n- {name: a, kind: spigot, url: 'http://h:1', models: [m]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		if len(c.Upstreams) == 0 || c.Health.Interval <= 0 || c.Routing.MaxAttempts <= 0 {
			t.Fatalf("accepted a config without its defaults: %+v", c)
		}
		for _, u := range c.Upstreams {
			if u.Weight <= 0 || len(u.Models) == 0 || (u.Discovery == DiscoveryDNS) != (u.ResolveInterval > 0) {
				t.Fatalf("accepted upstream %+v", u)
			}
		}
	})
}

// TestStreamsConfigEnv: advertise takes ${VAR}s and secret_env its value
// from the environment given.
func TestStreamsConfigEnv(t *testing.T) {
	env := map[string]string{"POD_IP": "10.1.2.3", "S": "0123456789abcdef0123"}
	c, err := ParseConfigEnv([]byte("upstreams:\n- {name: a, kind: spigot, url: 'http://h:1', models: [m]}\n"+
		"streams: {advertise: 'http://${POD_IP}:8080/', secret_env: S}\n"), func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.Streams.Advertise != "http://10.1.2.3:8080" || c.Streams.Secret != env["S"] || c.Streams.ResumeWindow != 60*time.Second || c.Streams.MaxMemory != 64<<20 {
		t.Errorf("streams %+v", c.Streams)
	}
}
