//! Process supervision against the real `manifold` binary in a process of
//! its own: tools that ignore SIGTERM are killed with their whole process
//! group, orphans are reaped by the server (its child subreaper), the
//! parallelism permits come back, and a client that goes away takes its
//! render's processes with it unless another client waits for the same
//! render.
//!
//! The "tools" are shell scripts standing in for helm: each writes its
//! process group id (its own pid: the supervisor makes it a group leader)
//! to a log, starts a grandchild that also ignores SIGTERM, and hangs.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::fixtures::GitRepo;
use common::process::{http_get, start, terminate_and_wait, Running};
use common::*;
use manifold::grpc::proto::repository::repo_server_service_client::RepoServerServiceClient;
use manifold::grpc::proto::v1alpha1::{ApplicationSource, ApplicationSourceHelm};
use tonic::transport::Channel;
use tonic::Code;

/// A repository with a chart at `app` and a plain manifest at `plain`.
fn chart_repo() -> GitRepo {
    let repo = GitRepo::new();
    repo.write(
        "app/Chart.yaml",
        "apiVersion: v2\nname: app\nversion: 0.1.0\n",
    )
    .write(
        "plain/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\n",
    );
    repo.commit("chart and plain manifest");
    repo
}

/// Writes an executable fake helm into `dir`. It appends its group id to
/// `dir/pgids`, leaves a grandchild that ignores SIGTERM, and then runs
/// `body`.
fn fake_helm(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("helm");
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = version ] && {{ echo v3.0.0-fake; exit 0; }}\ntrap '' TERM\necho $$ >> {log}\n(trap '' TERM; sleep 300) &\n{body}\n",
        log = dir.join("pgids").display(),
    );
    std::fs::write(&path, script).unwrap();
    let mut permissions = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&path, permissions).unwrap();
    path
}

