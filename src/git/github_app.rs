//! GitHub App installation tokens.
//!
//! Argo CD authenticates git over HTTPS for a GitHub App as user
//! `x-access-token` with an installation access token for a password
//! (`util/git/creds.go`, `GitHubAppCreds`, through the `ghinstallation`
//! library). The token is minted by POSTing to
//! `<api>/app/installations/<id>/access_tokens` with a short-lived RS256 JWT
//! signed by the app's private key, and reused until a minute before it
//! expires. This module does the same: [`Tokens`] mints and caches them.
//!
//! Secrets (the private key, the JWT, the token) never appear in an error
//! message or a log line.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::signature::RsaKeyPair;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::domain::GitHubApp;

/// Username git uses with an installation token as the password.
pub const ACCESS_TOKEN_USERNAME: &str = "x-access-token";

/// GitHub's public API, used when the app has no enterprise base URL.
const DEFAULT_BASE_URL: &str = "https://api.github.com";

/// A cached token is reused while it has more than this left (ghinstallation
/// refreshes a minute before expiry).
const REFRESH_MARGIN_SECS: i64 = 60;

/// Lifetime assumed for a token whose `expires_at` cannot be parsed (GitHub
/// issues them for an hour).
const DEFAULT_TOKEN_LIFETIME_SECS: i64 = 3600;

/// JWT clock-skew backdating and lifetime, as ghinstallation's
/// `AppsTransport`: `iat = now - 30 s`, `exp = iat + 2 min`.
const JWT_BACKDATE_SECS: i64 = 30;
const JWT_LIFETIME_SECS: i64 = 120;

/// Timeout of one token request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest excerpt of an error response body kept in a message.
pub(super) const BODY_EXCERPT_CHARS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("GitHub App private key is not a valid PEM RSA key ({reason})")]
    InvalidKey { reason: String },
    #[error("GitHub App token request to {url} failed: {status} {excerpt}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
        excerpt: String,
    },
    #[error("GitHub App token request failed: {0}")]
    Transport(String),
    #[error("GitHub App token response has no token")]
    NoToken,
    #[error("GitHub App HTTP client could not be built: {0}")]
    Client(String),
}

/// Mints and caches installation tokens. Cheap to clone (Arc inside).
#[derive(Clone)]
pub struct Tokens {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    /// One slot per app installation; its async mutex makes concurrent
    /// callers for the same key share one token request.
    slots: StdMutex<HashMap<CacheKey, Arc<tokio::sync::Mutex<Option<Cached>>>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    app_id: i64,
    installation_id: i64,
    base_url: String,
    key_sha256: [u8; 32],
}

struct Cached {
    token: String,
    /// Unix seconds.
    expires_at: i64,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slots = self.inner.slots.lock().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("Tokens")
            .field("installations", &slots)
            .finish()
    }
}

impl Tokens {
    /// Builds the HTTP client (10 s timeout, rustls with ring, the system
    /// CA bundle, proxies from the environment).
    pub fn new() -> Result<Tokens, Error> {
        Self::build(true)
    }

    fn build(env_proxy: bool) -> Result<Tokens, Error> {
        let tls = tls_config()?;
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(REQUEST_TIMEOUT)
            .user_agent("manifold")
            // ghinstallation sends the request through a bare transport:
            // no redirects (which would carry the JWT elsewhere).
            .redirect(reqwest::redirect::Policy::none());
        if !env_proxy {
            builder = builder.no_proxy();
        }
        let client = builder
            .build()
            .map_err(|e| Error::Client(error_chain(&e)))?;
        Ok(Tokens {
            inner: Arc::new(Inner {
                client,
                slots: StdMutex::new(HashMap::new()),
            }),
        })
    }

    /// A valid installation token for `app`: from the cache while it has
    /// more than 60 s left, else minted. Concurrent callers for the same
    /// app share one request.
    pub async fn token(&self, app: &GitHubApp) -> Result<String, Error> {
        let base_url = base_url(app);
        let key = CacheKey {
            app_id: app.app_id,
            installation_id: app.installation_id,
            base_url: base_url.clone(),
            key_sha256: Sha256::digest(app.private_key.as_bytes()).into(),
        };
        let slot = {
            let mut slots = self
                .inner
                .slots
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            slots.entry(key).or_default().clone()
        };
        let mut cached = slot.lock().await;
        let now = now_unix();
        if let Some(c) = cached.as_ref() {
            if c.expires_at - now > REFRESH_MARGIN_SECS {
                return Ok(c.token.clone());
            }
        }
        let minted = self.mint(app, &base_url).await?;
        let token = minted.token.clone();
        *cached = Some(minted);
        Ok(token)
    }

