//! Provider payloads and their secret checks.
//!
//! [`parse`] picks the SCM provider from the request headers, checks that provider's secret against
//! the raw body when one is configured, and only then decodes the body into a provider-neutral
//! [`Event`]. No I/O: matching the push to repositories and acting on it is the caller's job.

use std::fmt;

use axum::http::HeaderMap;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// Secrets per provider, as Argo CD keeps them in `argocd-secret` (keys in comments).
///
/// `None` or an empty string means that provider's check is not configured: its requests are then
/// accepted **without any verification**, as Argo CD does. Anyone who can reach the endpoint can
/// trigger refreshes for such a provider, so configure a secret for every provider in use.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// `webhook.github.secret`
    pub github: Option<Secret>,
    /// `webhook.gitlab.secret`
    pub gitlab: Option<Secret>,
    /// `webhook.bitbucket.uuid`
    pub bitbucket_uuid: Option<Secret>,
    /// `webhook.bitbucketserver.secret`
    pub bitbucket_server: Option<Secret>,
    /// `webhook.gogs.secret`, used for both Gogs and Gitea.
    pub gogs: Option<Secret>,
    /// `webhook.azuredevops.username`
    pub azure_devops_username: Option<Secret>,
    /// `webhook.azuredevops.password`
    pub azure_devops_password: Option<Secret>,
}

/// The SCM that sent a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    GitHub,
    GitLab,
    BitbucketCloud,
    BitbucketServer,
    Gogs,
    Gitea,
    AzureDevOps,
}

impl Provider {
    /// A short lowercase name, fit for a bounded metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::GitLab => "gitlab",
            Provider::BitbucketCloud => "bitbucket",
            Provider::BitbucketServer => "bitbucketserver",
            Provider::Gogs => "gogs",
            Provider::Gitea => "gitea",
            Provider::AzureDevOps => "azuredevops",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One ref a push moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedRef {
    /// Short name: `refs/heads/` or `refs/tags/` stripped (`main`, `v1.0`, `feature/x`).
    pub name: String,
    pub is_tag: bool,
    /// Commit SHAs (lowercase) when the payload gives them; `None` for a zero SHA / absent.
    pub before: Option<String>,
    /// `None` also when the ref was deleted.
    pub after: Option<String>,
}

/// A push, reduced to what cache invalidation needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub provider: Provider,
    /// Every URL the payload gives for the repository, deduplicated: the web URL first, then the
    /// clone URLs (http, ssh). Callers match them against configured repo URLs. Never empty.
    pub repo_urls: Vec<String>,
    /// The refs moved. Exactly one for GitHub, GitLab, Gogs and Gitea; the payload's list (possibly
    /// empty) for Azure DevOps and both Bitbuckets.
    pub refs: Vec<PushedRef>,
    /// The repository's default branch when the payload says it.
    pub default_branch: Option<String>,
}

/// What an authenticated webhook request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Push(Push),
    /// A provider's connectivity test (GitHub `ping`, Bitbucket Server `diagnostics:ping`): answer
    /// 200, do nothing.
    Ping(Provider),
    /// An authenticated event of a kind that is not a push (e.g. GitHub `issues`, GitLab
    /// `Merge Request Hook`): answer 200, do nothing.
    Ignored {
        provider: Provider,
        event: String,
    },
}

/// Why a webhook request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejection {
    /// No provider header → HTTP 400.
    #[error("Unknown webhook event")]
    UnknownProvider,
    /// Signature/token/uuid/basic-auth check failed or missing while a secret is configured → HTTP
    /// 401.
    #[error("{provider} webhook: {reason}")]
    Unauthorized {
        provider: Provider,
        reason: &'static str,
    },
    /// Unparsable body or a push without a required field → HTTP 400. `reason` never contains
    /// secrets or auth header values.
    #[error("{provider} webhook: {reason}")]
    Malformed { provider: Provider, reason: String },
}

impl Rejection {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::UnknownProvider | Rejection::Malformed { .. } => 400,
            Rejection::Unauthorized { .. } => 401,
        }
    }
}

/// Turns a webhook request into an [`Event`], verifying the provider's secret before the body is
/// read. Providers are recognised by header, in Argo CD's order; Gitea and Gogs come before GitHub
/// because Gitea also sends `X-GitHub-Event`.
pub fn parse(headers: &HeaderMap, body: &[u8], secrets: &Secrets) -> Result<Event, Rejection> {
    if headers.contains_key("x-vss-activityid") {
        azure_devops(headers, body, secrets)
    } else if let Some(event) = header_text(headers, "x-gitea-event") {
        gogs_like(
            Provider::Gitea,
            &event,
            "x-gitea-signature",
            headers,
            body,
            secrets,
        )
    } else if let Some(event) = header_text(headers, "x-gogs-event") {
        gogs_like(
            Provider::Gogs,
            &event,
            "x-gogs-signature",
            headers,
            body,
            secrets,
        )
    } else if let Some(event) = header_text(headers, "x-github-event") {
        github(&event, headers, body, secrets)
    } else if let Some(event) = header_text(headers, "x-gitlab-event") {
        gitlab(&event, headers, body, secrets)
    } else if let Some(uuid) = headers.get("x-hook-uuid") {
        bitbucket_cloud(uuid.as_bytes(), headers, body, secrets)
    } else if let Some(event) = header_text(headers, "x-event-key") {
        bitbucket_server(&event, headers, body, secrets)
    } else {
        Err(Rejection::UnknownProvider)
    }
}

// ---------------------------------------------------------------------------------------------
// Providers

fn azure_devops(headers: &HeaderMap, body: &[u8], secrets: &Secrets) -> Result<Event, Rejection> {
    let provider = Provider::AzureDevOps;
    let username = configured(secrets.azure_devops_username.as_ref());
    let password = configured(secrets.azure_devops_password.as_ref());
    if username.is_some() || password.is_some() {
        verify_basic_auth(
            provider,
            headers,
            username.unwrap_or_default(),
            password.unwrap_or_default(),
        )?;
    }

    // The event type is in the body, so read only that before committing to the push shape.
    let kind: AzureEventType = decode(provider, body)?;
    let event = kind.event_type.unwrap_or_default();
    if event != "git.push" {
        return Ok(Event::Ignored { provider, event });
    }

    let resource = decode::<AzurePush>(provider, body)?
        .resource
        .unwrap_or_default();
    let repo = resource.repository.unwrap_or_default();
    let refs = resource
        .ref_updates
        .iter()
        .flatten()
        .filter_map(|update| {
            let name = non_empty(update.name.as_deref())?;
            Some(pushed_ref(
                name,
                update.old_object_id.as_deref(),
                update.new_object_id.as_deref(),
            ))
        })
        .collect();
    let default_branch = non_empty(repo.default_branch.as_deref())
        .map(|full| full.strip_prefix("refs/heads/").unwrap_or(full).to_string());
    push(
        provider,
        [&repo.remote_url, &repo.web_url, &repo.ssh_url],
        refs,
        default_branch,
    )
}

