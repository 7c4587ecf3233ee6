//! Google Cloud and Azure repository credentials for git.
//!
//! Argo CD exchanges a cloud identity for a short-lived access token and
//! hands it to git over HTTPS (`util/git/creds.go`):
//!
//! - `GoogleCloudCreds` (a service account key, `gcpServiceAccountKey`):
//!   username = the key's `client_email`, password = an OAuth access token
//!   for the `cloud-platform` scope, obtained with the JWT-bearer grant
//!   (RFC 7523) at the key's `token_uri` (golang.org/x/oauth2 `jwt`).
//! - `AzureServicePrincipalCreds` (`azureServicePrincipal*`): username = the
//!   empty string, password = an Entra ID token for Azure DevOps
//!   (`499b84ac-1321-427f-aa17-267ca6975798/.default`), obtained with the
//!   client-credentials grant and the client secret. Argo CD also gives git
//!   `Authorization: Bearer <token>` through `http.extraHeader`
//!   (see [`uses_bearer_header`]).
//! - `AzureWorkloadIdentityCreds` (`useAzureWorkloadIdentity`): the same as
//!   the service principal, but the client is authenticated with the pod's
//!   federated token (`AZURE_FEDERATED_TOKEN_FILE`) as a client assertion.
//!
//! Tokens are cached per identity (keyed by a SHA-256 digest of it, never
//! the secret in clear) and reused until shortly before they expire;
//! concurrent callers for one identity share one exchange.
//!
//! Secrets (private keys, client secrets, federated tokens, signed JWTs,
//! access tokens) never appear in an error message or a log line.

use super::github_app::error_chain;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::RsaKeyPair;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::domain::CloudIdentity;

/// OAuth scope Argo CD requests for Google Cloud Source Repositories.
pub const GOOGLE_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Google's token endpoint, used when the key has no `token_uri`
/// (golang.org/x/oauth2 `google.JWTTokenURL`).
const GOOGLE_DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// RFC 7523 JWT-bearer authorization grant.
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The service-account JWT as golang.org/x/oauth2 `jws` builds it: `iat`
/// backdated 10 s for clock skew, `exp` one hour after `iat`.
const GOOGLE_JWT_BACKDATE_SECS: i64 = 10;
const GOOGLE_JWT_LIFETIME_SECS: i64 = 3600;

/// Entra ID resource of Azure DevOps, with `/.default` (Argo CD's
/// `azureDevopsEntraResourceId`).
pub const AZURE_DEVOPS_SCOPE: &str = "499b84ac-1321-427f-aa17-267ca6975798/.default";

/// Entra ID public cloud, used when no authority is configured.
const AZURE_DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";

/// RFC 7523 client assertion type (the federated token is a JWT).
const AZURE_CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Minutes Argo CD keeps a service principal token in its cache, and the
/// variable overriding it (capped at 59: the tokens live an hour).
pub const SERVICE_PRINCIPAL_EXPIRATION_ENV: &str =
    "ARGOCD_AZURE_SERVICE_PRINCIPAL_CREDS_EXPIRATION_DURATION";
const SERVICE_PRINCIPAL_DEFAULT_MINUTES: u64 = 59;
const SERVICE_PRINCIPAL_MAX_MINUTES: u64 = 59;

/// The workload-identity environment (the Azure workload identity webhook
/// sets it in the pod).
const ENV_AZURE_CLIENT_ID: &str = "AZURE_CLIENT_ID";
const ENV_AZURE_TENANT_ID: &str = "AZURE_TENANT_ID";
const ENV_AZURE_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";
const ENV_AZURE_AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";

/// A cached token is reused while it has more than this left.
const REFRESH_MARGIN_SECS: i64 = 60;

/// Argo CD drops a workload-identity token from its cache five minutes
/// before it expires (`workloadidentity.CalculateCacheExpiryBasedOnTokenExpiry`).
const WORKLOAD_IDENTITY_REFRESH_MARGIN_SECS: i64 = 300;

/// Lifetime assumed for a token answered without `expires_in`.
const DEFAULT_TOKEN_LIFETIME_SECS: i64 = 3600;

/// Timeout of one token request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Which exchange failed, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    GoogleServiceAccount,
    AzureServicePrincipal,
    AzureWorkloadIdentity,
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flow::GoogleServiceAccount => "Google service account",
            Flow::AzureServicePrincipal => "Azure service principal",
            Flow::AzureWorkloadIdentity => "Azure workload identity",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Google service account key JSON invalid: {reason}")]
    GoogleKey { reason: String },
    #[error("{flow} credentials invalid: {reason}")]
    Invalid { flow: Flow, reason: String },
    #[error("Azure workload identity: environment variable {name} is not set")]
    MissingEnv { name: &'static str },
    #[error("Azure workload identity: federated token file {path} could not be read: {reason}")]
    TokenFile { path: String, reason: String },
    #[error("{flow} token endpoint {url} answered {status}: {excerpt}")]
    Status {
        flow: Flow,
        url: String,
        status: reqwest::StatusCode,
        excerpt: String,
    },
    #[error("{flow} token request to {url} failed: {reason}")]
    Transport {
        flow: Flow,
        url: String,
        reason: String,
    },
    #[error("{flow} token endpoint {url} answered without an access token")]
    NoToken { flow: Flow, url: String },
    #[error("cloud credentials HTTP client could not be built: {0}")]
    Client(String),
}

/// Whether Argo CD also gives git `Authorization: Bearer <password>`
/// (`ARGOCD_GIT_BEARER_AUTH_HEADER`, passed as `http.extraHeader`) for this
/// identity: true for both Azure flows, false for Google.
pub fn uses_bearer_header(identity: &CloudIdentity) -> bool {
    !matches!(identity, CloudIdentity::GoogleServiceAccount { .. })
}

/// What [`CloudTokens`] reads from the environment; tests build it by hand.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    /// `AZURE_CLIENT_ID`.
    pub(crate) azure_client_id: Option<String>,
    /// `AZURE_TENANT_ID`.
    pub(crate) azure_tenant_id: Option<String>,
    /// `AZURE_FEDERATED_TOKEN_FILE`.
    pub(crate) azure_federated_token_file: Option<PathBuf>,
    /// `AZURE_AUTHORITY_HOST`; `None`: the public cloud.
    pub(crate) azure_authority_host: Option<String>,
    /// Longest reuse of a service principal token (from
    /// `ARGOCD_AZURE_SERVICE_PRINCIPAL_CREDS_EXPIRATION_DURATION`); `None`:
    /// until shortly before it expires.
    pub(crate) service_principal_cache: Option<Duration>,
    /// Honour `HTTPS_PROXY` and friends.
    pub(crate) env_proxy: bool,
    /// Accept `http://` Azure authorities (tests talk to a local fake).
    pub(crate) allow_http: bool,
}

