//! `plugin.ConfigManagementPluginService`: receiving an app's archive,
//! running the plugin's commands on it, and answering.
//!
//! Every streaming call has the same shape: the metadata, then the
//! `.tar.gz` in chunks. The archive is spooled under the size cap while it
//! is hashed, its checksum checked, and extracted (safely, see
//! [`crate::source::tarball`]) into `<work dir>/_cmp_server/<uuid>`, which
//! is removed when the call ends.
//!
//! Commands run in the app directory with the sidecar's own environment
//! plus the `env` of the metadata (which wins), each through the process
//! supervisor, in its own process group. The deadline is Argo CD's
//! (`cmpserver/plugin/plugin.go`, `cmpTimeoutBuffer`): the request's gRPC
//! deadline minus 100 ms, so the caller still gets an answer; when it
//! passes, the group gets SIGTERM and, `--exec-fatal-timeout` (5 s, Argo
//! CD's fixed grace) later, SIGKILL. `--exec-timeout` optionally adds a
//! cap of our own for callers that set no deadline. A caller that goes
//! away before the deadline takes its processes with it at once.

use std::ffi::OsString;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::discover;
use super::spec::{Announcement, Command, PluginConfig};
use crate::exec::{self, Invocation, Supervisor};
use crate::grpc::proto::plugin::app_stream_request::Request as Part;
use crate::grpc::proto::plugin::config_management_plugin_service_server::ConfigManagementPluginService;
use crate::grpc::proto::plugin::{
    AppStreamRequest, CheckPluginConfigurationResponse, ManifestRequestMetadata, ManifestResponse,
    ParametersAnnouncementResponse, RepositoryResponse,
};
use crate::render::manifest::{split_documents, to_go_json};
use crate::source::tarball::{self, Limits};

/// How long before the request's deadline commands are stopped (Argo CD's
/// `cmpTimeoutBuffer`).
pub const DEADLINE_BUFFER: Duration = Duration::from_millis(100);

/// What the service needs, resolved at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    pub spec: PluginConfig,
    /// `<ARGOCD_CMP_WORKDIR>/_cmp_server`: archives are spooled and
    /// extracted here.
    pub work_dir: PathBuf,
    pub limits: Limits,
    /// The supervisor's settings: `timeout` is the `--exec-timeout` cap
    /// (`None`: only the request deadline), `base_env` the sidecar's
    /// environment.
    pub exec: exec::Config,
}

/// The gRPC service.
#[derive(Clone)]
pub struct PluginService {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    metrics: crate::metrics::ExecMetrics,
}

impl PluginService {
    pub fn new(settings: Settings) -> Self {
        PluginService {
            inner: Arc::new(Inner {
                settings,
                metrics: Default::default(),
            }),
        }
    }
}

/// `discover::file_name_matches` or `discover::find_glob_matches`.
type GlobFn = fn(&Path, &Path, &str) -> Result<bool, String>;

/// An archive received and extracted.
struct Received {
    metadata: ManifestRequestMetadata,
    /// The extraction directory; removed when dropped.
    dir: tempfile::TempDir,
    /// The app directory inside it (may not exist).
    app_dir: PathBuf,
    /// When commands must have stopped (the request deadline minus the
    /// buffer), if the caller set a deadline.
    deadline: Option<Instant>,
}

#[tonic::async_trait]
impl ConfigManagementPluginService for PluginService {
    async fn generate_manifest(
        &self,
        request: Request<Streaming<AppStreamRequest>>,
    ) -> Result<Response<ManifestResponse>, Status> {
        let deadline = command_deadline(request.metadata());
        let received = self.inner.receive(request.into_inner(), deadline).await?;
        let inner = self.inner.clone();
        let manifests = detached(deadline, async move { inner.generate(received).await }).await?;
        Ok(Response::new(ManifestResponse {
            manifests,
            source_type: String::new(),
        }))
    }

    async fn match_repository(
        &self,
        request: Request<Streaming<AppStreamRequest>>,
    ) -> Result<Response<RepositoryResponse>, Status> {
        let deadline = command_deadline(request.metadata());
        let received = self.inner.receive(request.into_inner(), deadline).await?;
        let inner = self.inner.clone();
        let (is_supported, is_discovery_enabled) =
            detached(deadline, async move { inner.discover(received).await }).await?;
        Ok(Response::new(RepositoryResponse {
            is_supported,
            is_discovery_enabled,
        }))
    }

