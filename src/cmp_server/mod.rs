//! `manifold cmp-server`: a config management plugin sidecar that speaks
//! Argo CD's `plugin.ConfigManagementPluginService` on a Unix socket, in
//! place of Argo CD's `argocd-cmp-server`. Argo CD's repo-server (and
//! manifold's) dial it exactly as they dial Argo CD's.
//!
//! * [`spec`]: the plugin file (`ConfigManagementPlugin`).
//! * [`discover`]: `discover.fileName` and `discover.find.glob` matching.
//! * [`service`]: the gRPC service (archives in, commands run, answers out).
//!
//! This module owns start-up: reading the spec, wiping the work directory,
//! binding `<socket dir>/<name>[-<version>].sock` (a stale file there is
//! removed first), serving until SIGTERM or SIGINT, then removing the
//! socket and draining in-flight calls for a short grace period.

pub mod discover;
pub mod service;
pub mod spec;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{parse_go_duration, parse_quantity};
use crate::grpc::proto::plugin::config_management_plugin_service_server::ConfigManagementPluginServiceServer;
use crate::grpc::proto::version::version_service_server::VersionServiceServer;
use crate::source::tarball::Limits;
use service::PluginService;
use spec::PluginConfig;

/// Argo CD's default location of the plugin file.
pub const DEFAULT_CONFIG: &str = "/home/argocd/cmp-server/config/plugin.yaml";
/// Argo CD's default directory of plugin sockets.
pub const DEFAULT_SOCKET_DIR: &str = "/home/argocd/cmp-server/plugins";
/// The plugin file's name inside `--config-dir-path`.
pub const CONFIG_FILE_NAME: &str = "plugin.yaml";
/// The work directory's subdirectory (wiped at start-up), as in Argo CD.
pub const WORK_DIR_NAME: &str = "_cmp_server";

#[derive(Debug, Args)]
pub struct CmpServerArgs {
    /// The plugin file (a `ConfigManagementPlugin`). Default:
    /// /home/argocd/cmp-server/config/plugin.yaml.
    #[arg(
        long,
        env = "ARGOCD_CMP_SERVER_CONFIG",
        conflicts_with = "config_dir_path"
    )]
    pub config: Option<PathBuf>,
    /// Directory holding `plugin.yaml` (argocd-cmp-server's flag).
    #[arg(long)]
    pub config_dir_path: Option<PathBuf>,
    /// Directory of the plugin sockets, shared with the repo-server.
    // OsString, not PathBuf: an empty variable means the default (as in
    // Argo CD) instead of failing to parse.
    #[arg(long, env = "ARGOCD_PLUGINSOCKFILEPATH", default_value = DEFAULT_SOCKET_DIR)]
    pub socket_dir: OsString,
    /// Parent of the work directory (`<dir>/_cmp_server`, wiped at
    /// start-up) where archives are extracted. Default: the system's
    /// temporary directory.
    #[arg(long, env = "ARGOCD_CMP_WORKDIR")]
    pub work_dir: Option<OsString>,
    /// Largest app archive (.tar.gz) accepted, as a Kubernetes quantity;
    /// 0 means unlimited.
    #[arg(long, env = "MANIFOLD_CMP_MAX_TAR_SIZE", default_value = "1G")]
    pub max_tar_size: String,
    /// Most bytes of files one archive may extract to, as a Kubernetes
    /// quantity; 0 means unlimited.
    #[arg(long, env = "MANIFOLD_CMP_MAX_EXTRACTED_SIZE", default_value = "10G")]
    pub max_extracted_size: String,
    /// A cap on each plugin command's run time on top of the caller's
    /// deadline (Argo CD has none: without a caller deadline a command may
    /// run forever); 0 means no cap.
    #[arg(long, env = "MANIFOLD_CMP_EXEC_TIMEOUT", default_value = "0")]
    pub exec_timeout: String,
    /// Grace between SIGTERM and SIGKILL for a command's process group
    /// (Argo CD's fixed 5s).
    #[arg(long, env = "MANIFOLD_CMP_EXEC_FATAL_TIMEOUT", default_value = "5s")]
    pub exec_fatal_timeout: String,
    /// On SIGTERM, how long in-flight calls may take to finish.
    #[arg(
        long,
        env = "MANIFOLD_CMP_SHUTDOWN_GRACE_PERIOD",
        default_value = "10s"
    )]
    pub shutdown_grace_period: String,
    /// Log format: json or text.
    #[arg(long, env = "ARGOCD_CMP_SERVER_LOGFORMAT", default_value = "json")]
    pub logformat: String,
    /// Log level: debug, info, warn or error.
    #[arg(long, env = "ARGOCD_CMP_SERVER_LOGLEVEL", default_value = "info")]
    pub loglevel: String,
    #[arg(
        long,
        hide = true,
        env = "ARGOCD_GRPC_MAX_SIZE_MB",
        default_value = "100"
    )]
    pub grpc_max_size_mb: String,
}

