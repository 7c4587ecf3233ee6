//! Helm repositories as sources: a chart repository on 127.0.0.1 (charts
//! packaged by the real helm, index by `helm repo index`), with and without
//! basic auth, serving `GenerateManifest` (exact versions and semver
//! constraints), `GetHelmCharts` and `TestRepository`.

mod common;

use common::fixtures::HelmRepoServer;
use common::*;
use manifold::grpc::proto::repository::{
    HelmChartsRequest, ManifestRequest, ResolveRevisionRequest, TestRepositoryRequest,
};
use manifold::grpc::proto::v1alpha1::{
    Application, ApplicationSource, ApplicationSpec, Repository,
};
use tonic::Code;

const CHARTS: [(&str, &str, &str); 4] = [
    ("web", "1.2.0", "one-two"),
    ("web", "1.10.0", "one-ten"),
    ("web", "2.0.0", "two"),
    ("db", "0.1.0", "db"),
];

fn helm_repo(url: &str, username: &str, password: &str) -> Repository {
    Repository {
        repo: url.to_string(),
        r#type: "helm".to_string(),
        name: "charts".to_string(),
        username: username.to_string(),
        password: password.to_string(),
        ..Default::default()
    }
}

fn chart_request(repo: Repository, chart: &str, revision: &str) -> ManifestRequest {
    let url = repo.repo.clone();
    let mut request = manifest_request(&url, "", revision);
    request.repo = Some(repo);
    request.app_name = "release".to_string();
    request.application_source = Some(ApplicationSource {
        repo_url: url,
        chart: chart.to_string(),
        target_revision: revision.to_string(),
        ..Default::default()
    });
    request
}