    async fn get_parameters_announcement(
        &self,
        request: Request<Streaming<AppStreamRequest>>,
    ) -> Result<Response<ParametersAnnouncementResponse>, Status> {
        let deadline = command_deadline(request.metadata());
        let received = self.inner.receive(request.into_inner(), deadline).await?;
        let inner = self.inner.clone();
        let announcements =
            detached(deadline, async move { inner.announce(received).await }).await?;
        Ok(Response::new(ParametersAnnouncementResponse {
            parameter_announcements: announcements.into_iter().map(Into::into).collect(),
        }))
    }

    async fn check_plugin_configuration(
        &self,
        _request: Request<()>,
    ) -> Result<Response<CheckPluginConfigurationResponse>, Status> {
        let spec = &self.inner.settings.spec.spec;
        Ok(Response::new(CheckPluginConfigurationResponse {
            is_discovery_configured: spec.discover.is_configured(),
            provide_git_creds: spec.provide_git_creds,
        }))
    }
}

impl Inner {
    fn name(&self) -> &str {
        &self.settings.spec.metadata.name
    }

    /// Reads the metadata and the archive, checks and extracts it.
    async fn receive(
        &self,
        mut stream: Streaming<AppStreamRequest>,
        deadline: Option<Instant>,
    ) -> Result<Received, Status> {
        const EXPECTED: &str =
            "the first message must be the metadata (app name, app path, checksum, size, env)";
        let metadata = match stream.message().await?.and_then(|m| m.request) {
            Some(Part::Metadata(metadata)) => metadata,
            Some(Part::File(_)) => {
                return Err(Status::invalid_argument(format!(
                    "{EXPECTED}, not a file chunk"
                )))
            }
            None => {
                return Err(Status::invalid_argument(format!(
                    "the stream carried no metadata: {EXPECTED}"
                )))
            }
        };
        let limits = self.settings.limits;
        if metadata.size < 0 {
            return Err(Status::invalid_argument(format!(
                "the metadata declares a negative archive size ({})",
                metadata.size
            )));
        }
        if metadata.size as u64 > limits.max_compressed {
            return Err(Status::resource_exhausted(format!(
                "the archive ({} bytes) exceeds the maximum size of {} bytes (--max-tar-size)",
                metadata.size, limits.max_compressed
            )));
        }
        if metadata.checksum.trim().is_empty() {
            return Err(Status::invalid_argument(
                "the metadata carries no checksum (hex SHA-256 of the archive)",
            ));
        }
        let app_rel_path = app_rel_path(&metadata.app_rel_path)?;
        check_env(&metadata)?;

        let mut upload = tarball::Upload::new(&self.settings.work_dir, limits)
            .map_err(|err| archive_status(err, &limits))?;
        while let Some(message) = stream.message().await? {
            match message.request {
                Some(Part::File(file)) => upload
                    .push(&file.chunk)
                    .map_err(|err| archive_status(err, &limits))?,
                Some(Part::Metadata(_)) => {
                    return Err(Status::invalid_argument(
                        "a second metadata message arrived: after the metadata only file chunks \
                         may follow",
                    ))
                }
                None => {
                    return Err(Status::invalid_argument(
                        "an empty message arrived: after the metadata only file chunks may follow",
                    ))
                }
            }
        }
        tracing::debug!(
            app = %metadata.app_name,
            path = %metadata.app_rel_path,
            bytes = upload.bytes_received(),
            "archive received"
        );

        let dir = tempfile::Builder::new()
            .prefix(&uuid())
            .rand_bytes(0)
            .tempdir_in(&self.settings.work_dir)
            .map_err(|err| {
                Status::internal(format!(
                    "cannot create the extraction directory: {}",
                    err.kind()
                ))
            })?;
        let checksum = metadata.checksum.trim().to_string();
        let preserve_file_mode = self.settings.spec.spec.preserve_file_mode;
        // The directory goes into the blocking task, so a cancelled call
        // removes it only once nothing writes there any more.
        let (dir, extracted) = tokio::task::spawn_blocking(move || {
            let result = upload
                .extract(&checksum, dir.path())
                .map_err(|err| archive_status(err, &limits))
                .and_then(|extracted| {
                    if !preserve_file_mode {
                        clear_executable_bits(dir.path()).map_err(|err| {
                            Status::internal(format!("cannot reset file modes: {}", err.kind()))
                        })?;
                    }
                    Ok(extracted)
                });
            (dir, result)
        })
        .await
        .map_err(|err| Status::internal(format!("extraction task failed: {err}")))?;
        let extracted = extracted?;
        tracing::debug!(
            files = extracted.files,
            bytes = extracted.bytes,
            "archive extracted"
        );
        let app_dir = dir.path().join(app_rel_path);
        Ok(Received {
            metadata,
            dir,
            app_dir,
            deadline,
        })
    }

