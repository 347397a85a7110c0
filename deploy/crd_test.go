package deploy

import (
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The types below mirror the schemas of files that are not core
// Kubernetes objects, so that they too are decoded strictly without
// importing their projects (KEDA, the Prometheus Operator and kustomize
// each pull in a large module graph). Each mirrors only the fields
// deploy/ uses or is likely to: a valid field missing here fails the
// decode, which is the safe direction; add it, from the source named.

// kustomization mirrors kustomize's Kustomization and Component
// (sigs.k8s.io/kustomize/api/types/kustomization.go).
type kustomization struct {
	metav1.TypeMeta    `json:",inline"`
	Metadata           *metav1.ObjectMeta `json:"metadata,omitempty"`
	Namespace          string             `json:"namespace,omitempty"`
	Resources          []string           `json:"resources,omitempty"`
	Components         []string           `json:"components,omitempty"`
	Patches            []kustPatch        `json:"patches,omitempty"`
	ConfigMapGenerator []kustGenerator    `json:"configMapGenerator,omitempty"`
	Images             []kustImage        `json:"images,omitempty"`
}

type kustPatch struct {
	Path   string      `json:"path,omitempty"`
	Patch  string      `json:"patch,omitempty"`
	Target *kustTarget `json:"target,omitempty"`
}

type kustTarget struct {
	Group              string `json:"group,omitempty"`
	Version            string `json:"version,omitempty"`
	Kind               string `json:"kind,omitempty"`
	Name               string `json:"name,omitempty"`
	Namespace          string `json:"namespace,omitempty"`
	LabelSelector      string `json:"labelSelector,omitempty"`
	AnnotationSelector string `json:"annotationSelector,omitempty"`
}

type kustGenerator struct {
	Name     string   `json:"name"`
	Behavior string   `json:"behavior,omitempty"`
	Files    []string `json:"files,omitempty"`
	Literals []string `json:"literals,omitempty"`
	Options  *struct {
		DisableNameSuffixHash bool              `json:"disableNameSuffixHash,omitempty"`
		Labels                map[string]string `json:"labels,omitempty"`
		Annotations           map[string]string `json:"annotations,omitempty"`
	} `json:"options,omitempty"`
}

type kustImage struct {
	Name    string `json:"name"`
	NewName string `json:"newName,omitempty"`
	NewTag  string `json:"newTag,omitempty"`
	Digest  string `json:"digest,omitempty"`
}

// scaledObject mirrors KEDA's keda.sh/v1alpha1 ScaledObject
// (github.com/kedacore/keda apis/keda/v1alpha1/scaledobject_types.go and
// scaletriggers_types.go).
type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              scaledObjectSpec `json:"spec"`
}

type scaledObjectSpec struct {
	ScaleTargetRef *struct {
		Name                   string `json:"name"`
		APIVersion             string `json:"apiVersion,omitempty"`
		Kind                   string `json:"kind,omitempty"`
		EnvSourceContainerName string `json:"envSourceContainerName,omitempty"`
	} `json:"scaleTargetRef"`
	PollingInterval       *int32 `json:"pollingInterval,omitempty"`
	InitialCooldownPeriod *int32 `json:"initialCooldownPeriod,omitempty"`
	CooldownPeriod        *int32 `json:"cooldownPeriod,omitempty"`
	IdleReplicaCount      *int32 `json:"idleReplicaCount,omitempty"`
	MinReplicaCount       *int32 `json:"minReplicaCount,omitempty"`
	MaxReplicaCount       *int32 `json:"maxReplicaCount,omitempty"`
	Advanced              *struct {
		HorizontalPodAutoscalerConfig *struct {
			Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
			Name     string                                         `json:"name,omitempty"`
		} `json:"horizontalPodAutoscalerConfig,omitempty"`
		RestoreToOriginalReplicaCount bool `json:"restoreToOriginalReplicaCount,omitempty"`
	} `json:"advanced,omitempty"`
	Triggers []kedaTrigger `json:"triggers"`
	Fallback *struct {
		FailureThreshold int32  `json:"failureThreshold"`
		Replicas         int32  `json:"replicas"`
		Behavior         string `json:"behavior,omitempty"`
	} `json:"fallback,omitempty"`
}

