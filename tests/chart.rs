//! The Helm chart in `helm/manifold`, rendered by the real `helm template`
//! with its default values and with every `ci/*-values.yaml`, checked
//! against the real binary: every flag the chart passes to `manifold serve`
//! (and to `manifold cmp-server` sidecars) is one the binary lists in its
//! `--help` and accepts, the probes are Argo CD's, the pod runs as uid 999
//! without root, and the Service exposes 8081 and 8084.
//!
//! helm comes from PATH (`scripts/install-tools.sh` puts it in `.tools/bin`).
//! Without it the tests that render skip with a message, unless `CI=true`,
//! where a missing helm fails them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const MANIFOLD: &str = env!("CARGO_BIN_EXE_manifold");
const PLUGIN_SOCKETS: &str = "/home/argocd/cmp-server/plugins";
const PLUGIN_CONFIG: &str = "/home/argocd/cmp-server/config";

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/manifold")
}

/// The helm binary on PATH; `None` (after saying why) when it is missing
/// outside CI.
fn helm_or_skip(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("helm"))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "helm is not on PATH and CI=true: run scripts/install-tools.sh"
        );
        eprintln!(
            "SKIPPED {test}: helm is not on PATH (run scripts/install-tools.sh and put .tools/bin on PATH)"
        );
    }
    found
}

