//! Plain value types shared by the pipeline, free of protobuf and of I/O.

use std::fmt;

/// A repository URL as the client sent it. It may carry credentials in its
/// userinfo, so it is never printed directly: [`fmt::Display`] redacts. The
/// credentials of Argo CD's `Repository` message travel with it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RepoUrl {
    raw: String,
    credentials: Option<std::sync::Arc<Credentials>>,
}

/// How to reach a remote: Argo CD's `Repository` credential and transport
/// fields. `Debug` never shows a secret.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Credentials {
    pub username: String,
    /// Password or personal access token.
    pub password: String,
    /// Bitbucket Data Center's HTTP access token (`Authorization: Bearer`).
    pub bearer_token: String,
    /// PEM private key for SSH remotes.
    pub ssh_private_key: String,
    /// PEM client certificate and key for HTTPS remotes.
    pub tls_client_cert: String,
    pub tls_client_key: String,
    /// Skip TLS verification (HTTPS) or host-key checking (SSH).
    pub insecure: bool,
    /// Send the username and password up front (`Authorization: Basic`).
    pub force_http_basic_auth: bool,
    /// Proxy for HTTP(S) remotes, and the hosts that bypass it.
    pub proxy: String,
    pub no_proxy: String,
    pub github_app: Option<GitHubApp>,
    /// A cloud identity that mints the token git authenticates with.
    pub cloud: Option<CloudIdentity>,
    /// Talk to an OCI registry over plain HTTP (`insecureOCIForceHttp`).
    pub plain_http: bool,
}

/// Argo CD's Google Cloud and Azure repository credentials: each is
/// exchanged for a short-lived access token (see `git::cloud`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum CloudIdentity {
    /// `gcpServiceAccountKey`: a Google service account key (JSON).
    GoogleServiceAccount { key_json: String },
    /// `azureServicePrincipal*`: an Entra ID application and its secret;
    /// `authority` is `azureActiveDirectoryEndpoint` (empty: public cloud).
    AzureServicePrincipal {
        client_id: String,
        client_secret: String,
        tenant_id: String,
        authority: String,
    },
    /// `useAzureWorkloadIdentity`: the pod's federated token
    /// (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE`,
    /// `AZURE_AUTHORITY_HOST`).
    AzureWorkloadIdentity,
}

impl fmt::Debug for CloudIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloudIdentity::GoogleServiceAccount { .. } => f.write_str("GoogleServiceAccount(***)"),
            CloudIdentity::AzureServicePrincipal {
                client_id,
                tenant_id,
                ..
            } => write!(f, "AzureServicePrincipal({client_id}@{tenant_id}, ***)"),
            CloudIdentity::AzureWorkloadIdentity => f.write_str("AzureWorkloadIdentity"),
        }
    }
}

/// GitHub App credentials: an installation token is minted from them.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct GitHubApp {
    pub app_id: i64,
    pub installation_id: i64,
    /// PEM RSA private key of the app.
    pub private_key: String,
    /// GitHub Enterprise API base URL; empty for github.com.
    pub enterprise_base_url: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |text: &str| if text.is_empty() { "" } else { "***" };
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &set(&self.password))
            .field("bearer_token", &set(&self.bearer_token))
            .field("ssh_private_key", &set(&self.ssh_private_key))
            .field("tls_client_cert", &set(&self.tls_client_cert))
            .field("tls_client_key", &set(&self.tls_client_key))
            .field("insecure", &self.insecure)
            .field("force_http_basic_auth", &self.force_http_basic_auth)
            .field("proxy", &redact_url(&self.proxy))
            .field("no_proxy", &self.no_proxy)
            .field(
                "github_app",
                &self.github_app.as_ref().map(|app| app.app_id),
            )
            .field("cloud", &self.cloud)
            .finish()
    }
}

impl Credentials {
    /// Whether anything is set.
    pub fn is_empty(&self) -> bool {
        *self == Credentials::default()
    }
}