    /// `init`, then `generate`; the output split into documents.
    async fn generate(&self, received: Received) -> Result<Vec<String>, Status> {
        let spec = &self.settings.spec.spec;
        self.require_app_dir(&received)?;
        if spec.init.is_set() {
            self.run("init", &spec.init, &received).await?;
        }
        let stdout = self.run("generate", &spec.generate, &received).await?;
        let text = String::from_utf8_lossy(&stdout);
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let documents = split_documents(text);
        if let Some(problem) = documents.error {
            return Err(Status::failed_precondition(format!(
                "plugin {}: generate printed invalid YAML/JSON (after {} valid document(s)): \
                 {problem}",
                self.name(),
                documents.objects.len()
            )));
        }
        if documents.objects.is_empty() {
            tracing::warn!(plugin = self.name(), "generate printed no manifests");
        }
        Ok(documents
            .objects
            .into_iter()
            .map(|object| to_go_json(&serde_json::Value::Object(object)))
            .collect())
    }

    /// Discovery: `fileName`, else `find.glob`, else `find.command`.
    /// Answers (supported, discovery enabled).
    async fn discover(&self, received: Received) -> Result<(bool, bool), Status> {
        let discover = &self.settings.spec.spec.discover;
        let (rule, pattern, glob): (&str, String, GlobFn) = if !discover.file_name.is_empty() {
            (
                "discover.fileName",
                discover.file_name.clone(),
                discover::file_name_matches,
            )
        } else if !discover.find.glob.is_empty() {
            (
                "discover.find.glob",
                discover.find.glob.clone(),
                discover::find_glob_matches,
            )
        } else if !discover.find.command.is_empty() {
            self.require_app_dir(&received)?;
            let stdout = self
                .run(
                    "discover.find.command",
                    &discover.find.as_command(),
                    &received,
                )
                .await?;
            let stdout = stdout.strip_suffix(b"\n").unwrap_or(&stdout);
            return Ok((!stdout.is_empty(), true));
        } else {
            return Ok((false, false));
        };
        let root = received.dir.path().to_path_buf();
        let app_dir = received.app_dir.clone();
        let shown = pattern.clone();
        let matched = tokio::task::spawn_blocking(move || glob(&root, &app_dir, &pattern))
            .await
            .map_err(|err| Status::internal(format!("discovery task failed: {err}")))?
            .map_err(|err| {
                Status::failed_precondition(format!(
                    "plugin {}: {rule} {shown:?}: {err}",
                    self.name()
                ))
            })?;
        drop(received);
        Ok((matched, true))
    }

    /// The dynamic announcements (if any), then the static ones.
    async fn announce(&self, received: Received) -> Result<Vec<Announcement>, Status> {
        let parameters = &self.settings.spec.spec.parameters;
        let mut announcements = Vec::new();
        if parameters.dynamic.is_set() {
            self.require_app_dir(&received)?;
            let stdout = self
                .run("parameters.dynamic", &parameters.dynamic, &received)
                .await?;
            let dynamic: Option<Vec<Announcement>> =
                serde_json::from_slice(&stdout).map_err(|err| {
                    Status::failed_precondition(format!(
                        "plugin {}: parameters.dynamic printed no JSON array of parameter \
                         announcements: {err}",
                        self.name()
                    ))
                })?;
            announcements.extend(dynamic.unwrap_or_default());
        }
        announcements.extend(parameters.static_announcements.iter().cloned());
        Ok(announcements)
    }

    fn require_app_dir(&self, received: &Received) -> Result<(), Status> {
        if received.app_dir.is_dir() {
            return Ok(());
        }
        Err(Status::invalid_argument(format!(
            "the app path {:?} is not a directory of the archive",
            received.metadata.app_rel_path
        )))
    }

