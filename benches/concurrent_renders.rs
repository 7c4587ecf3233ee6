//! Wall time of N Kustomize renders with per-app overrides, at several
//! revisions of one repository, sent all at once versus one at a time, to
//! a real in-process server with the real kustomize.
//!
//! `cargo bench --bench concurrent_renders`; environment:
//! `CONCURRENT_RENDERS_N` (renders per phase, default 12) and
//! `CONCURRENT_RENDERS_R` (repetitions of each phase, default 3).
//! Without `--bench` (as `cargo test --all-targets` runs it) it only makes
//! a two-render smoke check.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/support/concurrency_fixture.rs"]
mod concurrency_fixture;

use std::time::{Duration, Instant};

use common::fixtures;
use common::Client;
use concurrency_fixture::{check, request, KustomizeRepo, Overrides};
use manifold::grpc::proto::repository::{ManifestRequest, ManifestResponse};
use manifold::server::{self, Tls};

/// Commits of the repository; each is a revision the renders use.
const REVISIONS: usize = 3;

fn env_count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(value) => match value.parse() {
            Ok(n) if n > 0 => n,
            _ => panic!("{name} must be a positive integer, not {value:?}"),
        },
        Err(_) => default,
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (renders, repeats) = if bench {
        (
            env_count("CONCURRENT_RENDERS_N", 12),
            env_count("CONCURRENT_RENDERS_R", 3),
        )
    } else {
        (2, 1)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(renders, repeats, bench));
}

/// One render of a phase: which revision and overrides, and its request.
struct Case {
    revision: usize,
    overrides: Overrides,
    app_name: String,
    request: ManifestRequest,
}

/// The `count` renders of one phase: revisions and override sets in turn,
/// each with a name prefix (`<phase>-<repeat>-<i>-`) no other request of
/// the run has, so nothing could answer one from a cache.
fn cases(repo: &KustomizeRepo, phase: &str, repeat: usize, count: usize) -> Vec<Case> {
    let sets = Overrides::sets_with_none();
    let revisions = repo.revisions.len();
    (0..count)
        .map(|i| {
            let revision = i % revisions;
            let overrides =
                sets[(i / revisions) % sets.len()].with_prefix(&format!("{phase}-{repeat}-{i}-"));
            let app_name = format!("bench-{i}");
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

async fn sequential(
    client: &Client,
    cases: &[Case],
    ticks: f64,
) -> (Sample, Vec<ManifestResponse>) {
    let mut client = client.clone();
    let cpu = cpu_time(ticks);
    let start = Instant::now();
    let mut responses = Vec::with_capacity(cases.len());
    for case in cases {
        let response = client
            .generate_manifest(case.request.clone())
            .await
            .expect("render succeeds");
        responses.push(response.into_inner());
    }
    let sample = Sample {
        wall: start.elapsed(),
        cpu: cpu_time(ticks).saturating_sub(cpu),
    };
    (sample, responses)
}

async fn concurrent(
    client: &Client,
    cases: &[Case],
    ticks: f64,
) -> (Sample, Vec<ManifestResponse>) {
    let requests: Vec<_> = cases.iter().map(|case| case.request.clone()).collect();
    let cpu = cpu_time(ticks);
    let start = Instant::now();
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let mut client = client.clone();
            tokio::spawn(async move { client.generate_manifest(request).await })
        })
        .collect();
    let mut responses = Vec::with_capacity(tasks.len());
    for task in tasks {
        let response = task.await.expect("task").expect("render succeeds");
        responses.push(response.into_inner());
    }
    let sample = Sample {
        wall: start.elapsed(),
        cpu: cpu_time(ticks).saturating_sub(cpu),
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

/// CPU time used so far by this process (the in-process server) and its
/// reaped children (git, kustomize), from `/proc/self/stat`.
fn cpu_time(ticks_per_second: f64) -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat has a command name")
        .1
        .split_whitespace()
        .collect();
    // utime, stime, cutime, cstime: fields 14 to 17 of proc(5); `fields`
    // starts at field 3.
    let ticks: f64 = fields[11..15]
        .iter()
        .map(|f| f.parse::<f64>().expect("tick count"))
        .sum();
    Duration::from_secs_f64(ticks / ticks_per_second)
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8_lossy(&output.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Wall and CPU time of one phase.
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: Duration,
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2
    }
}

fn kustomize_version() -> String {
    std::process::Command::new("kustomize")
        .arg("version")
        .output()
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .filter(|version| !version.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

async fn run(renders: usize, repeats: usize, report: bool) {
    let repo = KustomizeRepo::build(REVISIONS);
    let server = server::start(common::test_config(Tls::Disabled))
        .await
        .expect("server starts");
    let client = common::client(&server).await;

    // Untimed: fetch each commit and export its snapshot once.
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

    let ticks = clock_ticks_per_second();
    let mut sequential_samples = Vec::new();
    let mut concurrent_samples = Vec::new();
    for repeat in 0..repeats {
        let seq_cases = cases(&repo, "seq", repeat, renders);
        let par_cases = cases(&repo, "par", repeat, renders);
        // Alternate which phase goes first, so neither always runs on a
        // warmer machine.
        let (seq, par) = if repeat % 2 == 0 {
            let seq = sequential(&client, &seq_cases, ticks).await;
            let par = concurrent(&client, &par_cases, ticks).await;
            (seq, par)
        } else {
            let par = concurrent(&client, &par_cases, ticks).await;
            let seq = sequential(&client, &seq_cases, ticks).await;
            (seq, par)
        };
        verify(&repo, &seq_cases, &seq.1);
        verify(&repo, &par_cases, &par.1);
        sequential_samples.push(seq.0);
        concurrent_samples.push(par.0);
    }
    server.shutdown().await.expect("server stops");

    if !report {
        println!("concurrent_renders: smoke check passed ({renders} renders per phase; run with `cargo bench` to measure)");
        return;
    }
    let sets = Overrides::sets_with_none().len();
    println!();
    println!(
        "concurrent_renders: {renders} Kustomize renders with overrides per phase \
         ({REVISIONS} revisions x {sets} override sets in turn), {repeats} repetitions, \
         kustomize {}, {} CPUs",
        kustomize_version(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "phase", "median", "min", "max", "renders/s", "CPU busy"
    );
    let mut medians = Vec::new();
    for (name, samples) in [
        ("sequential (one at a time)", &sequential_samples),
        ("concurrent (all at once)", &concurrent_samples),
    ] {
        let walls: Vec<Duration> = samples.iter().map(|s| s.wall).collect();
        let median = median(&walls);
        // CPU seconds per wall second over all repetitions: the average
        // number of cores busy during the phase.
        let busy = samples.iter().map(|s| s.cpu.as_secs_f64()).sum::<f64>()
            / walls.iter().map(Duration::as_secs_f64).sum::<f64>();
        println!(
            "{:<28} {:>9.3}s {:>9.3}s {:>9.3}s {:>10.1} {:>10.2}",
            name,
            median.as_secs_f64(),
            walls.iter().min().unwrap().as_secs_f64(),
            walls.iter().max().unwrap().as_secs_f64(),
            renders as f64 / median.as_secs_f64(),
            busy
        );
        medians.push(median);
    }
    println!(
        "ratio sequential/concurrent (medians): {:.2}",
        medians[0].as_secs_f64() / medians[1].as_secs_f64()
    );
}