impl RepoUrl {
    /// Fails on an empty URL.
    pub fn parse(raw: &str) -> Result<Self, InvalidRepoUrl> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(InvalidRepoUrl::Empty);
        }
        if trimmed.starts_with('-') {
            // Would be read as an option by git.
            return Err(InvalidRepoUrl::LeadingDash);
        }
        Ok(RepoUrl {
            raw: trimmed.to_string(),
            credentials: None,
        })
    }

    /// The same URL with these credentials (none when empty).
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = (!credentials.is_empty()).then(|| std::sync::Arc::new(credentials));
        self
    }

    /// The credentials given with the URL (not those in its userinfo).
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_deref()
    }

    /// A digest of everything used to authenticate (the raw URL with its
    /// userinfo, and the credentials), for keeping work done with one set
    /// of credentials from being handed to a request with another. Not
    /// reversible; never a cache key of its own.
    pub fn access_digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(self.raw.as_bytes());
        if let Some(c) = &self.credentials {
            let app = c.github_app.clone().unwrap_or_default();
            for part in [
                &c.username,
                &c.password,
                &c.bearer_token,
                &c.ssh_private_key,
                &c.tls_client_cert,
                &c.tls_client_key,
                &c.proxy,
                &c.no_proxy,
                &app.private_key,
                &app.enterprise_base_url,
            ] {
                hasher.update((part.len() as u64).to_le_bytes());
                hasher.update(part.as_bytes());
            }
            hasher.update([u8::from(c.insecure), u8::from(c.force_http_basic_auth)]);
            hasher.update(app.app_id.to_le_bytes());
            hasher.update(app.installation_id.to_le_bytes());
        }
        hex::encode(&hasher.finalize()[..12])
    }

    /// The URL to hand to git (it may contain credentials).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The URL with any password in its userinfo replaced by `***`, for
    /// errors, logs and metric labels.
    pub fn redacted(&self) -> String {
        redact_url(&self.raw)
    }

    /// The identity of a remote: lower-cased, without a trailing `/` or
    /// `.git`, and scp-style `git@host:org/repo` folded into `host/org/repo`
    /// form, so spellings of one remote share one object store. Credentials
    /// are dropped.
    pub fn normalized(&self) -> String {
        let mut url = self.raw.trim().to_lowercase();
        if let Some(scheme_end) = url.find("://") {
            let rest = &url[scheme_end + 3..];
            if let Some(at) = rest.find('@').filter(|at| rest[..*at].find('/').is_none()) {
                url = format!("{}{}", &url[..scheme_end + 3], &rest[at + 1..]);
            }
        } else if let Some((user_host, path)) = url.split_once(':') {
            // scp-like syntax: [user@]host:path
            let host = user_host.rsplit('@').next().unwrap_or(user_host);
            url = format!("{host}/{}", path.trim_start_matches('/'));
        }
        while url.ends_with('/') {
            url.pop();
        }
        if let Some(stripped) = url.strip_suffix(".git") {
            url = stripped.to_string();
        }
        url
    }
}

impl RepoUrl {
    /// The remote as webhooks name it: host (without user, port, or an
    /// `ssh.`/`altssh.` prefix) and path, lower-cased, without `.git`, so
    /// `https://github.com/Org/Repo`, `ssh://git@ssh.github.com:443/org/repo.git`
    /// and `git@github.com:org/repo` are all `github.com/org/repo`.
    pub fn webhook_identity(&self) -> String {
        webhook_identity(&self.raw)
    }
}

/// The host of an `scheme://[user@]host[:port]/...` or `[user@]host:path`
/// URL, without port (the name CA bundles are filed under).
pub fn url_host(url: &str) -> Option<&str> {
    let rest = match url.split_once("://") {
        Some((_, rest)) => rest,
        None => url.split_once(':')?.0,
    };
    let authority = rest.split('/').next()?;
    let host = authority.rsplit('@').next()?;
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    (!host.is_empty()).then_some(host)
}

/// [`RepoUrl::webhook_identity`] of any URL text (webhook payloads carry
/// web URLs as well as clone URLs).
pub fn webhook_identity(url: &str) -> String {
    let url = url.trim().to_lowercase();
    let (authority, path) = match url.split_once("://") {
        Some((_, rest)) => rest.split_once('/').unwrap_or((rest, "")),
        // scp-like: [user@]host:path
        None => url.split_once(':').unwrap_or((url.as_str(), "")),
    };
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    let host = host
        .strip_prefix("altssh.")
        .or_else(|| host.strip_prefix("ssh."))
        .unwrap_or(host);
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    format!("{host}/{path}")
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoUrl({})", self.redacted())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRepoUrl {
    #[error("repository URL is empty")]
    Empty,
    #[error("repository URL must not start with '-'")]
    LeadingDash,
}

/// Replaces the userinfo of every `scheme://userinfo@host` in `text` with
/// `***`: a password, and equally a token given as the user name
/// (`https://<token>@host`). Used on URLs and on any text that may quote
/// one (git's stderr).
pub fn redact_url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme_end) = rest.find("://") {
        let (head, tail) = rest.split_at(scheme_end + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace or quote; the
        // userinfo at the last '@' before that (a password may contain '@').
        let authority_end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&tail[at..authority_end]);
            }
            None => out.push_str(&tail[..authority_end]),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

/// A URL split into the form git gets on its command line (no userinfo)
/// and the credentials it carried, which go to git through its
/// environment instead.
#[derive(Clone, PartialEq, Eq)]
pub struct UrlCredentials {
    pub url_without_userinfo: String,
    pub username: String,
    pub password: String,
}