    /// Runs one of the plugin's commands in the app directory; its stdout.
    async fn run(
        &self,
        step: &'static str,
        command: &Command,
        received: &Received,
    ) -> Result<Vec<u8>, Status> {
        let name = self.name();
        let shown = command.shown();
        let cap = self.settings.exec.timeout;
        let (timeout, by_deadline) = match received.deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Status::deadline_exceeded(format!(
                        "plugin {name}: the request deadline passed before {step} `{shown}` \
                         could start"
                    )));
                }
                match cap {
                    Some(cap) if cap < left => (Some(cap), false),
                    _ => (Some(left), true),
                }
            }
            None => (cap, false),
        };
        let mut config = self.settings.exec.clone();
        config.timeout = timeout;
        let supervisor = Supervisor::with_metrics(config, self.metrics.clone());

        let mut argv = command.argv();
        let program = argv.next().expect("commands are checked to be non-empty");
        let mut invocation = Invocation::new(program, &received.app_dir).args(argv);
        invocation.env = received
            .metadata
            .env
            .iter()
            .filter(|entry| !entry.name.is_empty())
            .map(|entry| (OsString::from(&entry.name), OsString::from(&entry.value)))
            .collect();

        tracing::info!(
            plugin = name,
            step,
            command = %shown,
            app = %received.metadata.app_name,
            path = %received.metadata.app_rel_path,
            timeout = ?timeout,
            "running plugin command"
        );
        let started = Instant::now();
        let result = supervisor.run(invocation).await;
        let elapsed = started.elapsed();
        match result {
            Ok(output) => {
                tracing::info!(plugin = name, step, duration = ?elapsed, stdout_bytes = output.stdout.len(), stderr = %output.stderr_tail, "plugin command succeeded");
                Ok(output.stdout)
            }
            Err(err) => {
                tracing::warn!(plugin = name, step, command = %shown, duration = ?elapsed, error = %err, "plugin command failed");
                Err(command_status(name, step, &shown, err, by_deadline))
            }
        }
    }
}

/// The status for a command that did not succeed.
fn command_status(
    plugin: &str,
    step: &str,
    shown: &str,
    err: exec::Error,
    by_deadline: bool,
) -> Status {
    let with_stderr = |stderr: &str| {
        if stderr.is_empty() {
            String::new()
        } else {
            format!(": {stderr}")
        }
    };
    match err {
        exec::Error::TimedOut {
            after,
            killed_after,
            stderr_tail,
            ..
        } => Status::deadline_exceeded(format!(
            "plugin {plugin}: {step} `{shown}` timed out after {:?} ({}){}{}",
            Duration::from_millis(after.as_millis() as u64),
            if by_deadline {
                "the request deadline"
            } else {
                "--exec-timeout"
            },
            exec::killed_note(&killed_after.map(|at| Duration::from_millis(at.as_millis() as u64))),
            with_stderr(&stderr_tail)
        )),
        exec::Error::Failed {
            exit, stderr_tail, ..
        } => Status::failed_precondition(format!(
            "plugin {plugin}: {step} `{shown}` failed ({exit}){}",
            with_stderr(&stderr_tail)
        )),
        exec::Error::Spawn { source, .. } => Status::failed_precondition(format!(
            "plugin {plugin}: {step} `{shown}` could not start: {source}"
        )),
        exec::Error::OutputTooLarge { limit, .. } => Status::resource_exhausted(format!(
            "plugin {plugin}: {step} `{shown}` printed more than {limit} bytes"
        )),
        exec::Error::Io { source, .. } => Status::internal(format!(
            "plugin {plugin}: {step} `{shown}`: i/o failed: {source}"
        )),
    }
}

/// The status for an archive refused or not extracted. Limits name this
/// command's flags (the tarball module's messages name the repo-server's).
fn archive_status(err: tarball::Error, limits: &Limits) -> Status {
    use tarball::Error as E;
    let refused = |err: &E| Status::invalid_argument(format!("refused the app archive: {err}"));
    match &err {
        E::CompressedTooLarge { .. } => Status::resource_exhausted(format!(
            "the archive exceeds the maximum size of {} bytes (--max-tar-size)",
            limits.max_compressed
        )),
        E::ExtractedTooLarge { .. } => Status::resource_exhausted(format!(
            "the extracted files exceed the maximum size of {} bytes (--max-extracted-size)",
            limits.max_extracted
        )),
        E::DecompressedTooLarge { max } => Status::resource_exhausted(format!(
            "the archive decompresses to more than {max} bytes (decompression bomb?); the limit \
             follows --max-extracted-size"
        )),
        E::HeadersTooLarge { .. } | E::TooManyEntries { .. } => {
            Status::resource_exhausted(format!("refused the app archive: {err}"))
        }
        E::MissingChecksum | E::ChecksumMismatch { .. } => refused(&err),
        E::PathEscapes { .. }
        | E::SymlinkEscapes { .. }
        | E::HardLink { .. }
        | E::UnsupportedType { .. }
        | E::InsideSymlink { .. }
        | E::Conflict { .. }
        | E::InvalidEntry { .. }
        | E::InvalidArchive(_) => refused(&err),
        E::Write { .. }
        | E::DestinationNotEmpty
        | E::Destination(_)
        | E::Spool(_)
        | E::ExcludeGlob { .. }
        | E::Build { .. }
        | E::Output(_) => Status::internal(format!("cannot receive the app archive: {err}")),
    }
}

