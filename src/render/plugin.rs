//! Config management plugins: the repo-server side of Argo CD's sidecar
//! protocol (`plugin.ConfigManagementPluginService` over a Unix socket).
//!
//! A render streams the app's files to the sidecar as a `.tar.gz`: the
//! metadata message first (app directory name and path, SHA-256 and size
//! of the archive, the environment), then chunks. Unlike Argo CD, which
//! sends the whole repository, only the app directory and the directories
//! its `manifest-generate-paths` name are sent, unless the plugin is one
//! the operator lists in `--plugin-whole-repository`.

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tonic::transport::{Channel, Endpoint};

use super::helm::Rendered;
use super::{Error, PluginFiles};
use crate::grpc::proto::plugin as pb;
use crate::grpc::proto::repository::ParameterAnnouncement;
use pb::config_management_plugin_service_client::ConfigManagementPluginServiceClient as Client;

/// A channel to the plugin sidecar listening on `socket` (plaintext
/// HTTP/2 over a Unix socket, as Argo CD dials it). Connects lazily: the
/// first call fails if nothing listens there.
pub fn channel(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    // The URI is required by the API and ignored by the connector.
    Endpoint::from_static("http://cmp.invalid")
        .http2_keep_alive_interval(Duration::from_secs(20))
        .connect_with_connector_lazy(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
}

/// What a plugin call sends: which files, from where, with which
/// environment.
pub struct PluginRequest<'a> {
    /// Where the sidecars' sockets are.
    pub sockets: &'a Path,
    pub files: &'a PluginFiles,
    /// The tree the app lives in, and the app directory inside it.
    pub repo_root: &'a Path,
    pub app_dir: &'a Path,
    /// Root-relative directories (or files) the render may read besides
    /// the app directory (`manifest-generate-paths`); `None`: the whole
    /// tree.
    pub extra_paths: Option<Vec<String>>,
    /// The environment the plugin's commands get (`ARGOCD_APP_*`,
    /// `KUBE_VERSION`, `ARGOCD_ENV_*`, `PARAM_*`, ...).
    pub env: Vec<(String, String)>,
    /// Git credentials, added only for a plugin that asks for them.
    pub git_credentials: Vec<(String, String)>,
    /// How long one call may take (the sidecar kills its commands first).
    pub timeout: Duration,
    /// For a temporary copy of the archive.
    pub spool_dir: &'a Path,
}

/// A `.tar.gz` of what the plugin may read, in an unnamed temporary file.
struct Archive {
    file: std::fs::File,
    checksum: String,
    size: u64,
    app_name: String,
    app_rel_path: String,
}

/// Hashes and counts what passes through.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Whether `plugin` gets the whole repository.
fn whole_repository(files: &PluginFiles, plugin: &str) -> bool {
    files
        .whole_repository
        .iter()
        .any(|name| name == "*" || name == plugin || plugin.starts_with(&format!("{name}-")))
}

impl PluginRequest<'_> {
    /// Builds the archive for `plugin` (blocking work on a blocking task).
    async fn archive(&self, plugin: &str) -> Result<Archive, Error> {
        let failed = |message: String| Error::PluginFailed {
            plugin: plugin.to_string(),
            message,
            unavailable: false,
            timed_out: false,
        };
        let relative = self
            .app_dir
            .strip_prefix(self.repo_root)
            .map_err(|_| failed("the app directory is outside the tree".to_string()))?
            .to_string_lossy()
            .into_owned();
        let only = match (&self.extra_paths, whole_repository(self.files, plugin)) {
            (Some(extra), false) => {
                let mut only = vec![relative.clone()];
                only.extend(extra.iter().cloned());
                Some(only)
            }
            _ => None,
        };
        let (root, exclude) = (self.repo_root.to_path_buf(), self.files.exclude.clone());
        let spool = self.spool_dir.to_path_buf();
        let app_name = self
            .app_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let built = tokio::task::spawn_blocking(move || -> Result<_, String> {
            let file = tempfile::tempfile_in(&spool).map_err(|e| e.to_string())?;
            let mut writer = Hashing {
                inner: std::io::BufWriter::new(file),
                hasher: Sha256::new(),
                size: 0,
            };
            let files = crate::source::tarball::build_selected(
                &root,
                only.as_deref(),
                &exclude,
                &mut writer,
            )
            .map_err(|e| e.to_string())?;
            if files == 0 {
                return Err(format!(
                    "no files to send (app path {:?})",
                    if relative.is_empty() { "." } else { &relative }
                ));
            }
            let Hashing {
                inner,
                hasher,
                size,
            } = writer;
            let mut file = inner.into_inner().map_err(|e| e.to_string())?;
            file.rewind().map_err(|e| e.to_string())?;
            Ok((file, hex::encode(hasher.finalize()), size, relative))
        })
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(failed)?;
        let (file, checksum, size, relative) = built;
        Ok(Archive {
            file,
            checksum,
            size,
            app_name,
            app_rel_path: if relative.is_empty() {
                ".".to_string()
            } else {
                relative
            },
        })
    }
}

