//! Clone and incremental fetch of a large repository: manifold fetching a
//! commit into a fresh object store (and then new commits into it) against
//! the git CLI doing the same by hand (`git clone --bare`, `git fetch`).
//!
//! manifold is asked with `GetRevisionMetadata` at a full commit SHA: a
//! full SHA needs no `git ls-remote`, and the answer is read from the
//! commit object in process, so the call is one fetch into the store and
//! nothing else (no render, no export of the tree).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use manifold::grpc::proto::repository::RepoServerRevisionMetadataRequest;

use crate::common::{self, Client};
use crate::harness::{
    cpu_time, metric_sum, mib, ms, ratio, secs, table, Ctx, Section, Server, Stats, Target,
};

/// The size of the generated repository and of the runs.
#[derive(Clone, Copy)]
struct Shape {
    /// Directories at each of the four levels below the root.
    fanout: [usize; 4],
    /// Files in each leaf directory.
    files_per_dir: usize,
    /// `data` lines of each file (about 76 bytes each).
    keys: usize,
    /// Commits after the first (which adds every file).
    history: usize,
    /// Files each of those commits changes.
    history_files: usize,
    /// A lightweight tag every this many commits.
    tag_every: usize,
    clone_rounds: usize,
    fetch_rounds: usize,
    /// Commits pushed to the origin before each fetch round.
    fetch_commits: usize,
    /// Files those commits change in total.
    fetch_files: usize,
}

impl Shape {
    fn files(&self) -> usize {
        self.fanout.iter().product::<usize>() * self.files_per_dir
    }
}

/// The three ways of getting the objects, measured in turns.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Way {
    /// `GetRevisionMetadata` at the new commit's SHA.
    Manifold,
    /// `git clone --bare` / `git fetch` in that clone.
    Cli,
    /// manifold's own git command, run by hand into a store of our own.
    ByHand,
}

const WAYS: [Way; 3] = [Way::Manifold, Way::Cli, Way::ByHand];

/// The refspecs of a bare clone's first fetch, plus tags (which the
/// clone gets by following them and manifold fetches explicitly).
const REFSPECS: [&str; 2] = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];

/// Settings every git run here gets, as manifold gives its own: no user
/// configuration, no automatic gc or maintenance after a fetch.
fn git_command(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .args(["-c", "gc.auto=0", "-c", "maintenance.auto=false"])
        .current_dir(dir)
        .env("HOME", "/dev/null")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null());
    command
}

