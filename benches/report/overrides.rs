//! Kustomize apps with per-app overrides across revisions of one
//! repository: all the renders sent at once against the same renders sent
//! one at a time, both to the real server.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use manifold::grpc::proto::repository::{ManifestRequest, ManifestResponse};

use crate::common::Client;
use crate::concurrency_fixture::{check, request, KustomizeRepo, Overrides};
use crate::harness::{self, cpu_time, ms, ratio, secs, Ctx, Section, Server, Stats, Target};

/// The target: concurrent wall time at most this many times the ideal.
const TARGET: f64 = 1.2;

/// One render of a phase: which revision and overrides, and its request.
struct Case {
    revision: usize,
    overrides: Overrides,
    app_name: String,
    request: ManifestRequest,
}

/// The renders of one phase: every app at every revision, revisions in
/// turn; each app keeps its override set (the four of the fixture in
/// turn) under a name prefix (`<phase><repeat>-a<app>-r<revision>-`) no
/// other request of the run has, so no cache or shared render can answer
/// it.
fn cases(repo: &KustomizeRepo, apps: usize, phase: &str, repeat: usize) -> Vec<Case> {
    let sets = Overrides::sets_with_none();
    let revisions = repo.revisions.len();
    (0..apps * revisions)
        .map(|i| {
            let (app, revision) = (i / revisions, i % revisions);
            let overrides =
                sets[app % sets.len()].with_prefix(&format!("{phase}{repeat}-a{app}-r{revision}-"));
            let app_name = format!("app-{app:02}");
            let request = request(
                &repo.url(),
                &repo.revisions[revision].name,
                &overrides,
                &app_name,
            );
            Case {
                revision,
                overrides,
                app_name,
                request,
            }
        })
        .collect()
}

/// Wall time, CPU time and per-render latencies of one phase.
struct Sample {
    wall: Duration,
    cpu: Cpu,
    latencies: Vec<Duration>,
}

/// CPU time used so far, split by who used it.
#[derive(Clone, Copy, Default)]
struct Cpu {
    /// The server process itself (all its threads).
    server: Duration,
    /// The tools it ran and reaped (git, kustomize and the shim's shell).
    tools: Duration,
    /// This process: the client.
    client: Duration,
}

impl Cpu {
    fn now(server: &Server, ticks: f64) -> Cpu {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.pid()))
            .expect("/proc/<server>/stat");
        let fields: Vec<f64> = stat
            .rsplit_once(')')
            .expect("stat has a command name")
            .1
            .split_whitespace()
            .map(|f| f.parse::<f64>().unwrap_or(0.0))
            .collect();
        // utime, stime, cutime, cstime: fields 14-17 of proc(5); `fields`
        // starts at field 3.
        let seconds = |ticks_used: f64| Duration::from_secs_f64(ticks_used / ticks);
        Cpu {
            server: seconds(fields[11] + fields[12]),
            tools: seconds(fields[13] + fields[14]),
            client: cpu_time("self", ticks),
        }
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            server: self.server.saturating_sub(before.server),
            tools: self.tools.saturating_sub(before.tools),
            client: self.client.saturating_sub(before.client),
        }
    }
}

async fn sequential(
    server: &Server,
    client: &Client,
    cases: &[Case],
    ticks: f64,
) -> (Sample, Vec<ManifestResponse>) {
    let mut client = client.clone();
    let before = Cpu::now(server, ticks);
    let start = Instant::now();
    let mut responses = Vec::with_capacity(cases.len());
    let mut latencies = Vec::with_capacity(cases.len());
    for case in cases {
        let sent = Instant::now();
        let response = client
            .generate_manifest(case.request.clone())
            .await
            .unwrap_or_else(|status| panic!("render failed: {status}"));
        latencies.push(sent.elapsed());
        responses.push(response.into_inner());
    }
    let wall = start.elapsed();
    let sample = Sample {
        wall,
        cpu: Cpu::now(server, ticks).since(before),
        latencies,
    };
    (sample, responses)
}

