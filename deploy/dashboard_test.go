package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/spigot-llm/spigot/engine"
	"github.com/spigot-llm/spigot/metrics"
)

// exportedMetrics returns the names of every series a replica's /metrics
// can carry (histograms as _bucket, _sum and _count), read from a registry
// the metrics package fills, and the families by type.
func exportedMetrics(t testing.TB) (series map[string]bool, families map[string]dto.MetricType) {
	t.Helper()
	reg := metrics.NewRegistry()
	m := metrics.New(reg)
	m.SetEngine(func() engine.Stats { return engine.Stats{} })
	m.Request("/v1/completions", 200) // labelled families appear once used
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series, families = map[string]bool{}, map[string]dto.MetricType{}
	for _, mf := range mfs {
		name := mf.GetName()
		families[name] = mf.GetType()
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			series[name+"_bucket"], series[name+"_sum"], series[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			series[name], series[name+"_sum"], series[name+"_count"] = true, true, true
		default:
			series[name] = true
		}
	}
	return series, families
}

// A promRef is a metric named in a PromQL expression, with the label
// matchers that follow it ("" when none).
type promRef struct {
	Name, Matchers string
}

var (
	promAggregations = map[string]bool{"sum": true, "min": true, "max": true, "avg": true, "group": true,
		"stddev": true, "stdvar": true, "count": true, "count_values": true, "bottomk": true, "topk": true,
		"quantile": true, "limitk": true, "limit_ratio": true}
	promGrouping = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true,
		"group_left": true, "group_right": true}
	promKeywords = map[string]bool{"bool": true, "and": true, "or": true, "unless": true, "offset": true,
		"atan2": true, "inf": true, "nan": true}
)

// promMetrics returns the metrics a PromQL expression (with Grafana's
// $variables) selects by name. It is a scanner, not a parser: it skips
// strings, label matchers, ranges, numbers, variables, function and
// aggregation names and grouping label lists, and reports every other
// identifier as a metric.
func promMetrics(expr string) ([]promRef, error) {
	var refs []promRef
	isIdent := func(c byte, first bool) bool {
		return c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || !first && '0' <= c && c <= '9'
	}
	// skip returns the index after the bracket that closes the one at i,
	// stepping over quoted strings.
	skip := func(i int) (int, error) {
		open := expr[i]
		closing := map[byte]byte{'{': '}', '[': ']', '(': ')'}[open]
		depth := 0
		for j := i; j < len(expr); j++ {
			switch c := expr[j]; c {
			case '"', '\'', '`':
				k := j + 1
				for k < len(expr) && expr[k] != c {
					if expr[k] == '\\' && c != '`' {
						k++
					}
					k++
				}
				if k >= len(expr) {
					return 0, fmt.Errorf("unterminated string at %d in %q", j, expr)
				}
				j = k
			case open:
				depth++
			case closing:
				if depth--; depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, fmt.Errorf("unclosed %c at %d in %q", open, i, expr)
	}
	nextNonSpace := func(i int) int {
		for i < len(expr) && (expr[i] == ' ' || expr[i] == '\t' || expr[i] == '\n') {
			i++
		}
		return i
	}
	depth := 0
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`' || c == '{' || c == '[':
			if c == '"' || c == '\'' || c == '`' {
				return nil, fmt.Errorf("string outside a label matcher at %d in %q", i, expr)
			}
			j, err := skip(i)
			if err != nil {
				return nil, err
			}
			i = j
		case c == '$':
			i++
			if i < len(expr) && expr[i] == '{' {
				j, err := skip(i)
				if err != nil {
					return nil, err
				}
				i = j
				continue
			}
			for i < len(expr) && isIdent(expr[i], false) {
				i++
			}
		case '0' <= c && c <= '9' || c == '.':
			for i < len(expr) && (isIdent(expr[i], false) || expr[i] == '.') {
				i++
			}
		case isIdent(c, true):
			j := i
			for j < len(expr) && isIdent(expr[j], false) {
				j++
			}
			word, k := expr[i:j], nextNonSpace(j)
			switch {
			case promGrouping[word]:
				if k < len(expr) && expr[k] == '(' {
					end, err := skip(k)
					if err != nil {
						return nil, err
					}
					j = end
				}
			case promKeywords[word], promAggregations[word]:
			case k < len(expr) && expr[k] == '(': // a function
			default:
				ref := promRef{Name: word}
				if k < len(expr) && expr[k] == '{' {
					end, err := skip(k)
					if err != nil {
						return nil, err
					}
					ref.Matchers, j = expr[k:end], end
				}
				refs = append(refs, ref)
			}
			i = j
		case c == '(':
			depth++
			i++
		case c == ')':
			if depth--; depth < 0 {
				return nil, fmt.Errorf("unbalanced ) at %d in %q", i, expr)
			}
			i++
		case c == '}' || c == ']':
			return nil, fmt.Errorf("unbalanced %c at %d in %q", c, i, expr)
		default:
			i++
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("unbalanced ( in %q", expr)
	}
	return refs, nil
}