/// The group ids the fake helm recorded so far.
fn recorded_groups(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("pgids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// Polls until the fake helm has recorded `count` groups.
async fn wait_for_groups(dir: &Path, count: usize) -> Vec<i32> {
    for _ in 0..600 {
        let groups = recorded_groups(dir);
        if groups.len() >= count {
            return groups;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the fake helm never started {count} times");
}

/// `(state, ppid, pgrp)` of a process, from `/proc/<pid>/stat`.
fn stat(pid: i32) -> Option<(char, i32, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = text[text.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((
        state,
        fields.next()?.parse().ok()?,
        fields.next()?.parse().ok()?,
    ))
}

/// Every process (zombies included) whose process group is `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|(_, _, pgrp)| pgrp == pgid))
        .collect()
}

/// `(pid, state)` of every child of `pid`.
fn children(pid: i32) -> Vec<(i32, char)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|child| {
            let (state, ppid, _) = stat(child)?;
            (ppid == pid).then_some((child, state))
        })
        .collect()
}

/// Polls (the reaper works in the background) until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

/// The value of an unlabelled metric on the server's `/metrics`.
fn metric(running: &Running, name: &str) -> f64 {
    let text = http_get(running.http, "/metrics");
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
            rest.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no metric {name} in {text}"))
}

async fn plaintext_client(running: &Running) -> RepoServerServiceClient<Channel> {
    RepoServerServiceClient::connect(format!("http://{}", running.grpc))
        .await
        .unwrap()
}

/// A Helm render of `app` whose release name makes it a render of its own.
fn helm_request(url: &str, release: &str) -> manifold::grpc::proto::repository::ManifestRequest {
    source_request(
        url,
        "app",
        ApplicationSource {
            helm: Some(ApplicationSourceHelm {
                release_name: release.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}

#[tokio::test]
async fn tools_ignoring_sigterm_are_killed_with_their_group_and_leave_nothing_behind() {
    let repo = chart_repo();
    let tools = tempfile::tempdir().unwrap();
    let helm = fake_helm(tools.path(), "sleep 300");
    let running = start(
        &["--disable-tls"],
        &[
            ("ARGOCD_EXEC_TIMEOUT", "1s"),
            ("ARGOCD_EXEC_FATAL_TIMEOUT", "1s"),
            ("ARGOCD_REPO_SERVER_PARALLELISM_LIMIT", "2"),
            ("MANIFOLD_HELM_PATH", helm.to_str().unwrap()),
        ],
    );
    let server_pid = running.child.id() as i32;
    let mut client = plaintext_client(&running).await;

    // One timeout: SIGTERM at 1s is ignored, SIGKILL to the group at 2s.
    let status = client
        .generate_manifest(helm_request(&repo.url(), "first"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().starts_with("`helm template"),
        "names the tool: {}",
        status.message()
    );
    assert!(
        status.message().contains("timeout after 1s")
            && status
                .message()
                .contains("SIGTERM ignored; killed after 2s"),
        "{}",
        status.message()
    );
    let first = recorded_groups(tools.path());
    assert_eq!(first.len(), 1);
    eventually("the first group is gone", || {
        group_members(first[0]).is_empty()
    })
    .await;

    // Many more, more at once than there are permits.
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let mut client = client.clone();
            let request = helm_request(&repo.url(), &format!("release-{i}"));
            tokio::spawn(async move { client.generate_manifest(request).await })
        })
        .collect();
    for call in calls {
        let status = call.await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    }
    let groups = recorded_groups(tools.path());
    assert_eq!(groups.len(), 9, "every render ran its tool once");

    for pgid in &groups {
        eventually(&format!("group {pgid} is gone"), || {
            group_members(*pgid).is_empty()
        })
        .await;
    }
    // The orphaned grandchildren were re-parented to the server (its child
    // subreaper) and reaped: no zombie, no child at all.
    eventually("the server has no children", || {
        children(server_pid).is_empty()
    })
    .await;
    assert_eq!(metric(&running, "manifold_parallelism_permits_in_use"), 0.0);
    assert_eq!(metric(&running, "manifold_exec_running_processes"), 0.0);
    assert_eq!(
        metric(
            &running,
            "argocd_repo_parallelism_wait_duration_seconds_count"
        ),
        9.0,
        "every acquisition is measured"
    );

    // And the server still serves.
    let response = client
        .generate_manifest(manifest_request(&repo.url(), "plain", "HEAD"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&response.manifests), ["plain"]);
    terminate_and_wait(running).await;
}

#[tokio::test]
async fn a_client_that_goes_away_takes_its_render_along_unless_another_waits() {
    let repo = chart_repo();
    let tools = tempfile::tempdir().unwrap();
    let release = tools.path().join("release");
    let helm = fake_helm(
        tools.path(),
        &format!(
            "while [ ! -e {} ]; do sleep 0.05; done\nprintf 'apiVersion: v1\\nkind: ConfigMap\\nmetadata:\\n  name: released\\n'",
            release.display()
        ),
    );
    let running = start(
        &["--disable-tls"],
        &[
            ("ARGOCD_EXEC_TIMEOUT", "5m"),
            ("MANIFOLD_HELM_PATH", helm.to_str().unwrap()),
        ],
    );
    let server_pid = running.child.id() as i32;
    let client = plaintext_client(&running).await;

    // A lone client cancels: the render's whole group is killed, although
    // the tool ignores SIGTERM and the exec timeout is far away.
    let call = {
        let mut client = client.clone();
        let request = helm_request(&repo.url(), "alone");
        tokio::spawn(async move { client.generate_manifest(request).await })
    };
    let groups = wait_for_groups(tools.path(), 1).await;
    call.abort();
    eventually("the cancelled render's group is gone", || {
        group_members(groups[0]).is_empty()
    })
    .await;

    // Two clients share one render; the first goes away, the second still
    // gets the result: the shared render was not killed.
    let call = |release: &str| {
        let mut client = client.clone();
        let request = helm_request(&repo.url(), release);
        tokio::spawn(async move { client.generate_manifest(request).await })
    };
    let first = call("shared");
    let second = call("shared");
    let groups = wait_for_groups(tools.path(), 2).await;
    first.abort();
    let _ = first.await;
    assert!(
        !group_members(groups[1]).is_empty(),
        "the shared render still runs"
    );
    std::fs::write(&release, "").unwrap();
    let response = second.await.unwrap().unwrap().into_inner();
    assert_eq!(names(&response.manifests), ["released"]);
    assert_eq!(
        recorded_groups(tools.path()).len(),
        2,
        "the two clients shared one run"
    );
    eventually("the finished render's group is gone", || {
        group_members(groups[1]).is_empty()
    })
    .await;
    eventually("the server has no children", || {
        children(server_pid).is_empty()
    })
    .await;
    assert_eq!(metric(&running, "manifold_exec_running_processes"), 0.0);
    terminate_and_wait(running).await;
}

#[tokio::test]
async fn a_daemon_that_escapes_its_group_is_adopted_and_reaped_by_the_server() {
    let repo = chart_repo();
    let tools = tempfile::tempdir().unwrap();
    let daemon_pid = tools.path().join("daemon");
    let helm = fake_helm(
        tools.path(),
        &format!(
            // A new session of its own: the group kill cannot reach it.
            "setsid sh -c 'echo $$ > {0}.tmp; mv {0}.tmp {0}; sleep 2' </dev/null >/dev/null 2>&1 &\nwhile [ ! -e {0} ]; do sleep 0.05; done\nprintf 'apiVersion: v1\\nkind: ConfigMap\\nmetadata:\\n  name: done\\n'",
            daemon_pid.display()
        ),
    );
    let running = start(
        &["--disable-tls"],
        &[("MANIFOLD_HELM_PATH", helm.to_str().unwrap())],
    );
    let server_pid = running.child.id() as i32;
    let mut client = plaintext_client(&running).await;
    let response = client
        .generate_manifest(helm_request(&repo.url(), "daemon"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&response.manifests), ["done"]);

    let mut daemon = None;
    eventually("the daemon wrote its pid", || {
        daemon = std::fs::read_to_string(&daemon_pid)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok());
        daemon.is_some()
    })
    .await;
    let daemon = daemon.unwrap();
    // Its parent exited: it now belongs to the server, not to init.
    eventually("the daemon is the server's child", || {
        stat(daemon).is_some_and(|(_, ppid, _)| ppid == server_pid)
    })
    .await;
    // When it exits, the server reaps it.
    eventually("the daemon is reaped", || stat(daemon).is_none()).await;
    eventually("the server has no children", || {
        children(server_pid).is_empty()
    })
    .await;
    terminate_and_wait(running).await;
}