impl Settings {
    /// The settings of the process environment.
    pub(crate) fn from_env() -> Settings {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Settings {
            azure_client_id: var(ENV_AZURE_CLIENT_ID),
            azure_tenant_id: var(ENV_AZURE_TENANT_ID),
            azure_federated_token_file: var(ENV_AZURE_FEDERATED_TOKEN_FILE).map(PathBuf::from),
            azure_authority_host: var(ENV_AZURE_AUTHORITY_HOST),
            service_principal_cache: service_principal_cache_lifetime(
                std::env::var(SERVICE_PRINCIPAL_EXPIRATION_ENV)
                    .ok()
                    .as_deref(),
            ),
            env_proxy: true,
            allow_http: false,
        }
    }
}

/// The service principal cache lifetime as Argo CD derives it from
/// `ARGOCD_AZURE_SERVICE_PRINCIPAL_CREDS_EXPIRATION_DURATION`: unset or not
/// an integer, 59 minutes; above 59, 59 (with a warning). Zero or negative
/// makes Argo CD's cache keep the token forever; here it is then kept until
/// a minute before it expires.
fn service_principal_cache_lifetime(raw: Option<&str>) -> Option<Duration> {
    let minutes = match raw.filter(|r| !r.is_empty()).map(str::parse::<i64>) {
        None | Some(Err(_)) => SERVICE_PRINCIPAL_DEFAULT_MINUTES,
        Some(Ok(m)) if m <= 0 => return None,
        Some(Ok(m)) if m as u64 > SERVICE_PRINCIPAL_MAX_MINUTES => {
            tracing::warn!(
                variable = SERVICE_PRINCIPAL_EXPIRATION_ENV,
                value = m,
                "greater than the maximum of 59 minutes; using 59"
            );
            SERVICE_PRINCIPAL_MAX_MINUTES
        }
        Some(Ok(m)) => m as u64,
    };
    Some(Duration::from_secs(minutes * 60))
}

/// Exchanges cloud identities for access tokens and caches them. Cheap to
/// clone (Arc inside).
#[derive(Clone)]
pub struct CloudTokens {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    settings: Settings,
    /// One slot per identity digest; its async mutex makes concurrent
    /// callers for the same identity share one exchange.
    slots: StdMutex<HashMap<[u8; 32], Slot>>,
}

/// The cached token of one identity, if any.
type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

struct Cached {
    username: String,
    token: String,
    /// Unix seconds after which the token is exchanged again.
    refresh_at: i64,
}

/// A token endpoint's answer.
struct Answer {
    access_token: String,
    expires_in: i64,
}

impl fmt::Debug for CloudTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slots = self.inner.slots.lock().map(|s| s.len()).unwrap_or(0);
        let settings = &self.inner.settings;
        f.debug_struct("CloudTokens")
            .field("identities", &slots)
            .field(
                "workload_identity_env",
                &(settings.azure_client_id.is_some()
                    && settings.azure_tenant_id.is_some()
                    && settings.azure_federated_token_file.is_some()),
            )
            .field("service_principal_cache", &settings.service_principal_cache)
            .finish()
    }
}

impl CloudTokens {
    /// Reads the Azure workload-identity environment and
    /// `ARGOCD_AZURE_SERVICE_PRINCIPAL_CREDS_EXPIRATION_DURATION` once, and
    /// builds the HTTP client (10 s timeout, rustls with ring, the system CA
    /// bundle, proxies from the environment). Missing workload-identity
    /// variables only fail [`CloudTokens::credentials`] for that flow.
    pub fn new() -> Result<CloudTokens, Error> {
        Self::with_settings(Settings::from_env())
    }

    pub(crate) fn with_settings(settings: Settings) -> Result<CloudTokens, Error> {
        let tls = crate::charts::tls_config(false, None, None).map_err(Error::Client)?;
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(REQUEST_TIMEOUT)
            .user_agent("manifold")
            // The request carries a secret: never follow it elsewhere.
            .redirect(reqwest::redirect::Policy::none());
        if !settings.env_proxy {
            builder = builder.no_proxy();
        }
        let client = builder
            .build()
            .map_err(|e| Error::Client(error_chain(&e)))?;
        Ok(CloudTokens {
            inner: Arc::new(Inner {
                client,
                settings,
                slots: StdMutex::new(HashMap::new()),
            }),
        })
    }

    /// The (username, password) git uses for `identity`, as Argo CD gives
    /// them: (`client_email`, token) for Google, (`""`, token) for Azure.
    /// From the cache while the token is fresh, else exchanged; concurrent
    /// callers for the same identity share one exchange. Errors are not
    /// cached.
    pub async fn credentials(&self, identity: &CloudIdentity) -> Result<(String, String), Error> {
        let key = cache_key(identity, &self.inner.settings);
        let slot = {
            let mut slots = self
                .inner
                .slots
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            slots.entry(key).or_default().clone()
        };
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref() {
            if now_unix() < c.refresh_at {
                return Ok((c.username.clone(), c.token.clone()));
            }
        }
        let fresh = match identity {
            CloudIdentity::GoogleServiceAccount { key_json } => self.google(key_json).await?,
            CloudIdentity::AzureServicePrincipal {
                client_id,
                client_secret,
                tenant_id,
                authority,
            } => {
                self.service_principal(client_id, client_secret, tenant_id, authority)
                    .await?
            }
            CloudIdentity::AzureWorkloadIdentity => self.workload_identity().await?,
        };
        let pair = (fresh.username.clone(), fresh.token.clone());
        *cached = Some(fresh);
        Ok(pair)
    }

    async fn google(&self, key_json: &str) -> Result<Cached, Error> {
        let key = GoogleKey::parse(key_json)?;
        let now = now_unix();
        let jwt = google_jwt(&key, now)?;
        let form = form_encode(&[("grant_type", JWT_BEARER_GRANT), ("assertion", &jwt)]);
        let answer = self
            .exchange(Flow::GoogleServiceAccount, &key.token_uri, form, &[&jwt])
            .await?;
        Ok(Cached {
            username: key.client_email,
            token: answer.access_token,
            refresh_at: now + answer.expires_in - REFRESH_MARGIN_SECS,
        })
    }

