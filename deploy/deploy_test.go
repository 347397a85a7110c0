package deploy

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/spigot-llm/spigot/gateway"
	"github.com/spigot-llm/spigot/hub"
)

// env is what the manifests are checked against.
type env struct {
	flags  map[string]map[string]flagKind // spigot subcommand → its flags
	series map[string]bool                // metric series a replica exports
}

func newEnv(t testing.TB) *env {
	t.Helper()
	flags, err := commandFlags("../cmd/spigot")
	if err != nil {
		t.Fatal(err)
	}
	series, _ := exportedMetrics(t)
	return &env{flags: flags, series: series}
}

// Margins the checks allow, in seconds.
const (
	grpcStopSeconds = 5  // cmd/spigot's startGRPC gives gRPC calls this long after the HTTP drain
	exitSeconds     = 10 // for the process to exit after draining
	minStartupSecs  = 300
)

// problems collects what is wrong, with the file it is in.
type problems struct{ errs []error }

func (p *problems) add(o *object, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s: %s", o, fmt.Sprintf(format, args...)))
}

// check returns what is wrong with what the base, alone or with one
// component, gives the cluster: references between objects, the
// spigot command lines, probes, security settings and the drain budget.
func check(t *tree, component string, e *env) []error {
	objs, err := t.objects(component)
	if err != nil {
		return []error{err}
	}
	var p problems
	byKind := map[string][]*object{}
	seen := map[string]bool{}
	for _, o := range objs {
		if seen[o.Kind+"/"+o.Name] {
			p.add(o, "defined twice")
		}
		seen[o.Kind+"/"+o.Name] = true
		byKind[o.Kind] = append(byKind[o.Kind], o)
	}
	find := func(kind, name string) *object {
		for _, o := range byKind[kind] {
			if o.Name == name {
				return o
			}
		}
		return nil
	}
	// deploymentsSelected returns the Deployments whose pods sel selects.
	deploymentsSelected := func(sel labels.Selector) []*object {
		var out []*object
		for _, o := range byKind["Deployment"] {
			if !sel.Empty() && sel.Matches(labels.Set(o.Obj.(*appsv1.Deployment).Spec.Template.Labels)) {
				out = append(out, o)
			}
		}
		return out
	}
	oneDeployment := func(o *object, what string, sel labels.Selector) *appsv1.Deployment {
		ds := deploymentsSelected(sel)
		if len(ds) != 1 {
			p.add(o, "%s %q selects the pods of %d Deployments (%v), want 1", what, sel, len(ds), ds)
			return nil
		}
		return ds[0].Obj.(*appsv1.Deployment)
	}
	autoscaled := map[string][]*object{} // Deployment → its autoscalers
	ns := t.Base.K.Namespace

	for _, o := range byKind["Namespace"] {
		if o.Name != ns {
			p.add(o, "the kustomization puts everything in namespace %q", ns)
		}
	}

	for _, o := range byKind["Service"] {
		s := o.Obj.(*corev1.Service)
		d := oneDeployment(o, "selector", labels.SelectorFromSet(s.Spec.Selector))
		if d == nil {
			continue
		}
		for _, port := range s.Spec.Ports {
			if containerPort(d.Spec.Template.Spec.Containers, port.TargetPort) == nil {
				p.add(o, "port %s: targetPort %s is no container port of Deployment %s", port.Name, port.TargetPort.String(), d.Name)
			}
		}
	}

	for _, o := range byKind["PodDisruptionBudget"] {
		pdb := o.Obj.(*policyv1.PodDisruptionBudget)
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil {
			p.add(o, "selector: %v", err)
			continue
		}
		oneDeployment(o, "selector", sel)
		if (pdb.Spec.MaxUnavailable == nil) == (pdb.Spec.MinAvailable == nil) {
			p.add(o, "set exactly one of maxUnavailable and minAvailable")
		}
		if pdb.Spec.MaxUnavailable != nil && pdb.Spec.MaxUnavailable.Type == intstr.Int && pdb.Spec.MaxUnavailable.IntVal < 1 {
			p.add(o, "maxUnavailable %d blocks every drain", pdb.Spec.MaxUnavailable.IntVal)
		}
	}

	for _, o := range byKind["HorizontalPodAutoscaler"] {
		h := o.Obj.(*autoscalingv2.HorizontalPodAutoscaler)
		ref := h.Spec.ScaleTargetRef
		target := find("Deployment", ref.Name)
		if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || target == nil {
			p.add(o, "scaleTargetRef %s %s %s is no Deployment here", ref.APIVersion, ref.Kind, ref.Name)
			continue
		}
		autoscaled[ref.Name] = append(autoscaled[ref.Name], o)
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 || *h.Spec.MinReplicas > h.Spec.MaxReplicas {
			p.add(o, "want 2 ≤ minReplicas ≤ maxReplicas (%d), so that a drain leaves one serving", h.Spec.MaxReplicas)
		}
		if len(h.Spec.Metrics) == 0 {
			p.add(o, "no metrics")
		}
		for _, m := range h.Spec.Metrics {
			switch {
			case m.Type == autoscalingv2.PodsMetricSourceType && m.Pods != nil:
				if !e.series[m.Pods.Metric.Name] {
					p.add(o, "metric %s is not one Spigot exports", m.Pods.Metric.Name)
				}
				if m.Pods.Target.Type != autoscalingv2.AverageValueMetricType || m.Pods.Target.AverageValue == nil || m.Pods.Target.AverageValue.Sign() <= 0 {
					p.add(o, "metric %s: want a positive AverageValue target", m.Pods.Metric.Name)
				}
			case m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource != nil:
				for _, c := range target.Obj.(*appsv1.Deployment).Spec.Template.Spec.Containers {
					if _, ok := c.Resources.Requests[m.Resource.Name]; !ok && m.Resource.Target.Type == autoscalingv2.UtilizationMetricType {
						p.add(o, "utilization of %s needs a request for it in container %s", m.Resource.Name, c.Name)
					}
				}
			default:
				p.add(o, "metric type %s is not checked: add a check for it", m.Type)
			}
		}
	}

	for _, o := range byKind["ScaledObject"] {
		so := o.Obj.(*scaledObject)
		ref := so.Spec.ScaleTargetRef
		if ref == nil || find("Deployment", ref.Name) == nil || (ref.Kind != "" && ref.Kind != "Deployment") {
			p.add(o, "scaleTargetRef %+v is no Deployment here", ref)
			continue
		}
		autoscaled[ref.Name] = append(autoscaled[ref.Name], o)
		if so.Spec.MinReplicaCount == nil || so.Spec.MaxReplicaCount == nil || *so.Spec.MinReplicaCount < 2 || *so.Spec.MinReplicaCount > *so.Spec.MaxReplicaCount {
			p.add(o, "want 2 ≤ minReplicaCount ≤ maxReplicaCount")
		}
		for _, tr := range so.Spec.Triggers {
			if tr.Type != "prometheus" {
				p.add(o, "trigger type %s is not checked: add a check for it", tr.Type)
				continue
			}
			for k := range tr.Metadata {
				if _, ok := kedaPrometheusMetadata[k]; !ok {
					p.add(o, "trigger %s: KEDA's prometheus scaler has no metadata %q", tr.Name, k)
				}
			}
			for k, required := range kedaPrometheusMetadata {
				if _, ok := tr.Metadata[k]; required && !ok {
					p.add(o, "trigger %s: metadata %q is required", tr.Name, k)
				}
			}
			if v, err := strconv.ParseFloat(tr.Metadata["threshold"], 64); err != nil || v <= 0 {
				p.add(o, "trigger %s: threshold %q is not a positive number", tr.Name, tr.Metadata["threshold"])
			}
			if u, err := url.Parse(tr.Metadata["serverAddress"]); err != nil || u.Scheme == "" || u.Host == "" {
				p.add(o, "trigger %s: serverAddress %q is not a URL", tr.Name, tr.Metadata["serverAddress"])
			}
			refs, err := promMetrics(tr.Metadata["query"])
			if err != nil || len(refs) == 0 {
				p.add(o, "trigger %s: query: %v (%d metrics)", tr.Name, err, len(refs))
			}
			for _, r := range refs {
				if !e.series[r.Name] {
					p.add(o, "trigger %s: %s is not a metric Spigot exports", tr.Name, r.Name)
				}
				if !strings.Contains(r.Matchers, fmt.Sprintf(`namespace=%q`, ns)) {
					p.add(o, "trigger %s: %s%s must select namespace %q, where the kustomization puts the replicas", tr.Name, r.Name, r.Matchers, ns)
				}
			}
		}
	}
	for name, as := range autoscaled {
		if len(as) > 1 {
			p.add(as[0], "Deployment %s has %d autoscalers (%v): they fight", name, len(as), as)
		}
	}

	for _, o := range byKind["ServiceMonitor"] {
		sm := o.Obj.(*serviceMonitor)
		sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		if err != nil {
			p.add(o, "selector: %v", err)
			continue
		}
		var svcs []*object
		for _, s := range byKind["Service"] {
			if !sel.Empty() && sel.Matches(labels.Set(s.Obj.(*corev1.Service).Labels)) {
				svcs = append(svcs, s)
			}
		}
		if len(svcs) != 1 {
			p.add(o, "selector %q selects %d Services (%v), want 1: each pod would be scraped once per Service", sel, len(svcs), svcs)
			continue
		}
		svc := svcs[0].Obj.(*corev1.Service)
		for _, ep := range sm.Spec.Endpoints {
			if !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Name == ep.Port }) {
				p.add(o, "endpoint port %q is no port of Service %s", ep.Port, svc.Name)
			}
			if ep.Path != "/metrics" {
				p.add(o, "endpoint path %q, want /metrics", ep.Path)
			}
			iv, err1 := time.ParseDuration(ep.Interval)
			to, err2 := time.ParseDuration(ep.ScrapeTimeout)
			if err1 != nil || err2 != nil || to > iv {
				p.add(o, "want interval and scrapeTimeout durations with scrapeTimeout ≤ interval (%q, %q)", ep.Interval, ep.ScrapeTimeout)
			}
		}
		for _, l := range sm.Spec.TargetLabels {
			if _, ok := svc.Labels[l]; !ok {
				p.add(o, "targetLabels: Service %s has no label %s", svc.Name, l)
			}
		}
	}

	// The replicas' served model ids, by Deployment, for the gateway's
	// upstreams.
	served := map[string]string{}
	for _, o := range byKind["Deployment"] {
		id := checkDeployment(&p, o, e, find, len(autoscaled[o.Name]) > 0, t.Base.K.Images)
		if id != "" {
			served[o.Name] = id
		}
	}
	for _, o := range byKind["Deployment"] {
		checkGateway(&p, o, find, deploymentsSelected, served, e)
	}
	if c := t.Components[component]; c != nil {
		for _, patch := range c.Patches {
			if !patch.Delete {
				checkPatch(&p, patch, find(patch.Kind, patch.Name), find)
			}
		}
	}
	return p.errs
}

