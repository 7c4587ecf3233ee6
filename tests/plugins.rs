//! Config management plugins end to end: the repo-server (over gRPC)
//! rendering apps through `manifold cmp-server` sidecars on real Unix
//! sockets, by name and by discovery, with the example plugins of
//! `plugins/`.

mod common;

use std::path::Path;

use common::fixtures::GitRepo;
use common::sidecar::launch;
use common::*;
use manifold::grpc::proto::repository::RepoServerAppDetailsQuery;
use manifold::grpc::proto::v1alpha1::{
    ApplicationSourcePlugin, ApplicationSourcePluginParameter, EnvEntry,
};
use manifold::server::{self, Tls};
use tonic::Code;

/// An example plugin's spec and scripts, as `launch` takes them.
fn example(name: &str) -> (String, Vec<(String, String)>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("plugins")
        .join(name);
    let mut spec = String::new();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let content = std::fs::read_to_string(&path).unwrap();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if file == "plugin.yaml" {
            spec = content;
        } else {
            files.push((file, content));
        }
    }
    (spec, files)
}

fn start_example(name: &str, sockets: &Path, args: &[&str]) -> common::sidecar::Sidecar {
    let (spec, files) = example(name);
    let files: Vec<(&str, String)> = files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    launch(&spec, &files, args, Some(sockets))
}

fn plugin(name: &str) -> ApplicationSourcePlugin {
    ApplicationSourcePlugin {
        name: name.to_string(),
        env: vec![EnvEntry {
            name: "GREETING".into(),
            value: "hello from $ARGOCD_APP_NAME".into(),
        }],
        parameters: vec![ApplicationSourcePluginParameter {
            name: "replicas".into(),
            string_value: Some("3".into()),
            ..Default::default()
        }],
    }
}

const ENVSUBST_APP: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: envsubst-${ARGOCD_APP_NAME}\ndata:\n  greeting: \"${ARGOCD_ENV_GREETING:-none}\"\n  replicas: \"${PARAM_REPLICAS:-1}\"\n  revision: \"${ARGOCD_APP_REVISION_SHORT}\"\n";

fn plugin_repo() -> GitRepo {
    let repo = GitRepo::new();
    repo.write("apps/env/cm.envsubst.yaml", ENVSUBST_APP)
        .write("apps/env/readme.txt", "not YAML")
        .write(
            "apps/hk/chart/Chart.yaml",
            "apiVersion: v2\nname: web\nversion: 0.1.0\n",
        )
        .write("apps/hk/chart/values.yaml", "greeting: hi\n")
        .write(
            "apps/hk/chart/templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-web\ndata:\n  greeting: {{ .Values.greeting | quote }}\n",
        )
        .write(
            "apps/hk/kustomization.yaml",
            "resources:\n- helm-output.yaml\ncommonLabels:\n  team: platform\n",
        )
        .write(
            "apps/plain/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\n",
        )
        .write("elsewhere/secret.txt", "never sent to plugins");
    repo.commit("plugin apps");
    repo
}

async fn start_server(sockets: &Path, exec_timeout: Option<std::time::Duration>) -> server::Server {
    let mut config = test_config(Tls::Disabled);
    config.render.plugin_sockets = sockets.to_path_buf();
    if let Some(timeout) = exec_timeout {
        config.exec.timeout = Some(timeout);
        config.exec.fatal_timeout = std::time::Duration::from_secs(1);
    }
    server::start(config).await.expect("server starts")
}

