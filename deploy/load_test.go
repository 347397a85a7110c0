package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing/fstest"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// kinds maps apiVersion/kind to the Go type a document of that kind is
// decoded into. Core kinds use k8s.io/api's types; custom resources and
// kustomize's own files use the mirrors in crd_test.go. A kind missing
// here fails the test: add its type rather than skipping it.
var kinds = map[string]func() any{
	"v1/Namespace":                  func() any { return new(corev1.Namespace) },
	"v1/Service":                    func() any { return new(corev1.Service) },
	"v1/ConfigMap":                  func() any { return new(corev1.ConfigMap) },
	"v1/Secret":                     func() any { return new(corev1.Secret) },
	"v1/PersistentVolumeClaim":      func() any { return new(corev1.PersistentVolumeClaim) },
	"v1/ServiceAccount":             func() any { return new(corev1.ServiceAccount) },
	"apps/v1/Deployment":            func() any { return new(appsv1.Deployment) },
	"policy/v1/PodDisruptionBudget": func() any { return new(policyv1.PodDisruptionBudget) },
	"autoscaling/v2/HorizontalPodAutoscaler": func() any {
		return new(autoscalingv2.HorizontalPodAutoscaler)
	},
	"keda.sh/v1alpha1/ScaledObject":           func() any { return new(scaledObject) },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return new(serviceMonitor) },
}

// notManifests are the YAML files under deploy/ that no kustomization
// refers to, each with the test that checks it instead.
var notManifests = map[string]string{
	"prometheus-adapter/values.yaml": "Helm values for prometheus-adapter (TestPrometheusAdapterServesHPAMetrics)",
}

