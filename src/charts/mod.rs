//! Helm chart repositories over HTTP(S): `index.yaml` and chart archives,
//! fetched in process (no `helm pull`, so credentials never reach a command
//! line), with the repository's credentials, CA, client certificate and
//! `insecure` setting. Archives are kept on disk by URL and version and
//! extracted per render with the safe extractor.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::RepoUrl;

pub mod oci;

/// Settings of chart repository access.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--helm-registry-max-index-size`: largest `index.yaml` read.
    pub max_index_bytes: u64,
    /// `--helm-manifest-max-extracted-size`: largest extracted chart.
    pub max_extracted_bytes: u64,
    /// `ARGOCD_TLS_DATA_PATH`: a CA bundle per host.
    pub tls_data_path: PathBuf,
    /// Deadline of one HTTP request.
    pub timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_index_bytes: 1 << 30,
            max_extracted_bytes: 1 << 30,
            tls_data_path: "/app/config/tls".into(),
            timeout: Duration::from_secs(90),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to get index from {repo_url}: {message}")]
    Index { repo_url: String, message: String },
    #[error("chart '{chart}' not found in index of {repo_url}")]
    ChartNotFound { repo_url: String, chart: String },
    #[error("no version of chart '{chart}' satisfies '{constraint}' in {repo_url}")]
    NoVersion {
        repo_url: String,
        chart: String,
        constraint: String,
    },
    #[error("invalid version constraint '{constraint}': {message}")]
    Constraint { constraint: String, message: String },
    #[error("failed to download chart '{chart}' version {version} from {repo_url}: {message}")]
    Download {
        repo_url: String,
        chart: String,
        version: String,
        message: String,
    },
    #[error("{repo_url}: authentication failed ({status})")]
    Unauthorized { repo_url: String, status: u16 },
    #[error("chart archive of '{chart}' version {version}: {source}")]
    Archive {
        chart: String,
        version: String,
        #[source]
        source: crate::source::tarball::Error,
    },
    #[error("chart cache failed: {message}")]
    Local { message: String },
}

/// One version of a chart in an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChartVersion {
    pub version: String,
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub digest: String,
}

/// A repository's `index.yaml`, reduced to what is used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    #[serde(default)]
    pub entries: BTreeMap<String, Vec<ChartVersion>>,
}

impl Index {
    /// The version of `chart` that `revision` names: itself when it is a
    /// version (whether or not the index has it, as Argo CD), else the
    /// highest satisfying the constraint (Masterminds semantics).
    pub fn resolve(
        &self,
        repo_url: &RepoUrl,
        chart: &str,
        revision: &str,
    ) -> Result<String, Error> {
        if crate::semver::is_version(revision) {
            return Ok(revision.to_string());
        }
        let versions = self
            .entries
            .get(chart)
            .ok_or_else(|| Error::ChartNotFound {
                repo_url: repo_url.redacted(),
                chart: chart.to_string(),
            })?;
        let constraint = match crate::semver::Constraint::parse(revision) {
            Ok(constraint) => constraint,
            // Not a constraint, but literally a version the index lists.
            Err(_) if versions.iter().any(|v| v.version == revision) => {
                return Ok(revision.to_string())
            }
            Err(message) => {
                return Err(Error::Constraint {
                    constraint: revision.to_string(),
                    message,
                })
            }
        };
        crate::semver::max_satisfying(&constraint, versions.iter().map(|v| v.version.as_str()))
            .map(str::to_string)
            .ok_or_else(|| Error::NoVersion {
                repo_url: repo_url.redacted(),
                chart: chart.to_string(),
                constraint: revision.to_string(),
            })
    }
}

