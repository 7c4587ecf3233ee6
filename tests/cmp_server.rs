//! `manifold cmp-server`: the real binary, serving a plugin on a real Unix
//! socket, driven with the generated `ConfigManagementPluginService`
//! client as Argo CD's repo-server drives it (metadata, then the app's
//! `.tar.gz` in 1 KiB chunks).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use manifold::grpc::proto::plugin::{
    app_stream_request, AppStreamRequest, EnvEntry, File, ManifestRequestMetadata,
};
use manifold::source::tarball;
use sha2::{Digest, Sha256};
use tonic::Code;

use common::sidecar::{launch, Client, Sidecar};

fn start_with(spec: &str, files: &[(&str, String)], args: &[&str]) -> Sidecar {
    launch(spec, files, args, None)
}

fn start(spec: &str) -> Sidecar {
    start_with(spec, &[], &[])
}

/// Starts one of the example plugins of `plugins/`, installed as the
/// README says (its files in the config directory).
fn start_example(name: &str) -> Sidecar {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("plugins")
        .join(name);
    let mut files = Vec::new();
    let mut spec = String::new();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let file_name = path.file_name().unwrap().to_str().unwrap().to_string();
        let content = std::fs::read_to_string(&path).unwrap();
        if file_name == "plugin.yaml" {
            spec = content;
        } else {
            files.push((file_name, content));
        }
    }
    let files: Vec<(&str, String)> = files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    start_with(&spec, &files, &[])
}

/// A directory tree from (path, content) pairs.
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

/// The `.tar.gz` of `root`, as the repo-server builds it.
fn archive(root: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    tarball::build(root, &[], &mut bytes).unwrap();
    bytes
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn metadata(app_rel_path: &str, archive: &[u8], env: &[(&str, &str)]) -> AppStreamRequest {
    AppStreamRequest {
        request: Some(app_stream_request::Request::Metadata(
            ManifestRequestMetadata {
                app_name: Path::new(app_rel_path)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                app_rel_path: app_rel_path.to_string(),
                checksum: sha256(archive),
                size: archive.len() as i64,
                env: env
                    .iter()
                    .map(|(name, value)| EnvEntry {
                        name: name.to_string(),
                        value: value.to_string(),
                    })
                    .collect(),
            },
        )),
    }
}

fn chunks(archive: &[u8]) -> Vec<AppStreamRequest> {
    archive
        .chunks(1024)
        .map(|chunk| AppStreamRequest {
            request: Some(app_stream_request::Request::File(File {
                chunk: chunk.to_vec(),
            })),
        })
        .collect()
}

/// The stream Argo CD's repo-server sends for the app at `app_rel_path`
/// of the repository `root`.
fn stream(root: &Path, app_rel_path: &str, env: &[(&str, &str)]) -> Vec<AppStreamRequest> {
    let bytes = archive(root);
    let mut messages = vec![metadata(app_rel_path, &bytes, env)];
    messages.extend(chunks(&bytes));
    messages
}

async fn generate(
    client: &mut Client,
    messages: Vec<AppStreamRequest>,
) -> Result<Vec<serde_json::Value>, tonic::Status> {
    let response = client
        .generate_manifest(tokio_stream::iter(messages))
        .await?
        .into_inner();
    Ok(response
        .manifests
        .iter()
        .map(|m| serde_json::from_str(m).unwrap())
        .collect())
}

async fn matches(client: &mut Client, messages: Vec<AppStreamRequest>) -> (bool, bool) {
    let response = client
        .match_repository(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    (response.is_supported, response.is_discovery_enabled)
}

fn assert_status(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, text: &str) {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(text),
        "expected {text:?} in {:?}",
        status.message()
    );
}

const ECHO_SPEC: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: ConfigManagementPlugin
metadata:
  name: echo
spec:
  generate:
    command: [sh, -c]
    args:
      - |
        cat <<EOF
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: echo
        data:
          files: "$(ls | tr '\n' ' ')"
        EOF
"#;

#[tokio::test]
async fn check_plugin_configuration_answers_from_the_spec() {
    let discovering = start(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: ConfigManagementPlugin
metadata: {name: creds}
spec:
  generate: {command: ["true"]}
  discover: {fileName: "*.yaml"}
  provideGitCreds: true
"#,
    );
    let plain = start(ECHO_SPEC);
    let answer = discovering
        .client()
        .check_plugin_configuration(())
        .await
        .unwrap()
        .into_inner();
    assert!(answer.is_discovery_configured);
    assert!(answer.provide_git_creds);
    let answer = plain
        .client()
        .check_plugin_configuration(())
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.is_discovery_configured);
    assert!(!answer.provide_git_creds);
    assert!(
        plain.log().contains("no discovery is configured"),
        "{}",
        plain.log()
    );
}