    async fn service_principal(
        &self,
        client_id: &str,
        client_secret: &str,
        tenant_id: &str,
        authority: &str,
    ) -> Result<Cached, Error> {
        let flow = Flow::AzureServicePrincipal;
        let invalid = |reason: &str| Error::Invalid {
            flow,
            reason: reason.to_string(),
        };
        if client_id.is_empty() {
            return Err(invalid("empty client ID"));
        }
        if client_secret.is_empty() {
            return Err(invalid("empty client secret"));
        }
        let url = azure_token_url(
            flow,
            authority,
            AZURE_DEFAULT_AUTHORITY,
            tenant_id,
            self.inner.settings.allow_http,
        )?;
        let now = now_unix();
        let form = form_encode(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", client_secret),
            ("scope", AZURE_DEVOPS_SCOPE),
        ]);
        let answer = self.exchange(flow, &url, form, &[client_secret]).await?;
        let mut refresh_at = now + answer.expires_in - REFRESH_MARGIN_SECS;
        if let Some(cap) = self.inner.settings.service_principal_cache {
            refresh_at = refresh_at.min(now + cap.as_secs() as i64);
        }
        Ok(Cached {
            username: String::new(),
            token: answer.access_token,
            refresh_at,
        })
    }

    async fn workload_identity(&self) -> Result<Cached, Error> {
        let flow = Flow::AzureWorkloadIdentity;
        let settings = &self.inner.settings;
        let client_id = settings
            .azure_client_id
            .as_deref()
            .ok_or(Error::MissingEnv {
                name: ENV_AZURE_CLIENT_ID,
            })?;
        let tenant_id = settings
            .azure_tenant_id
            .as_deref()
            .ok_or(Error::MissingEnv {
                name: ENV_AZURE_TENANT_ID,
            })?;
        let token_file =
            settings
                .azure_federated_token_file
                .as_deref()
                .ok_or(Error::MissingEnv {
                    name: ENV_AZURE_FEDERATED_TOKEN_FILE,
                })?;
        let url = azure_token_url(
            flow,
            settings.azure_authority_host.as_deref().unwrap_or(""),
            AZURE_DEFAULT_AUTHORITY,
            tenant_id,
            settings.allow_http,
        )?;
        // Re-read on each exchange: the kubelet rotates the projected token.
        let token_error = |reason: String| Error::TokenFile {
            path: token_file.display().to_string(),
            reason,
        };
        let assertion = tokio::fs::read_to_string(token_file)
            .await
            .map_err(|e| token_error(e.to_string()))?;
        let assertion = assertion.trim();
        if assertion.is_empty() {
            return Err(token_error("the file is empty".to_string()));
        }
        let now = now_unix();
        let form = form_encode(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_assertion_type", AZURE_CLIENT_ASSERTION_TYPE),
            ("client_assertion", assertion),
            ("scope", AZURE_DEVOPS_SCOPE),
        ]);
        let answer = self.exchange(flow, &url, form, &[assertion]).await?;
        Ok(Cached {
            username: String::new(),
            token: answer.access_token,
            refresh_at: now + answer.expires_in - WORKLOAD_IDENTITY_REFRESH_MARGIN_SECS,
        })
    }

    /// POSTs the form `form` to `url` and reads `access_token` and
    /// `expires_in` from the JSON answer. `secrets` (in the form) are blanked
    /// in an error body should the server echo them.
    async fn exchange(
        &self,
        flow: Flow,
        url: &str,
        form: String,
        secrets: &[&str],
    ) -> Result<Answer, Error> {
        let shown_url = redact_url(url);
        tracing::debug!(%flow, url = %shown_url, "exchanging a cloud identity for an access token");
        let transport = |e: reqwest::Error| Error::Transport {
            flow,
            url: shown_url.clone(),
            reason: error_chain(&e.without_url()),
        };
        let response = self
            .inner
            .client
            .post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(form)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let body = response.text().await.map_err(transport)?;
        if !status.is_success() {
            return Err(Error::Status {
                flow,
                url: shown_url,
                status,
                excerpt: excerpt(&body, secrets),
            });
        }
        let no_token = || Error::NoToken {
            flow,
            url: shown_url.clone(),
        };
        let parsed: Value = serde_json::from_str(&body).map_err(|_| no_token())?;
        let access_token = parsed
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(no_token)?
            .to_string();
        // Entra ID's v1 endpoints send `expires_in` as a string.
        let expires_in = match parsed.get("expires_in") {
            Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .filter(|secs| *secs > 0)
        .unwrap_or(DEFAULT_TOKEN_LIFETIME_SECS);
        Ok(Answer {
            access_token,
            expires_in,
        })
    }
}

/// SHA-256 of what identifies the token of `identity`: its secrets are
/// hashed, never kept in clear.
fn cache_key(identity: &CloudIdentity, settings: &Settings) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut field = |value: &[u8]| {
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value);
    };
    match identity {
        CloudIdentity::GoogleServiceAccount { key_json } => {
            field(b"google");
            field(key_json.as_bytes());
        }
        CloudIdentity::AzureServicePrincipal {
            client_id,
            client_secret,
            tenant_id,
            authority,
        } => {
            field(b"azure-service-principal");
            field(tenant_id.as_bytes());
            field(client_id.as_bytes());
            field(client_secret.as_bytes());
            field(authority.trim().trim_end_matches('/').as_bytes());
        }
        CloudIdentity::AzureWorkloadIdentity => {
            field(b"azure-workload-identity");
            field(settings.azure_client_id.as_deref().unwrap_or("").as_bytes());
            field(settings.azure_tenant_id.as_deref().unwrap_or("").as_bytes());
            field(
                settings
                    .azure_authority_host
                    .as_deref()
                    .unwrap_or("")
                    .as_bytes(),
            );
        }
    }
    hasher.finalize().into()
}

/// `<authority>/<tenant>/oauth2/v2.0/token`. The authority defaults to
/// `default` when empty, may end in `/`, and must be https (as azidentity
/// demands) unless `allow_http`. The tenant is checked as azidentity does
/// (letters, digits, `-` and `.`), which also keeps it one path segment.
fn azure_token_url(
    flow: Flow,
    authority: &str,
    default: &str,
    tenant_id: &str,
    allow_http: bool,
) -> Result<String, Error> {
    let invalid = |reason: String| Error::Invalid { flow, reason };
    let authority = authority.trim();
    let authority = if authority.is_empty() {
        default
    } else {
        authority
    };
    let scheme = match authority.split_once("://") {
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => "https",
        Some((scheme, _)) if allow_http && scheme.eq_ignore_ascii_case("http") => "http",
        _ => {
            return Err(invalid(format!(
                "authority host {} is not an https URL",
                redact_url(authority)
            )))
        }
    };
    let rest = authority
        .split_once("://")
        .map_or("", |(_, rest)| rest)
        .trim_end_matches('/');
    if rest.is_empty() || rest.contains(['?', '#']) {
        return Err(invalid(format!(
            "authority host {} is not a valid URL",
            redact_url(authority)
        )));
    }
    if tenant_id.is_empty() {
        return Err(invalid("empty tenant ID".to_string()));
    }
    if !tenant_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(invalid(
            "tenant ID may contain only letters, digits, '-' and '.'".to_string(),
        ));
    }
    Ok(format!("{scheme}://{rest}/{tenant_id}/oauth2/v2.0/token"))
}