/// Chart repository access with a client per TLS setting and an archive
/// cache on disk.
pub struct Charts {
    config: Config,
    /// Downloaded archives, one file per (repository, chart, version).
    cache_dir: PathBuf,
    /// TLS settings (digest) -> client; a few, for a few minutes (a
    /// rotated CA takes effect then).
    clients: moka::sync::Cache<String, reqwest::Client>,
    /// One download per archive at a time.
    downloads: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl Charts {
    /// `cache_dir` must exist and be private.
    pub fn new(config: Config, cache_dir: PathBuf) -> Charts {
        Charts {
            config,
            cache_dir,
            clients: moka::sync::Cache::builder()
                .max_capacity(64)
                .time_to_live(Duration::from_secs(300))
                .build(),
            downloads: Mutex::default(),
        }
    }

    /// The repository's index.
    pub async fn index(&self, repo_url: &RepoUrl) -> Result<Index, Error> {
        let failed = |message: String| Error::Index {
            repo_url: repo_url.redacted(),
            message,
        };
        let base = base_url(repo_url);
        let url = format!("{}/index.yaml", base.trim_end_matches('/'));
        let bytes = self
            .get(repo_url, &url, self.config.max_index_bytes, true)
            .await
            .map_err(|err| match err {
                Fetch::Unauthorized(status) => Error::Unauthorized {
                    repo_url: repo_url.redacted(),
                    status,
                },
                Fetch::Failed(message) => failed(message),
            })?;
        tokio::task::spawn_blocking(move || {
            // The size is capped already (--helm-registry-max-index-size);
            // large public indexes exceed the default node budget.
            let mut options = serde_saphyr::Options::default();
            options.budget = None;
            serde_saphyr::from_slice_with_options::<Index>(&bytes, options).map_err(|err| {
                let mut message = err.to_string();
                message.truncate(300);
                format!("index.yaml does not parse: {message}")
            })
        })
        .await
        .map_err(|err| failed(err.to_string()))?
        .map_err(failed)
    }

    /// The limits chart and artifact extraction runs under.
    pub fn extraction_limits(&self) -> crate::source::tarball::Limits {
        crate::source::tarball::Limits {
            max_compressed: u64::MAX,
            max_extracted: self.config.max_extracted_bytes,
            ..Default::default()
        }
    }

    /// A fresh directory holding `chart` at `version` extracted (the
    /// chart itself is `<dir>/<chart name>`), under `parent`.
    pub async fn extract(
        &self,
        repo_url: &RepoUrl,
        index: &Index,
        chart: &str,
        version: &str,
        destination: &Path,
    ) -> Result<(), Error> {
        let archive = self.archive(repo_url, index, chart, version).await?;
        let limits = crate::source::tarball::Limits {
            max_compressed: u64::MAX,
            max_extracted: self.config.max_extracted_bytes,
            ..Default::default()
        };
        let destination = destination.to_path_buf();
        let extracted = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&archive)?;
            Ok::<_, std::io::Error>(crate::source::tarball::extract(
                std::io::BufReader::new(file),
                &destination,
                &limits,
            ))
        })
        .await
        .map_err(|err| Error::Local {
            message: err.to_string(),
        })?
        .map_err(|err| Error::Local {
            message: err.to_string(),
        })?;
        extracted.map(|_| ()).map_err(|source| Error::Archive {
            chart: chart.to_string(),
            version: version.to_string(),
            source,
        })
    }

    /// The archive of `chart` at `version`, downloaded once.
    async fn archive(
        &self,
        repo_url: &RepoUrl,
        index: &Index,
        chart: &str,
        version: &str,
    ) -> Result<PathBuf, Error> {
        let download_failed = |message: String| Error::Download {
            repo_url: repo_url.redacted(),
            chart: chart.to_string(),
            version: version.to_string(),
            message,
        };
        let entry = index
            .entries
            .get(chart)
            .ok_or_else(|| Error::ChartNotFound {
                repo_url: repo_url.redacted(),
                chart: chart.to_string(),
            })?
            .iter()
            .find(|v| v.version == version || v.version.trim_start_matches('v') == version)
            .ok_or_else(|| download_failed("the index has no such version".to_string()))?;
        let name = {
            use sha2::{Digest, Sha256};
            let mut hasher = Sha256::new();
            for part in [
                repo_url.normalized().as_str(),
                chart,
                version,
                &entry.digest,
            ] {
                hasher.update((part.len() as u64).to_le_bytes());
                hasher.update(part.as_bytes());
            }
            format!("{}.tgz", hex::encode(hasher.finalize()))
        };
        let path = self.cache_dir.join(name);
        let lock = {
            let mut downloads = self.downloads.lock().map_err(|_| Error::Local {
                message: "download table poisoned".into(),
            })?;
            downloads.entry(path.clone()).or_default().clone()
        };
        let _held = lock.lock().await;
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            // Its modification time is its last use, for the disk budget.
            let touched = path.clone();
            let _ = tokio::task::spawn_blocking(move || {
                std::fs::File::options()
                    .write(true)
                    .open(&touched)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()))
            })
            .await;
            return Ok(path);
        }
        let chart_url = entry
            .urls
            .first()
            .ok_or_else(|| download_failed("the index lists no URL".to_string()))?;
        let base = base_url(repo_url);
        let (url, same_origin) = if chart_url.contains("://") {
            let same = origin(chart_url) == origin(&base);
            (chart_url.clone(), same)
        } else {
            (
                format!(
                    "{}/{}",
                    base.trim_end_matches('/'),
                    chart_url.trim_start_matches('/')
                ),
                true,
            )
        };
        // Credentials go only to the repository's own host (Argo CD's
        // default, without passCredentials).
        let bytes = self
            .get(repo_url, &url, self.config.max_extracted_bytes, same_origin)
            .await
            .map_err(|err| match err {
                Fetch::Unauthorized(status) => Error::Unauthorized {
                    repo_url: repo_url.redacted(),
                    status,
                },
                Fetch::Failed(message) => download_failed(message),
            })?;
        if !entry.digest.is_empty() {
            use sha2::{Digest, Sha256};
            let actual = hex::encode(Sha256::digest(&bytes));
            if !actual.eq_ignore_ascii_case(&entry.digest) {
                return Err(download_failed(format!(
                    "digest mismatch: the index says {}, the archive is {actual}",
                    entry.digest
                )));
            }
        }
        let partial = path.with_extension("partial");
        let local = |err: std::io::Error| Error::Local {
            message: err.to_string(),
        };
        tokio::fs::write(&partial, &bytes).await.map_err(local)?;
        tokio::fs::rename(&partial, &path).await.map_err(local)?;
        Ok(path)
    }

    /// GETs `url` (at most `limit` bytes), authenticating with the
    /// repository's credentials when `credentials` is set.
    async fn get(
        &self,
        repo_url: &RepoUrl,
        url: &str,
        limit: u64,
        credentials: bool,
    ) -> Result<Vec<u8>, Fetch> {
        let client = self.client(repo_url).map_err(Fetch::Failed)?;
        let (url, userinfo) = split_userinfo(url);
        let mut request = client.get(&url);
        if credentials {
            let given = repo_url.credentials().cloned().unwrap_or_default();
            let (username, password) = if !given.username.is_empty() || !given.password.is_empty() {
                (given.username, given.password)
            } else {
                userinfo.unwrap_or_default()
            };
            if !username.is_empty() || !password.is_empty() {
                request = request.basic_auth(username, Some(password));
            }
        }
        let response = request
            .send()
            .await
            .map_err(|err| Fetch::Failed(describe(&err)))?;
        read_body(response, limit).await
    }

    /// The client for the repository's TLS settings (the CA bundle as it
    /// is now on disk, client certificate, proxy), shared by repositories
    /// with the same, for a while.
    fn client(&self, repo_url: &RepoUrl) -> Result<reqwest::Client, String> {
        use sha2::{Digest, Sha256};
        let credentials = repo_url.credentials().cloned().unwrap_or_default();
        let ca = crate::domain::url_host(repo_url.as_str())
            .map(|host| self.config.tls_data_path.join(host))
            .filter(|path| path.is_file());
        let ca_pem = ca.as_ref().and_then(|path| std::fs::read(path).ok());
        let mut hasher = Sha256::new();
        hasher.update([u8::from(credentials.insecure)]);
        for part in [
            ca_pem.as_deref().unwrap_or_default(),
            credentials.tls_client_cert.as_bytes(),
            credentials.tls_client_key.as_bytes(),
            credentials.proxy.as_bytes(),
            credentials.no_proxy.as_bytes(),
        ] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        let key = hex::encode(hasher.finalize());
        if let Some(client) = self.clients.get(&key) {
            return Ok(client);
        }
        let tls = tls_config(
            credentials.insecure,
            ca_pem.as_deref(),
            (!credentials.tls_client_cert.is_empty())
                .then_some((&credentials.tls_client_cert, &credentials.tls_client_key)),
        )?;
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(self.config.timeout)
            .user_agent("manifold");
        if !credentials.proxy.is_empty() {
            let mut proxy = reqwest::Proxy::all(&credentials.proxy).map_err(|e| describe(&e))?;
            if !credentials.no_proxy.is_empty() {
                proxy = proxy.no_proxy(reqwest::NoProxy::from_string(&credentials.no_proxy));
            }
            builder = builder.proxy(proxy);
        }
        let client = builder.build().map_err(|e| describe(&e))?;
        self.clients.insert(key, client.clone());
        Ok(client)
    }
}

