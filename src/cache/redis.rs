//! The shared tier: Redis, reached through one auto-reconnecting
//! connection. Redis being slow, refusing or gone never fails a request:
//! every operation has a deadline, and an error is a miss (reads) or a
//! skipped write, logged and counted, while the connection reconnects in
//! the background.

use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use crate::metrics::{RedisMetrics, RedisRequestLabels};

/// Where the Redis master is.
#[derive(Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `host:port`.
    Direct(String),
    /// Asked of these Sentinels (`host:port`), for the master `master`.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
        username: String,
        password: String,
    },
}

impl std::fmt::Debug for Endpoint {
    /// Never shows the Sentinel password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Direct(address) => f.debug_tuple("Direct").field(address).finish(),
            Endpoint::Sentinel {
                sentinels,
                master,
                username,
                ..
            } => f
                .debug_struct("Sentinel")
                .field("sentinels", sentinels)
                .field("master", master)
                .field("username", username)
                .finish_non_exhaustive(),
        }
    }
}

/// How to reach Redis (Argo CD's flags and variables).
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    pub endpoint: Endpoint,
    pub db: i64,
    pub username: String,
    pub password: String,
    pub tls: bool,
    pub insecure_skip_tls_verify: bool,
    /// PEM client certificate and key (mutual TLS), when given.
    pub client_certificate: Option<(Vec<u8>, Vec<u8>)>,
    /// PEM CA certificates to trust instead of the system's, when given.
    pub ca_certificate: Option<Vec<u8>>,
    /// Prepended to every key (`ARGOCD_REDIS_KEY_PREFIX`).
    pub key_prefix: String,
    /// Deadline of one operation.
    pub timeout: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let endpoint = match &self.endpoint {
            Endpoint::Direct(address) => address.clone(),
            Endpoint::Sentinel {
                sentinels, master, ..
            } => format!("sentinel {master} at {}", sentinels.join(",")),
        };
        f.debug_struct("Config")
            .field("endpoint", &endpoint)
            .field("db", &self.db)
            .field("username", &self.username)
            .field(
                "password",
                &if self.password.is_empty() { "" } else { "***" },
            )
            .field("tls", &self.tls)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid Redis address {address:?}: {message}")]
    Address { address: String, message: String },
}

/// The client certificate and CA to use, when any is configured.
fn tls_certificates(config: &Config) -> Option<redis::TlsCertificates> {
    if config.client_certificate.is_none() && config.ca_certificate.is_none() {
        return None;
    }
    Some(redis::TlsCertificates {
        client_tls: config
            .client_certificate
            .clone()
            .map(|(client_cert, client_key)| redis::ClientTlsConfig {
                client_cert,
                client_key,
            }),
        root_cert: config.ca_certificate.clone(),
    })
}

/// Percent-encodes a URL user-info part.
fn encode_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A master found through Sentinel, rediscovered after a failure.
struct Discovered {
    sentinel: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
    manager: redis::aio::ConnectionManagerConfig,
    current: std::sync::Mutex<Option<ConnectionManager>>,
}

/// How commands reach Redis.
#[derive(Clone)]
enum Connection {
    /// The manager for commands, and the client for subscriptions.
    Direct(ConnectionManager, Box<redis::Client>),
    Sentinel(std::sync::Arc<Discovered>),
}

/// After a failure Redis is left alone for a while (doubling up to
/// [`MAX_BACKOFF`]), so a dead or black-holed Redis costs one deadline per
/// period instead of one per command.
#[derive(Default)]
struct Breaker {
    open_until: Option<Instant>,
    backoff: Duration,
}

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often an idle subscription checks that Redis is still there.
const SUBSCRIPTION_PING: Duration = Duration::from_secs(15);

/// The shared tier. Cheap to clone.
#[derive(Clone)]
pub struct Shared {
    breaker: std::sync::Arc<std::sync::Mutex<Breaker>>,
    connection: Connection,
    key_prefix: String,
    timeout: Duration,
    metrics: RedisMetrics,
}

