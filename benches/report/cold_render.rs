//! Cold renders: a Helm chart and a Kustomize overlay rendered by manifold
//! on a cache miss (the commit already fetched and its snapshot exported),
//! against the bare tool run with the same arguments on a checkout of the
//! same commit.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use manifold::grpc::proto::repository::{ManifestRequest, ManifestResponse};
use serde_json::Value;

use crate::common::{self, Client};
use crate::fixtures::GitRepo;
use crate::harness::{self, ms, ratio, Ctx, Section, Server, Stats, Target};

/// The chart's path in the repository.
const CHART_PATH: &str = "charts/web";
/// The overlay's path in the repository.
const OVERLAY_PATH: &str = "deploy/overlays/prod";
/// The namespace of the app (the request's destination namespace).
const NAMESPACE: &str = "web";
/// What the controller sends as the cluster's version.
const KUBE_VERSION: &str = "1.32";
/// The annotation manifold adds to every object (annotation tracking).
pub(crate) const TRACKING_ANNOTATION: &str = "argocd.argoproj.io/tracking-id";

/// The cluster's API versions as the controller sends them (a part of
/// a real list; helm gets each as `--api-versions`).
const API_VERSIONS: [&str; 16] = [
    "v1",
    "apps/v1",
    "batch/v1",
    "autoscaling/v1",
    "autoscaling/v2",
    "policy/v1",
    "networking.k8s.io/v1",
    "rbac.authorization.k8s.io/v1",
    "storage.k8s.io/v1",
    "apiextensions.k8s.io/v1",
    "admissionregistration.k8s.io/v1",
    "coordination.k8s.io/v1",
    "discovery.k8s.io/v1",
    "events.k8s.io/v1",
    "scheduling.k8s.io/v1",
    "monitoring.coreos.com/v1",
];

const CHART_YAML: &str = "apiVersion: v2
name: web
description: A web front end with its service, config, autoscaler and ingress
type: application
version: 1.4.2
appVersion: \"2.7.0\"
";

const VALUES_YAML: &str = "replicaCount: 3

image:
  repository: registry.example.com/shop/web
  pullPolicy: IfNotPresent
  tag: \"\"

imagePullSecrets:
- name: registry-credentials

serviceAccount:
  create: true
  annotations: {}
  name: \"\"

podAnnotations:
  prometheus.io/scrape: \"true\"
  prometheus.io/port: \"9090\"

podSecurityContext:
  fsGroup: 2000
  runAsNonRoot: true

securityContext:
  allowPrivilegeEscalation: false
  capabilities:
    drop:
    - ALL
  readOnlyRootFilesystem: true
  runAsUser: 1000

service:
  type: ClusterIP
  port: 80
  targetPort: 8080
  metricsPort: 9090

ingress:
  enabled: true
  className: nginx
  annotations:
    cert-manager.io/cluster-issuer: letsencrypt
  hosts:
  - host: shop.example.com
    paths:
    - path: /
      pathType: Prefix
  - host: www.shop.example.com
    paths:
    - path: /
      pathType: Prefix
  tls:
  - secretName: shop-tls
    hosts:
    - shop.example.com
    - www.shop.example.com

resources:
  limits:
    cpu: 500m
    memory: 512Mi
  requests:
    cpu: 100m
    memory: 128Mi

autoscaling:
  enabled: true
  minReplicas: 3
  maxReplicas: 12
  targetCPUUtilizationPercentage: 70
  targetMemoryUtilizationPercentage: 80

podDisruptionBudget:
  enabled: true
  minAvailable: 2

config:
  LOG_LEVEL: info
  LOG_FORMAT: json
  CART_SERVICE_URL: http://cart.shop.svc.cluster.local:8080
  CATALOG_SERVICE_URL: http://catalog.shop.svc.cluster.local:8080
  SESSION_TTL: 30m
  FEATURE_RECOMMENDATIONS: \"true\"

env:
- name: GOMAXPROCS
  valueFrom:
    resourceFieldRef:
      resource: limits.cpu
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name

nodeSelector:
  kubernetes.io/os: linux

tolerations:
- key: dedicated
  operator: Equal
  value: web
  effect: NoSchedule

affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            app.kubernetes.io/name: web
";

