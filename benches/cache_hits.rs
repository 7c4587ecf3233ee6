//! Throughput and latency of cache-hit `GenerateManifest` calls at 64
//! concurrent callers, against a floor: the same gRPC response served from
//! a constant by a second tonic server in the same process.
//!
//! A real manifold (`manifold::server::start`, plaintext, in-process cache
//! only) and the floor (a `RepoServerService` whose `GenerateManifest`
//! returns a clone of the response manifold gave, served by tonic with the
//! same message limits and the same kind of listener) run on one
//! multi-threaded runtime with the callers. Each case's request (a full
//! SHA, so no `ls-remote`) is rendered once first; `/metrics` confirms that
//! every measured call was an in-process cache hit. The callers share one
//! HTTP/2 connection (as Argo CD's controller does), then four. Both
//! servers set TCP_NODELAY on accepted sockets (manifold does since this
//! benchmark found ~40 ms Nagle stalls without it).
//!
//! `cargo bench --bench cache_hits`; environment: `CACHE_HITS_SECONDS`
//! (measured seconds per server and row, default 5, in slices of about a
//! second that the two servers take in turns, after 1 s of warm-up) and
//! `CACHE_HITS_CALLERS` (concurrent callers, default 64). The Helm case
//! needs `helm` on `PATH` (scripts/install-tools.sh) and is skipped
//! without it.
//! Without `--bench` (as `cargo test --all-targets` runs it) it only makes
//! a short smoke check of both servers.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::fixtures::{self, GitRepo};
use manifold::grpc::proto::repository::repo_server_service_client::RepoServerServiceClient;
use manifold::grpc::proto::repository::repo_server_service_server::{
    RepoServerService, RepoServerServiceServer,
};
use manifold::grpc::proto::repository::*;
use manifold::grpc::proto::v1alpha1;
use manifold::server::{self, Tls};
use prost::Message;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

/// The gRPC message size limit of both servers and every client, as
/// `test_config` sets it for manifold (Argo CD's default, 100 MiB).
const MAX_MESSAGE_BYTES: usize = 100 << 20;

/// Untimed calls to each server before its first measured slice.
const WARM_UP: Duration = Duration::from_secs(1);

/// Untimed calls at the start of every slice, while the callers ramp up.
const RAMP: Duration = Duration::from_millis(200);

/// ConfigMaps in the Directory app.
const CONFIG_MAPS: usize = 20;

type Client = RepoServerServiceClient<Channel>;

fn env_number<T: std::str::FromStr + PartialOrd + Default + Copy>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => match value.parse::<T>() {
            Ok(n) if n > T::default() => n,
            _ => panic!("{name} must be a positive number, not {value:?}"),
        },
        Err(_) => default,
    }
}

/// What one comparison of the two servers does: after a warm-up of each,
/// `slices` measured windows of `slice` per server, the servers taking
/// turns, so both see the same background load on a shared machine.
#[derive(Clone, Copy)]
struct Load {
    callers: usize,
    warm_up: Duration,
    ramp: Duration,
    slices: u32,
    slice: Duration,
}