    async fn mint(&self, app: &GitHubApp, base_url: &str) -> Result<Cached, Error> {
        let key = parse_private_key(&app.private_key)?;
        let jwt = app_jwt(&key, app.app_id, now_unix())?;
        let url = format!(
            "{base_url}/app/installations/{}/access_tokens",
            app.installation_id
        );
        let shown_url = redact_url(&url);
        tracing::debug!(url = %shown_url, app_id = app.app_id, "minting GitHub App installation token");
        let response = self
            .inner
            .client
            .post(&url)
            .header(reqwest::header::AUTHORIZATION, format!("Bearer {jwt}"))
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .send()
            .await
            .map_err(|e| Error::Transport(error_chain(&e.without_url())))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| Error::Transport(error_chain(&e.without_url())))?;
        if !status.is_success() {
            return Err(Error::Status {
                url: shown_url,
                status,
                excerpt: excerpt(&body, &jwt),
            });
        }
        #[derive(Deserialize)]
        struct Response {
            token: Option<String>,
            expires_at: Option<String>,
        }
        let parsed: Response = serde_json::from_str(&body).map_err(|_| Error::NoToken)?;
        let token = parsed
            .token
            .filter(|t| !t.is_empty())
            .ok_or(Error::NoToken)?;
        let expires_at = parsed
            .expires_at
            .as_deref()
            .and_then(parse_rfc3339)
            .unwrap_or_else(|| now_unix() + DEFAULT_TOKEN_LIFETIME_SECS);
        Ok(Cached { token, expires_at })
    }
}

/// The API base URL of `app`, without a trailing `/`.
fn base_url(app: &GitHubApp) -> String {
    let base = app.enterprise_base_url.trim();
    if base.is_empty() {
        DEFAULT_BASE_URL.to_string()
    } else {
        base.trim_end_matches('/').to_string()
    }
}

/// rustls (ring) with the roots of the system CA bundle.
fn tls_config() -> Result<rustls::ClientConfig, Error> {
    crate::charts::tls_config(false, None, None).map_err(Error::Client)
}

/// Parses a PEM RSA private key: PKCS#1 (`RSA PRIVATE KEY`, what GitHub
/// issues) or PKCS#8 (`PRIVATE KEY`).
fn parse_private_key(pem: &str) -> Result<RsaKeyPair, Error> {
    let invalid = |reason: &str| Error::InvalidKey {
        reason: reason.to_string(),
    };
    let mut label: Option<&str> = None;
    let mut body = String::new();
    let mut ended = false;
    for line in pem.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("-----BEGIN ") {
            if label.is_none() {
                label = Some(rest.trim_end_matches('-').trim());
            }
            continue;
        }
        if line.starts_with("-----END ") {
            if label.is_some() {
                ended = true;
                break;
            }
            continue;
        }
        if label.is_some() {
            if line.contains(':') {
                // "Proc-Type: 4,ENCRYPTED" and friends.
                return Err(invalid("encrypted keys are not supported"));
            }
            body.push_str(line);
        }
    }
    let Some(label) = label else {
        return Err(invalid("no PEM BEGIN line"));
    };
    if !ended {
        return Err(invalid("no PEM END line"));
    }
    let der = STANDARD
        .decode(body.as_bytes())
        .map_err(|_| invalid("bad base64"))?;
    let parsed = match label {
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
        _ => return Err(invalid("expected RSA PRIVATE KEY or PRIVATE KEY")),
    };
    parsed.map_err(|e| Error::InvalidKey {
        reason: e.to_string(),
    })
}