const HELPERS_TPL: &str = r#"{{/*
Expand the name of the chart.
*/}}
{{- define "web.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A default fully qualified app name, truncated at 63 characters.
*/}}
{{- define "web.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "web.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "web.labels" -}}
helm.sh/chart: {{ include "web.chart" . }}
{{ include "web.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "web.selectorLabels" -}}
app.kubernetes.io/name: {{ include "web.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "web.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "web.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}
"#;

const DEPLOYMENT_TPL: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "web.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "web.labels" . | nindent 4 }}
spec:
  {{- if not .Values.autoscaling.enabled }}
  replicas: {{ .Values.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "web.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      annotations:
        checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
        {{- with .Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      labels:
        {{- include "web.selectorLabels" . | nindent 8 }}
    spec:
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      serviceAccountName: {{ include "web.serviceAccountName" . }}
      securityContext:
        {{- toYaml .Values.podSecurityContext | nindent 8 }}
      containers:
      - name: {{ .Chart.Name }}
        securityContext:
          {{- toYaml .Values.securityContext | nindent 10 }}
        image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
        imagePullPolicy: {{ .Values.image.pullPolicy }}
        envFrom:
        - configMapRef:
            name: {{ include "web.fullname" . }}
        env:
          {{- toYaml .Values.env | nindent 10 }}
        ports:
        - name: http
          containerPort: {{ .Values.service.targetPort }}
          protocol: TCP
        - name: metrics
          containerPort: {{ .Values.service.metricsPort }}
          protocol: TCP
        livenessProbe:
          httpGet:
            path: /healthz
            port: http
          periodSeconds: 10
        readinessProbe:
          httpGet:
            path: /ready
            port: http
          periodSeconds: 5
        resources:
          {{- toYaml .Values.resources | nindent 10 }}
        volumeMounts:
        - name: tmp
          mountPath: /tmp
      volumes:
      - name: tmp
        emptyDir: {}
      {{- with .Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
"#;

const SERVICE_TPL: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: {{ include "web.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "web.labels" . | nindent 4 }}
spec:
  type: {{ .Values.service.type }}
  ports:
  - port: {{ .Values.service.port }}
    targetPort: http
    protocol: TCP
    name: http
  - port: {{ .Values.service.metricsPort }}
    targetPort: metrics
    protocol: TCP
    name: metrics
  selector:
    {{- include "web.selectorLabels" . | nindent 4 }}
"#;

const SERVICE_ACCOUNT_TPL: &str = r#"{{- if .Values.serviceAccount.create -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "web.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "web.labels" . | nindent 4 }}
  {{- with .Values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
{{- end }}
"#;

const CONFIG_MAP_TPL: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "web.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "web.labels" . | nindent 4 }}
data:
  {{- range $key, $value := .Values.config }}
  {{ $key }}: {{ $value | quote }}
  {{- end }}
"#;

const HPA_TPL: &str = r#"{{- if .Values.autoscaling.enabled }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "web.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "web.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "web.fullname" . }}
  minReplicas: {{ .Values.autoscaling.minReplicas }}
  maxReplicas: {{ .Values.autoscaling.maxReplicas }}
  metrics:
  {{- if .Values.autoscaling.targetCPUUtilizationPercentage }}
  - type: Resource
    resource:
      name: cpu
      target:
        type: Utilization
        averageUtilization: {{ .Values.autoscaling.targetCPUUtilizationPercentage }}
  {{- end }}
  {{- if .Values.autoscaling.targetMemoryUtilizationPercentage }}
  - type: Resource
    resource:
      name: memory
      target:
        type: Utilization
        averageUtilization: {{ .Values.autoscaling.targetMemoryUtilizationPercentage }}
  {{- end }}
{{- end }}
"#;

const PDB_TPL: &str = r#"{{- if .Values.podDisruptionBudget.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "web.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "web.labels" . | nindent 4 }}
spec:
  minAvailable: {{ .Values.podDisruptionBudget.minAvailable }}
  selector:
    matchLabels:
      {{- include "web.selectorLabels" . | nindent 6 }}
{{- end }}
"#;

const INGRESS_TPL: &str = r#"{{- if .Values.ingress.enabled -}}
{{- $fullName := include "web.fullname" . -}}
{{- $svcPort := .Values.service.port -}}
{{- if .Capabilities.APIVersions.Has "networking.k8s.io/v1" }}
apiVersion: networking.k8s.io/v1
{{- else }}
apiVersion: networking.k8s.io/v1beta1
{{- end }}
kind: Ingress
metadata:
  name: {{ $fullName }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "web.labels" . | nindent 4 }}
  {{- with .Values.ingress.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  ingressClassName: {{ .Values.ingress.className }}
  tls:
  {{- range .Values.ingress.tls }}
  - hosts:
    {{- range .hosts }}
    - {{ . | quote }}
    {{- end }}
    secretName: {{ .secretName }}
  {{- end }}
  rules:
  {{- range .Values.ingress.hosts }}
  - host: {{ .host | quote }}
    http:
      paths:
      {{- range .paths }}
      - path: {{ .path }}
        pathType: {{ .pathType }}
        backend:
          service:
            name: {{ $fullName }}
            port:
              number: {{ $svcPort }}
      {{- end }}
  {{- end }}
{{- end }}
"#;

const NOTES_TXT: &str = r#"The shop's web front end is at:
{{- range .Values.ingress.hosts }}
  https://{{ .host }}/
{{- end }}
"#;

/// The objects the chart renders (with ingress, autoscaling and the
/// disruption budget on).
const CHART_OBJECTS: usize = 7;

const BASE_KUSTOMIZATION: &str = "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
labels:
- pairs:
    app.kubernetes.io/name: web
    app.kubernetes.io/part-of: shop
  includeSelectors: true
resources:
- serviceaccount.yaml
- deployment.yaml
- service.yaml
- hpa.yaml
configMapGenerator:
- name: web-config
  literals:
  - LOG_LEVEL=info
  - LOG_FORMAT=json
  - SESSION_TTL=30m
";

const BASE_DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  revisionHistoryLimit: 5
  template:
    metadata:
      annotations:
        prometheus.io/scrape: \"true\"
        prometheus.io/port: \"9090\"
    spec:
      serviceAccountName: web
      securityContext:
        runAsNonRoot: true
        fsGroup: 2000
      containers:
      - name: web
        image: registry.example.com/shop/web:2.6.0
        envFrom:
        - configMapRef:
            name: web-config
        ports:
        - name: http
          containerPort: 8080
        - name: metrics
          containerPort: 9090
        livenessProbe:
          httpGet:
            path: /healthz
            port: http
        readinessProbe:
          httpGet:
            path: /ready
            port: http
        resources:
          requests:
            cpu: 100m
            memory: 128Mi
          limits:
            cpu: 500m
            memory: 512Mi
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
";

const BASE_SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  ports:
  - name: http
    port: 80
    targetPort: http
  - name: metrics
    port: 9090
    targetPort: metrics
";

const BASE_SERVICE_ACCOUNT: &str = "apiVersion: v1
kind: ServiceAccount
metadata:
  name: web
automountServiceAccountToken: false
";

const BASE_HPA: &str = "apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: web
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: web
  minReplicas: 2
  maxReplicas: 6
  metrics:
  - type: Resource
    resource:
      name: cpu
      target:
        type: Utilization
        averageUtilization: 70
";

const OVERLAY_KUSTOMIZATION: &str = "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: shop-prod
namePrefix: prod-
labels:
- pairs:
    env: prod
resources:
- ../../base
- pdb.yaml
images:
- name: registry.example.com/shop/web
  newTag: 2.7.0
replicas:
- name: web
  count: 4
configMapGenerator:
- name: web-config
  behavior: merge
  literals:
  - LOG_LEVEL=warn
  - CART_SERVICE_URL=http://prod-cart.shop-prod.svc.cluster.local:8080
patches:
- path: resources.yaml
- target:
    kind: HorizontalPodAutoscaler
    name: web
  patch: |-
    - op: replace
      path: /spec/maxReplicas
      value: 16
";

const OVERLAY_RESOURCES: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      containers:
      - name: web
        resources:
          requests:
            cpu: 250m
            memory: 256Mi
          limits:
            cpu: \"1\"
            memory: 1Gi
";

const OVERLAY_PDB: &str = "apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: web
spec:
  minAvailable: 2
  selector:
    matchLabels:
      app.kubernetes.io/name: web
";

/// The objects the overlay builds.
const OVERLAY_OBJECTS: usize = 6;

/// A repository with the chart and the overlay, committed once.
fn repository() -> (GitRepo, String) {
    let repo = GitRepo::new();
    let chart = |file: &str, text: &str| {
        repo.write(&format!("{CHART_PATH}/{file}"), text);
    };
    chart("Chart.yaml", CHART_YAML);
    chart("values.yaml", VALUES_YAML);
    chart("templates/_helpers.tpl", HELPERS_TPL);
    chart("templates/deployment.yaml", DEPLOYMENT_TPL);
    chart("templates/service.yaml", SERVICE_TPL);
    chart("templates/serviceaccount.yaml", SERVICE_ACCOUNT_TPL);
    chart("templates/configmap.yaml", CONFIG_MAP_TPL);
    chart("templates/hpa.yaml", HPA_TPL);
    chart("templates/pdb.yaml", PDB_TPL);
    chart("templates/ingress.yaml", INGRESS_TPL);
    chart("templates/NOTES.txt", NOTES_TXT);
    repo.write("deploy/base/kustomization.yaml", BASE_KUSTOMIZATION)
        .write("deploy/base/deployment.yaml", BASE_DEPLOYMENT)
        .write("deploy/base/service.yaml", BASE_SERVICE)
        .write("deploy/base/serviceaccount.yaml", BASE_SERVICE_ACCOUNT)
        .write("deploy/base/hpa.yaml", BASE_HPA)
        .write(
            &format!("{OVERLAY_PATH}/kustomization.yaml"),
            OVERLAY_KUSTOMIZATION,
        )
        .write(&format!("{OVERLAY_PATH}/resources.yaml"), OVERLAY_RESOURCES)
        .write(&format!("{OVERLAY_PATH}/pdb.yaml"), OVERLAY_PDB)
        .write("README.md", "# shop\n\nThe shop's web front end.\n");
    let sha = repo.commit("web front end: chart and overlays");
    (repo, sha)
}

/// A fresh clone of `repo` with `sha` checked out, in a directory of its
/// own (removed when dropped).
pub(crate) fn checkout(repo: &GitRepo, sha: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("bench-checkout-")
        .tempdir()
        .expect("checkout directory");
    let target = dir.path().join("repo");
    for args in [
        vec![
            "clone",
            "--quiet",
            "--no-checkout",
            repo.path().to_str().expect("UTF-8 path"),
            target.to_str().expect("UTF-8 path"),
        ],
        vec![
            "-C",
            target.to_str().expect("UTF-8 path"),
            "checkout",
            "--quiet",
            sha,
        ],
    ] {
        let status = Command::new("git")
            .args(&args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdout(Stdio::null())
            .status()
            .expect("git runs");
        assert!(status.success(), "git {args:?}: {status}");
    }
    dir
}

/// Runs `program args` in `cwd` as manifold runs a tool: environment
/// cleared but for `PATH` and `env`, stdin closed, output captured. Its
/// wall time from spawn to exit, and its stdout.
fn run_bare(
    program: &str,
    args: &[String],
    cwd: &Path,
    env: &[(String, PathBuf)],
) -> (Duration, Vec<u8>) {
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    let start = Instant::now();
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{program}: {err}"));
    let took = start.elapsed();
    assert!(
        output.status.success(),
        "{program} {args:?} in {}: {}\n{}",
        cwd.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    (took, output.stdout)
}

/// The objects of a multi-document YAML stream (empty and comment-only
/// documents skipped).
pub(crate) fn parse_stream(text: &str) -> Vec<Value> {
    let mut documents = vec![String::new()];
    for line in text.lines() {
        if line == "---" || line.starts_with("--- ") {
            documents.push(String::new());
        } else {
            let current = documents.last_mut().expect("one document");
            current.push_str(line);
            current.push('\n');
        }
    }
    documents
        .into_iter()
        .filter(|doc| {
            doc.lines().any(|line| {
                let line = line.trim();
                !line.is_empty() && !line.starts_with('#')
            })
        })
        .map(|doc| {
            serde_saphyr::from_str::<Value>(&doc)
                .unwrap_or_else(|err| panic!("tool output is not YAML ({err}):\n{doc}"))
        })
        .filter(|value| !value.is_null())
        .collect()
}

/// A manifest manifold returned, parsed, without the tracking annotation
/// it adds (and without `annotations` if that was the only one); checks
/// the annotation is there first.
pub(crate) fn untracked(manifest: &str, app_name: &str) -> Value {
    let mut value: Value = serde_json::from_str(manifest)
        .unwrap_or_else(|err| panic!("manifest is not JSON ({err}): {manifest}"));
    let metadata = value["metadata"]
        .as_object_mut()
        .unwrap_or_else(|| panic!("manifest without metadata: {manifest}"));
    let annotations = metadata
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("manifest without annotations: {manifest}"));
    let tracking = annotations
        .remove(TRACKING_ANNOTATION)
        .unwrap_or_else(|| panic!("manifest without {TRACKING_ANNOTATION}: {manifest}"));
    assert!(
        tracking
            .as_str()
            .is_some_and(|id| id.starts_with(&format!("{app_name}:"))),
        "tracking id {tracking} is not for app {app_name}"
    );
    if annotations.is_empty() {
        metadata.remove("annotations");
    }
    value
}

/// Asserts that manifold's answer is the tool's output plus tracking.
fn check_same(response: &ManifestResponse, tool_stdout: &[u8], app_name: &str, what: &str) {
    let expected = parse_stream(&String::from_utf8_lossy(tool_stdout));
    let got: Vec<Value> = response
        .manifests
        .iter()
        .map(|m| untracked(m, app_name))
        .collect();
    let key = |v: &Value| {
        format!(
            "{}/{}/{}",
            v["apiVersion"].as_str().unwrap_or_default(),
            v["kind"].as_str().unwrap_or_default(),
            v["metadata"]["name"].as_str().unwrap_or_default()
        )
    };
    let mut expected_sorted = expected.clone();
    expected_sorted.sort_by_key(key);
    let mut got_sorted = got.clone();
    got_sorted.sort_by_key(key);
    assert_eq!(
        got_sorted.iter().map(key).collect::<Vec<_>>(),
        expected_sorted.iter().map(key).collect::<Vec<_>>(),
        "{what}: manifold and the bare tool disagree on the objects"
    );
    for (got, expected) in got_sorted.iter().zip(&expected_sorted) {
        assert_eq!(
            got,
            expected,
            "{what}: manifold and the bare tool disagree on {}",
            key(expected)
        );
    }
}

/// One of the two apps.
struct App {
    /// "Helm chart" or "Kustomize overlay".
    label: &'static str,
    short: &'static str,
    source_type: &'static str,
    path: &'static str,
    objects: usize,
    program: &'static str,
}

const APPS: [App; 2] = [
    App {
        label: "Helm chart",
        short: "helm",
        source_type: "Helm",
        path: CHART_PATH,
        objects: CHART_OBJECTS,
        program: "helm",
    },
    App {
        label: "Kustomize overlay",
        short: "kustomize",
        source_type: "Kustomize",
        path: OVERLAY_PATH,
        objects: OVERLAY_OBJECTS,
        program: "kustomize",
    },
];

impl App {
    /// The environment manifold gives the tool, under `dir`: for helm a
    /// home (and config directory) new to this render, cache and data
    /// directories shared by all renders; nothing for kustomize (manifold
    /// adds Argo CD's build variables, which it does not read).
    fn env(&self, dir: &Path, render: &str) -> Vec<(String, PathBuf)> {
        if self.short != "helm" {
            return Vec::new();
        }
        let home = dir.join("homes").join(render).join("home");
        std::fs::create_dir_all(&home).expect("helm home");
        let shared = dir.join("helm");
        vec![
            ("HOME".into(), home.clone()),
            ("HELM_CONFIG_HOME".into(), home.join("config")),
            ("XDG_CONFIG_HOME".into(), home.join("config")),
            ("HELM_CACHE_HOME".into(), shared.join("cache")),
            ("XDG_CACHE_HOME".into(), shared.join("cache")),
            ("HELM_DATA_HOME".into(), shared.join("data")),
            ("XDG_DATA_HOME".into(), shared.join("data")),
        ]
    }

    fn request(&self, url: &str, sha: &str, app_name: &str) -> ManifestRequest {
        let mut request = common::manifest_request(url, self.path, sha);
        request.app_name = app_name.to_string();
        request.namespace = NAMESPACE.to_string();
        request.kube_version = KUBE_VERSION.to_string();
        request.api_versions = API_VERSIONS.iter().map(|v| v.to_string()).collect();
        request
    }

    /// The arguments manifold gives the tool for `app_name` (from
    /// src/render/helm.rs and kustomize.rs), the directory it runs in,
    /// and the command line it reports.
    fn bare_command(&self, checkout: &Path, app_name: &str) -> (Vec<String>, PathBuf, String) {
        match self.short {
            "helm" => {
                let mut args: Vec<String> = [
                    "template",
                    ".",
                    "--name-template",
                    app_name,
                    "--namespace",
                    NAMESPACE,
                    "--kube-version",
                    KUBE_VERSION,
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                for api in API_VERSIONS {
                    args.extend(["--api-versions".to_string(), api.to_string()]);
                }
                args.push("--include-crds".into());
                let shown = format!("helm {}", args.join(" "));
                (args, checkout.join(self.path), shown)
            }
            _ => {
                let dir = checkout.join(self.path);
                let args = vec!["build".to_string(), dir.to_string_lossy().into_owned()];
                let shown = format!("kustomize build ./{}", self.path);
                (args, checkout.to_path_buf(), shown)
            }
        }
    }
}

/// What one app's timed loop found.
struct Measured {
    manifold: Stats,
    bare: Stats,
    /// Per request, the time manifold itself reports for its render step
    /// (`manifold_render_duration_seconds`: the tool run and the parse of
    /// its output).
    render_step: Stats,
    /// Per request, the rest of manifold's time (total minus render step).
    outside: Stats,
    bytes: usize,
}

fn render_step_totals(server: &Server, source_type: &str) -> (f64, f64) {
    let metrics = server.metrics();
    let labels = [("source_type", source_type)];
    (
        harness::metric_sum(&metrics, "manifold_render_duration_seconds_sum", &labels),
        harness::metric_sum(&metrics, "manifold_render_duration_seconds_count", &labels),
    )
}

async fn generate(client: &Client, request: ManifestRequest) -> (ManifestResponse, Duration) {
    let mut client = client.clone();
    let start = Instant::now();
    let response = client
        .generate_manifest(request)
        .await
        .unwrap_or_else(|status| panic!("GenerateManifest failed: {status}"))
        .into_inner();
    (response, start.elapsed())
}

pub async fn run(ctx: &Ctx) -> Section {
    let iterations = ctx.pick(6, 30);
    let (repo, sha) = repository();
    let url = repo.url();
    let checkout_dir = checkout(&repo, &sha);
    let checkout = checkout_dir.path().join("repo");

    let server = Server::start(&[]);
    let client = server.client().await;

    // Untimed: fetch the commit, export its snapshot, and run each tool
    // once both ways; every answer is checked against the bare tool.
    for app in &APPS {
        let name = format!("warmup-{}", app.short);
        let (response, _) = generate(&client, app.request(&url, &sha, &name)).await;
        let (args, cwd, shown) = app.bare_command(&checkout, &name);
        let env = app.env(checkout_dir.path(), &name);
        let (_, stdout) = run_bare(app.program, &args, &cwd, &env);
        assert_eq!(response.source_type, app.source_type);
        assert_eq!(response.revision, sha);
        assert_eq!(
            response.commands.last().map(String::as_str),
            Some(shown.as_str()),
            "{}: manifold ran another command than the baseline",
            app.label
        );
        assert_eq!(response.manifests.len(), app.objects, "{}", app.label);
        check_same(&response, &stdout, &name, app.label);
    }
    let metrics_before = server.metrics();
    let exported_before = harness::metric_sum(
        &metrics_before,
        "manifold_snapshot_exported_files_total",
        &[],
    );
    let rendered_before = harness::metric_sum(
        &metrics_before,
        "manifold_manifest_answers_total",
        &[("served", "rendered")],
    );

    let mut manifold_times: Vec<Vec<Duration>> = vec![Vec::new(); APPS.len()];
    let mut bare_times: Vec<Vec<Duration>> = vec![Vec::new(); APPS.len()];
    let mut steps: Vec<Vec<Duration>> = vec![Vec::new(); APPS.len()];
    let mut outside: Vec<Vec<Duration>> = vec![Vec::new(); APPS.len()];
    let mut bytes = vec![0usize; APPS.len()];
    for i in 0..iterations {
        for (a, app) in APPS.iter().enumerate() {
            // A name no request had: a new cache key, and another release
            // name or tracking id in the output.
            let name = format!("cold-{}-{i}", app.short);
            let request = app.request(&url, &sha, &name);
            let (args, cwd, _) = app.bare_command(&checkout, &name);
            let env = app.env(checkout_dir.path(), &name);
            let (step_sum, step_count) = render_step_totals(&server, app.source_type);
            // Alternate which goes first.
            let ((response, took), (bare_took, stdout)) = if (i + a) % 2 == 0 {
                let answer = generate(&client, request).await;
                (answer, run_bare(app.program, &args, &cwd, &env))
            } else {
                let bare = run_bare(app.program, &args, &cwd, &env);
                (generate(&client, request).await, bare)
            };
            assert_eq!(response.source_type, app.source_type);
            assert_eq!(response.revision, sha);
            assert_eq!(response.manifests.len(), app.objects, "{}", app.label);
            check_same(&response, &stdout, &name, app.label);
            let (sum, count) = render_step_totals(&server, app.source_type);
            assert_eq!(
                count - step_count,
                1.0,
                "{}: one render per request",
                app.label
            );
            let step = Duration::from_secs_f64(sum - step_sum);
            steps[a].push(step);
            outside[a].push(took.saturating_sub(step));
            bytes[a] = response.manifests.iter().map(String::len).sum();
            manifold_times[a].push(took);
            bare_times[a].push(bare_took);
        }
    }

    let metrics_after = server.metrics();
    let exported_after = harness::metric_sum(
        &metrics_after,
        "manifold_snapshot_exported_files_total",
        &[],
    );
    let rendered_after = harness::metric_sum(
        &metrics_after,
        "manifold_manifest_answers_total",
        &[("served", "rendered")],
    );
    assert_eq!(
        exported_after, exported_before,
        "a timed render exported a snapshot"
    );
    assert_eq!(
        (rendered_after - rendered_before) as usize,
        iterations * APPS.len(),
        "every timed request must be rendered (a cache miss)"
    );
    let measured: Vec<Measured> = (0..APPS.len())
        .map(|a| Measured {
            manifold: Stats::of(manifold_times[a].clone()),
            bare: Stats::of(bare_times[a].clone()),
            render_step: Stats::of(steps[a].clone()),
            outside: Stats::of(outside[a].clone()),
            bytes: bytes[a],
        })
        .collect();
    server.stop().await;

    section(ctx, iterations, &measured)
}

/// `a - b` in milliseconds with its sign.
fn signed_ms(a: Duration, b: Duration) -> String {
    if a >= b {
        format!("+{}", ms(a - b))
    } else {
        format!("−{}", ms(b - a))
    }
}

fn tool_name(app: &App) -> &'static str {
    if app.short == "helm" {
        "helm template"
    } else {
        "kustomize build"
    }
}

fn section(ctx: &Ctx, iterations: usize, measured: &[Measured]) -> Section {
    const TARGET: f64 = 1.15;
    let mut body = String::new();
    let _ = writeln!(
        body,
        "**What it measures.** The time of one `GenerateManifest` that manifold has to render \
         (a cache miss) for a Helm chart and for a Kustomize overlay, against running the bare \
         tool on the same files: the same program, the same arguments (checked against the \
         command line manifold reports in the response's `commands`), the same working \
         directory, an environment cleared as manifold clears it, on a checkout of the same \
         commit. Manifold's time is from sending the request to the decoded response, over \
         gRPC on loopback; the tool's is from spawn to exit. The repository is already fetched \
         and the commit's snapshot already exported (one untimed request per app first): what \
         is left is what a render pays once the tree is on disk.\n"
    );
    let _ = writeln!(
        body,
        "Setup: one commit holding a chart (`{CHART_PATH}`: Deployment, Service, \
         ServiceAccount, ConfigMap, HorizontalPodAutoscaler, PodDisruptionBudget and Ingress \
         from helpers, ranges and a config checksum; {CHART_OBJECTS} objects) and an overlay \
         (`{OVERLAY_PATH}` over `deploy/base`: namespace, name prefix, labels with selectors, \
         an image tag, replicas, a merged ConfigMap generator, a strategic-merge and a JSON \
         patch; {OVERLAY_OBJECTS} objects). The requests are the controller's: annotation \
         tracking, destination namespace `{NAMESPACE}`, Kubernetes {KUBE_VERSION} and {} API \
         versions (so helm gets `--kube-version` and `--api-versions`), the commit by its full \
         SHA. {iterations} iterations per app; each sends a request under an app name no \
         request had (a new cache key, and a release name and tracking id of its own) and runs \
         the tool with that name, alternating which of the two goes first. `/metrics` confirms \
         that every timed request was rendered and that no snapshot was exported while timing; \
         read after each request, its `manifold_render_duration_seconds` splits manifold's \
         time into the render step (spawning the tool, waiting for it, parsing its output) \
         and the rest. Every answer is compared with the tool's output: the same objects, \
         equal field for field once manifold's tracking annotation is removed.\n",
        API_VERSIONS.len()
    );
    let mut rows = Vec::new();
    let mut split_rows = Vec::new();
    let mut targets = Vec::new();
    let mut readings = Vec::new();
    for (app, m) in APPS.iter().zip(measured) {
        let r = m.manifold.median().as_secs_f64() / m.bare.median().as_secs_f64();
        let min_ratio = m.manifold.min().as_secs_f64() / m.bare.min().as_secs_f64();
        rows.push(vec![
            app.label.to_string(),
            "manifold, cold `GenerateManifest`".into(),
            ms(m.manifold.median()),
            ms(m.manifold.quantile(0.9)),
            ms(m.manifold.min()),
            ms(m.manifold.max()),
        ]);
        rows.push(vec![
            app.label.to_string(),
            format!("bare `{}`", tool_name(app)),
            ms(m.bare.median()),
            ms(m.bare.quantile(0.9)),
            ms(m.bare.min()),
            ms(m.bare.max()),
        ]);
        split_rows.push(vec![
            app.label.to_string(),
            ms(m.render_step.median()),
            ms(m.outside.median()),
            ms(m.outside.min()),
            ms(m.outside.max()),
            format!("{} B", m.bytes),
        ]);
        let met = r <= TARGET;
        targets.push(Target::new(
            "Cold render",
            &format!("{} / bare `{}` (medians)", app.label, tool_name(app)),
            ratio(r, 1.0),
            "≤ 1.15×",
            Some(met),
        ));
        let verdict = if met {
            format!("the target (≤ {TARGET:.2}×) is met")
        } else {
            format!(
                "the target (≤ {TARGET:.2}×) is **missed by {:.0}%**",
                (r / TARGET - 1.0) * 100.0
            )
        };
        // The render step is the tool run plus microseconds of
        // bookkeeping: within a tenth of the tool's own time, it says the
        // tool costs the same started from manifold as from here.
        let step_gap = m.render_step.median().as_secs_f64() / m.bare.median().as_secs_f64() - 1.0;
        let step_reading = if step_gap.abs() <= 0.1 {
            "within a tenth of the bare tool's: the tool costs the same started from manifold \
             as from here"
                .to_string()
        } else if step_gap < 0.0 {
            "below the bare tool's: the difference is the machine's noise, not manifold".to_string()
        } else {
            format!(
                "{:.0}% above the bare tool's; the fastest runs (ratio {}) say how much of that \
                 is the machine's noise",
                step_gap * 100.0,
                ratio(min_ratio, 1.0)
            )
        };
        readings.push(format!(
            "- **{}**: {} against {} for the bare tool (medians), **{}**: {verdict} \
             ({} per render; the ratio of the fastest runs is {}). Manifold's render step \
             took {} (median), {step_reading}. The rest of the request (gRPC both ways, \
             resolving the request to the snapshot and its content address, the override-file \
             and symlink checks, tracking annotations, JSON for {} bytes of manifests) took {}.",
            app.label,
            ms(m.manifold.median()),
            ms(m.bare.median()),
            ratio(r, 1.0),
            signed_ms(m.manifold.median(), m.bare.median()),
            ratio(min_ratio, 1.0),
            ms(m.render_step.median()),
            m.bytes,
            ms(m.outside.median()),
        ));
    }
    body.push_str(&harness::table(
        &["app", "run", "median", "p90", "min", "max"],
        &rows,
    ));
    body.push('\n');
    let _ = writeln!(body, "Manifold's time, split by its own metrics:\n");
    body.push_str(&harness::table(
        &[
            "app",
            "render step (median)",
            "rest of the request (median)",
            "rest (min)",
            "rest (max)",
            "response manifests",
        ],
        &split_rows,
    ));
    body.push('\n');
    let _ = writeln!(body, "**Reading it.**\n");
    for reading in readings {
        let _ = writeln!(body, "{reading}");
    }
    let _ = writeln!(
        body,
        "\nThe tool's process dominates both sides: helm and kustomize (here `kubectl \
         kustomize` behind a shim) are Go binaries whose start alone is tens of milliseconds, \
         and manifold starts exactly one of them per render, in the snapshot itself, with no \
         copy of the chart or overlay (neither needs one: no dependencies to build, no \
         overrides to write). What manifold adds around it is {} (the largest median of the \
         rest above). The two run in turns on a 2-core machine where other builds ran at \
         times, so single samples move by more than that; the medians over {iterations} turns \
         are what is compared{}.",
        ms(measured
            .iter()
            .map(|m| m.outside.median())
            .max()
            .unwrap_or_default()),
        if ctx.mode == harness::Mode::Quick {
            " (quick mode: few turns, a rough figure)"
        } else {
            ""
        }
    );
    Section {
        title: "Cold renders: a Helm chart and a Kustomize overlay".into(),
        body,
        targets,
        charts: Vec::new(),
    }
}
