//! Memory: the server's RSS idle, and under 64 concurrent cold renders
//! (Helm charts, Kustomize overlays, Directory apps) sent at once on one
//! connection, with the RSS of the helm / kustomize / git processes it
//! runs meanwhile.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use manifold::grpc::proto::repository::{ManifestRequest, ManifestResponse};
use serde_json::Value;

use crate::common::{self, Client};
use crate::fixtures::GitRepo;
use crate::harness::{
    metric_sum, mib, secs, status_kib, table, Ctx, Peaks, Section, Server, Target,
};

/// Apps of each kind; 64 in all.
const HELM_APPS: usize = 24;
const KUSTOMIZE_APPS: usize = 24;
const DIRECTORY_APPS: usize = 16;
const APPS: usize = HELM_APPS + KUSTOMIZE_APPS + DIRECTORY_APPS;
/// ConfigMaps of each Directory app.
const DIRECTORY_FILES: usize = 4;
/// How often the sampler reads `/proc`.
const SAMPLE_EVERY: Duration = Duration::from_millis(5);

/// How long after the burst the server counts as idle again: past tokio's
/// 10 s keep-alive of idle blocking threads.
const SETTLE: Duration = Duration::from_secs(11);

const IDLE_TARGET_KIB: u64 = 20 * 1024;
const LOAD_TARGET_KIB: u64 = 150 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Helm,
    Kustomize,
    Directory,
}

/// One of the 64 apps.
struct App {
    kind: Kind,
    /// Its number, 0..64, and its name `app-NN`.
    n: usize,
    path: String,
}

impl App {
    fn name(&self) -> String {
        format!("app-{:02}", self.n)
    }

    fn replicas(&self) -> i64 {
        (self.n % 4 + 1) as i64
    }
}

fn apps() -> Vec<App> {
    (0..APPS)
        .map(|n| {
            let (kind, path) = if n < HELM_APPS {
                (Kind::Helm, format!("charts/app-{n:02}"))
            } else if n < HELM_APPS + KUSTOMIZE_APPS {
                (Kind::Kustomize, format!("overlays/app-{n:02}"))
            } else {
                (Kind::Directory, format!("plain/app-{n:02}"))
            };
            App { kind, n, path }
        })
        .collect()
}

const CHART: &str = "apiVersion: v2
name: @NAME@
description: Chart of @NAME@
version: 0.1.@N@
appVersion: \"1.@N@\"
";

const VALUES: &str = "replicaCount: @REPLICAS@
image:
  repository: registry.example.com/@NAME@
  tag: \"1.@N@\"
port: 80@N@
settings:
  owner: team-@TEAM@
  tier: backend
resources:
  requests:
    cpu: 100m
    memory: 128Mi
";

const HELPERS: &str = "{{- define \"app.labels\" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
";