/// Gogs and Gitea: the same GitHub-like push payload and a bare hex HMAC in their own header.
fn gogs_like(
    provider: Provider,
    event: &str,
    signature_header: &str,
    headers: &HeaderMap,
    body: &[u8],
    secrets: &Secrets,
) -> Result<Event, Rejection> {
    if let Some(secret) = configured(secrets.gogs.as_ref()) {
        verify_hmac(provider, secret, headers, signature_header, b"", body)?;
    }
    if event != "push" {
        return Ok(ignored(provider, event));
    }
    let payload: GitHubPush = decode(provider, body)?;
    let repo = payload.repository.unwrap_or_default();
    let pushed = single_ref(provider, &payload.r#ref, &payload.before, &payload.after)?;
    push(
        provider,
        [&repo.html_url, &repo.clone_url, &repo.ssh_url],
        vec![pushed],
        owned(repo.default_branch.as_deref()),
    )
}

fn github(
    event: &str,
    headers: &HeaderMap,
    body: &[u8],
    secrets: &Secrets,
) -> Result<Event, Rejection> {
    let provider = Provider::GitHub;
    if let Some(secret) = configured(secrets.github.as_ref()) {
        verify_hmac(
            provider,
            secret,
            headers,
            "x-hub-signature-256",
            b"sha256=",
            body,
        )?;
    }
    match event {
        "push" => {}
        "ping" => return Ok(Event::Ping(provider)),
        _ => return Ok(ignored(provider, event)),
    }
    let payload: GitHubPush = decode(provider, body)?;
    let repo = payload.repository.unwrap_or_default();
    let mut pushed = single_ref(provider, &payload.r#ref, &payload.before, &payload.after)?;
    if payload.deleted == Some(true) {
        pushed.after = None;
    }
    // `repository.url` is the web URL in push payloads but the API URL in others; never keep the
    // latter (github.com or GitHub Enterprise).
    let url = repo
        .url
        .filter(|url| !url.starts_with("https://api.") && !url.contains("/api/v3/"));
    push(
        provider,
        [
            &repo.html_url,
            &repo.clone_url,
            &repo.ssh_url,
            &repo.git_url,
            &url,
        ],
        vec![pushed],
        owned(repo.default_branch.as_deref()),
    )
}

fn gitlab(
    event: &str,
    headers: &HeaderMap,
    body: &[u8],
    secrets: &Secrets,
) -> Result<Event, Rejection> {
    let provider = Provider::GitLab;
    if let Some(secret) = configured(secrets.gitlab.as_ref()) {
        let token = headers
            .get("x-gitlab-token")
            .ok_or_else(|| unauthorized(provider, "token missing"))?;
        if !bool::from(token.as_bytes().ct_eq(secret)) {
            return Err(unauthorized(provider, "token does not match"));
        }
    }

    let is_push = match event {
        "Push Hook" | "Tag Push Hook" => true,
        // System hooks carry every kind of instance event; the body says which.
        "System Hook" => {
            let kind: GitLabKind = decode(provider, body)?;
            matches!(
                kind.object_kind.or(kind.event_name).as_deref(),
                Some("push" | "tag_push")
            )
        }
        _ => false,
    };
    if !is_push {
        return Ok(ignored(provider, event));
    }

    let payload: GitLabPush = decode(provider, body)?;
    let project = payload.project.unwrap_or_default();
    let repo = payload.repository.unwrap_or_default();
    let pushed = single_ref(provider, &payload.r#ref, &payload.before, &payload.after)?;
    push(
        provider,
        [
            &project.web_url.or(repo.homepage),
            &project.git_http_url.or(repo.git_http_url),
            &project.git_ssh_url.or(repo.git_ssh_url),
        ],
        vec![pushed],
        owned(project.default_branch.as_deref()),
    )
}

fn bitbucket_cloud(
    hook_uuid: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    secrets: &Secrets,
) -> Result<Event, Rejection> {
    let provider = Provider::BitbucketCloud;
    if let Some(expected) = configured(secrets.bitbucket_uuid.as_ref()) {
        if !bool::from(hook_uuid.ct_eq(expected)) {
            return Err(unauthorized(provider, "hook UUID does not match"));
        }
    }
    let event = header_text(headers, "x-event-key")
        .ok_or_else(|| malformed(provider, "missing X-Event-Key header".to_string()))?;
    if event != "repo:push" {
        return Ok(Event::Ignored { provider, event });
    }

    let payload: BitbucketCloudPush = decode(provider, body)?;
    let repo = payload.repository.unwrap_or_default();
    let refs = payload
        .push
        .unwrap_or_default()
        .changes
        .iter()
        .flatten()
        .filter_map(|change| {
            // `new` is null for a deletion, `old` for a creation; either names the ref.
            let named = change.new.as_ref().or(change.old.as_ref())?;
            let name = non_empty(named.name.as_deref())?;
            let hash = |side: &Option<BitbucketCloudRef>| {
                commit_sha(side.as_ref()?.target.as_ref()?.hash.as_deref())
            };
            Some(PushedRef {
                name: name.to_string(),
                is_tag: named.r#type.as_deref() == Some("tag"),
                before: hash(&change.old),
                after: hash(&change.new),
            })
        })
        .collect();
    // Bitbucket Cloud repository URLs are `https://bitbucket.org/<full_name>`; add that form in
    // case the payload's html link differs (e.g. letter case).
    let synthesized = non_empty(repo.full_name.as_deref())
        .map(|full_name| format!("https://bitbucket.org/{full_name}"));
    let html = repo.links.and_then(|links| links.html).and_then(|l| l.href);
    push(
        provider,
        [&html, &synthesized],
        refs,
        owned(repo.mainbranch.and_then(|b| b.name).as_deref()),
    )
}

fn bitbucket_server(
    event: &str,
    headers: &HeaderMap,
    body: &[u8],
    secrets: &Secrets,
) -> Result<Event, Rejection> {
    let provider = Provider::BitbucketServer;
    if let Some(secret) = configured(secrets.bitbucket_server.as_ref()) {
        verify_hmac(
            provider,
            secret,
            headers,
            "x-hub-signature",
            b"sha256=",
            body,
        )?;
    }
    match event {
        "repo:refs_changed" => {}
        "diagnostics:ping" => return Ok(Event::Ping(provider)),
        _ => return Ok(ignored(provider, event)),
    }

    let payload: BitbucketServerPush = decode(provider, body)?;
    let links = payload
        .repository
        .and_then(|repo| repo.links)
        .unwrap_or_default();
    let urls: Vec<&Option<String>> = links
        .clone
        .iter()
        .chain(&links.self_)
        .flatten()
        .map(|link| &link.href)
        .collect();
    let refs = payload
        .changes
        .iter()
        .flatten()
        .filter_map(|change| {
            let reference = change.r#ref.as_ref();
            let full = non_empty(reference.and_then(|r| r.id.as_deref()))
                .or(non_empty(change.ref_id.as_deref()))
                .or(non_empty(reference.and_then(|r| r.display_id.as_deref())))?;
            let mut pushed =
                pushed_ref(full, change.from_hash.as_deref(), change.to_hash.as_deref());
            pushed.is_tag |= reference.and_then(|r| r.r#type.as_deref()) == Some("TAG");
            if change.r#type.as_deref() == Some("DELETE") {
                pushed.after = None;
            }
            Some(pushed)
        })
        .collect();
    push(provider, urls, refs, None)
}

// ---------------------------------------------------------------------------------------------
// Secret checks

/// Compares a hex HMAC-SHA256 of `body` (after `prefix`) from `header_name`, in constant time.
fn verify_hmac(
    provider: Provider,
    secret: &[u8],
    headers: &HeaderMap,
    header_name: &str,
    prefix: &[u8],
    body: &[u8],
) -> Result<(), Rejection> {
    let mismatch = || unauthorized(provider, "signature does not match");
    let value = headers
        .get(header_name)
        .ok_or_else(|| unauthorized(provider, "signature missing"))?;
    let hex_digest = value.as_bytes().strip_prefix(prefix).ok_or_else(mismatch)?;
    let tag = hex::decode(hex_digest).map_err(|_| mismatch())?;
    // HMAC takes keys of any length, so this never fails; treat it as a mismatch regardless.
    let mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| mismatch())?;
    mac.chain_update(body)
        .verify_slice(&tag)
        .map_err(|_| mismatch())
}

/// Checks `Authorization: Basic …` against both configured parts, each in constant time.
fn verify_basic_auth(
    provider: Provider,
    headers: &HeaderMap,
    username: &[u8],
    password: &[u8],
) -> Result<(), Rejection> {
    let mismatch = || unauthorized(provider, "basic auth does not match");
    let value = headers
        .get("authorization")
        .map(|value| value.as_bytes())
        .ok_or_else(|| unauthorized(provider, "basic auth missing"))?;
    let scheme = b"basic ";
    let encoded = match value.split_at_checked(scheme.len()) {
        Some((head, rest)) if head.eq_ignore_ascii_case(scheme) => rest.trim_ascii(),
        _ => return Err(unauthorized(provider, "basic auth missing")),
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| mismatch())?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(mismatch)?;
    let (user, pass) = (&decoded[..colon], &decoded[colon + 1..]);
    // `&` on `Choice` evaluates both comparisons, so timing does not reveal which part differs.
    if bool::from(user.ct_eq(username) & pass.ct_eq(password)) {
        Ok(())
    } else {
        Err(mismatch())
    }
}

/// The secret's bytes when it is set and non-empty.
fn configured(secret: Option<&Secret>) -> Option<&[u8]> {
    secret
        .map(|secret| secret.0.as_bytes())
        .filter(|bytes| !bytes.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// A header's value as text; invalid UTF-8 is replaced rather than treated as absent.
fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

fn unauthorized(provider: Provider, reason: &'static str) -> Rejection {
    Rejection::Unauthorized { provider, reason }
}

fn malformed(provider: Provider, reason: String) -> Rejection {
    Rejection::Malformed { provider, reason }
}

fn ignored(provider: Provider, event: &str) -> Event {
    Event::Ignored {
        provider,
        event: event.to_string(),
    }
}

/// Longest serde message kept in a [`Rejection::Malformed`] reason.
const MAX_ERROR_LEN: usize = 200;

fn decode<T: DeserializeOwned>(provider: Provider, body: &[u8]) -> Result<T, Rejection> {
    serde_json::from_slice(body).map_err(|err| {
        let what = if err.is_data() {
            "payload does not have the expected shape"
        } else {
            "payload is not valid JSON"
        };
        let mut message = err.to_string();
        if message.len() > MAX_ERROR_LEN {
            let mut cut = MAX_ERROR_LEN;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        malformed(provider, format!("{what}: {message}"))
    })
}

/// Builds the push event; a push must name its repository.
fn push<'a>(
    provider: Provider,
    urls: impl IntoIterator<Item = &'a Option<String>>,
    refs: Vec<PushedRef>,
    default_branch: Option<String>,
) -> Result<Event, Rejection> {
    let mut repo_urls: Vec<String> = Vec::new();
    for url in urls.into_iter().flatten() {
        if !url.is_empty() && !repo_urls.contains(url) {
            repo_urls.push(url.clone());
        }
    }
    if repo_urls.is_empty() {
        return Err(malformed(
            provider,
            "push payload has no repository URL".to_string(),
        ));
    }
    Ok(Event::Push(Push {
        provider,
        repo_urls,
        refs,
        default_branch,
    }))
}

/// The one ref of a GitHub-style payload, which is required.
fn single_ref(
    provider: Provider,
    full: &Option<String>,
    before: &Option<String>,
    after: &Option<String>,
) -> Result<PushedRef, Rejection> {
    let full = non_empty(full.as_deref())
        .ok_or_else(|| malformed(provider, "push payload has no ref".to_string()))?;
    Ok(pushed_ref(full, before.as_deref(), after.as_deref()))
}

/// Splits `refs/heads/x` / `refs/tags/x`; any other ref keeps its full name.
fn pushed_ref(full: &str, before: Option<&str>, after: Option<&str>) -> PushedRef {
    let (name, is_tag) = match full.strip_prefix("refs/tags/") {
        Some(tag) => (tag, true),
        None => (full.strip_prefix("refs/heads/").unwrap_or(full), false),
    };
    PushedRef {
        name: name.to_string(),
        is_tag,
        before: commit_sha(before),
        after: commit_sha(after),
    }
}

/// A lowercase SHA, or `None` for absent, empty or all-zero (git's "no commit").
fn commit_sha(value: Option<&str>) -> Option<String> {
    let sha = non_empty(value.map(str::trim))?;
    if sha.bytes().all(|b| b == b'0') {
        None
    } else {
        Some(sha.to_ascii_lowercase())
    }
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.filter(|text| !text.is_empty())
}

fn owned(value: Option<&str>) -> Option<String> {
    non_empty(value).map(str::to_string)
}

// ---------------------------------------------------------------------------------------------
// Payload shapes: only the fields read above. Every field is optional so a missing or null value
// is reported by the checks above rather than as a serde error; lists are optional for the same
// reason (a `null` list is no list).

#[derive(Deserialize, Default)]
#[serde(default)]
struct AzureEventType {
    #[serde(rename = "eventType")]
    event_type: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AzurePush {
    resource: Option<AzureResource>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct AzureResource {
    ref_updates: Option<Vec<AzureRefUpdate>>,
    repository: Option<AzureRepository>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct AzureRefUpdate {
    name: Option<String>,
    old_object_id: Option<String>,
    new_object_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct AzureRepository {
    remote_url: Option<String>,
    web_url: Option<String>,
    ssh_url: Option<String>,
    default_branch: Option<String>,
}

/// GitHub's push payload; Gogs and Gitea send the same shape.
#[derive(Deserialize, Default)]
#[serde(default)]
struct GitHubPush {
    r#ref: Option<String>,
    before: Option<String>,
    after: Option<String>,
    deleted: Option<bool>,
    repository: Option<GitHubRepository>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GitHubRepository {
    html_url: Option<String>,
    clone_url: Option<String>,
    ssh_url: Option<String>,
    git_url: Option<String>,
    url: Option<String>,
    default_branch: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GitLabKind {
    object_kind: Option<String>,
    event_name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GitLabPush {
    r#ref: Option<String>,
    before: Option<String>,
    after: Option<String>,
    project: Option<GitLabProject>,
    repository: Option<GitLabRepository>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GitLabProject {
    web_url: Option<String>,
    git_http_url: Option<String>,
    git_ssh_url: Option<String>,
    default_branch: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GitLabRepository {
    homepage: Option<String>,
    git_http_url: Option<String>,
    git_ssh_url: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BitbucketCloudPush {
    repository: Option<BitbucketCloudRepository>,
    push: Option<BitbucketCloudChanges>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BitbucketCloudRepository {
    full_name: Option<String>,
    links: Option<BitbucketCloudLinks>,
    mainbranch: Option<BitbucketCloudBranch>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BitbucketCloudLinks {
    html: Option<Link>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BitbucketCloudBranch {
    name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BitbucketCloudChanges {
    changes: Option<Vec<BitbucketCloudChange>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BitbucketCloudChange {
    new: Option<BitbucketCloudRef>,
    old: Option<BitbucketCloudRef>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BitbucketCloudRef {
    r#type: Option<String>,
    name: Option<String>,
    target: Option<BitbucketCloudTarget>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BitbucketCloudTarget {
    hash: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Link {
    href: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BitbucketServerPush {
    repository: Option<BitbucketServerRepository>,
    changes: Option<Vec<BitbucketServerChange>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BitbucketServerRepository {
    links: Option<BitbucketServerLinks>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BitbucketServerLinks {
    clone: Option<Vec<Link>>,
    #[serde(rename = "self")]
    self_: Option<Vec<Link>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct BitbucketServerChange {
    r#ref: Option<BitbucketServerRef>,
    ref_id: Option<String>,
    from_hash: Option<String>,
    to_hash: Option<String>,
    r#type: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct BitbucketServerRef {
    id: Option<String>,
    display_id: Option<String>,
    r#type: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};
    use serde_json::json;

    const SHA_A: &str = "d5c1ffa8e294bc18c639bfb4e0df499251034414";
    const SHA_B: &str = "63738bb582c8b540af7bcfc18f87c575c3ed66e0";
    const ZERO: &str = "0000000000000000000000000000000000000000";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn secret(value: &str) -> Option<Secret> {
        Some(Secret(value.to_string()))
    }

    fn hmac_hex(key: &str, body: &[u8]) -> String {
        let mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
        hex::encode(mac.chain_update(body).finalize().into_bytes())
    }

    fn body(value: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&value).unwrap()
    }

    fn branch(name: &str, before: Option<&str>, after: Option<&str>) -> PushedRef {
        PushedRef {
            name: name.to_string(),
            is_tag: false,
            before: before.map(str::to_string),
            after: after.map(str::to_string),
        }
    }

    fn tag(name: &str, before: Option<&str>, after: Option<&str>) -> PushedRef {
        PushedRef {
            is_tag: true,
            ..branch(name, before, after)
        }
    }

    fn urls(list: &[&str]) -> Vec<String> {
        list.iter().map(|url| url.to_string()).collect()
    }

    fn unauthorized_reason(result: Result<Event, Rejection>) -> &'static str {
        match result {
            Err(rejection @ Rejection::Unauthorized { reason, .. }) => {
                assert_eq!(rejection.status(), 401);
                reason
            }
            other => panic!("expected Unauthorized, got {other:?}"),
        }
    }

    fn malformed_reason(result: Result<Event, Rejection>) -> String {
        match result {
            Err(rejection @ Rejection::Malformed { .. }) => {
                assert_eq!(rejection.status(), 400);
                let Rejection::Malformed { reason, .. } = rejection else {
                    unreachable!()
                };
                reason
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    // --- general -------------------------------------------------------------------------------

    #[test]
    fn no_provider_header_is_unknown() {
        let result = parse(
            &headers(&[("x-request-id", "1")]),
            b"{}",
            &Secrets::default(),
        );
        assert_eq!(result, Err(Rejection::UnknownProvider));
        assert_eq!(Rejection::UnknownProvider.status(), 400);
        assert_eq!(
            Rejection::UnknownProvider.to_string(),
            "Unknown webhook event"
        );
    }

    #[test]
    fn provider_labels() {
        let all = [
            (Provider::GitHub, "github"),
            (Provider::GitLab, "gitlab"),
            (Provider::BitbucketCloud, "bitbucket"),
            (Provider::BitbucketServer, "bitbucketserver"),
            (Provider::Gogs, "gogs"),
            (Provider::Gitea, "gitea"),
            (Provider::AzureDevOps, "azuredevops"),
        ];
        for (provider, label) in all {
            assert_eq!(provider.as_str(), label);
            assert_eq!(provider.to_string(), label);
        }
    }

    #[test]
    fn rejection_messages_name_the_provider() {
        let rejection = unauthorized(Provider::GitHub, "signature does not match");
        assert_eq!(
            rejection.to_string(),
            "github webhook: signature does not match"
        );
    }

    /// A fixed HMAC-SHA256 vector (key "key"), checked through GitHub's ping path, which does not
    /// read the body.
    #[test]
    fn hmac_known_answer() {
        let secrets = Secrets {
            github: secret("key"),
            ..Secrets::default()
        };
        let message = b"The quick brown fox jumps over the lazy dog";
        let good = "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8";
        let request = headers(&[("X-GitHub-Event", "ping"), ("X-Hub-Signature-256", good)]);
        assert_eq!(
            parse(&request, message, &secrets),
            Ok(Event::Ping(Provider::GitHub))
        );

        let bad = "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd9";
        let request = headers(&[("X-GitHub-Event", "ping"), ("X-Hub-Signature-256", bad)]);
        assert_eq!(
            unauthorized_reason(parse(&request, message, &secrets)),
            "signature does not match"
        );
    }

    #[test]
    fn sha_normalisation() {
        assert_eq!(commit_sha(Some(ZERO)), None);
        assert_eq!(commit_sha(Some("")), None);
        assert_eq!(commit_sha(None), None);
        assert_eq!(
            commit_sha(Some("ABCDEF0123")),
            Some("abcdef0123".to_string())
        );
        assert_eq!(
            pushed_ref("refs/pull/1/head", None, None),
            branch("refs/pull/1/head", None, None)
        );
    }

    // --- GitHub --------------------------------------------------------------------------------

    fn github_push(r#ref: &str, before: &str, after: &str, deleted: bool) -> Vec<u8> {
        body(json!({
            "ref": r#ref,
            "before": before,
            "after": after,
            "created": false,
            "deleted": deleted,
            "forced": false,
            "repository": {
                "id": 1,
                "full_name": "acme/deploy",
                "html_url": "https://github.com/acme/deploy",
                "url": "https://github.com/acme/deploy",
                "forks_url": "https://api.github.com/repos/acme/deploy/forks",
                "git_url": "git://github.com/acme/deploy.git",
                "ssh_url": "git@github.com:acme/deploy.git",
                "clone_url": "https://github.com/acme/deploy.git",
                "default_branch": "main"
            },
            "commits": [{ "id": after, "added": [], "modified": ["app.yaml"], "removed": [] }]
        }))
    }

    fn github_urls() -> Vec<String> {
        urls(&[
            "https://github.com/acme/deploy",
            "https://github.com/acme/deploy.git",
            "git@github.com:acme/deploy.git",
            "git://github.com/acme/deploy.git",
        ])
    }

    #[test]
    fn github_push_unsigned_without_secret() {
        let payload = github_push("refs/heads/main", SHA_A, &SHA_B.to_uppercase(), false);
        let request = headers(&[("X-GitHub-Event", "push")]);
        let expected = Event::Push(Push {
            provider: Provider::GitHub,
            repo_urls: github_urls(),
            refs: vec![branch("main", Some(SHA_A), Some(SHA_B))],
            default_branch: Some("main".to_string()),
        });
        assert_eq!(parse(&request, &payload, &Secrets::default()), Ok(expected));

        // An empty secret counts as not configured.
        let empty = Secrets {
            github: secret(""),
            ..Secrets::default()
        };
        assert!(matches!(
            parse(&request, &payload, &empty),
            Ok(Event::Push(_))
        ));
    }

    #[test]
    fn github_signature() {
        let secrets = Secrets {
            github: secret("s3cret"),
            ..Secrets::default()
        };
        let payload = github_push("refs/heads/main", SHA_A, SHA_B, false);
        let signature = format!("sha256={}", hmac_hex("s3cret", &payload));

        let request = headers(&[
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", &signature),
        ]);
        assert!(matches!(
            parse(&request, &payload, &secrets),
            Ok(Event::Push(_))
        ));

        let wrong = format!("sha256={}", hmac_hex("other", &payload));
        let request = headers(&[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &wrong)]);
        assert_eq!(
            unauthorized_reason(parse(&request, &payload, &secrets)),
            "signature does not match"
        );

        let request = headers(&[("X-GitHub-Event", "push")]);
        assert_eq!(
            unauthorized_reason(parse(&request, &payload, &secrets)),
            "signature missing"
        );

        for garbage in ["sha256=zz", "sha256=", &signature[7..], "sha1=abcd"] {
            let request = headers(&[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", garbage)]);
            assert_eq!(
                unauthorized_reason(parse(&request, &payload, &secrets)),
                "signature does not match",
                "{garbage}"
            );
        }
    }

    /// The signature is checked before the body is parsed: a bad body with a bad signature is 401.
    #[test]
    fn github_signature_checked_before_parsing() {
        let secrets = Secrets {
            github: secret("s3cret"),
            ..Secrets::default()
        };
        let request = headers(&[("X-GitHub-Event", "push")]);
        assert_eq!(
            unauthorized_reason(parse(&request, b"not json", &secrets)),
            "signature missing"
        );
    }

    #[test]
    fn github_tag_push_skips_api_url() {
        let payload = body(json!({
            "ref": "refs/tags/v1.0",
            "before": ZERO,
            "after": SHA_B,
            "deleted": false,
            "base_ref": "refs/heads/main",
            "repository": {
                "html_url": "https://github.com/acme/deploy",
                "url": "https://api.github.com/repos/acme/deploy",
                "clone_url": "https://github.com/acme/deploy.git",
                "default_branch": "main"
            }
        }));
        let request = headers(&[("X-GitHub-Event", "push")]);
        let expected = Event::Push(Push {
            provider: Provider::GitHub,
            repo_urls: urls(&[
                "https://github.com/acme/deploy",
                "https://github.com/acme/deploy.git",
            ]),
            refs: vec![tag("v1.0", None, Some(SHA_B))],
            default_branch: Some("main".to_string()),
        });
        assert_eq!(parse(&request, &payload, &Secrets::default()), Ok(expected));
    }

    #[test]
    fn github_branch_deletion() {
        let payload = github_push("refs/heads/feature/x", SHA_A, ZERO, true);
        let request = headers(&[("X-GitHub-Event", "push")]);
        let Ok(Event::Push(push)) = parse(&request, &payload, &Secrets::default()) else {
            panic!("expected a push");
        };
        assert_eq!(push.refs, vec![branch("feature/x", Some(SHA_A), None)]);

        // `deleted` alone is enough, whatever `after` says.
        let payload = github_push("refs/heads/feature/x", SHA_A, SHA_B, true);
        let Ok(Event::Push(push)) = parse(&request, &payload, &Secrets::default()) else {
            panic!("expected a push");
        };
        assert_eq!(push.refs, vec![branch("feature/x", Some(SHA_A), None)]);
    }

    #[test]
    fn github_ping_and_ignored() {
        let request = headers(&[("X-GitHub-Event", "ping")]);
        let payload = body(json!({ "zen": "Keep it simple.", "hook_id": 1 }));
        assert_eq!(
            parse(&request, &payload, &Secrets::default()),
            Ok(Event::Ping(Provider::GitHub))
        );

        let request = headers(&[("X-GitHub-Event", "issues")]);
        assert_eq!(
            parse(&request, b"{}", &Secrets::default()),
            Ok(Event::Ignored {
                provider: Provider::GitHub,
                event: "issues".to_string()
            })
        );
    }

    #[test]
    fn invalid_json_is_malformed() {
        let request = headers(&[("X-GitHub-Event", "push")]);
        let reason = malformed_reason(parse(&request, b"{\"ref\": ", &Secrets::default()));
        assert!(
            reason.starts_with("payload is not valid JSON: "),
            "{reason}"
        );

        let reason = malformed_reason(parse(&request, b"{\"ref\": 7}", &Secrets::default()));
        assert!(
            reason.starts_with("payload does not have the expected shape: "),
            "{reason}"
        );
    }

    #[test]
    fn long_serde_errors_are_truncated() {
        let long = "é".repeat(500);
        let payload = format!("{{\"ref\": \"refs/heads/main\", \"deleted\": \"{long}\"}}");
        let request = headers(&[("X-GitHub-Event", "push")]);
        let reason = malformed_reason(parse(&request, payload.as_bytes(), &Secrets::default()));
        assert!(reason.ends_with('…'), "{reason}");
        assert!(reason.len() < MAX_ERROR_LEN + 60, "{reason}");
    }

    #[test]
    fn push_without_repository_url_or_ref_is_malformed() {
        let request = headers(&[("X-GitHub-Event", "push")]);
        let payload = body(json!({ "ref": "refs/heads/main", "after": SHA_B, "repository": {} }));
        assert_eq!(
            malformed_reason(parse(&request, &payload, &Secrets::default())),
            "push payload has no repository URL"
        );

        let payload = body(json!({ "repository": { "html_url": "https://github.com/a/b" } }));
        assert_eq!(
            malformed_reason(parse(&request, &payload, &Secrets::default())),
            "push payload has no ref"
        );
    }

    // --- Gitea and Gogs ------------------------------------------------------------------------

    fn gogs_push(host: &str) -> Vec<u8> {
        body(json!({
            "ref": "refs/heads/master",
            "before": ZERO,
            "after": SHA_B,
            "compare_url": "",
            "commits": [{ "id": SHA_B, "added": [], "removed": [], "modified": ["cm.yaml"] }],
            "repository": {
                "id": 1,
                "name": "repo-test",
                "full_name": "john/repo-test",
                "html_url": format!("http://{host}/john/repo-test"),
                "ssh_url": format!("git@{host}:john/repo-test.git"),
                "clone_url": format!("http://{host}/john/repo-test.git"),
                "default_branch": "master"
            },
            "pusher": { "id": 1, "username": "john" }
        }))
    }

    fn gogs_expected(provider: Provider, host: &str) -> Event {
        Event::Push(Push {
            provider,
            repo_urls: vec![
                format!("http://{host}/john/repo-test"),
                format!("http://{host}/john/repo-test.git"),
                format!("git@{host}:john/repo-test.git"),
            ],
            refs: vec![branch("master", None, Some(SHA_B))],
            default_branch: Some("master".to_string()),
        })
    }

    #[test]
    fn gogs_push_and_signature() {
        let payload = gogs_push("gogs.local");
        let expected = gogs_expected(Provider::Gogs, "gogs.local");

        let request = headers(&[("X-Gogs-Event", "push")]);
        assert_eq!(
            parse(&request, &payload, &Secrets::default()),
            Ok(expected.clone())
        );

        let secrets = Secrets {
            gogs: secret("gogs-secret"),
            ..Secrets::default()
        };
        let signature = hmac_hex("gogs-secret", &payload);
        let request = headers(&[("X-Gogs-Event", "push"), ("X-Gogs-Signature", &signature)]);
        assert_eq!(parse(&request, &payload, &secrets), Ok(expected));

        let wrong = hmac_hex("nope", &payload);
        let request = headers(&[("X-Gogs-Event", "push"), ("X-Gogs-Signature", &wrong)]);
        assert_eq!(
            unauthorized_reason(parse(&request, &payload, &secrets)),
            "signature does not match"
        );

        let request = headers(&[("X-Gogs-Event", "push")]);
        assert_eq!(
            unauthorized_reason(parse(&request, &payload, &secrets)),
            "signature missing"
        );

        let request = headers(&[("X-Gogs-Event", "create"), ("X-Gogs-Signature", &signature)]);
        assert_eq!(
            parse(&request, &payload, &secrets),
            Ok(Event::Ignored {
                provider: Provider::Gogs,
                event: "create".to_string()
            })
        );
    }

    /// Gitea sends its own headers plus Gogs' and GitHub's; it must be read as Gitea, checked with
    /// the Gogs secret against `X-Gitea-Signature`.
    #[test]
    fn gitea_wins_over_gogs_and_github_headers() {
        let payload = gogs_push("gitea.local");
        let secrets = Secrets {
            gogs: secret("gitea-secret"),
            github: secret("github-secret"),
            ..Secrets::default()
        };
        let signature = hmac_hex("gitea-secret", &payload);
        let request = headers(&[
            ("X-Gitea-Event", "push"),
            ("X-Gogs-Event", "push"),
            ("X-GitHub-Event", "push"),
            ("X-Gitea-Signature", &signature),
        ]);
        assert_eq!(
            parse(&request, &payload, &secrets),
            Ok(gogs_expected(Provider::Gitea, "gitea.local"))
        );

        // A GitHub-style signature alone does not satisfy the Gitea check.
        let github_signature = format!("sha256={}", hmac_hex("github-secret", &payload));
        let request = headers(&[
            ("X-Gitea-Event", "push"),
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", &github_signature),
        ]);
        assert_eq!(
            parse(&request, &payload, &secrets),
            Err(Rejection::Unauthorized {
                provider: Provider::Gitea,
                reason: "signature missing"
            })
        );

        let wrong = hmac_hex("github-secret", &payload);
        let request = headers(&[("X-Gitea-Event", "push"), ("X-Gitea-Signature", &wrong)]);
        assert_eq!(
            parse(&request, &payload, &secrets),
            Err(Rejection::Unauthorized {
                provider: Provider::Gitea,
                reason: "signature does not match"
            })
        );
    }

    // --- GitLab --------------------------------------------------------------------------------

    fn gitlab_push(kind: &str, r#ref: &str, before: &str, after: &str) -> Vec<u8> {
        body(json!({
            "object_kind": kind,
            "event_name": kind,
            "before": before,
            "after": after,
            "ref": r#ref,
            "checkout_sha": after,
            "project_id": 1,
            "project": {
                "id": 1,
                "name": "name",
                "web_url": "https://gitlab.com/group/name",
                "git_ssh_url": "ssh://git@gitlab.com:2222/group/name.git",
                "git_http_url": "https://gitlab.com/group/name.git",
                "path_with_namespace": "group/name",
                "default_branch": "master",
                "homepage": "https://gitlab.com/group/name"
            },
            "repository": {
                "name": "name",
                "homepage": "https://gitlab.com/group/name",
                "git_http_url": "https://gitlab.com/group/name.git",
                "git_ssh_url": "ssh://git@gitlab.com:2222/group/name.git"
            },
            "total_commits_count": 1
        }))
    }

    fn gitlab_urls() -> Vec<String> {
        urls(&[
            "https://gitlab.com/group/name",
            "https://gitlab.com/group/name.git",
            "ssh://git@gitlab.com:2222/group/name.git",
        ])
    }

    #[test]
    fn gitlab_push_and_token() {
        let payload = gitlab_push("push", "refs/heads/master", SHA_A, SHA_B);
        let expected = Event::Push(Push {
            provider: Provider::GitLab,
            repo_urls: gitlab_urls(),
            refs: vec![branch("master", Some(SHA_A), Some(SHA_B))],
            default_branch: Some("master".to_string()),
        });

        let request = headers(&[("X-Gitlab-Event", "Push Hook")]);
        assert_eq!(
            parse(&request, &payload, &Secrets::default()),
            Ok(expected.clone())
        );

        let secrets = Secrets {
            gitlab: secret("gl-token"),
            ..Secrets::default()
        };
        let request = headers(&[
            ("X-Gitlab-Event", "Push Hook"),
            ("X-Gitlab-Token", "gl-token"),
        ]);
        assert_eq!(parse(&request, &payload, &secrets), Ok(expected));

        let request = headers(&[
            ("X-Gitlab-Event", "Push Hook"),
            ("X-Gitlab-Token", "gl-toke"),
        ]);
        assert_eq!(
            unauthorized_reason(parse(&request, &payload, &secrets)),
            "token does not match"
        );

        let request = headers(&[("X-Gitlab-Event", "Push Hook")]);
        assert_eq!(
            unauthorized_reason(parse(&request, &payload, &secrets)),
            "token missing"
        );
    }

    #[test]
    fn gitlab_tag_push_and_repository_fallback() {
        let mut value: serde_json::Value =
            serde_json::from_slice(&gitlab_push("tag_push", "refs/tags/v2.3.0", ZERO, SHA_B))
                .unwrap();
        value.as_object_mut().unwrap().remove("project");
        let request = headers(&[("X-Gitlab-Event", "Tag Push Hook")]);
        let expected = Event::Push(Push {
            provider: Provider::GitLab,
            repo_urls: gitlab_urls(),
            refs: vec![tag("v2.3.0", None, Some(SHA_B))],
            default_branch: None,
        });
        assert_eq!(
            parse(&request, &body(value), &Secrets::default()),
            Ok(expected)
        );
    }

    #[test]
    fn gitlab_system_hook() {
        let request = headers(&[("X-Gitlab-Event", "System Hook")]);
        let payload = gitlab_push("push", "refs/heads/master", SHA_A, SHA_B);
        assert!(matches!(
            parse(&request, &payload, &Secrets::default()),
            Ok(Event::Push(_))
        ));

        let payload = body(json!({ "event_name": "project_create", "name": "x" }));
        assert_eq!(
            parse(&request, &payload, &Secrets::default()),
            Ok(Event::Ignored {
                provider: Provider::GitLab,
                event: "System Hook".to_string()
            })
        );

        let request = headers(&[("X-Gitlab-Event", "Merge Request Hook")]);
        assert_eq!(
            parse(&request, b"{}", &Secrets::default()),
            Ok(Event::Ignored {
                provider: Provider::GitLab,
                event: "Merge Request Hook".to_string()
            })
        );
    }

    // --- Bitbucket Cloud -----------------------------------------------------------------------

    const HOOK_UUID: &str = "6a4bcd1e-2f3a-4b5c-9d8e-7f6a5b4c3d2e";

    fn bitbucket_cloud_push() -> Vec<u8> {
        body(json!({
            "actor": { "display_name": "Jane" },
            "repository": {
                "type": "repository",
                "name": "deploy",
                "full_name": "acme/deploy",
                "links": {
                    "self": { "href": "https://api.bitbucket.org/2.0/repositories/acme/deploy" },
                    "html": { "href": "https://bitbucket.org/Acme/deploy" }
                },
                "mainbranch": { "type": "branch", "name": "main" }
            },
            "push": {
                "changes": [
                    {
                        "new": { "type": "branch", "name": "main", "target": { "hash": SHA_B } },
                        "old": { "type": "branch", "name": "main", "target": { "hash": SHA_A } },
                        "created": false, "forced": false, "closed": false
                    },
                    {
                        "new": { "type": "tag", "name": "v1.2", "target": { "hash": SHA_B } },
                        "old": null,
                        "created": true, "forced": false, "closed": false
                    },
                    {
                        "new": null,
                        "old": { "type": "branch", "name": "old/topic", "target": { "hash": SHA_A } },
                        "created": false, "forced": false, "closed": true
                    }
                ]
            }
        }))
    }

    #[test]
    fn bitbucket_cloud_push_and_uuid() {
        let payload = bitbucket_cloud_push();
        let expected = Event::Push(Push {
            provider: Provider::BitbucketCloud,
            repo_urls: urls(&[
                "https://bitbucket.org/Acme/deploy",
                "https://bitbucket.org/acme/deploy",
            ]),
            refs: vec![
                branch("main", Some(SHA_A), Some(SHA_B)),
                tag("v1.2", None, Some(SHA_B)),
                branch("old/topic", Some(SHA_A), None),
            ],
            default_branch: Some("main".to_string()),
        });

        let request = headers(&[("X-Hook-UUID", HOOK_UUID), ("X-Event-Key", "repo:push")]);
        assert_eq!(
            parse(&request, &payload, &Secrets::default()),
            Ok(expected.clone())
        );

        let secrets = Secrets {
            bitbucket_uuid: secret(HOOK_UUID),
            ..Secrets::default()
        };
        assert_eq!(parse(&request, &payload, &secrets), Ok(expected));

        let request = headers(&[
            ("X-Hook-UUID", "00000000-2f3a-4b5c-9d8e-7f6a5b4c3d2e"),
            ("X-Event-Key", "repo:push"),
        ]);
        assert_eq!(
            unauthorized_reason(parse(&request, &payload, &secrets)),
            "hook UUID does not match"
        );

        let request = headers(&[
            ("X-Hook-UUID", HOOK_UUID),
            ("X-Event-Key", "pullrequest:created"),
        ]);
        assert_eq!(
            parse(&request, b"{}", &secrets),
            Ok(Event::Ignored {
                provider: Provider::BitbucketCloud,
                event: "pullrequest:created".to_string()
            })
        );
    }

    // --- Bitbucket Server ----------------------------------------------------------------------

    fn bitbucket_server_push() -> Vec<u8> {
        body(json!({
            "eventKey": "repo:refs_changed",
            "date": "2024-03-01T10:00:00+0000",
            "actor": { "name": "john", "slug": "john" },
            "repository": {
                "slug": "test-repo",
                "name": "test-repo",
                "project": { "key": "MYPROJECT" },
                "links": {
                    "clone": [
                        { "href": "ssh://git@bitbucket.example.com:7999/myproject/test-repo.git", "name": "ssh" },
                        { "href": "https://bitbucket.example.com/scm/myproject/test-repo.git", "name": "http" }
                    ],
                    "self": [
                        { "href": "https://bitbucket.example.com/projects/MYPROJECT/repos/test-repo/browse" }
                    ]
                }
            },
            "changes": [
                {
                    "ref": { "id": "refs/heads/master", "displayId": "master", "type": "BRANCH" },
                    "refId": "refs/heads/master",
                    "fromHash": SHA_A,
                    "toHash": SHA_B,
                    "type": "UPDATE"
                },
                {
                    "ref": { "id": "refs/tags/v3", "displayId": "v3", "type": "TAG" },
                    "refId": "refs/tags/v3",
                    "fromHash": ZERO,
                    "toHash": SHA_B,
                    "type": "ADD"
                },
                {
                    "ref": { "id": "refs/heads/gone", "displayId": "gone", "type": "BRANCH" },
                    "refId": "refs/heads/gone",
                    "fromHash": SHA_A,
                    "toHash": ZERO,
                    "type": "DELETE"
                }
            ]
        }))
    }

    #[test]
    fn bitbucket_server_push_and_signature() {
        let payload = bitbucket_server_push();
        let expected = Event::Push(Push {
            provider: Provider::BitbucketServer,
            repo_urls: urls(&[
                "ssh://git@bitbucket.example.com:7999/myproject/test-repo.git",
                "https://bitbucket.example.com/scm/myproject/test-repo.git",
                "https://bitbucket.example.com/projects/MYPROJECT/repos/test-repo/browse",
            ]),
            refs: vec![
                branch("master", Some(SHA_A), Some(SHA_B)),
                tag("v3", None, Some(SHA_B)),
                branch("gone", Some(SHA_A), None),
            ],
            default_branch: None,
        });

        let request = headers(&[("X-Event-Key", "repo:refs_changed")]);
        assert_eq!(
            parse(&request, &payload, &Secrets::default()),
            Ok(expected.clone())
        );

        let secrets = Secrets {
            bitbucket_server: secret("bbs-secret"),
            ..Secrets::default()
        };
        let signature = format!("sha256={}", hmac_hex("bbs-secret", &payload));
        let request = headers(&[
            ("X-Event-Key", "repo:refs_changed"),
            ("X-Hub-Signature", &signature),
        ]);
        assert_eq!(parse(&request, &payload, &secrets), Ok(expected));

        let wrong = format!("sha256={}", hmac_hex("bbs-secreT", &payload));
        let request = headers(&[
            ("X-Event-Key", "repo:refs_changed"),
            ("X-Hub-Signature", &wrong),
        ]);
        assert_eq!(
            unauthorized_reason(parse(&request, &payload, &secrets)),
            "signature does not match"
        );

        let request = headers(&[("X-Event-Key", "repo:refs_changed")]);
        assert_eq!(
            unauthorized_reason(parse(&request, &payload, &secrets)),
            "signature missing"
        );
    }

    #[test]
    fn bitbucket_server_ping_and_ignored() {
        let request = headers(&[("X-Event-Key", "diagnostics:ping")]);
        assert_eq!(
            parse(&request, b"{\"test\": true}", &Secrets::default()),
            Ok(Event::Ping(Provider::BitbucketServer))
        );

        let request = headers(&[("X-Event-Key", "pr:opened")]);
        assert_eq!(
            parse(&request, b"{}", &Secrets::default()),
            Ok(Event::Ignored {
                provider: Provider::BitbucketServer,
                event: "pr:opened".to_string()
            })
        );
    }

    // --- Azure DevOps --------------------------------------------------------------------------

    fn azure_push(event_type: &str) -> Vec<u8> {
        body(json!({
            "subscriptionId": "8fd412f1-9873-4b45-8854-655b1b8a2eff",
            "eventType": event_type,
            "publisherId": "tfs",
            "resource": {
                "commits": [{ "commitId": SHA_B, "comment": "draft" }],
                "refUpdates": [{
                    "name": "refs/heads/master",
                    "oldObjectId": SHA_A,
                    "newObjectId": SHA_B
                }],
                "repository": {
                    "id": "ba2967cc-02c2-414c-8d10-1b99197cbaa6",
                    "name": "alex-test",
                    "url": "https://dev.azure.com/org/_apis/git/repositories/ba2967cc",
                    "defaultBranch": "refs/heads/master",
                    "remoteUrl": "https://dev.azure.com/org/alex-test/_git/alex-test",
                    "webUrl": "https://dev.azure.com/org/alex-test/_git/alex-test",
                    "sshUrl": "git@ssh.dev.azure.com:v3/org/alex-test/alex-test"
                },
                "pushId": 4
            },
            "resourceVersion": "1.0"
        }))
    }

    fn basic(user: &str, pass: &str) -> String {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        format!("Basic {encoded}")
    }

    #[test]
    fn azure_devops_push_and_basic_auth() {
        let payload = azure_push("git.push");
        let expected = Event::Push(Push {
            provider: Provider::AzureDevOps,
            repo_urls: urls(&[
                "https://dev.azure.com/org/alex-test/_git/alex-test",
                "git@ssh.dev.azure.com:v3/org/alex-test/alex-test",
            ]),
            refs: vec![branch("master", Some(SHA_A), Some(SHA_B))],
            default_branch: Some("master".to_string()),
        });
        let activity = ("X-Vss-ActivityId", "2f4a6b8c-0000-4000-8000-000000000001");

        let request = headers(&[activity]);
        assert_eq!(
            parse(&request, &payload, &Secrets::default()),
            Ok(expected.clone())
        );

        let secrets = Secrets {
            azure_devops_username: secret("argo"),
            azure_devops_password: secret("pa:ss"),
            ..Secrets::default()
        };
        let good = basic("argo", "pa:ss");
        let request = headers(&[activity, ("Authorization", &good)]);
        assert_eq!(parse(&request, &payload, &secrets), Ok(expected));

        for wrong in [
            basic("argo", "pa:sS"),
            basic("argO", "pa:ss"),
            basic("argo", ""),
            "Basic !!!not-base64".to_string(),
            "Basic bm9jb2xvbg==".to_string(), // "nocolon"
        ] {
            let request = headers(&[activity, ("Authorization", &wrong)]);
            assert_eq!(
                unauthorized_reason(parse(&request, &payload, &secrets)),
                "basic auth does not match",
                "{wrong}"
            );
        }

        for missing in [None, Some("Bearer abc")] {
            let mut request = headers(&[activity]);
            if let Some(value) = missing {
                request.insert("authorization", HeaderValue::from_static(value));
            }
            assert_eq!(
                unauthorized_reason(parse(&request, &payload, &secrets)),
                "basic auth missing"
            );
        }

        // Only a password configured: the username must then be empty.
        let password_only = Secrets {
            azure_devops_password: secret("pw"),
            ..Secrets::default()
        };
        let request = headers(&[activity, ("Authorization", &basic("", "pw"))]);
        assert!(matches!(
            parse(&request, &payload, &password_only),
            Ok(Event::Push(_))
        ));
    }

    #[test]
    fn azure_devops_other_event_is_ignored() {
        let request = headers(&[("X-Vss-ActivityId", "1")]);
        assert_eq!(
            parse(
                &request,
                &azure_push("git.pullrequest.created"),
                &Secrets::default()
            ),
            Ok(Event::Ignored {
                provider: Provider::AzureDevOps,
                event: "git.pullrequest.created".to_string()
            })
        );
    }
}