type kedaTrigger struct {
	Type              string            `json:"type"`
	Name              string            `json:"name,omitempty"`
	UseCachedMetrics  bool              `json:"useCachedMetrics,omitempty"`
	Metadata          map[string]string `json:"metadata"`
	AuthenticationRef *struct {
		Name string `json:"name"`
		Kind string `json:"kind,omitempty"`
	} `json:"authenticationRef,omitempty"`
	MetricType autoscalingv2.MetricTargetType `json:"metricType,omitempty"`
}

// kedaPrometheusMetadata are the metadata keys KEDA's prometheus scaler
// reads (pkg/scalers/prometheus_scaler.go, prometheusMetadata), and
// whether each is required.
var kedaPrometheusMetadata = map[string]bool{
	"serverAddress": true, "query": true, "threshold": true,
	"queryParameters": false, "activationThreshold": false, "namespace": false,
	"customHeaders": false, "ignoreNullValues": false, "unsafeSsl": false,
	"awsRegion": false, "timeout": false, "identityOwner": false, "authModes": false,
}

// serviceMonitor mirrors the Prometheus Operator's monitoring.coreos.com/v1
// ServiceMonitor (pkg/apis/monitoring/v1/servicemonitor_types.go).
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		JobLabel          string               `json:"jobLabel,omitempty"`
		TargetLabels      []string             `json:"targetLabels,omitempty"`
		PodTargetLabels   []string             `json:"podTargetLabels,omitempty"`
		Endpoints         []monitorEndpoint    `json:"endpoints"`
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector *struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector,omitempty"`
		SampleLimit *uint64 `json:"sampleLimit,omitempty"`
	} `json:"spec"`
}

type monitorEndpoint struct {
	Port          string              `json:"port,omitempty"`
	TargetPort    *intstr.IntOrString `json:"targetPort,omitempty"`
	Path          string              `json:"path,omitempty"`
	Scheme        string              `json:"scheme,omitempty"`
	Interval      string              `json:"interval,omitempty"`
	ScrapeTimeout string              `json:"scrapeTimeout,omitempty"`
	HonorLabels   bool                `json:"honorLabels,omitempty"`
}

// adapterValues mirrors the prometheus-community/prometheus-adapter
// chart's values.yaml (prometheus, rules) and, in rules, the adapter's
// discovery rule (sigs.k8s.io/prometheus-adapter pkg/config/config.go).
type adapterValues struct {
	Prometheus struct {
		URL  string `json:"url"`
		Port int    `json:"port"`
		Path string `json:"path,omitempty"`
	} `json:"prometheus"`
	Rules struct {
		Default  bool          `json:"default"`
		Custom   []adapterRule `json:"custom"`
		External []adapterRule `json:"external,omitempty"`
	} `json:"rules"`
}

type adapterRule struct {
	SeriesQuery   string `json:"seriesQuery"`
	SeriesFilters []struct {
		Is    string `json:"is,omitempty"`
		IsNot string `json:"isNot,omitempty"`
	} `json:"seriesFilters,omitempty"`
	Resources struct {
		Template  string `json:"template,omitempty"`
		Overrides map[string]struct {
			Group    string `json:"group,omitempty"`
			Resource string `json:"resource"`
		} `json:"overrides,omitempty"`
		Namespaced *bool `json:"namespaced,omitempty"`
	} `json:"resources"`
	Name struct {
		Matches string `json:"matches"`
		As      string `json:"as,omitempty"`
	} `json:"name"`
	MetricsQuery string `json:"metricsQuery"`
}
