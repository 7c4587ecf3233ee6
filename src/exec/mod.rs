//! The process supervisor: every external program (git, helm, kustomize,
//! plugins) runs through [`Supervisor::run`].
//!
//! It owns: spawning in a new process group, the exec timeout followed by
//! SIGTERM and then SIGKILL to the whole group, bounded capture of stdout and
//! stderr, an explicit environment (nothing is inherited by accident), and
//! killing the group when the caller goes away.
//!
//! It must not: know what the programs are for, or put credentials on argv
//! (callers pass secrets through `env` or stdin).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

pub mod reaper;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// Supervisor settings, from `ARGOCD_EXEC_TIMEOUT` and
/// `ARGOCD_EXEC_FATAL_TIMEOUT`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Time a program may run before its group gets SIGTERM; `None` = no limit.
    pub timeout: Option<Duration>,
    /// Grace after SIGTERM before the group gets SIGKILL.
    pub fatal_timeout: Duration,
    /// Most stdout bytes kept; more fails the run.
    pub max_stdout_bytes: usize,
    /// Environment every program gets (e.g. `PATH`); requests add to it.
    pub base_env: Vec<(OsString, OsString)>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timeout: Some(Duration::from_secs(90)),
            fatal_timeout: Duration::from_secs(10),
            max_stdout_bytes: 1 << 30,
            base_env: Vec::new(),
        }
    }
}

/// Bytes of stderr kept for error messages (the tail).
const STDERR_TAIL_BYTES: usize = 16 * 1024;

/// One program to run.
#[derive(Clone)]
pub struct Invocation {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    /// Added to the base environment; later entries win.
    pub env: Vec<(OsString, OsString)>,
    pub stdin: Option<Vec<u8>>,
}

