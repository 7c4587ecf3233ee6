//! Single-flight: concurrent requests for the same key share one
//! execution, which runs as its own task. The task is cancelled (and with
//! it, through the process supervisor, every process it started) when the
//! last request waiting for it goes away; a request that goes away while
//! others still wait cancels nothing.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::AbortHandle;
use tracing::Instrument;

struct Entry<T> {
    /// Tells this flight from a later one under the same key.
    id: u64,
    waiters: usize,
    result: watch::Receiver<Option<T>>,
    abort: AbortHandle,
}

struct Table<T> {
    next_id: u64,
    entries: HashMap<String, Entry<T>>,
}

/// The flights in progress, by key. Cheap to clone.
pub struct Flights<T> {
    table: Arc<Mutex<Table<T>>>,
}

impl<T> Clone for Flights<T> {
    fn clone(&self) -> Self {
        Flights {
            table: self.table.clone(),
        }
    }
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Flights {
            table: Arc::new(Mutex::new(Table {
                next_id: 0,
                entries: HashMap::new(),
            })),
        }
    }
}

/// The execution ended without a result: its task panicked or was
/// cancelled under a waiter (which cannot happen while one waits).
#[derive(Debug, thiserror::Error)]
#[error("the shared execution ended without a result")]
pub struct Lost;

/// One request's share of a flight. Dropping it before the result arrives
/// withdraws the request; the last withdrawal cancels the execution.
pub struct Waiter<T> {
    table: Arc<Mutex<Table<T>>>,
    key: String,
    id: u64,
    result: watch::Receiver<Option<T>>,
    /// Whether this waiter started the execution.
    leader: bool,
}

fn lock<T>(table: &Mutex<Table<T>>) -> std::sync::MutexGuard<'_, Table<T>> {
    // The table stays consistent across a panic in another holder: every
    // critical section is a few map operations.
    table
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<T: Clone + Send + Sync + 'static> Flights<T> {
    /// Joins the flight for `key`, starting it with `start` when none is
    /// in progress. Must be called within a tokio runtime.
    pub fn join<F>(&self, key: String, start: impl FnOnce() -> F) -> Waiter<T>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let mut table = lock(&self.table);
        if let Some(entry) = table.entries.get_mut(&key) {
            entry.waiters += 1;
            return Waiter {
                table: self.table.clone(),
                key,
                id: entry.id,
                result: entry.result.clone(),
                leader: false,
            };
        }
        table.next_id += 1;
        let id = table.next_id;
        let (sender, result) = watch::channel(None);
        let work = start();
        let finished = self.table.clone();
        let finished_key = key.clone();
        let task = tokio::spawn(
            async move {
                let value = work.await;
                {
                    let mut table = lock(&finished);
                    if table.entries.get(&finished_key).is_some_and(|e| e.id == id) {
                        table.entries.remove(&finished_key);
                    }
                }
                let _ = sender.send(Some(value));
            }
            .instrument(tracing::Span::current()),
        );
        table.entries.insert(
            key.clone(),
            Entry {
                id,
                waiters: 1,
                result: result.clone(),
                abort: task.abort_handle(),
            },
        );
        Waiter {
            table: self.table.clone(),
            key,
            id,
            result,
            leader: true,
        }
    }

    /// How many flights are in progress.
    pub fn in_progress(&self) -> usize {
        lock(&self.table).entries.len()
    }
}

impl<T: Clone> Waiter<T> {
    /// Whether this request started the execution (the others joined it).
    pub fn is_leader(&self) -> bool {
        self.leader
    }

    /// The result of the execution.
    pub async fn wait(mut self) -> Result<T, Lost> {
        match self.result.wait_for(Option::is_some).await {
            Ok(value) => Ok(value.clone().expect("checked by wait_for")),
            Err(_) => Err(Lost),
        }
    }
}

impl<T> Drop for Waiter<T> {
    fn drop(&mut self) {
        let mut table = lock(&self.table);
        let Some(entry) = table.entries.get_mut(&self.key) else {
            return;
        };
        if entry.id != self.id {
            return;
        }
        entry.waiters -= 1;
        if entry.waiters == 0 {
            entry.abort.abort();
            table.entries.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_joins_share_one_execution() {
        let flights: Flights<usize> = Flights::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let start = |runs: Arc<AtomicUsize>| {
            move || async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                runs.fetch_add(1, Ordering::SeqCst) + 41
            }
        };
        let a = flights.join("k".into(), start(runs.clone()));
        let b = flights.join("k".into(), start(runs.clone()));
        assert!(a.is_leader() && !b.is_leader());
        let (a, b) = tokio::join!(a.wait(), b.wait());
        assert_eq!((a.unwrap(), b.unwrap()), (41, 41));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flights.in_progress(), 0);
        // Finished flights are not reused.
        assert_eq!(
            flights
                .join("k".into(), start(runs.clone()))
                .wait()
                .await
                .unwrap(),
            42
        );
    }

    /// Drops a flag when the execution's future is dropped.
    struct Dropped(Arc<AtomicUsize>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn the_last_withdrawal_cancels_and_earlier_ones_do_not() {
        let flights: Flights<u8> = Flights::default();
        let dropped = Arc::new(AtomicUsize::new(0));
        let guard = Dropped(dropped.clone());
        let a = flights.join("k".into(), move || async move {
            let _guard = guard;
            tokio::time::sleep(Duration::from_millis(200)).await;
            7
        });
        let b = flights.join("k".into(), || async { unreachable!() });
        drop(a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(dropped.load(Ordering::SeqCst), 0, "b still waits");
        assert_eq!(b.wait().await.unwrap(), 7);

        let dropped = Arc::new(AtomicUsize::new(0));
        let guard = Dropped(dropped.clone());
        let c = flights.join("k".into(), move || async move {
            let _guard = guard;
            tokio::time::sleep(Duration::from_secs(60)).await;
            8
        });
        tokio::task::yield_now().await;
        drop(c);
        for _ in 0..50 {
            if dropped.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "cancelled");
        assert_eq!(flights.in_progress(), 0);
    }
}