/// The app's JWT (RS256) as ghinstallation builds it: `iat` backdated 30 s
/// for clock skew, `exp` two minutes later, `iss` the app id as a string.
fn app_jwt(key: &RsaKeyPair, app_id: i64, now: i64) -> Result<String, Error> {
    let iat = now - JWT_BACKDATE_SECS;
    let header = serde_json::json!({ "alg": "RS256", "typ": "JWT" });
    let claims = serde_json::json!({
        "iat": iat,
        "exp": iat + JWT_LIFETIME_SECS,
        "iss": app_id.to_string(),
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0u8; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| Error::InvalidKey {
        reason: "signing failed".to_string(),
    })?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(&signature)
    ))
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Unix seconds of an RFC 3339 timestamp (`2016-07-11T22:14:10Z`, optional
/// fraction, `Z` or a numeric offset).
fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || rb[3] != b':' {
                return None;
            }
            let sign = match rb[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `url` without userinfo (`user:pass@`) or query.
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

/// One line of at most 200 characters of an error body, with the JWT (should
/// a server echo it) blanked.
fn excerpt(body: &str, jwt: &str) -> String {
    one_line(&body.replace(jwt, "<jwt>"))
}

/// `text` on one line, cut to [`BODY_EXCERPT_CHARS`] characters (an
/// ellipsis marks the cut). Shared with [`super::cloud`].
pub(super) fn one_line(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut chars = one_line.chars();
    let mut out: String = chars.by_ref().take(BODY_EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// An error and its sources, joined by `: `. Shared with
/// [`super::cloud`].
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicI64, AtomicU16, AtomicUsize, Ordering};
    use std::sync::OnceLock;

    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use ring::signature::KeyPair as _;

    /// A throwaway 2048-bit PKCS#1 key, generated once per test run.
    fn test_key_pkcs1() -> &'static str {
        static KEY: OnceLock<String> = OnceLock::new();
        KEY.get_or_init(|| {
            let out = Command::new("openssl")
                .args(["genrsa", "-traditional", "2048"])
                .stderr(Stdio::null())
                .output()
                .expect("openssl must be installed for these tests");
            assert!(out.status.success(), "openssl genrsa failed");
            String::from_utf8(out.stdout).unwrap()
        })
    }

    fn to_pkcs8(pkcs1: &str) -> String {
        let mut child = Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(pkcs1.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "openssl pkcs8 failed");
        String::from_utf8(out.stdout).unwrap()
    }

    fn public_key_der(pem: &str) -> Vec<u8> {
        parse_private_key(pem)
            .unwrap()
            .public_key()
            .as_ref()
            .to_vec()
    }

    /// Verifies `jwt` with `public_key` and returns (header, claims).
    fn verify_jwt(jwt: &str, public_key: &[u8]) -> Option<(serde_json::Value, serde_json::Value)> {
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

    fn civil_from_days(z: i64) -> (i64, i64, i64) {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
        let y = yoe + era * 400;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        (if m <= 2 { y + 1 } else { y }, m, d)
    }

    fn format_rfc3339(t: i64) -> String {
        let (y, m, d) = civil_from_days(t.div_euclid(86_400));
        let s = t.rem_euclid(86_400);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    }

    #[test]
    fn jwt_is_signed_rs256_with_ghinstallation_claims() {
        let pem = test_key_pkcs1();
        let key = parse_private_key(pem).unwrap();
        let jwt = app_jwt(&key, 1234, 1_700_000_000).unwrap();
        assert!(!jwt.contains('='), "base64url without padding");
        let (header, claims) =
            verify_jwt(&jwt, key.public_key().as_ref()).expect("valid signature");
        assert_eq!(header, serde_json::json!({"alg": "RS256", "typ": "JWT"}));
        assert_eq!(
            claims,
            serde_json::json!({"iat": 1_699_999_970, "exp": 1_700_000_090, "iss": "1234"})
        );
        // A tampered payload fails verification.
        let mut parts: Vec<&str> = jwt.split('.').collect();
        let other = URL_SAFE_NO_PAD.encode(r#"{"iss":"9"}"#);
        parts[1] = &other;
        assert!(verify_jwt(&parts.join("."), key.public_key().as_ref()).is_none());
    }

    #[test]
    fn pkcs8_key_is_accepted_and_is_the_same_key() {
        let pkcs1 = test_key_pkcs1();
        let pkcs8 = to_pkcs8(pkcs1);
        assert!(pkcs8.contains("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(public_key_der(&pkcs8), public_key_der(pkcs1));
        // CRLF line endings and surrounding whitespace are fine too.
        let crlf = format!("\n  {}  \n", pkcs1.replace('\n', "\r\n"));
        assert_eq!(public_key_der(&crlf), public_key_der(pkcs1));
    }

    #[test]
    fn bad_keys_are_rejected() {
        let bad = [
            "",
            "not a key",
            "-----BEGIN RSA PRIVATE KEY-----\nnot base64!\n-----END RSA PRIVATE KEY-----\n",
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
        ];
        for pem in bad {
            let err = parse_private_key(pem).expect_err("rejected");
            assert!(
                err.to_string()
                    .starts_with("GitHub App private key is not a valid PEM RSA key"),
                "{err}"
            );
        }
        // Truncated key: no END line.
        let truncated = &test_key_pkcs1()[..200];
        assert!(matches!(
            parse_private_key(truncated),
            Err(Error::InvalidKey { .. })
        ));
    }

    #[test]
    fn rfc3339_parsing() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2016-07-11T22:14:10Z"), Some(1_468_275_250));
        assert_eq!(
            parse_rfc3339("2016-07-11T22:14:10.123Z"),
            Some(1_468_275_250)
        );
        assert_eq!(
            parse_rfc3339("2016-07-12T00:14:10+02:00"),
            Some(1_468_275_250)
        );
        assert_eq!(
            parse_rfc3339("2016-07-11T17:14:10-05:00"),
            Some(1_468_275_250)
        );
        assert_eq!(parse_rfc3339("2024-02-29T12:00:00Z"), Some(1_709_208_000));
        for bad in [
            "",
            "2016-07-11",
            "2016-07-11T22:14:10",
            "2016-13-11T22:14:10Z",
            "garbage-here-and-more",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        for t in [0, 1_468_275_250, 1_709_208_000, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }
    }

    #[test]
    fn urls_and_excerpts_hide_secrets() {
        assert_eq!(
            redact_url("https://user:pw@ghe.example.com/api/v3/app?x=1"),
            "https://ghe.example.com/api/v3/app"
        );
        assert_eq!(
            redact_url("https://api.github.com/app"),
            "https://api.github.com/app"
        );
        let long = "x".repeat(500);
        let e = excerpt(&format!("a\n  b {long}"), "JWT");
        assert!(e.starts_with("a b xxx"));
        assert_eq!(e.chars().count(), BODY_EXCERPT_CHARS + 1);
        assert_eq!(excerpt("bad JWT here", "JWT"), "bad <jwt> here");
        let app = GitHubApp {
            enterprise_base_url: "https://ghe.example.com/api/v3/".into(),
            ..Default::default()
        };
        assert_eq!(base_url(&app), "https://ghe.example.com/api/v3");
        assert_eq!(base_url(&GitHubApp::default()), DEFAULT_BASE_URL);
    }

    #[test]
    fn new_builds_a_client() {
        let tokens = Tokens::new().unwrap();
        assert!(format!("{tokens:?}").contains("Tokens"));
    }

    /// The fake GitHub token endpoint.
    struct Fake {
        public_key: Vec<u8>,
        app_id: i64,
        calls: AtomicUsize,
        /// Seconds from now of the next tokens' `expires_at`.
        expires_in: AtomicI64,
        /// Status to answer with instead of 201, when non-zero.
        fail_status: AtomicU16,
    }

    async fn access_tokens(
        State(fake): State<Arc<Fake>>,
        headers: HeaderMap,
    ) -> axum::response::Response {
        let n = fake.calls.fetch_add(1, Ordering::SeqCst) + 1;
        // Long enough for concurrent callers to pile up behind one request.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let status = fake.fail_status.load(Ordering::SeqCst);
        if status != 0 {
            let status = StatusCode::from_u16(status).unwrap();
            let body = r#"{"message":"A JSON web token could not be decoded","documentation_url":"https://docs.github.com/rest"}"#;
            return (status, body).into_response();
        }
        let ok = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|jwt| verify_jwt(jwt, &fake.public_key))
            .is_some_and(|(_, claims)| claims["iss"] == serde_json::json!(fake.app_id.to_string()));
        let accept_ok = headers
            .get("accept")
            .is_some_and(|v| v == "application/vnd.github+json");
        let ua_ok = headers.get("user-agent").is_some_and(|v| v == "manifold");
        if !ok || !accept_ok || !ua_ok {
            return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
        }
        let expires_at = format_rfc3339(now_unix() + fake.expires_in.load(Ordering::SeqCst));
        let body = serde_json::json!({"token": format!("ghs_token{n}"), "expires_at": expires_at});
        (
            StatusCode::CREATED,
            [("content-type", "application/json")],
            body.to_string(),
        )
            .into_response()
    }

    async fn serve_fake(app_id: i64, public_key: Vec<u8>) -> (Arc<Fake>, String) {
        let fake = Arc::new(Fake {
            public_key,
            app_id,
            calls: AtomicUsize::new(0),
            expires_in: AtomicI64::new(3600),
            fail_status: AtomicU16::new(0),
        });
        let router = axum::Router::new()
            .route(
                "/api/v3/app/installations/42/access_tokens",
                axum::routing::post(access_tokens),
            )
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        (fake, format!("http://127.0.0.1:{port}/api/v3"))
    }

    fn app(base: &str, pem: &str) -> GitHubApp {
        GitHubApp {
            app_id: 7,
            installation_id: 42,
            private_key: pem.to_string(),
            enterprise_base_url: format!("{base}/"),
        }
    }

    #[tokio::test]
    async fn token_is_minted_then_cached() {
        let pem = test_key_pkcs1();
        let (fake, base) = serve_fake(7, public_key_der(pem)).await;
        let tokens = Tokens::build(false).unwrap();
        let app = app(&base, pem);
        assert_eq!(tokens.token(&app).await.unwrap(), "ghs_token1");
        assert_eq!(tokens.clone().token(&app).await.unwrap(), "ghs_token1");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        // A PKCS#8 copy of the same key is another cache entry, same app.
        let app8 = GitHubApp {
            private_key: to_pkcs8(pem),
            ..app.clone()
        };
        assert_eq!(tokens.token(&app8).await.unwrap(), "ghs_token2");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_request() {
        let pem = test_key_pkcs1();
        let (fake, base) = serve_fake(7, public_key_der(pem)).await;
        let tokens = Tokens::build(false).unwrap();
        let app = app(&base, pem);
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let tokens = tokens.clone();
            let app = app.clone();
            tasks.push(tokio::spawn(
                async move { tokens.token(&app).await.unwrap() },
            ));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), "ghs_token1");
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn token_near_expiry_is_reminted() {
        let pem = test_key_pkcs1();
        let (fake, base) = serve_fake(7, public_key_der(pem)).await;
        fake.expires_in.store(30, Ordering::SeqCst);
        let tokens = Tokens::build(false).unwrap();
        let app = app(&base, pem);
        assert_eq!(tokens.token(&app).await.unwrap(), "ghs_token1");
        assert_eq!(tokens.token(&app).await.unwrap(), "ghs_token2");
        fake.expires_in.store(3600, Ordering::SeqCst);
        assert_eq!(tokens.token(&app).await.unwrap(), "ghs_token3");
        assert_eq!(tokens.token(&app).await.unwrap(), "ghs_token3");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn wrong_key_is_refused_by_the_endpoint() {
        let pem = test_key_pkcs1();
        let (fake, base) = serve_fake(8, public_key_der(pem)).await;
        let tokens = Tokens::build(false).unwrap();
        // The fake expects app id 8; ours says 7.
        let err = tokens.token(&app(&base, pem)).await.unwrap_err();
        assert!(err.to_string().contains("401"), "{err}");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn http_error_names_the_status_and_hides_secrets() {
        let pem = test_key_pkcs1();
        let (fake, base) = serve_fake(7, public_key_der(pem)).await;
        fake.fail_status.store(401, Ordering::SeqCst);
        let tokens = Tokens::build(false).unwrap();
        let err = tokens.token(&app(&base, pem)).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Status { .. }), "{msg}");
        assert!(msg.contains("401 Unauthorized"), "{msg}");
        assert!(
            msg.contains(&format!("{base}/app/installations/42/access_tokens")),
            "{msg}"
        );
        assert!(msg.contains("could not be decoded"), "{msg}");
        assert!(!msg.contains("eyJ"), "no JWT in {msg}");
        assert!(!msg.contains("PRIVATE KEY"), "{msg}");
        let key_body: String = pem.lines().nth(1).unwrap().to_string();
        assert!(!msg.contains(&key_body), "{msg}");
        // Errors are not cached: the next call asks again and succeeds.
        fake.fail_status.store(0, Ordering::SeqCst);
        assert_eq!(tokens.token(&app(&base, pem)).await.unwrap(), "ghs_token2");
    }

    #[tokio::test]
    async fn bad_pem_gives_the_key_error_without_a_request() {
        let (fake, base) = serve_fake(7, Vec::new()).await;
        let tokens = Tokens::build(false).unwrap();
        let err = tokens.token(&app(&base, "not a pem")).await.unwrap_err();
        assert!(matches!(err, Error::InvalidKey { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("GitHub App private key is not a valid PEM RSA key"),
            "{err}"
        );
        assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn transport_error_is_reported() {
        // A port nothing listens on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let tokens = Tokens::build(false).unwrap();
        let err = tokens
            .token(&app(
                &format!("http://127.0.0.1:{port}/api/v3"),
                test_key_pkcs1(),
            ))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Transport(_)), "{err}");
        assert!(
            err.to_string()
                .starts_with("GitHub App token request failed: "),
            "{err}"
        );
    }
}