impl Load {
    fn measured(&self) -> Duration {
        self.slice * self.slices
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let load = if bench {
        // Slices of about one second.
        let seconds: f64 = env_number("CACHE_HITS_SECONDS", 5.0);
        let slices = seconds.round().max(1.0) as u32;
        Load {
            callers: env_number("CACHE_HITS_CALLERS", 64),
            warm_up: WARM_UP,
            ramp: RAMP,
            slices,
            slice: Duration::from_secs_f64(seconds / f64::from(slices)),
        }
    } else {
        Load {
            callers: 4,
            warm_up: Duration::ZERO,
            ramp: Duration::ZERO,
            slices: 1,
            slice: Duration::from_millis(100),
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(load, bench));
}

/// A repository with one Directory app of [`CONFIG_MAPS`] ConfigMaps
/// (about 0.5 KiB of YAML each) under `configmaps/`.
fn config_maps_repo() -> GitRepo {
    let repo = GitRepo::new();
    for i in 0..CONFIG_MAPS {
        let mut data = String::new();
        for k in 0..8 {
            data.push_str(&format!(
                "  key-{k}: \"value {k} of config map {i}: {}\"\n",
                "x".repeat(24)
            ));
        }
        repo.write(
            &format!("configmaps/cm-{i:02}.yaml"),
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings-{i:02}\n  \
                 labels:\n    app: settings\n    tier: backend\ndata:\n{data}"
            ),
        );
    }
    repo.commit("config maps");
    repo
}

/// One cached request to measure.
struct Case {
    name: String,
    request: ManifestRequest,
    /// Kept alive for the server to fetch from.
    _repo: GitRepo,
}

fn directory_case() -> Case {
    let repo = config_maps_repo();
    let sha = repo.head();
    Case {
        name: format!("directory, {CONFIG_MAPS} ConfigMaps"),
        request: common::manifest_request(&repo.url(), "configmaps", &sha),
        _repo: repo,
    }
}

fn helm_case() -> Case {
    let repo = fixtures::sources_repo();
    let sha = repo.head();
    let mut request = common::source_request(
        &repo.url(),
        "helm/guestbook",
        v1alpha1::ApplicationSource::default(),
    );
    request.revision = sha.clone();
    request.application_source.as_mut().unwrap().target_revision = sha;
    Case {
        name: "helm/guestbook chart".into(),
        request,
        _repo: repo,
    }
}

fn helm_available() -> bool {
    std::process::Command::new("helm")
        .arg("version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// The floor: every `GenerateManifest` answered with a clone of one
/// constant response; every other method unimplemented.
struct Floor {
    response: ManifestResponse,
}

fn floor_only(method: &str) -> Status {
    Status::unimplemented(format!(
        "{method}: the floor server only answers GenerateManifest"
    ))
}

#[tonic::async_trait]
impl RepoServerService for Floor {
    async fn generate_manifest(
        &self,
        _request: Request<ManifestRequest>,
    ) -> Result<Response<ManifestResponse>, Status> {
        Ok(Response::new(self.response.clone()))
    }

    async fn generate_manifest_with_files(
        &self,
        _request: Request<Streaming<ManifestRequestWithFiles>>,
    ) -> Result<Response<ManifestResponse>, Status> {
        Err(floor_only("GenerateManifestWithFiles"))
    }

    async fn test_repository(
        &self,
        _request: Request<TestRepositoryRequest>,
    ) -> Result<Response<TestRepositoryResponse>, Status> {
        Err(floor_only("TestRepository"))
    }

    async fn resolve_revision(
        &self,
        _request: Request<ResolveRevisionRequest>,
    ) -> Result<Response<ResolveRevisionResponse>, Status> {
        Err(floor_only("ResolveRevision"))
    }

    async fn list_refs(
        &self,
        _request: Request<ListRefsRequest>,
    ) -> Result<Response<Refs>, Status> {
        Err(floor_only("ListRefs"))
    }

    async fn list_oci_tags(
        &self,
        _request: Request<ListRefsRequest>,
    ) -> Result<Response<Refs>, Status> {
        Err(floor_only("ListOCITags"))
    }

    async fn list_apps(
        &self,
        _request: Request<ListAppsRequest>,
    ) -> Result<Response<AppList>, Status> {
        Err(floor_only("ListApps"))
    }

    async fn list_plugins(&self, _request: Request<()>) -> Result<Response<PluginList>, Status> {
        Err(floor_only("ListPlugins"))
    }

    async fn get_app_details(
        &self,
        _request: Request<RepoServerAppDetailsQuery>,
    ) -> Result<Response<RepoAppDetailsResponse>, Status> {
        Err(floor_only("GetAppDetails"))
    }

    async fn get_revision_metadata(
        &self,
        _request: Request<RepoServerRevisionMetadataRequest>,
    ) -> Result<Response<v1alpha1::RevisionMetadata>, Status> {
        Err(floor_only("GetRevisionMetadata"))
    }

    async fn get_oci_metadata(
        &self,
        _request: Request<RepoServerRevisionChartDetailsRequest>,
    ) -> Result<Response<v1alpha1::OciMetadata>, Status> {
        Err(floor_only("GetOCIMetadata"))
    }

    async fn get_revision_chart_details(
        &self,
        _request: Request<RepoServerRevisionChartDetailsRequest>,
    ) -> Result<Response<v1alpha1::ChartDetails>, Status> {
        Err(floor_only("GetRevisionChartDetails"))
    }

    async fn get_helm_charts(
        &self,
        _request: Request<HelmChartsRequest>,
    ) -> Result<Response<HelmChartsResponse>, Status> {
        Err(floor_only("GetHelmCharts"))
    }

    async fn get_git_files(
        &self,
        _request: Request<GitFilesRequest>,
    ) -> Result<Response<GitFilesResponse>, Status> {
        Err(floor_only("GetGitFiles"))
    }

    async fn get_git_directories(
        &self,
        _request: Request<GitDirectoriesRequest>,
    ) -> Result<Response<GitDirectoriesResponse>, Status> {
        Err(floor_only("GetGitDirectories"))
    }

    async fn update_revision_for_paths(
        &self,
        _request: Request<UpdateRevisionForPathsRequest>,
    ) -> Result<Response<UpdateRevisionForPathsResponse>, Status> {
        Err(floor_only("UpdateRevisionForPaths"))
    }
}

/// A running floor server.
struct FloorServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl FloorServer {
    /// Serves `response` on 127.0.0.1:0, plaintext, with manifold's
    /// message size limits and tonic's defaults otherwise (as manifold).
    async fn start(response: ManifestResponse) -> FloorServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("floor binds");
        let addr = listener.local_addr().expect("floor address");
        let service = RepoServerServiceServer::new(Floor { response })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        FloorServer { addr, stop, task }
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("floor task")
            .expect("floor serves until stopped");
    }
}

/// `channels` clients, each over its own HTTP/2 connection to `addr`.
async fn clients(addr: SocketAddr, channels: usize) -> Vec<Client> {
    let mut clients = Vec::with_capacity(channels);
    for _ in 0..channels {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("client connects");
        clients.push(
            RepoServerServiceClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        );
    }
    clients
}

/// What one run of the harness saw.
struct Sample {
    /// Latency of every call that completed in the measured window.
    latencies: Vec<Duration>,
    measured: Duration,
    /// CPU time of the whole process (servers and callers) in the window.
    cpu: Duration,
}

impl Sample {
    fn merge(samples: Vec<Sample>) -> Sample {
        let mut merged = Sample {
            latencies: Vec::new(),
            measured: Duration::ZERO,
            cpu: Duration::ZERO,
        };
        for sample in samples {
            merged.latencies.extend(sample.latencies);
            merged.measured += sample.measured;
            merged.cpu += sample.cpu;
        }
        merged.latencies.sort();
        assert!(!merged.latencies.is_empty(), "no call completed");
        merged
    }

    fn requests_per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.measured.as_secs_f64()
    }

    /// The latency at quantile `q` (nearest rank) of sorted latencies.
    fn quantile(&self, q: f64) -> Duration {
        let n = self.latencies.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.latencies[rank - 1]
    }

    fn max(&self) -> Duration {
        *self.latencies.last().unwrap()
    }

    /// CPU time per call, over both the servers and the callers.
    fn cpu_per_request(&self) -> Duration {
        self.cpu / self.latencies.len().max(1) as u32
    }
}

/// `callers` callers, spread over `clients` in turn, each sending
/// `request` in a loop for `ramp` then `measure`; the calls that complete
/// in the second part are the sample. Each response is checked against
/// `expected` (cheaply: count and first manifest).
async fn drive(
    clients: &[Client],
    request: &ManifestRequest,
    expected: &ManifestResponse,
    callers: usize,
    (ramp, measure): (Duration, Duration),
    ticks: f64,
) -> Sample {
    let window_start = Instant::now() + ramp;
    let window_end = window_start + measure;
    let (cpu_tx, cpu_rx) = oneshot::channel();
    // The CPU clock is read at the window's edges by a task of its own.
    let cpu_task = tokio::spawn(async move {
        tokio::time::sleep_until(window_start.into()).await;
        let begin = cpu_time(ticks);
        tokio::time::sleep_until(window_end.into()).await;
        let _ = cpu_tx.send(cpu_time(ticks).saturating_sub(begin));
    });
    let tasks: Vec<_> = (0..callers)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            let request = request.clone();
            let expected_count = expected.manifests.len();
            let expected_first = expected.manifests.first().cloned();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let sent = Instant::now();
                    if sent >= window_end {
                        break;
                    }
                    let response = client
                        .generate_manifest(request.clone())
                        .await
                        .expect("GenerateManifest succeeds")
                        .into_inner();
                    let done = Instant::now();
                    assert_eq!(response.manifests.len(), expected_count);
                    assert_eq!(response.manifests.first(), expected_first.as_ref());
                    if done >= window_start && done <= window_end {
                        latencies.push(done - sent);
                    }
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("caller"));
    }
    cpu_task.await.expect("CPU clock task");
    let cpu = cpu_rx.await.expect("CPU time of the window");
    Sample {
        latencies,
        measured: measure,
        cpu,
    }
}

