//! Kustomize apps rendered with the real kustomize (kubectl's) through
//! GenerateManifest.

mod common;

use std::collections::HashMap;

use common::fixtures::sources_repo;
use common::*;
use manifold::grpc::proto::k8s::IntOrString;
use manifold::grpc::proto::v1alpha1::{
    ApplicationSource, ApplicationSourceKustomize, KustomizeGvk, KustomizeOptions, KustomizePatch,
    KustomizeReplica, KustomizeResId, KustomizeSelector, KustomizeVersion,
};
use tonic::Code;

fn kustomize_source(kustomize: ApplicationSourceKustomize) -> ApplicationSource {
    ApplicationSource {
        kustomize: Some(kustomize),
        ..Default::default()
    }
}

fn all_overrides(prefix: &str) -> ApplicationSourceKustomize {
    ApplicationSourceKustomize {
        name_prefix: format!("{prefix}-"),
        name_suffix: "-v1".into(),
        images: vec!["gcr.io/heptio-images/ks-guestbook-demo=registry.example.com/demo:$ARGOCD_APP_REVISION_SHORT".into()],
        common_labels: HashMap::from([("team".to_string(), "$ARGOCD_APP_NAME".to_string())]),
        common_annotations: HashMap::from([(
            "owner".to_string(),
            "app-$ARGOCD_APP_NAME".to_string(),
        )]),
        common_annotations_envsubst: true,
        namespace: format!("{prefix}-ns"),
        replicas: vec![KustomizeReplica {
            name: "guestbook-ui".into(),
            count: Some(IntOrString {
                r#type: 0,
                int_val: 5,
                str_val: String::new(),
            }),
        }],
        patches: vec![KustomizePatch {
            patch: "- op: add\n  path: /spec/sessionAffinity\n  value: ClientIP\n".into(),
            target: Some(KustomizeSelector {
                res_id: Some(KustomizeResId {
                    gvk: Some(KustomizeGvk {
                        kind: "Service".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }],
        components: vec!["../components/extra".into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn renders_an_overlay_of_a_base_with_a_patch() {
    let repo = sources_repo();
    let server = start_plaintext().await;
    let mut client = client(&server).await;
    let response = client
        .generate_manifest(source_request(
            &repo.url(),
            "kustomize/overlay",
            Default::default(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.source_type, "Kustomize");
    assert_eq!(
        response.commands,
        vec!["kustomize build ./kustomize/overlay"]
    );
    let manifests = parse_manifests(&response.manifests);
    assert_eq!(manifests.len(), 2);
    assert_eq!(
        find(&manifests, "Deployment", "guestbook-ui")["spec"]["replicas"],
        2
    );
    assert_eq!(
        find(&manifests, "Service", "guestbook-ui")["metadata"]["annotations"]
            ["argocd.argoproj.io/tracking-id"],
        "guestbook:/Service:default/guestbook-ui"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn applies_every_override_and_reports_the_commands() {
    let repo = sources_repo();
    let server = start_plaintext().await;
    let mut client = client(&server).await;
    let head = repo.head();
    let mut overrides = all_overrides("blue");
    overrides.force_common_labels = true;
    overrides.force_common_annotations = true;
    let response = client
        .generate_manifest(source_request(
            &repo.url(),
            "kustomize/overlay",
            kustomize_source(overrides),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.commands,
        vec![
            "kustomize edit set nameprefix -- blue-".to_string(),
            "kustomize edit set namesuffix -- -v1".to_string(),
            format!("kustomize edit set image gcr.io/heptio-images/ks-guestbook-demo=registry.example.com/demo:{}", &head[..7]),
            "kustomize edit set replicas guestbook-ui=5".to_string(),
            "kustomize edit add label --force team:guestbook".to_string(),
            "kustomize edit add annotation --force owner:app-guestbook".to_string(),
            "kustomize edit set namespace -- blue-ns".to_string(),
            "# kustomization.yaml updated with patches. There is no `kustomize edit` command for adding patches. In order to generate the manifests in your local environment, you will need to copy the patches into kustomization.yaml manually.".to_string(),
            "kustomize edit add component ../components/extra".to_string(),
            "kustomize build ./kustomize/overlay".to_string(),
        ]
    );
    let manifests = parse_manifests(&response.manifests);
    let deployment = find(&manifests, "Deployment", "blue-guestbook-ui-v1");
    assert_eq!(deployment["metadata"]["namespace"], "blue-ns");
    assert_eq!(deployment["spec"]["replicas"], 5);
    assert_eq!(deployment["metadata"]["labels"]["team"], "guestbook");
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"]["team"],
        "guestbook"
    );
    assert_eq!(
        deployment["metadata"]["annotations"]["owner"],
        "app-guestbook"
    );
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("registry.example.com/demo:{}", &head[..7])
    );
    let service = find(&manifests, "Service", "blue-guestbook-ui-v1");
    assert_eq!(service["spec"]["sessionAffinity"], "ClientIP");
    let extra = find(&manifests, "ConfigMap", "blue-extra-v1");
    assert_eq!(extra["data"]["from"], "component");

    // Labels without selectors, annotations without substitution.
    let response = client
        .generate_manifest(source_request(
            &repo.url(),
            "kustomize/base",
            kustomize_source(ApplicationSourceKustomize {
                common_labels: HashMap::from([("team".into(), "green".into())]),
                label_without_selector: true,
                common_annotations: HashMap::from([("raw".into(), "$ARGOCD_APP_NAME".into())]),
                ..Default::default()
            }),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        &response.commands[..2],
        [
            "kustomize edit add label --without-selector team:green",
            "kustomize edit add annotation raw:$ARGOCD_APP_NAME"
        ]
    );
    let manifests = parse_manifests(&response.manifests);
    let deployment = find(&manifests, "Deployment", "guestbook-ui");
    assert_eq!(deployment["metadata"]["labels"]["team"], "green");
    assert!(deployment["spec"]["selector"]["matchLabels"]["team"].is_null());
    assert_eq!(
        deployment["metadata"]["annotations"]["raw"],
        "$ARGOCD_APP_NAME"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn concurrent_apps_with_different_overrides_on_one_commit_each_get_their_own_output() {
    let repo = sources_repo();
    let server = start_plaintext().await;
    let mut tasks = Vec::new();
    for (i, prefix) in ["red", "green", "blue", "plain", "cyan", "plain"]
        .iter()
        .enumerate()
    {
        let url = repo.url();
        let mut client = client(&server).await;
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let source = if prefix == "plain" {
                Default::default()
            } else {
                kustomize_source(all_overrides(&prefix))
            };
            let mut request = source_request(&url, "kustomize/overlay", source);
            request.app_name = format!("app-{i}");
            let response = client
                .generate_manifest(request)
                .await
                .unwrap()
                .into_inner();
            (prefix, parse_manifests(&response.manifests))
        }));
    }
    for task in tasks {
        let (prefix, manifests) = task.await.unwrap();
        if prefix == "plain" {
            assert_eq!(manifests.len(), 2);
            let deployment = find(&manifests, "Deployment", "guestbook-ui");
            assert_eq!(deployment["spec"]["replicas"], 2);
            assert!(deployment["metadata"]["namespace"].is_null());
        } else {
            assert_eq!(manifests.len(), 3, "{prefix}");
            let deployment = find(
                &manifests,
                "Deployment",
                &format!("{prefix}-guestbook-ui-v1"),
            );
            assert_eq!(deployment["metadata"]["namespace"], format!("{prefix}-ns"));
        }
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn components_can_be_missing_when_asked() {
    let repo = sources_repo();
    let server = start_plaintext().await;
    let mut client = client(&server).await;
    let request = |ignore| {
        source_request(
            &repo.url(),
            "kustomize/overlay",
            kustomize_source(ApplicationSourceKustomize {
                components: vec!["../components/extra".into(), "../components/none".into()],
                ignore_missing_components: ignore,
                ..Default::default()
            }),
        )
    };
    let response = client
        .generate_manifest(request(true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.commands,
        vec![
            "kustomize edit add component ../components/extra",
            "kustomize build ./kustomize/overlay"
        ]
    );
    assert_eq!(response.manifests.len(), 3);

    let status = client.generate_manifest(request(false)).await.unwrap_err();
    assert!(
        matches!(
            status.code(),
            Code::InvalidArgument | Code::FailedPrecondition
        ),
        "{status:?}"
    );
    assert!(
        status.message().contains("components/none"),
        "{}",
        status.message()
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn inflates_helm_charts_with_the_kube_and_api_versions() {
    let repo = sources_repo();
    let server = start_plaintext().await;
    let mut client = client(&server).await;
    let mut request = source_request(
        &repo.url(),
        "kustomize/helm-inflate",
        kustomize_source(ApplicationSourceKustomize {
            api_versions: vec!["test.example.com/v1".into()],
            ..Default::default()
        }),
    );
    request.kube_version = "v1.31.2+rke2".into();
    request.kustomize_options = Some(KustomizeOptions {
        build_options: "--enable-helm".into(),
        ..Default::default()
    });
    let response = client
        .generate_manifest(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.commands,
        vec![
            "kustomize build ./kustomize/helm-inflate --enable-helm --helm-kube-version 1.31.2 \
             --helm-api-versions test.example.com/v1"
        ]
    );
    let manifests = parse_manifests(&response.manifests);
    let config = find(&manifests, "ConfigMap", "inflated-tiny");
    assert_eq!(config["data"]["kube"], "v1.31.2");
    assert_eq!(config["data"]["api"], "true");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_named_kustomize_version_uses_its_binary() {
    let repo = sources_repo();
    let server = start_plaintext().await;
    let mut client = client(&server).await;
    let binary = on_path("kustomize").display().to_string();
    let request = |version: &str| {
        let mut request = source_request(
            &repo.url(),
            "kustomize/base",
            kustomize_source(ApplicationSourceKustomize {
                version: version.into(),
                ..Default::default()
            }),
        );
        request.kustomize_options = Some(KustomizeOptions {
            versions: vec![KustomizeVersion {
                name: "v5.5".into(),
                path: binary.clone(),
                build_options: String::new(),
            }],
            ..Default::default()
        });
        request
    };
    let response = client
        .generate_manifest(request("v5.5"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.commands,
        vec![format!("{binary} build ./kustomize/base")]
    );
    assert_eq!(response.manifests.len(), 2);

    let status = client.generate_manifest(request("v9")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("kustomize version v9"),
        "{}",
        status.message()
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_broken_kustomization_fails_with_the_tool_error() {
    let repo = sources_repo();
    repo.write(
        "kustomize/broken/kustomization.yaml",
        "resources:\n- missing.yaml\n",
    );
    repo.commit("broken kustomization");
    let server = start_plaintext().await;
    let mut client = client(&server).await;
    let status = client
        .generate_manifest(source_request(
            &repo.url(),
            "kustomize/broken",
            Default::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().starts_with(
            "failed running kustomize: `kustomize build ./kustomize/broken` failed exit status 1: "
        ),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("missing.yaml"),
        "{}",
        status.message()
    );
    assert!(
        !status.message().contains("manifold-"),
        "{}",
        status.message()
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_allow_concurrency_marker_lets_chart_inflation_run_in_the_shared_snapshot() {
    let repo = sources_repo();
    let inflate = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/sources/kustomize/helm-inflate");
    repo.copy_dir(&inflate, "marked/app")
        .write("marked/.argocd-allow-concurrency", "")
        .copy_dir(&inflate, "unmarked/app");
    repo.commit("one app below the marker, one not");
    let tools = tempfile::tempdir().unwrap();
    let mut config = test_config(manifold::server::Tls::Disabled);
    config.render.kustomize = logging_kustomize(tools.path());
    let server = manifold::server::start(config).await.unwrap();
    let client = client(&server).await;

    let built = |path: &'static str, app: &'static str| {
        let mut request = source_request(&repo.url(), path, Default::default());
        request.app_name = app.to_string();
        request.kustomize_options = Some(KustomizeOptions {
            build_options: "--enable-helm".into(),
            ..Default::default()
        });
        let mut client = client.clone();
        async move {
            let response = client
                .generate_manifest(request)
                .await
                .unwrap()
                .into_inner();
            let manifests = parse_manifests(&response.manifests);
            find(&manifests, "ConfigMap", "inflated-tiny");
        }
    };
    for (path, app) in [
        ("marked/app", "one"),
        ("marked/app", "two"),
        ("unmarked/app", "one"),
        ("unmarked/app", "two"),
    ] {
        built(path, app).await;
    }
    let builds: Vec<String> = std::fs::read_to_string(tools.path().join("builds"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(builds.len(), 4, "{builds:?}");
    // Marked: both apps built the one shared snapshot directory.
    assert_eq!(builds[0], builds[1], "{builds:?}");
    assert!(builds[0].ends_with("/marked/app"), "{builds:?}");
    // Unmarked: each render inflated charts in a private copy of its own.
    assert_ne!(builds[2], builds[3], "{builds:?}");
    assert_ne!(builds[2], builds[0].replace("/marked/", "/unmarked/"));
    server.shutdown().await.unwrap();
}
