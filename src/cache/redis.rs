//! The shared tier: Redis, reached through one auto-reconnecting
//! connection. Redis being slow, refusing or gone never fails a request:
//! every operation has a deadline, and an error is a miss (reads) or a
//! skipped write, logged and counted, while the connection reconnects in
//! the background.

use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use crate::metrics::{RedisMetrics, RedisRequestLabels};

/// How to reach Redis (Argo CD's flags and variables).
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// `host:port`.
    pub address: String,
    pub db: i64,
    pub username: String,
    pub password: String,
    pub tls: bool,
    pub insecure_skip_tls_verify: bool,
    /// Prepended to every key (`ARGOCD_REDIS_KEY_PREFIX`).
    pub key_prefix: String,
    /// Deadline of one operation.
    pub timeout: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("address", &self.address)
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

/// The shared tier. Cheap to clone.
#[derive(Clone)]
pub struct Shared {
    connection: ConnectionManager,
    key_prefix: String,
    timeout: Duration,
    metrics: RedisMetrics,
}

impl Shared {
    /// A client that connects on first use and reconnects by itself.
    /// Must be called within a tokio runtime.
    pub fn new(config: &Config, metrics: RedisMetrics) -> Result<Shared, Error> {
        let invalid = |message: String| Error::Address {
            address: config.address.clone(),
            message,
        };
        if config.address.contains(['/', '@', '?', '#']) || config.address.is_empty() {
            return Err(invalid("expected host:port".to_string()));
        }
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
        let url = format!(
            "{scheme}://{userinfo}{}/{}{fragment}",
            config.address, config.db
        );
        // The URL holds the password: errors must not echo it.
        let client =
            redis::Client::open(url).map_err(|err| invalid(format!("{:?}", err.kind())))?;
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let connection = ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(|err| invalid(format!("{:?}", err.kind())))?;
        Ok(Shared {
            connection,
            key_prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            metrics,
        })
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
        if outcome.is_none() {
            self.metrics.degraded.set(1);
        } else {
            self.metrics.degraded.set(0);
        }
        outcome
    }

    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut connection = self.connection.clone();
        let key = self.key(key);
        self.run("get", async move {
            connection.get::<_, Option<Vec<u8>>>(key).await
        })
        .await
        .flatten()
    }

    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) {
        let mut connection = self.connection.clone();
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
        let mut connection = self.connection.clone();
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
        let mut connection = self.connection.clone();
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
        let mut connection = self.connection.clone();
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

    pub async fn delete(&self, key: &str) {
        let mut connection = self.connection.clone();
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