/// Both servers under the same load: a warm-up of each, then measured
/// slices in turn (`manifold_first` says who starts); the merged samples.
async fn compare(
    manifold_clients: &[Client],
    floor_clients: &[Client],
    case: &Case,
    expected: &ManifestResponse,
    load: Load,
    manifold_first: bool,
    ticks: f64,
) -> (Sample, Sample) {
    let run = |clients, window| {
        drive(
            clients,
            &case.request,
            expected,
            load.callers,
            window,
            ticks,
        )
    };
    if !load.warm_up.is_zero() {
        run(manifold_clients, (load.warm_up, Duration::ZERO)).await;
        run(floor_clients, (load.warm_up, Duration::ZERO)).await;
    }
    let window = (load.ramp, load.slice);
    let (mut manifold, mut floor) = (Vec::new(), Vec::new());
    for slice in 0..load.slices {
        if (slice % 2 == 0) == manifold_first {
            manifold.push(run(manifold_clients, window).await);
            floor.push(run(floor_clients, window).await);
        } else {
            floor.push(run(floor_clients, window).await);
            manifold.push(run(manifold_clients, window).await);
        }
    }
    (Sample::merge(manifold), Sample::merge(floor))
}

/// CPU time used so far by this process, from `/proc/self/stat`.
fn cpu_time(ticks_per_second: f64) -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat has a command name")
        .1
        .split_whitespace()
        .collect();
    // utime and stime: fields 14 and 15 of proc(5); `fields` starts at
    // field 3.
    let ticks: f64 = fields[11..13]
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

