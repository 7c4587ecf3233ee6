//! The RPCs besides GenerateManifest: ListRefs, ResolveRevision,
//! TestRepository, the health service, and UNIMPLEMENTED for the rest.

mod common;

use common::fixtures::ExampleRepo;
use common::*;
use manifold::grpc::proto::repository::*;
use manifold::grpc::proto::v1alpha1::{Application, ApplicationSource, ApplicationSpec};
use tonic::Code;

#[tokio::test]
async fn list_refs_returns_sorted_branches_and_tags() {
    let example = ExampleRepo::build();
    let server = start_plaintext().await;
    let mut client = client(&server).await;
    let refs = client
        .list_refs(ListRefsRequest {
            repo: repo(&example.repo.url()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refs.branches, ["dev", "main"]);
    assert_eq!(refs.tags, ["light", "v1.0.0"]);
}

fn app_with_sources(sources: Vec<ApplicationSource>) -> Application {
    Application {
        spec: Some(ApplicationSpec {
            sources,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn resolve_revision_picks_the_indexed_source() {
    let example = ExampleRepo::build();
    let url = example.repo.url();
    let server = start_plaintext().await;
    let mut client = client(&server).await;
    let sources = vec![
        ApplicationSource {
            repo_url: url.clone(),
            path: "guestbook".into(),
            ..Default::default()
        },
        ApplicationSource {
            repo_url: url.clone(),
            path: "multi".into(),
            ..Default::default()
        },
    ];
    for (revision, expected) in [
        ("v1.0.0", &example.first),
        ("HEAD", &example.second),
        (&example.dev[..8], &example.dev),
    ] {
        let response = client
            .resolve_revision(ResolveRevisionRequest {
                repo: repo(&url),
                app: Some(app_with_sources(sources.clone())),
                ambiguous_revision: revision.to_string(),
                source_index: 1,
                no_revision_cache: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(&response.revision, expected);
        assert_eq!(
            response.ambiguous_revision,
            format!("{revision} ({expected})")
        );
    }
    let status = client
        .resolve_revision(ResolveRevisionRequest {
            repo: repo(&url),
            app: Some(app_with_sources(sources)),
            ambiguous_revision: "nope".into(),
            source_index: 0,
            no_revision_cache: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("'nope'"));
}

#[tokio::test]
async fn test_repository_checks_reachability() {
    let example = ExampleRepo::build();
    let server = start_plaintext().await;
    let mut client = client(&server).await;
    let ok = client
        .test_repository(TestRepositoryRequest {
            repo: repo(&example.repo.url()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !ok.verified_repository,
        "Argo CD always answers false; the status says it worked"
    );

    let status = client
        .test_repository(TestRepositoryRequest {
            repo: repo("https://user:pa55word@127.0.0.1:1/missing.git"),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert!(
        status
            .message()
            .contains("https://***@127.0.0.1:1/missing.git"),
        "{}",
        status.message()
    );
    assert!(!status.message().contains("pa55word"));

    let mut weird = repo(&example.repo.url()).unwrap();
    weird.r#type = "svn".into();
    let status = client
        .test_repository(TestRepositoryRequest { repo: Some(weird) })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("\"svn\""));
}

#[tokio::test]
async fn health_service_reports_serving() {
    let server = start_plaintext().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let response = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let mut version =
        manifold::grpc::proto::version::version_service_client::VersionServiceClient::new(channel);
    let v = version.version(()).await.unwrap().into_inner();
    assert!(v.version.starts_with("manifold-v"));
}

/// The git queries (UI and ApplicationSet generators) answer from the
/// commit's facts.
#[tokio::test]
async fn git_queries_answer_from_the_commit() {
    let repo = common::fixtures::GitRepo::new();
    repo.write(
        "apps/web/Chart.yaml",
        "apiVersion: v2\nname: web\nversion: 1.0.0\n",
    )
    .write("apps/web/values.yaml", "x: 1\n")
    .write("apps/api/kustomization.yaml", "resources: []\n")
    .write(
        "apps/both/Chart.yaml",
        "apiVersion: v2\nname: both\nversion: 1.0.0\n",
    )
    .write("apps/both/kustomization.yaml", "resources: []\n")
    .write("clusters/dev/config.json", "{\"env\":\"dev\"}")
    .write("clusters/prod/config.json", "{\"env\":\"prod\"}")
    .write(".github/workflows/ci.yaml", "on: push\n")
    .write("README.md", "hi\n");
    let first = repo.commit("Add apps\n\nA body line.");
    repo.tag("v1.0.0").tag_annotated("release-1");
    let url = repo.url();
    let server = start_plaintext().await;
    let mut client = client(&server).await;

    let apps = client
        .list_apps(ListAppsRequest {
            repo: repo_of(&url),
            revision: "main".into(),
            enabled_source_types: Default::default(),
        })
        .await
        .unwrap()
        .into_inner()
        .apps;
    let expected: std::collections::HashMap<String, String> = [
        ("apps/web", "Helm"),
        ("apps/api", "Kustomize"),
        ("apps/both", "Kustomize"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(apps, expected);
    let without_helm = client
        .list_apps(ListAppsRequest {
            repo: repo_of(&url),
            revision: "main".into(),
            enabled_source_types: [("Helm".to_string(), false)].into(),
        })
        .await
        .unwrap()
        .into_inner()
        .apps;
    assert!(!without_helm.values().any(|kind| kind == "Helm"));
    // Filtered per file: with Kustomize off, a directory with both files
    // is a Helm app (as Argo CD's walk reports it).
    let without_kustomize = client
        .list_apps(ListAppsRequest {
            repo: repo_of(&url),
            revision: "main".into(),
            enabled_source_types: [("Kustomize".to_string(), false)].into(),
        })
        .await
        .unwrap()
        .into_inner()
        .apps;
    assert_eq!(without_kustomize["apps/both"], "Helm");
    assert!(!without_kustomize.contains_key("apps/api"));

    let metadata = client
        .get_revision_metadata(RepoServerRevisionMetadataRequest {
            repo: repo_of(&url),
            revision: first[..10].to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(metadata.author, "Fixture Author <author@example.com>");
    assert_eq!(metadata.message, "Add apps\n\nA body line.");
    assert_eq!(metadata.tags, ["release-1", "v1.0.0"]);
    assert!(metadata.date.unwrap().seconds > 1_600_000_000);
    let status = client
        .get_revision_metadata(RepoServerRevisionMetadataRequest {
            repo: repo_of(&url),
            revision: "main".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("must be resolved"));

    let files = |pattern: &str, new_globbing: bool| GitFilesRequest {
        repo: repo_of(&url),
        revision: "main".into(),
        path: pattern.to_string(),
        new_git_file_globbing_enabled: new_globbing,
        ..Default::default()
    };
    let found = client
        .get_git_files(files("clusters/*/config.json", false))
        .await
        .unwrap()
        .into_inner()
        .map;
    assert_eq!(found.len(), 2);
    assert_eq!(found["clusters/prod/config.json"], b"{\"env\":\"prod\"}");
    let found = client
        .get_git_files(files("**/values.yaml", true))
        .await
        .unwrap()
        .into_inner()
        .map;
    assert_eq!(found.keys().collect::<Vec<_>>(), ["apps/web/values.yaml"]);

    let directories = client
        .get_git_directories(GitDirectoriesRequest {
            repo: repo_of(&url),
            revision: "main".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .paths;
    let mut sorted = directories.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "apps",
            "apps/api",
            "apps/both",
            "apps/web",
            "clusters",
            "clusters/dev",
            "clusters/prod"
        ]
    );

    // Signature checks are not built: refused, not answered unverified.
    let status = client
        .get_git_directories(GitDirectoriesRequest {
            repo: repo_of(&url),
            revision: "main".into(),
            verify_commit: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
}

fn repo_of(url: &str) -> Option<manifold::grpc::proto::v1alpha1::Repository> {
    repo(url)
}

#[tokio::test]
async fn list_plugins_names_the_sidecar_sockets() {
    let sockets = tempfile::tempdir().unwrap();
    let _a = std::os::unix::net::UnixListener::bind(sockets.path().join("envsubst.sock")).unwrap();
    let _b =
        std::os::unix::net::UnixListener::bind(sockets.path().join("helm-kustomize-v1.0.sock"))
            .unwrap();
    std::fs::write(sockets.path().join("not-a-socket.sock"), "").unwrap();
    let mut config = test_config(manifold::server::Tls::Disabled);
    config.render.plugin_sockets = sockets.path().to_path_buf();
    let server = manifold::server::start(config).await.unwrap();
    let mut client = client(&server).await;
    let names: Vec<String> = client
        .list_plugins(())
        .await
        .unwrap()
        .into_inner()
        .items
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["envsubst", "helm-kustomize-v1.0"]);
}

#[tokio::test]
async fn app_details_describe_helm_kustomize_and_directory_apps() {
    use manifold::grpc::proto::v1alpha1::{ApplicationSourceHelm, ApplicationSourceKustomize};
    let repo = common::fixtures::sources_repo();
    repo.write(
        "plain/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\n",
    );
    repo.commit("plain app");
    let url = repo.url();
    let server = start_plaintext().await;
    let mut client = client(&server).await;
    let query = |source: ApplicationSource| RepoServerAppDetailsQuery {
        repo: repo_of(&url),
        source: Some(ApplicationSource {
            repo_url: url.clone(),
            target_revision: "HEAD".into(),
            ..source
        }),
        app_name: "demo".into(),
        ..Default::default()
    };

    let helm = client
        .get_app_details(query(ApplicationSource {
            path: "helm/guestbook".into(),
            helm: Some(ApplicationSourceHelm {
                value_files: vec!["values-prod.yaml".into()],
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(helm.r#type, "Helm");
    let spec = helm.helm.unwrap();
    assert_eq!(spec.value_files, ["values-prod.yaml", "values.yaml"]);
    assert!(spec.values.contains("replicaCount: 1"));
    let parameters: std::collections::HashMap<String, String> = spec
        .parameters
        .into_iter()
        .map(|p| (p.name, p.value))
        .collect();
    assert_eq!(
        parameters["replicaCount"], "3",
        "the selected value file wins"
    );
    assert_eq!(parameters["image.tag"], "0.1");
    assert_eq!(
        parameters["image.repository"],
        "gcr.io/heptio-images/ks-guestbook-demo"
    );
    assert_eq!(parameters["service.port"], "80");

    let kustomize = client
        .get_app_details(query(ApplicationSource {
            path: "kustomize/overlay".into(),
            kustomize: Some(ApplicationSourceKustomize {
                images: vec!["gcr.io/heptio-images/ks-guestbook-demo:0.2".into()],
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kustomize.r#type, "Kustomize");
    assert_eq!(
        kustomize.kustomize.unwrap().images,
        ["gcr.io/heptio-images/ks-guestbook-demo:0.2"],
        "the images after the app's overrides"
    );

    let directory = client
        .get_app_details(query(ApplicationSource {
            path: "plain".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(directory.r#type, "Directory");
    assert!(directory.directory.is_some());

    let status = client
        .get_app_details(query(ApplicationSource {
            path: "no/such/app".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}