/// The body of a successful response, at most `limit` bytes.
async fn read_body(mut response: reqwest::Response, limit: u64) -> Result<Vec<u8>, Fetch> {
    let status = response.status();
    let url = redact(response.url().as_str());
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(Fetch::Unauthorized(status.as_u16()));
    }
    if !status.is_success() {
        return Err(Fetch::Failed(format!("{url} answered {status}")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| Fetch::Failed(describe(&err)))?
    {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(Fetch::Failed(format!("{url} is larger than {limit} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

enum Fetch {
    Unauthorized(u16),
    Failed(String),
}

/// The repository URL without userinfo.
fn base_url(repo_url: &RepoUrl) -> String {
    split_userinfo(repo_url.as_str()).0
}

/// `url` without userinfo, and the userinfo (decoded) when there was one.
fn split_userinfo(url: &str) -> (String, Option<(String, String)>) {
    match RepoUrl::parse(url).ok().and_then(|u| u.split_credentials()) {
        Some(split) => (
            split.url_without_userinfo,
            Some((split.username, split.password)),
        ),
        None => (url.to_string(), None),
    }
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> String {
    let (url, _) = split_userinfo(url);
    match url.split_once("://") {
        Some((scheme, rest)) => format!(
            "{}://{}",
            scheme.to_ascii_lowercase(),
            rest.split('/').next().unwrap_or("").to_ascii_lowercase()
        ),
        None => url,
    }
}

fn redact(url: &str) -> String {
    crate::domain::redact_url(url)
}

/// An HTTP error with its causes, without the URL's query or userinfo.
fn describe(err: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = match err.url() {
        Some(url) => format!("{} ({})", err, redact(url.as_str())),
        None => err.to_string(),
    };
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    redact(&text)
}

/// A rustls configuration (ring): the system roots (`SSL_CERT_FILE`, else
/// the first CA bundle found) or the host's CA bundle, or no verification
/// at all when insecure; a client certificate when given. Every HTTP
/// client of the server is built on it.
pub(crate) fn tls_config(
    insecure: bool,
    ca_pem: Option<&[u8]>,
    identity: Option<(&String, &String)>,
) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptCertificate::any(provider)))
    } else {
        let roots = match ca_pem {
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add_parsable_certificates(
                    CertificateDer::pem_slice_iter(pem).filter_map(Result::ok),
                );
                roots
            }
            None => system_roots(),
        };
        builder.with_root_certificates(roots)
    };
    match identity {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .filter_map(Result::ok)
                    .collect();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|_| "the TLS client key is not a valid PEM private key".to_string())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("invalid TLS client certificate: {e}"))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// System CA bundles; the first one found is used (after `SSL_CERT_FILE`).
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL
    "/etc/ssl/ca-bundle.pem",             // openSUSE
    "/etc/ssl/cert.pem",                  // Alpine, macOS
];

/// The PEM bytes of `SSL_CERT_FILE`, else of the first system CA bundle
/// found that holds a certificate; `None` (logged) when there is none.
pub(crate) fn system_ca_bundle() -> Option<Vec<u8>> {
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(CA_BUNDLES.iter().map(PathBuf::from));
    for path in candidates {
        if let Ok(pem) = std::fs::read(&path) {
            if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                tracing::debug!(path = %path.display(), "found the system CA bundle");
                return Some(pem);
            }
        }
    }
    tracing::warn!("no system CA bundle found; HTTPS requests will fail verification");
    None
}