impl std::fmt::Debug for Invocation {
    /// Environment values may be credentials: only their names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invocation")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("cwd", &self.cwd)
            .field(
                "env",
                &self.env.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Invocation {
    pub fn new(program: impl Into<OsString>, cwd: impl Into<PathBuf>) -> Self {
        Invocation {
            program: program.into(),
            args: Vec::new(),
            cwd: cwd.into(),
            env: Vec::new(),
            stdin: None,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// The program name as shown in errors (never the arguments, which may
    /// carry URLs).
    fn program_name(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }
}

/// What a program produced.
#[derive(Debug)]
pub struct Output {
    pub stdout: Vec<u8>,
    /// The last [`STDERR_TAIL_BYTES`] of stderr.
    pub stderr_tail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed ({exit}): {stderr_tail}")]
    Failed {
        program: String,
        exit: String,
        stderr_tail: String,
    },
    #[error("{program} timed out after {after:?}{}: {stderr_tail}", killed_note(.killed_after))]
    TimedOut {
        program: String,
        /// The exec timeout, when the group got SIGTERM.
        after: Duration,
        /// When the group ignored SIGTERM: the time (timeout plus fatal
        /// timeout) at which it got SIGKILL.
        killed_after: Option<Duration>,
        stderr_tail: String,
    },
    #[error("{program} wrote more than {limit} bytes to stdout")]
    OutputTooLarge { program: String, limit: usize },
    #[error("i/o with {program} failed: {source}")]
    Io {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// The part of a timeout message that says the group had to be killed.
pub fn killed_note(killed_after: &Option<Duration>) -> String {
    match killed_after {
        Some(at) => format!(" (SIGTERM ignored; killed after {at:?})"),
        None => String::new(),
    }
}

/// Runs programs. Cheap to clone; holds no per-run state.
#[derive(Debug, Clone)]
pub struct Supervisor {
    config: Config,
    metrics: crate::metrics::ExecMetrics,
}

/// Counts a running program in the metrics until dropped.
struct Running(crate::metrics::ExecMetrics);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.dec();
    }
}

/// A running program: its child handle, its process group and its
/// registration with the reaper. Dropped before the leader was reaped
/// (deadline, cancellation), it kills the group and hands the child to a
/// task that reaps it, and only then ends the registration, so the reaper
/// never takes a child tokio still waits for and a pid cannot be reused
/// under either of them. The one signal sent after reaping (the final
/// sweep) follows the reap immediately; a pgid is only reused after the
/// kernel wraps around the whole pid space, which cannot happen in that
/// window in practice.
struct Supervised {
    child: Option<tokio::process::Child>,
    managed: Option<reaper::Managed>,
    pgid: Option<Pid>,
}

impl Supervised {
    fn child(&mut self) -> &mut tokio::process::Child {
        self.child.as_mut().expect("present until dropped")
    }

    fn kill(&self, signal: Signal) {
        if let Some(pgid) = self.pgid {
            // ESRCH (group already gone) is the normal case after exit.
            let _ = killpg(pgid, signal);
        }
    }

    /// After the leader was reaped: kill what it left in its group (which
    /// also closes pipes those processes held open) and end the
    /// registration.
    fn finish(mut self) {
        self.kill(Signal::SIGKILL);
        self.pgid = None;
        self.child = None;
        self.managed = None;
        reaper::wake();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill(Signal::SIGKILL);
        if let Some(mut child) = self.child.take() {
            let managed = self.managed.take();
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(async move {
                        let _ = child.wait().await;
                        drop(managed);
                    });
                }
                // No runtime to wait on: tokio's own orphan reaping
                // (`kill_on_drop`) takes over.
                Err(_) => drop((child, managed)),
            }
        }
        reaper::wake();
    }
}

/// Aborts the output readers and the input writer of a run when dropped,
/// so a process that escaped its group and keeps a pipe open cannot keep
/// them (and what they buffer) alive.
struct IoTasks(Vec<tokio::task::AbortHandle>);

impl Drop for IoTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Supervisor {
    /// A supervisor; makes this process the child subreaper of its
    /// descendants (see [`reaper`]).
    pub fn new(config: Config) -> Self {
        Self::with_metrics(config, Default::default())
    }

    /// The same supervisor with a shorter exec timeout (for quick probes
    /// such as `helm version`).
    pub fn with_timeout(&self, timeout: Duration) -> Supervisor {
        let mut config = self.config.clone();
        config.timeout = Some(config.timeout.map_or(timeout, |t| t.min(timeout)));
        config.fatal_timeout = config.fatal_timeout.min(Duration::from_secs(2));
        Supervisor {
            config,
            metrics: self.metrics.clone(),
        }
    }

    /// How long a program may run before its group gets SIGTERM.
    pub fn timeout(&self) -> Option<Duration> {
        self.config.timeout
    }

    /// Grace after SIGTERM before SIGKILL.
    pub fn fatal_timeout(&self) -> Duration {
        self.config.fatal_timeout
    }

    /// A supervisor that reports into `metrics`.
    pub fn with_metrics(config: Config, metrics: crate::metrics::ExecMetrics) -> Self {
        reaper::start();
        Supervisor { config, metrics }
    }

    /// The absolute path of a bare program name, searched in the `PATH`
    /// the child gets; `None` for a path, or when nothing executable is
    /// found (the spawn then fails as it would have).
    fn resolve(&self, invocation: &Invocation) -> Option<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let program = std::path::Path::new(&invocation.program);
        if program.components().count() != 1 || invocation.program.is_empty() {
            return None;
        }
        let search = invocation
            .env
            .iter()
            .rev()
            .chain(self.config.base_env.iter().rev())
            .find(|(name, _)| name == "PATH")
            .map(|(_, value)| value)?;
        std::env::split_paths(search)
            .filter(|dir| dir.is_absolute())
            .map(|dir| dir.join(program))
            .find(|candidate| {
                std::fs::metadata(candidate)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    }

    /// Runs `invocation` to completion. A non-zero exit is an error carrying
    /// the stderr tail.
    pub async fn run(&self, invocation: Invocation) -> Result<Output, Error> {
        let program = invocation.program_name();
        // An absolute path lets the standard library start the child with
        // posix_spawn (vfork semantics) instead of a fork that copies the
        // server's page tables: with a cleared environment it only does so
        // when it need not search PATH itself.
        let path = self.resolve(&invocation);
        let mut command = Command::new(path.as_deref().unwrap_or(invocation.program.as_ref()));
        if path.is_some() {
            command.arg0(&invocation.program);
        }
        command
            .args(&invocation.args)
            .current_dir(&invocation.cwd)
            .env_clear()
            .envs(self.config.base_env.iter().map(|(k, v)| (k, v)))
            .envs(invocation.env.iter().map(|(k, v)| (k, v)))
            .stdin(if invocation.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);

        // Registered with the reaper before it can exit, so the reaper
        // leaves it to us.
        let (child, managed) = reaper::spawn_managed(|| {
            let child = command.spawn()?;
            let pid = child.id();
            Ok((child, pid))
        })
        .map_err(|source| Error::Spawn {
            program: program.clone(),
            source,
        })?;
        self.metrics.running.inc();
        let _running = Running(self.metrics.clone());
        let mut io_tasks = IoTasks(Vec::new());
        let mut supervised = Supervised {
            pgid: child.id().map(|pid| Pid::from_raw(pid as i32)),
            child: Some(child),
            managed: Some(managed),
        };
        let child = supervised.child();

        if let (Some(bytes), Some(mut stdin)) = (invocation.stdin, child.stdin.take()) {
            // Written from a task so a program that does not read its stdin
            // cannot block us before we start draining its output.
            let writer = tokio::spawn(async move {
                let _ = stdin.write_all(&bytes).await;
            });
            io_tasks.0.push(writer.abort_handle());
        }

        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let stdout_limit = self.config.max_stdout_bytes;
        let stdout_task = tokio::spawn(read_capped(stdout, stdout_limit));
        let stderr_task = tokio::spawn(read_tail(stderr, STDERR_TAIL_BYTES));
        io_tasks.0.push(stdout_task.abort_handle());
        io_tasks.0.push(stderr_task.abort_handle());

        let mut timed_out = false;
        let mut killed_after = None;
        let wait_result = match self.config.timeout {
            None => supervised.child().wait().await,
            Some(limit) => match tokio::time::timeout(limit, supervised.child().wait()).await {
                Ok(status) => status,
                Err(_) => {
                    timed_out = true;
                    self.metrics.timeouts.inc();
                    supervised.kill(Signal::SIGTERM);
                    let fatal = self.config.fatal_timeout;
                    match tokio::time::timeout(fatal, supervised.child().wait()).await {
                        Ok(status) => status,
                        Err(_) => {
                            killed_after = Some(limit + fatal);
                            self.metrics.kills.inc();
                            supervised.kill(Signal::SIGKILL);
                            supervised.child().wait().await
                        }
                    }
                }
            },
        };
        // The leader is reaped: sweep whatever it left behind in its group.
        supervised.finish();

        let status = wait_result.map_err(|source| Error::Io {
            program: program.clone(),
            source,
        })?;
        let grace = self.config.fatal_timeout.max(Duration::from_secs(1));
        // A pipe still held open by a process that left the group (setsid)
        // must not keep us, or a detached reader buffering output, waiting.
        let (mut stderr_task, mut stdout_task) = (stderr_task, stdout_task);
        let stderr_tail = match tokio::time::timeout(grace, &mut stderr_task).await {
            Ok(Ok(tail)) => tail,
            _ => {
                stderr_task.abort();
                String::new()
            }
        };
        let stdout = match tokio::time::timeout(grace, &mut stdout_task).await {
            Ok(Ok(Ok(bytes))) => bytes,
            Ok(Ok(Err(ReadError::TooLarge))) => {
                return Err(Error::OutputTooLarge {
                    program,
                    limit: stdout_limit,
                })
            }
            Ok(Ok(Err(ReadError::Io(source)))) => return Err(Error::Io { program, source }),
            Ok(Err(join)) => {
                return Err(Error::Io {
                    program,
                    source: std::io::Error::other(join),
                })
            }
            Err(_) => {
                stdout_task.abort();
                return Err(Error::Io {
                    program,
                    source: std::io::Error::other("stdout held open after exit"),
                });
            }
        };

        if timed_out {
            return Err(Error::TimedOut {
                program,
                after: self.config.timeout.unwrap_or_default(),
                killed_after,
                stderr_tail,
            });
        }
        if !status.success() {
            let exit = match status.code() {
                Some(code) => format!("exit status {code}"),
                None => "killed by a signal".to_string(),
            };
            return Err(Error::Failed {
                program,
                exit,
                stderr_tail,
            });
        }
        Ok(Output {
            stdout,
            stderr_tail,
        })
    }
}

enum ReadError {
    TooLarge,
    Io(std::io::Error),
}

async fn read_capped(
    mut reader: impl AsyncRead + Unpin,
    limit: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut chunk).await.map_err(ReadError::Io)?;
        if n == 0 {
            return Ok(buffer);
        }
        if buffer.len() + n > limit {
            return Err(ReadError::TooLarge);
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

async fn read_tail(mut reader: impl AsyncRead + Unpin, keep: usize) -> String {
    let mut tail: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&chunk[..n]);
                if tail.len() > 2 * keep {
                    tail.drain(..tail.len() - keep);
                }
            }
        }
    }
    if tail.len() > keep {
        tail.drain(..tail.len() - keep);
    }
    String::from_utf8_lossy(&tail).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supervisor(timeout: Duration) -> Supervisor {
        Supervisor::new(Config {
            timeout: Some(timeout),
            fatal_timeout: Duration::from_millis(300),
            max_stdout_bytes: 1024,
            base_env: vec![("PATH".into(), std::env::var_os("PATH").unwrap_or_default())],
        })
    }