// containerPort returns the container port a Service's targetPort or a
// probe's port names, or nil.
func containerPort(cs []corev1.Container, port intstr.IntOrString) *corev1.ContainerPort {
	for _, c := range cs {
		for i, cp := range c.Ports {
			if port.Type == intstr.String && cp.Name == port.StrVal || port.Type == intstr.Int && cp.ContainerPort == port.IntVal {
				return &c.Ports[i]
			}
		}
	}
	return nil
}

// command parses a container's arguments as a spigot subcommand's.
func command(c *corev1.Container, e *env) (cmd string, flags map[string]string, rest []string, err error) {
	if len(c.Command) > 0 {
		return "", nil, nil, fmt.Errorf("container %s: command is set; the image's entrypoint is spigot, give args", c.Name)
	}
	if len(c.Args) == 0 {
		return "", nil, nil, fmt.Errorf("container %s: no args (want a spigot subcommand)", c.Name)
	}
	cmd = c.Args[0]
	known, ok := e.flags[cmd]
	if !ok {
		return "", nil, nil, fmt.Errorf("container %s: spigot has no command %q", c.Name, cmd)
	}
	flags, rest, err = parseArgs(cmd, known, c.Args[1:])
	if err != nil {
		return "", nil, nil, fmt.Errorf("container %s: %w", c.Name, err)
	}
	positional := map[string]int{"serve": 0, "gateway": 0, "tokenize": 1}
	if n, ok := positional[cmd]; !ok || len(rest) != n {
		return "", nil, nil, fmt.Errorf("container %s: spigot %s: %d arguments after the flags (%q)", c.Name, cmd, len(rest), rest)
	}
	return cmd, flags, rest, nil
}