async fn concurrent(
    server: &Server,
    client: &Client,
    cases: &[Case],
    ticks: f64,
) -> (Sample, Vec<ManifestResponse>) {
    let requests: Vec<_> = cases.iter().map(|case| case.request.clone()).collect();
    let before = Cpu::now(server, ticks);
    let start = Instant::now();
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let sent = Instant::now();
                let response = client.generate_manifest(request).await;
                (response, sent.elapsed())
            })
        })
        .collect();
    let mut responses = Vec::with_capacity(tasks.len());
    let mut latencies = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (response, latency) = task.await.expect("task");
        let response = response.unwrap_or_else(|status| panic!("render failed: {status}"));
        responses.push(response.into_inner());
        latencies.push(latency);
    }
    let wall = start.elapsed();
    let sample = Sample {
        wall,
        cpu: Cpu::now(server, ticks).since(before),
        latencies,
    };
    (sample, responses)
}

fn verify(repo: &KustomizeRepo, cases: &[Case], responses: &[ManifestResponse]) {
    assert_eq!(cases.len(), responses.len());
    for (case, response) in cases.iter().zip(responses) {
        check(
            response,
            &repo.revisions[case.revision],
            &case.overrides,
            &case.app_name,
        );
    }
}

fn rendered(server: &Server) -> f64 {
    harness::metric_sum(
        &server.metrics(),
        "manifold_manifest_answers_total",
        &[("served", "rendered")],
    )
}

/// Untimed: fetches each commit, exports its snapshot and lists the refs
/// in `server`; the snapshot files it exported.
async fn warm_up(server: &Server, client: &Client, repo: &KustomizeRepo) -> f64 {
    for (r, revision) in repo.revisions.iter().enumerate() {
        let overrides = Overrides::default().with_prefix(&format!("warmup-{r}-"));
        let response = client
            .clone()
            .generate_manifest(request(&repo.url(), &revision.name, &overrides, "warmup"))
            .await
            .expect("warm-up render succeeds")
            .into_inner();
        check(&response, revision, &overrides, "warmup");
    }
    exported(server)
}

fn exported(server: &Server) -> f64 {
    harness::metric_sum(
        &server.metrics(),
        "manifold_snapshot_exported_files_total",
        &[],
    )
}

/// The phases of a repetition.
#[derive(Clone, Copy)]
enum Phase {
    Sequential,
    Concurrent,
    /// All at once, to a server limited to one render per core.
    Limited,
}

pub async fn run(ctx: &Ctx) -> Section {
    let apps = 20;
    let revisions = 5;
    let repeats = ctx.pick(1, 3);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let renders = apps * revisions;

    let repo = KustomizeRepo::build(revisions);
    let server = Server::start(&[]);
    let client = server.client().await;
    let limit = cores.to_string();
    let limited = Server::start(&["--parallelismlimit", &limit]);
    let limited_client = limited.client().await;
    let exported_before = warm_up(&server, &client, &repo).await;
    let limited_exported_before = warm_up(&limited, &limited_client, &repo).await;

    let mut sequential_samples = Vec::new();
    let mut concurrent_samples = Vec::new();
    let mut limited_samples = Vec::new();
    // Rotate the order of the phases, so none always runs on a warmer
    // (or busier) machine.
    let orders = [
        [Phase::Sequential, Phase::Concurrent, Phase::Limited],
        [Phase::Limited, Phase::Concurrent, Phase::Sequential],
        [Phase::Concurrent, Phase::Limited, Phase::Sequential],
    ];
    for repeat in 0..repeats {
        for phase in orders[repeat % orders.len()] {
            let (name, server, client, samples) = match phase {
                Phase::Sequential => ("seq", &server, &client, &mut sequential_samples),
                Phase::Concurrent => ("par", &server, &client, &mut concurrent_samples),
                Phase::Limited => ("lim", &limited, &limited_client, &mut limited_samples),
            };
            let phase_cases = cases(&repo, apps, name, repeat);
            let before = rendered(server);
            let (sample, responses) = match phase {
                Phase::Sequential => sequential(server, client, &phase_cases, ctx.ticks).await,
                _ => concurrent(server, client, &phase_cases, ctx.ticks).await,
            };
            assert_eq!(
                (rendered(server) - before) as usize,
                renders,
                "every timed request must be rendered (a cache miss)"
            );
            verify(&repo, &phase_cases, &responses);
            samples.push(sample);
        }
    }
    assert_eq!(
        exported(&server),
        exported_before,
        "a timed render exported a snapshot"
    );
    assert_eq!(
        exported(&limited),
        limited_exported_before,
        "a timed render exported a snapshot"
    );
    server.stop().await;
    limited.stop().await;

    section(
        ctx,
        Shape {
            apps,
            revisions,
            repeats,
            cores,
        },
        &sequential_samples,
        &concurrent_samples,
        &limited_samples,
    )
}