func TestPromMetrics(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []promRef
		err  bool
	}{
		{`up`, []promRef{{"up", ""}}, false},
		{`histogram_quantile(0.99, sum by (le, pod) (rate(a_bucket{x="1", y=~"$pod"}[$__rate_interval])))`,
			[]promRef{{"a_bucket", `{x="1", y=~"$pod"}`}}, false},
		{`sum(rate(a_total[5m])) by (reason) / on (pod) group_left (b) c`, []promRef{{"a_total", ""}, {"c", ""}}, false},
		{`sum without (le) (x{l="}{"}) offset 5m > bool 0.5e3 and y`, []promRef{{"x", `{l="}{"}`}, {"y", ""}}, false},
		{`count(spigot_x{namespace="${namespace}"}) - 1`, []promRef{{"spigot_x", `{namespace="${namespace}"}`}}, false},
		{`sum(rate(x[5m])`, nil, true},
		{`x{a="1"`, nil, true},
		{`x{a="1}`, nil, true},
	} {
		got, err := promMetrics(tc.expr)
		if (err != nil) != tc.err || !slices.Equal(got, tc.want) {
			t.Errorf("promMetrics(%q) = %q, %v; want %q (error %v)", tc.expr, got, err, tc.want, tc.err)
		}
	}
}