func envValue(c *corev1.Container, name string) string {
	for _, ev := range c.Env {
		if ev.Name == name {
			return ev.Value
		}
	}
	return ""
}

// mountAt returns the volume mounted at dir in c, or nil.
func mountAt(c *corev1.Container, dir string) *corev1.VolumeMount {
	for i, m := range c.VolumeMounts {
		if path.Clean(m.MountPath) == path.Clean(dir) {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

func preStopSleep(c *corev1.Container) int64 {
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		return c.Lifecycle.PreStop.Sleep.Seconds
	}
	return 0
}

// checkDeployment checks one Deployment and, if it runs spigot serve,
// returns the id of the model it serves.
func checkDeployment(p *problems, o *object, e *env, find func(kind, name string) *object, autoscaled bool, images []kustImage) (servedID string) {
	d := o.Obj.(*appsv1.Deployment)
	spec := &d.Spec.Template.Spec
	podLabels := labels.Set(d.Spec.Template.Labels)
	if sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err != nil || sel.Empty() || !sel.Matches(podLabels) {
		p.add(o, "selector does not select the template's labels (%v)", err)
	}
	if autoscaled && d.Spec.Replicas != nil {
		p.add(o, "replicas is set but an autoscaler owns the count: every apply would reset it")
	}
	for _, tsc := range spec.TopologySpreadConstraints {
		if sel, err := metav1.LabelSelectorAsSelector(tsc.LabelSelector); err != nil || sel.Empty() || !sel.Matches(podLabels) {
			p.add(o, "topologySpreadConstraints: labelSelector does not select this Deployment's pods")
		}
	}
	if a := d.Spec.Template.Annotations; a["prometheus.io/scrape"] == "true" {
		port, err := strconv.Atoi(a["prometheus.io/port"])
		if err != nil || containerPort(spec.Containers, intstr.FromInt32(int32(port))) == nil {
			p.add(o, "annotation prometheus.io/port %q is no container port", a["prometheus.io/port"])
		}
		if a["prometheus.io/path"] != "/metrics" {
			p.add(o, "annotation prometheus.io/path %q, want /metrics", a["prometheus.io/path"])
		}
	}

	// Security: what the restricted Pod Security Standard asks, and more.
	psc := spec.SecurityContext
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		p.add(o, "automountServiceAccountToken: spigot needs no API access; set false")
	}
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		p.add(o, "pod securityContext: want runAsNonRoot, a non-zero runAsUser and seccompProfile RuntimeDefault")
	}

	volumes := map[string]*corev1.Volume{}
	for i, v := range spec.Volumes {
		volumes[v.Name] = &spec.Volumes[i]
		switch {
		case v.ConfigMap != nil && find("ConfigMap", v.ConfigMap.Name) == nil:
			p.add(o, "volume %s: no ConfigMap %s", v.Name, v.ConfigMap.Name)
		case v.PersistentVolumeClaim != nil && find("PersistentVolumeClaim", v.PersistentVolumeClaim.ClaimName) == nil:
			p.add(o, "volume %s: no PersistentVolumeClaim %s", v.Name, v.PersistentVolumeClaim.ClaimName)
		}
	}
	mounted := map[string]bool{}
	imageNames := map[string]bool{}
	for _, im := range images {
		imageNames[im.Name] = true
	}
	all := slices.Concat(spec.InitContainers, spec.Containers)
	for i := range all {
		c := &all[i]
		if !imageNames[c.Image] {
			p.add(o, "container %s: image %q is not in the kustomization's images, so it cannot be set in one place", c.Name, c.Image)
		}
		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			p.add(o, "container %s: securityContext: want allowPrivilegeEscalation false, readOnlyRootFilesystem true, capabilities drop ALL", c.Name)
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := c.Resources.Requests[r]; !ok {
				p.add(o, "container %s: no %s request", c.Name, r)
			}
		}
		if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
			p.add(o, "container %s: no memory limit", c.Name)
		}
		for _, m := range c.VolumeMounts {
			if volumes[m.Name] == nil {
				p.add(o, "container %s: mounts volume %s, which the pod lacks", c.Name, m.Name)
			}
			mounted[m.Name] = true
		}
		for name, pr := range map[string]*corev1.Probe{"startup": c.StartupProbe, "readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
			if pr == nil {
				continue
			}
			if pr.HTTPGet == nil {
				p.add(o, "container %s: %s probe is not an HTTP GET", c.Name, name)
			} else if cp := containerPort([]corev1.Container{*c}, pr.HTTPGet.Port); cp == nil {
				p.add(o, "container %s: %s probe port %s is none of its ports", c.Name, name, pr.HTTPGet.Port.String())
			}
		}
	}
	for name := range volumes {
		if !mounted[name] {
			p.add(o, "volume %s is mounted by no container", name)
		}
	}

	for i := range spec.Containers {
		c := &spec.Containers[i]
		cmd, flags, _, err := command(c, e)
		if err != nil {
			p.add(o, "%v", err)
			continue
		}
		if cmd == "serve" {
			servedID = checkServe(p, o, c, flags, e)
		}
	}
	for i := range spec.InitContainers {
		if _, _, _, err := command(&spec.InitContainers[i], e); err != nil {
			p.add(o, "%v", err)
		}
	}
	return servedID
}