/// Everything resolved from the arguments.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config_path: PathBuf,
    pub socket_dir: PathBuf,
    /// The parent of `_cmp_server`.
    pub work_parent: PathBuf,
    pub limits: Limits,
    pub exec_timeout: Option<Duration>,
    pub exec_fatal_timeout: Duration,
    pub shutdown_grace: Duration,
    pub max_message_bytes: usize,
}

impl CmpServerArgs {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let config_path = match (&self.config, &self.config_dir_path) {
            (Some(file), _) => file.clone(),
            (None, Some(dir)) => dir.join(CONFIG_FILE_NAME),
            (None, None) => PathBuf::from(DEFAULT_CONFIG),
        };
        let size = |flag: &str, text: &str| -> anyhow::Result<u64> {
            let bytes = parse_quantity(text).map_err(|e| anyhow::anyhow!("invalid {flag}: {e}"))?;
            Ok(if bytes == 0 { u64::MAX } else { bytes })
        };
        let duration = |flag: &str, text: &str| {
            parse_go_duration(text).map_err(|e| anyhow::anyhow!("invalid {flag}: {e}"))
        };
        let exec_timeout = duration("--exec-timeout", &self.exec_timeout)?;
        let megabytes: usize = self
            .grpc_max_size_mb
            .trim()
            .parse()
            .ok()
            .filter(|mb| *mb > 0)
            .with_context(|| {
                format!(
                    "invalid ARGOCD_GRPC_MAX_SIZE_MB {:?}: expected a positive number",
                    self.grpc_max_size_mb
                )
            })?;
        Ok(Settings {
            config_path,
            // Empty means unset, as Argo CD reads these variables.
            socket_dir: if self.socket_dir.is_empty() {
                PathBuf::from(DEFAULT_SOCKET_DIR)
            } else {
                PathBuf::from(&self.socket_dir)
            },
            work_parent: self
                .work_dir
                .as_ref()
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
            limits: Limits {
                max_compressed: size("--max-tar-size", &self.max_tar_size)?,
                max_extracted: size("--max-extracted-size", &self.max_extracted_size)?,
                ..Limits::default()
            },
            exec_timeout: (!exec_timeout.is_zero()).then_some(exec_timeout),
            exec_fatal_timeout: duration("--exec-fatal-timeout", &self.exec_fatal_timeout)?,
            shutdown_grace: duration("--shutdown-grace-period", &self.shutdown_grace_period)?,
            max_message_bytes: megabytes.saturating_mul(1 << 20),
        })
    }
}

/// A serving sidecar.
pub struct Running {
    socket: PathBuf,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    shutdown_grace: Duration,
}

impl Running {
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Removes the socket (no new connections), lets in-flight calls finish
    /// for at most the grace period, then returns.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        remove_socket(&self.socket);
        let _ = self.stop.send(true);
        match tokio::time::timeout(self.shutdown_grace, &mut self.task).await {
            Ok(Ok(result)) => result.context("the gRPC server failed")?,
            Ok(Err(join)) => bail!("the gRPC server task failed: {join}"),
            Err(_) => {
                tracing::warn!(grace = ?self.shutdown_grace, "calls still running after the grace period, stopping");
                self.task.abort();
            }
        }
        Ok(())
    }
}

fn remove_socket(socket: &Path) {
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => tracing::warn!(socket = %socket.display(), %err, "cannot remove the socket"),
    }
}

