//! OCI registries (the distribution API), in process: tags, manifests and
//! blobs of a repository, with basic or bearer-token authentication. Used
//! for Helm charts stored in registries and for OCI sources.

use serde::Deserialize;

use super::{Charts, Error, Fetch};
use crate::domain::RepoUrl;

/// The media type of a Helm chart archive layer.
pub const HELM_CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
/// Layers extracted for OCI sources besides Helm charts.
const TAR_GZIP_LAYERS: [&str; 2] = [
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// One repository of a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// `host[:port]`.
    pub registry: String,
    /// The repository path (`charts/web`).
    pub repository: String,
}

impl Reference {
    /// The repository `url` names (`oci://host/path` or `host/path`), with
    /// `chart` appended when given; plain HTTP when `insecureOCIForceHttp`.
    pub fn parse(url: &str, chart: &str, plain_http: bool) -> Option<Reference> {
        let rest = url.strip_prefix("oci://").unwrap_or(url);
        let rest = rest.split_once("://").map_or(rest, |(_, r)| r);
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        let (registry, path) = rest.split_once('/').unwrap_or((rest, ""));
        if registry.is_empty() {
            return None;
        }
        let mut repository = path.trim_matches('/').to_string();
        if !chart.is_empty() {
            if !repository.is_empty() {
                repository.push('/');
            }
            repository.push_str(chart.trim_matches('/'));
        }
        if repository.is_empty() {
            return None;
        }
        Some(Reference {
            scheme: if plain_http { "http" } else { "https" },
            registry: registry.to_string(),
            repository,
        })
    }

    fn url(&self, tail: &str) -> String {
        format!(
            "{}://{}/v2/{}/{tail}",
            self.scheme, self.registry, self.repository
        )
    }
}

/// An image manifest, reduced to what is used.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Manifest {
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// `sha256:<hex>` of the manifest as served.
    #[serde(skip)]
    pub digest: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub size: u64,
}

impl Manifest {
    /// The layers an extraction reads: the Helm chart, else tar+gzip
    /// layers.
    pub fn content_layers(&self) -> Vec<&Descriptor> {
        let chart: Vec<&Descriptor> = self
            .layers
            .iter()
            .filter(|l| l.media_type == HELM_CHART_LAYER)
            .collect();
        if !chart.is_empty() {
            return chart;
        }
        self.layers
            .iter()
            .filter(|l| TAR_GZIP_LAYERS.contains(&l.media_type.as_str()))
            .collect()
    }
}

impl Charts {
    /// The repository's tags (as listed: Helm's `_` for `+` undone).
    pub async fn oci_tags(
        &self,
        repo_url: &RepoUrl,
        reference: &Reference,
    ) -> Result<Vec<String>, Error> {
        #[derive(Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let bytes = self
            .oci_get(
                repo_url,
                reference,
                &reference.url("tags/list"),
                None,
                64 << 20,
            )
            .await?;
        let tags: Tags = serde_json::from_slice(&bytes).map_err(|err| Error::Index {
            repo_url: repo_url.redacted(),
            message: format!("the tag list does not parse: {err}"),
        })?;
        Ok(tags
            .tags
            .unwrap_or_default()
            .into_iter()
            .map(|tag| tag.replace('_', "+"))
            .collect())
    }