const DEPLOYMENT_TEMPLATE: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
  labels:
    {{- include \"app.labels\" . | nindent 4 }}
spec:
  replicas: {{ .Values.replicaCount }}
  selector:
    matchLabels:
      app.kubernetes.io/instance: {{ .Release.Name }}
  template:
    metadata:
      labels:
        {{- include \"app.labels\" . | nindent 8 }}
    spec:
      containers:
      - name: web
        image: \"{{ .Values.image.repository }}:{{ .Values.image.tag }}\"
        ports:
        - containerPort: {{ .Values.port }}
        envFrom:
        - configMapRef:
            name: {{ .Release.Name }}-settings
        resources:
          {{- toYaml .Values.resources | nindent 10 }}
";

const SERVICE_TEMPLATE: &str = "apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}-web
  labels:
    {{- include \"app.labels\" . | nindent 4 }}
spec:
  selector:
    app.kubernetes.io/instance: {{ .Release.Name }}
  ports:
  - port: 80
    targetPort: {{ .Values.port }}
";

const CONFIGMAP_TEMPLATE: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
  labels:
    {{- include \"app.labels\" . | nindent 4 }}
data:
  chart: {{ .Chart.Name }}
  {{- range $key, $value := .Values.settings }}
  {{ $key }}: {{ $value | quote }}
  {{- end }}
";

const BASE_KUSTOMIZATION: &str = "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- deployment.yaml
- service.yaml
";

const BASE_DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: registry.example.com/web:1.0
        envFrom:
        - configMapRef:
            name: settings
        ports:
        - containerPort: 8080
";

const BASE_SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
";

const OVERLAY: &str = "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namePrefix: @NAME@-
resources:
- ../../base
labels:
- pairs:
    team: team-@TEAM@
images:
- name: registry.example.com/web
  newTag: \"1.@N@\"
replicas:
- name: web
  count: @REPLICAS@
configMapGenerator:
- name: settings
  literals:
  - APP=@NAME@
  - TIER=backend
";

fn fill(template: &str, app: &App) -> String {
    template
        .replace("@NAME@", &app.name())
        .replace("@N@", &format!("{:02}", app.n))
        .replace("@REPLICAS@", &app.replicas().to_string())
        .replace("@TEAM@", &(app.n % 6).to_string())
}

/// The repository of the 64 apps: Helm charts under `charts/`, overlays
/// of one shared base under `overlays/`, Directory apps under `plain/`.
fn apps_repo(apps: &[App]) -> GitRepo {
    let repo = GitRepo::new();
    repo.write("base/kustomization.yaml", BASE_KUSTOMIZATION)
        .write("base/deployment.yaml", BASE_DEPLOYMENT)
        .write("base/service.yaml", BASE_SERVICE);
    for app in apps {
        let path = &app.path;
        match app.kind {
            Kind::Helm => {
                repo.write(&format!("{path}/Chart.yaml"), &fill(CHART, app))
                    .write(&format!("{path}/values.yaml"), &fill(VALUES, app))
                    .write(&format!("{path}/templates/_helpers.tpl"), HELPERS)
                    .write(
                        &format!("{path}/templates/deployment.yaml"),
                        DEPLOYMENT_TEMPLATE,
                    )
                    .write(&format!("{path}/templates/service.yaml"), SERVICE_TEMPLATE)
                    .write(
                        &format!("{path}/templates/configmap.yaml"),
                        CONFIGMAP_TEMPLATE,
                    );
            }
            Kind::Kustomize => {
                repo.write(&format!("{path}/kustomization.yaml"), &fill(OVERLAY, app));
            }
            Kind::Directory => {
                for k in 0..DIRECTORY_FILES {
                    repo.write(
                        &format!("{path}/configmap-{k}.yaml"),
                        &format!(
                            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {}-{k}\n\
                             data:\n  index: \"{k}\"\n  app: {}\n",
                            app.name(),
                            app.name()
                        ),
                    );
                }
            }
        }
    }
    repo.commit("64 apps");
    repo
}

fn request(url: &str, app: &App) -> ManifestRequest {
    let mut request = common::manifest_request(url, &app.path, "HEAD");
    request.app_name = app.name();
    request
}

fn find<'a>(manifests: &'a [Value], kind: &str, name: &str, app: &str) -> &'a Value {
    manifests
        .iter()
        .find(|m| m["kind"] == kind && m["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{app}: no {kind} {name} in {manifests:#?}"))
}

/// Panics unless `response` is exactly what `app` renders to at `sha`.
fn check(app: &App, response: &ManifestResponse, sha: &str) {
    let name = app.name();
    assert_eq!(response.revision, sha, "{name}: revision");
    let manifests = common::parse_manifests(&response.manifests);
    match app.kind {
        Kind::Helm => {
            assert_eq!(response.source_type, "Helm", "{name}");
            assert_eq!(manifests.len(), 3, "{name}: {manifests:#?}");
            let deployment = find(&manifests, "Deployment", &format!("{name}-web"), &name);
            assert_eq!(deployment["spec"]["replicas"], app.replicas(), "{name}");
            assert_eq!(
                deployment["spec"]["template"]["spec"]["containers"][0]["image"],
                format!("registry.example.com/{name}:1.{:02}", app.n),
                "{name}"
            );
            assert_eq!(
                deployment["metadata"]["labels"]["app.kubernetes.io/instance"],
                name.as_str(),
                "{name}"
            );
            find(&manifests, "Service", &format!("{name}-web"), &name);
            let settings = find(&manifests, "ConfigMap", &format!("{name}-settings"), &name);
            assert_eq!(
                settings["data"],
                serde_json::json!({"chart": name, "owner": format!("team-{}", app.n % 6), "tier": "backend"}),
                "{name}"
            );
        }
        Kind::Kustomize => {
            assert_eq!(response.source_type, "Kustomize", "{name}");
            assert_eq!(manifests.len(), 3, "{name}: {manifests:#?}");
            let deployment = find(&manifests, "Deployment", &format!("{name}-web"), &name);
            assert_eq!(deployment["spec"]["replicas"], app.replicas(), "{name}");
            assert_eq!(
                deployment["metadata"]["labels"]["team"],
                format!("team-{}", app.n % 6),
                "{name}"
            );
            let container = &deployment["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(
                container["image"],
                format!("registry.example.com/web:1.{:02}", app.n),
                "{name}"
            );
            find(&manifests, "Service", &format!("{name}-web"), &name);
            let settings = manifests
                .iter()
                .find(|m| m["kind"] == "ConfigMap")
                .unwrap_or_else(|| panic!("{name}: no ConfigMap"));
            let settings_name = settings["metadata"]["name"].as_str().unwrap_or_default();
            assert!(
                settings_name.starts_with(&format!("{name}-settings-")),
                "{name}: generated ConfigMap {settings_name}"
            );
            assert_eq!(settings["data"]["APP"], name.as_str(), "{name}");
            // The reference follows the generated (hashed) name.
            assert_eq!(
                container["envFrom"][0]["configMapRef"]["name"], settings_name,
                "{name}"
            );
        }
        Kind::Directory => {
            assert_eq!(response.source_type, "Directory", "{name}");
            let mut names = common::names(&response.manifests);
            names.sort();
            let expected: Vec<String> = (0..DIRECTORY_FILES)
                .map(|k| format!("{name}-{k}"))
                .collect();
            assert_eq!(names, expected, "{name}");
        }
    }
    for manifest in &manifests {
        let annotation = &manifest["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"];
        assert!(
            annotation
                .as_str()
                .is_some_and(|id| id.starts_with(&format!("{name}:"))),
            "{name}: tracking annotation {annotation}"
        );
    }
}

/// What a [`TreeSampler`] saw.
struct Sampled {
    peaks: Peaks,
    /// Largest VmRSS (KiB) of one process, by program name.
    by_program: BTreeMap<String, u64>,
    /// Time between samples, on average.
    interval: Duration,
    /// Most threads the server had at one sample.
    threads_max: u64,
    /// Children seen between fork and exec (still named after a server
    /// thread, their pages the server's): how many samples caught one,
    /// and the largest VmRSS such a child showed. Not in `peaks`.
    unexeced: (u64, u64),
}

/// Samples the memory of a process and its descendants, like
/// `harness::Sampler`, but reads each process's parent once: a process
/// that is not a descendant when first seen never becomes one, so a
/// sample reads `/proc`'s listing and only the descendants' `status`
/// (the harness's sampler reads every process's `stat` each time, about
/// 30 ms a sample on 2 busy cores).
struct TreeSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Sampled>,
}

/// `Name:` and `VmRSS:` (KiB) of `/proc/<pid>/status`.
fn name_and_rss(pid: u32) -> Option<(String, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut name = None;
    let mut rss = None;
    for line in status.lines() {
        if let Some(value) = line.strip_prefix("Name:") {
            name = Some(value.trim().to_string());
        } else if let Some(value) = line.strip_prefix("VmRSS:") {
            rss = value.trim().trim_end_matches("kB").trim().parse().ok();
        }
    }
    // A zombie has a name and no VmRSS.
    Some((name?, rss.unwrap_or(0)))
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

impl TreeSampler {
    fn start(root: u32, every: Duration) -> TreeSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut peaks = Peaks::default();
            let mut by_program: BTreeMap<String, u64> = BTreeMap::new();
            let mut parents: HashMap<u32, u32> = HashMap::new();
            let mut unexeced = (0, 0);
            let mut threads_max = 0;
            while !flag.load(Ordering::Relaxed) {
                peaks.rss_kib = peaks.rss_kib.max(status_kib(root, "VmRSS:").unwrap_or(0));
                threads_max = threads_max.max(status_kib(root, "Threads:").unwrap_or(0));
                let mut alive = HashSet::new();
                if let Ok(entries) = std::fs::read_dir("/proc") {
                    for entry in entries.flatten() {
                        let Some(pid) = entry
                            .file_name()
                            .to_str()
                            .and_then(|name| name.parse::<u32>().ok())
                        else {
                            continue;
                        };
                        alive.insert(pid);
                        if let std::collections::hash_map::Entry::Vacant(slot) = parents.entry(pid)
                        {
                            if let Some(parent) = parent_of(pid) {
                                slot.insert(parent);
                            }
                        }
                    }
                }
                parents.retain(|pid, _| alive.contains(pid));
                let mut descendants: HashSet<u32> = HashSet::from([root]);
                let mut grew = true;
                while grew {
                    grew = false;
                    for (child, parent) in &parents {
                        if descendants.contains(parent) && descendants.insert(*child) {
                            grew = true;
                        }
                    }
                }
                descendants.remove(&root);
                let mut sum = 0;
                let mut count = 0;
                for child in descendants {
                    let Some((name, rss)) = name_and_rss(child) else {
                        continue;
                    };
                    if name.starts_with("tokio-") || name == "manifold" {
                        unexeced = (unexeced.0 + 1, unexeced.1.max(rss));
                        continue;
                    }
                    count += 1;
                    sum += rss;
                    peaks.child_max_kib = peaks.child_max_kib.max(rss);
                    let program = by_program.entry(name).or_default();
                    *program = (*program).max(rss);
                }
                peaks.children_sum_kib = peaks.children_sum_kib.max(sum);
                peaks.children_max = peaks.children_max.max(count);
                peaks.samples += 1;
                std::thread::sleep(every);
            }
            Sampled {
                peaks,
                by_program,
                interval: started.elapsed() / peaks.samples.max(1) as u32,
                threads_max,
                unexeced,
            }
        });
        TreeSampler { stop, thread }
    }

    fn stop(self) -> Sampled {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sampler thread")
    }
}

/// What one repetition measured.
struct Run {
    /// VmRSS (KiB) a second after start, after a `/metrics` scrape, and
    /// after one small render.
    idle_start: u64,
    idle_scrape: u64,
    idle_request: u64,
    /// The burst's wall time, first send to last response.
    wall: Duration,
    peaks: Peaks,
    /// Largest VmRSS (KiB) of one process, by program name.
    by_program: BTreeMap<String, u64>,
    /// Time between samples, on average.
    interval: Duration,
    /// See [`Sampled::unexeced`].
    unexeced: (u64, u64),
    /// VmHWM (KiB) after the burst: the server's peak RSS over its life.
    hwm: u64,
    /// VmRSS (KiB) a second after the burst, and once idle again (after
    /// tokio's 10 s keep-alive of idle blocking threads).
    after: u64,
    after_idle: u64,
    /// The server's threads before the burst, at most during it, and
    /// once idle again.
    threads: (u64, u64, u64),
    /// `git fetch` and `git ls-remote` runs for the burst.
    fetches: f64,
    ls_remotes: f64,
}

/// `git fetch` and `git ls-remote` runs so far, from a `/metrics` text.
fn git_runs(metrics: &str) -> (f64, f64) {
    let count = |kind: &str| {
        metric_sum(
            metrics,
            "argocd_git_request_total",
            &[("request_type", kind)],
        )
    };
    (count("fetch"), count("ls-remote"))
}

async fn one_run(url: &str, sha: &str, apps: &[App], small: &GitRepo) -> Run {
    // Argo CD's defaults: no --parallelismlimit (unlimited).
    let server = Server::start(&[]);
    let pid = server.pid();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_start = server.rss_kib();
    let renders_before = server.renders();
    let idle_scrape = server.rss_kib();
    let client: Client = server.client().await;
    let small_response = client
        .clone()
        .generate_manifest(common::manifest_request(&small.url(), "cm", "HEAD"))
        .await
        .expect("the small render")
        .into_inner();
    assert_eq!(common::names(&small_response.manifests), ["idle-check"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle_request = server.rss_kib();
    let git_before = git_runs(&server.metrics());
    let threads_before = status_kib(pid, "Threads:").unwrap_or(0);

    let sampler = TreeSampler::start(pid, SAMPLE_EVERY);
    // Give the sampler a first reading of the server at rest.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = Instant::now();
    let tasks: Vec<_> = apps
        .iter()
        .map(|app| {
            let mut client = client.clone();
            let request = request(url, app);
            tokio::spawn(async move { client.generate_manifest(request).await })
        })
        .collect();
    let mut responses = Vec::with_capacity(tasks.len());
    for task in tasks {
        responses.push(task.await.expect("request task"));
    }
    let wall = started.elapsed();
    let Sampled {
        peaks,
        by_program,
        interval,
        threads_max,
        unexeced,
    } = sampler.stop();
    let hwm = status_kib(pid, "VmHWM:").expect("VmHWM of the server");
    for (app, response) in apps.iter().zip(responses) {
        let response = response
            .unwrap_or_else(|status| panic!("{}: GenerateManifest: {status}", app.name()))
            .into_inner();
        check(app, &response, sha);
    }
    let renders = server.renders() - renders_before;
    assert_eq!(
        renders,
        (APPS + 1) as f64,
        "every app a cold render (and the small one)"
    );
    let git_after = git_runs(&server.metrics());
    let (fetches, ls_remotes) = (git_after.0 - git_before.0, git_after.1 - git_before.1);
    assert_eq!(fetches, 1.0, "the 64 renders share one fetch");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server.rss_kib();
    tokio::time::sleep(SETTLE).await;
    let after_idle = server.rss_kib();
    let threads = (
        threads_before,
        threads_max,
        status_kib(pid, "Threads:").unwrap_or(0),
    );
    server.stop().await;
    Run {
        idle_start,
        idle_scrape,
        idle_request,
        wall,
        peaks,
        by_program,
        interval,
        unexeced,
        hwm,
        after,
        after_idle,
        threads,
        fetches,
        ls_remotes,
    }
}

pub async fn run(ctx: &Ctx) -> Section {
    let repetitions = ctx.pick(1, 3);
    let apps = apps();
    let repo = apps_repo(&apps);
    let (url, sha) = (repo.url(), repo.head());
    let small = GitRepo::new();
    small.write(
        "cm/one.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: idle-check\ndata:\n  a: b\n",
    );
    small.commit("one ConfigMap");

    let mut runs = Vec::new();
    for repetition in 0..repetitions {
        let run = one_run(&url, &sha, &apps, &small).await;
        eprintln!(
            "report: memory: run {}: idle {} / {} / {}, burst {} peak {} (HWM {}), child max {}, \
             children sum {} ({} at once), a sample every {} ms",
            repetition + 1,
            mib(run.idle_start),
            mib(run.idle_scrape),
            mib(run.idle_request),
            secs(run.wall),
            mib(run.peaks.rss_kib),
            mib(run.hwm),
            mib(run.peaks.child_max_kib),
            mib(run.peaks.children_sum_kib),
            run.peaks.children_max,
            run.interval.as_millis()
        );
        runs.push(run);
    }
    report(&runs)
}

fn report(runs: &[Run]) -> Section {
    let max = |f: &dyn Fn(&Run) -> u64| runs.iter().map(f).max().unwrap_or(0);
    let idle_start = max(&|r| r.idle_start);
    let idle_request = max(&|r| r.idle_request.max(r.idle_scrape));
    let load = max(&|r| r.hwm.max(r.peaks.rss_kib));
    let child = max(&|r| r.peaks.child_max_kib);
    let children = max(&|r| r.peaks.children_sum_kib);
    let most = runs.iter().map(|r| r.peaks.children_max).max().unwrap_or(0);
    let mut by_program: BTreeMap<&str, u64> = BTreeMap::new();
    for run in runs {
        for (program, kib) in &run.by_program {
            let entry = by_program.entry(program.as_str()).or_default();
            *entry = (*entry).max(*kib);
        }
    }
    let interval = runs.iter().map(|r| r.interval).max().unwrap_or_default();
    let unexeced_samples: u64 = runs.iter().map(|r| r.unexeced.0).sum();
    let unexeced_kib = max(&|r| r.unexeced.1);

    let mut body = String::new();
    body.push_str(&format!(
        "**What it measures.** The resident memory (VmRSS) of the server process, idle and \
         while it renders 64 apps that are all cold (never rendered, in no cache), and the \
         memory of the processes it runs meanwhile (helm, kustomize, git). Absolute figures, \
         no comparison.\n\n\
         **Setup.** The release `manifold serve` with Argo CD's defaults (no \
         `--parallelismlimit`: every render runs at once), a fresh one for each of {reps} \
         repetition{s}. One repository of 64 apps, each at its own path: {helm} Helm charts \
         (Deployment, Service and ConfigMap templates and a helpers template), {kustomize} \
         Kustomize overlays of one shared base (name prefix, label, image tag, replicas, a \
         ConfigMap generator) and {directory} Directory apps ({files} ConfigMaps each).\n\n\
         - *Idle*: VmRSS a second after start; after one `/metrics` scrape; after one small \
         render (a one-ConfigMap Directory app from another repository).\n\
         - *Load*: all 64 `GenerateManifest` at `HEAD` sent at once on one HTTP/2 \
         connection, as the controller does. A sampler thread reads `/proc` every {every} ms \
         (one sample every {interval} ms in practice, on 2 busy cores) from just before the \
         first send to the last response: the server's VmRSS, and each descendant's VmRSS, \
         their sum and their number. VmHWM, the kernel's high-water mark of the server's \
         RSS, read after the burst, catches a peak between samples. Then VmRSS 1 s and \
         12 s after the last response.\n\
         - Checked: every response is the app's exact output (kind, names, replicas, image, \
         the generated ConfigMap's name and the reference to it, tracking annotations) at \
         the commit `HEAD` names; `manifold_renders_total` grew by exactly 65 (the small \
         render and the 64: no cache hits); the burst cost one `git fetch` in all.\n\n",
        reps = runs.len(),
        s = if runs.len() == 1 { "" } else { "s" },
        helm = HELM_APPS,
        kustomize = KUSTOMIZE_APPS,
        directory = DIRECTORY_APPS,
        files = DIRECTORY_FILES,
        every = SAMPLE_EVERY.as_millis(),
        interval = interval.as_millis(),
    ));
    let rows: Vec<Vec<String>> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            vec![
                (i + 1).to_string(),
                mib(r.idle_start),
                mib(r.idle_scrape),
                mib(r.idle_request),
                secs(r.wall),
                mib(r.peaks.rss_kib),
                mib(r.hwm),
                mib(r.after),
                mib(r.after_idle),
                format!("{} / {} / {}", r.threads.0, r.threads.1, r.threads.2),
                mib(r.peaks.child_max_kib),
                mib(r.peaks.children_sum_kib),
                r.peaks.children_max.to_string(),
                format!("{} ({} ls-remote)", r.fetches, r.ls_remotes),
            ]
        })
        .collect();
    body.push_str("Server RSS, and its descendants' during the burst:\n\n");
    body.push_str(&table(
        &[
            "run",
            "idle",
            "after a scrape",
            "after a render",
            "64 renders: wall",
            "peak (sampled)",
            "VmHWM",
            "1 s after",
            "12 s after",
            "threads: before / peak / 12 s after",
            "largest child",
            "children's sum",
            "most children",
            "git fetches",
        ],
        &rows,
    ));
    body.push_str("\nLargest RSS of one process, by program (over every run):\n\n");
    let mut programs: Vec<(&str, u64)> = by_program.into_iter().collect();
    programs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let program_rows: Vec<Vec<String>> = programs
        .iter()
        .map(|(program, kib)| vec![format!("`{program}`"), mib(*kib)])
        .collect();
    body.push_str(&table(&["program", "largest VmRSS"], &program_rows));
    body.push_str(
        "\nKustomize here is `kustomize build` through a shim over `kubectl kustomize` \
         (`scripts/install-tools.sh`): its renders show as `kubectl`, with the shim's `bash`, \
         `dirname` and `readlink`; helm renders as `helm`; git's `file://` transport runs \
         `git-upload-pack` through `sh`.\n",
    );
    let idle_met = idle_start <= IDLE_TARGET_KIB && idle_request <= IDLE_TARGET_KIB;
    let load_met = load <= LOAD_TARGET_KIB;
    body.push_str(&format!(
        "\nServer RSS idle: **{}** after start, {} after a scrape and a render (target ≤ 20 \
         MiB); under 64 concurrent cold renders **{}** at its peak (target ≤ 150 MiB). \
         Children: up to {} for one process, {} for all of them at once, up to {} processes \
         at once.\n\n",
        mib(idle_start),
        mib(idle_request),
        mib(load),
        mib(child),
        mib(children),
        most,
    ));
    let after_idle = max(&|r| r.after_idle);
    let threads_idle = runs.iter().map(|r| r.threads.0).max().unwrap_or(0);
    let threads_peak = runs.iter().map(|r| r.threads.1).max().unwrap_or(0);
    body.push_str(&format!(
        "**Reading it.** The server itself stays small: {} idle after its first render, and \
         the burst adds {} at its peak, with its threads going from {} to {} (tokio's \
         blocking pool: the store lookups, exports and cache work of 64 requests at \
         once). ",
        mib(idle_request),
        mib(load.saturating_sub(idle_request)),
        threads_idle,
        threads_peak,
    ));
    if !idle_met {
        body.push_str(&format!(
            "The idle target is missed by {}. ",
            mib(idle_start.max(idle_request).saturating_sub(IDLE_TARGET_KIB))
        ));
    }
    if !load_met {
        body.push_str(&format!(
            "The load target is missed by {}. ",
            mib(load.saturating_sub(LOAD_TARGET_KIB))
        ));
    }
    if after_idle > IDLE_TARGET_KIB {
        body.push_str(&format!(
            "It does not give that back: idle again 12 s later (its idle blocking threads \
             gone) it still holds up to {}, above the 20 MiB idle target, which this section \
             scores on a server that has not yet seen a burst. ",
            mib(after_idle),
        ));
    } else {
        body.push_str(&format!(
            "Idle again 12 s later it holds up to {}, within the idle target. ",
            mib(after_idle),
        ));
    }
    body.push_str(&format!(
        "The memory of rendering is in the processes, not in the server: one process takes \
         up to {}, and with every render started at once their sum reached {}, with up to \
         {} processes alive at once (shims included; not 64 renders at once, because on 2 \
         cores the first renders finish while the last start). That sum grows with the renders in flight; \
         `--parallelismlimit N` (Argo CD's flag, same meaning) caps it at about N renders' \
         worth and queues the rest.\n",
        mib(child),
        mib(children),
        most,
    ));
    body.push_str(
        "\nThe sums add each process's VmRSS, so pages shared between processes count more \
         than once, and a process that lives between two samples is missed.",
    );
    if unexeced_samples > 0 {
        body.push_str(&format!(
            " Left out of them: children caught between spawn and exec, still named after a \
             server thread (`tokio-rt-worker`) and showing the server's pages ({} sample{} \
             caught one, at up to {}). manifold starts its processes by absolute path, so \
             Rust's `Command` uses `posix_spawn` (a `vfork` sharing the server's memory until \
             the exec) rather than a fork copying its page tables; it forked before this \
             benchmark found it.",
            unexeced_samples,
            if unexeced_samples == 1 { "" } else { "s" },
            mib(unexeced_kib),
        ));
    }
    body.push('\n');

    Section {
        title: "Memory: idle and under 64 concurrent cold renders".into(),
        body,
        targets: vec![
            Target::new(
                "Memory",
                "server RSS idle (fresh)",
                mib(idle_start),
                "≤ 20 MiB",
                Some(idle_start <= IDLE_TARGET_KIB),
            ),
            Target::new(
                "Memory",
                "server RSS idle (after a scrape and a render)",
                mib(idle_request),
                "≤ 20 MiB",
                Some(idle_request <= IDLE_TARGET_KIB),
            ),
            Target::new(
                "Memory",
                "server peak RSS, 64 concurrent cold renders",
                mib(load),
                "≤ 150 MiB",
                Some(load_met),
            ),
            Target::new(
                "Memory",
                "peak RSS of one child process (helm, kustomize, git)",
                mib(child),
                "",
                None,
            ),
            Target::new(
                "Memory",
                "peak RSS of all child processes at once",
                format!("{} (up to {most} processes at once)", mib(children)),
                "",
                None,
            ),
        ],
        charts: Vec::new(),
    }
}