#[tokio::test]
async fn charts_render_from_a_helm_repository() {
    let charts = HelmRepoServer::start(&CHARTS, None);
    let server = start_plaintext().await;
    let mut client = client(&server).await;
    let repo = || helm_repo(&charts.url, "", "");

    for (revision, version, value) in [
        ("1.2.0", "1.2.0", "one-two"),
        ("1.*", "1.10.0", "one-ten"),
        (">=1.0.0 <2.0.0", "1.10.0", "one-ten"),
        ("*", "2.0.0", "two"),
    ] {
        let response = client
            .generate_manifest(chart_request(repo(), "web", revision))
            .await
            .unwrap_or_else(|status| panic!("{revision}: {status:?}"))
            .into_inner();
        assert_eq!(response.revision, version, "{revision}");
        assert_eq!(response.source_type, "Helm");
        let manifests = parse_manifests(&response.manifests);
        let config_map = find(&manifests, "ConfigMap", "release-web");
        assert_eq!(config_map["data"]["value"], value, "{revision}");
        assert_eq!(config_map["data"]["version"], version, "{revision}");
    }
    // The archive of a version is downloaded once.
    let downloads = |version: &str| {
        charts
            .requests()
            .iter()
            .filter(|path| path.ends_with(&format!("web-{version}.tgz")))
            .count()
    };
    assert_eq!(downloads("1.10.0"), 1);
    let mut again = chart_request(repo(), "web", "1.10.0");
    again.no_cache = true;
    client.generate_manifest(again).await.unwrap();
    assert_eq!(downloads("1.10.0"), 1, "the archive is cached on disk");

    // Unknown charts and versions.
    let status = client
        .generate_manifest(chart_request(repo(), "nope", "1.x"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(
        status.message().contains("chart 'nope' not found"),
        "{}",
        status.message()
    );
    let status = client
        .generate_manifest(chart_request(repo(), "web", "9.x"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    let listed = client
        .get_helm_charts(HelmChartsRequest { repo: Some(repo()) })
        .await
        .unwrap()
        .into_inner()
        .items;
    let listed: Vec<(String, Vec<String>)> = listed
        .into_iter()
        .map(|chart| {
            let mut versions = chart.versions;
            versions.sort();
            (chart.name, versions)
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("db".to_string(), vec!["0.1.0".to_string()]),
            (
                "web".to_string(),
                vec![
                    "1.10.0".to_string(),
                    "1.2.0".to_string(),
                    "2.0.0".to_string()
                ]
            ),
        ]
    );
    client
        .test_repository(TestRepositoryRequest { repo: Some(repo()) })
        .await
        .unwrap();

    // ResolveRevision reads the index for a constraint, and takes an exact
    // version as it is (as Argo CD does, without asking).
    let resolve = |revision: &str| ResolveRevisionRequest {
        repo: Some(repo()),
        app: Some(Application {
            spec: Some(ApplicationSpec {
                source: Some(ApplicationSource {
                    repo_url: repo().repo,
                    chart: "web".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ambiguous_revision: revision.to_string(),
        ..Default::default()
    };
    for (revision, expected) in [("1.x", "1.10.0"), ("<1.5", "1.2.0"), ("7.7.7", "7.7.7")] {
        let resolved = client
            .resolve_revision(resolve(revision))
            .await
            .unwrap_or_else(|s| panic!("{revision}: {s:?}"))
            .into_inner();
        assert_eq!(resolved.revision, expected);
        assert_eq!(
            resolved.ambiguous_revision,
            format!("{revision} ({expected})")
        );
    }
    let status = client.resolve_revision(resolve("9.x")).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // The UI's view of a chart source: its values and parameters.
    let details = client
        .get_app_details(
            manifold::grpc::proto::repository::RepoServerAppDetailsQuery {
                repo: Some(repo()),
                source: Some(ApplicationSource {
                    repo_url: charts.url.clone(),
                    chart: "web".into(),
                    target_revision: "1.x".into(),
                    ..Default::default()
                }),
                app_name: "release".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(details.r#type, "Helm");
    let helm = details.helm.unwrap();
    assert_eq!(helm.value_files, ["values.yaml"]);
    assert_eq!(helm.values, "value: one-ten\n");
    assert_eq!(helm.parameters.len(), 1);
    assert_eq!(
        (
            helm.parameters[0].name.as_str(),
            helm.parameters[0].value.as_str()
        ),
        ("value", "one-ten")
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_helm_repository_with_basic_auth() {
    let password = "chart-Pa55";
    let charts = HelmRepoServer::start(&CHARTS[..1], Some(&format!("reader:{password}")));
    let server = start_plaintext().await;
    let mut client = client(&server).await;

    let response = client
        .generate_manifest(chart_request(
            helm_repo(&charts.url, "reader", password),
            "web",
            "1.2.0",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&response.manifests), ["release-web"]);

    for repo in [
        helm_repo(&charts.url, "reader", "wrong"),
        helm_repo(&charts.url, "", ""),
    ] {
        let mut request = chart_request(repo.clone(), "web", "1.x");
        request.no_cache = true;
        let status = client.generate_manifest(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(!status.message().contains(password) && !status.message().contains("wrong"));
        let status = client
            .test_repository(TestRepositoryRequest { repo: Some(repo) })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let listed = client
        .get_helm_charts(HelmChartsRequest {
            repo: Some(helm_repo(&charts.url, "reader", password)),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(listed.len(), 1);
    server.shutdown().await.unwrap();
}

/// A multi-source application: a chart from the Helm repository with a
/// value file from a git `ref:` source (`$values/...`), as Argo CD users
/// write them.
#[tokio::test]
async fn value_files_from_a_ref_source() {
    use manifold::grpc::proto::v1alpha1::{ApplicationSourceHelm, RefTarget};
    let charts = HelmRepoServer::start(&CHARTS, None);
    let values = common::fixtures::GitRepo::new();
    values.write("envs/prod/values.yaml", "value: from-the-values-repo\n");
    values.commit("prod values");
    let server = start_plaintext().await;
    let mut client = client(&server).await;

    let git_repo = |url: &str| Repository {
        repo: url.to_string(),
        r#type: "git".to_string(),
        ..Default::default()
    };
    let request = |value_file: &str, refs: &[(&str, &str)]| {
        let mut request = chart_request(helm_repo(&charts.url, "", ""), "web", "1.2.0");
        request.has_multiple_sources = true;
        request.no_revision_cache = true;
        request.application_source.as_mut().unwrap().helm = Some(ApplicationSourceHelm {
            value_files: vec![value_file.to_string()],
            ..Default::default()
        });
        request.ref_sources = refs
            .iter()
            .map(|(name, revision)| {
                (
                    name.to_string(),
                    RefTarget {
                        repo: Some(git_repo(&values.url())),
                        target_revision: revision.to_string(),
                        chart: String::new(),
                    },
                )
            })
            .collect();
        request
    };
    let value = |response: manifold::grpc::proto::repository::ManifestResponse| {
        let manifests = parse_manifests(&response.manifests);
        find(&manifests, "ConfigMap", "release-web")["data"]["value"]
            .as_str()
            .unwrap()
            .to_string()
    };

    let rendered = client
        .generate_manifest(request(
            "$values/envs/prod/values.yaml",
            &[("$values", "main")],
        ))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"))
        .into_inner();
    assert_eq!(value(rendered), "from-the-values-repo");

    // A new commit of the values repository is a new render.
    values.write("envs/prod/values.yaml", "value: changed\n");
    values.commit("change prod values");
    let rendered = client
        .generate_manifest(request(
            "$values/envs/prod/values.yaml",
            &[("$values", "main")],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(value(rendered), "changed");

    // A name no source has, none at all, a path leaving the ref's tree.
    let status = client
        .generate_manifest(request("$other/values.yaml", &[("$values", "main")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("$other") && status.message().contains("$values"));
    let status = client
        .generate_manifest(request("$values/envs/prod/values.yaml", &[]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("no source has a 'ref' field"),
        "{status:?}"
    );
    let status = client
        .generate_manifest(request("$values/../../etc/passwd", &[("$values", "main")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("outside repository root"),
        "{status:?}"
    );
}
