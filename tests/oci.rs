//! OCI registries: Helm charts pushed with the real `helm push` to a local
//! registry (Debian's docker-registry) render as Helm-over-OCI chart
//! sources and as OCI sources; `ListOCITags` and `GetOCIMetadata` read the
//! registry.

mod common;

use common::fixtures::OciRegistry;
use common::*;
use manifold::grpc::proto::repository::{
    HelmChartsRequest, ListRefsRequest, ManifestRequest, RepoServerRevisionChartDetailsRequest,
    ResolveRevisionRequest,
};
use manifold::grpc::proto::v1alpha1::{
    Application, ApplicationSource, ApplicationSpec, Repository,
};
use tonic::Code;

fn request(repo: Repository, chart: &str, path: &str, revision: &str) -> ManifestRequest {
    let url = repo.repo.clone();
    let mut request = manifest_request(&url, path, revision);
    request.repo = Some(repo);
    request.app_name = "release".to_string();
    request.application_source = Some(ApplicationSource {
        repo_url: url,
        chart: chart.to_string(),
        path: path.to_string(),
        target_revision: revision.to_string(),
        ..Default::default()
    });
    request
}

#[tokio::test]
async fn charts_and_artifacts_from_an_oci_registry() {
    let registry = OciRegistry::start();
    registry.push_chart("web", "1.2.0", "one-two");
    registry.push_chart("web", "1.10.0", "one-ten");
    let server = start_plaintext().await;
    let mut client = client(&server).await;

    // A Helm repository served over OCI (Argo CD's enableOCI).
    let helm_over_oci = Repository {
        repo: format!("{}/charts", registry.address),
        r#type: "helm".into(),
        enable_oci: true,
        insecure_oci_force_http: true,
        ..Default::default()
    };
    for (revision, version, value) in [("1.x", "1.10.0", "one-ten"), ("1.2.0", "1.2.0", "one-two")]
    {
        let response = client
            .generate_manifest(request(helm_over_oci.clone(), "web", "", revision))
            .await
            .unwrap_or_else(|status| panic!("{revision}: {status:?}"))
            .into_inner();
        assert_eq!(response.revision, version);
        let manifests = parse_manifests(&response.manifests);
        assert_eq!(
            find(&manifests, "ConfigMap", "release-web")["data"]["value"],
            value
        );
    }

    // The chart's repository as an OCI source: the artifact is the tree.
    let artifact = Repository {
        repo: format!("oci://{}/charts/web", registry.address),
        r#type: "oci".into(),
        insecure_oci_force_http: true,
        ..Default::default()
    };
    let response = client
        .generate_manifest(request(artifact.clone(), "", "web", "1.2.0"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.source_type, "Helm");
    assert_eq!(names(&response.manifests), ["release-web"]);

    let mut tags = client
        .list_oci_tags(ListRefsRequest {
            repo: Some(artifact.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .tags;
    tags.sort();
    assert_eq!(tags, ["1.10.0", "1.2.0"]);

    let metadata = client
        .get_oci_metadata(RepoServerRevisionChartDetailsRequest {
            repo: Some(artifact.clone()),
            name: String::new(),
            revision: "1.10.0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(metadata.version, "1.10.0");
    assert!(!metadata.created_at.is_empty());

    client
        .test_repository(manifold::grpc::proto::repository::TestRepositoryRequest {
            repo: Some(artifact.clone()),
        })
        .await
        .unwrap();

    // ResolveRevision: a chart version for Helm-over-OCI, the manifest
    // digest for an OCI source.
    let resolve = |repo: Repository, chart: &str, revision: &str| ResolveRevisionRequest {
        repo: Some(repo.clone()),
        app: Some(Application {
            spec: Some(ApplicationSpec {
                source: Some(ApplicationSource {
                    repo_url: repo.repo.clone(),
                    chart: chart.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ambiguous_revision: revision.to_string(),
        ..Default::default()
    };
    let resolved = client
        .resolve_revision(resolve(helm_over_oci.clone(), "web", "~1.2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resolved.revision, "1.2.0");
    assert_eq!(resolved.ambiguous_revision, "~1.2 (1.2.0)");
    let by_tag = client
        .resolve_revision(resolve(artifact.clone(), "", "1.10.0"))
        .await
        .unwrap()
        .into_inner()
        .revision;
    let by_constraint = client
        .resolve_revision(resolve(artifact.clone(), "", ">=1.3"))
        .await
        .unwrap()
        .into_inner()
        .revision;
    assert!(
        by_tag.starts_with("sha256:") && by_tag.len() == 71,
        "{by_tag}"
    );
    assert_eq!(by_tag, by_constraint);

    // Chart details come from the chart in the registry.
    let details = client
        .get_revision_chart_details(RepoServerRevisionChartDetailsRequest {
            repo: Some(helm_over_oci.clone()),
            name: "web".into(),
            revision: "1.x".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(details.description.contains("web"), "{details:?}");
    // A registry has no index to list.
    let status = client
        .get_helm_charts(HelmChartsRequest {
            repo: Some(helm_over_oci.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // A version the registry does not have.
    let status = client
        .generate_manifest(request(helm_over_oci.clone(), "web", "", "3.x"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = client
        .generate_manifest(request(helm_over_oci, "nope", "", "1.0.0"))
        .await
        .unwrap_err();
    assert_ne!(status.code(), Code::Ok);

    // Argo CD's OCI families count what was done.
    let addr = server.http_addr();
    let text = tokio::task::spawn_blocking(move || common::process::http_get(addr, "/metrics"))
        .await
        .unwrap();
    for request_type in [
        "extract",
        "resolve-revision",
        "digest-metadata",
        "get-tags",
        "test-repo",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("argocd_oci_request_total")
                    && l.contains(&format!("request_type=\"{request_type}\""))),
            "no {request_type} in\n{text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("argocd_oci_extract_fail_total")),
        "{text}"
    );
    server.shutdown().await.unwrap();
}