impl Shared {
    /// A client that connects on first use and reconnects by itself.
    /// Must be called within a tokio runtime.
    pub fn new(config: &Config, metrics: RedisMetrics) -> Result<Shared, Error> {
        let invalid = |message: String| Error::Address {
            address: format!("{config:?}"),
            message,
        };
        let check = |address: &str| {
            if address.contains(['/', '@', '?', '#']) || !address.contains(':') {
                return Err(Error::Address {
                    address: address.to_string(),
                    message: "expected host:port".to_string(),
                });
            }
            Ok(())
        };
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let connection = match &config.endpoint {
            Endpoint::Direct(address) => {
                check(address)?;
                let scheme = if config.tls { "rediss" } else { "redis" };
                let userinfo = match (config.username.is_empty(), config.password.is_empty()) {
                    (true, true) => String::new(),
                    (_, _) => format!(
                        "{}:{}@",
                        encode_userinfo(&config.username),
                        encode_userinfo(&config.password)
                    ),
                };
                let fragment = if config.tls && config.insecure_skip_tls_verify {
                    "#insecure"
                } else {
                    ""
                };
                let url = format!("{scheme}://{userinfo}{address}/{}{fragment}", config.db);
                // The URL holds the password: errors must not echo it.
                let client = match tls_certificates(config) {
                    Some(certificates) if config.tls => {
                        redis::Client::build_with_tls(url, certificates)
                    }
                    _ => redis::Client::open(url),
                }
                .map_err(|err| invalid(format!("{:?}", err.kind())))?;
                Connection::Direct(
                    ConnectionManager::new_lazy_with_config(client.clone(), manager)
                        .map_err(|err| invalid(format!("{:?}", err.kind())))?,
                    Box::new(client),
                )
            }
            Endpoint::Sentinel {
                sentinels,
                master,
                username,
                password,
            } => {
                let mut addresses = Vec::new();
                for address in sentinels {
                    check(address)?;
                    let (host, port) = address.rsplit_once(':').expect("checked");
                    let port = port.parse().map_err(|_| Error::Address {
                        address: address.clone(),
                        message: "bad port".to_string(),
                    })?;
                    addresses.push(redis::ConnectionAddr::Tcp(host.to_string(), port));
                }
                let tls = config.tls.then_some(if config.insecure_skip_tls_verify {
                    redis::TlsMode::Insecure
                } else {
                    redis::TlsMode::Secure
                });
                let mut builder = redis::sentinel::SentinelClientBuilder::new(
                    addresses,
                    master,
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(|err| invalid(format!("{:?}", err.kind())))?
                .set_client_to_redis_db(config.db);
                if let Some(tls) = tls {
                    builder = builder.set_client_to_redis_tls_mode(tls);
                    if let Some(certificates) = tls_certificates(config) {
                        builder = builder.set_client_to_redis_certificates(certificates);
                    }
                }
                if !config.username.is_empty() {
                    builder = builder.set_client_to_redis_username(&config.username);
                }
                if !config.password.is_empty() {
                    builder = builder.set_client_to_redis_password(&config.password);
                }
                if !username.is_empty() {
                    builder = builder.set_client_to_sentinel_username(username);
                }
                if !password.is_empty() {
                    builder = builder.set_client_to_sentinel_password(password);
                }
                let sentinel = builder
                    .build()
                    .map_err(|err| invalid(format!("{:?}", err.kind())))?;
                Connection::Sentinel(std::sync::Arc::new(Discovered {
                    sentinel: tokio::sync::Mutex::new(sentinel),
                    manager,
                    current: std::sync::Mutex::new(None),
                }))
            }
        };
        Ok(Shared {
            breaker: Default::default(),
            connection,
            key_prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            metrics,
        })
    }

    /// A connection to the master: the direct one, or the one Sentinel
    /// named last (asking the Sentinels again when there is none).
    async fn connection(&self) -> Option<ConnectionManager> {
        match &self.connection {
            Connection::Direct(manager, _) => Some(manager.clone()),
            Connection::Sentinel(discovered) => {
                if let Some(current) = discovered.current.lock().ok()?.clone() {
                    return Some(current);
                }
                let mut sentinel = tokio::time::timeout(self.timeout, discovered.sentinel.lock())
                    .await
                    .ok()?;
                // Someone else may have asked while we waited.
                if let Some(current) = discovered.current.lock().ok()?.clone() {
                    return Some(current);
                }
                let client = tokio::time::timeout(self.timeout, sentinel.async_get_client())
                    .await
                    .ok()?
                    .map_err(
                        |err| tracing::warn!(error = %err, "redis sentinel did not name a master"),
                    )
                    .ok()?;
                let manager =
                    ConnectionManager::new_lazy_with_config(client, discovered.manager.clone())
                        .ok()?;
                *discovered.current.lock().ok()? = Some(manager.clone());
                Some(manager)
            }
        }
    }

    /// After a failure through Sentinel: forget the master, so the next
    /// command asks again (it may have failed over).
    fn forget_master(&self) {
        if let Connection::Sentinel(discovered) = &self.connection {
            if let Ok(mut current) = discovered.current.lock() {
                *current = None;
            }
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.key_prefix)
    }

    /// Runs one command under the deadline, recording it in the metrics;
    /// `None` when it failed or timed out.
    async fn run<T>(
        &self,
        command: &'static str,
        operation: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        let started = Instant::now();
        if let Ok(breaker) = self.breaker.lock() {
            if breaker.open_until.is_some_and(|until| started < until) {
                return None;
            }
        }
        let result = tokio::time::timeout(self.timeout, operation).await;
        self.metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        let outcome = match result {
            Ok(Ok(value)) => Some(value),
            Ok(Err(err)) => {
                tracing::warn!(command, error = %err, "redis command failed; serving without the shared cache");
                None
            }
            Err(_) => {
                tracing::warn!(command, timeout = ?self.timeout, "redis command timed out; serving without the shared cache");
                None
            }
        };
        self.metrics
            .requests
            .get_or_create(&RedisRequestLabels {
                initiator: "argocd-repo-server",
                command,
                failed: if outcome.is_some() { "false" } else { "true" },
            })
            .inc();
        if let Ok(mut breaker) = self.breaker.lock() {
            if outcome.is_none() {
                breaker.backoff = (breaker.backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
                breaker.open_until = Some(Instant::now() + breaker.backoff);
            } else {
                *breaker = Breaker::default();
            }
        }
        if outcome.is_none() {
            self.metrics.degraded.set(1);
            self.forget_master();
        } else {
            self.metrics.degraded.set(0);
        }
        outcome
    }

    /// The value under `key` and how long it has left to live.
    pub async fn get(&self, key: &str) -> Option<(Vec<u8>, Option<Duration>)> {
        let Some(mut connection) = self.connection().await else {
            self.metrics.degraded.set(1);
            return None;
        };
        let key = self.key(key);
        let (value, pttl) = self
            .run("get", async move {
                redis::pipe()
                    .get(&key)
                    .pttl(&key)
                    .query_async::<(Option<Vec<u8>>, i64)>(&mut connection)
                    .await
            })
            .await?;
        let remaining = u64::try_from(pttl).ok().map(Duration::from_millis);
        value.map(|value| (value, remaining))
    }

    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) {
        let Some(mut connection) = self.connection().await else {
            self.metrics.degraded.set(1);
            return Default::default();
        };
        let key = self.key(key);
        let millis = ttl.as_millis().clamp(1, u64::MAX as u128) as u64;
        let options = redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(millis));
        self.run("set", async move {
            connection
                .set_options::<_, _, ()>(key, value, options)
                .await
        })
        .await;
    }

