//! Helm charts in git, rendered with the real helm v3 and v4 through
//! GenerateManifest.

mod common;

use common::fixtures::{sources_repo, GitRepo};
use common::*;
use manifold::grpc::proto::k8s::RawExtension;
use manifold::grpc::proto::v1alpha1::{
    ApplicationSource, ApplicationSourceHelm, HelmFileParameter, HelmOptions, HelmParameter,
};
use tonic::Code;

fn helm_source(helm: ApplicationSourceHelm) -> ApplicationSource {
    ApplicationSource {
        helm: Some(helm),
        ..Default::default()
    }
}

#[tokio::test]
async fn detects_a_chart_and_renders_it_with_argo_cd_defaults() {
    let repo = sources_repo();
    for helm in HELM_BINARIES {
        let server = start_with_helm(helm).await;
        let mut client = client(&server).await;
        let mut request = source_request(&repo.url(), "helm/guestbook", Default::default());
        // An app in another namespace is named `<namespace>_<name>`; the
        // release takes the name part.
        request.app_name = "argocd_guestbook".to_string();
        let response = client
            .generate_manifest(request)
            .await
            .unwrap_or_else(|e| panic!("{helm}: {e}"))
            .into_inner();
        assert_eq!(response.source_type, "Helm", "{helm}");
        assert_eq!(
            response.commands,
            vec!["helm template . --name-template guestbook --namespace default --include-crds"],
            "{helm}"
        );
        let manifests = parse_manifests(&response.manifests);
        let deployment = find(&manifests, "Deployment", "guestbook-ui");
        assert_eq!(deployment["spec"]["replicas"], 1);
        assert_eq!(deployment["metadata"]["namespace"], "default");
        assert_eq!(
            deployment["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"],
            "argocd_guestbook:apps/Deployment:default/guestbook-ui"
        );
        // CRDs are included, and not tracked; test hooks are rendered.
        let crd = find(
            &manifests,
            "CustomResourceDefinition",
            "widgets.example.com",
        );
        assert!(crd["metadata"]["annotations"].is_null());
        find(&manifests, "Pod", "guestbook-test");
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn passes_every_helm_option() {
    let repo = sources_repo();
    for helm in HELM_BINARIES {
        let server = start_with_helm(helm).await;
        let mut client = client(&server).await;
        let mut request = source_request(
            &repo.url(),
            "helm/guestbook",
            helm_source(ApplicationSourceHelm {
                release_name: "custom".into(),
                namespace: "team-a".into(),
                value_files: vec![
                    "envs/*.yaml".into(),
                    "/helm/guestbook/values-prod.yaml".into(),
                ],
                values: b"image:\n  tag: from-values\n".to_vec(),
                parameters: vec![
                    HelmParameter {
                        name: "service.port".into(),
                        value: "8080".into(),
                        force_string: false,
                    },
                    HelmParameter {
                        name: "image.repository".into(),
                        value: "registry.example.com/$ARGOCD_APP_NAME".into(),
                        force_string: true,
                    },
                ],
                file_parameters: vec![HelmFileParameter {
                    name: "motd".into(),
                    path: "motd.txt".into(),
                }],
                kube_version: "v1.29.3+k3s1".into(),
                api_versions: vec!["test.example.com/v1".into()],
                skip_crds: true,
                skip_tests: true,
                ..Default::default()
            }),
        );
        request.kube_version = "1.20.0".into();
        let response = client
            .generate_manifest(request)
            .await
            .unwrap_or_else(|e| panic!("{helm}: {e}"))
            .into_inner();
        assert_eq!(
            response.commands,
            vec![
                "helm template . --name-template custom --namespace team-a --kube-version 1.29.3 \
                 --set service.port=8080 --set-string image.repository=registry.example.com/guestbook \
                 --set-file motd=./helm/guestbook/motd.txt \
                 --values ./helm/guestbook/envs/a.yaml --values ./helm/guestbook/envs/b.yaml \
                 --values ./helm/guestbook/values-prod.yaml \
                 --values <temp file with values from source.helm.values/valuesObject> \
                 --api-versions test.example.com/v1 --skip-tests"
            ],
            "{helm}"
        );
        let manifests = parse_manifests(&response.manifests);
        assert_eq!(manifests.len(), 3, "{helm}: no CRD, no test pod");
        let deployment = find(&manifests, "Deployment", "custom-ui");
        assert_eq!(deployment["metadata"]["namespace"], "team-a");
        assert_eq!(deployment["spec"]["replicas"], 3, "values-prod.yaml");
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0]["image"],
            "registry.example.com/guestbook:from-values"
        );
        assert_eq!(deployment["metadata"]["labels"]["kube-version"], "v1.29.3");
        assert_eq!(deployment["metadata"]["labels"]["has-test-api"], "true");
        let service = find(&manifests, "Service", "custom-ui");
        assert_eq!(service["spec"]["ports"][0]["port"], 8080);
        let config = find(&manifests, "ConfigMap", "custom-config");
        assert_eq!(config["data"]["motd"], "hello from a file\n");
        assert_eq!(config["data"]["a"], "from-a");
        assert_eq!(config["data"]["b"], "from-b");

        // valuesObject wins over values; the request's kube version is
        // used when the source has none.
        let mut request = source_request(
            &repo.url(),
            "helm/guestbook",
            helm_source(ApplicationSourceHelm {
                values: b"replicaCount: 7\n".to_vec(),
                values_object: Some(RawExtension {
                    raw: br#"{"replicaCount": 5}"#.to_vec(),
                }),
                ..Default::default()
            }),
        );
        request.kube_version = "1.30.1".into();
        let response = client
            .generate_manifest(request)
            .await
            .unwrap_or_else(|e| panic!("{helm}: {e}"))
            .into_inner();
        let manifests = parse_manifests(&response.manifests);
        let deployment = find(&manifests, "Deployment", "guestbook-ui");
        assert_eq!(deployment["spec"]["replicas"], 5);
        assert_eq!(deployment["metadata"]["labels"]["kube-version"], "v1.30.1");
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn schema_validation_can_be_skipped() {
    let repo = sources_repo();
    for helm in HELM_BINARIES {
        let server = start_with_helm(helm).await;
        let mut client = client(&server).await;
        let invalid = |skip| {
            source_request(
                &repo.url(),
                "helm/guestbook",
                helm_source(ApplicationSourceHelm {
                    values: b"replicaCount: -1\n".to_vec(),
                    skip_schema_validation: skip,
                    ..Default::default()
                }),
            )
        };
        let status = client.generate_manifest(invalid(false)).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{helm}");
        assert!(
            status
                .message()
                .contains("failed running helm: `helm template . --name-template guestbook"),
            "{helm}: {}",
            status.message()
        );
        assert!(
            status.message().contains("replicaCount"),
            "{}",
            status.message()
        );
        assert!(
            !status.message().contains("manifold-"),
            "{}",
            status.message()
        );

        let response = client
            .generate_manifest(invalid(true))
            .await
            .unwrap_or_else(|e| panic!("{helm}: {e}"))
            .into_inner();
        assert!(response.commands[0].ends_with("--include-crds --skip-schema-validation"));
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn refuses_value_files_that_are_not_allowed_before_helm_runs() {
    let repo = sources_repo();
    let server = start_plaintext().await;
    let mut client = client(&server).await;
    // (value files, allowed URL schemes, code, message)
    type Case<'a> = (&'a [&'a str], Option<&'a [&'a str]>, Code, &'a str);
    let cases: Vec<Case> = vec![
        (
            &["../../../../etc/passwd"],
            None,
            Code::InvalidArgument,
            "file '../../../../etc/passwd' resolved to outside repository root",
        ),
        (
            &["https://example.com/values.yaml"],
            None,
            Code::InvalidArgument,
            "the URL scheme 'https' is not allowed",
        ),
        (
            &["ftp://example.com/values.yaml"],
            Some(&["https"]),
            Code::InvalidArgument,
            "the URL scheme 'ftp' is not allowed",
        ),
        (
            &["missing/*.yaml"],
            None,
            Code::NotFound,
            "values file glob \"missing/*.yaml\" matched no files",
        ),
        (
            &["missing.yaml"],
            None,
            Code::FailedPrecondition,
            "missing.yaml",
        ),
    ];
    for (files, schemes, code, message) in cases {
        let mut request = source_request(
            &repo.url(),
            "helm/guestbook",
            helm_source(ApplicationSourceHelm {
                value_files: files.iter().map(|f| f.to_string()).collect(),
                ..Default::default()
            }),
        );
        request.helm_options = schemes.map(|s| HelmOptions {
            values_file_schemes: s.iter().map(|s| s.to_string()).collect(),
        });
        let status = client.generate_manifest(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{files:?}: {}", status.message());
        assert!(
            status.message().contains(message),
            "{files:?}: {}",
            status.message()
        );
    }
    // Missing files and empty globs are skipped when asked.
    let request = source_request(
        &repo.url(),
        "helm/guestbook",
        helm_source(ApplicationSourceHelm {
            value_files: vec!["missing.yaml".into(), "missing/*.yaml".into()],
            ignore_missing_value_files: true,
            ..Default::default()
        }),
    );
    let response = client
        .generate_manifest(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.commands,
        vec!["helm template . --name-template guestbook --namespace default --include-crds"]
    );

    // helm follows symlinks wherever it reads: a repository with a link
    // out of it is refused for Helm, as Argo CD refuses it.
    repo.symlink("helm/guestbook/leak.yaml", "/etc/passwd");
    repo.commit("a value file that points outside");
    let mut request = source_request(
        &repo.url(),
        "helm/guestbook",
        helm_source(ApplicationSourceHelm {
            value_files: vec!["leak.yaml".into()],
            ..Default::default()
        }),
    );
    request.no_revision_cache = true;
    let status = client.generate_manifest(request).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "repository contains out-of-bounds symlinks. file: helm/guestbook/leak.yaml"
    );
    server.shutdown().await.unwrap();
}

/// A helm wrapper that logs each invocation's arguments, to count
/// dependency builds.
struct CountingHelm {
    dir: tempfile::TempDir,
}

impl CountingHelm {
    fn new(helm: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("helm");
        let log = dir.path().join("log");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n[ \"$1\" = version ] && exec {helm} \"$@\"\necho \"$*\" >> '{}'\npwd >> '{}'\nexec {helm} \"$@\"\n",
                log.display(),
                dir.path().join("cwd").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        CountingHelm { dir }
    }

    fn program(&self) -> String {
        self.dir.path().join("helm").display().to_string()
    }

    /// The working directory of each run, in order.
    fn cwds(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("cwd"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn count(&self, what: &str) -> usize {
        std::fs::read_to_string(self.dir.path().join("log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(what))
            .count()
    }
}

#[tokio::test]
async fn builds_a_local_dependency_once_for_every_app_and_commit() {
    let repo = sources_repo();
    for helm in HELM_BINARIES {
        let counting = CountingHelm::new(helm);
        let server = start_with_helm(&counting.program()).await;
        let mut client = client(&server).await;
        for (app, revision) in [("first", "HEAD"), ("second", "HEAD"), ("third", "next")] {
            if revision == "next" {
                repo.write("README.md", "an unrelated change\n");
                repo.commit("unrelated");
            }
            let mut request = source_request(&repo.url(), "helm/with-dep", Default::default());
            request.app_name = app.to_string();
            let response = client
                .generate_manifest(request)
                .await
                .unwrap_or_else(|e| panic!("{helm} {app}: {e}"))
                .into_inner();
            assert_eq!(
                response.commands,
                vec![format!(
                    "helm template . --name-template {app} --namespace default --include-crds"
                )]
            );
            let manifests = parse_manifests(&response.manifests);
            let dependency = find(&manifests, "ConfigMap", &format!("{app}-dependency"));
            assert_eq!(dependency["data"]["greeting"], "hi from the parent");
            find(&manifests, "Service", &format!("{app}-parent"));
        }
        assert_eq!(counting.count("dependency build"), 1, "{helm}");
        server.shutdown().await.unwrap();
    }
    // The repository itself never received the built dependencies.
    assert!(!repo.path().join("helm/with-dep/charts").exists());
}

#[tokio::test]
async fn override_files_in_the_app_directory_are_merged() {
    let repo = sources_repo();
    repo.write(
        "helm/guestbook/.argocd-source.yaml",
        "helm:\n  parameters:\n  - name: replicaCount\n    value: \"4\"\n",
    );
    repo.write(
        "helm/guestbook/.argocd-source-special.yaml",
        "helm:\n  releaseName: special-release\n",
    );
    repo.commit("override files");
    let server = start_plaintext().await;
    let mut client = client(&server).await;
    let mut request = source_request(&repo.url(), "helm/guestbook", Default::default());
    request.app_name = "special".into();
    let response = client
        .generate_manifest(request)
        .await
        .unwrap()
        .into_inner();
    let manifests = parse_manifests(&response.manifests);
    let deployment = find(&manifests, "Deployment", "special-release-ui");
    assert_eq!(deployment["spec"]["replicas"], 4);

    // Another app on the same commit sees only the shared file.
    let response = client
        .generate_manifest(source_request(
            &repo.url(),
            "helm/guestbook",
            Default::default(),
        ))
        .await
        .unwrap()
        .into_inner();
    let manifests = parse_manifests(&response.manifests);
    assert_eq!(
        find(&manifests, "Deployment", "guestbook-ui")["spec"]["replicas"],
        4
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_broken_chart_fails_cleanly_and_the_server_keeps_serving() {
    let repo = GitRepo::new();
    repo.write(
        "broken/Chart.yaml",
        "apiVersion: v2\nname: broken\nversion: 0.1.0\n",
    );
    repo.write(
        "broken/templates/bad.yaml",
        "kind: ConfigMap\nmetadata:\n  name: {{ .Values.missing.field }}\n",
    );
    repo.write(
        "bad-version/Chart.yaml",
        "apiVersion: v2\nname: x\nversion: 0.1.0\n",
    );
    repo.commit("broken chart");
    let server = start_plaintext().await;
    let mut client = client(&server).await;
    let status = client
        .generate_manifest(source_request(&repo.url(), "broken", Default::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("exit status 1"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("nil pointer"),
        "{}",
        status.message()
    );

    let status = client
        .generate_manifest(source_request(
            &repo.url(),
            "bad-version",
            helm_source(ApplicationSourceHelm {
                version: "v2".into(),
                ..Default::default()
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "helm version 'v2' is not supported");

    let mut request = source_request(&repo.url(), "bad-version", Default::default());
    request.kube_version = "latest".into();
    let status = client.generate_manifest(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "could not parse kubernetes version latest"
    );

    // Still serving.
    let response = client
        .generate_manifest(source_request(
            &repo.url(),
            "bad-version",
            Default::default(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(response.manifests.is_empty());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn charts_render_in_the_shared_snapshot_unless_dependencies_are_written() {
    let repo = sources_repo();
    for helm in HELM_BINARIES {
        let counting = CountingHelm::new(helm);
        let server = start_with_helm(&counting.program()).await;
        let mut client = client(&server).await;
        for (path, app) in [
            ("helm/guestbook", "one"),
            ("helm/guestbook", "two"),
            ("helm/with-dep", "one"),
            ("helm/with-dep", "two"),
        ] {
            let mut request = source_request(&repo.url(), path, Default::default());
            request.app_name = app.to_string();
            client
                .generate_manifest(request)
                .await
                .unwrap_or_else(|e| panic!("{helm} {path} {app}: {e}"));
        }
        let cwds = counting.cwds();
        // guestbook: `helm template` twice in the one snapshot directory.
        assert_eq!(cwds[0], cwds[1], "{helm}: {cwds:?}");
        assert!(cwds[0].ends_with("/helm/guestbook"), "{helm}: {cwds:?}");
        // with-dep: the first template runs in the snapshot and finds the
        // dependencies missing; the dependency build and every template
        // that needs the built dependencies run in private copies, one per
        // render (the second app reuses the cached build).
        let snapshot_root = cwds[0].trim_end_matches("/helm/guestbook");
        assert_eq!(cwds.len(), 6, "{helm}: {cwds:?}");
        assert!(cwds[2].starts_with(snapshot_root), "{helm}: {cwds:?}");
        assert!(
            cwds[3..].iter().all(|cwd| !cwd.starts_with(snapshot_root)),
            "{helm}: {cwds:?}"
        );
        assert_eq!(cwds[3], cwds[4], "{helm}: {cwds:?}");
        assert_ne!(cwds[4], cwds[5], "{helm}: {cwds:?}");
        assert_eq!(counting.count("dependency build"), 1, "{helm}");
        server.shutdown().await.unwrap();
    }
}
