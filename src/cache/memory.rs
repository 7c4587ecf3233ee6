//! The in-process tier: moka, bounded by bytes, each entry with its own
//! time to live.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;
use moka::Expiry;

#[derive(Clone)]
struct Stored {
    value: Arc<[u8]>,
    ttl: Duration,
}

struct PerEntry;

impl Expiry<String, Stored> for PerEntry {
    fn expire_after_create(&self, _: &String, stored: &Stored, _: Instant) -> Option<Duration> {
        Some(stored.ttl)
    }

    fn expire_after_update(
        &self,
        _: &String,
        stored: &Stored,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(stored.ttl)
    }
}

/// Values by key, at most `max_bytes` of keys and values in all.
pub struct Memory {
    cache: Cache<String, Stored>,
}

impl Memory {
    pub fn new(max_bytes: u64) -> Self {
        Memory {
            cache: Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|key: &String, stored: &Stored| {
                    u32::try_from(key.len() + stored.value.len()).unwrap_or(u32::MAX)
                })
                .expire_after(PerEntry)
                .build(),
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<[u8]>> {
        self.cache.get(key).map(|stored| stored.value)
    }

    pub fn insert(&self, key: &str, value: Arc<[u8]>, ttl: Duration) {
        self.cache.insert(key.to_string(), Stored { value, ttl });
    }

    pub fn remove(&self, key: &str) {
        self.cache.invalidate(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_by_their_own_ttl_and_the_size_is_bounded() {
        let memory = Memory::new(1024);
        memory.insert("short", Arc::from(&b"x"[..]), Duration::from_millis(50));
        memory.insert("long", Arc::from(&b"y"[..]), Duration::from_secs(60));
        assert!(memory.get("short").is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(memory.get("short").is_none());
        assert_eq!(memory.get("long").as_deref(), Some(&b"y"[..]));
        for i in 0..100 {
            memory.insert(
                &format!("k{i}"),
                Arc::from(vec![0u8; 100]),
                Duration::from_secs(60),
            );
        }
        memory.cache.run_pending_tasks();
        assert!(memory.cache.weighted_size() <= 1024);
    }
}