// checkServe checks the container that runs spigot serve, and returns the
// id of the model it serves.
// checkListen checks a command's --addr (required: the default is
// loopback) and --grpc-addr (where the command has it): beyond loopback,
// on the container ports named http and grpc.
func checkListen(p *problems, o *object, c *corev1.Container, cmd string, flags map[string]string, e *env) {
	for flag, portName := range map[string]string{"addr": "http", "grpc-addr": "grpc"} {
		if _, defined := e.flags[cmd][flag]; !defined {
			continue
		}
		addr, ok := flags[flag]
		if !ok {
			if flag == "addr" {
				p.add(o, "%s: no --addr: the default listens on 127.0.0.1, out of the probes' and Services' reach", cmd)
			}
			continue
		}
		host, port, err := net.SplitHostPort(addr)
		ip := net.ParseIP(host)
		if err != nil || host == "localhost" || ip != nil && ip.IsLoopback() {
			p.add(o, "%s --%s %s: must listen beyond the loopback interface", cmd, flag, addr)
		}
		cp := containerPort([]corev1.Container{*c}, intstr.FromString(portName))
		if n, err := strconv.Atoi(port); err != nil || cp == nil || int32(n) != cp.ContainerPort {
			p.add(o, "%s --%s %s: port is not the container port named %s", cmd, flag, addr, portName)
		}
	}
}

func checkServe(p *problems, o *object, c *corev1.Container, flags map[string]string, e *env) string {
	d := o.Obj.(*appsv1.Deployment)
	spec := &d.Spec.Template.Spec
	checkListen(p, o, c, "serve", flags, e)

	// Draining: the preStop sleep, then SIGTERM and --shutdown-timeout for
	// running streams, then gRPC's last events, then exit; all within the
	// grace period, or the kubelet kills streams that were finishing.
	drain, err := time.ParseDuration(flags["shutdown-timeout"])
	if _, ok := flags["shutdown-timeout"]; !ok || err != nil || drain <= 0 {
		p.add(o, "serve: set --shutdown-timeout, so that the grace period can be sized to it")
	}
	need := preStopSleep(c) + int64(drain.Seconds()) + exitSeconds
	if flags["grpc-addr"] != "" {
		need += grpcStopSeconds
	}
	if g := spec.TerminationGracePeriodSeconds; g == nil || *g < need {
		p.add(o, "terminationGracePeriodSeconds must be at least %d (preStop %d s + --shutdown-timeout %v + gRPC stop + exit)", need, preStopSleep(c), drain)
	}

	// Threads: one per CPU the container may use.
	threads, _ := strconv.Atoi(flags["threads"])
	req, lim := c.Resources.Requests[corev1.ResourceCPU], c.Resources.Limits[corev1.ResourceCPU]
	if threads <= 0 || req.Cmp(*resource.NewQuantity(int64(threads), resource.DecimalSI)) != 0 || lim.Cmp(req) != 0 {
		p.add(o, "serve --threads %s: want a whole number equal to the CPU request and limit (%s, %s)", flags["threads"], req.String(), lim.String())
	}
	if _, ok := flags["ctx"]; !ok {
		p.add(o, "serve: set --ctx: the model's own context can make the KV cache many times larger than the memory sized for it")
	}

	probePath := func(pr *corev1.Probe) string {
		if pr == nil || pr.HTTPGet == nil {
			return ""
		}
		return pr.HTTPGet.Path
	}
	if probePath(c.ReadinessProbe) != "/ready" || probePath(c.StartupProbe) != "/ready" || probePath(c.LivenessProbe) != "/health" {
		p.add(o, "serve: want readiness and startup probes on /ready (model loaded) and liveness on /health")
	}
	if pr := c.StartupProbe; pr != nil && int64(pr.PeriodSeconds)*int64(pr.FailureThreshold) < minStartupSecs {
		p.add(o, "serve: the startup probe allows %d s to load the model; want at least %d", pr.PeriodSeconds*pr.FailureThreshold, minStartupSecs)
	}

	model := flags["m"]
	if model == "" {
		p.add(o, "serve: no -m: the built-in demo model produces random text")
		return ""
	}
	if hub.IsRef(model) {
		// The model is fetched into $SPIGOT_CACHE by an init container that
		// mounts the same volume there, writable, with the same reference.
		cache := envValue(c, hub.EnvCache)
		m := mountAt(c, cache)
		if cache == "" || m == nil {
			p.add(o, "serve -m %s: %s must name a volume mounted in the container", model, hub.EnvCache)
			return ""
		}
		fetched := false
		for i := range spec.InitContainers {
			ic := &spec.InitContainers[i]
			_, iflags, _, err := command(ic, e)
			if err != nil || iflags["m"] != model {
				continue
			}
			im := mountAt(ic, envValue(ic, hub.EnvCache))
			if envValue(ic, hub.EnvCache) != cache || im == nil || im.Name != m.Name || im.ReadOnly {
				p.add(o, "init container %s fetches %s, but not into the server's %s=%s (volume %s)", ic.Name, model, hub.EnvCache, cache, m.Name)
			}
			fetched = true
		}
		if !fetched {
			p.add(o, "serve -m %s: no init container fetches the same reference", model)
		}
		if _, err := hub.ParseRef(model); err != nil {
			p.add(o, "serve -m: %v", err)
		}
		ref, _ := hub.ParseRef(model)
		model = ref.File
	}
	// As cmd/spigot's loadServed names it.
	return strings.TrimSuffix(strings.TrimSuffix(path.Base(model), ".gguf"), ".bin")
}

