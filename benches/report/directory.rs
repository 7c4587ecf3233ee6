//! A Directory app of 1,000 manifests: a cold render by manifold (the
//! commit fetched and its snapshot exported) against reading and parsing
//! the same files in this process, without a server.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use manifold::grpc::proto::repository::{ManifestRequest, ManifestResponse};
use serde_json::Value;

use crate::cold_render::{checkout, untracked};
use crate::common::{self, Client};
use crate::fixtures::GitRepo;
use crate::harness::{self, ms, ratio, Ctx, Section, Server, Stats, Target};

/// The app's directory in the repository.
const APP_PATH: &str = "manifests";
/// Manifests (files) in it.
const MANIFESTS: usize = 1000;
/// A second app of the first quarter of the same files, to see how
/// manifold's time grows with the directory.
const SMALL_PATH: &str = "manifests-250";
const SMALL: usize = 250;

/// The `i`th manifest: ConfigMaps, Deployments and Services in turn
/// (4:3:3), of sizes that vary as real ones do.
fn manifest(i: usize) -> (String, String) {
    let team = ["checkout", "catalog", "search", "payments", "identity"][i % 5];
    match i % 10 {
        0..=3 => {
            let name = format!("{team}-config-{i:04}");
            let mut text = format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels:\n    \
                 app.kubernetes.io/part-of: shop\n    team: {team}\ndata:\n"
            );
            for key in 0..(4 + i % 23) {
                let _ = writeln!(
                    text,
                    "  SETTING_{key:02}: \"{team}.example.internal:{}/v{}/{}\"",
                    8000 + key,
                    1 + key % 3,
                    "x".repeat(8 + (i * 7 + key) % 40)
                );
            }
            if i.is_multiple_of(7) {
                text.push_str("  application.yaml: |\n");
                for line in 0..12 {
                    let _ = writeln!(
                        text,
                        "    section{line}:\n      enabled: {}\n      timeout: {}s",
                        line % 2 == 0,
                        5 + line
                    );
                }
            }
            ("configmap".into(), text)
        }
        4..=6 => {
            let name = format!("{team}-worker-{i:04}");
            let mut text = format!(
                "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels:
    app.kubernetes.io/name: {name}
    app.kubernetes.io/part-of: shop
    team: {team}
  annotations:
    shop.example.com/owner: {team}@example.com
spec:
  replicas: {}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      app.kubernetes.io/name: {name}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 0
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {name}
        team: {team}
      annotations:
        prometheus.io/scrape: \"true\"
        prometheus.io/port: \"9090\"
    spec:
      serviceAccountName: {team}
      securityContext:
        runAsNonRoot: true
        fsGroup: 2000
      containers:
      - name: worker
        image: registry.example.com/shop/{team}-worker:1.{}.{}
        imagePullPolicy: IfNotPresent
        args:
        - --listen=:8080
        - --metrics=:9090
        - --log-level=info
        ports:
        - name: http
          containerPort: 8080
        - name: metrics
          containerPort: 9090
        env:
",
                1 + i % 5,
                i % 40,
                i % 9
            );
            for var in 0..(3 + i % 9) {
                let _ = writeln!(
                    text,
                    "        - name: {}_VAR_{var}\n          value: \"{}\"",
                    team.to_uppercase(),
                    var * i
                );
            }
            text.push_str(
                "        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
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
          requests:
            cpu: 100m
            memory: 128Mi
          limits:
            cpu: 500m
            memory: 512Mi
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
",
            );
            ("deployment".into(), text)
        }
        _ => {
            let name = format!("{team}-svc-{i:04}");
            let mut text = format!(
                "apiVersion: v1
kind: Service
metadata:
  name: {name}
  labels:
    app.kubernetes.io/part-of: shop
    team: {team}
spec:
  type: ClusterIP
  selector:
    app.kubernetes.io/name: {team}-worker-{:04}
  ports:
",
                i - i % 10 + 4
            );
            for port in 0..(1 + i % 3) {
                let _ = writeln!(
                    text,
                    "  - name: port-{port}\n    port: {}\n    targetPort: {}\n    protocol: TCP",
                    80 + port,
                    8080 + port
                );
            }
            ("service".into(), text)
        }
    }
}