/// manifold's manifest-cache lookups so far, from its `/metrics`:
/// (answered from memory, misses).
async fn manifest_lookups(http_addr: SocketAddr) -> (u64, u64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(http_addr)
        .await
        .expect("metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("metrics request");
    let mut body = String::new();
    stream
        .read_to_string(&mut body)
        .await
        .expect("metrics response");
    let count = |result: &str| -> u64 {
        body.lines()
            .filter(|line| {
                line.starts_with("manifold_cache_lookups_total{")
                    && line.contains("kind=\"manifests\"")
                    && line.contains(&format!("result=\"{result}\""))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    (count("memory"), count("miss"))
}

/// VmRSS of this process, from `/proc/self/status`.
fn rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .map(|value| value.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// One line of the report.
struct Row {
    case: String,
    channels: usize,
    manifold: Sample,
    floor: Sample,
}

fn micros(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

async fn run(load: Load, report: bool) {
    let rss_start = rss();
    let mut cases = vec![directory_case()];
    let channel_counts: &[usize] = if report { &[1, 4] } else { &[1] };
    if report {
        if helm_available() {
            cases.push(helm_case());
        } else {
            println!("cache_hits: no runnable `helm` on PATH, skipping the Helm case");
        }
    }
    let server = server::start(common::test_config(Tls::Disabled))
        .await
        .expect("server starts");
    let ticks = clock_ticks_per_second();

    // Warm the cache: one request per case (the render), then capture the
    // response the floor will serve, from a second call (a cache hit).
    let mut prepared = Vec::new();
    for case in cases {
        let mut client = clients(server.grpc_addr(), 1).await.remove(0);
        let rendered = client
            .generate_manifest(case.request.clone())
            .await
            .expect("the first render succeeds")
            .into_inner();
        let cached = client
            .generate_manifest(case.request.clone())
            .await
            .expect("the cached answer")
            .into_inner();
        assert_eq!(rendered, cached, "the cache answers what was rendered");
        assert!(!cached.manifests.is_empty());
        let floor = FloorServer::start(cached.clone()).await;
        prepared.push((case, cached, floor));
    }
    let rss_warm = rss();
    let lookups_warm = manifest_lookups(server.http_addr()).await;

    let mut rows = Vec::new();
    let mut order = 0;
    for (case, expected, floor) in &prepared {
        for &channels in channel_counts {
            let manifold_clients = clients(server.grpc_addr(), channels).await;
            let floor_clients = clients(floor.addr, channels).await;
            {
                let (manifold, floor) = compare(
                    &manifold_clients,
                    &floor_clients,
                    case,
                    expected,
                    load,
                    order % 2 == 0,
                    ticks,
                )
                .await;
                order += 1;
                rows.push(Row {
                    case: case.name.clone(),
                    channels,
                    manifold,
                    floor,
                });
            }
        }
    }
    let rss_end = rss();
    // Every call was answered from the in-process cache: no miss (so no
    // render) since the warm-up, and at least one memory hit per call.
    let lookups_end = manifest_lookups(server.http_addr()).await;
    let manifold_calls: usize = rows.iter().map(|r| r.manifold.latencies.len()).sum();
    assert_eq!(lookups_end.1, lookups_warm.1, "a manifest lookup missed");
    assert!(lookups_end.0 - lookups_warm.0 >= manifold_calls as u64);

    let sizes: Vec<(String, usize, usize)> = prepared
        .iter()
        .map(|(case, expected, _)| {
            (
                case.name.clone(),
                expected.manifests.len(),
                expected.encoded_len(),
            )
        })
        .collect();
    for (_, _, floor) in prepared {
        floor.shutdown().await;
    }
    server.shutdown().await.expect("server stops");

    if !report {
        let calls: usize = rows
            .iter()
            .map(|r| r.manifold.latencies.len() + r.floor.latencies.len())
            .sum();
        println!(
            "cache_hits: smoke check passed ({calls} cached calls; run with `cargo bench` to measure)"
        );
        return;
    }
    println!();
    println!(
        "cache_hits: cache-hit GenerateManifest, {} concurrent callers; per server and row \
         {:.1} s measured in {} slices of {:.1} s (each after {:.1} s of ramp-up), the servers \
         taking turns, after {:.0} s of warm-up; {} CPUs",
        load.callers,
        load.measured().as_secs_f64(),
        load.slices,
        load.slice.as_secs_f64(),
        load.ramp.as_secs_f64(),
        load.warm_up.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for (name, manifests, bytes) in &sizes {
        println!("  {name}: {manifests} manifests, response {bytes} bytes of protobuf");
    }
    println!(
        "{:<26} {:>3} {:<9} {:>9} {:>7} {:>7} {:>7} {:>7} {:>9}",
        "case", "ch", "server", "req/s", "p50 us", "p90 us", "p99 us", "max us", "CPU/req"
    );
    for row in &rows {
        for (server, sample) in [("manifold", &row.manifold), ("floor", &row.floor)] {
            println!(
                "{:<26} {:>3} {:<9} {:>9.0} {:>7} {:>7} {:>7} {:>7} {:>7}us",
                row.case,
                row.channels,
                server,
                sample.requests_per_second(),
                micros(sample.quantile(0.50)),
                micros(sample.quantile(0.90)),
                micros(sample.quantile(0.99)),
                micros(sample.max()),
                micros(sample.cpu_per_request()),
            );
        }
    }
    println!("ratios manifold/floor:");
    for row in &rows {
        let (m, f) = (&row.manifold, &row.floor);
        println!(
            "  {:<26} {} ch throughput {:.2}, p50 latency {:.2}, p99 latency {:.2}, \
             CPU/req {:.2}",
            row.case,
            row.channels,
            m.requests_per_second() / f.requests_per_second(),
            m.quantile(0.50).as_secs_f64() / f.quantile(0.50).as_secs_f64(),
            m.quantile(0.99).as_secs_f64() / f.quantile(0.99).as_secs_f64(),
            m.cpu_per_request().as_secs_f64() / f.cpu_per_request().as_secs_f64(),
        );
    }
    println!(
        "manifold's manifest cache while measuring: {} memory hits, {} misses",
        lookups_end.0 - lookups_warm.0,
        lookups_end.1 - lookups_warm.1
    );
    println!("RSS: at start {rss_start}, caches warm {rss_warm}, at end {rss_end}");
}