// checkGateway checks a Deployment that runs spigot gateway against its
// configuration and the replicas it routes to.
func checkGateway(p *problems, o *object, find func(kind, name string) *object, deploymentsSelected func(labels.Selector) []*object, served map[string]string, e *env) {
	d := o.Obj.(*appsv1.Deployment)
	spec := &d.Spec.Template.Spec
	for i := range spec.Containers {
		c := &spec.Containers[i]
		cmd, flags, _, err := command(c, e)
		if err != nil || cmd != "gateway" {
			continue
		}
		file := flags["config"]
		var data string
		found := false
		for _, m := range c.VolumeMounts {
			rel, ok := strings.CutPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")
			v := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
			if !ok || v < 0 || spec.Volumes[v].ConfigMap == nil {
				continue
			}
			cm := find("ConfigMap", spec.Volumes[v].ConfigMap.Name)
			if cm == nil {
				break // reported with the volumes
			}
			data, found = cm.Obj.(*corev1.ConfigMap).Data[rel]
			if !found {
				p.add(o, "gateway --config %s: ConfigMap %s has no key %s", file, cm.Name, rel)
			}
		}
		if !found {
			p.add(o, "gateway --config %s: not a key of a mounted ConfigMap", file)
			continue
		}
		cfg, err := gateway.ParseConfigEnv([]byte(data), containerEnv(p, o, c))
		if err != nil {
			p.add(o, "gateway --config %s: %v", file, err)
			continue
		}
		checkListen(p, o, c, "gateway", flags, e)
		drain, err := time.ParseDuration(flags["shutdown-timeout"])
		if _, ok := flags["shutdown-timeout"]; !ok || err != nil || drain <= 0 {
			p.add(o, "gateway: set --shutdown-timeout, so that the grace period can be sized to it")
		}
		delay, _ := time.ParseDuration(flags["drain-delay"])
		need := preStopSleep(c) + int64(delay.Seconds()) + int64(drain.Seconds()) + exitSeconds
		if g := spec.TerminationGracePeriodSeconds; g == nil || *g < need {
			p.add(o, "terminationGracePeriodSeconds must be at least %d (preStop %d s + --drain-delay %v + --shutdown-timeout %v + exit)", need, preStopSleep(c), delay, drain)
		}
		for _, u := range cfg.Upstreams {
			checkUpstream(p, o, u, find, deploymentsSelected, served)
		}
	}
}

// containerEnv returns c's environment as the gateway in it sees it:
// plain values, the pod's IP (10.0.0.1) for status.podIP, and a
// placeholder secret for a Secret's key, whose Secret must be one that
// deploy/README.md tells to create (it is not in the tree). Other sources
// are reported.
func containerEnv(p *problems, o *object, c *corev1.Container) func(string) string {
	readme, _ := os.ReadFile("README.md")
	vals := map[string]string{}
	for _, ev := range c.Env {
		switch vf := ev.ValueFrom; {
		case vf == nil:
			vals[ev.Name] = ev.Value
		case vf.FieldRef != nil && vf.FieldRef.FieldPath == "status.podIP":
			vals[ev.Name] = "10.0.0.1"
		case vf.SecretKeyRef != nil:
			ref := vf.SecretKeyRef
			if !strings.Contains(string(readme), "create secret generic "+ref.Name+" --from-literal="+ref.Key+"=") {
				p.add(o, "env %s: Secret %s (key %s) is not in the tree, and deploy/README.md does not say to create it", ev.Name, ref.Name, ref.Key)
			}
			vals[ev.Name] = "placeholder-secret-0123456789abcdef"
		default:
			p.add(o, "env %s: only values, status.podIP and Secret keys are checked: add a check for its source", ev.Name)
		}
	}
	return func(k string) string { return vals[k] }
}

// checkUpstream checks a gateway upstream that is a Service of the tree:
// the Service exists and has the URL's port; with discovery: dns it is
// headless (else its name is one address, and affinity and load see one
// upstream), without it is not (else each connection goes to whichever
// pod the name resolved to); and the models include what each replica
// Deployment behind it serves.
func checkUpstream(p *problems, o *object, u gateway.UpstreamConfig, find func(kind, name string) *object, deploymentsSelected func(labels.Selector) []*object, served map[string]string) {
	pu, err := url.Parse(u.URL)
	if err != nil {
		p.add(o, "gateway config: upstream %s: %v", u.Name, err)
		return
	}
	// spigot-headless, spigot-headless.spigot, ....svc.cluster.local
	svcName, _, _ := strings.Cut(pu.Hostname(), ".")
	so := find("Service", svcName)
	if so == nil {
		p.add(o, "gateway config: upstream %s: url %s: no Service %s", u.Name, u.URL, svcName)
		return
	}
	svc := so.Obj.(*corev1.Service)
	headless := svc.Spec.ClusterIP == corev1.ClusterIPNone
	switch {
	case u.Discovery == gateway.DiscoveryDNS && !headless:
		p.add(o, "gateway config: upstream %s: discovery: dns, but Service %s is not headless, so its name resolves to one address, not one per replica", u.Name, svcName)
	case u.Discovery != gateway.DiscoveryDNS && headless:
		p.add(o, "gateway config: upstream %s: Service %s is headless: set discovery: dns, so that each replica is an upstream", u.Name, svcName)
	}
	port := 80
	if pu.Port() != "" {
		port, _ = strconv.Atoi(pu.Port())
	}
	if !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return int(sp.Port) == port }) {
		p.add(o, "gateway config: upstream %s: Service %s has no port %d", u.Name, svcName, port)
	}
	if u.Kind != gateway.KindSpigot {
		p.add(o, "gateway config: upstream %s: kind %s, but Service %s is Spigot's (kind spigot: /ready and the queue gauges)", u.Name, u.Kind, svcName)
	}
	for _, rd := range deploymentsSelected(labels.SelectorFromSet(svc.Spec.Selector)) {
		if id, ok := served[rd.Name]; !ok || !slices.Contains(u.Models, id) {
			p.add(o, "gateway config: upstream %s: models %q, but Deployment %s serves %q", u.Name, u.Models, rd.Name, id)
		}
	}
}

