//! Composition root: builds every component from the configuration, binds
//! the gRPC and HTTP listeners, serves until told to stop, then drains
//! in-flight requests. No global state: everything is built here and
//! passed down.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::{Identity, ServerTlsConfig};

use crate::grpc::proto::repository::repo_server_service_server::RepoServerServiceServer;
use crate::grpc::proto::version::version_service_server::VersionServiceServer;
use crate::grpc::{RepoServer, VersionServer};
use crate::metrics::Metrics;
use crate::pipeline::{self, Pipeline};
use crate::{cache, exec, git, render, source};

/// How the gRPC port speaks.
#[derive(Debug, Clone)]
pub enum Tls {
    /// Plaintext HTTP/2 (`--disable-tls`).
    Disabled,
    /// TLS with the certificate and key in these files when both exist,
    /// else a self-signed certificate generated at start.
    Enabled {
        cert_path: PathBuf,
        key_path: PathBuf,
    },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub tls: Tls,
    /// Largest gRPC message received or sent (`ARGOCD_GRPC_MAX_SIZE_MB`).
    pub max_message_bytes: usize,
    /// Parent of the private work directory (`$TMPDIR`).
    pub temp_dir: PathBuf,
    pub exec: exec::Config,
    pub git: git::Config,
    pub render: render::Config,
    pub pipeline: pipeline::Config,
    pub cache: cache::Config,
    pub webhook: crate::webhook::Config,
    pub charts: crate::charts::Config,
    /// How long a stop waits for in-flight requests and open connections
    /// before closing them anyway.
    pub shutdown_grace: Duration,
    /// Client connections older than this are asked to reconnect (so they
    /// spread over new replicas); `None`: never.
    pub max_connection_age: Option<Duration>,
    /// Keep the work directory (`$TMPDIR/manifold`) for the next start, so
    /// object stores survive restarts; else a throwaway one.
    pub persistent_work_dir: bool,
    /// Most bytes of object stores, snapshots and chart archives kept;
    /// `None`: no limit.
    pub disk_budget: Option<u64>,
    /// How often unused snapshots are dropped and the budget enforced.
    pub janitor_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create work directory under {dir}: {source}")]
    WorkDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cache setup failed: {message}")]
    Cache { message: String },
    #[error("TLS setup failed: {message}")]
    Tls { message: String },
    #[error("server failed: {message}")]
    Serve { message: String },
}

/// A running server.
pub struct Server {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    certificate_pem: Option<String>,
    stop: watch::Sender<bool>,
    shutdown_grace: Duration,
    grpc_task: JoinHandle<Result<(), Error>>,
    http_task: JoinHandle<Result<(), Error>>,
    janitor: JoinHandle<()>,
    webhook_worker: JoinHandle<()>,
    /// Locked while the server runs (a throwaway one is removed when the
    /// server is dropped).
    _work_dir: crate::disk::WorkDir,
}

impl Server {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The PEM certificate the gRPC port presents, when TLS is on.
    pub fn certificate_pem(&self) -> Option<&str> {
        self.certificate_pem.as_deref()
    }

    /// Stops accepting, lets in-flight requests finish (for at most the
    /// grace period; connections still open then are closed), then returns.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        let _ = self.stop.send(true);
        self.janitor.abort();
        self.webhook_worker.abort();
        let drained = tokio::time::timeout(self.shutdown_grace, async {
            let grpc = (&mut self.grpc_task).await;
            let http = (&mut self.http_task).await;
            (grpc, http)
        })
        .await;
        let Ok((grpc, http)) = drained else {
            tracing::warn!(grace = ?self.shutdown_grace, "connections still open after the grace period, closing them");
            self.grpc_task.abort();
            self.http_task.abort();
            return Ok(());
        };
        for joined in [grpc, http] {
            match joined {
                Ok(result) => result?,
                Err(err) => {
                    return Err(Error::Serve {
                        message: err.to_string(),
                    })
                }
            }
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.janitor.abort();
        self.webhook_worker.abort();
    }
}

