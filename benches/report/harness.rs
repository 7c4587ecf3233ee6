//! What every scenario shares: the run's mode, the server process, the
//! numbers a section reports, and readings of `/proc`.

#![allow(dead_code)]

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::Endpoint;

use crate::common::{process, Client};

/// gRPC message limit of every client (Argo CD's default, 100 MiB).
pub const MAX_MESSAGE_BYTES: usize = 100 << 20;

/// How long and how large a run is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// For CI: every scenario, small sizes, short windows (under 5 minutes
    /// on 2 cores).
    Quick,
    /// The sizes the report is about.
    Full,
}

/// What a scenario gets.
pub struct Ctx {
    pub mode: Mode,
    /// Clock ticks per second of `/proc/*/stat` times.
    pub ticks: f64,
}

impl Ctx {
    /// `quick` in quick mode, `full` otherwise.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        match self.mode {
            Mode::Quick => quick,
            Mode::Full => full,
        }
    }
}

/// One scenario's part of the report.
pub struct Section {
    /// The heading (without `##`).
    pub title: String,
    /// Markdown under the heading: what was measured against what, how, a
    /// table of results, the ratio, and a reading of it.
    pub body: String,
    /// Lines of the summary table at the top of the report.
    pub targets: Vec<Target>,
    /// Charts written beside BENCHMARKS.md: (file name, SVG text). The body
    /// links them as `![...](file name)`.
    pub charts: Vec<(String, String)>,
}

/// One line of the summary: a measured figure against its target.
pub struct Target {
    pub scenario: String,
    /// What was measured, e.g. "throughput at 64 callers / floor".
    pub measure: String,
    /// The figure as reported, e.g. "0.83×".
    pub result: String,
    /// The aim, e.g. "≥ 0.8×"; empty when the issue names none.
    pub target: String,
    /// Whether it was met; `None` when there is no target.
    pub met: Option<bool>,
}

impl Target {
    pub fn new(
        scenario: &str,
        measure: &str,
        result: String,
        target: &str,
        met: Option<bool>,
    ) -> Target {
        Target {
            scenario: scenario.into(),
            measure: measure.into(),
            result,
            target: target.into(),
            met,
        }
    }
}

/// Summary statistics of a set of durations.
#[derive(Clone, Debug)]
pub struct Stats {
    sorted: Vec<Duration>,
}

impl Stats {
    pub fn of(mut samples: Vec<Duration>) -> Stats {
        assert!(!samples.is_empty(), "no samples");
        samples.sort();
        Stats { sorted: samples }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Nearest-rank quantile, `q` in 0..=1.
    pub fn quantile(&self, q: f64) -> Duration {
        let n = self.sorted.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.sorted[rank - 1]
    }

    pub fn median(&self) -> Duration {
        self.quantile(0.5)
    }

    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }

    pub fn min(&self) -> Duration {
        self.sorted[0]
    }

    pub fn max(&self) -> Duration {
        *self.sorted.last().unwrap()
    }

    pub fn mean(&self) -> Duration {
        self.sorted.iter().sum::<Duration>() / self.sorted.len() as u32
    }
}

/// `d` in milliseconds with sensible precision.
pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

/// `d` in seconds, three decimals.
pub fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// `a / b` as "1.23×".
pub fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}×", a / b)
}

/// KiB as "12.3 MiB".
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A markdown table: a header row and rows of cells.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(
        out,
        "|{}|",
        header.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

/// Times `f`.
pub async fn timed<T, F: std::future::Future<Output = T>>(f: F) -> (T, Duration) {
    let start = Instant::now();
    let value = f.await;
    (value, start.elapsed())
}

/// Runs `program args` in `dir` to completion, checking it succeeded; its
/// wall time and stdout.
pub fn run_tool(program: &str, args: &[&str], dir: &std::path::Path) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    let output = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("{program}: {err}"));
    let took = start.elapsed();
    assert!(
        output.status.success(),
        "{program} {args:?} in {}: {}\n{}",
        dir.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    (took, output.stdout)
}