// checkPatch checks a component's strategic merge patch of a Deployment's
// volumes: each patched volume exists in the target, what it now refers
// to exists, and the source it replaces is cleared with null (else the
// merge keeps both sources, which the API server rejects).
func checkPatch(p *problems, patch, target *object, find func(kind, name string) *object) {
	if target == nil {
		p.add(patch, "patches nothing in the base")
		return
	}
	pd, ok := patch.Obj.(*appsv1.Deployment)
	if !ok {
		p.add(patch, "only Deployment patches are checked: add a check for %s", patch.Kind)
		return
	}
	td := target.Obj.(*appsv1.Deployment)
	for _, v := range pd.Spec.Template.Spec.Volumes {
		i := slices.IndexFunc(td.Spec.Template.Spec.Volumes, func(tv corev1.Volume) bool { return tv.Name == v.Name })
		if i < 0 {
			p.add(patch, "volume %s is not in Deployment %s", v.Name, td.Name)
			continue
		}
		if v.PersistentVolumeClaim != nil && find("PersistentVolumeClaim", v.PersistentVolumeClaim.ClaimName) == nil {
			p.add(patch, "volume %s: no PersistentVolumeClaim %s", v.Name, v.PersistentVolumeClaim.ClaimName)
		}
		old := sourceKeys(td.Spec.Template.Spec.Volumes[i])
		cleared := patch.Nulls["volumes/"+v.Name]
		for _, k := range sourceKeys(v) {
			old = slices.DeleteFunc(old, func(o string) bool { return o == k })
		}
		for _, k := range old {
			if !slices.Contains(cleared, k) {
				p.add(patch, "volume %s: the merge keeps the base's %s beside the new source; add %s: null", v.Name, k, k)
			}
		}
	}
}

// sourceKeys returns the JSON names of a volume's sources.
func sourceKeys(v corev1.Volume) []string {
	j, _ := json.Marshal(v.VolumeSource)
	var m map[string]json.RawMessage
	json.Unmarshal(j, &m)
	return slices.Sorted(maps.Keys(m))
}

func TestManifests(t *testing.T) {
	e := newEnv(t)
	tr, err := loadTree(os.DirFS("."))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range append([]string{""}, slices.Sorted(maps.Keys(tr.Components))...) {
		name := "base"
		if c != "" {
			name = "base+" + c
		}
		t.Run(name, func(t *testing.T) {
			for _, err := range check(tr, c, e) {
				t.Error(err)
			}
		})
	}
}

// problemsIn loads a tree and checks the base and every component.
func problemsIn(fsys fs.FS, e *env) []error {
	tr, err := loadTree(fsys)
	if err != nil {
		return []error{err}
	}
	var errs []error
	for _, c := range append([]string{""}, slices.Sorted(maps.Keys(tr.Components))...) {
		errs = append(errs, check(tr, c, e)...)
	}
	return errs
}