/// A repository whose `manifests/` holds the app, one manifest a file,
/// next to other things a repository has.
fn repository() -> (GitRepo, String, usize) {
    let repo = GitRepo::new();
    let mut bytes = 0;
    for i in 0..MANIFESTS {
        let (kind, text) = manifest(i);
        bytes += text.len();
        repo.write(&format!("{APP_PATH}/{i:04}-{kind}.yaml"), &text);
        if i < SMALL {
            repo.write(&format!("{SMALL_PATH}/{i:04}-{kind}.yaml"), &text);
        }
    }
    repo.write("README.md", "# shop\n\nEvery manifest of the shop.\n")
        .write("docs/runbook.md", "# Runbook\n\nRestart the worker.\n");
    let sha = repo.commit("1,000 manifests");
    (repo, sha, bytes)
}

/// The baseline's time, by step.
#[derive(Clone, Copy, Default)]
struct Steps {
    walk_and_read: Duration,
    parse: Duration,
    serialize: Duration,
}

impl Steps {
    fn total(&self) -> Duration {
        self.walk_and_read + self.parse + self.serialize
    }
}

/// In this process: list `dir`, read every `.yaml` file in name order,
/// parse each with serde_saphyr (as manifold does: goyaml's octal
/// numbers, last duplicate key wins) into a JSON value and serialize it
/// to the JSON string a response carries.
fn read_and_parse(dir: &Path) -> (Vec<String>, Steps) {
    let start = Instant::now();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("app directory")
        .map(|entry| {
            entry
                .expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    names.sort_unstable();
    let texts: Vec<String> = names
        .iter()
        .map(|name| std::fs::read_to_string(dir.join(name)).expect("manifest file"))
        .collect();
    let read = start.elapsed();
    let start = Instant::now();
    let values: Vec<Value> = texts
        .iter()
        .map(|text| {
            let options = serde_saphyr::options! {
                legacy_octal_numbers: true,
                duplicate_keys: serde_saphyr::DuplicateKeyPolicy::LastWins,
            };
            serde_saphyr::from_str_with_options::<Value>(text, options).expect("manifest YAML")
        })
        .collect();
    let parse = start.elapsed();
    let start = Instant::now();
    let json: Vec<String> = values
        .iter()
        .map(|value| serde_json::to_string(value).expect("JSON"))
        .collect();
    let serialize = start.elapsed();
    (
        json,
        Steps {
            walk_and_read: read,
            parse,
            serialize,
        },
    )
}

/// Asserts that manifold's answer is the baseline's, once tracking is
/// removed: the same `count` manifests in the same order.
fn check(response: &ManifestResponse, sha: &str, baseline: &[String], app_name: &str) {
    assert_eq!(response.source_type, "Directory");
    assert_eq!(response.revision, sha);
    assert_eq!(
        response.manifests.len(),
        baseline.len(),
        "manifest count of {app_name}"
    );
    for (i, (got, expected)) in response.manifests.iter().zip(baseline).enumerate() {
        let expected: Value = serde_json::from_str(expected).expect("baseline JSON");
        assert_eq!(
            untracked(got, app_name),
            expected,
            "manifest {i} of {app_name} differs from the file"
        );
    }
}

fn request(url: &str, path: &str, sha: &str, app_name: &str) -> ManifestRequest {
    let mut request = common::manifest_request(url, path, sha);
    request.app_name = app_name.to_string();
    request
}

fn render_step_totals(server: &Server) -> (f64, f64) {
    let metrics = server.metrics();
    let labels = [("source_type", "Directory")];
    (
        harness::metric_sum(&metrics, "manifold_render_duration_seconds_sum", &labels),
        harness::metric_sum(&metrics, "manifold_render_duration_seconds_count", &labels),
    )
}

/// Sends `request`; the response, the time from send to decoded
/// response, and manifold's render step for it (from `/metrics`).
async fn generate(
    server: &Server,
    client: &Client,
    request: ManifestRequest,
) -> (ManifestResponse, Duration, Duration) {
    let (step_sum, step_count) = render_step_totals(server);
    let mut client = client.clone();
    let start = Instant::now();
    let response = client
        .generate_manifest(request)
        .await
        .unwrap_or_else(|status| panic!("GenerateManifest failed: {status}"))
        .into_inner();
    let took = start.elapsed();
    let (sum, count) = render_step_totals(server);
    assert_eq!(count - step_count, 1.0, "one render per request");
    (response, took, Duration::from_secs_f64(sum - step_sum))
}

/// Manifold's times for one app.
#[derive(Default)]
struct Times {
    total: Vec<Duration>,
    step: Vec<Duration>,
    rest: Vec<Duration>,
}

impl Times {
    fn push(&mut self, total: Duration, step: Duration) {
        self.total.push(total);
        self.step.push(step);
        self.rest.push(total.saturating_sub(step));
    }
}

fn stats_row(name: &str, samples: &[Duration]) -> Vec<String> {
    let stats = Stats::of(samples.to_vec());
    vec![
        name.to_string(),
        ms(stats.median()),
        ms(stats.quantile(0.9)),
        ms(stats.min()),
        ms(stats.max()),
    ]
}

fn median(samples: &[Duration]) -> Duration {
    Stats::of(samples.to_vec()).median()
}

pub async fn run(ctx: &Ctx) -> Section {
    let iterations = ctx.pick(5, 20);
    let (repo, sha, file_bytes) = repository();
    let url = repo.url();
    let checkout_dir = checkout(&repo, &sha);
    let app_dir = checkout_dir.path().join("repo").join(APP_PATH);

    let server = Server::start(&[]);
    let client = server.client().await;

    // Untimed: fetch the commit, export the apps' snapshots, and read the
    // files once from here (both sides then read from the page cache).
    let (response, _, _) =
        generate(&server, &client, request(&url, APP_PATH, &sha, "warmup")).await;
    let (baseline, _) = read_and_parse(&app_dir);
    assert_eq!(baseline.len(), MANIFESTS, "baseline count");
    check(&response, &sha, &baseline, "warmup");
    let (small_response, _, _) = generate(
        &server,
        &client,
        request(&url, SMALL_PATH, &sha, "warmup-small"),
    )
    .await;
    check(&small_response, &sha, &baseline[..SMALL], "warmup-small");
    let response_bytes: usize = response.manifests.iter().map(String::len).sum();
    let baseline_bytes: usize = baseline.iter().map(String::len).sum();

    let metrics = server.metrics();
    let exported_before =
        harness::metric_sum(&metrics, "manifold_snapshot_exported_files_total", &[]);
    let rendered_before = harness::metric_sum(
        &metrics,
        "manifold_manifest_answers_total",
        &[("served", "rendered")],
    );

    let mut large = Times::default();
    let mut small = Times::default();
    let mut baseline_times = Vec::new();
    let mut baseline_steps = Vec::new();
    for i in 0..iterations {
        // A name no request had: a cache miss, tracking ids of its own.
        let name = format!("cold-dir-{i}");
        let large_request = request(&url, APP_PATH, &sha, &name);
        let ((response, took, step), (json, steps)) = if i % 2 == 0 {
            let answer = generate(&server, &client, large_request).await;
            (answer, read_and_parse(&app_dir))
        } else {
            let local = read_and_parse(&app_dir);
            (generate(&server, &client, large_request).await, local)
        };
        check(&response, &sha, &json, &name);
        large.push(took, step);
        baseline_times.push(steps.total());
        baseline_steps.push(steps);

        let name = format!("cold-small-{i}");
        let (response, took, step) =
            generate(&server, &client, request(&url, SMALL_PATH, &sha, &name)).await;
        check(&response, &sha, &json[..SMALL], &name);
        small.push(took, step);
    }

    let metrics = server.metrics();
    assert_eq!(
        harness::metric_sum(&metrics, "manifold_snapshot_exported_files_total", &[]),
        exported_before,
        "a timed render exported a snapshot"
    );
    assert_eq!(
        (harness::metric_sum(
            &metrics,
            "manifold_manifest_answers_total",
            &[("served", "rendered")]
        ) - rendered_before) as usize,
        2 * iterations,
        "every timed request must be rendered (a cache miss)"
    );
    server.stop().await;

    let local = Stats::of(baseline_times.clone());
    // The baseline's steps in the pass whose total is the median.
    let median_steps = {
        let mut sorted = baseline_steps.clone();
        sorted.sort_by_key(Steps::total);
        sorted[(sorted.len() - 1) / 2]
    };
    let r = median(&large.total).as_secs_f64() / local.median().as_secs_f64();

    let mut body = String::new();
    let _ = writeln!(
        body,
        "**What it measures.** The time of one `GenerateManifest` that manifold has to render \
         (a cache miss) for a Directory app of {MANIFESTS} manifests, one a file, against the \
         least any server could do with those files: reading and parsing them in this \
         process, with no server, no gRPC and no tracking. The baseline lists the app \
         directory of a checkout of the same commit, reads every `.yaml` file in name order, \
         parses each with serde_saphyr (the YAML parser manifold uses, with the same options) \
         into a `serde_json::Value`, and serializes each to the JSON string a response \
         carries. Manifold's time is from sending the request to the decoded response, over \
         gRPC on loopback. No target: the ratio says what the server costs around the \
         parsing.\n"
    );
    let _ = writeln!(
        body,
        "Setup: one commit whose `{APP_PATH}/` holds {MANIFESTS} files ({:.0} KiB): \
         ConfigMaps (4 to 26 keys, some with an embedded YAML document), Deployments (probes, \
         resources, 3 to 11 environment variables) and Services (1 to 3 ports) in turn, 4:3:3; \
         `{SMALL_PATH}/` holds the first {SMALL} of them, a second app to see how manifold's \
         time grows with the directory. The requests are the controller's for a Directory app \
         (annotation tracking, no recursion, the commit by its full SHA). One untimed request \
         per app first fetches the commit and exports the app's snapshot (the directory \
         alone, as manifold does for a self-contained Directory app); then {iterations} \
         iterations, each a request for the large app under an app name no request had (a \
         cache miss) and one baseline pass, alternating which goes first, then one request \
         for the small app. `/metrics` confirms that every timed request was rendered and \
         that no snapshot was exported while timing; read around each request, its \
         `manifold_render_duration_seconds` splits manifold's time into the render step \
         (walking, reading and parsing the files) and the rest. Every answer is checked \
         manifest by manifest against the baseline's (equal once manifold's tracking \
         annotation is removed).\n",
        file_bytes as f64 / 1024.0
    );
    let rows = vec![
        stats_row(
            &format!("manifold, cold `GenerateManifest`, {MANIFESTS} manifests"),
            &large.total,
        ),
        stats_row("↳ its render step (walk, read, parse)", &large.step),
        stats_row("↳ the rest of the request", &large.rest),
        stats_row(
            &format!("in process: read, parse, serialize {MANIFESTS}"),
            &baseline_times,
        ),
        stats_row(
            &format!("manifold, cold `GenerateManifest`, {SMALL} manifests"),
            &small.total,
        ),
        stats_row("↳ its render step", &small.step),
        stats_row("↳ the rest of the request", &small.rest),
    ];
    body.push_str(&harness::table(
        &["run", "median", "p90", "min", "max"],
        &rows,
    ));
    body.push('\n');
    let _ = writeln!(
        body,
        "Ratio manifold / in process, {MANIFESTS} manifests (medians): **{}**. The baseline's \
         median pass: {} to list and read the files, {} to parse them, {} to serialize them \
         ({} KiB of JSON; manifold's answer carries {} KiB, the tracking annotations \
         included).\n",
        ratio(r, 1.0),
        ms(median_steps.walk_and_read),
        ms(median_steps.parse),
        ms(median_steps.serialize),
        baseline_bytes / 1024,
        response_bytes / 1024,
    );

    let scale = (MANIFESTS / SMALL) as f64;
    let step_growth = median(&large.step).as_secs_f64() / median(&small.step).as_secs_f64();
    let rest_growth = median(&large.rest).as_secs_f64() / median(&small.rest).as_secs_f64();
    let step_vs_local = median(&large.step).as_secs_f64() / local.median().as_secs_f64();
    let rest_share = median(&large.rest).as_secs_f64() / median(&large.total).as_secs_f64();
    let _ = writeln!(
        body,
        "**Reading it.** Manifold's render step takes {}, {} the in-process baseline's \
         whole pass (which also serializes): walking, reading and parsing the files are the \
         bulk of both. The rest of the request, {} ({:.0}% of it), is what the server adds \
         around the render: resolving the request to the snapshot and its content address \
         (a walk of the directory in the commit), the tracking annotation on each of the \
         {MANIFESTS} objects, the JSON, and {} KiB through protobuf and HTTP/2 on loopback to \
         a client that decodes it. From {SMALL} to {MANIFESTS} manifests ({scale:.0}× the \
         files) the render step grows {step_growth:.1}× and the rest {rest_growth:.1}×{}",
        ms(median(&large.step)),
        ratio(step_vs_local, 1.0),
        ms(median(&large.rest)),
        rest_share * 100.0,
        response_bytes / 1024,
        if rest_growth > scale * 1.5 {
            ": the rest grows faster than the files, so something around the render is \
             superlinear in the directory's size: profile the server (the content address \
             once did this, re-reading the directory's tree object from git for every file, \
             until 21b90b4)."
        } else {
            ", about in proportion: nothing around the render grows faster than the files."
        }
    );
    let _ = writeln!(
        body,
        "\nBoth sides run on a 2-core machine where other builds ran at times{}.",
        if ctx.mode == harness::Mode::Quick {
            "; quick mode: few iterations, a rough figure"
        } else {
            ""
        }
    );

    Section {
        title: "A Directory app of 1,000 manifests".into(),
        body,
        targets: vec![Target::new(
            "Directory app",
            "1,000 manifests, cold `GenerateManifest` / read + parse in process (medians)",
            ratio(r, 1.0),
            "",
            None,
        )],
        charts: Vec::new(),
    }
}