/// A `manifold serve` process (the release binary `cargo bench` built),
/// plaintext on 127.0.0.1 ephemeral ports, in-process cache only unless
/// `args` name Redis, with a `$TMPDIR` of its own.
pub struct Server {
    pub running: process::Running,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    /// `args` come after `--disable-tls` (both servers of every
    /// comparison speak plaintext gRPC).
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut all = Vec::from(args);
        if !all.contains(&"--disable-tls") {
            all.insert(0, "--disable-tls");
        }
        Server {
            running: process::start(&all, env),
        }
    }

    pub fn grpc(&self) -> SocketAddr {
        self.running.grpc
    }

    pub fn http(&self) -> SocketAddr {
        self.running.http
    }

    pub fn pid(&self) -> u32 {
        self.running.child.id()
    }

    /// A client over a connection of its own.
    pub async fn client(&self) -> Client {
        client(self.grpc()).await
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        process::http_get(self.http(), "/metrics")
    }

    /// Renders the server has done (`manifold_renders_total`, all labels).
    pub fn renders(&self) -> f64 {
        metric_sum(&self.metrics(), "manifold_renders_total", &[])
    }

    /// VmRSS of the server process, KiB.
    pub fn rss_kib(&self) -> u64 {
        status_kib(self.pid(), "VmRSS:").unwrap_or(0)
    }

    /// Stops it with SIGTERM and waits for its clean exit.
    pub async fn stop(self) {
        process::terminate_and_wait(self.running).await;
    }
}

/// A client over a new HTTP/2 connection to `addr`.
pub async fn client(addr: SocketAddr) -> Client {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("client connects");
    Client::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// The sum of the samples of `name` whose labels include every
/// `label="value"` pair of `labels`, in a `/metrics` text.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| {
            labels
                .iter()
                .all(|(label, value)| line.contains(&format!("{label}=\"{value}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A `kB` field (`VmRSS:`, `VmHWM:`) of `/proc/<pid>/status`.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Every process descending from `pid` (not `pid` itself), by walking
/// `/proc/*/stat` parent links.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            if let Some(parent) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
                parents.push((child, parent));
            }
        }
    }
    let mut found: HashSet<u32> = HashSet::from([pid]);
    let mut grew = true;
    while grew {
        grew = false;
        for (child, parent) in &parents {
            if found.contains(parent) && found.insert(*child) {
                grew = true;
            }
        }
    }
    found.remove(&pid);
    found.into_iter().collect()
}

/// Peaks seen by a [`Sampler`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Peaks {
    /// Largest VmRSS of the process itself, KiB.
    pub rss_kib: u64,
    /// Largest sum of its descendants' VmRSS at one sample, KiB.
    pub children_sum_kib: u64,
    /// Largest VmRSS of one descendant, KiB.
    pub child_max_kib: u64,
    /// Most descendants alive at one sample.
    pub children_max: usize,
    pub samples: u64,
}

/// Samples a process's memory and its descendants' every `every` on a
/// thread of its own until stopped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Peaks>,
}

impl Sampler {
    pub fn start(pid: u32, every: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peaks = Peaks::default();
            while !flag.load(Ordering::Relaxed) {
                peaks.rss_kib = peaks.rss_kib.max(status_kib(pid, "VmRSS:").unwrap_or(0));
                let children = descendants(pid);
                let mut sum = 0;
                for child in &children {
                    let rss = status_kib(*child, "VmRSS:").unwrap_or(0);
                    sum += rss;
                    peaks.child_max_kib = peaks.child_max_kib.max(rss);
                }
                peaks.children_sum_kib = peaks.children_sum_kib.max(sum);
                peaks.children_max = peaks.children_max.max(children.len());
                peaks.samples += 1;
                std::thread::sleep(every);
            }
            peaks
        });
        Sampler { stop, thread }
    }

    pub fn stop(self) -> Peaks {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sampler thread")
    }
}

/// CPU time (user + system) used so far by `pid` itself (`self` for
/// this process) and its waited-for children.
pub fn cpu_time(pid: &str, ticks_per_second: f64) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/*/stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat has a command name")
        .1
        .split_whitespace()
        .collect();
    // utime, stime, cutime, cstime: fields 14-17 of proc(5); `fields`
    // starts at field 3.
    let ticks: f64 = fields[11..15]
        .iter()
        .map(|f| f.parse::<f64>().expect("tick count"))
        .sum();
    Duration::from_secs_f64(ticks / ticks_per_second)
}

pub fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8_lossy(&output.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The first line a command prints (stdout, else stderr), or "not found".
pub fn version_of(program: &str, args: &[&str]) -> String {
    match std::process::Command::new(program).args(args).output() {
        Ok(output) => {
            let text = if output.stdout.is_empty() {
                output.stderr
            } else {
                output.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        }
        Err(_) => "not found".into(),
    }
}

/// Whether `program` runs (`program version`-style probe).
pub fn available(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|output| output.status.success())
}
