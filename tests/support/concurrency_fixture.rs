//! A Kustomize repository with several commits and a few override sets,
//! shared by `tests/concurrency.rs` and `benches/report/overrides.rs`:
//! the repository, the requests, and the exact output each request must
//! produce.
//!
//! The including crate must have a `fixtures` module (`fixtures/mod.rs`)
//! next to this one.

#![allow(dead_code)]

use std::collections::HashMap;

use manifold::grpc::proto::k8s::IntOrString;
use manifold::grpc::proto::repository::{ManifestRequest, ManifestResponse};
use manifold::grpc::proto::v1alpha1::{
    ApplicationSource, ApplicationSourceKustomize, KustomizeReplica, Repository,
};
use serde_json::Value;

use super::fixtures::GitRepo;

/// The app every request renders: an overlay of `app/base`.
pub const APP_PATH: &str = "app/overlays/prod";

/// The image the base deploys.
pub const BASE_IMAGE: &str = "example.com/web:1.0";

/// One revision of the repository as a request names it, and what the
/// base says at that commit.
#[derive(Debug, Clone)]
pub struct Revision {
    /// What the request sends: a full SHA, a tag or a branch.
    pub name: String,
    /// The commit it resolves to.
    pub sha: String,
    /// `data.release` of the ConfigMap at this commit.
    pub release: String,
    /// `spec.replicas` of the Deployment in the base at this commit.
    pub replicas: i64,
}

/// A repository whose `app/base` changes at every commit (the ConfigMap's
/// `release` and the Deployment's replica count), with an overlay
/// `app/overlays/prod` that adds a label and a patch.
pub struct KustomizeRepo {
    pub repo: GitRepo,
    pub revisions: Vec<Revision>,
}

fn deployment(replicas: i64) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: {BASE_IMAGE}
        envFrom:
        - configMapRef:
            name: web-config
        ports:
        - containerPort: 8080
"
    )
}

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
";

fn config_map(release: &str) -> String {
    format!(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
data:
  release: {release}
"
    )
}

const BASE_KUSTOMIZATION: &str = "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- deployment.yaml
- service.yaml
- configmap.yaml
";

const OVERLAY_KUSTOMIZATION: &str = "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- ../../base
labels:
- pairs:
    env: prod
patches:
- target:
    kind: Deployment
    name: web
  patch: |-
    - op: add
      path: /metadata/annotations
      value:
        overlay: prod
";

impl KustomizeRepo {
    /// `commits` commits on `main` (at least 2). The first is named by its
    /// full SHA, the last by the branch `main`, the others by lightweight
    /// tags `v2`, `v3`, ...
    pub fn build(commits: usize) -> Self {
        assert!(commits >= 2, "need at least two commits");
        let repo = GitRepo::new();
        repo.write("app/base/kustomization.yaml", BASE_KUSTOMIZATION)
            .write("app/base/service.yaml", SERVICE)
            .write(
                "app/overlays/prod/kustomization.yaml",
                OVERLAY_KUSTOMIZATION,
            );
        let mut revisions = Vec::new();
        for n in 1..=commits {
            let release = format!("release-{n}");
            let replicas = n as i64;
            repo.write("app/base/deployment.yaml", &deployment(replicas))
                .write("app/base/configmap.yaml", &config_map(&release));
            let sha = repo.commit(&format!("release {n}"));
            let name = if n == 1 {
                sha.clone()
            } else if n == commits {
                "main".to_string()
            } else {
                let tag = format!("v{n}");
                repo.tag(&tag);
                tag
            };
            revisions.push(Revision {
                name,
                sha,
                release,
                replicas,
            });
        }
        KustomizeRepo { repo, revisions }
    }

    pub fn url(&self) -> String {
        self.repo.url()
    }
}

/// Per-app Kustomize overrides, and what they do to the output.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub name_prefix: String,
    pub name_suffix: String,
    /// The image that replaces [`BASE_IMAGE`].
    pub image: Option<String>,
    /// A common label (also added to selectors, as `kustomize edit add
    /// label` does).
    pub label: Option<(String, String)>,
    /// The Deployment's replica count.
    pub replicas: Option<i64>,
    pub namespace: Option<String>,
}

impl Overrides {
    /// Three override sets that each change different fields.
    pub fn sets() -> Vec<Overrides> {
        vec![
            Overrides {
                name_prefix: "alpha-".into(),
                image: Some("registry.example.com/web:alpha".into()),
                ..Default::default()
            },
            Overrides {
                name_suffix: "-bravo".into(),
                label: Some(("team".into(), "bravo".into())),
                ..Default::default()
            },
            Overrides {
                name_prefix: "charlie-".into(),
                replicas: Some(7),
                namespace: Some("charlie".into()),
                ..Default::default()
            },
        ]
    }

    /// The sets of [`Overrides::sets`] plus one without any override (a
    /// build straight from the snapshot).
    pub fn sets_with_none() -> Vec<Overrides> {
        let mut sets = Self::sets();
        sets.push(Overrides::default());
        sets
    }

    /// The same overrides with another name prefix.
    pub fn with_prefix(&self, prefix: &str) -> Overrides {
        Overrides {
            name_prefix: prefix.to_string(),
            ..self.clone()
        }
    }

    /// Short text for messages.
    pub fn describe(&self) -> String {
        format!(
            "prefix={:?} suffix={:?} image={:?} label={:?} replicas={:?} namespace={:?}",
            self.name_prefix,
            self.name_suffix,
            self.image,
            self.label,
            self.replicas,
            self.namespace
        )
    }