/// The value files the chart is rendered with: `None` is the defaults.
fn value_sets() -> Vec<Option<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("ci"))
        .expect("helm/manifold/ci exists")
        .map(|entry| entry.expect("readable ci/ entry").path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with("-values.yaml"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no helm/manifold/ci/*-values.yaml");
    std::iter::once(None)
        .chain(files.into_iter().map(Some))
        .collect()
}

fn describe(values: &Option<PathBuf>) -> String {
    match values {
        None => "default values".to_string(),
        Some(path) => path.file_name().unwrap().to_string_lossy().into_owned(),
    }
}

/// Runs `helm template` and returns its standard output, or its standard
/// error when it fails.
fn helm_template(helm: &Path, extra: &[&str]) -> Result<String, String> {
    let output = Command::new(helm)
        .args(["template", "manifold"])
        .arg(chart_dir())
        .args(["--namespace", "argocd"])
        .args(extra)
        .output()
        .expect("helm runs");
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).expect("helm prints UTF-8"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Splits a multi-document YAML stream on its `---` lines.
fn split_documents(text: &str) -> Vec<String> {
    let mut documents = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            documents.push(String::new());
        } else {
            let current = documents.last_mut().unwrap();
            current.push_str(line);
            current.push('\n');
        }
    }
    documents
}

/// The rendered objects (comment-only documents left out).
fn render(helm: &Path, values: &Option<PathBuf>) -> Vec<Value> {
    let mut extra = Vec::new();
    if let Some(path) = values {
        extra.push("--values");
        extra.push(path.to_str().unwrap());
    }
    let text = helm_template(helm, &extra)
        .unwrap_or_else(|stderr| panic!("helm template ({}) failed:\n{stderr}", describe(values)));
    split_documents(&text)
        .iter()
        .filter_map(|document| {
            let value: Value = serde_saphyr::from_str(document).unwrap_or_else(|err| {
                panic!(
                    "({}) unparsable document: {err}\n{document}",
                    describe(values)
                )
            });
            (!value.is_null()).then_some(value)
        })
        .collect()
}

/// The long flags a subcommand lists in its `--help`.
fn help_flags(subcommand: &str) -> BTreeSet<String> {
    let output = Command::new(MANIFOLD)
        .args([subcommand, "--help"])
        .output()
        .expect("manifold runs");
    assert!(
        output.status.success(),
        "manifold {subcommand} --help failed"
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let flags: BTreeSet<String> = text
        .lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with('-'))
        .flat_map(|line| line.split_whitespace())
        .map(|word| word.trim_end_matches(','))
        .filter(|word| word.starts_with("--"))
        .map(str::to_string)
        .collect();
    assert!(
        flags.contains("--help") && flags.len() > 5,
        "could not read the flags of manifold {subcommand} --help:\n{text}"
    );
    flags
}

/// Checks a container's arguments against `manifold <subcommand>`: each
/// `--flag` must be listed by its `--help`, and the binary must accept the
/// whole list (clap stops at a trailing `--help` only when everything
/// before it parsed: no unknown or repeated flags, no bad values).
fn check_manifold_arguments(
    context: &str,
    subcommand: &str,
    known: &BTreeSet<String>,
    arguments: &[String],
) {
    let unknown: Vec<&String> = arguments
        .iter()
        .filter(|argument| argument.starts_with("--"))
        .filter(|argument| {
            let name = argument.split('=').next().unwrap();
            !known.contains(name)
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "{context}: flags that `manifold {subcommand} --help` does not list: {unknown:?}"
    );
    let output = Command::new(MANIFOLD)
        .arg(subcommand)
        .args(arguments)
        .arg("--help")
        .output()
        .expect("manifold runs");
    assert!(
        output.status.success(),
        "{context}: `manifold {subcommand}` rejects {arguments:?}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| match item {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn objects<'a>(rendered: &'a [Value], kind: &str) -> Vec<&'a Value> {
    rendered
        .iter()
        .filter(|object| object["kind"] == kind)
        .collect()
}

/// The Deployment whose pod runs the `manifold` container.
fn server_deployment<'a>(context: &str, rendered: &'a [Value]) -> &'a Value {
    let found: Vec<&Value> = objects(rendered, "Deployment")
        .into_iter()
        .filter(|deployment| {
            deployment["spec"]["template"]["spec"]["containers"]
                .as_array()
                .is_some_and(|containers| containers.iter().any(|c| c["name"] == "manifold"))
        })
        .collect();
    assert_eq!(found.len(), 1, "{context}: one Deployment runs manifold");
    found[0]
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn mount_path_exists(container: &Value, path: &str) -> bool {
    container["volumeMounts"]
        .as_array()
        .is_some_and(|mounts| mounts.iter().any(|mount| mount["mountPath"] == path))
}

/// runAsNonRoot, uid 999 (the container's or the pod's), a read-only root,
/// no privilege escalation, no capabilities.
fn check_security(context: &str, pod: &Value, container: &Value) {
    let security = &container["securityContext"];
    let pod_security = &pod["securityContext"];
    let run_as_user = if security["runAsUser"].is_null() {
        &pod_security["runAsUser"]
    } else {
        &security["runAsUser"]
    };
    assert_eq!(run_as_user, 999, "{context}: runs as uid 999");
    assert!(
        security["runAsNonRoot"] == true
            || (security["runAsNonRoot"].is_null() && pod_security["runAsNonRoot"] == true),
        "{context}: runAsNonRoot"
    );
    assert_eq!(
        security["readOnlyRootFilesystem"], true,
        "{context}: read-only root filesystem"
    );
    assert_eq!(
        security["allowPrivilegeEscalation"], false,
        "{context}: no privilege escalation"
    );
    assert!(
        strings(&security["capabilities"]["drop"]).contains(&"ALL".to_string()),
        "{context}: drops ALL capabilities"
    );
}

fn check_probe(context: &str, probe: &Value, path: &str) {
    assert_eq!(probe["httpGet"]["path"], path, "{context}: probe path");
    assert_eq!(probe["httpGet"]["port"], 8084, "{context}: probe port");
}

/// Seconds of a `--shutdown-grace-period=<N>s` argument.
fn shutdown_grace_seconds(arguments: &[String]) -> u64 {
    let value = arguments
        .iter()
        .find_map(|argument| argument.strip_prefix("--shutdown-grace-period="))
        .expect("the chart always passes --shutdown-grace-period");
    value
        .strip_suffix('s')
        .and_then(|seconds| seconds.parse().ok())
        .unwrap_or_else(|| panic!("--shutdown-grace-period={value} is not whole seconds"))
}

#[test]
fn rendered_chart_matches_the_real_binary() {
    let Some(helm) = helm_or_skip("rendered_chart_matches_the_real_binary") else {
        return;
    };
    let serve_flags = help_flags("serve");
    let cmp_flags = help_flags("cmp-server");
    let mut manifold_sidecars = 0;
    for values in value_sets() {
        let context = describe(&values);
        let rendered = render(&helm, &values);
        let deployment = server_deployment(&context, &rendered);
        let pod = &deployment["spec"]["template"]["spec"];
        let server = container(pod, "manifold");

        // `manifold serve` with real flags only.
        let command = strings(&server["command"]);
        assert!(
            command.is_empty() || (command.len() == 1 && command[0].ends_with("manifold")),
            "{context}: the server's command is the image's manifold binary, not {command:?}"
        );
        let arguments = strings(&server["args"]);
        assert_eq!(
            arguments.first().map(String::as_str),
            Some("serve"),
            "{context}"
        );
        let flags = &arguments[1..];
        assert!(
            flags.iter().all(|flag| flag.starts_with("--")),
            "{context}: every argument after serve is a --flag[=value]: {flags:?}"
        );
        check_manifold_arguments(&context, "serve", &serve_flags, flags);

        // Argo CD's probes, on the HTTP port.
        if !server["livenessProbe"].is_null() {
            check_probe(
                &format!("{context}: liveness"),
                &server["livenessProbe"],
                "/healthz?full=true",
            );
        }
        if !server["readinessProbe"].is_null() {
            check_probe(
                &format!("{context}: readiness"),
                &server["readinessProbe"],
                "/healthz",
            );
        }
        if values.is_none() {
            assert!(
                !server["livenessProbe"].is_null() && !server["readinessProbe"].is_null(),
                "default values have both probes"
            );
        }

        check_security(&format!("{context}: manifold"), pod, server);
        assert_eq!(
            pod["automountServiceAccountToken"], false,
            "{context}: no API token"
        );

        // Kubernetes waits longer than the server lets requests finish.
        let termination = pod["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds is set");
        assert!(
            termination > shutdown_grace_seconds(flags),
            "{context}: terminationGracePeriodSeconds {termination} must exceed the shutdown grace"
        );

        // $TMPDIR and the plugin socket directory are writable volumes.
        let environment = server["env"].as_array().cloned().unwrap_or_default();
        assert!(
            environment
                .iter()
                .any(|variable| variable["name"] == "TMPDIR" && variable["value"] == "/tmp"),
            "{context}: TMPDIR=/tmp"
        );
        assert!(
            mount_path_exists(server, "/tmp"),
            "{context}: /tmp is mounted"
        );
        assert!(
            mount_path_exists(server, PLUGIN_SOCKETS),
            "{context}: plugin sockets mounted"
        );

        // Plugin sidecars running manifold: real cmp-server flags, the
        // shared socket directory, their plugin files, uid 999.
        for sidecar in pod["containers"].as_array().unwrap() {
            let command = strings(&sidecar["command"]);
            let runs_manifold = command.first().is_some_and(|c| c.ends_with("manifold"));
            if !runs_manifold || sidecar["name"] == "manifold" {
                continue;
            }
            let name = sidecar["name"].as_str().unwrap();
            let sidecar_context = format!("{context}: sidecar {name}");
            assert_eq!(
                command.get(1).map(String::as_str),
                Some("cmp-server"),
                "{sidecar_context}"
            );
            let mut sidecar_arguments = command[2..].to_vec();
            sidecar_arguments.extend(strings(&sidecar["args"]));
            check_manifold_arguments(
                &sidecar_context,
                "cmp-server",
                &cmp_flags,
                &sidecar_arguments,
            );
            assert!(
                mount_path_exists(sidecar, PLUGIN_SOCKETS),
                "{sidecar_context}: socket dir"
            );
            assert!(
                mount_path_exists(sidecar, PLUGIN_CONFIG),
                "{sidecar_context}: plugin files"
            );
            check_security(&sidecar_context, pod, sidecar);
            manifold_sidecars += 1;
        }

        // The Service of the same name: gRPC 8081 and HTTP 8084, reaching
        // the container ports of the same numbers.
        let name = &deployment["metadata"]["name"];
        let service = objects(&rendered, "Service")
            .into_iter()
            .find(|service| &service["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{context}: a Service named like the Deployment"));
        let container_ports = server["ports"].as_array().unwrap();
        for (port, container_port) in [(8081, 8081), (8084, 8084)] {
            let entry = service["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|entry| entry["port"] == port)
                .unwrap_or_else(|| panic!("{context}: the Service exposes {port}"));
            let target = &entry["targetPort"];
            assert!(
                container_ports
                    .iter()
                    .any(|declared| declared["containerPort"] == container_port
                        && (declared["name"] == *target || declared["containerPort"] == *target)),
                "{context}: Service port {port} reaches container port {container_port}"
            );
        }
        let selector = service["spec"]["selector"].as_object().unwrap();
        let labels = &deployment["spec"]["template"]["metadata"]["labels"];
        assert!(
            selector.iter().all(|(key, value)| &labels[key] == value),
            "{context}: the Service selects the pods"
        );
    }
    assert!(
        manifold_sidecars > 0,
        "the ci values render at least one manifold cmp-server sidecar"
    );
}

#[test]
fn redis_modes_map_to_the_redis_flag() {
    let Some(helm) = helm_or_skip("redis_modes_map_to_the_redis_flag") else {
        return;
    };
    let server_arguments = |set: &[&str]| -> (Vec<Value>, Vec<String>) {
        let mut extra = Vec::new();
        for assignment in set {
            extra.extend(["--set", assignment]);
        }
        let text = helm_template(&helm, &extra).expect("helm template");
        let rendered: Vec<Value> = split_documents(&text)
            .iter()
            .map(|document| serde_saphyr::from_str::<Value>(document).unwrap())
            .filter(|value| !value.is_null())
            .collect();
        let deployment = server_deployment("redis", &rendered);
        let arguments =
            strings(&container(&deployment["spec"]["template"]["spec"], "manifold")["args"]);
        (rendered, arguments)
    };
    let redis_flags = |arguments: &[String]| -> Vec<String> {
        arguments
            .iter()
            .filter(|argument| {
                argument.starts_with("--redis=") || argument.starts_with("--sentinel")
            })
            .cloned()
            .collect()
    };

    // external without an address: the server's default (Argo CD's redis).
    let (_, arguments) = server_arguments(&[]);
    assert!(redis_flags(&arguments).is_empty(), "{arguments:?}");

    let (_, arguments) = server_arguments(&["redis.address=cache:6380"]);
    assert_eq!(redis_flags(&arguments), ["--redis=cache:6380"]);

    // none: an empty --redis, which turns the in-cluster default off.
    let (_, arguments) = server_arguments(&["redis.mode=none"]);
    assert_eq!(redis_flags(&arguments), ["--redis="]);

    // bundled: the chart's own Redis Service.
    let (rendered, arguments) = server_arguments(&["redis.mode=bundled"]);
    assert_eq!(redis_flags(&arguments), ["--redis=manifold-redis:6379"]);
    let service = objects(&rendered, "Service")
        .into_iter()
        .find(|service| service["metadata"]["name"] == "manifold-redis")
        .expect("the bundled Redis Service");
    assert_eq!(service["spec"]["ports"][0]["port"], 6379);

    let error = helm_template(&helm, &["--set", "redis.mode=sideways"]).unwrap_err();
    assert!(error.contains("redis.mode"), "{error}");
}

#[test]
fn chart_refuses_a_termination_grace_shorter_than_the_shutdown_grace() {
    let Some(helm) =
        helm_or_skip("chart_refuses_a_termination_grace_shorter_than_the_shutdown_grace")
    else {
        return;
    };
    let error = helm_template(
        &helm,
        &[
            "--set",
            "shutdownGracePeriodSeconds=30",
            "--set",
            "terminationGracePeriodSeconds=30",
        ],
    )
    .unwrap_err();
    assert!(error.contains("terminationGracePeriodSeconds"), "{error}");
}

#[test]
fn chart_app_version_is_the_crate_version() {
    let text = std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap();
    let chart: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
}

/// Dotted paths of the leaves of a values tree (lists and empty maps are
/// leaves).
fn value_paths(prefix: &str, value: &Value, paths: &mut Vec<String>) {
    match value.as_object() {
        Some(map) if !map.is_empty() => {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                value_paths(&path, child, paths);
            }
        }
        _ => paths.push(prefix.to_string()),
    }
}

#[test]
fn chart_readme_documents_every_value() {
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap())
            .unwrap();
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    let mut paths = Vec::new();
    value_paths("", &values, &mut paths);
    // Kubernetes objects passed through as they are (resources, security
    // contexts) are documented as a whole.
    const PASSED_THROUGH: &[&str] = &[
        "resources",
        "podSecurityContext",
        "securityContext",
        "nodeSelector",
        "redis.bundled.resources",
    ];
    let documented = |path: &str| readme.contains(&format!("`{path}`"));
    let missing: Vec<&String> = paths
        .iter()
        .filter(|path| {
            let passed_through = PASSED_THROUGH
                .iter()
                .find(|prefix| path.starts_with(&format!("{prefix}.")));
            match passed_through {
                Some(prefix) => !documented(prefix),
                None => !documented(path),
            }
        })
        .collect();
    assert!(
        missing.is_empty(),
        "helm/manifold/README.md does not document: {missing:?}"
    );
}