/// Reads the spec, prepares the work directory, binds the socket and
/// starts serving.
pub async fn start(settings: Settings) -> anyhow::Result<Running> {
    let spec = PluginConfig::load(&settings.config_path)?;
    let full_name = spec.full_name();
    if !spec.spec.discover.is_configured() {
        tracing::info!(
            plugin = %spec.metadata.name,
            "no discovery is configured; Applications use this plugin by naming {full_name:?} in spec.source.plugin.name"
        );
    }

    let work_dir = settings.work_parent.join(WORK_DIR_NAME);
    match std::fs::remove_dir_all(&work_dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            return Err(err).with_context(|| format!("cannot clear {}", work_dir.display()))
        }
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&work_dir)
            .with_context(|| format!("cannot create {}", work_dir.display()))?;
    }

    std::fs::create_dir_all(&settings.socket_dir)
        .with_context(|| format!("cannot create {}", settings.socket_dir.display()))?;
    let socket = settings.socket_dir.join(spec.socket_file_name());
    match std::fs::symlink_metadata(&socket) {
        Ok(meta) if meta.is_dir() => {
            bail!("{} is a directory, not a socket", socket.display())
        }
        Ok(_) => {
            tracing::info!(socket = %socket.display(), "removing a stale socket");
            std::fs::remove_file(&socket)
                .with_context(|| format!("cannot remove the stale {}", socket.display()))?;
        }
        Err(_) => {}
    }
    let listener = tokio::net::UnixListener::bind(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;

    let base_env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let service = PluginService::new(service::Settings {
        spec: spec.clone(),
        work_dir,
        limits: settings.limits,
        exec: crate::exec::Config {
            timeout: settings.exec_timeout,
            fatal_timeout: settings.exec_fatal_timeout,
            max_stdout_bytes: settings.max_message_bytes.max(1 << 30),
            base_env,
        },
    });

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let max = settings.max_message_bytes;
    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(VersionServiceServer::new(crate::grpc::VersionServer))
        .add_service(
            ConfigManagementPluginServiceServer::new(service)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        );
    let (stop, mut stopped) = watch::channel(false);
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await
    });
    tracing::info!(
        plugin = %full_name,
        socket = %socket.display(),
        discovery = spec.spec.discover.is_configured(),
        "manifold cmp-server is serving"
    );
    Ok(Running {
        socket,
        stop,
        task,
        shutdown_grace: settings.shutdown_grace,
    })
}

/// Serves until SIGTERM or SIGINT, then shuts down (socket removed, calls
/// drained) and returns.
pub async fn run(args: CmpServerArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    // Handlers first: a stop requested the moment we are serving must
    // drain, not kill.
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate =
        signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut interrupt =
        signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let running = start(settings).await?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received, stopping"),
        _ = interrupt.recv() => tracing::info!("SIGINT received, stopping"),
    }
    running.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: CmpServerArgs,
    }

    fn settings(args: &[&str]) -> anyhow::Result<Settings> {
        let mut argv = vec!["cmp-server"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)?.args.settings()
    }

    #[test]
    fn defaults_and_flags() {
        let s = settings(&["--socket-dir", "/s", "--work-dir", "/w"]).unwrap();
        assert_eq!(s.config_path, PathBuf::from(DEFAULT_CONFIG));
        assert_eq!(s.socket_dir, PathBuf::from("/s"));
        assert_eq!(s.work_parent, PathBuf::from("/w"));
        assert_eq!(s.exec_timeout, None);
        assert_eq!(s.exec_fatal_timeout, Duration::from_secs(5));
        assert_eq!(s.limits.max_compressed, 1_000_000_000);

        let s = settings(&[
            "--config-dir-path",
            "/cfg",
            "--exec-timeout",
            "2m",
            "--max-tar-size",
            "0",
            "--max-extracted-size",
            "64Mi",
        ])
        .unwrap();
        assert_eq!(s.config_path, PathBuf::from("/cfg/plugin.yaml"));
        assert_eq!(s.exec_timeout, Some(Duration::from_secs(120)));
        assert_eq!(s.limits.max_compressed, u64::MAX);
        assert_eq!(s.limits.max_extracted, 64 << 20);

        let s = settings(&["--socket-dir", "", "--work-dir", ""]).unwrap();
        assert_eq!(s.socket_dir, PathBuf::from(DEFAULT_SOCKET_DIR));
        assert_eq!(s.work_parent, std::env::temp_dir());

        assert!(settings(&["--config", "/a", "--config-dir-path", "/b"]).is_err());
        let err = settings(&["--exec-timeout", "soon"]).unwrap_err();
        assert!(err.to_string().contains("--exec-timeout"), "{err}");
    }
}