/// The request stream: metadata, then the archive in chunks of
/// `chunk_size` bytes, read from the file as the sidecar takes them.
fn stream(
    archive: &Archive,
    env: &[(String, String)],
    chunk_size: usize,
) -> std::io::Result<AppStream> {
    let metadata = pb::AppStreamRequest {
        request: Some(pb::app_stream_request::Request::Metadata(
            pb::ManifestRequestMetadata {
                app_name: archive.app_name.clone(),
                app_rel_path: archive.app_rel_path.clone(),
                checksum: archive.checksum.clone(),
                size: archive.size as i64,
                env: env
                    .iter()
                    .map(|(name, value)| pb::EnvEntry {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
            },
        )),
    };
    let mut file = tokio::fs::File::from_std(archive.file.try_clone()?);
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    let chunk_size = chunk_size.max(1);
    let task = tokio::spawn(async move {
        if sender.send(metadata).await.is_err() {
            return;
        }
        if file.seek(std::io::SeekFrom::Start(0)).await.is_err() {
            return;
        }
        loop {
            let mut chunk = vec![0; chunk_size];
            let mut filled = 0;
            // Full chunks, as Argo CD sends them; the last may be short.
            while filled < chunk_size {
                match file.read(&mut chunk[filled..]).await {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(_) => return,
                }
            }
            if filled == 0 {
                return;
            }
            chunk.truncate(filled);
            let message = pb::AppStreamRequest {
                request: Some(pb::app_stream_request::Request::File(pb::File { chunk })),
            };
            if sender.send(message).await.is_err() || filled < chunk_size {
                return;
            }
        }
    });
    Ok(AppStream {
        receiver,
        _task: AbortOnDrop(task),
    })
}

use tokio::io::AsyncSeekExt;

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The messages of one plugin call.
struct AppStream {
    receiver: tokio::sync::mpsc::Receiver<pb::AppStreamRequest>,
    _task: AbortOnDrop,
}

impl tokio_stream::Stream for AppStream {
    type Item = pb::AppStreamRequest;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}

/// A sidecar, reached and asked how it is configured.
struct Sidecar {
    name: String,
    client: Client<Channel>,
    discovery: bool,
    git_credentials: bool,
}

fn status_error(plugin: &str, call: &str, status: tonic::Status) -> Error {
    Error::PluginFailed {
        plugin: plugin.to_string(),
        message: format!("{call}: {}", status.message()),
        unavailable: status.code() == tonic::Code::Unavailable,
        timed_out: status.code() == tonic::Code::DeadlineExceeded,
    }
}

impl Sidecar {
    /// Dials `<sockets>/<name>.sock` and asks for its configuration.
    async fn open(sockets: &Path, name: &str, timeout: Duration) -> Result<Sidecar, Error> {
        let socket = socket_path(sockets, name)?;
        let mut client = Client::new(channel(&socket))
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let mut request = tonic::Request::new(());
        request.set_timeout(timeout.min(Duration::from_secs(30)));
        let config = client
            .check_plugin_configuration(request)
            .await
            .map_err(|status| status_error(name, "CheckPluginConfiguration", status))?
            .into_inner();
        Ok(Sidecar {
            name: name.to_string(),
            client,
            discovery: config.is_discovery_configured,
            git_credentials: config.provide_git_creds,
        })
    }

    /// `MatchRepository`: (supported, discovery enabled).
    async fn matches(
        &mut self,
        archive: &Archive,
        request: &PluginRequest<'_>,
    ) -> Result<(bool, bool), Error> {
        let io = |e: std::io::Error| Error::PluginFailed {
            plugin: self.name.clone(),
            message: e.to_string(),
            unavailable: false,
            timed_out: false,
        };
        let stream = stream(archive, &request.env, request.files.chunk_size).map_err(io)?;
        let mut call = tonic::Request::new(stream);
        call.set_timeout(request.timeout);
        let answer = self
            .client
            .match_repository(call)
            .await
            .map_err(|status| status_error(&self.name, "MatchRepository", status))?
            .into_inner();
        Ok((answer.is_supported, answer.is_discovery_enabled))
    }
}

/// `<sockets>/<name>.sock`, refused when `name` would leave the directory.
fn socket_path(sockets: &Path, name: &str) -> Result<PathBuf, Error> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.contains('\0') {
        return Err(Error::PluginNotFound {
            message: format!("invalid plugin name {name:?}"),
        });
    }
    Ok(sockets.join(format!("{name}.sock")))
}

/// Picks the sidecar for `name` (or, with no name, the first in directory
/// order whose discovery claims the app), as Argo CD does: a named plugin
/// is taken unless its discovery is configured, enabled and says no.
async fn select(
    request: &PluginRequest<'_>,
    name: Option<&str>,
) -> Result<(Sidecar, Archive), Error> {
    if let Some(name) = name {
        let not_found = |why: Option<String>| {
            Error::PluginNotFound {
            message: match why {
                Some(why) => format!(
                    "could not find cmp-server plugin with name {name:?} supporting the given repository: {why}"
                ),
                None => format!(
                    "could not find cmp-server plugin with name {name:?} supporting the given repository"
                ),
            },
        }
        };
        let mut sidecar = Sidecar::open(request.sockets, name, request.timeout)
            .await
            .map_err(|err| not_found(Some(err.to_string())))?;
        let archive = request.archive(name).await?;
        if sidecar.discovery {
            let (supported, enabled) = sidecar.matches(&archive, request).await?;
            if !supported && enabled {
                return Err(not_found(None));
            }
        }
        return Ok((sidecar, archive));
    }
    let mut last_error = None;
    for name in super::plugin_names(request.sockets).map_err(|err| Error::PluginNotFound {
        message: format!("failed to list all plugins in dir: {err}"),
    })? {
        match discover_one(request, &name).await {
            Ok(Some(found)) => return Ok(found),
            Ok(None) => {}
            Err(err) => last_error = Some(err),
        }
    }
    Err(Error::PluginNotFound {
        message: match last_error {
            Some(err) => format!("could not find plugin supporting the given repository: {err}"),
            None => "could not find plugin supporting the given repository".to_string(),
        },
    })
}

async fn discover_one(
    request: &PluginRequest<'_>,
    name: &str,
) -> Result<Option<(Sidecar, Archive)>, Error> {
    let mut sidecar = Sidecar::open(request.sockets, name, request.timeout).await?;
    if !sidecar.discovery {
        return Ok(None);
    }
    let archive = request.archive(name).await?;
    let (supported, _) = sidecar.matches(&archive, request).await?;
    Ok(supported.then_some((sidecar, archive)))
}

/// The name of the first sidecar whose discovery claims the app, if any
/// (source-type detection for an app that names no type).
pub async fn discover(request: &PluginRequest<'_>) -> Result<Option<String>, Error> {
    match select(request, None).await {
        Ok((sidecar, _)) => Ok(Some(sidecar.name)),
        Err(Error::PluginNotFound { .. }) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Whether any sidecar in `sockets` has discovery configured (then an
/// app that names no source type may be a plugin app).
pub async fn any_discovery(sockets: &Path) -> bool {
    let Ok(names) = super::plugin_names(sockets) else {
        return false;
    };
    for name in names {
        if let Ok(sidecar) = Sidecar::open(sockets, &name, Duration::from_secs(5)).await {
            if sidecar.discovery {
                return true;
            }
        }
    }
    false
}

/// Renders the app with the plugin `name` (`None`: discovery).
pub async fn generate(request: &PluginRequest<'_>, name: Option<&str>) -> Result<Rendered, Error> {
    let (mut sidecar, archive) = select(request, name).await?;
    let mut env = request.env.clone();
    if sidecar.git_credentials {
        env.extend(request.git_credentials.iter().cloned());
    }
    let plugin = sidecar.name.clone();
    let io = |e: std::io::Error| Error::PluginFailed {
        plugin: plugin.clone(),
        message: e.to_string(),
        unavailable: false,
        timed_out: false,
    };
    let mut call =
        tonic::Request::new(stream(&archive, &env, request.files.chunk_size).map_err(io)?);
    call.set_timeout(request.timeout);
    let response = sidecar
        .client
        .generate_manifest(call)
        .await
        .map_err(|status| status_error(&plugin, "GenerateManifest", status))?
        .into_inner();
    let mut objects = Vec::new();
    for text in &response.manifests {
        let documents = super::manifest::split_documents(text);
        if let Some(message) = documents.error {
            return Err(Error::PluginOutput {
                plugin: plugin.clone(),
                message,
            });
        }
        objects.extend(documents.objects);
    }
    Ok(Rendered {
        objects,
        commands: Vec::new(),
    })
}

/// The parameters the plugin announces for the app (`GetAppDetails`).
pub async fn parameters(
    request: &PluginRequest<'_>,
    name: Option<&str>,
) -> Result<Vec<ParameterAnnouncement>, Error> {
    let (mut sidecar, archive) = select(request, name).await?;
    let plugin = sidecar.name.clone();
    let io = |e: std::io::Error| Error::PluginFailed {
        plugin: plugin.clone(),
        message: e.to_string(),
        unavailable: false,
        timed_out: false,
    };
    let mut call =
        tonic::Request::new(stream(&archive, &request.env, request.files.chunk_size).map_err(io)?);
    call.set_timeout(request.timeout);
    Ok(sidecar
        .client
        .get_parameters_announcement(call)
        .await
        .map_err(|status| status_error(&plugin, "GetParametersAnnouncement", status))?
        .into_inner()
        .parameter_announcements)
}

/// Argo CD's parameter environment: `ARGOCD_APP_PARAMETERS` (the
/// parameters as Go marshals them) and `PARAM_<NAME>`,
/// `PARAM_<NAME>_<KEY>`, `PARAM_<NAME>_<i>`.
pub fn parameter_env(parameters: &[super::spec::PluginParameter]) -> Vec<(String, String)> {
    use serde_json::Value;
    let go = |value: &Value| super::manifest::to_go_json(value);
    // Go marshals struct fields in declaration order: name, string, map,
    // array (an empty map or array arrives over protobuf as nil: null).
    let objects: Vec<String> = parameters
        .iter()
        .map(|p| {
            let mut fields = Vec::new();
            if !p.name.is_empty() {
                fields.push(format!("\"name\":{}", go(&Value::String(p.name.clone()))));
            }
            if let Some(string) = &p.string {
                fields.push(format!("\"string\":{}", go(&Value::String(string.clone()))));
            }
            if let Some(map) = &p.map {
                let value = if map.is_empty() {
                    Value::Null
                } else {
                    Value::Object(
                        map.iter()
                            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                            .collect(),
                    )
                };
                fields.push(format!("\"map\":{}", go(&value)));
            }
            if let Some(array) = &p.array {
                let value = if array.is_empty() {
                    Value::Null
                } else {
                    Value::Array(array.iter().cloned().map(Value::String).collect())
                };
                fields.push(format!("\"array\":{}", go(&value)));
            }
            format!("{{{}}}", fields.join(","))
        })
        .collect();
    let rendered = if objects.is_empty() {
        "null".to_string()
    } else {
        format!("[{}]", objects.join(","))
    };
    let mut env = vec![("ARGOCD_APP_PARAMETERS".to_string(), rendered)];
    let escaped = |name: &str| -> String {
        name.to_uppercase()
            .chars()
            .map(|c| {
                if c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    for p in parameters {
        let base = format!("PARAM_{}", escaped(&p.name));
        if let Some(string) = &p.string {
            env.push((base.clone(), string.clone()));
        }
        if let Some(map) = &p.map {
            for (key, value) in map {
                env.push((format!("{base}_{}", escaped(key)), value.clone()));
            }
        }
        if let Some(array) = &p.array {
            for (i, value) in array.iter().enumerate() {
                env.push((format!("{base}_{i}"), value.clone()));
            }
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::spec::PluginParameter;

    #[test]
    fn parameters_become_argo_cd_environment() {
        let parameters = vec![
            PluginParameter {
                name: "image-tag".into(),
                string: Some("v1".into()),
                ..Default::default()
            },
            PluginParameter {
                name: "labels".into(),
                map: Some([("team.x".into(), "a".into())].into_iter().collect()),
                ..Default::default()
            },
            PluginParameter {
                name: "hosts".into(),
                array: Some(vec!["a".into(), "b".into()]),
                ..Default::default()
            },
        ];
        let env = parameter_env(&parameters);
        assert_eq!(
            env[0],
            (
                "ARGOCD_APP_PARAMETERS".to_string(),
                r#"[{"name":"image-tag","string":"v1"},{"name":"labels","map":{"team.x":"a"}},{"name":"hosts","array":["a","b"]}]"#
                    .to_string()
            )
        );
        assert_eq!(
            &env[1..],
            [
                ("PARAM_IMAGE_TAG".to_string(), "v1".to_string()),
                ("PARAM_LABELS_TEAM_X".to_string(), "a".to_string()),
                ("PARAM_HOSTS_0".to_string(), "a".to_string()),
                ("PARAM_HOSTS_1".to_string(), "b".to_string()),
            ]
        );
        assert_eq!(parameter_env(&[])[0].1, "null");
    }

    #[test]
    fn socket_names_stay_in_the_directory() {
        let dir = Path::new("/plugins");
        assert_eq!(
            socket_path(dir, "envsubst-v1.0").unwrap(),
            Path::new("/plugins/envsubst-v1.0.sock")
        );
        for bad in ["", "..", "../x", "a/b"] {
            assert!(socket_path(dir, bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_stream_is_metadata_then_full_chunks_of_the_archive() {
        use tokio_stream::StreamExt;
        let tree = tempfile::tempdir().unwrap();
        let root = tree.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("apps/a")).unwrap();
        std::fs::create_dir_all(root.join("other")).unwrap();
        std::fs::write(root.join("apps/a/cm.yaml"), "x".repeat(5000)).unwrap();
        std::fs::write(root.join("other/secret.txt"), "not sent").unwrap();
        let files = PluginFiles {
            chunk_size: 1000,
            ..Default::default()
        };
        let request = PluginRequest {
            sockets: Path::new("/nonexistent"),
            files: &files,
            repo_root: &root,
            app_dir: &root.join("apps/a"),
            extra_paths: Some(Vec::new()),
            env: vec![("ARGOCD_APP_NAME".into(), "guestbook".into())],
            git_credentials: Vec::new(),
            timeout: Duration::from_secs(5),
            spool_dir: tree.path(),
        };
        let archive = request.archive("p").await.unwrap();
        let mut messages = stream(&archive, &request.env, 1000).unwrap();
        let Some(pb::AppStreamRequest {
            request: Some(pb::app_stream_request::Request::Metadata(metadata)),
        }) = messages.next().await
        else {
            panic!("metadata first");
        };
        assert_eq!(metadata.app_name, "a");
        assert_eq!(metadata.app_rel_path, "apps/a");
        assert_eq!(metadata.env[0].name, "ARGOCD_APP_NAME");
        let mut bytes = Vec::new();
        let mut sizes = Vec::new();
        while let Some(message) = messages.next().await {
            let Some(pb::app_stream_request::Request::File(file)) = message.request else {
                panic!("only chunks after the metadata");
            };
            sizes.push(file.chunk.len());
            bytes.extend(file.chunk);
        }
        assert_eq!(bytes.len() as i64, metadata.size);
        assert_eq!(hex::encode(Sha256::digest(&bytes)), metadata.checksum);
        assert!(sizes[..sizes.len() - 1].iter().all(|s| *s == 1000));
        // Only the app directory went in.
        let out = tempfile::tempdir().unwrap();
        crate::source::tarball::extract(&bytes[..], out.path(), &Default::default()).unwrap();
        assert!(out.path().join("apps/a/cm.yaml").is_file());
        assert!(!out.path().join("other").exists());
    }
}