/// The app directory relative to the archive root, checked to stay inside
/// it. A leading `/` is ignored, as Go's `filepath.Join` does.
fn app_rel_path(raw: &str) -> Result<PathBuf, Status> {
    let mut path = PathBuf::new();
    for component in Path::new(raw.trim_start_matches('/')).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                if !path.pop() {
                    return Err(Status::invalid_argument(format!(
                        "the app path {raw:?} leaves the archive"
                    )));
                }
            }
            Component::Prefix(_) => {
                return Err(Status::invalid_argument(format!(
                    "the app path {raw:?} is invalid"
                )))
            }
        }
    }
    Ok(path)
}

/// Environment names must be usable as such.
fn check_env(metadata: &ManifestRequestMetadata) -> Result<(), Status> {
    for entry in &metadata.env {
        if entry.name.contains(['=', '\0']) || entry.value.contains('\0') {
            return Err(Status::invalid_argument(format!(
                "env entry {:?} cannot be set (a name holds '=' or NUL, or a value NUL)",
                entry.name
            )));
        }
    }
    Ok(())
}

/// Argo CD extracts files without their executable bit unless the plugin
/// sets `preserveFileMode`.
fn clear_executable_bits(root: &Path) -> std::io::Result<()> {
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                let path = entry.path();
                let mode = entry.metadata()?.permissions().mode();
                if mode & 0o111 != 0 {
                    std::fs::set_permissions(
                        &path,
                        std::fs::Permissions::from_mode(mode & !0o111),
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// The caller's deadline (`grpc-timeout`, measured from now) minus the
/// buffer.
fn command_deadline(metadata: &MetadataMap) -> Option<Instant> {
    let timeout = parse_grpc_timeout(metadata.get("grpc-timeout")?.to_str().ok()?)?;
    let now = Instant::now();
    Some(now + timeout.saturating_sub(DEADLINE_BUFFER))
}

/// A `grpc-timeout` value: at most 8 digits and a unit.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at(split);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Runs `work` on a task of its own. If the caller goes away before the
/// deadline, the task is aborted (its processes are killed at once). If
/// it goes away after (gRPC cancels the call at the deadline, 100 ms after
/// the commands got SIGTERM), the task is left to finish, so the process
/// group gets its grace before SIGKILL, as in Argo CD.
async fn detached<T: Send + 'static>(
    deadline: Option<Instant>,
    work: impl Future<Output = Result<T, Status>> + Send + 'static,
) -> Result<T, Status> {
    struct AbortEarly {
        task: Option<tokio::task::AbortHandle>,
        deadline: Option<Instant>,
    }
    impl Drop for AbortEarly {
        fn drop(&mut self) {
            if let Some(task) = self.task.take() {
                let past_deadline = self.deadline.is_some_and(|d| Instant::now() >= d);
                if !past_deadline {
                    task.abort();
                }
            }
        }
    }
    let task = tokio::spawn(work);
    let mut guard = AbortEarly {
        task: Some(task.abort_handle()),
        deadline,
    };
    let joined = task.await;
    guard.task = None;
    joined.map_err(|err| Status::internal(format!("plugin task failed: {err}")))?
}

/// A random (version 4) UUID.
fn uuid() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_grpc_timeout("1500m"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }

    #[test]
    fn app_paths_stay_inside_the_archive() {
        assert_eq!(app_rel_path(".").unwrap(), PathBuf::new());
        assert_eq!(app_rel_path("a/./b/").unwrap(), PathBuf::from("a/b"));
        assert_eq!(app_rel_path("/a/b").unwrap(), PathBuf::from("a/b"));
        assert_eq!(app_rel_path("a/../b").unwrap(), PathBuf::from("b"));
        let err = app_rel_path("a/../../b").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("leaves the archive"), "{err:?}");
    }

    #[test]
    fn uuids_look_like_uuids() {
        let id = uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert_ne!(id, uuid());
    }

    #[test]
    fn executable_bits_are_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("sub/run.sh");
        std::fs::create_dir_all(script.parent().unwrap()).unwrap();
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        clear_executable_bits(dir.path()).unwrap();
        let mode = std::fs::metadata(&script).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let sub = std::fs::metadata(dir.path().join("sub")).unwrap();
        assert_eq!(sub.permissions().mode() & 0o111, 0o111);
    }
}
