//! A scaled deployment on one machine: three `manifold serve` processes
//! sharing one Redis on loopback, as N replicas behind a Service. A stream
//! of requests for many apps spread over them (some asked of all three at
//! once) renders each app once in total, every replica serves, and a
//! replica killed mid-stream loses no request a client retries on
//! another.

mod common;

use std::time::Duration;

use common::fixtures::{GitRepo, RedisServer};
use common::process::{start, Running};
use common::*;
use manifold::grpc::proto::repository::repo_server_service_client::RepoServerServiceClient;
use tonic::transport::Channel;

const APPS: usize = 24;

fn sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics(running: &Running) -> String {
    let addr = running.http;
    tokio::task::spawn_blocking(move || common::process::http_get(addr, "/metrics"))
        .await
        .unwrap()
}

async fn connect(running: &Running) -> RepoServerServiceClient<Channel> {
    RepoServerServiceClient::connect(format!("http://{}", running.grpc))
        .await
        .unwrap()
}

#[tokio::test]
async fn three_replicas_behave_as_one() {
    let repo = GitRepo::new();
    for i in 0..APPS {
        repo.write(
            &format!("apps/app-{i:02}/cm.yaml"),
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-{i:02}\n"),
        );
    }
    repo.commit("apps");
    let url = repo.url();
    let redis = RedisServer::start();
    let address = redis.address();
    let mut replicas: Vec<Option<Running>> = (0..3)
        .map(|_| Some(start(&["--disable-tls", "--redis", &address], &[])))
        .collect();
    let mut clients = Vec::new();
    for replica in replicas.iter().flatten() {
        clients.push(Some(connect(replica).await));
    }

    // A burst first: the first third of the apps asked of all three
    // replicas at once; the Redis lease lets one of them render each.
    for app in 0..APPS / 3 {
        let request = manifest_request(&url, &format!("apps/app-{app:02}"), "main");
        let calls = clients.iter().map(|client| {
            let mut client = client.clone().unwrap();
            let request = request.clone();
            async move { client.generate_manifest(request).await }
        });
        for response in futures_join_all(calls).await {
            let response = response.unwrap().into_inner();
            assert_eq!(names(&response.manifests), [format!("app-{app:02}")]);
        }
    }

    // Three rounds over every app, round-robin over the replicas (as a
    // Service spreads new connections); the second replica dies in the
    // middle of round two, and its calls are retried on the next one.
    let mut next = 0;
    let mut answered = 0;
    let mut retried = 0;
    let mut rendered_by_victim = 0.0;
    for round in 0..3 {
        for app in 0..APPS {
            if round == 1 && app == APPS / 2 {
                // What it rendered before it dies still counts.
                let text = metrics(replicas[1].as_ref().unwrap()).await;
                rendered_by_victim = sum(&text, "manifold_renders_total", "outcome=\"ok\"");
                let mut victim = replicas[1].take().unwrap();
                victim.child.kill().unwrap();
                victim.child.wait().unwrap();
            }
            let request = manifest_request(&url, &format!("apps/app-{app:02}"), "main");
            let mut attempts = 0;
            let response = loop {
                let replica = next % 3;
                next += 1;
                let Some(client) = clients[replica].as_mut() else {
                    continue;
                };
                attempts += 1;
                match tokio::time::timeout(
                    Duration::from_secs(30),
                    client.generate_manifest(request.clone()),
                )
                .await
                {
                    Ok(Ok(response)) => break response.into_inner(),
                    // The killed replica: drop it and retry elsewhere.
                    Ok(Err(status)) if replicas[replica].is_none() => {
                        assert!(
                            matches!(
                                status.code(),
                                tonic::Code::Unavailable | tonic::Code::Unknown
                            ),
                            "{status:?}"
                        );
                        clients[replica] = None;
                        retried += 1;
                    }
                    Ok(Err(status)) => panic!("app {app} round {round}: {status:?}"),
                    Err(_) => panic!("app {app} round {round}: no answer within 30 s"),
                }
                assert!(attempts <= 3, "app {app}: no replica answered");
            };
            assert_eq!(names(&response.manifests), [format!("app-{app:02}")]);
            answered += 1;
        }
    }
    assert_eq!(answered, 3 * APPS, "every request was answered");

    // Each app was rendered once in total; every replica served calls.
    let mut rendered = 0.0;
    for replica in replicas.iter().flatten() {
        let text = metrics(replica).await;
        rendered += sum(&text, "manifold_renders_total", "outcome=\"ok\"");
        let served = sum(
            &text,
            "grpc_server_handled_total",
            "grpc_method=\"GenerateManifest\"",
        );
        assert!(served > 0.0, "a replica served nothing");
    }
    assert_eq!(
        rendered + rendered_by_victim,
        APPS as f64,
        "each app rendered exactly once across the replicas"
    );
    assert!(rendered_by_victim > 0.0, "the killed replica had served");
    assert!(
        retried >= 1,
        "a call hit the killed replica and was retried"
    );
    drop(redis);
}

/// Runs the futures concurrently and returns their outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}
