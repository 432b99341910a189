// Package deploy holds the deployment files (a systemd unit and a
// Kubernetes DaemonSet); its tests check them without root or a cluster.
package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/collector/confmap"
	"go.yaml.in/yaml/v3"

	"github.com/xdpflow/xdpflowreceiver"
	"github.com/xdpflow/xdpflowreceiver/internal/collectortest"
)

const (
	manifestPath = "kubernetes/otelcol-xdpflow.yaml"
	unitPath     = "systemd/otelcol-xdpflow.service"
	unitConfig   = "systemd/config.yaml"
	wantImage    = "ghcr.io/xdpflow/otelcol-xdpflow:0.1.0"
)

// wantCaps are the capabilities the collector needs, no more.
var wantCaps = []string{"BPF", "NET_ADMIN", "PERFMON"}

// The parts of the Kubernetes API the manifest uses. The DaemonSet is
// decoded strictly into them, so a misspelt field fails the test.
type (
	objectMeta struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	}
	daemonSet struct {
		APIVersion string     `yaml:"apiVersion"`
		Kind       string     `yaml:"kind"`
		Metadata   objectMeta `yaml:"metadata"`
		Spec       struct {
			Selector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
			UpdateStrategy struct {
				Type          string `yaml:"type"`
				RollingUpdate struct {
					MaxUnavailable int `yaml:"maxUnavailable"`
				} `yaml:"rollingUpdate"`
			} `yaml:"updateStrategy"`
			Template struct {
				Metadata objectMeta `yaml:"metadata"`
				Spec     podSpec    `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	podSpec struct {
		HostNetwork                   bool   `yaml:"hostNetwork"`
		DNSPolicy                     string `yaml:"dnsPolicy"`
		AutomountServiceAccountToken  *bool  `yaml:"automountServiceAccountToken"`
		TerminationGracePeriodSeconds int    `yaml:"terminationGracePeriodSeconds"`
		Tolerations                   []struct {
			Operator string `yaml:"operator"`
		} `yaml:"tolerations"`
		Containers []container `yaml:"containers"`
		Volumes    []struct {
			Name      string `yaml:"name"`
			ConfigMap struct {
				Name string `yaml:"name"`
			} `yaml:"configMap"`
		} `yaml:"volumes"`
	}
	container struct {
		Name            string   `yaml:"name"`
		Image           string   `yaml:"image"`
		ImagePullPolicy string   `yaml:"imagePullPolicy"`
		Args            []string `yaml:"args"`
		Env             []struct {
			Name      string `yaml:"name"`
			Value     string `yaml:"value"`
			ValueFrom *struct {
				FieldRef struct {
					FieldPath string `yaml:"fieldPath"`
				} `yaml:"fieldRef"`
			} `yaml:"valueFrom"`
		} `yaml:"env"`
		SecurityContext struct {
			RunAsUser                *int  `yaml:"runAsUser"`
			RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
			Privileged               *bool `yaml:"privileged"`
			AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
			ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
			Capabilities             struct {
				Drop []string `yaml:"drop"`
				Add  []string `yaml:"add"`
			} `yaml:"capabilities"`
			SeccompProfile struct {
				Type string `yaml:"type"`
			} `yaml:"seccompProfile"`
		} `yaml:"securityContext"`
		Resources struct {
			Requests map[string]string `yaml:"requests"`
			Limits   map[string]string `yaml:"limits"`
		} `yaml:"resources"`
		VolumeMounts []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
			ReadOnly  bool   `yaml:"readOnly"`
		} `yaml:"volumeMounts"`
	}
	configMap struct {
		APIVersion string            `yaml:"apiVersion"`
		Kind       string            `yaml:"kind"`
		Metadata   objectMeta        `yaml:"metadata"`
		Data       map[string]string `yaml:"data"`
	}
)

// readManifest splits the manifest into its documents, by kind.
func readManifest(t *testing.T) (ds daemonSet, cm configMap, namespaces []string) {
	t.Helper()
	data, err := os.ReadFile(manifestPath)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var nds, ncm int
	for i := 0; ; i++ {
		var node yaml.Node
		if err := dec.Decode(&node); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s document %d: %v", manifestPath, i, err)
		}
		var head struct {
			Kind     string     `yaml:"kind"`
			Metadata objectMeta `yaml:"metadata"`
		}
		if err := node.Decode(&head); err != nil {
			t.Fatalf("%s document %d: %v", manifestPath, i, err)
		}
		// node.Decode is not strict; re-decode the document strictly.
		strict := func(v any) {
			var buf bytes.Buffer
			enc := yaml.NewEncoder(&buf)
			if err := enc.Encode(&node); err != nil {
				t.Fatal(err)
			}
			d := yaml.NewDecoder(&buf)
			d.KnownFields(true)
			if err := d.Decode(v); err != nil {
				t.Errorf("%s %s: %v", head.Kind, head.Metadata.Name, err)
			}
		}
		switch head.Kind {
		case "Namespace":
			namespaces = append(namespaces, head.Metadata.Name)
		case "ConfigMap":
			strict(&cm)
			ncm++
		case "DaemonSet":
			strict(&ds)
			nds++
		default:
			t.Errorf("%s: unexpected kind %q", manifestPath, head.Kind)
		}
	}
	if nds != 1 || ncm != 1 {
		t.Fatalf("%s holds %d DaemonSets and %d ConfigMaps, want one of each", manifestPath, nds, ncm)
	}
	return ds, cm, namespaces
}

func TestKubernetesManifest(t *testing.T) {
	ds, cm, namespaces := readManifest(t)
	if ds.APIVersion != "apps/v1" || cm.APIVersion != "v1" {
		t.Errorf("apiVersions: DaemonSet %q, ConfigMap %q", ds.APIVersion, cm.APIVersion)
	}
	ns := ds.Metadata.Namespace
	if ns == "" || cm.Metadata.Namespace != ns || !slices.Contains(namespaces, ns) {
		t.Errorf("DaemonSet in namespace %q, ConfigMap in %q, manifest creates %v", ns, cm.Metadata.Namespace, namespaces)
	}
	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod template's labels %v", k, v, ds.Spec.Template.Metadata.Labels)
		}
	}
	if len(ds.Spec.Selector.MatchLabels) == 0 {
		t.Error("DaemonSet has no selector")
	}

	pod := ds.Spec.Template.Spec
	if !pod.HostNetwork {
		t.Error("hostNetwork must be true: XDP attaches to the node's interfaces")
	}
	if pod.DNSPolicy != "ClusterFirstWithHostNet" {
		t.Errorf("dnsPolicy %q: a hostNetwork pod resolves the gateway Service only with ClusterFirstWithHostNet", pod.DNSPolicy)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if c.Image != wantImage {
		t.Errorf("image %q, want %q", c.Image, wantImage)
	}
	sc := c.SecurityContext
	add := slices.Sorted(slices.Values(sc.Capabilities.Add))
	if !slices.Equal(add, wantCaps) {
		t.Errorf("capabilities.add %v, want exactly %v", sc.Capabilities.Add, wantCaps)
	}
	if !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("capabilities.drop %v, want [ALL]", sc.Capabilities.Drop)
	}
	if sc.Privileged == nil || *sc.Privileged {
		t.Error("securityContext.privileged must be false")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("securityContext.allowPrivilegeEscalation must be false")
	}
	// Kubernetes gives added capabilities to UID 0 only.
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Error("securityContext.runAsUser must be 0: added capabilities are not effective for other UIDs")
	}

	// The config file the collector reads is the ConfigMap's config.yaml.
	var configArg string
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--config="); ok {
			configArg = v
		}
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		if filepath.Join(m.MountPath, "config.yaml") != configArg {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.ConfigMap.Name == cm.Metadata.Name {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Errorf("--config=%s is not config.yaml of ConfigMap %s mounted in the container", configArg, cm.Metadata.Name)
	}
	config, ok := cm.Data["config.yaml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no config.yaml", cm.Metadata.Name)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
		if e.ValueFrom != nil {
			env[e.Name] = "fieldRef:" + e.ValueFrom.FieldRef.FieldPath
		}
	}
	if env["K8S_NODE_NAME"] != "fieldRef:spec.nodeName" {
		t.Errorf("env K8S_NODE_NAME = %q, want the fieldRef spec.nodeName", env["K8S_NODE_NAME"])
	}

	conf := checkCollectorConfig(t, "ConfigMap config.yaml", []byte(config))
	if ep, _ := conf.Get("exporters::otlp_grpc::endpoint").(string); !strings.Contains(ep, ".svc") {
		t.Errorf("otlp_grpc endpoint %q is not a cluster Service name", ep)
	}
	checkNodeName(t, conf, "k8s.node.name", "${env:K8S_NODE_NAME}")
	t.Run("validate", func(t *testing.T) {
		validateWithCollector(t, []byte(config), map[string]string{"K8S_NODE_NAME": "node-1"})
	})
}

// checkCollectorConfig parses a collector configuration, checks its
// xdpflow receiver with the receiver's own validation and its pipeline
// and telemetry settings, and returns it.
func checkCollectorConfig(t *testing.T, what string, data []byte) *confmap.Conf {
	t.Helper()
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	conf := confmap.NewFromStringMap(raw)
	sub, err := conf.Sub("receivers::xdpflow")
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	cfg := xdpflowreceiver.NewFactory().CreateDefaultConfig().(*xdpflowreceiver.Config)
	if err := sub.Unmarshal(cfg); err != nil {
		t.Fatalf("%s: receivers::xdpflow: %v", what, err)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("%s: receivers::xdpflow: %v", what, err)
	}
	if lvl := conf.Get("service::telemetry::metrics::level"); lvl != "none" {
		t.Errorf("%s: service.telemetry.metrics.level = %v, want none", what, lvl)
	}
	recv, _ := conf.Get("service::pipelines::metrics::receivers").([]any)
	exp, _ := conf.Get("service::pipelines::metrics::exporters").([]any)
	if !slices.Contains(recv, any("xdpflow")) || !slices.Contains(exp, any("otlp_grpc")) {
		t.Errorf("%s: metrics pipeline receivers %v exporters %v, want xdpflow and otlp_grpc", what, recv, exp)
	}
	return conf
}

// validateWithCollector runs `otelcol-xdpflow validate` on a configuration,
// with env set, if the collector is built (it skips otherwise).
func validateWithCollector(t *testing.T, config []byte, env map[string]string) {
	bin := collectortest.Binary(t)
	for k, v := range env {
		t.Setenv(k, v)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, config, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := collectortest.Validate(bin, path); err != nil {
		t.Error(err)
	}
}

// readUnit reads a systemd unit into section -> key -> values (a key can
// be repeated).
func readUnit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	unit := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			unit[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value line in a section: %q", path, n, line)
			}
			unit[section][k] = append(unit[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return unit
}

func TestSystemdUnit(t *testing.T) {
	svc := readUnit(t, unitPath)["Service"]
	if svc == nil {
		t.Fatalf("%s has no [Service] section", unitPath)
	}
	want := []string{"CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"}
	for _, k := range []string{"AmbientCapabilities", "CapabilityBoundingSet"} {
		if v := svc[k]; len(v) != 1 || !slices.Equal(slices.Sorted(slices.Values(strings.Fields(v[0]))), want) {
			t.Errorf("%s=%v, want exactly %v", k, v, want)
		}
	}
	for k, v := range map[string]string{"NoNewPrivileges": "yes", "DynamicUser": "yes"} {
		if got := svc[k]; len(got) != 1 || got[0] != v {
			t.Errorf("%s=%v, want %s", k, got, v)
		}
	}
	if _, ok := svc["PrivateNetwork"]; ok {
		t.Error("PrivateNetwork would hide the host's interfaces")
	}
	if _, ok := svc["User"]; ok {
		t.Error("User= with DynamicUser=yes: pick one")
	}
	exec := svc["ExecStart"]
	if len(exec) != 1 || !strings.Contains(exec[0], "--config /etc/otelcol-xdpflow/config.yaml") {
		t.Errorf("ExecStart=%v does not read /etc/otelcol-xdpflow/config.yaml", exec)
	}

	data, err := os.ReadFile(unitConfig)
	if err != nil {
		t.Fatal(err)
	}
	conf := checkCollectorConfig(t, unitConfig, data)
	checkNodeName(t, conf, "host.name", "${env:HOST_NAME}")
	if env := svc["Environment"]; len(env) != 1 || env[0] != "HOST_NAME=%H" {
		t.Errorf("Environment=%v, want HOST_NAME=%%H for host.name", env)
	}
	t.Run("validate", func(t *testing.T) { validateWithCollector(t, data, map[string]string{"HOST_NAME": "host-1"}) })
}

// checkNodeName checks that the resource processor upserts key with value
// and runs in the metrics pipeline, so that nodes can be told apart.
func checkNodeName(t *testing.T, conf *confmap.Conf, key, value string) {
	t.Helper()
	attrs, _ := conf.Get("processors::resource::attributes").([]any)
	found := false
	for _, a := range attrs {
		m, _ := a.(map[string]any)
		if m["key"] == key && m["value"] == value && m["action"] == "upsert" {
			found = true
		}
	}
	if !found {
		t.Errorf("processors::resource does not upsert %s = %s: %v", key, value, attrs)
	}
	procs, _ := conf.Get("service::pipelines::metrics::processors").([]any)
	inPipeline := false
	for _, p := range procs {
		inPipeline = inPipeline || p == "resource"
	}
	if !inPipeline {
		t.Errorf("the metrics pipeline does not run the resource processor: %v", procs)
	}
}