    /// Sets `key` to `value` only if it does not exist; `Some(true)` when
    /// it was set, `None` when Redis could not be asked.
    pub async fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> Option<bool> {
        let Some(mut connection) = self.connection().await else {
            self.metrics.degraded.set(1);
            return Default::default();
        };
        let key = self.key(key);
        let millis = ttl.as_millis().clamp(1, u64::MAX as u128) as u64;
        let options = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(millis));
        self.run("set", async move {
            connection
                .set_options::<_, _, Option<String>>(key, value, options)
                .await
        })
        .await
        .map(|reply| reply.is_some())
    }

    /// Deletes `key` if it still holds `value` (releasing a lease only if
    /// it is still ours).
    pub async fn delete_if(&self, key: &str, value: &str) {
        let Some(mut connection) = self.connection().await else {
            self.metrics.degraded.set(1);
            return Default::default();
        };
        let key = self.key(key);
        let script = redis::Script::new(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end",
        );
        self.run("eval", async move {
            script
                .key(key)
                .arg(value)
                .invoke_async::<i64>(&mut connection)
                .await
        })
        .await;
    }

    /// Extends `key`'s lifetime to `ttl` if it still holds `value`;
    /// `Some(true)` when it did.
    pub async fn extend_if(&self, key: &str, value: &str, ttl: Duration) -> Option<bool> {
        let Some(mut connection) = self.connection().await else {
            self.metrics.degraded.set(1);
            return Default::default();
        };
        let key = self.key(key);
        let millis = ttl.as_millis().clamp(1, u64::MAX as u128) as u64;
        let script = redis::Script::new(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end",
        );
        self.run("eval", async move {
            script
                .key(key)
                .arg(value)
                .arg(millis)
                .invoke_async::<i64>(&mut connection)
                .await
        })
        .await
        .map(|extended| extended == 1)
    }

    /// Publishes `message` on `channel` (prefixed like keys); `false` when
    /// Redis could not be asked.
    pub async fn publish(&self, channel: &str, message: &[u8]) -> bool {
        let Some(mut connection) = self.connection().await else {
            self.metrics.degraded.set(1);
            return false;
        };
        let channel = self.key(channel);
        self.run("publish", async move {
            connection.publish::<_, _, i64>(channel, message).await
        })
        .await
        .is_some()
    }

    /// Every message published on `channel` from now on, for as long as
    /// the receiver is kept. The subscription reconnects by itself
    /// (through Sentinel again when configured); messages published while
    /// it is down are lost.
    pub fn subscribe(&self, channel: &str) -> tokio::sync::mpsc::Receiver<Vec<u8>> {
        let (sender, receiver) = tokio::sync::mpsc::channel(256);
        let (shared, channel) = (self.clone(), self.key(channel));
        tokio::spawn(async move {
            let mut backoff = MIN_BACKOFF;
            while !sender.is_closed() {
                if let Err(err) = shared.listen(&channel, &sender, &mut backoff).await {
                    tracing::warn!(error = %err, "redis subscription lost; reconnecting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        });
        receiver
    }

    /// One subscription until its connection ends (or stops answering
    /// pings) or the receiver goes; `backoff` is reset once subscribed.
    async fn listen(
        &self,
        channel: &str,
        sender: &tokio::sync::mpsc::Sender<Vec<u8>>,
        backoff: &mut Duration,
    ) -> Result<(), String> {
        use tokio_stream::StreamExt;
        let client = match &self.connection {
            Connection::Direct(_, client) => (**client).clone(),
            Connection::Sentinel(discovered) => {
                let mut sentinel = discovered.sentinel.lock().await;
                tokio::time::timeout(self.timeout, sentinel.async_get_client())
                    .await
                    .map_err(|_| "sentinel timed out".to_string())?
                    .map_err(|err| err.to_string())?
            }
        };
        let mut pubsub = tokio::time::timeout(self.timeout, client.get_async_pubsub())
            .await
            .map_err(|_| "connecting timed out".to_string())?
            .map_err(|err| err.to_string())?;
        tokio::time::timeout(self.timeout, pubsub.subscribe(channel))
            .await
            .map_err(|_| "subscribing timed out".to_string())?
            .map_err(|err| err.to_string())?;
        *backoff = MIN_BACKOFF;
        let (mut sink, mut messages) = pubsub.split();
        // A connection that silently went away (no RST) is found by a ping.
        let mut ping = tokio::time::interval(SUBSCRIPTION_PING);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(message) => {
                        if sender.send(message.get_payload_bytes().to_vec()).await.is_err() {
                            return Ok(());
                        }
                    }
                    None => return Err("connection closed".to_string()),
                },
                _ = ping.tick() => {
                    tokio::time::timeout(self.timeout, sink.ping::<redis::Value>())
                        .await
                        .map_err(|_| "ping timed out".to_string())?
                        .map_err(|err| err.to_string())?;
                }
                _ = sender.closed() => return Ok(()),
            }
        }
    }

    pub async fn delete(&self, key: &str) {
        let Some(mut connection) = self.connection().await else {
            self.metrics.degraded.set(1);
            return Default::default();
        };
        let key = self.key(key);
        self.run("del", async move { connection.del::<_, i64>(key).await })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_percent_encoded() {
        assert_eq!(encode_userinfo("a:b@c/d"), "a%3Ab%40c%2Fd");
        assert_eq!(encode_userinfo("plain-1.2_3~"), "plain-1.2_3~");
    }
}