#[tokio::test]
async fn socket_is_named_after_plugin_and_version_and_removed_on_sigterm() {
    let unversioned = start(ECHO_SPEC);
    assert_eq!(
        unversioned.socket,
        unversioned.socket_dir().join("echo.sock")
    );
    let versioned = start(&ECHO_SPEC.replace("spec:\n", "spec:\n  version: v1.0\n"));
    assert_eq!(
        versioned.socket,
        versioned.socket_dir().join("echo-v1.0.sock")
    );
    let listed: Vec<String> = std::fs::read_dir(versioned.socket_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, ["echo-v1.0.sock"]);

    // Both serve; SIGTERM then removes the socket and exits 0.
    for mut sidecar in [unversioned, versioned] {
        let app = tree(&[("app/a.yaml", "x")]);
        let manifests = generate(&mut sidecar.client(), stream(app.path(), "app", &[]))
            .await
            .unwrap();
        assert_eq!(manifests[0]["data"]["files"], "a.yaml ");
        let status = sidecar.terminate();
        assert!(status.success(), "{status}");
        assert!(
            !sidecar.socket.exists(),
            "{} left behind",
            sidecar.socket.display()
        );
        assert!(
            sidecar.log().contains("SIGTERM received"),
            "{}",
            sidecar.log()
        );
    }
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced() {
    let mut first = start(ECHO_SPEC);
    // Killed hard: its socket file stays behind.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert!(first.socket.exists());
    // A new server on the same directory takes the name over.
    let second = launch(ECHO_SPEC, &[], &[], Some(&first.socket_dir()));
    assert_eq!(second.socket, first.socket);
    assert!(
        second.log().contains("removing a stale socket"),
        "{}",
        second.log()
    );
    let app = tree(&[("app/b.yaml", "x")]);
    let manifests = generate(&mut second.client(), stream(app.path(), "app", &[]))
        .await
        .unwrap();
    assert_eq!(manifests[0]["data"]["files"], "b.yaml ");
}

const DISCOVERY_BASE: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: ConfigManagementPlugin
metadata: {name: finder}
spec:
  generate: {command: ["true"]}
"#;

#[tokio::test]
async fn match_repository_by_file_name_glob_and_command() {
    let by_file_name = start(&format!(
        "{DISCOVERY_BASE}  discover: {{fileName: \"*.envsubst.yaml\"}}\n"
    ));
    let by_glob = start(&format!(
        "{DISCOVERY_BASE}  discover: {{find: {{glob: \"**/Chart.yaml\"}}}}\n"
    ));
    let by_command = start(&format!(
        "{DISCOVERY_BASE}  discover:\n    find:\n      command: [sh, -c]\n      \
         args: ['test \"$ARGOCD_ENV_WANT\" = yes && ls *.jsonnet || true']\n"
    ));
    let undiscoverable = start(DISCOVERY_BASE);

    let repo = tree(&[
        ("apps/one/deploy.envsubst.yaml", "kind: A"),
        ("apps/two/charts/web/Chart.yaml", "name: web"),
        ("apps/three/main.jsonnet", "{}"),
        ("apps/four/plain.yaml", "kind: A"),
        // Outside the app directory: never seen.
        ("other.envsubst.yaml", "kind: A"),
        ("Chart.yaml", "name: root"),
    ]);
    let ask = |sidecar: &Sidecar, app: &str, env: &[(&str, &str)]| {
        let messages = stream(repo.path(), app, env);
        let mut client = sidecar.client();
        async move { matches(&mut client, messages).await }
    };
    assert_eq!(ask(&by_file_name, "apps/one", &[]).await, (true, true));
    assert_eq!(ask(&by_file_name, "apps/four", &[]).await, (false, true));
    assert_eq!(ask(&by_file_name, "apps/missing", &[]).await, (false, true));
    assert_eq!(ask(&by_glob, "apps/two", &[]).await, (true, true));
    assert_eq!(ask(&by_glob, "apps/one", &[]).await, (false, true));
    assert_eq!(ask(&by_glob, "apps", &[]).await, (true, true));
    let want = [("ARGOCD_ENV_WANT", "yes")];
    assert_eq!(ask(&by_command, "apps/three", &want).await, (true, true));
    assert_eq!(ask(&by_command, "apps/four", &want).await, (false, true));
    // The env sent in the metadata reaches the command.
    assert_eq!(ask(&by_command, "apps/three", &[]).await, (false, true));
    assert_eq!(ask(&undiscoverable, "apps/one", &[]).await, (false, false));
}

#[tokio::test]
async fn init_runs_before_generate_in_the_app_directory_with_the_env() {
    let sidecar = start(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: ConfigManagementPlugin
metadata: {name: ordered}
spec:
  init:
    command: [sh, -c, 'pwd > .init-dir; echo "$ARGOCD_APP_NAME" > .init-app']
  generate:
    command: [sh, -c]
    args:
      - |
        printf 'kind: ConfigMap\napiVersion: v1\nmetadata:\n  name: "%s"\ndata:\n' "$ARGOCD_APP_NAME"
        printf '  initDir: "%s"\n  generateDir: "%s"\n' "$(cat .init-dir)" "$(pwd)"
        printf '  initApp: "%s"\n  foo: "%s"\n  param: "%s"\n' "$(cat .init-app)" "$ARGOCD_ENV_FOO" "$PARAM_SIZE"
        printf '  inherited: "%s"\n' "$SIDECAR_ONLY"
"#,
    );
    let repo = tree(&[("team/app/x.txt", "x")]);
    let env = [
        ("ARGOCD_APP_NAME", "shop"),
        ("ARGOCD_ENV_FOO", "bar"),
        ("PARAM_SIZE", "large"),
    ];
    let manifests = generate(&mut sidecar.client(), stream(repo.path(), "team/app", &env))
        .await
        .unwrap();
    assert_eq!(manifests.len(), 1);
    let data = &manifests[0]["data"];
    assert_eq!(manifests[0]["metadata"]["name"], "shop");
    assert_eq!(data["initDir"], data["generateDir"]);
    let dir = data["generateDir"].as_str().unwrap();
    // <ARGOCD_CMP_WORKDIR>/_cmp_server/<uuid>/<app path>
    let work = sidecar.dir.path().join("work/_cmp_server");
    let work = work.canonicalize().unwrap();
    let rest = Path::new(dir).strip_prefix(&work).unwrap();
    let parts: Vec<_> = rest
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(parts.len(), 3, "{dir}");
    assert_eq!(parts[0].len(), 36, "a uuid: {dir}");
    assert_eq!(&parts[1..], ["team", "app"]);
    assert_eq!(data["initApp"], "shop");
    assert_eq!(data["foo"], "bar");
    assert_eq!(data["param"], "large");
    // The sidecar's own environment is passed on too.
    assert_eq!(data["inherited"], "from-sidecar");
    // The extraction directory is gone once the call ended.
    assert!(!Path::new(dir).exists());
}

#[tokio::test]
async fn envsubst_yaml_example_plugin_renders_with_env_and_parameters() {
    let sidecar = start_example("envsubst-yaml");
    assert!(sidecar.socket.ends_with("envsubst-yaml-v1.sock"));
    let repo = tree(&[
        (
            "apps/shop/deploy.envsubst.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ${ARGOCD_APP_NAME}\n  \
             annotations:\n    foo: \"${ARGOCD_ENV_FOO}\"\n    script: \"echo ${HOME}\"\n\
             spec:\n  replicas: ${PARAM_REPLICAS:-1}\n",
        ),
        (
            "apps/shop/config.yml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ${ARGOCD_APP_NAME}-config\n\
             data:\n  greeting: \"${ARGOCD_ENV_GREETING:-hello}\"\n",
        ),
        ("apps/shop/README.md", "not yaml"),
    ]);
    let mut client = sidecar.client();
    assert_eq!(
        matches(&mut client, stream(repo.path(), "apps/shop", &[])).await,
        (true, true)
    );
    let env = [
        ("ARGOCD_APP_NAME", "shop"),
        ("ARGOCD_ENV_FOO", "bar"),
        ("PARAM_REPLICAS", "3"),
    ];
    let manifests = generate(&mut client, stream(repo.path(), "apps/shop", &env))
        .await
        .unwrap();
    assert_eq!(manifests.len(), 2, "{manifests:#?}");
    let config = common::find(&manifests, "ConfigMap", "shop-config");
    assert_eq!(config["data"]["greeting"], "hello");
    let deployment = common::find(&manifests, "Deployment", "shop");
    assert_eq!(deployment["metadata"]["annotations"]["foo"], "bar");
    assert_eq!(
        deployment["metadata"]["annotations"]["script"],
        "echo ${HOME}"
    );
    assert_eq!(deployment["spec"]["replicas"], 3);

    // A reference to a variable that is not set fails, naming it.
    let env = [("ARGOCD_APP_NAME", "shop"), ("PARAM_REPLICAS", "3")];
    assert_status(
        generate(&mut client, stream(repo.path(), "apps/shop", &env)).await,
        Code::FailedPrecondition,
        "ARGOCD_ENV_FOO is not set",
    );

    let announced = client
        .get_parameters_announcement(tokio_stream::iter(stream(repo.path(), "apps/shop", &[])))
        .await
        .unwrap()
        .into_inner()
        .parameter_announcements;
    assert_eq!(announced.len(), 1);
    assert_eq!(announced[0].name, "replicas");
    assert_eq!(announced[0].string_value, "1");
}

const CHART: &str = "apiVersion: v2\nname: web\nversion: 0.1.0\n";

const VALUES: &str = r#"replicas: 1
image:
  repository: nginx
  tag: "1.25"
podAnnotations:
  prometheus.io/scrape: "true"
ports: [80]
"#;

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
  namespace: {{ .Release.Namespace }}
spec:
  replicas: {{ .Values.replicas }}
  template:
    metadata:
      annotations:
        {{- toYaml .Values.podAnnotations | nindent 8 }}
    spec:
      containers:
        - name: web
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
"#;

const KUSTOMIZATION: &str = r#"resources: [helm-output.yaml]
namePrefix: prod-
labels:
  - pairs: {team: platform}
"#;

#[tokio::test]
async fn helm_kustomize_example_plugin_renders_and_announces_chart_values() {
    common::on_path("helm");
    common::on_path("kustomize");
    let sidecar = start_example("helm-kustomize");
    assert!(sidecar.socket.ends_with("helm-kustomize.sock"));
    let repo = tree(&[
        ("apps/web/chart/Chart.yaml", CHART),
        ("apps/web/chart/values.yaml", VALUES),
        ("apps/web/chart/templates/deployment.yaml", DEPLOYMENT),
        ("apps/web/kustomization.yaml", KUSTOMIZATION),
        ("apps/plain/kustomization.yaml", "resources: []\n"),
    ]);
    let mut client = sidecar.client();
    assert_eq!(
        matches(&mut client, stream(repo.path(), "apps/web", &[])).await,
        (true, true)
    );
    assert_eq!(
        matches(&mut client, stream(repo.path(), "apps/plain", &[])).await,
        (false, true)
    );

    let announced = client
        .get_parameters_announcement(tokio_stream::iter(stream(repo.path(), "apps/web", &[])))
        .await
        .unwrap()
        .into_inner()
        .parameter_announcements;
    let names: Vec<&str> = announced.iter().map(|a| a.name.as_str()).collect();
    // Dynamic (from values.yaml, sorted) first, then static.
    assert_eq!(
        names,
        [
            "values.image.repository",
            "values.image.tag",
            "values.podAnnotations.prometheus\\.io/scrape",
            "values.replicas",
            "release-name",
        ]
    );
    assert_eq!(announced[1].string_value, "1.25");
    assert_eq!(announced[4].title, "Release name");

    let env = [
        ("ARGOCD_APP_NAME", "shop"),
        ("ARGOCD_APP_NAMESPACE", "shop-ns"),
        ("PARAM_VALUES_IMAGE_TAG", "1.27"),
        ("PARAM_VALUES_REPLICAS", "3"),
        ("PARAM_VALUES_PODANNOTATIONS_PROMETHEUS__IO_SCRAPE", "false"),
    ];
    let manifests = generate(&mut client, stream(repo.path(), "apps/web", &env))
        .await
        .unwrap();
    assert_eq!(manifests.len(), 1, "{manifests:#?}");
    let deployment = common::find(&manifests, "Deployment", "prod-shop-web");
    assert_eq!(deployment["metadata"]["namespace"], "shop-ns");
    assert_eq!(deployment["metadata"]["labels"]["team"], "platform");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let template = &deployment["spec"]["template"];
    assert_eq!(
        template["spec"]["containers"][0]["image"], "nginx:1.27",
        "{deployment:#}"
    );
    assert_eq!(
        template["metadata"]["annotations"]["prometheus.io/scrape"],
        "false"
    );

    // The release name parameter.
    let env = [("ARGOCD_APP_NAME", "shop"), ("PARAM_RELEASE_NAME", "blue")];
    let manifests = generate(&mut client, stream(repo.path(), "apps/web", &env))
        .await
        .unwrap();
    common::find(&manifests, "Deployment", "prod-blue-web");
}

#[tokio::test]
async fn parameters_announcement_puts_dynamic_before_static() {
    let sidecar = start(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: ConfigManagementPlugin
metadata: {name: params}
spec:
  generate: {command: ["true"]}
  parameters:
    static:
      - name: size
        title: Size
        required: true
        itemType: string
        string: small
      - name: labels
        collectionType: map
        map: {team: a}
    dynamic:
      command: [sh, -c]
      args:
        - |
          printf '[{"name":"from-%s","collectionType":"array","array":["%s"]}]' "$(ls)" "$ARGOCD_ENV_X"
"#,
    );
    let repo = tree(&[("app/file.txt", "x")]);
    let mut client = sidecar.client();
    let announced = client
        .get_parameters_announcement(tokio_stream::iter(stream(
            repo.path(),
            "app",
            &[("ARGOCD_ENV_X", "y")],
        )))
        .await
        .unwrap()
        .into_inner()
        .parameter_announcements;
    assert_eq!(announced.len(), 3, "{announced:#?}");
    assert_eq!(announced[0].name, "from-file.txt");
    assert_eq!(announced[0].collection_type, "array");
    assert_eq!(announced[0].array_value, ["y"]);
    assert_eq!(announced[1].name, "size");
    assert!(announced[1].required);
    assert_eq!(announced[1].item_type, "string");
    assert_eq!(announced[1].string_value, "small");
    assert_eq!(announced[2].map_value["team"], "a");

    // Output that is not a JSON array of announcements is a clear error.
    let broken = start(
        "apiVersion: argoproj.io/v1alpha1\nkind: ConfigManagementPlugin\nmetadata: {name: b}\n\
         spec:\n  generate: {command: [\"true\"]}\n  parameters:\n    dynamic: {command: [echo, nope]}\n",
    );
    assert_status(
        broken
            .client()
            .get_parameters_announcement(tokio_stream::iter(stream(repo.path(), "app", &[])))
            .await,
        Code::FailedPrecondition,
        "plugin b: parameters.dynamic printed no JSON array",
    );
}

/// A `.tar.gz` with one regular file entry named `name`, written raw (the
/// tar crate refuses to write `..` itself).
fn raw_archive(name: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(2);
    header.set_cksum();
    builder.append(&header, &b"x\n"[..]).unwrap();
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    gz.finish().unwrap()
}

#[tokio::test]
async fn bad_streams_are_refused_and_the_server_keeps_serving() {
    let sidecar = start_with(ECHO_SPEC, &[], &["--max-tar-size", "64Ki"]);
    let mut client = sidecar.client();
    let repo = tree(&[("app/a.yaml", "x")]);
    let good = archive(repo.path());
    let still_serving = |client: &mut Client| {
        let messages = stream(repo.path(), "app", &[]);
        let mut client = client.clone();
        async move {
            let manifests = generate(&mut client, messages).await.unwrap();
            assert_eq!(manifests[0]["data"]["files"], "a.yaml ");
        }
    };

    // The first message is a chunk, not the metadata.
    assert_status(
        generate(&mut client, chunks(&good)).await,
        Code::InvalidArgument,
        "the first message must be the metadata (app name, app path, checksum, size, env), not a file chunk",
    );
    still_serving(&mut client).await;

    // Nothing at all.
    assert_status(
        generate(&mut client, Vec::new()).await,
        Code::InvalidArgument,
        "no metadata",
    );

    // The checksum does not match the bytes.
    let mut messages = stream(repo.path(), "app", &[]);
    if let Some(app_stream_request::Request::Metadata(m)) = &mut messages[0].request {
        m.checksum = sha256(b"something else");
    }
    assert_status(
        generate(&mut client, messages).await,
        Code::InvalidArgument,
        "checksum mismatch",
    );
    still_serving(&mut client).await;

    // An entry that climbs out of the extraction directory.
    let evil = raw_archive(b"../escape.yaml");
    let mut messages = vec![metadata(".", &evil, &[])];
    messages.extend(chunks(&evil));
    assert_status(
        generate(&mut client, messages).await,
        Code::InvalidArgument,
        "archive entry ../escape.yaml leaves the extraction directory",
    );
    assert!(!sidecar
        .dir
        .path()
        .join("work/_cmp_server/escape.yaml")
        .exists());
    still_serving(&mut client).await;

    // An app path that leaves the archive.
    let mut messages = stream(repo.path(), "app", &[]);
    if let Some(app_stream_request::Request::Metadata(m)) = &mut messages[0].request {
        m.app_rel_path = "../..".to_string();
    }
    assert_status(
        generate(&mut client, messages).await,
        Code::InvalidArgument,
        "leaves the archive",
    );

    // An app path that is not in the archive.
    assert_status(
        generate(&mut client, stream(repo.path(), "nowhere", &[])).await,
        Code::InvalidArgument,
        "\"nowhere\" is not a directory of the archive",
    );

    // A declared size beyond the cap, and actual bytes beyond it.
    let mut messages = stream(repo.path(), "app", &[]);
    if let Some(app_stream_request::Request::Metadata(m)) = &mut messages[0].request {
        m.size = 1 << 20;
    }
    assert_status(
        generate(&mut client, messages).await,
        Code::ResourceExhausted,
        "exceeds the maximum size of 65536 bytes (--max-tar-size)",
    );
    // Incompressible bytes, so the archive itself is large.
    let noise: Vec<u8> = (0..4000u32)
        .flat_map(|i| Sha256::digest(i.to_le_bytes()).to_vec())
        .collect();
    let big = tree(&[("app/a.yaml", "x")]);
    std::fs::write(big.path().join("app/noise.bin"), &noise).unwrap();
    let big_archive = archive(big.path());
    assert!(big_archive.len() > 65536);
    let mut messages = vec![metadata("app", &good, &[])];
    messages.extend(chunks(&big_archive));
    assert_status(
        generate(&mut client, messages).await,
        Code::ResourceExhausted,
        "--max-tar-size",
    );

    // A second metadata message.
    let mut messages = stream(repo.path(), "app", &[]);
    messages.insert(1, metadata("app", &good, &[]));
    assert_status(
        generate(&mut client, messages).await,
        Code::InvalidArgument,
        "second metadata message",
    );

    still_serving(&mut client).await;
}

#[tokio::test]
async fn invalid_yaml_from_the_plugin_is_a_clear_error() {
    let sidecar = start(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: ConfigManagementPlugin
metadata: {name: sloppy}
spec:
  generate:
    command: [printf, "kind: ConfigMap\napiVersion: v1\nmetadata: {name: ok}\n---\nkind: [unclosed\n"]
"#,
    );
    let repo = tree(&[("app/a", "x")]);
    let status = generate(&mut sidecar.client(), stream(repo.path(), "app", &[]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let message = status.message();
    assert!(
        message.starts_with(
            "plugin sloppy: generate printed invalid YAML/JSON (after 1 valid document(s)): "
        ),
        "{message}"
    );
    assert!(message.len() > 90, "names the parse problem: {message}");

    // A failing command: its exit status and stderr.
    let failing = start(
        "apiVersion: argoproj.io/v1alpha1\nkind: ConfigManagementPlugin\nmetadata: {name: f}\n\
         spec:\n  generate: {command: [sh, -c, 'echo broken chart >&2; exit 3']}\n",
    );
    assert_status(
        generate(&mut failing.client(), stream(repo.path(), "app", &[])).await,
        Code::FailedPrecondition,
        "plugin f: generate `sh -c \"echo broken chart >&2; exit 3\"` failed (exit status 3): broken chart",
    );
}

/// A generate command that ignores SIGTERM, starts a grandchild that does
/// too, writes its process group id to `$ARGOCD_ENV_PGID_FILE`, and hangs.
const HANGING_SPEC: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: ConfigManagementPlugin
metadata: {name: hang}
spec:
  generate:
    command: [sh, -c]
    args:
      - |
        trap '' TERM
        (trap '' TERM; sleep 300) &
        echo $$ > "$ARGOCD_ENV_PGID_FILE.tmp"
        mv "$ARGOCD_ENV_PGID_FILE.tmp" "$ARGOCD_ENV_PGID_FILE"
        sleep 300
"#;

async fn read_pgid(path: &Path) -> i32 {
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text.trim().parse().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the plugin never wrote its process group id");
}

async fn group_gone(pgid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if manifold::exec::reaper::group_members(pgid).is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_hanging_generate_is_killed_with_its_group_at_the_deadline() {
    let sidecar = start_with(HANGING_SPEC, &[], &["--exec-timeout", "3s"]);
    let repo = tree(&[("app/a", "x")]);
    let marker = tempfile::tempdir().unwrap();
    let mut client = sidecar.client();

    // The caller's deadline (2s): SIGTERM at 1.9s (ignored), SIGKILL 1s
    // later (--exec-fatal-timeout).
    let pgid_file = marker.path().join("first");
    let env = [("ARGOCD_ENV_PGID_FILE", pgid_file.to_str().unwrap())];
    let mut request = tonic::Request::new(tokio_stream::iter(stream(repo.path(), "app", &env)));
    request.set_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let status = client.generate_manifest(request).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{status:?}"
    );
    assert!(
        elapsed < Duration::from_secs(4),
        "answered after {elapsed:?}"
    );
    let pgid = read_pgid(&pgid_file).await;
    assert!(
        group_gone(pgid, Duration::from_secs(10)).await,
        "process group {pgid} survived:\n{}",
        sidecar.log()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(2800),
        "SIGKILL must wait for the grace after SIGTERM ({:?})",
        started.elapsed()
    );

    // No caller deadline: --exec-timeout (3s) applies, and the error says
    // so.
    let pgid_file = marker.path().join("second");
    let env = [("ARGOCD_ENV_PGID_FILE", pgid_file.to_str().unwrap())];
    let started = Instant::now();
    let status = generate(&mut client, stream(repo.path(), "app", &env))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("plugin hang: generate")
            && status
                .message()
                .contains("timed out after 3s (--exec-timeout)")
            && status.message().contains("SIGTERM ignored"),
        "{status:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(4));
    let pgid = read_pgid(&pgid_file).await;
    assert!(
        group_gone(pgid, Duration::from_secs(10)).await,
        "group {pgid} survived"
    );

    // The server still serves.
    let answer = client.check_plugin_configuration(()).await.unwrap();
    assert!(!answer.into_inner().is_discovery_configured);
}