    /// The manifest `tag_or_digest` names.
    pub async fn oci_manifest(
        &self,
        repo_url: &RepoUrl,
        reference: &Reference,
        tag_or_digest: &str,
    ) -> Result<Manifest, Error> {
        let tag = tag_or_digest.replace('+', "_");
        let bytes = self
            .oci_get(
                repo_url,
                reference,
                &reference.url(&format!("manifests/{tag}")),
                Some(MANIFEST_TYPES),
                16 << 20,
            )
            .await?;
        let mut manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|err| Error::Index {
                repo_url: repo_url.redacted(),
                message: format!("the manifest of {tag_or_digest} does not parse: {err}"),
            })?;
        use sha2::{Digest, Sha256};
        manifest.digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        Ok(manifest)
    }

    /// A blob, checked against its digest.
    pub async fn oci_blob(
        &self,
        repo_url: &RepoUrl,
        reference: &Reference,
        layer: &Descriptor,
    ) -> Result<Vec<u8>, Error> {
        let bytes = self
            .oci_get(
                repo_url,
                reference,
                &reference.url(&format!("blobs/{}", layer.digest)),
                None,
                self.config.max_extracted_bytes,
            )
            .await?;
        if let Some(expected) = layer.digest.strip_prefix("sha256:") {
            use sha2::{Digest, Sha256};
            let actual = hex::encode(Sha256::digest(&bytes));
            if actual != expected {
                return Err(Error::Index {
                    repo_url: repo_url.redacted(),
                    message: format!("blob {} does not match its digest", layer.digest),
                });
            }
        }
        Ok(bytes)
    }

    /// GETs from the registry: anonymously or with basic credentials, and
    /// on a bearer challenge with a token from the registry's realm.
    async fn oci_get(
        &self,
        repo_url: &RepoUrl,
        reference: &Reference,
        url: &str,
        accept: Option<&str>,
        limit: u64,
    ) -> Result<Vec<u8>, Error> {
        let failed = |message: String| Error::Index {
            repo_url: repo_url.redacted(),
            message,
        };
        let unauthorized = |status: u16| Error::Unauthorized {
            repo_url: repo_url.redacted(),
            status,
        };
        let client = self.client(repo_url).map_err(failed)?;
        let credentials = repo_url.credentials().cloned().unwrap_or_default();
        let basic = (!credentials.username.is_empty() || !credentials.password.is_empty())
            .then(|| (credentials.username.clone(), credentials.password.clone()));
        let request = |bearer: Option<&str>| {
            let mut request = client.get(url);
            if let Some(accept) = accept {
                request = request.header("Accept", accept);
            }
            match (bearer, &basic) {
                (Some(token), _) => request.bearer_auth(token),
                (None, Some((user, password))) => request.basic_auth(user, Some(password)),
                (None, None) => request,
            }
        };
        let response = request(None)
            .send()
            .await
            .map_err(|err| failed(super::describe(&err)))?;
        let response = if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            let challenge = response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let Some(token) = self
                .bearer_token(&client, &challenge, reference, basic.as_ref())
                .await
                .map_err(failed)?
            else {
                return Err(unauthorized(401));
            };
            request(Some(&token))
                .send()
                .await
                .map_err(|err| failed(super::describe(&err)))?
        } else {
            response
        };
        super::read_body(response, limit)
            .await
            .map_err(|fetch| match fetch {
                Fetch::Unauthorized(status) => unauthorized(status),
                Fetch::Failed(message) => failed(message),
            })
    }

    /// A token for a `Bearer realm=...,service=...` challenge (with basic
    /// credentials when there are any); `None` for any other challenge.
    async fn bearer_token(
        &self,
        client: &reqwest::Client,
        challenge: &str,
        reference: &Reference,
        basic: Option<&(String, String)>,
    ) -> Result<Option<String>, String> {
        let Some(params) = challenge.strip_prefix("Bearer ") else {
            return Ok(None);
        };
        let mut realm = None;
        let mut query: Vec<(String, String)> = Vec::new();
        for part in params.split(',') {
            let Some((key, value)) = part.trim().split_once('=') else {
                continue;
            };
            let value = value.trim_matches('"').to_string();
            match key {
                "realm" => realm = Some(value),
                "service" => query.push(("service".into(), value)),
                _ => {}
            }
        }
        let Some(realm) = realm else {
            return Ok(None);
        };
        query.push((
            "scope".into(),
            format!("repository:{}:pull", reference.repository),
        ));
        let encode = |text: &str| -> String {
            text.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect()
        };
        let query: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        let separator = if realm.contains('?') { '&' } else { '?' };
        let mut request = client.get(format!("{realm}{separator}{}", query.join("&")));
        if let Some((user, password)) = basic {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.map_err(|err| super::describe(&err))?;
        if !response.status().is_success() {
            return Ok(None);
        }
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let token: Token = response.json_from().await?;
        Ok(token.token.or(token.access_token))
    }
}

/// Reading a small JSON body without reqwest's `json` feature.
trait JsonFrom {
    async fn json_from<T: serde::de::DeserializeOwned>(self) -> Result<T, String>;
}

impl JsonFrom for reqwest::Response {
    async fn json_from<T: serde::de::DeserializeOwned>(self) -> Result<T, String> {
        let bytes = self.bytes().await.map_err(|err| super::describe(&err))?;
        serde_json::from_slice(&bytes).map_err(|err| err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_the_repository() {
        let r = Reference::parse("oci://registry.example:5000/charts", "web", false).unwrap();
        assert_eq!(
            r.url("tags/list"),
            "https://registry.example:5000/v2/charts/web/tags/list"
        );
        let r = Reference::parse("registry.example/charts/web", "", true).unwrap();
        assert_eq!(
            r.url("manifests/1.0.0"),
            "http://registry.example/v2/charts/web/manifests/1.0.0"
        );
        assert!(Reference::parse("oci://registry.example", "", false).is_none());
    }
}