    pub fn to_proto(&self) -> Option<ApplicationSourceKustomize> {
        let kustomize = ApplicationSourceKustomize {
            name_prefix: self.name_prefix.clone(),
            name_suffix: self.name_suffix.clone(),
            images: self
                .image
                .iter()
                .map(|image| format!("example.com/web={image}"))
                .collect(),
            common_labels: self.label.iter().cloned().collect::<HashMap<_, _>>(),
            replicas: self
                .replicas
                .iter()
                .map(|count| KustomizeReplica {
                    name: "web".into(),
                    count: Some(IntOrString {
                        r#type: 0,
                        int_val: *count as i32,
                        str_val: String::new(),
                    }),
                })
                .collect(),
            namespace: self.namespace.clone().unwrap_or_default(),
            ..Default::default()
        };
        (kustomize != ApplicationSourceKustomize::default()).then_some(kustomize)
    }

    fn name(&self, base: &str) -> String {
        format!("{}{base}{}", self.name_prefix, self.name_suffix)
    }
}

/// A GenerateManifest request for [`APP_PATH`] at `revision` with
/// `overrides`, for the app `app_name` (annotation tracking).
pub fn request(
    url: &str,
    revision: &str,
    overrides: &Overrides,
    app_name: &str,
) -> ManifestRequest {
    ManifestRequest {
        repo: Some(Repository {
            repo: url.to_string(),
            r#type: "git".to_string(),
            ..Default::default()
        }),
        revision: revision.to_string(),
        app_label_key: "app.kubernetes.io/instance".to_string(),
        app_name: app_name.to_string(),
        namespace: "default".to_string(),
        application_source: Some(ApplicationSource {
            repo_url: url.to_string(),
            path: APP_PATH.to_string(),
            target_revision: revision.to_string(),
            kustomize: overrides.to_proto(),
            ..Default::default()
        }),
        tracking_method: "annotation".to_string(),
        ..Default::default()
    }
}

fn parse(manifests: &[String]) -> Vec<Value> {
    manifests
        .iter()
        .map(|m| {
            serde_json::from_str(m).unwrap_or_else(|e| panic!("manifest is not JSON ({e}): {m}"))
        })
        .collect()
}

fn find<'a>(manifests: &'a [Value], kind: &str, name: &str, context: &str) -> &'a Value {
    manifests
        .iter()
        .find(|m| m["kind"] == kind && m["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{context}: no {kind} {name} in {manifests:#?}"))
}

/// Asserts that `response` is exactly what [`request`] with `revision`,
/// `overrides` and `app_name` must produce; panics with the request in the
/// message otherwise.
pub fn check(
    response: &ManifestResponse,
    revision: &Revision,
    overrides: &Overrides,
    app_name: &str,
) {
    let context = format!(
        "revision {} ({}), app {app_name}, {}",
        revision.name,
        revision.release,
        overrides.describe()
    );
    assert_eq!(response.source_type, "Kustomize", "{context}");
    assert_eq!(response.revision, revision.sha, "{context}");
    let manifests = parse(&response.manifests);
    assert_eq!(manifests.len(), 3, "{context}: {manifests:#?}");

    let namespace = overrides.namespace.as_deref();
    let tracking_namespace = namespace.unwrap_or("default");
    let mut labels = serde_json::Map::new();
    labels.insert("env".into(), "prod".into());
    if let Some((key, value)) = &overrides.label {
        labels.insert(key.clone(), value.clone().into());
    }
    let mut selector = serde_json::Map::new();
    selector.insert("app".into(), "web".into());
    if let Some((key, value)) = &overrides.label {
        selector.insert(key.clone(), value.clone().into());
    }
    // The overlay's `labels` touch neither selectors nor templates; the
    // override label (`commonLabels`) touches both.
    let template_labels = selector.clone();

    let config_name = overrides.name("web-config");
    let config = find(&manifests, "ConfigMap", &config_name, &context);
    assert_eq!(
        config["data"],
        serde_json::json!({"release": revision.release}),
        "{context}"
    );

    let web = overrides.name("web");
    for (kind, group, object) in [
        ("ConfigMap", "", config),
        (
            "Deployment",
            "apps",
            find(&manifests, "Deployment", &web, &context),
        ),
        ("Service", "", find(&manifests, "Service", &web, &context)),
    ] {
        let metadata = &object["metadata"];
        let name = metadata["name"].as_str().unwrap();
        match namespace {
            Some(namespace) => assert_eq!(metadata["namespace"], namespace, "{context}: {kind}"),
            None => assert!(metadata["namespace"].is_null(), "{context}: {kind}"),
        }
        assert_eq!(
            metadata["labels"],
            Value::Object(labels.clone()),
            "{context}: {kind}"
        );
        assert_eq!(
            metadata["annotations"]["argocd.argoproj.io/tracking-id"],
            format!("{app_name}:{group}/{kind}:{tracking_namespace}/{name}"),
            "{context}: {kind}"
        );
    }

    let deployment = find(&manifests, "Deployment", &web, &context);
    assert_eq!(
        deployment["metadata"]["annotations"]["overlay"], "prod",
        "{context}"
    );
    assert_eq!(
        deployment["spec"]["replicas"],
        overrides.replicas.unwrap_or(revision.replicas),
        "{context}"
    );
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"],
        Value::Object(selector.clone()),
        "{context}"
    );
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"],
        Value::Object(template_labels),
        "{context}"
    );
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        overrides.image.as_deref().unwrap_or(BASE_IMAGE),
        "{context}"
    );
    // The reference to the ConfigMap follows its new name.
    assert_eq!(
        container["envFrom"][0]["configMapRef"]["name"], config_name,
        "{context}"
    );

    let service = find(&manifests, "Service", &web, &context);
    assert_eq!(
        service["spec"]["selector"],
        Value::Object(selector),
        "{context}"
    );
}