impl RepoUrl {
    /// Splits off `user[:password]@` from a `scheme://` URL; `None` when
    /// the URL carries no userinfo. Percent-escapes in the userinfo are
    /// decoded, as git would.
    pub fn split_credentials(&self) -> Option<UrlCredentials> {
        let scheme_end = self.raw.find("://")? + 3;
        let tail = &self.raw[scheme_end..];
        let authority_end = tail.find('/').unwrap_or(tail.len());
        let at = tail[..authority_end].rfind('@')?;
        let userinfo = &tail[..at];
        let (username, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        Some(UrlCredentials {
            url_without_userinfo: format!("{}{}", &self.raw[..scheme_end], &tail[at + 1..]),
            username: percent_decode(username),
            password: percent_decode(password),
        })
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A random hex name (96 bits), so paths under the work directory cannot be
/// guessed by other local users.
pub fn unguessable_name() -> String {
    use rand::Rng;
    let bytes: [u8; 12] = rand::rng().random();
    hex::encode(bytes)
}

/// The resource-tracking method of an Application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackingMethod {
    Annotation,
    Label,
    AnnotationAndLabel,
}

impl TrackingMethod {
    /// Argo CD treats empty and unknown values as `annotation` when it
    /// writes tracking metadata.
    pub fn parse(value: &str) -> Self {
        match value {
            "label" => TrackingMethod::Label,
            "annotation+label" => TrackingMethod::AnnotationAndLabel,
            _ => TrackingMethod::Annotation,
        }
    }
}

/// What tracking metadata to write on rendered objects.
#[derive(Debug, Clone)]
pub struct Tracking {
    pub method: TrackingMethod,
    pub app_label_key: String,
    pub app_name: String,
    /// Destination namespace: the default for objects without one.
    pub namespace: String,
    pub installation_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_identity_folds_every_spelling_of_a_remote() {
        for url in [
            "https://github.com/Org/Repo",
            "https://github.com/org/repo.git",
            "http://user:pw@github.com/org/repo/",
            "ssh://git@ssh.github.com:443/org/repo.git",
            "ssh://git@altssh.github.com/org/repo",
            "git@github.com:org/repo.git",
            "github.com:org/repo",
        ] {
            assert_eq!(webhook_identity(url), "github.com/org/repo", "{url}");
        }
        assert_ne!(
            webhook_identity("https://github.com/org/repo2"),
            webhook_identity("https://github.com/org/repo")
        );
        assert_eq!(
            webhook_identity("https://127.0.0.1:8443/git/r.git"),
            "127.0.0.1/git/r"
        );
    }

    #[test]
    fn redacts_all_userinfo() {
        assert_eq!(
            redact_url("https://user:s3cr3t@example.com/r.git"),
            "https://***@example.com/r.git"
        );
        assert_eq!(
            redact_url("https://ghp_token@example.com/r"),
            "https://***@example.com/r"
        );
        assert_eq!(
            redact_url("https://u:p@ss@example.com/r"),
            "https://***@example.com/r"
        );
        assert_eq!(redact_url("file:///tmp/repo"), "file:///tmp/repo");
        assert_eq!(
            redact_url("fatal: unable to access 'https://a:b@h/x/': error"),
            "fatal: unable to access 'https://***@h/x/': error"
        );
        let url = RepoUrl::parse("https://u:p@h/x").unwrap();
        assert!(!format!("{url} {url:?}").contains("u:p"));
    }

    #[test]
    fn splits_credentials_off_urls() {
        let split = RepoUrl::parse("https://al%40ice:p%3Ass@h:8443/o/r.git")
            .unwrap()
            .split_credentials()
            .unwrap();
        assert_eq!(split.url_without_userinfo, "https://h:8443/o/r.git");
        assert_eq!(split.username, "al@ice");
        assert_eq!(split.password, "p:ss");
        let token = RepoUrl::parse("https://tok@h/r")
            .unwrap()
            .split_credentials()
            .unwrap();
        assert_eq!(
            (token.username.as_str(), token.password.as_str()),
            ("tok", "")
        );
        assert!(RepoUrl::parse("https://h/r@x")
            .unwrap()
            .split_credentials()
            .is_none());
        assert!(RepoUrl::parse("git@github.com:o/r")
            .unwrap()
            .split_credentials()
            .is_none());
        let odd = RepoUrl::parse("https://%é%:x@h/r")
            .unwrap()
            .split_credentials()
            .unwrap();
        assert_eq!(odd.username, "%é%");
    }

    #[test]
    fn normalizes_remote_spellings() {
        let n = |s: &str| RepoUrl::parse(s).unwrap().normalized();
        assert_eq!(
            n("https://GitHub.com/Org/Repo.git"),
            "https://github.com/org/repo"
        );
        assert_eq!(
            n("https://user:pw@github.com/org/repo/"),
            "https://github.com/org/repo"
        );
        assert_eq!(n("git@github.com:org/repo.git"), "github.com/org/repo");
        assert_eq!(n("file:///tmp/x.git"), "file:///tmp/x");
    }

    #[test]
    fn rejects_bad_urls() {
        assert_eq!(RepoUrl::parse("  "), Err(InvalidRepoUrl::Empty));
        assert_eq!(
            RepoUrl::parse("--upload-pack=x"),
            Err(InvalidRepoUrl::LeadingDash)
        );
    }
}