    #[tokio::test]
    async fn captures_stdout_and_reports_failure_with_stderr() {
        let sup = supervisor(Duration::from_secs(10));
        let out = sup
            .run(Invocation::new("sh", "/").args(["-c", "printf hello"]))
            .await
            .unwrap();
        assert_eq!(out.stdout, b"hello");
        let err = sup
            .run(Invocation::new("sh", "/").args(["-c", "echo boom >&2; exit 3"]))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Failed { exit, stderr_tail, .. } if exit == "exit status 3" && stderr_tail == "boom")
        );
    }

    #[tokio::test]
    async fn environment_is_explicit() {
        let sup = supervisor(Duration::from_secs(10));
        let out = sup
            .run(
                Invocation::new("sh", "/")
                    .args(["-c", "echo \"${HOME:-unset}:$X\""])
                    .env("X", "1"),
            )
            .await
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "unset:1");
    }

    #[tokio::test]
    async fn stdout_is_bounded() {
        let sup = supervisor(Duration::from_secs(10));
        let err = sup
            .run(Invocation::new("sh", "/").args(["-c", "head -c 4096 /dev/zero"]))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::OutputTooLarge { limit: 1024, .. }));
    }

    /// Waits until no process (not even a zombie) is left in `pgid`.
    async fn group_gone(pgid: i32) -> bool {
        for _ in 0..100 {
            if reaper::group_members(pgid).is_empty() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// A script that ignores SIGTERM, starts a grandchild that does too,
    /// writes its group id (its own pid: it leads the group) to `pgid_file`,
    /// and sleeps.
    fn stubborn(pgid_file: &std::path::Path) -> String {
        format!(
            "trap '' TERM; (trap '' TERM; sleep 30) & echo $$ > {}.tmp; mv {0}.tmp {0}; sleep 30",
            pgid_file.display()
        )
    }

    async fn read_pgid(pgid_file: &std::path::Path) -> i32 {
        for _ in 0..100 {
            if let Ok(text) = std::fs::read_to_string(pgid_file) {
                return text.trim().parse().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the script never wrote its group id");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group_even_when_term_is_ignored() {
        let sup = supervisor(Duration::from_millis(200));
        let marker = tempfile::tempdir().unwrap();
        let pgid_file = marker.path().join("pgid");
        let err = sup
            .run(Invocation::new("sh", "/").args(["-c", &stubborn(&pgid_file)]))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::TimedOut { killed_after: Some(after), .. } if *after == Duration::from_millis(500)),
            "{err:?}"
        );
        assert!(err.to_string().contains("SIGTERM ignored"), "{err}");
        let pgid = read_pgid(&pgid_file).await;
        // The grandchild got SIGKILL with its group and, orphaned, was
        // re-parented to this process and reaped.
        assert!(group_gone(pgid).await, "group {pgid} survived");
    }

    #[tokio::test]
    async fn dropping_the_run_kills_the_group() {
        let sup = supervisor(Duration::from_secs(60));
        let marker = tempfile::tempdir().unwrap();
        let pgid_file = marker.path().join("pgid");
        let script = stubborn(&pgid_file);
        let run = sup.run(Invocation::new("sh", "/").args(["-c", &script]));
        let pgid = tokio::select! {
            _ = run => panic!("the script finished"),
            pgid = read_pgid(&pgid_file) => pgid,
        };
        assert!(group_gone(pgid).await, "group {pgid} survived");
    }
}