#[tokio::test]
async fn apps_render_through_sidecars_by_name_and_by_discovery() {
    let sockets = tempfile::tempdir().unwrap();
    let _envsubst = start_example("envsubst-yaml", sockets.path(), &[]);
    let _helm_kustomize = start_example("helm-kustomize", sockets.path(), &[]);
    let repo = plugin_repo();
    let url = repo.url();
    let head = repo.head();
    let server = start_server(sockets.path(), None).await;
    let mut client = client(&server).await;

    // By name (with the version suffix), with env and parameters.
    let mut named = manifest_request(&url, "apps/env", "HEAD");
    named.application_source.as_mut().unwrap().plugin = Some(plugin("envsubst-yaml-v1"));
    let response = client
        .generate_manifest(named.clone())
        .await
        .unwrap_or_else(|s| panic!("{s:?}"))
        .into_inner();
    assert_eq!(response.source_type, "Plugin");
    assert_eq!(response.revision, head);
    let manifests = parse_manifests(&response.manifests);
    let cm = find(&manifests, "ConfigMap", "envsubst-guestbook");
    assert_eq!(cm["data"]["greeting"], "hello from guestbook");
    assert_eq!(cm["data"]["replicas"], "3");
    assert_eq!(cm["data"]["revision"], &head[..7]);
    // Tracking is applied to plugin output like any other.
    assert_eq!(
        cm["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"],
        "guestbook:/ConfigMap:default/envsubst-guestbook"
    );

    // By discovery: no type named; each plugin claims its own app.
    let discovered = client
        .generate_manifest(manifest_request(&url, "apps/env", "HEAD"))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"))
        .into_inner();
    assert_eq!(discovered.source_type, "Plugin");
    let manifests = parse_manifests(&discovered.manifests);
    assert_eq!(
        find(&manifests, "ConfigMap", "envsubst-guestbook")["data"]["replicas"],
        "1"
    );
    let hk = client
        .generate_manifest(manifest_request(&url, "apps/hk", "HEAD"))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"))
        .into_inner();
    assert_eq!(hk.source_type, "Plugin");
    let manifests = parse_manifests(&hk.manifests);
    let web = find(&manifests, "ConfigMap", "guestbook-web");
    assert_eq!(web["data"]["greeting"], "hi");
    assert_eq!(web["metadata"]["labels"]["team"], "platform");
    // An app no plugin claims renders as its files say.
    let plain = client
        .generate_manifest(manifest_request(&url, "apps/plain", "HEAD"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plain.source_type, "Directory");
    assert_eq!(names(&plain.manifests), ["plain"]);

    // GetAppDetails asks the plugin for its parameters.
    let details = client
        .get_app_details(RepoServerAppDetailsQuery {
            repo: repo_of(&url),
            source: named.application_source.clone(),
            app_name: "guestbook".into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("{s:?}"))
        .into_inner();
    assert_eq!(details.r#type, "Plugin");
    let announced: Vec<String> = details
        .plugin
        .unwrap()
        .parameters_announcement
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(announced, ["replicas"]);

    // A plugin that does not exist.
    let mut missing = named.clone();
    missing.application_source.as_mut().unwrap().plugin = Some(plugin("nope"));
    let status = client.generate_manifest(missing).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("\"nope\""), "{status:?}");
    server.shutdown().await.unwrap();
}

fn repo_of(url: &str) -> Option<manifold::grpc::proto::v1alpha1::Repository> {
    common::repo(url)
}

#[tokio::test]
async fn hanging_and_broken_plugins_fail_clearly() {
    let sockets = tempfile::tempdir().unwrap();
    let spec = |name: &str, generate: &str| {
        format!(
            "apiVersion: argoproj.io/v1alpha1\nkind: ConfigManagementPlugin\nmetadata:\n  name: {name}\nspec:\n  generate:\n    command: [sh, -c]\n    args: [{generate:?}]\n"
        )
    };
    let _hang = launch(&spec("hang", "sleep 600"), &[], &[], Some(sockets.path()));
    let _broken = launch(
        &spec("broken", "printf 'kind: [unclosed\\n'"),
        &[],
        &[],
        Some(sockets.path()),
    );
    let repo = plugin_repo();
    let url = repo.url();
    // The repo-server's exec timeout bounds the call; the sidecar kills
    // its command at the call's deadline.
    let server = start_server(sockets.path(), Some(std::time::Duration::from_secs(2))).await;
    let mut client = client(&server).await;
    let request = |name: &str| {
        let mut request = manifest_request(&url, "apps/plain", "HEAD");
        request.application_source.as_mut().unwrap().plugin = Some(ApplicationSourcePlugin {
            name: name.into(),
            ..Default::default()
        });
        request
    };
    let started = std::time::Instant::now();
    let status = client.generate_manifest(request("hang")).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    let status = client
        .generate_manifest(request("broken"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("broken"), "{status:?}");
    // The server keeps serving.
    let plain = client
        .generate_manifest(manifest_request(&url, "apps/plain", "HEAD"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&plain.manifests), ["plain"]);
    server.shutdown().await.unwrap();
}