/// Runs git with `args` in `dir`, checking it succeeded: its wall time
/// (spawn to exit) and trimmed stdout.
fn git(dir: &Path, args: &[&str]) -> (Duration, String) {
    let start = Instant::now();
    let output = git_command(dir)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("git {args:?}: {err}"));
    let took = start.elapsed();
    assert!(
        output.status.success(),
        "git {args:?} in {}: {}\n{}",
        dir.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    (
        took,
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
    )
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The path of file `index`: five levels deep.
fn file_path(shape: &Shape, index: usize) -> String {
    let leaf = index % shape.files_per_dir;
    let mut dir = index / shape.files_per_dir;
    let mut digits = [0; 4];
    for level in (0..4).rev() {
        digits[level] = dir % shape.fanout[level];
        dir /= shape.fanout[level];
    }
    format!(
        "team-{:02}/service-{:02}/env-{}/part-{}/config-{leaf:02}.yaml",
        digits[0], digits[1], digits[2], digits[3]
    )
}

/// The content of file `index` at `version`: a ConfigMap whose lines
/// carry random base64 values (they compress to about 80%). Going from
/// one version to the next changes one line in eight, so successive
/// versions delta well against each other.
fn file_content(out: &mut Vec<u8>, shape: &Shape, index: usize, version: u32) {
    out.clear();
    let _ = write!(
        out,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-{index}\ndata:\n"
    );
    for key in 0..shape.keys {
        let slot = (key % 8) as u32;
        let generation = version / 8 + u32::from(slot < version % 8);
        let seed = splitmix(splitmix(splitmix(index as u64) ^ key as u64) ^ u64::from(generation));
        let _ = write!(out, "  key-{key:02}: \"");
        let mut state = seed;
        for chunk in 0..6 {
            state = splitmix(state);
            let chars = if chunk == 5 { 6 } else { 10 };
            for c in 0..chars {
                out.push(BASE64[((state >> (c * 6)) & 63) as usize]);
            }
        }
        out.extend_from_slice(b"\"\n");
    }
}

/// A bare repository generated with `git fast-import`, served over
/// `file://`.
struct Origin {
    _dir: tempfile::TempDir,
    git_dir: PathBuf,
    url: String,
    shape: Shape,
    /// The version of every file.
    versions: Vec<u32>,
    /// Commits so far (for timestamps and tags).
    commits: usize,
    head: String,
    head_message: String,
    rng: u64,
}

impl Origin {
    fn create(shape: Shape) -> Origin {
        let dir = tempfile::Builder::new()
            .prefix("bench-origin-")
            .tempdir()
            .expect("temporary directory");
        let git_dir = dir.path().join("origin.git");
        git(
            dir.path(),
            &[
                "init",
                "--quiet",
                "--bare",
                "--initial-branch=main",
                "origin.git",
            ],
        );
        let url = format!("file://{}", git_dir.display());
        let mut origin = Origin {
            _dir: dir,
            git_dir,
            url,
            shape,
            versions: vec![0; shape.files()],
            commits: 0,
            head: String::new(),
            head_message: String::new(),
            rng: 0x5eed,
        };
        origin.import(true, shape.history, shape.history_files);
        // As a hosting server keeps it: one pack with a bitmap (a clone
        // then sends the pack as it is).
        git(&origin.git_dir, &["repack", "-a", "-d", "-b", "-q"]);
        origin
    }

    fn next_random(&mut self) -> u64 {
        self.rng = splitmix(self.rng);
        self.rng
    }

    /// Imports (with `initial`) a first commit adding every file, then
    /// `commits` commits each changing `files` files picked at random.
    fn import(&mut self, initial: bool, commits: usize, files: usize) {
        let mut child = git_command(&self.git_dir)
            .args(["fast-import", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("git fast-import starts");
        let mut stream =
            std::io::BufWriter::with_capacity(1 << 20, child.stdin.take().expect("stdin"));
        let mut parent = (!self.head.is_empty()).then(|| self.head.clone());
        if initial {
            let all: Vec<usize> = (0..self.versions.len()).collect();
            let message = format!("Add {} configuration files", all.len());
            write_commit(self, &mut stream, &message, &all, None);
            parent = None;
        }
        for n in 0..commits {
            let mut changed = Vec::with_capacity(files);
            while changed.len() < files {
                let index = (self.next_random() % self.versions.len() as u64) as usize;
                if !changed.contains(&index) {
                    changed.push(index);
                }
            }
            changed.sort_unstable();
            for &index in &changed {
                self.versions[index] += 1;
            }
            let message = format!(
                "Change {files} files ({} of {commits})\n\nCommit {} of the history.",
                n + 1,
                self.commits + 1
            );
            // The first commit of an import onto an existing branch names
            // its parent; the rest follow on the branch.
            let parent = parent.take();
            write_commit(self, &mut stream, &message, &changed, parent.as_deref());
        }
        drop(stream);
        let output = child.wait_with_output().expect("git fast-import runs");
        assert!(
            output.status.success(),
            "git fast-import: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        self.head = git(&self.git_dir, &["rev-parse", "refs/heads/main"]).1;
    }

    /// Size of the origin's objects (KiB) and their number.
    fn objects(&self) -> (u64, u64) {
        let text = git(&self.git_dir, &["count-objects", "-v"]).1;
        let field = |name: &str| -> u64 {
            text.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(0)
        };
        (
            field("size-pack:") + field("size:"),
            field("in-pack:") + field("count:"),
        )
    }
}

/// Writes one commit changing the files `changed` (at their current
/// versions) to a fast-import stream; `parent` (a SHA already in the
/// repository) for the first commit of an import onto an existing branch.
fn write_commit(
    origin: &mut Origin,
    stream: &mut impl std::io::Write,
    message: &str,
    changed: &[usize],
    parent: Option<&str>,
) {
    origin.commits += 1;
    let when = 1_700_000_000 + origin.commits as u64 * 600;
    let mark = origin.commits;
    let _ = write!(
        stream,
        "commit refs/heads/main\nmark :{mark}\n\
         author Bench Author <author@example.com> {when} +0000\n\
         committer Bench Committer <committer@example.com> {when} +0000\n\
         data {}\n{message}\n",
        message.len()
    );
    if let Some(parent) = parent {
        let _ = writeln!(stream, "from {parent}");
    }
    let mut content = Vec::new();
    for &index in changed {
        file_content(&mut content, &origin.shape, index, origin.versions[index]);
        let _ = write!(
            stream,
            "M 100644 inline {}\ndata {}\n",
            file_path(&origin.shape, index),
            content.len()
        );
        stream.write_all(&content).expect("fast-import stream");
        stream.write_all(b"\n").expect("fast-import stream");
    }
    stream.write_all(b"\n").expect("fast-import stream");
    if origin.commits.is_multiple_of(origin.shape.tag_every) {
        let _ = write!(
            stream,
            "reset refs/tags/v{}\nfrom :{mark}\n\n",
            origin.commits / origin.shape.tag_every
        );
    }
    origin.head_message = message.to_string();
}

/// Bytes under `path` (files and symlinks, not following them).
fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => dir_bytes(&entry.path()),
            _ => entry.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// One measured transfer.
#[derive(Clone, Copy)]
struct Sample {
    /// Wall time: send to response (manifold), spawn to exit (git).
    wall: Duration,
    /// CPU time (user + system) of the server and the processes it
    /// waited for (manifold), or of the git processes (by hand).
    cpu: Duration,
    /// manifold only: its own time in `git fetch` (its metric).
    in_git: Option<Duration>,
}

/// Runs git like [`git`], also measuring the CPU time of the processes
/// (through this process's waited-for children).
fn timed_git(dir: &Path, args: &[&str], ticks: f64) -> Sample {
    let cpu = cpu_time("self", ticks);
    let (wall, _) = git(dir, args);
    Sample {
        wall,
        cpu: cpu_time("self", ticks).saturating_sub(cpu),
        in_git: None,
    }
}

/// A manifold server with a `$TMPDIR` we can measure.
struct Manifold {
    server: Server,
    tmp: tempfile::TempDir,
    client: Client,
}

impl Manifold {
    async fn start() -> Manifold {
        let tmp = scratch("bench-git-transfer-");
        let server = Server::start_with_env(&[], &[("TMPDIR", tmp.path().to_str().unwrap())]);
        let client = server.client().await;
        Manifold {
            server,
            tmp,
            client,
        }
    }

    /// `GetRevisionMetadata` at the origin's head, timed from send to
    /// response; checks the answer is that commit's, and that the server
    /// ran exactly one fetch for it and no `ls-remote`.
    async fn metadata(&mut self, origin: &Origin, ticks: f64) -> Sample {
        let (fetches_before, _, seconds_before) = self.git_counts();
        let request = RepoServerRevisionMetadataRequest {
            repo: common::repo(&origin.url),
            revision: origin.head.clone(),
            ..Default::default()
        };
        let pid = self.server.pid().to_string();
        let cpu = cpu_time(&pid, ticks);
        let start = Instant::now();
        let response = self.client.get_revision_metadata(request).await;
        let wall = start.elapsed();
        let cpu = cpu_time(&pid, ticks).saturating_sub(cpu);
        let metadata = response
            .unwrap_or_else(|status| panic!("GetRevisionMetadata {}: {status}", origin.head))
            .into_inner();
        assert_eq!(metadata.message, origin.head_message.trim());
        assert_eq!(metadata.author, "Bench Author <author@example.com>");
        let (fetches, ls_remotes, seconds) = self.git_counts();
        assert_eq!(fetches, fetches_before + 1.0, "one fetch per call");
        assert_eq!(ls_remotes, 0.0, "no ls-remote for a full SHA");
        Sample {
            wall,
            cpu,
            in_git: Some(Duration::from_secs_f64(seconds - seconds_before)),
        }
    }

    /// (fetches, ls-remotes, seconds in fetches) from `/metrics`.
    fn git_counts(&self) -> (f64, f64, f64) {
        let text = self.server.metrics();
        let fetch = [("request_type", "fetch")];
        (
            metric_sum(&text, "argocd_git_request_total", &fetch),
            metric_sum(
                &text,
                "argocd_git_request_total",
                &[("request_type", "ls-remote")],
            ),
            metric_sum(&text, "argocd_git_request_duration_seconds_sum", &fetch),
        )
    }
}

fn scratch(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temporary directory")
}

/// manifold's fetch command (`src/git/store.rs`).
fn fetch_args(url: &str) -> Vec<&str> {
    let mut args = vec![
        "fetch",
        "--force",
        "--prune",
        "--quiet",
        "--no-write-fetch-head",
        "--",
        url,
    ];
    args.extend(REFSPECS);
    args
}

fn check_head(git_dir: &Path, origin: &Origin, what: &str) {
    let head = git(git_dir, &["rev-parse", "refs/heads/main"]).1;
    assert_eq!(head, origin.head, "{what}: main after the fetch");
}

/// The samples of one phase, by way ([`WAYS`] order).
#[derive(Default)]
struct Phase {
    samples: [Vec<Sample>; 3],
}

impl Phase {
    fn wall(&self, way: Way) -> Stats {
        Stats::of(self.samples[way as usize].iter().map(|s| s.wall).collect())
    }

    fn cpu(&self, way: Way) -> Duration {
        Stats::of(self.samples[way as usize].iter().map(|s| s.cpu).collect()).median()
    }

    fn in_git(&self) -> Duration {
        Stats::of(
            self.samples[Way::Manifold as usize]
                .iter()
                .filter_map(|s| s.in_git)
                .collect(),
        )
        .median()
    }

    /// Median wall time of `a` over `b`.
    fn ratio(&self, a: Way, b: Way) -> f64 {
        self.wall(a).median().as_secs_f64() / self.wall(b).median().as_secs_f64()
    }

    fn cpu_ratio(&self, a: Way, b: Way) -> f64 {
        self.cpu(a).as_secs_f64() / self.cpu(b).as_secs_f64().max(1e-9)
    }
}

pub async fn run(ctx: &Ctx) -> Section {
    let shape = ctx.pick(
        Shape {
            fanout: [4, 4, 3, 2],
            files_per_dir: 16,
            keys: 52,
            history: 20,
            history_files: 10,
            tag_every: 10,
            clone_rounds: 2,
            fetch_rounds: 3,
            fetch_commits: 3,
            fetch_files: 30,
        },
        Shape {
            fanout: [8, 8, 6, 5],
            files_per_dir: 16,
            keys: 52,
            history: 300,
            history_files: 40,
            tag_every: 25,
            clone_rounds: 3,
            fetch_rounds: 6,
            fetch_commits: 3,
            fetch_files: 102,
        },
    );
    let ticks = ctx.ticks;
    let setup_started = Instant::now();
    let mut origin = Origin::create(shape);
    let setup = setup_started.elapsed();
    let (origin_kib, origin_objects) = origin.objects();
    eprintln!(
        "report: git_transfer: origin of {} files, {} commits, {} objects, {} in {:.1} s",
        shape.files(),
        origin.commits,
        origin_objects,
        mib(origin_kib),
        setup.as_secs_f64()
    );

    // Clones: a fresh server, a fresh CLI clone, a fresh store by hand;
    // the last round's are kept for the fetches.
    let mut clone = Phase::default();
    let mut disk = [0u64; 3];
    let mut kept_server = None;
    let mut kept_cli = None;
    let mut kept_store = None;
    for round in 0..shape.clone_rounds {
        let last = round + 1 == shape.clone_rounds;
        for turn in 0..3 {
            let way = WAYS[(round + turn) % 3];
            let sample = match way {
                Way::Manifold => {
                    let mut manifold = Manifold::start().await;
                    let sample = manifold.metadata(&origin, ticks).await;
                    disk[way as usize] = dir_bytes(manifold.tmp.path());
                    if last {
                        kept_server = Some(manifold);
                    } else {
                        manifold.server.stop().await;
                    }
                    sample
                }
                Way::Cli => {
                    let dir = scratch("bench-clone-");
                    let sample = timed_git(
                        dir.path(),
                        &["clone", "--bare", "--quiet", &origin.url, "clone.git"],
                        ticks,
                    );
                    let git_dir = dir.path().join("clone.git");
                    check_head(&git_dir, &origin, "git clone --bare");
                    disk[way as usize] = dir_bytes(&git_dir);
                    if last {
                        kept_cli = Some((dir, git_dir));
                    }
                    sample
                }
                Way::ByHand => {
                    let dir = scratch("bench-store-");
                    let init = timed_git(
                        dir.path(),
                        &["init", "--quiet", "--bare", "store.git"],
                        ticks,
                    );
                    let git_dir = dir.path().join("store.git");
                    let fetch = timed_git(&git_dir, &fetch_args(&origin.url), ticks);
                    check_head(&git_dir, &origin, "manifold's fetch by hand");
                    disk[way as usize] = dir_bytes(&git_dir);
                    if last {
                        kept_store = Some((dir, git_dir));
                    }
                    Sample {
                        wall: init.wall + fetch.wall,
                        cpu: init.cpu + fetch.cpu,
                        in_git: None,
                    }
                }
            };
            clone.samples[way as usize].push(sample);
        }
    }

    // Incremental fetches: new commits on the origin, then each way
    // fetches them into what it cloned.
    let mut manifold = kept_server.expect("kept server");
    let (_cli_dir, cli_git) = kept_cli.expect("kept clone");
    let (_store_dir, store_git) = kept_store.expect("kept store");
    let mut fetch = Phase::default();
    let mut pushed_objects = 0;
    for round in 0..shape.fetch_rounds {
        let before = origin.objects().1;
        origin.import(
            false,
            shape.fetch_commits,
            shape.fetch_files / shape.fetch_commits,
        );
        pushed_objects = origin.objects().1 - before;
        for turn in 0..3 {
            let way = WAYS[(round + turn) % 3];
            let sample = match way {
                Way::Manifold => manifold.metadata(&origin, ticks).await,
                Way::Cli => {
                    let mut args = vec!["fetch", "--quiet", "origin"];
                    args.extend(REFSPECS);
                    let sample = timed_git(&cli_git, &args, ticks);
                    check_head(&cli_git, &origin, "git fetch");
                    sample
                }
                Way::ByHand => {
                    let sample = timed_git(&store_git, &fetch_args(&origin.url), ticks);
                    check_head(&store_git, &origin, "manifold's fetch by hand");
                    sample
                }
            };
            fetch.samples[way as usize].push(sample);
        }
    }
    let store_after = dir_bytes(manifold.tmp.path());
    manifold.server.stop().await;

    let mut body = String::new();
    let refspecs = REFSPECS.map(|r| format!("'{r}'")).join(" ");
    let mut sample_file = Vec::new();
    file_content(&mut sample_file, &shape, 0, 0);
    body.push_str(&format!(
        "**What it measures.** Getting a large repository into an empty object store (clone), \
         then a few new commits into it (incremental fetch): manifold, asked through gRPC, \
         against the git CLI run by hand on the same repository over the same `file://` URL. \
         manifold is asked with `GetRevisionMetadata` at the new commit's full SHA: a full \
         SHA needs no `git ls-remote`, and the answer is read in process from the commit \
         object, so the call is one `git fetch` into the server's store for that remote and \
         nothing else (no render, no export of the tree); `GenerateManifest` or \
         `ResolveRevision` at a branch would add an `ls-remote`. manifold's time is from \
         sending the request to the decoded response, on a connection opened beforehand; \
         git's is the process's wall time. A third row runs manifold's own command by hand \
         (`git init --bare`, then `git fetch --force --prune --quiet --no-write-fetch-head -- \
         URL {refspecs}`), which splits what manifold adds from what its choice of command \
         costs.\n\n"
    ));
    body.push_str(&format!(
        "**Setup.** A bare repository generated with `git fast-import`: {files} files of \
         {size:.1} KiB (ConfigMaps of random base64 values, which compress to about 80%) five \
         directories deep, {commits} commits (the first adds every file, each later one \
         changes {history_files}), a lightweight tag every {tag_every} commits; then `git \
         repack -a -d -b`, one pack with a bitmap as a hosting server keeps it (a clone is \
         sent that pack as it is): {objects} objects, {pack} packed, {setup} to generate. \
         Every git run, the server's and ours, has no user configuration and no automatic gc \
         or maintenance (`gc.auto=0`, `maintenance.auto=false`, as manifold sets).\n\n\
         - *Clone*, {clone_rounds} rounds, the three ways in turns (the order rotated each \
         round): a fresh `manifold serve` with its own empty `$TMPDIR` and one \
         `GetRevisionMetadata`; `git clone --bare --quiet URL`; manifold's command by hand.\n\
         - *Incremental fetch*, {fetch_rounds} rounds: {fetch_commits} new commits on the \
         origin changing {fetch_files} files in all (fast-import again, left as a pack of \
         their own as after a push: {pushed} objects a round), then in turns: the same call \
         at the new head on the server of the last clone round; `git fetch --quiet origin \
         {refspecs}` in the last CLI clone (a bare clone records no fetch refspec: these are \
         the ones its clone fetched with, tags made explicit as manifold fetches them); \
         manifold's command by hand in the last hand-made store.\n\
         - *CPU* is user + system time of the server and the processes it waited for \
         (manifold), or of the git processes and theirs (git); both include the \
         `upload-pack` that serves the `file://` URL. It is steadier than wall time on this \
         shared 2-core machine.\n\
         - Checked: every answer is the new commit's (message and author); the server's \
         `/metrics` counts exactly one fetch per call and no `ls-remote`; every CLI clone and \
         hand-made store ends with `main` at the origin's head.\n\n",
        files = shape.files(),
        size = sample_file.len() as f64 / 1024.0,
        commits = 1 + shape.history,
        history_files = shape.history_files,
        tag_every = shape.tag_every,
        objects = origin_objects,
        pack = mib(origin_kib),
        setup = secs(setup),
        clone_rounds = shape.clone_rounds,
        fetch_rounds = shape.fetch_rounds,
        fetch_commits = shape.fetch_commits,
        fetch_files = shape.fetch_files,
        pushed = pushed_objects,
    ));
    let rows = |phase: &Phase, names: [&str; 3], disk: Option<&[u64; 3]>| -> Vec<Vec<String>> {
        WAYS.iter()
            .zip(names)
            .map(|(&way, name)| {
                let wall = phase.wall(way);
                let mut row = vec![
                    name.to_string(),
                    secs(wall.median()),
                    secs(wall.min()),
                    secs(wall.max()),
                    secs(phase.cpu(way)),
                    if way == Way::Manifold {
                        secs(phase.in_git())
                    } else {
                        "—".into()
                    },
                ];
                if let Some(disk) = disk {
                    row.push(mib(disk[way as usize] / 1024));
                }
                row
            })
            .collect()
    };
    let header = [
        "",
        "median",
        "min",
        "max",
        "CPU (median)",
        "in `git fetch` (server's metric)",
        "on disk",
    ];
    body.push_str("**Clone** (wall time unless noted):\n\n");
    body.push_str(&table(
        &header,
        &rows(
            &clone,
            [
                "manifold `GetRevisionMetadata`, fresh server",
                "`git clone --bare`",
                "manifold's command by hand (`init` + `fetch`)",
            ],
            Some(&disk),
        ),
    ));
    let (m, c, h) = (Way::Manifold, Way::Cli, Way::ByHand);
    body.push_str(&format!(
        "\nmanifold / `git clone --bare` (medians): **{}** (CPU {}); manifold / its command by \
         hand: {}; by hand / `git clone`: {}. On disk, manifold's figure is its whole \
         `$TMPDIR`.\n\n",
        ratio(clone.ratio(m, c), 1.0),
        ratio(clone.cpu_ratio(m, c), 1.0),
        ratio(clone.ratio(m, h), 1.0),
        ratio(clone.ratio(h, c), 1.0),
    ));
    body.push_str("**Incremental fetch** (wall time unless noted):\n\n");
    body.push_str(&table(
        &header[..6],
        &rows(
            &fetch,
            [
                "manifold `GetRevisionMetadata` at the new head",
                "`git fetch` in the bare clone",
                "manifold's command by hand",
            ],
            None,
        ),
    ));
    body.push_str(&format!(
        "\nmanifold / `git fetch` (medians): **{}** (CPU {}); manifold / its command by hand: \
         {}; by hand / `git fetch`: {}. The server's whole `$TMPDIR` after every round: \
         {}.\n\n",
        ratio(fetch.ratio(m, c), 1.0),
        ratio(fetch.cpu_ratio(m, c), 1.0),
        ratio(fetch.ratio(m, h), 1.0),
        ratio(fetch.ratio(h, c), 1.0),
        mib(store_after / 1024),
    ));

    let clone_ratio = clone.ratio(m, c);
    let fetch_ratio = fetch.ratio(m, c);
    let outside = |phase: &Phase| phase.wall(m).median().saturating_sub(phase.in_git());
    body.push_str(&format!(
        "**Reading it.** manifold's time is git's: outside its `git fetch` the call spends {} \
         (clone) and {} (fetch) on everything else (the gRPC call, creating the store, \
         looking the commit up before and after the fetch, reading its metadata). ",
        ms(outside(&clone)),
        ms(outside(&fetch)),
    ));
    let mut verdict =
        |what: &str, ratio_value: f64, target: f64, cli: &str, difference: &str, phase: &Phase| {
            if ratio_value <= target {
                body.push_str(&format!(
                    "The {what} is within the {target}× target ({}). ",
                    ratio(ratio_value, 1.0)
                ));
            } else {
                body.push_str(&format!(
                    "The {what} misses the {target}× target by {:.0}% ({}): manifold's command by \
                 hand takes {} of `{cli}` and manifold {} of its command by hand, so about {} \
                 of the gap is the command ({difference}) and the rest manifold's own \
                 ({} a call outside its `git fetch`, the rest in starting and supervising \
                 git); CPU time, steadier here, puts manifold at {} of `{cli}`. ",
                    (ratio_value / target - 1.0) * 100.0,
                    ratio(ratio_value, 1.0),
                    ratio(phase.ratio(h, c), 1.0),
                    ratio(phase.ratio(m, h), 1.0),
                    share(
                        phase.wall(h).median().as_secs_f64() - phase.wall(c).median().as_secs_f64(),
                        phase.wall(m).median().as_secs_f64() - phase.wall(c).median().as_secs_f64(),
                    ),
                    ms(outside(phase)),
                    ratio(phase.cpu_ratio(m, c), 1.0),
                ));
            }
        };
    verdict(
        "clone",
        clone_ratio,
        1.1,
        "git clone --bare",
        "a fetch into an empty repository rather than a clone, with `--prune` and tags \
         fetched explicitly",
        &clone,
    );
    verdict(
        "incremental fetch",
        fetch_ratio,
        1.2,
        "git fetch",
        "`--prune`, and the URL rather than a named remote",
        &fetch,
    );
    let spread = |phase: &Phase| {
        WAYS.iter()
            .map(|&way| {
                let wall = phase.wall(way);
                (wall.max().as_secs_f64() - wall.min().as_secs_f64()) / wall.median().as_secs_f64()
            })
            .fold(0.0, f64::max)
    };
    body.push_str(&format!(
        "Rounds of one row differ by up to {:.0}% of its median (clone) and {:.0}% (fetch): \
         the machine's other work moves wall times; CPU times, which it moves less, are the \
         steadier comparison.\n",
        spread(&clone) * 100.0,
        spread(&fetch) * 100.0,
    ));

    Section {
        title: "Clone and incremental fetch of a large repository".into(),
        body,
        targets: vec![
            Target::new(
                "Git transfer",
                "clone / `git clone --bare`",
                ratio(clone_ratio, 1.0),
                "≤ 1.1×",
                Some(clone_ratio <= 1.1),
            ),
            Target::new(
                "Git transfer",
                "incremental fetch / `git fetch`",
                ratio(fetch_ratio, 1.0),
                "≤ 1.2×",
                Some(fetch_ratio <= 1.2),
            ),
        ],
        charts: Vec::new(),
    }
}

/// `part / whole` as a percentage, clamped to 0..=100.
fn share(part: f64, whole: f64) -> String {
    if whole <= 0.0 {
        return "none".into();
    }
    format!("{:.0}%", (part / whole * 100.0).clamp(0.0, 100.0))
}