fn load_or_generate_identity(tls: &Tls) -> Result<Option<(String, String)>, Error> {
    let Tls::Enabled {
        cert_path,
        key_path,
    } = tls
    else {
        return Ok(None);
    };
    if let (Ok(cert), Ok(key)) = (
        std::fs::read_to_string(cert_path),
        std::fs::read_to_string(key_path),
    ) {
        tracing::info!(cert = %cert_path.display(), "using TLS certificate from files");
        return Ok(Some((cert, key)));
    }
    tracing::info!("no TLS certificate configured, generating a self-signed one");
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "reposerver".to_string()])
            .map_err(|err| Error::Tls {
                message: err.to_string(),
            })?;
    Ok(Some((
        generated.cert.pem(),
        generated.signing_key.serialize_pem(),
    )))
}

/// Binds both ports and starts serving in the background.
pub async fn start(config: Config) -> Result<Server, Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();

    let work_dir = if config.persistent_work_dir {
        crate::disk::WorkDir::persistent(&config.temp_dir)
    } else {
        crate::disk::WorkDir::temporary(&config.temp_dir)
    }
    .map_err(|source| Error::WorkDir {
        dir: config.temp_dir.clone(),
        source,
    })?;
    // Created 0700: private to this user.
    let repos_dir = work_dir.path().join("repos");
    let snapshots_dir = work_dir.path().join("snapshots");
    for dir in [&repos_dir, &snapshots_dir] {
        std::fs::create_dir_all(dir).map_err(|source| Error::WorkDir {
            dir: dir.clone(),
            source,
        })?;
    }

    let metrics = Arc::new(Metrics::new());
    let supervisor = exec::Supervisor::with_metrics(config.exec.clone(), metrics.exec.clone());
    let render_dir = work_dir.path().join("render");
    let tools = render::Tools::new(
        supervisor.clone(),
        config.render.clone(),
        render_dir.clone(),
    )
    .map_err(|source| Error::WorkDir {
        dir: render_dir,
        source,
    })?;
    let stores = Arc::new(
        git::Stores::new(repos_dir, config.git.clone(), supervisor)
            .with_metrics(metrics.git.clone()),
    );
    let snapshots = Arc::new(source::Snapshots::new(
        snapshots_dir,
        metrics.source.clone(),
    ));
    let cache = Arc::new(
        cache::Cache::new(
            config.cache.clone(),
            metrics.redis.clone(),
            metrics.cache.clone(),
        )
        .map_err(|err| Error::Cache {
            message: err.to_string(),
        })?,
    );
    let charts_dir = work_dir.path().join("charts");
    std::fs::create_dir_all(&charts_dir).map_err(|source| Error::WorkDir {
        dir: charts_dir.clone(),
        source,
    })?;
    metrics
        .disk
        .budget
        .set(config.disk_budget.unwrap_or(0).min(i64::MAX as u64) as i64);
    let budget = crate::disk::Budget {
        limit: config.disk_budget,
        stores: stores.clone(),
        snapshots: snapshots.clone(),
        snapshots_dir: work_dir.path().join("snapshots"),
        charts_dir: charts_dir.clone(),
        metrics: metrics.disk.clone(),
    };
    let janitor = tokio::spawn({
        // Unused snapshots are also dropped when renders ask for others;
        // this catches the ones left when traffic stops, and keeps the
        // disk within its budget.
        let budget = Arc::new(budget);
        let interval = config.janitor_interval;
        async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                let budget = budget.clone();
                let dropped = tokio::task::spawn_blocking(move || {
                    let dropped = budget.snapshots.sweep();
                    budget.enforce();
                    dropped
                })
                .await
                .unwrap_or(0);
                if dropped > 0 {
                    tracing::debug!(dropped, "removed unused snapshots");
                }
            }
        }
    });
    let charts = Arc::new(crate::charts::Charts::new(
        config.charts.clone(),
        charts_dir,
    ));
    let pipeline = Arc::new(Pipeline::new(
        stores,
        snapshots,
        Arc::new(tools),
        config.pipeline.clone(),
        metrics.render.clone(),
        cache.clone(),
        charts,
    ));
    let (webhooks, webhook_worker) = crate::webhook::start(
        config.webhook.clone(),
        pipeline.clone(),
        cache,
        metrics.webhook.clone(),
    );
    let mut private_paths = vec![work_dir.path().to_path_buf()];
    if let Ok(canonical) = work_dir.path().canonicalize() {
        private_paths.push(canonical);
    }
    let repo_server = RepoServer::new(pipeline, private_paths);

    let identity = load_or_generate_identity(&config.tls)?;
    let grpc_listener = TcpListener::bind(config.grpc_addr)
        .await
        .map_err(|source| Error::Bind {
            what: "gRPC port",
            addr: config.grpc_addr,
            source,
        })?;
    let http_listener = TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| Error::Bind {
            what: "HTTP port",
            addr: config.http_addr,
            source,
        })?;
    let grpc_addr = grpc_listener.local_addr().map_err(|source| Error::Bind {
        what: "gRPC port",
        addr: config.grpc_addr,
        source,
    })?;
    let http_addr = http_listener.local_addr().map_err(|source| Error::Bind {
        what: "HTTP port",
        addr: config.http_addr,
        source,
    })?;

    let (stop, stopped) = watch::channel(false);
    let wait_for_stop = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let mut builder = tonic::transport::Server::builder();
    if let Some(age) = config.max_connection_age {
        // In-flight calls get the shutdown grace to finish after GOAWAY.
        builder = builder
            .max_connection_age(age)
            .max_connection_age_grace(config.shutdown_grace);
    }
    if let Some((cert, key)) = &identity {
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
            .map_err(|err| Error::Tls {
                message: err.to_string(),
            })?;
    }
    let max = config.max_message_bytes;
    let router = builder
        .layer(crate::grpc::metrics::GrpcMetricsLayer::new(
            metrics.grpc.clone(),
        ))
        .add_service(health_service)
        .add_service(VersionServiceServer::new(VersionServer))
        .add_service(
            RepoServerServiceServer::new(repo_server)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        );
    let grpc_stop = wait_for_stop(stopped.clone());
    let grpc_task = tokio::spawn(async move {
        router
            // TCP_NODELAY, as Go (and so Argo CD) sets it: without it,
            // small responses wait for Nagle's algorithm (~40 ms stalls).
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
                grpc_stop,
            )
            .await
            .map_err(|err| Error::Serve {
                message: err.to_string(),
            })
    });
    let self_check = crate::http::SelfCheck {
        addr: SocketAddr::new(
            if grpc_addr.ip().is_unspecified() {
                if grpc_addr.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                }
            } else {
                grpc_addr.ip()
            },
            grpc_addr.port(),
        ),
        certificate: identity.as_ref().and_then(|(cert, _)| {
            rustls::pki_types::pem::PemObject::from_pem_slice(cert.as_bytes())
                .ok()
                .map(|der: rustls::pki_types::CertificateDer<'static>| der.to_vec())
        }),
    };
    let http_stop = wait_for_stop(stopped);
    let http_task = tokio::spawn(async move {
        axum::serve(
            http_listener,
            crate::http::router(metrics, self_check).merge(crate::webhook::router(webhooks)),
        )
        .with_graceful_shutdown(http_stop)
        .await
        .map_err(|err| Error::Serve {
            message: err.to_string(),
        })
    });
    tracing::info!(grpc = %grpc_addr, http = %http_addr, tls = identity.is_some(), "manifold is serving");
    Ok(Server {
        grpc_addr,
        http_addr,
        certificate_pem: identity.map(|(cert, _)| cert),
        stop,
        shutdown_grace: config.shutdown_grace,
        grpc_task,
        http_task,
        janitor,
        webhook_worker,
        _work_dir: work_dir,
    })
}

/// Serves until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn run(config: Config) -> Result<(), Error> {
    // Handlers first: a stop requested the moment we are serving must
    // drain, not kill.
    let signal_error = |err: std::io::Error| Error::Serve {
        message: format!("cannot install signal handlers: {err}"),
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(signal_error)?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(signal_error)?;
    let server = start(config).await?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received, draining"),
        _ = interrupt.recv() => tracing::info!("SIGINT received, draining"),
    }
    server.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}