/// The fields of a service account key that the JWT-bearer flow uses.
struct GoogleKey {
    client_email: String,
    private_key: RsaKeyPair,
    private_key_id: Option<String>,
    token_uri: String,
    /// The JWT's `aud`: the key's `audience` if any, else `token_uri`.
    audience: String,
}

impl GoogleKey {
    /// Parses a key as golang.org/x/oauth2 `google` does for Argo CD
    /// (`CredentialsFromJSONWithType(..., google.ServiceAccount, ...)`).
    /// Reasons never quote the JSON.
    fn parse(key_json: &str) -> Result<GoogleKey, Error> {
        let invalid = |reason: String| Error::GoogleKey { reason };
        // Through `Value`: serde_json's syntax errors give a position, not
        // the text.
        let value: Value = serde_json::from_str(key_json).map_err(|e| {
            invalid(format!(
                "not JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        if !value.is_object() {
            return Err(invalid("not a JSON object".to_string()));
        }
        let text = |name: &str| -> Result<Option<String>, Error> {
            match value.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(invalid(format!("{name} is not a string"))),
            }
        };
        match text("type")?.as_deref() {
            Some("service_account") => {}
            None => {
                return Err(invalid(
                    "missing type (expected service_account)".to_string(),
                ))
            }
            Some(other) => {
                return Err(invalid(format!(
                    "type {other:?} is not supported (expected service_account)"
                )))
            }
        }
        let client_email =
            text("client_email")?.ok_or_else(|| invalid("missing client_email".to_string()))?;
        let pem = text("private_key")?.ok_or_else(|| invalid("missing private_key".to_string()))?;
        let private_key = parse_rsa_key(&pem).map_err(invalid)?;
        let token_uri = text("token_uri")?.unwrap_or_else(|| GOOGLE_DEFAULT_TOKEN_URI.to_string());
        let audience = text("audience")?.unwrap_or_else(|| token_uri.clone());
        Ok(GoogleKey {
            client_email,
            private_key,
            private_key_id: text("private_key_id")?,
            token_uri,
            audience,
        })
    }
}

/// A PEM RSA private key, PKCS#8 (`PRIVATE KEY`, what Google issues) or
/// PKCS#1 (`RSA PRIVATE KEY`). The reason never quotes the key.
fn parse_rsa_key(pem: &str) -> Result<RsaKeyPair, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::PrivateKeyDer;
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| "private_key is not a PEM private key".to_string())?;
    let parsed = match &der {
        PrivateKeyDer::Pkcs8(der) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der()),
        _ => return Err("private_key is not an RSA key".to_string()),
    };
    parsed.map_err(|e| format!("private_key is not a usable RSA key ({e})"))
}

/// The signed assertion of the JWT-bearer grant, as golang.org/x/oauth2
/// `jwt` builds it: RS256, `kid` = `private_key_id` when set; `iss` the
/// service account, `scope` cloud-platform, `aud` the token endpoint, `iat`
/// 10 s in the past and `exp` an hour after `iat`.
fn google_jwt(key: &GoogleKey, now: i64) -> Result<String, Error> {
    let mut header = serde_json::json!({ "alg": "RS256", "typ": "JWT" });
    if let Some(kid) = &key.private_key_id {
        header["kid"] = Value::String(kid.clone());
    }
    let iat = now - GOOGLE_JWT_BACKDATE_SECS;
    let claims = serde_json::json!({
        "iss": key.client_email,
        "scope": GOOGLE_SCOPE,
        "aud": key.audience,
        "exp": iat + GOOGLE_JWT_LIFETIME_SECS,
        "iat": iat,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0u8; key.private_key.public().modulus_len()];
    key.private_key
        .sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            signing_input.as_bytes(),
            &mut signature,
        )
        .map_err(|_| Error::GoogleKey {
            reason: "signing with private_key failed".to_string(),
        })?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(&signature)
    ))
}

/// `application/x-www-form-urlencoded` (reqwest's `form` feature is off).
fn form_encode(fields: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        percent_encode_into(&mut out, name);
        out.push('=');
        percent_encode_into(&mut out, value);
    }
    out
}

fn percent_encode_into(out: &mut String, text: &str) {
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(HEX[(byte >> 4) as usize] as char);
                out.push(HEX[(byte & 0xf) as usize] as char);
            }
        }
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `url` without userinfo (`user:pass@`), query or fragment.
fn redact_url(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = authority.rsplit('@').next().unwrap_or(authority);
    format!("{scheme}://{host}{path}")
}

