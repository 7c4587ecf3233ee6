//! Caching and sharing of work: [`key`] composes every cache and flight
//! key; [`flight`] lets concurrent requests for the same work share one
//! execution; [`Cache`] is the two-tier store (in-process [`memory`], then
//! the shared [`redis`] tier when configured) with values framed by
//! [`codec`].

pub mod codec;
pub mod flight;
pub mod key;
pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::{CacheLabels, CacheMetrics};

/// The Redis channel of replica-to-replica events (key prefix applies).
const EVENTS: &str = "manifold|events|v1";

/// Cache settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Bytes the in-process tier may hold.
    pub memory_bytes: u64,
    /// The shared tier; `None` runs on the in-process tier alone.
    pub redis: Option<redis::Config>,
    pub compression: codec::Compression,
    /// `--repo-cache-expiration`: manifests.
    pub repo_cache_expiration: Duration,
    /// `--revision-cache-expiration`: ref listings.
    pub revision_cache_expiration: Duration,
    /// `--revision-cache-lock-timeout`; zero disables the cross-replica
    /// ls-remote lock.
    pub revision_cache_lock_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            memory_bytes: 256 << 20,
            redis: None,
            compression: codec::Compression::Gzip,
            repo_cache_expiration: Duration::from_secs(24 * 3600),
            revision_cache_expiration: Duration::from_secs(180),
            revision_cache_lock_timeout: Duration::from_secs(10),
        }
    }
}

/// The two tiers. Reads try memory, then Redis (promoting a hit into
/// memory); writes go to both. Redis trouble is a miss, never an error.
pub struct Cache {
    memory: memory::Memory,
    shared: Option<redis::Shared>,
    compression: codec::Compression,
    metrics: CacheMetrics,
    pub config: Config,
}

impl Cache {
    /// Must be called within a tokio runtime (the Redis client connects
    /// lazily in the background).
    pub fn new(
        config: Config,
        redis_metrics: crate::metrics::RedisMetrics,
        metrics: CacheMetrics,
    ) -> Result<Cache, redis::Error> {
        let shared = match &config.redis {
            Some(redis) => Some(redis::Shared::new(redis, redis_metrics)?),
            None => None,
        };
        Ok(Cache {
            memory: memory::Memory::new(config.memory_bytes),
            shared,
            compression: config.compression,
            metrics,
            config,
        })
    }

    fn count(&self, kind: &'static str, result: &'static str) {
        self.metrics
            .lookups
            .get_or_create(&CacheLabels { kind, result })
            .inc();
    }

    /// The value under `key`; a Redis hit is kept in memory for `ttl` or
    /// what Redis has left of its lifetime, whichever is shorter.
    pub async fn get(&self, kind: &'static str, key: &str, ttl: Duration) -> Option<Arc<[u8]>> {
        if let Some(value) = self.memory.get(key) {
            self.count(kind, "memory");
            return Some(value);
        }
        if let Some(shared) = &self.shared {
            // Boxed: the Redis round trip's state would otherwise enlarge
            // every caller's future, memory hits included.
            if let Some((value, remaining)) = Box::pin(shared.get(key)).await {
                let Some(value) = codec::decode(&value) else {
                    self.count(kind, "miss");
                    return None;
                };
                let value: Arc<[u8]> = Arc::from(value);
                // Kept in memory no longer than Redis keeps it, so an entry
                // never outlives its period on a replica.
                let ttl = remaining.map_or(ttl, |left| left.min(ttl));
                self.memory.insert(key, value.clone(), ttl);
                self.count(kind, "redis");
                return Some(value);
            }
        }
        self.count(kind, "miss");
        None
    }

    /// Only the in-process tier.
    pub fn get_local(&self, key: &str) -> Option<Arc<[u8]>> {
        self.memory.get(key)
    }

    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) {
        self.memory.insert(key, Arc::from(value), ttl);
        if let Some(shared) = &self.shared {
            let stored = codec::encode(value, self.compression);
            shared.set(key, &stored, ttl).await;
        }
    }

    /// Writes `value` where every replica reads it first: Redis when there
    /// is a shared tier (dropping any in-process copy, which could go
    /// stale), else the in-process tier. For records replicas update in
    /// turn (failure counts).
    pub async fn set_shared(&self, key: &str, value: &[u8], ttl: Duration) {
        match &self.shared {
            Some(shared) => {
                self.memory.remove(key);
                shared
                    .set(key, &codec::encode(value, self.compression), ttl)
                    .await;
            }
            None => self.memory.insert(key, Arc::from(value), ttl),
        }
    }

    /// Drops the in-process copy of `key` when a shared tier holds the
    /// authoritative one.
    pub fn forget_local(&self, key: &str) {
        if self.shared.is_some() {
            self.memory.remove(key);
        }
    }

    pub async fn delete(&self, key: &str) {
        self.memory.remove(key);
        if let Some(shared) = &self.shared {
            shared.delete(key).await;
        }
    }

    /// Takes the cross-replica lease `key` for `ttl`: `true` when this
    /// caller holds it, or when there is no shared tier (or it cannot be
    /// asked) to coordinate with.
    pub async fn lease(&self, key: &str, token: &str, ttl: Duration) -> bool {
        match &self.shared {
            Some(shared) => shared.set_nx(key, token, ttl).await.unwrap_or(true),
            None => true,
        }
    }

    /// Keeps a lease taken with `token` for another `ttl`; `false` when it
    /// is no longer ours.
    pub async fn renew(&self, key: &str, token: &str, ttl: Duration) -> bool {
        match &self.shared {
            Some(shared) => shared.extend_if(key, token, ttl).await.unwrap_or(true),
            None => true,
        }
    }

    /// Releases a lease taken with `token`, if still held.
    pub async fn release(&self, key: &str, token: &str) {
        if let Some(shared) = &self.shared {
            shared.delete_if(key, token).await;
        }
    }

    /// Tells every replica `message` (through Redis); `false` when there
    /// is no shared tier or it could not be asked.
    pub async fn broadcast(&self, message: &[u8]) -> bool {
        match &self.shared {
            Some(shared) => shared.publish(EVENTS, message).await,
            None => false,
        }
    }

    /// What other replicas [`Cache::broadcast`] (this one's own messages
    /// included); `None` without a shared tier.
    pub fn events(&self) -> Option<tokio::sync::mpsc::Receiver<Vec<u8>>> {
        self.shared.as_ref().map(|shared| shared.subscribe(EVENTS))
    }

    /// Whether a shared tier is configured.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }
}