/// The system roots (see [`system_ca_bundle`]). An empty store (HTTPS
/// requests then fail with a certificate error) is not fatal: the server
/// may never make an HTTPS request.
fn system_roots() -> rustls::RootCertStore {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = system_ca_bundle() {
        roots
            .add_parsable_certificates(CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok));
    }
    roots
}

/// Accepts a server certificate without a chain to a root: any (a
/// repository marked `insecure`), or exactly one (`pinned`, the DER of
/// the certificate expected). Handshake signatures are still checked.
#[derive(Debug)]
pub(crate) struct AcceptCertificate {
    pinned: Option<Vec<u8>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl AcceptCertificate {
    pub(crate) fn any(provider: Arc<rustls::crypto::CryptoProvider>) -> Self {
        AcceptCertificate {
            pinned: None,
            provider,
        }
    }

    pub(crate) fn pinned(der: Vec<u8>, provider: Arc<rustls::crypto::CryptoProvider>) -> Self {
        AcceptCertificate {
            pinned: Some(der),
            provider,
        }
    }
}

impl rustls::client::danger::ServerCertVerifier for AcceptCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match &self.pinned {
            Some(der) if end_entity.as_ref() != der.as_slice() => Err(rustls::Error::General(
                "not the expected certificate".to_string(),
            )),
            _ => Ok(rustls::client::danger::ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_and_compare() {
        assert_eq!(
            split_userinfo("https://u:p%40ss@charts.example.com/r"),
            (
                "https://charts.example.com/r".to_string(),
                Some(("u".to_string(), "p@ss".to_string()))
            )
        );
        assert_eq!(
            origin("https://Charts.Example.com:8443/a/b"),
            "https://charts.example.com:8443"
        );
        assert_eq!(
            crate::domain::url_host("https://u@h.example:99/x"),
            Some("h.example")
        );
    }

    #[test]
    fn index_parses_what_is_used() {
        let index: Index = serde_saphyr::from_str(
            "apiVersion: v1\nentries:\n  web:\n  - version: 1.2.0\n    urls: [charts/web-1.2.0.tgz]\n    digest: abc\n    created: 2020-01-01T00:00:00Z\n  - version: 1.10.0\n    urls: [charts/web-1.10.0.tgz]\ngenerated: x\n",
        )
        .unwrap();
        assert_eq!(index.entries["web"].len(), 2);
        assert_eq!(index.entries["web"][0].digest, "abc");
    }
}
