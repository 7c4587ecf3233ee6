//! Jsonnet in Directory apps, evaluated in-process, through
//! GenerateManifest.

mod common;

use common::fixtures::sources_repo;
use common::*;
use manifold::grpc::proto::v1alpha1::{
    ApplicationSource, ApplicationSourceDirectory, ApplicationSourceJsonnet, JsonnetVar,
};
use tonic::Code;

fn var(name: &str, value: &str, code: bool) -> JsonnetVar {
    JsonnetVar {
        name: name.into(),
        value: value.into(),
        code,
    }
}

fn jsonnet_source(jsonnet: ApplicationSourceJsonnet) -> ApplicationSource {
    ApplicationSource {
        directory: Some(ApplicationSourceDirectory {
            jsonnet: Some(jsonnet),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn evaluates_with_libraries_top_level_arguments_and_external_variables() {
    let repo = sources_repo();
    let server = start_plaintext().await;
    let mut client = client(&server).await;
    let response = client
        .generate_manifest(source_request(
            &repo.url(),
            "jsonnet/app",
            jsonnet_source(ApplicationSourceJsonnet {
                tlas: vec![
                    var("appName", "$ARGOCD_APP_NAME-jsonnet", false),
                    var("replicas", "1 + 2", true),
                ],
                ext_vars: vec![
                    var("env", "prod", false),
                    var("tier", "{name: 'web'}", true),
                ],
                libs: vec!["jsonnet/lib".into()],
            }),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.source_type, "Directory");
    assert!(response.commands.is_empty());
    let manifests = parse_manifests(&response.manifests);
    assert_eq!(manifests.len(), 2);
    let deployment = find(&manifests, "Deployment", "guestbook-jsonnet-ui");
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"]["env"],
        "prod"
    );
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"]["tier"],
        "web"
    );
    assert_eq!(
        deployment["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"],
        "guestbook:apps/Deployment:default/guestbook-jsonnet-ui"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn jsonnet_errors_are_failed_preconditions_and_libraries_stay_in_the_repository() {
    let repo = sources_repo();
    let server = start_plaintext().await;
    let mut client = client(&server).await;
    // Without the library path the import fails.
    let status = client
        .generate_manifest(source_request(
            &repo.url(),
            "jsonnet/app",
            jsonnet_source(ApplicationSourceJsonnet {
                ext_vars: vec![
                    var("env", "prod", false),
                    var("tier", "{name: 'web'}", true),
                ],
                ..Default::default()
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status
            .message()
            .starts_with("Failed to evaluate jsonnet \"main.jsonnet\": "),
        "{}",
        status.message()
    );
    assert!(
        !status.message().contains("manifold-"),
        "{}",
        status.message()
    );

    let status = client
        .generate_manifest(source_request(
            &repo.url(),
            "jsonnet/app",
            jsonnet_source(ApplicationSourceJsonnet {
                libs: vec!["../../../etc".into()],
                ..Default::default()
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("../../../etc"),
        "{}",
        status.message()
    );
    server.shutdown().await.unwrap();
}