// TestChecksCatchMistakes makes one mistake at a time in a copy of deploy/
// and expects the checks to report it.
func TestChecksCatchMistakes(t *testing.T) {
	e := newEnv(t)
	real := os.DirFS(".")
	if errs := problemsIn(real, e); len(errs) != 0 {
		t.Fatalf("deploy/ itself has problems (see TestManifests): %v", errs[0])
	}
	for _, tc := range []struct {
		name, file, old, new string
		n                    int    // occurrences of old in file
		want                 string // in the problem found
	}{
		{"misspelt field", "replica/deployment.yaml", "readinessProbe:", "readynessProbe:", 1, "readynessProbe"},
		{"gateway pod without its IP", "gateway/deployment.yaml", "            - name: POD_IP\n", "            - name: POD_ADDRESS\n", 1, "advertise"},
		{"stream secret nobody creates", "gateway/deployment.yaml", "name: spigot-gateway-streams", "name: spigot-gateway-stream", 1, "does not say to create it"},
		{"field in the wrong case", "replica/deployment.yaml", "containerPort: 9090", "containerport: 9090", 1, "containerport"},
		{"duplicate key", "replica/hpa.yaml", "  minReplicas: 3\n", "  minReplicas: 3\n  minReplicas: 4\n", 1, "minReplicas"},
		{"quantity that is not one", "replica/hpa.yaml", `averageValue: "2"`, "averageValue: two", 1, "quantities"},
		{"number where text belongs", "replica/deployment.yaml", `- "4"` + "\n            - --ctx", "- 4\n            - --ctx", 1, "cannot unmarshal number"},
		{"unknown kind", "replica/pdb.yaml", "kind: PodDisruptionBudget", "kind: PodDisruptionBudge", 1, "no Go type"},
		{"Service selects no pods", "replica/service.yaml", "    app.kubernetes.io/component: replica\n  ports", "    app.kubernetes.io/component: replicas\n  ports", 1, "selects the pods of 0"},
		{"Service targets a missing port", "gateway/service.yaml", "targetPort: http", "targetPort: web", 1, "targetPort web"},
		{"probe on a port the container lacks", "gateway/deployment.yaml", "port: http", "port: metrics", 2, "probe port metrics"},
		{"misspelt serve flag", "replica/deployment.yaml", "- --max-queue", "- --max-queues", 1, "max-queues"},
		{"drain longer than the grace period", "replica/deployment.yaml", "- 60s", "- 85s", 1, "terminationGracePeriodSeconds"},
		{"listening on loopback", "replica/deployment.yaml", "0.0.0.0:8080", "127.0.0.1:8080", 1, "loopback"},
		{"threads not the CPU request", "replica/deployment.yaml", "- --threads\n            - \"4\"", "- --threads\n            - \"8\"", 1, "--threads 8"},
		{"init container fetches another model", "replica/deployment.yaml", "            - hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q8_0.gguf\n            - --ids", "            - hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_0.gguf\n            - --ids", 1, "no init container fetches"},
		{"replica count beside an HPA", "replica/deployment.yaml", "  revisionHistoryLimit: 5", "  replicas: 3\n  revisionHistoryLimit: 5", 1, "replicas is set"},
		{"HPA targets a missing Deployment", "replica/hpa.yaml", "    name: spigot\n  minReplicas", "    name: spigot-replica\n  minReplicas", 1, "spigot-replica"},
		{"HPA on a metric Spigot lacks", "replica/hpa.yaml", "name: spigot_engine_queued_requests", "name: spigot_queue_length", 1, "spigot_queue_length"},
		{"missing ConfigMap", "gateway/deployment.yaml", "configMap:\n            name: spigot-gateway", "configMap:\n            name: spigot-gw", 1, "spigot-gw"},
		{"gateway upstream not headless", "gateway/gateway.yaml", "url: http://spigot-headless:8080", "url: http://spigot:8080", 1, "not headless"},
		{"gateway upstream headless without discovery", "gateway/gateway.yaml", "    discovery: dns\n    resolve_interval: 5s\n", "", 1, "set discovery: dns"},
		{"gateway upstream at a missing Service", "gateway/gateway.yaml", "url: http://spigot-headless:8080", "url: http://spigot-headles.spigot.svc:8080", 1, "no Service spigot-headles"},
		{"gateway upstream on a missing port", "gateway/gateway.yaml", "url: http://spigot-headless:8080", "url: http://spigot-headless:80", 1, "no port 80"},
		{"gateway routes another model", "gateway/gateway.yaml", "models: [qwen2.5-0.5b-instruct-q8_0]", "models: [qwen2.5-0.5b]", 1, "serves"},
		{"unknown key in the gateway config", "gateway/gateway.yaml", "resolve_interval: 5s", "resolve_every: 5s", 1, "field resolve_every not found"},
		{"gateway config the gateway rejects", "gateway/gateway.yaml", "kind: spigot", "kind: vllm", 1, `kind "vllm"`},
		{"gateway listens elsewhere", "gateway/deployment.yaml", "- 0.0.0.0:8080", "- 0.0.0.0:8081", 1, "container port named http"},
		{"gateway on loopback", "gateway/deployment.yaml", "            - --addr\n            - 0.0.0.0:8080\n", "", 1, "no --addr"},
		{"misspelt gateway flag", "gateway/deployment.yaml", "- --shutdown-timeout", "- --shutdown-timeot", 1, "shutdown-timeot"},
		{"gateway drain longer than the grace period", "gateway/deployment.yaml", "- 60s", "- 80s", 1, "terminationGracePeriodSeconds"},
		{"KEDA and the HPA both scale the replicas", "components/keda/delete-hpa.yaml", "  name: spigot\n", "  name: spigot-gateway\n", 1, "they fight"},
		{"KEDA query in another namespace", "components/keda/scaledobject.yaml", `namespace="spigot"`, `namespace="default"`, 1, "must select namespace"},
		{"KEDA metadata misspelt", "components/keda/scaledobject.yaml", "serverAddress:", "serverAdress:", 1, "serverAdress"},
		{"ServiceMonitor selects both Services", "components/prometheus-operator/servicemonitor-replica.yaml", "      spigot.dev/headless: \"true\"\n", "", 1, "selects 2 Services"},
		{"PVC patch keeps the emptyDir", "components/shared-model-cache/deployment-patch.yaml", "          emptyDir: null\n", "", 1, "emptyDir: null"},
		{"resource file missing", "kustomization.yaml", "  - replica/pdb.yaml\n", "  - replica/pdb.yml\n", 1, "pdb.yml"},
		{"file no kustomization names", "kustomization.yaml", "  - replica/pdb.yaml\n", "", 1, "no kustomization refers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys, err := mutate(real, tc.file, tc.old, tc.new, tc.n)
			if err != nil {
				t.Fatal(err)
			}
			errs := problemsIn(fsys, e)
			if !slices.ContainsFunc(errs, func(err error) bool { return strings.Contains(err.Error(), tc.want) }) {
				t.Errorf("after replacing %q with %q in %s: problems %v, want one saying %q", tc.old, tc.new, tc.file, errs, tc.want)
			}
		})
	}
}

// TestPrometheusAdapterServesHPAMetrics checks that each Pods metric an
// HPA scales on is produced by a rule of prometheus-adapter/values.yaml
// from a series Spigot exports, per pod.
func TestPrometheusAdapterServesHPAMetrics(t *testing.T) {
	e := newEnv(t)
	tr, err := loadTree(os.DirFS("."))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("prometheus-adapter/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range checkAdapter(data, tr, e) {
		t.Error(err)
	}
	for _, tc := range []struct{ name, old, new string }{
		{"renamed metric", "as: spigot_engine_queued_requests", "as: queued"},
		{"series Spigot lacks", "seriesQuery: 'spigot_engine_queued_requests{", "seriesQuery: 'spigot_queue{"},
		{"no pod mapping", "          pod: {resource: pod}\n", ""},
		{"misspelt field", "metricsQuery:", "metricQuery:"},
	} {
		if !strings.Contains(string(data), tc.old) {
			t.Errorf("%s: values.yaml has no %q to change", tc.name, tc.old)
			continue
		}
		if errs := checkAdapter([]byte(strings.ReplaceAll(string(data), tc.old, tc.new)), tr, e); len(errs) == 0 {
			t.Errorf("%s: checkAdapter found nothing wrong after replacing %q with %q", tc.name, tc.old, tc.new)
		}
	}
}