// strictDecode decodes one YAML document into v the way the API server's
// strict field validation does: duplicate keys, fields v's type does not
// have, and fields in the wrong case are errors, as are values of the
// wrong type.
func strictDecode(doc []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := sigsjson.UnmarshalStrict(j, v, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// An object is one decoded document.
type object struct {
	File       string // path under deploy/
	APIVersion string
	Kind       string
	Name       string
	Obj        any  // a pointer to the kind's Go type, or *deletePatch
	Delete     bool // a strategic merge patch that deletes its target
	// Nulls holds, for a Deployment, the keys of each volume set to null
	// ("volumes/NAME" → keys): in a strategic merge patch, null deletes
	// the key, which the decoded object cannot show.
	Nulls map[string][]string
}

func (o *object) String() string { return fmt.Sprintf("%s %s (%s)", o.Kind, o.Name, o.File) }

// deletePatch is a strategic merge patch "$patch: delete": only the
// target's identity.
type deletePatch struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Patch           string            `json:"$patch"`
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// blank reports whether a YAML document holds nothing but comments.
func blank(doc []byte) bool {
	for line := range strings.SplitSeq(string(doc), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			return false
		}
	}
	return true
}

// decodeManifests decodes every document of a manifest file strictly into
// its kind's type.
func decodeManifests(file string, data []byte) ([]*object, error) {
	var objs []*object
	for i, doc := range docSeparator.Split(string(data), -1) {
		if blank([]byte(doc)) {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Patch string `json:"$patch"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, i, err)
		}
		o := &object{File: file, APIVersion: head.APIVersion, Kind: head.Kind, Name: head.Metadata.Name}
		if o.Kind == "" || o.APIVersion == "" || o.Name == "" {
			return nil, fmt.Errorf("%s: document %d: apiVersion, kind and metadata.name are required", file, i)
		}
		switch {
		case head.Patch == "delete":
			o.Delete = true
			o.Obj = new(deletePatch)
		case head.Patch != "":
			return nil, fmt.Errorf("%s: document %d: $patch %q: only delete is understood", file, i, head.Patch)
		default:
			newObj, ok := kinds[o.APIVersion+"/"+o.Kind]
			if !ok {
				return nil, fmt.Errorf("%s: document %d: no Go type for %s %s: add one to kinds", file, i, o.APIVersion, o.Kind)
			}
			o.Obj = newObj()
		}
		if err := strictDecode([]byte(doc), o.Obj); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", file, o, err)
		}
		if o.Kind == "Deployment" {
			nulls, err := volumeNulls([]byte(doc))
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %w", file, o, err)
			}
			o.Nulls = nulls
		}
		objs = append(objs, o)
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("%s: no objects", file)
	}
	return objs, nil
}

// volumeNulls returns the keys set to null in each pod volume of a
// Deployment document.
func volumeNulls(doc []byte) (map[string][]string, error) {
	var d struct {
		Spec struct {
			Template struct {
				Spec struct {
					Volumes []map[string]any `json:"volumes"`
				} `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(doc, &d); err != nil {
		return nil, err
	}
	nulls := map[string][]string{}
	for _, v := range d.Spec.Template.Spec.Volumes {
		name, _ := v["name"].(string)
		for k, val := range v {
			if val == nil {
				nulls["volumes/"+name] = append(nulls["volumes/"+name], k)
			}
		}
	}
	return nulls, nil
}

// A bundle is what one kustomization or component brings: its own
// resources, patches and generated ConfigMaps.
type bundle struct {
	Dir       string
	K         *kustomization
	Resources []*object
	Patches   []*object
	Generated []*object // ConfigMaps built from configMapGenerator
}

// A tree is deploy/: the base kustomization and its components.
type tree struct {
	Base       *bundle
	Components map[string]*bundle // by directory
}

// loadTree decodes every kustomization under fsys's root and everything
// they refer to, and fails if a YAML file is referred to by none (a file
// kubectl apply -k would silently leave out).
func loadTree(fsys fs.FS) (*tree, error) {
	t := &tree{Components: map[string]*bundle{}}
	used := map[string]bool{}
	var errs []error
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || path.Base(p) != "kustomization.yaml" {
			return err
		}
		b, err := loadBundle(fsys, path.Dir(p), used)
		if err != nil {
			errs = append(errs, err)
		}
		if b == nil {
			return nil
		}
		want := "Component"
		if b.Dir == "." {
			want = "Kustomization"
			t.Base = b
		} else {
			t.Components[b.Dir] = b
		}
		if b.K.Kind != want {
			errs = append(errs, fmt.Errorf("%s: kind %s, want %s", p, b.K.Kind, want))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if t.Base == nil {
		return nil, errors.Join(append(errs, errors.New("no usable kustomization.yaml at the root"))...)
	}
	for _, dir := range t.Base.K.Components {
		if _, ok := t.Components[path.Clean(dir)]; !ok {
			errs = append(errs, fmt.Errorf("kustomization.yaml: component %s has no kustomization.yaml", dir))
		}
	}
	err = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if ext := path.Ext(p); ext != ".yaml" && ext != ".yml" {
			return nil
		}
		if used[p] || path.Base(p) == "kustomization.yaml" {
			return nil
		}
		if _, ok := notManifests[p]; !ok {
			errs = append(errs, fmt.Errorf("%s: no kustomization refers to it (add it to one, or to notManifests with the test that checks it)", p))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return t, errors.Join(errs...)
}

func loadBundle(fsys fs.FS, dir string, used map[string]bool) (*bundle, error) {
	kpath := path.Join(dir, "kustomization.yaml")
	data, err := fs.ReadFile(fsys, kpath)
	if err != nil {
		return nil, err
	}
	b := &bundle{Dir: dir, K: new(kustomization)}
	if err := strictDecode(data, b.K); err != nil {
		return nil, fmt.Errorf("%s: %w", kpath, err)
	}
	if b.K.APIVersion != "kustomize.config.k8s.io/v1beta1" && b.K.APIVersion != "kustomize.config.k8s.io/v1alpha1" {
		return nil, fmt.Errorf("%s: apiVersion %q", kpath, b.K.APIVersion)
	}
	read := func(rel string) (string, []byte, error) {
		p := path.Join(dir, rel)
		if !fs.ValidPath(p) {
			return "", nil, fmt.Errorf("%s: %s is outside deploy/", kpath, rel)
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return "", nil, fmt.Errorf("%s: %w", kpath, err)
		}
		used[p] = true
		return p, data, nil
	}
	var errs []error
	for _, r := range b.K.Resources {
		p, data, err := read(r)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		objs, err := decodeManifests(p, data)
		errs = append(errs, err)
		b.Resources = append(b.Resources, objs...)
	}
	for i, pt := range b.K.Patches {
		var objs []*object
		switch {
		case pt.Path != "" && pt.Patch != "":
			err = fmt.Errorf("%s: patch %d has both path and patch", kpath, i)
		case pt.Path != "":
			var p string
			var data []byte
			if p, data, err = read(pt.Path); err == nil {
				objs, err = decodeManifests(p, data)
			}
		default:
			objs, err = decodeManifests(fmt.Sprintf("%s (patch %d)", kpath, i), []byte(pt.Patch))
		}
		if pt.Target != nil {
			err = errors.Join(err, fmt.Errorf("%s: patch %d: targets by selector are not checked; name the target in the patch", kpath, i))
		}
		errs = append(errs, err)
		b.Patches = append(b.Patches, objs...)
	}
	for _, g := range b.K.ConfigMapGenerator {
		cm := &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{Name: g.Name}, Data: map[string]string{}}
		for _, f := range g.Files {
			key, rel, ok := strings.Cut(f, "=")
			if !ok {
				key, rel = path.Base(f), f
			}
			_, data, err := read(rel)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if _, dup := cm.Data[key]; dup {
				errs = append(errs, fmt.Errorf("%s: ConfigMap %s: key %s twice", kpath, g.Name, key))
			}
			cm.Data[key] = string(data)
		}
		for _, l := range g.Literals {
			key, val, ok := strings.Cut(l, "=")
			if !ok {
				errs = append(errs, fmt.Errorf("%s: ConfigMap %s: literal %q is not KEY=VALUE", kpath, g.Name, l))
			}
			cm.Data[key] = val
		}
		b.Generated = append(b.Generated, &object{File: kpath, APIVersion: "v1", Kind: "ConfigMap", Name: g.Name, Obj: cm})
	}
	return b, errors.Join(errs...)
}

// objects returns what the base (with no components, or with the named
// one) gives the cluster: resources and generated ConfigMaps, less what
// delete patches remove. Other patches are checked by checkPatch, not
// applied.
func (t *tree) objects(component string) ([]*object, error) {
	objs := slices.Concat(t.Base.Resources, t.Base.Generated)
	if component == "" {
		return objs, nil
	}
	c, ok := t.Components[component]
	if !ok {
		return nil, fmt.Errorf("no component %s", component)
	}
	for _, p := range c.Patches {
		i := slices.IndexFunc(objs, func(o *object) bool { return o.Kind == p.Kind && o.Name == p.Name })
		if i < 0 {
			return nil, fmt.Errorf("%s: patch target %s %s is not in the base", c.Dir, p.Kind, p.Name)
		}
		if p.Delete {
			objs = slices.Delete(slices.Clone(objs), i, i+1)
		}
	}
	return slices.Concat(objs, c.Resources, c.Generated), nil
}

// mutate returns a copy of fsys with old replaced by new in file; it fails
// unless old occurs exactly n times.
func mutate(fsys fs.FS, file, old, new string, n int) (fs.FS, error) {
	out := fstest.MapFS{}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		if p == file {
			if c := bytes.Count(data, []byte(old)); c != n {
				return fmt.Errorf("%s: %q occurs %d times, want %d", file, old, c, n)
			}
			data = bytes.ReplaceAll(data, []byte(old), []byte(new))
		}
		out[p] = &fstest.MapFile{Data: data}
		return nil
	})
	return out, err
}