/// CPU time per render over all samples.
fn per_render(samples: &[Sample], part: impl Fn(&Sample) -> Duration) -> Duration {
    let renders: usize = samples.iter().map(|s| s.latencies.len()).sum();
    samples.iter().map(part).sum::<Duration>() / renders as u32
}

/// CPU seconds per wall second over all samples: the average number of
/// cores busy.
fn busy(samples: &[Sample], part: impl Fn(&Sample) -> Duration) -> f64 {
    samples.iter().map(|s| part(s).as_secs_f64()).sum::<f64>()
        / samples.iter().map(|s| s.wall.as_secs_f64()).sum::<f64>()
}

/// The size of a run.
struct Shape {
    apps: usize,
    revisions: usize,
    repeats: usize,
    cores: usize,
}

fn section(
    ctx: &Ctx,
    shape: Shape,
    sequential: &[Sample],
    concurrent: &[Sample],
    limited: &[Sample],
) -> Section {
    let Shape {
        apps,
        revisions,
        repeats,
        cores,
    } = shape;
    let renders = apps * revisions;
    let parallel = cores.min(renders);
    let seq = Stats::of(sequential.iter().map(|s| s.wall).collect());
    let par = Stats::of(concurrent.iter().map(|s| s.wall).collect());
    let lim = Stats::of(limited.iter().map(|s| s.wall).collect());
    let ideal = seq.median() / parallel as u32;
    let r = par.median().as_secs_f64() / ideal.as_secs_f64();
    let met = r <= TARGET;
    let seq_latency = Stats::of(
        sequential
            .iter()
            .flat_map(|s| s.latencies.iter().copied())
            .collect(),
    );
    let par_latency = Stats::of(
        concurrent
            .iter()
            .flat_map(|s| s.latencies.iter().copied())
            .collect(),
    );
    let lim_latency = Stats::of(
        limited
            .iter()
            .flat_map(|s| s.latencies.iter().copied())
            .collect(),
    );
    let sets = Overrides::sets_with_none().len();

    let mut body = String::new();
    let _ = writeln!(
        body,
        "**What it measures.** The wall time of {renders} `GenerateManifest` requests for \
         Kustomize apps with per-app overrides ({apps} apps × {revisions} revisions of one \
         repository) sent all at once, against the same kind of requests sent one at a time \
         (each awaited before the next). The target compares the concurrent phase with the \
         ideal parallel time: the sequential wall time divided by min(cores, renders) = \
         min({cores}, {renders}) = {parallel}, what perfect use of every core would give. \
         Argo CD's repo-server applies these overrides with `kustomize edit` in its one \
         working tree per repository and so renders them one at a time; manifold edits a \
         private copy of the app directory per render.\n"
    );
    let _ = writeln!(
        body,
        "Setup: the server in a process of its own, one client connection (as the controller \
         has), the repository of `tests/support/concurrency_fixture.rs` (a base of Deployment, \
         Service and ConfigMap and a `prod` overlay adding a label and a patch) at {revisions} \
         commits that each change the base, named as the controller names them: a full SHA, \
         tags `v2`…`v{}` and the branch `main`. App *a* keeps override set *a* mod {sets} \
         (image; name suffix and label; replicas and namespace; none) at every revision. The \
         server runs with its defaults (as Argo CD's, no `--parallelismlimit`); a third phase \
         sends the same kind of requests all at once to a second server started with \
         `--parallelismlimit {cores}` (one render per core), to tell the cost of running \
         {renders} renders at once from the cost of rendering.\n",
        revisions - 1
    );
    let _ = writeln!(
        body,
        "- Every request has a name prefix no other request of the run has \
         (`seq<repeat>-a<app>-r<revision>-`, `par…`, `lim…`), so no cache or shared render can \
         answer it; `/metrics` confirms that all {} requests of a phase were rendered, and that \
         no snapshot was exported while timing (one untimed request per revision and server \
         first).\n\
         - {repeats} repetition{} of each phase; the order of the phases rotates.\n\
         - Every response is checked against the exact expected output after it is timed.\n\
         - \"CPU busy\" is the CPU time of the server process and the tools it ran (git, \
         kustomize; reaped children count in `/proc/<pid>/stat`) divided by the wall time: \
         the average number of cores they kept busy. \"CPU/render\" splits that CPU time, \
         per render, between the server's own threads and the tools. The client (this \
         process) used {:.2} s of CPU in all the phases together.\n",
        renders,
        if repeats == 1 { "" } else { "s" },
        sequential
            .iter()
            .chain(concurrent)
            .chain(limited)
            .map(|s| s.cpu.client.as_secs_f64())
            .sum::<f64>()
    );
    let row = |name: &str, stats: &Stats, latency: &Stats, samples: &[Sample]| {
        vec![
            name.to_string(),
            secs(stats.median()),
            secs(stats.min()),
            secs(stats.max()),
            format!("{:.1}", renders as f64 / stats.median().as_secs_f64()),
            ms(latency.median()),
            ms(latency.quantile(0.9)),
            ms(latency.max()),
            format!("{:.2}", busy(samples, |s| s.cpu.server + s.cpu.tools)),
            ms(per_render(samples, |s| s.cpu.server)),
            ms(per_render(samples, |s| s.cpu.tools)),
        ]
    };
    let rows = vec![
        row("sequential (one at a time)", &seq, &seq_latency, sequential),
        row("concurrent (all at once)", &par, &par_latency, concurrent),
        row(
            &format!("all at once, `--parallelismlimit {cores}`"),
            &lim,
            &lim_latency,
            limited,
        ),
        vec![
            format!("ideal parallel (sequential / {parallel})"),
            secs(ideal),
            "".into(),
            "".into(),
            format!("{:.1}", renders as f64 / ideal.as_secs_f64()),
            "".into(),
            "".into(),
            "".into(),
            "".into(),
            "".into(),
            "".into(),
        ],
    ];
    body.push_str(&harness::table(
        &[
            "phase",
            "wall (median)",
            "min",
            "max",
            "renders/s",
            "latency p50",
            "p90",
            "max",
            "CPU busy",
            "CPU/render: manifold",
            "CPU/render: tools",
        ],
        &rows,
    ));
    body.push('\n');
    let verdict = if met {
        format!("the target (≤ {TARGET:.1}×) is met")
    } else {
        format!(
            "the target (≤ {TARGET:.1}×) is **missed by {:.0}%**",
            (r / TARGET - 1.0) * 100.0
        )
    };
    let seq_busy = busy(sequential, |s| s.cpu.server + s.cpu.tools);
    let par_busy = busy(concurrent, |s| s.cpu.server + s.cpu.tools);
    let lim_ratio = lim.median().as_secs_f64() / ideal.as_secs_f64();
    let _ = writeln!(
        body,
        "Ratio concurrent / ideal (medians): **{}**: {verdict}. Speed-up of concurrent over \
         sequential: {}. With `--parallelismlimit {cores}` the same renders all at once take \
         {} of the ideal.\n",
        ratio(r, 1.0),
        ratio(seq.median().as_secs_f64(), par.median().as_secs_f64()),
        ratio(lim_ratio, 1.0),
    );
    let cpu_per_render = |samples: &[Sample]| per_render(samples, |s| s.cpu.server + s.cpu.tools);
    let (seq_cpu, par_cpu) = (cpu_per_render(sequential), cpu_per_render(concurrent));
    let cpu_growth = par_cpu.as_secs_f64() / seq_cpu.as_secs_f64();
    let _ = write!(
        body,
        "**Reading it.** One at a time, the server and its tools keep {seq_busy:.2} cores \
         busy on average: each render is mostly one `kustomize build` (a Go process, here \
         `kubectl kustomize` behind a shim) plus the private copy and edit of the overlay, \
         and while one process starts or exits part of the machine idles. All at once they \
         keep {par_busy:.2} of the {cores} cores busy: the concurrent phase is bounded by the \
         CPU, not by anything manifold serializes (no lock per repository, no queue: every \
         render's latency is about the whole phase, p50 {}, because all {renders} share {cores} \
         cores). The ideal assumes the sequential phase's CPU work divides perfectly over \
         {parallel} cores{}; ",
        ms(par_latency.median()),
        if seq_busy > 1.05 {
            format!(
                ", but that phase already keeps {seq_busy:.2} cores busy (the tool's own \
                 threads, such as Go's collector, run beside it), so even at the same CPU per \
                 render the {cores} cores allow no better than {} the ideal",
                ratio(seq_busy * parallel as f64 / cores as f64, 1.0)
            )
        } else {
            String::new()
        }
    );
    if r <= 1.0 {
        let _ = write!(
            body,
            "the concurrent phase beats it, because the sequential phase leaves the CPU \
             partly idle while processes start and exit and the concurrent one fills those \
             gaps."
        );
    } else {
        let _ = write!(
            body,
            "the concurrent phase {} it. ",
            if met {
                "comes close to"
            } else {
                "falls short of"
            }
        );
        if cpu_growth > 1.1 {
            let _ = write!(
                body,
                "The work itself grows when everything runs at once: a render costs {} of CPU \
                 all at once against {} one at a time ({}; manifold's own threads {} against \
                 {}, the tools {} against {}). The likely cause is {} processes contending for \
                 {cores} cores: context switches, cold caches, and each Go runtime's scheduler \
                 and collector working against the others'.",
                ms(par_cpu),
                ms(seq_cpu),
                ratio(cpu_growth, 1.0),
                ms(per_render(concurrent, |s| s.cpu.server)),
                ms(per_render(sequential, |s| s.cpu.server)),
                ms(per_render(concurrent, |s| s.cpu.tools)),
                ms(per_render(sequential, |s| s.cpu.tools)),
                renders,
            );
        } else {
            let _ = write!(
                body,
                "A render costs about the same CPU either way ({} all at once, {} one at a \
                 time), so the difference is cores left idle: {par_busy:.2} busy of {cores}.",
                ms(par_cpu),
                ms(seq_cpu),
            );
        }
    }
    let lim_cpu = cpu_per_render(limited);
    let lim_growth = lim_cpu.as_secs_f64() / seq_cpu.as_secs_f64();
    let _ = write!(
        body,
        " With `--parallelismlimit {cores}` at most {cores} renders run at once and the others \
         wait for a permit: a render then costs {} of CPU ({} of one at a time) and the phase \
         takes {} of the ideal",
        ms(lim_cpu),
        ratio(lim_growth, 1.0),
        ratio(lim_ratio, 1.0),
    );
    if lim_ratio + 0.05 < r {
        let _ = write!(
            body,
            ", less than without the limit: what all {renders} at once lose is the price of \
             running that many processes together, not of rendering in parallel. Like Argo \
             CD, manifold has no limit by default; on a small machine, a limit of the core \
             count is the better setting for bursts like this one."
        );
    } else {
        let _ = write!(
            body,
            ", no better than without the limit: here the contention is not what the \
             concurrent phase loses."
        );
    }
    let _ = writeln!(
        body,
        " The numbers come from a 2-core machine where other builds ran at times{}.",
        if ctx.mode == harness::Mode::Quick {
            "; quick mode: one repetition, a rough figure"
        } else {
            ""
        }
    );

    Section {
        title: format!("{apps} Kustomize apps with overrides across {revisions} revisions"),
        body,
        targets: vec![Target::new(
            "Overrides",
            &format!("{renders} renders all at once / ideal parallel (sequential / {parallel})"),
            ratio(r, 1.0),
            "≤ 1.2×",
            Some(met),
        )],
        charts: Vec::new(),
    }
}