/// One line of at most 200 characters of an error body, with `secrets`
/// (raw or form-encoded, should a server echo them) blanked.
fn excerpt(body: &str, secrets: &[&str]) -> String {
    let mut body = body.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        body = body.replace(secret, "<redacted>");
        let mut encoded = String::new();
        percent_encode_into(&mut encoded, secret);
        if encoded != *secret {
            body = body.replace(&encoded, "<redacted>");
        }
    }
    let one_line = super::github_app::one_line(&body);
    if one_line.is_empty() {
        return "(empty body)".to_string();
    }
    one_line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicI64, AtomicU16, AtomicUsize, Ordering};
    use std::sync::OnceLock;

    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, Uri};
    use axum::response::IntoResponse;
    use ring::signature::KeyPair as _;

    const SA_EMAIL: &str = "repo-reader@project.iam.gserviceaccount.com";
    const SECRET: &str = "s3cr3t~value with spaces&symbols=/+";

    /// A throwaway 2048-bit PKCS#8 key, generated once per test run.
    fn test_key() -> &'static str {
        static KEY: OnceLock<String> = OnceLock::new();
        KEY.get_or_init(|| {
            let out = Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                ])
                .stderr(Stdio::null())
                .output()
                .expect("openssl runs");
            assert!(out.status.success(), "openssl genpkey failed");
            String::from_utf8(out.stdout).unwrap()
        })
    }

    /// The same key as PKCS#1 (`RSA PRIVATE KEY`).
    fn to_pkcs1(pkcs8: &str) -> String {
        let mut child = Command::new("openssl")
            .args(["rsa", "-traditional"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(pkcs8.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "openssl rsa failed");
        String::from_utf8(out.stdout).unwrap()
    }

    fn public_key_der(pem: &str) -> Vec<u8> {
        parse_rsa_key(pem).unwrap().public_key().as_ref().to_vec()
    }

    /// A line of the key's base64 body, to look for in messages.
    fn key_body_line(pem: &str) -> String {
        pem.lines().nth(1).unwrap().to_string()
    }

    fn key_json(token_uri: Option<&str>) -> String {
        let mut key = serde_json::json!({
            "type": "service_account",
            "project_id": "project",
            "private_key_id": "kid-123",
            "private_key": test_key(),
            "client_email": SA_EMAIL,
            "client_id": "1234567890",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        });
        if let Some(uri) = token_uri {
            key["token_uri"] = Value::String(uri.to_string());
        }
        key.to_string()
    }

    /// Verifies `jwt` with `public_key` and returns (header, claims).
    fn verify_jwt(jwt: &str, public_key: &[u8]) -> Option<(Value, Value)> {
        let mut parts = jwt.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let signature = URL_SAFE_NO_PAD.decode(s).ok()?;
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            public_key,
        )
        .verify(format!("{h}.{c}").as_bytes(), &signature)
        .ok()?;
        let header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
        let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).ok()?).ok()?;
        Some((header, claims))
    }

    fn form_decode(body: &str) -> HashMap<String, String> {
        fn decode(s: &str) -> String {
            let bytes = s.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                match bytes[i] {
                    b'+' => out.push(b' '),
                    b'%' => {
                        let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                        out.push(u8::from_str_radix(hex, 16).unwrap());
                        i += 2;
                    }
                    b => out.push(b),
                }
                i += 1;
            }
            String::from_utf8(out).unwrap()
        }
        body.split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(k), decode(v))
            })
            .collect()
    }

    #[derive(Debug, Clone)]
    struct Request {
        path: String,
        content_type: String,
        form: HashMap<String, String>,
    }

    /// The fake token endpoint: answers every path.
    struct Fake {
        calls: AtomicUsize,
        /// `expires_in` of the next answers.
        expires_in: AtomicI64,
        /// Status to answer with instead of 200, when non-zero.
        fail_status: AtomicU16,
        requests: StdMutex<Vec<Request>>,
    }

    impl Fake {
        fn requests(&self) -> Vec<Request> {
            self.requests.lock().unwrap().clone()
        }

        fn last(&self) -> Request {
            self.requests().pop().expect("a request")
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    async fn token_endpoint(
        State(fake): State<Arc<Fake>>,
        uri: Uri,
        headers: HeaderMap,
        body: String,
    ) -> axum::response::Response {
        let n = fake.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let form = form_decode(&body);
        fake.requests.lock().unwrap().push(Request {
            path: uri.path().to_string(),
            content_type: headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
            form: form.clone(),
        });
        // Long enough for concurrent callers to pile up behind one request.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let status = fake.fail_status.load(Ordering::SeqCst);
        if status != 0 {
            // A careless server echoing what it got, secrets first.
            let echoed = ["client_secret", "client_assertion", "assertion"]
                .iter()
                .filter_map(|k| form.get(*k))
                .cloned()
                .collect::<Vec<_>>()
                .join(" ");
            let body = format!(
                r#"{{"error":"invalid_client","error_description":"AADSTS7000215: bad credentials {echoed}","request":"{body}"}}"#
            );
            return (StatusCode::from_u16(status).unwrap(), body).into_response();
        }
        let answer = serde_json::json!({
            "access_token": format!("token{n}"),
            "token_type": "Bearer",
            "expires_in": fake.expires_in.load(Ordering::SeqCst),
        });
        (
            StatusCode::OK,
            [("content-type", "application/json")],
            answer.to_string(),
        )
            .into_response()
    }

    async fn serve_fake() -> (Arc<Fake>, String) {
        let fake = Arc::new(Fake {
            calls: AtomicUsize::new(0),
            expires_in: AtomicI64::new(3600),
            fail_status: AtomicU16::new(0),
            requests: StdMutex::new(Vec::new()),
        });
        let router = axum::Router::new()
            .fallback(token_endpoint)
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        (fake, format!("http://127.0.0.1:{port}"))
    }

    fn settings() -> Settings {
        Settings {
            service_principal_cache: service_principal_cache_lifetime(None),
            allow_http: true,
            ..Settings::default()
        }
    }

    fn tokens(settings: Settings) -> CloudTokens {
        CloudTokens::with_settings(settings).unwrap()
    }

    fn google(token_uri: &str) -> CloudIdentity {
        CloudIdentity::GoogleServiceAccount {
            key_json: key_json(Some(token_uri)),
        }
    }

    fn service_principal(authority: &str, secret: &str) -> CloudIdentity {
        CloudIdentity::AzureServicePrincipal {
            client_id: "11111111-2222-3333-4444-555555555555".into(),
            client_secret: secret.into(),
            tenant_id: "contoso.onmicrosoft.com".into(),
            authority: authority.into(),
        }
    }

    /// Workload-identity settings pointing at `authority`, with the token
    /// file in `dir`.
    fn workload_settings(authority: &str, dir: &tempfile::TempDir) -> Settings {
        Settings {
            azure_client_id: Some("wi-client".into()),
            azure_tenant_id: Some("72f988bf-86f1-41af-91ab-2d7cd011db47".into()),
            azure_federated_token_file: Some(dir.path().join("azure-identity-token")),
            azure_authority_host: Some(format!("{authority}/")),
            ..settings()
        }
    }

    #[test]
    fn google_jwt_is_signed_rs256_with_the_oauth2_claims() {
        let key = GoogleKey::parse(&key_json(None)).unwrap();
        assert_eq!(key.token_uri, GOOGLE_DEFAULT_TOKEN_URI);
        let jwt = google_jwt(&key, 1_700_000_000).unwrap();
        assert!(!jwt.contains('='), "base64url without padding");
        let (header, claims) =
            verify_jwt(&jwt, key.private_key.public_key().as_ref()).expect("valid signature");
        assert_eq!(
            header,
            serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "kid-123"})
        );
        assert_eq!(
            claims,
            serde_json::json!({
                "iss": SA_EMAIL,
                "scope": "https://www.googleapis.com/auth/cloud-platform",
                "aud": "https://oauth2.googleapis.com/token",
                "iat": 1_699_999_990,
                "exp": 1_700_003_590,
            })
        );
        // A tampered payload fails verification.
        let mut parts: Vec<&str> = jwt.split('.').collect();
        let other = URL_SAFE_NO_PAD.encode(r#"{"iss":"evil"}"#);
        parts[1] = &other;
        assert!(verify_jwt(&parts.join("."), key.private_key.public_key().as_ref()).is_none());
        // Without private_key_id there is no kid; an audience overrides aud.
        let mut json: Value =
            serde_json::from_str(&key_json(Some("https://t.example/token"))).unwrap();
        json.as_object_mut().unwrap().remove("private_key_id");
        json["audience"] = "https://aud.example".into();
        let key = GoogleKey::parse(&json.to_string()).unwrap();
        let jwt = google_jwt(&key, 1_700_000_000).unwrap();
        let (header, claims) = verify_jwt(&jwt, key.private_key.public_key().as_ref()).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "RS256", "typ": "JWT"}));
        assert_eq!(claims["aud"], "https://aud.example");
    }

    #[test]
    fn google_key_errors_name_the_problem_without_the_key() {
        let pem = test_key();
        let base: Value = serde_json::from_str(&key_json(None)).unwrap();
        let without = |field: &str| {
            let mut v = base.clone();
            v.as_object_mut().unwrap().remove(field);
            v.to_string()
        };
        let with = |field: &str, value: Value| {
            let mut v = base.clone();
            v[field] = value;
            v.to_string()
        };
        let truncated_pem = pem[..pem.len() / 2].to_string();
        let cases = [
            (without("private_key"), "missing private_key"),
            (without("client_email"), "missing client_email"),
            (without("type"), "missing type (expected service_account)"),
            (
                with("type", "authorized_user".into()),
                "type \"authorized_user\" is not supported",
            ),
            (with("private_key", 5.into()), "private_key is not a string"),
            (
                with("private_key", "not a pem".into()),
                "private_key is not a PEM private key",
            ),
            (
                with("private_key", truncated_pem.into()),
                "private_key is not a PEM private key",
            ),
            ("[1, 2]".to_string(), "not a JSON object"),
            (key_json(None)[..40].to_string(), "not JSON (line 1"),
        ];
        for (json, expected) in cases {
            let err = match GoogleKey::parse(&json) {
                Err(e) => e,
                Ok(_) => panic!("accepted: {expected}"),
            };
            let msg = err.to_string();
            assert!(
                msg.starts_with("Google service account key JSON invalid: "),
                "{msg}"
            );
            assert!(msg.contains(expected), "{msg} lacks {expected}");
            assert!(!msg.contains(&key_body_line(pem)), "{msg}");
            assert!(!msg.contains("PRIVATE KEY"), "{msg}");
        }
    }

    #[test]
    fn pkcs1_and_pkcs8_keys_are_the_same_key() {
        let pkcs8 = test_key();
        assert!(pkcs8.contains("-----BEGIN PRIVATE KEY-----"));
        let pkcs1 = to_pkcs1(pkcs8);
        assert!(pkcs1.contains("-----BEGIN RSA PRIVATE KEY-----"));
        assert_eq!(public_key_der(&pkcs1), public_key_der(pkcs8));
    }

    #[test]
    fn form_encoding_and_excerpts() {
        let body = form_encode(&[("a b", "x&y=z/+~"), ("grant_type", JWT_BEARER_GRANT)]);
        assert_eq!(
            body,
            "a+b=x%26y%3Dz%2F%2B~&grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
        );
        let decoded = form_decode(&body);
        assert_eq!(decoded["a b"], "x&y=z/+~");
        assert_eq!(decoded["grant_type"], JWT_BEARER_GRANT);

        let long = "x".repeat(500);
        let e = excerpt(&format!("a\n  b {long}"), &[]);
        assert!(e.starts_with("a b xxx"));
        assert_eq!(
            e.chars().count(),
            crate::git::github_app::BODY_EXCERPT_CHARS + 1
        );
        let mut encoded = String::new();
        percent_encode_into(&mut encoded, SECRET);
        let e = excerpt(&format!("raw {SECRET} form {encoded}"), &[SECRET, ""]);
        assert_eq!(e, "raw <redacted> form <redacted>");
        assert_eq!(excerpt(" \n", &[]), "(empty body)");
        assert_eq!(
            redact_url("https://u:p@login.example/t/oauth2?x=1"),
            "https://login.example/t/oauth2"
        );
    }

    #[test]
    fn azure_token_urls() {
        let url = |authority: &str, tenant: &str, http: bool| {
            azure_token_url(
                Flow::AzureServicePrincipal,
                authority,
                AZURE_DEFAULT_AUTHORITY,
                tenant,
                http,
            )
        };
        assert_eq!(
            url("", "tenant", false).unwrap(),
            "https://login.microsoftonline.com/tenant/oauth2/v2.0/token"
        );
        assert_eq!(
            url("https://login.microsoftonline.us/", "t.example", false).unwrap(),
            "https://login.microsoftonline.us/t.example/oauth2/v2.0/token"
        );
        assert_eq!(
            url("https://login.chinacloudapi.cn", "a-b", false).unwrap(),
            "https://login.chinacloudapi.cn/a-b/oauth2/v2.0/token"
        );
        assert_eq!(
            url(" HTTPS://login.example// ", "t", false).unwrap(),
            "https://login.example/t/oauth2/v2.0/token"
        );
        for (authority, tenant, expected) in [
            ("http://login.example", "t", "is not an https URL"),
            ("login.example", "t", "is not an https URL"),
            ("https://", "t", "is not a valid URL"),
            ("https://login.example?x=1", "t", "is not a valid URL"),
            ("", "", "empty tenant ID"),
            ("", "../common", "tenant ID may contain only"),
            ("", "a/b", "tenant ID may contain only"),
        ] {
            let err = url(authority, tenant, false).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with("Azure service principal credentials invalid: "),
                "{msg}"
            );
            assert!(msg.contains(expected), "{msg} lacks {expected}");
        }
        assert!(url("http://127.0.0.1:1", "t", true).is_ok());
    }

    #[test]
    fn service_principal_expiration_setting() {
        let minutes = |m: u64| Some(Duration::from_secs(m * 60));
        assert_eq!(service_principal_cache_lifetime(None), minutes(59));
        assert_eq!(service_principal_cache_lifetime(Some("")), minutes(59));
        assert_eq!(service_principal_cache_lifetime(Some("30")), minutes(30));
        assert_eq!(service_principal_cache_lifetime(Some("+5")), minutes(5));
        assert_eq!(service_principal_cache_lifetime(Some("59")), minutes(59));
        assert_eq!(service_principal_cache_lifetime(Some("120")), minutes(59));
        assert_eq!(service_principal_cache_lifetime(Some("ten")), minutes(59));
        assert_eq!(service_principal_cache_lifetime(Some(" 5")), minutes(59));
        assert_eq!(service_principal_cache_lifetime(Some("0")), None);
        assert_eq!(service_principal_cache_lifetime(Some("-5")), None);
    }

    #[test]
    fn new_reads_the_environment_and_debug_hides_secrets() {
        let tokens = CloudTokens::new().unwrap();
        assert!(format!("{tokens:?}").contains("CloudTokens"));
        let google = CloudIdentity::GoogleServiceAccount {
            key_json: "{}".into(),
        };
        assert!(!uses_bearer_header(&google));
        assert!(uses_bearer_header(&service_principal("", SECRET)));
        assert!(uses_bearer_header(&CloudIdentity::AzureWorkloadIdentity));
    }

    #[tokio::test]
    async fn google_posts_a_verifiable_jwt_bearer_grant_and_yields_email_and_token() {
        let (fake, base) = serve_fake().await;
        let tokens = tokens(settings());
        let token_uri = format!("{base}/token");
        let (username, password) = tokens.credentials(&google(&token_uri)).await.unwrap();
        assert_eq!(username, SA_EMAIL);
        assert_eq!(password, "token1");

        let request = fake.last();
        assert_eq!(request.path, "/token");
        assert_eq!(request.content_type, "application/x-www-form-urlencoded");
        let mut names: Vec<&str> = request.form.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["assertion", "grant_type"]);
        assert_eq!(
            request.form["grant_type"],
            "urn:ietf:params:oauth:grant-type:jwt-bearer"
        );
        let (header, claims) = verify_jwt(&request.form["assertion"], &public_key_der(test_key()))
            .expect("the assertion verifies with the public key");
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], "kid-123");
        assert_eq!(claims["iss"], SA_EMAIL);
        assert_eq!(claims["scope"], GOOGLE_SCOPE);
        assert_eq!(claims["aud"], token_uri.as_str());
        let iat = claims["iat"].as_i64().unwrap();
        assert_eq!(claims["exp"].as_i64().unwrap() - iat, 3600);
        assert!((iat - (now_unix() - 10)).abs() < 30, "iat {iat}");
    }

    #[tokio::test]
    async fn google_token_is_cached_and_refreshed_within_a_minute_of_expiry() {
        let (fake, base) = serve_fake().await;
        let tokens = tokens(settings());
        let identity = google(&format!("{base}/token"));
        // Expires in 30 s: inside the 60 s margin, so not reused.
        fake.expires_in.store(30, Ordering::SeqCst);
        assert_eq!(tokens.credentials(&identity).await.unwrap().1, "token1");
        assert_eq!(tokens.credentials(&identity).await.unwrap().1, "token2");
        fake.expires_in.store(3600, Ordering::SeqCst);
        assert_eq!(tokens.credentials(&identity).await.unwrap().1, "token3");
        // Cached: the clone shares the cache and makes no request.
        assert_eq!(
            tokens.clone().credentials(&identity).await.unwrap().1,
            "token3"
        );
        assert_eq!(fake.calls(), 3);
        // Another key is another cache entry.
        let other = CloudIdentity::GoogleServiceAccount {
            key_json: key_json(Some(&format!("{base}/other"))),
        };
        assert_eq!(tokens.credentials(&other).await.unwrap().1, "token4");
        assert_eq!(fake.calls(), 4);
        // The Debug output holds neither tokens nor keys.
        let debug = format!("{tokens:?}");
        assert!(debug.contains("identities: 2"), "{debug}");
        assert!(
            !debug.contains("token3") && !debug.contains(SA_EMAIL),
            "{debug}"
        );
    }

    #[tokio::test]
    async fn google_error_hides_the_private_key_and_the_jwt() {
        let (fake, base) = serve_fake().await;
        fake.fail_status.store(401, Ordering::SeqCst);
        let tokens = tokens(settings());
        let identity = google(&format!("{base}/token"));
        let err = tokens.credentials(&identity).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Status { .. }), "{msg}");
        assert!(
            msg.starts_with(&format!(
                "Google service account token endpoint {base}/token answered 401 Unauthorized: "
            )),
            "{msg}"
        );
        assert!(msg.contains("bad credentials <redacted>"), "{msg}");
        assert!(!msg.contains("eyJ"), "no JWT in {msg}");
        assert!(!msg.contains(&key_body_line(test_key())), "{msg}");
        assert!(!msg.contains("PRIVATE KEY"), "{msg}");
        // Errors are not cached.
        fake.fail_status.store(0, Ordering::SeqCst);
        assert_eq!(tokens.credentials(&identity).await.unwrap().1, "token2");
    }

    #[tokio::test]
    async fn service_principal_posts_client_credentials_and_yields_empty_user_and_token() {
        let (fake, base) = serve_fake().await;
        let tokens = tokens(settings());
        // Trailing slash on the authority is tolerated.
        let identity = service_principal(&format!("{base}/"), SECRET);
        let (username, password) = tokens.credentials(&identity).await.unwrap();
        assert_eq!(username, "");
        assert_eq!(password, "token1");
        let request = fake.last();
        assert_eq!(request.path, "/contoso.onmicrosoft.com/oauth2/v2.0/token");
        assert_eq!(request.content_type, "application/x-www-form-urlencoded");
        let expected: HashMap<String, String> = [
            ("grant_type", "client_credentials"),
            ("client_id", "11111111-2222-3333-4444-555555555555"),
            ("client_secret", SECRET),
            ("scope", "499b84ac-1321-427f-aa17-267ca6975798/.default"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(request.form, expected);
        // Cached: no second request; a different secret is another entry.
        assert_eq!(tokens.credentials(&identity).await.unwrap().1, "token1");
        assert_eq!(fake.calls(), 1);
        let rotated = service_principal(&base, "another-secret");
        assert_eq!(tokens.credentials(&rotated).await.unwrap().1, "token2");
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test]
    async fn service_principal_cache_is_capped_by_the_expiration_setting() {
        let (fake, base) = serve_fake().await;
        let identity = service_principal(&base, SECRET);
        // A zero cap (as if the setting were 0 minutes and taken literally):
        // every call exchanges although the token lives an hour.
        let capped = tokens(Settings {
            service_principal_cache: Some(Duration::ZERO),
            ..settings()
        });
        assert_eq!(capped.credentials(&identity).await.unwrap().1, "token1");
        assert_eq!(capped.credentials(&identity).await.unwrap().1, "token2");
        // No cap: the token's own expiry (minus a minute) governs.
        let uncapped = tokens(Settings {
            service_principal_cache: None,
            ..settings()
        });
        fake.expires_in.store(50, Ordering::SeqCst);
        assert_eq!(uncapped.credentials(&identity).await.unwrap().1, "token3");
        assert_eq!(uncapped.credentials(&identity).await.unwrap().1, "token4");
        fake.expires_in.store(3600, Ordering::SeqCst);
        assert_eq!(uncapped.credentials(&identity).await.unwrap().1, "token5");
        assert_eq!(uncapped.credentials(&identity).await.unwrap().1, "token5");
        assert_eq!(fake.calls(), 5);
    }

    #[tokio::test]
    async fn service_principal_401_hides_the_client_secret() {
        let (fake, base) = serve_fake().await;
        fake.fail_status.store(401, Ordering::SeqCst);
        let tokens = tokens(settings());
        let err = tokens
            .credentials(&service_principal(&base, SECRET))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Status { .. }), "{msg}");
        assert!(
            msg.starts_with(&format!(
                "Azure service principal token endpoint {base}/contoso.onmicrosoft.com/oauth2/v2.0/token answered 401 Unauthorized: "
            )),
            "{msg}"
        );
        // The fake echoed the secret, raw and form-encoded.
        assert!(msg.contains("bad credentials <redacted>"), "{msg}");
        let mut encoded = String::new();
        percent_encode_into(&mut encoded, SECRET);
        assert!(!msg.contains(SECRET), "{msg}");
        assert!(!msg.contains(&encoded), "{msg}");
        assert!(!msg.contains("s3cr3t"), "{msg}");
        assert!(!format!("{err:?}").contains("s3cr3t"));
    }

    #[tokio::test]
    async fn https_is_required_for_azure_authorities_unless_allowed() {
        let (fake, base) = serve_fake().await;
        let tokens = tokens(Settings {
            allow_http: false,
            ..settings()
        });
        let err = tokens
            .credentials(&service_principal(&base, SECRET))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("is not an https URL"), "{err}");
        assert_eq!(fake.calls(), 0);
    }

    #[tokio::test]
    async fn workload_identity_sends_the_federated_token_read_on_each_exchange() {
        let (fake, base) = serve_fake().await;
        let dir = tempfile::tempdir().unwrap();
        let settings = workload_settings(&base, &dir);
        let file = settings.azure_federated_token_file.clone().unwrap();
        std::fs::write(&file, "federated.jwt.one\n").unwrap();
        let tokens = tokens(settings);
        let identity = CloudIdentity::AzureWorkloadIdentity;
        // 200 s left is inside the five-minute margin Argo CD applies to
        // workload-identity tokens: not reused.
        fake.expires_in.store(200, Ordering::SeqCst);
        let (username, password) = tokens.credentials(&identity).await.unwrap();
        assert_eq!((username.as_str(), password.as_str()), ("", "token1"));
        let request = fake.last();
        assert_eq!(
            request.path,
            "/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"
        );
        let expected: HashMap<String, String> = [
            ("grant_type", "client_credentials"),
            ("client_id", "wi-client"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", "federated.jwt.one"),
            ("scope", "499b84ac-1321-427f-aa17-267ca6975798/.default"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(request.form, expected);
        // The kubelet rotated the file: the next exchange sends the new one.
        std::fs::write(&file, "federated.jwt.two").unwrap();
        fake.expires_in.store(3600, Ordering::SeqCst);
        assert_eq!(tokens.credentials(&identity).await.unwrap().1, "token2");
        assert_eq!(fake.last().form["client_assertion"], "federated.jwt.two");
        // Fresh now: cached.
        assert_eq!(tokens.credentials(&identity).await.unwrap().1, "token2");
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test]
    async fn workload_identity_401_hides_the_federated_token() {
        let (fake, base) = serve_fake().await;
        fake.fail_status.store(401, Ordering::SeqCst);
        let dir = tempfile::tempdir().unwrap();
        let settings = workload_settings(&base, &dir);
        std::fs::write(
            settings.azure_federated_token_file.as_ref().unwrap(),
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJl",
        )
        .unwrap();
        let err = tokens(settings)
            .credentials(&CloudIdentity::AzureWorkloadIdentity)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("Azure workload identity token endpoint "),
            "{msg}"
        );
        assert!(msg.contains("401 Unauthorized"), "{msg}");
        assert!(!msg.contains("eyJ"), "{msg}");
    }

    #[tokio::test]
    async fn workload_identity_without_its_environment_names_the_variable() {
        let (fake, base) = serve_fake().await;
        let dir = tempfile::tempdir().unwrap();
        let full = workload_settings(&base, &dir);
        std::fs::write(full.azure_federated_token_file.as_ref().unwrap(), "jwt").unwrap();
        let cases = [
            (
                Settings {
                    azure_client_id: None,
                    ..full.clone()
                },
                "AZURE_CLIENT_ID",
            ),
            (
                Settings {
                    azure_tenant_id: None,
                    ..full.clone()
                },
                "AZURE_TENANT_ID",
            ),
            (
                Settings {
                    azure_federated_token_file: None,
                    ..full.clone()
                },
                "AZURE_FEDERATED_TOKEN_FILE",
            ),
            (settings(), "AZURE_CLIENT_ID"),
        ];
        for (settings, name) in cases {
            // new() succeeds; the exchange names what is missing.
            let err = tokens(settings)
                .credentials(&CloudIdentity::AzureWorkloadIdentity)
                .await
                .unwrap_err();
            assert!(matches!(err, Error::MissingEnv { .. }), "{err}");
            assert_eq!(
                err.to_string(),
                format!("Azure workload identity: environment variable {name} is not set")
            );
        }
        // The public cloud when AZURE_AUTHORITY_HOST is unset: https, so
        // the URL is accepted (no request is made here: the file is missing).
        let missing_file = Settings {
            azure_authority_host: None,
            azure_federated_token_file: Some(dir.path().join("absent")),
            ..full.clone()
        };
        let err = tokens(missing_file)
            .credentials(&CloudIdentity::AzureWorkloadIdentity)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::TokenFile { .. }), "{msg}");
        assert!(
            msg.starts_with("Azure workload identity: federated token file "),
            "{msg}"
        );
        assert!(msg.contains("absent"), "{msg}");
        // An empty token file.
        std::fs::write(full.azure_federated_token_file.as_ref().unwrap(), " \n").unwrap();
        let err = tokens(full)
            .credentials(&CloudIdentity::AzureWorkloadIdentity)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("the file is empty"), "{err}");
        assert_eq!(fake.calls(), 0);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_exchange() {
        let (fake, base) = serve_fake().await;
        let tokens = tokens(settings());
        let identity = service_principal(&base, SECRET);
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let tokens = tokens.clone();
            let identity = identity.clone();
            tasks.push(tokio::spawn(async move {
                tokens.credentials(&identity).await.unwrap()
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), (String::new(), "token1".to_string()));
        }
        assert_eq!(fake.calls(), 1);
    }

    #[tokio::test]
    async fn answers_without_a_token_and_transport_errors() {
        // A port nothing listens on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let tokens = tokens(settings());
        let err = tokens
            .credentials(&google(&format!("http://127.0.0.1:{port}/token")))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Transport { .. }), "{err}");
        assert!(
            err.to_string().starts_with(&format!(
                "Google service account token request to http://127.0.0.1:{port}/token failed: "
            )),
            "{err}"
        );

        // A 200 without access_token.
        let router = axum::Router::new().fallback(|| async { r#"{"token_type":"Bearer"}"# });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        let err = tokens
            .credentials(&service_principal(
                &format!("http://127.0.0.1:{port}"),
                SECRET,
            ))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NoToken { .. }), "{err}");
        assert!(err
            .to_string()
            .ends_with("answered without an access token"));
    }
}