// dashboard is the part of Grafana's dashboard model the test reads.
type dashboard struct {
	Title         string  `json:"title"`
	UID           string  `json:"uid"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		Expr       string      `json:"expr"`
		RefID      string      `json:"refId"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // of a collapsed row
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// dashboardExempt lists Spigot metric families the dashboard need not
// show, with the reason.
var dashboardExempt = map[string]string{}

// checkDashboard returns what is wrong with a dashboard: unknown metrics,
// selectors that ignore the $namespace and $pod variables, quantiles not
// over buckets, Spigot metrics with no panel, overlapping panels.
func checkDashboard(data []byte, series map[string]bool, families map[string]dto.MetricType) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return []error{err}
	}
	if d.Title == "" || d.UID == "" || d.SchemaVersion == 0 {
		bad("title, uid and schemaVersion must be set")
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var s string
			if err := json.Unmarshal(v.Query, &s); err != nil {
				bad("variable %s: query is neither text nor an object", v.Name)
			}
			q.Query = s
		}
		vars[v.Name] = q.Query
		if v.Type != "query" {
			continue
		}
		// label_values(SELECTOR, LABEL)
		m := regexp.MustCompile(`^label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`).FindStringSubmatch(q.Query)
		if m == nil {
			bad("variable %s: query %q is not label_values(selector, label)", v.Name, q.Query)
			continue
		}
		refs, err := promMetrics(m[1])
		if err != nil || len(refs) != 1 || !series[refs[0].Name] {
			bad("variable %s: %q does not select one Spigot metric (%v)", v.Name, m[1], err)
		}
	}
	if vars["datasource"] != "prometheus" {
		bad(`no datasource variable of type prometheus: panels use the data source "${datasource}"`)
	}
	for _, v := range []string{"namespace", "pod"} {
		if _, ok := vars[v]; !ok {
			bad("no %s variable", v)
		}
	}

	used := map[string]bool{}
	quantiles := map[string]map[string]bool{} // histogram family → quantiles shown
	ids := map[int]bool{}
	var boxes []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] {
				bad("panel id %d twice", p.ID)
			}
			ids[p.ID] = true
			if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
				bad("panel %q: gridPos %+v outside the 24-column grid", p.Title, p.GridPos)
			}
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			boxes = append(boxes, p)
			if len(p.Targets) == 0 {
				bad("panel %q: no queries", p.Title)
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				bad("panel %q: data source is not ${datasource}", p.Title)
			}
			refIDs := map[string]bool{}
			for _, tg := range p.Targets {
				if refIDs[tg.RefID] || tg.RefID == "" {
					bad("panel %q: refId %q empty or twice", p.Title, tg.RefID)
				}
				refIDs[tg.RefID] = true
				refs, err := promMetrics(tg.Expr)
				if err != nil {
					bad("panel %q: %v", p.Title, err)
					continue
				}
				if len(refs) == 0 {
					bad("panel %q: %q selects no metric", p.Title, tg.Expr)
				}
				for _, r := range refs {
					if !series[r.Name] {
						bad("panel %q: %s is not a metric Spigot exports (metrics/metrics.go)", p.Title, r.Name)
						continue
					}
					if !strings.Contains(r.Matchers, `namespace="$namespace"`) || !strings.Contains(r.Matchers, `pod=~"$pod"`) {
						bad(`panel %q: %s%s does not select namespace="$namespace" and pod=~"$pod"`, p.Title, r.Name, r.Matchers)
					}
					for _, suffix := range []string{"_bucket", "_sum", "_count", ""} {
						if base := strings.TrimSuffix(r.Name, suffix); base != r.Name || suffix == "" {
							if _, ok := families[base]; ok {
								used[base] = true
								break
							}
						}
					}
				}
				hq := regexp.MustCompile(`histogram_quantile\(\s*([0-9.]+)\s*,`).FindAllStringSubmatch(tg.Expr, -1)
				if len(hq) == 0 {
					continue
				}
				if len(hq) != 1 || len(refs) != 1 || !strings.HasSuffix(refs[0].Name, "_bucket") ||
					!regexp.MustCompile(`by \((le|[^)]*[ ,]le)[ ,)]`).MatchString(tg.Expr) {
					bad("panel %q: %q: histogram_quantile must take one _bucket series summed by le", p.Title, tg.Expr)
					continue
				}
				fam := strings.TrimSuffix(refs[0].Name, "_bucket")
				if quantiles[fam] == nil {
					quantiles[fam] = map[string]bool{}
				}
				quantiles[fam][hq[0][1]] = true
			}
		}
	}
	walk(d.Panels)
	for i, a := range boxes {
		for _, b := range boxes[:i] {
			ag, bg := a.GridPos, b.GridPos
			if ag.X < bg.X+bg.W && bg.X < ag.X+ag.W && ag.Y < bg.Y+bg.H && bg.Y < ag.Y+ag.H {
				bad("panels %q and %q overlap", a.Title, b.Title)
			}
		}
	}
	for name, typ := range families {
		if !strings.HasPrefix(name, "spigot_") {
			continue
		}
		if _, ok := dashboardExempt[name]; !ok && !used[name] {
			bad("%s has no panel (add one, or list it in dashboardExempt with the reason)", name)
		}
		if typ == dto.MetricType_HISTOGRAM && !(quantiles[name]["0.5"] && quantiles[name]["0.99"]) {
			bad("%s: the dashboard shows quantiles %v, want p50 (0.5) and p99 (0.99)", name, quantiles[name])
		}
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errs
}

func TestDashboard(t *testing.T) {
	series, families := exportedMetrics(t)
	data, err := os.ReadFile("grafana/spigot.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range checkDashboard(data, series, families) {
		t.Errorf("grafana/spigot.json: %v", err)
	}

	// The check must catch what it is for: each of these edits of the
	// real dashboard is a mistake it has to report.
	for _, tc := range []struct{ name, old, new string }{
		{"unknown metric", "spigot_engine_queued_requests{", "spigot_engine_queue_length{"},
		{"quantile not over buckets", "spigot_server_time_to_first_token_seconds_bucket", "spigot_server_time_to_first_token_seconds_sum"},
		{"selector without the pod variable", `pod=~\"$pod\"}`, `}`},
		{"p99 missing", `histogram_quantile(0.99, sum by (le) (rate(spigot_server_e2e`, `histogram_quantile(0.9, sum by (le) (rate(spigot_server_e2e`},
		{"metric without a panel", "spigot_engine_steps_total", "spigot_engine_generated_tokens_total"},
		{"unbalanced expression", "rate(spigot_engine_steps_total{", "rate(spigot_engine_steps_total){"},
	} {
		s := string(data)
		if !strings.Contains(s, tc.old) {
			t.Errorf("%s: the dashboard has no %q to change", tc.name, tc.old)
			continue
		}
		if errs := checkDashboard([]byte(strings.ReplaceAll(s, tc.old, tc.new)), series, families); len(errs) == 0 {
			t.Errorf("%s: checkDashboard found nothing wrong after replacing %q with %q", tc.name, tc.old, tc.new)
		}
	}
}