func checkAdapter(data []byte, tr *tree, e *env) []error {
	var v adapterValues
	if err := strictDecode(data, &v); err != nil {
		return []error{fmt.Errorf("prometheus-adapter/values.yaml: %w", err)}
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("prometheus-adapter/values.yaml: "+format, args...))
	}
	served := map[string]bool{}
	for i, r := range v.Rules.Custom {
		refs, err := promMetrics(r.SeriesQuery)
		if err != nil || len(refs) != 1 {
			bad("rule %d: seriesQuery %q must select one metric by name (%v)", i, r.SeriesQuery, err)
			continue
		}
		series := refs[0].Name
		if !e.series[series] {
			bad("rule %d: %s is not a metric Spigot exports", i, series)
		}
		for _, l := range []string{"namespace", "pod"} {
			if r.Resources.Overrides[l].Resource != l {
				bad("rule %d: resources.overrides must map label %s to resource %s, for per-pod metrics", i, l, l)
			}
		}
		for _, ph := range []string{"<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"} {
			if !strings.Contains(r.MetricsQuery, ph) {
				bad("rule %d: metricsQuery lacks %s", i, ph)
			}
		}
		re, err := regexp.Compile(r.Name.Matches)
		if err != nil || !re.MatchString(series) {
			bad("rule %d: name.matches %q does not match %s (%v)", i, r.Name.Matches, series, err)
			continue
		}
		as := r.Name.As
		if as == "" {
			as = "$0"
			if re.NumSubexp() > 0 {
				as = "$1"
			}
		}
		served[re.ReplaceAllString(series, as)] = true
	}
	for _, o := range tr.Base.Resources {
		h, ok := o.Obj.(*autoscalingv2.HorizontalPodAutoscaler)
		if !ok {
			continue
		}
		for _, m := range h.Spec.Metrics {
			if m.Pods != nil && !served[m.Pods.Metric.Name] {
				bad("no rule serves %s, which %s scales on", m.Pods.Metric.Name, o)
			}
		}
	}
	// KEDA, the alternative, should ask the same Prometheus.
	prom := fmt.Sprintf("%s:%d%s", strings.TrimSuffix(v.Prometheus.URL, "/"), v.Prometheus.Port, v.Prometheus.Path)
	for _, c := range tr.Components {
		for _, o := range c.Resources {
			if so, ok := o.Obj.(*scaledObject); ok {
				for _, tg := range so.Spec.Triggers {
					if addr := tg.Metadata["serverAddress"]; addr != prom {
						bad("Prometheus at %s, but %s asks %s", prom, o, addr)
					}
				}
			}
		}
	}
	return errs
}

// TestDockerfile checks the image against the manifests: it runs as the
// user the pods' securityContext names, with spigot as its entrypoint,
// built without cgo.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := loadTree(os.DirFS("."))
	if err != nil {
		t.Fatal(err)
	}
	df := string(data)
	user := regexp.MustCompile(`(?m)^USER (\d+):(\d+)$`).FindAllStringSubmatch(df, -1)
	if len(user) != 1 {
		t.Fatalf("Dockerfile: want one USER UID:GID line, got %q", user)
	}
	if !regexp.MustCompile(`(?m)^ENTRYPOINT \["[^"]*/spigot"\]$`).MatchString(df) {
		t.Error(`Dockerfile: want ENTRYPOINT ["/.../spigot"] (exec form), as the containers give only args`)
	}
	if !regexp.MustCompile(`(?m)^RUN CGO_ENABLED=0 go build .* \./cmd/spigot$`).MatchString(df) {
		t.Error("Dockerfile: want the binary built with CGO_ENABLED=0 from ./cmd/spigot (the runtime image has no libc)")
	}
	uid, _ := strconv.ParseInt(user[0][1], 10, 64)
	gid, _ := strconv.ParseInt(user[0][2], 10, 64)
	n := 0
	for _, o := range tr.Base.Resources {
		d, ok := o.Obj.(*appsv1.Deployment)
		if !ok {
			continue
		}
		n++
		sc := d.Spec.Template.Spec.SecurityContext
		if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != uid || sc.RunAsGroup == nil || *sc.RunAsGroup != gid {
			t.Errorf("%s: runAsUser and runAsGroup must be the image's USER %d:%d", o, uid, gid)
		}
	}
	if n == 0 {
		t.Error("no Deployments in the base")
	}
}

// TestUnreferencedFile checks that a manifest no kustomization names is
// reported: kubectl apply -k would leave it out without a word.
func TestUnreferencedFile(t *testing.T) {
	fsys, err := mutate(os.DirFS("."), "", "", "", 0) // a copy
	if err != nil {
		t.Fatal(err)
	}
	m := fsys.(fstest.MapFS)
	m["replica/networkpolicy.yaml"] = &fstest.MapFile{Data: []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: stray\n")}
	if _, err := loadTree(m); err == nil || !strings.Contains(err.Error(), "replica/networkpolicy.yaml") {
		t.Errorf("loadTree with a stray file: error %v, want one naming it", err)
	}
}

// TestBinaryHasNoKubernetesDeps checks that the Kubernetes modules these
// tests use stay out of the spigot binary.
func TestBinaryHasNoKubernetesDeps(t *testing.T) {
	gocmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(gocmd, "list", "-deps", "./cmd/spigot")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/spigot: %v", err)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/spigot-llm/spigot/server") {
		t.Fatalf("go list -deps ./cmd/spigot does not list the server package: %q", out)
	}
	for _, d := range deps {
		if strings.HasPrefix(d, "k8s.io/") || strings.HasPrefix(d, "sigs.k8s.io/") {
			t.Errorf("cmd/spigot depends on %s, which only deploy's tests should use", d)
		}
	}
}
