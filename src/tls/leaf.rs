//! The leaf-certificate cache: bounded (`tls.leaf_cache_size`), each entry reused for
//! `tls.leaf_cache_ttl`, one mint per host at a time (later callers wait for the first
//! one's result) and at most `tls.max_concurrent_mints` mints at once overall.
//!
//! When the cache is full, expired entries go first, then the oldest. Finding the oldest
//! walks the map: that happens only on a mint into a full cache, and a mint (a key
//! generation and a signature) costs more than the walk.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::sign::CertifiedKey;
use tokio::sync::{OnceCell, Semaphore};

use super::ca::{Ca, CaError, LeafName};
use super::stats::Stats;

/// A minted leaf's validity beyond its time in the cache: a client holding a connection
/// open, or with a clock running ahead, still sees a valid certificate.
pub const LEAF_VALIDITY_MARGIN: Duration = Duration::from_secs(24 * 3600);

/// One cache entry: minted once, by whoever gets there first.
struct Slot {
    leaf: OnceCell<Arc<CertifiedKey>>,
    created: Instant,
}

/// Minted leaves by name.
pub struct LeafCache {
    ca: Arc<Ca>,
    entries: Mutex<HashMap<LeafName, Arc<Slot>>>,
    capacity: usize,
    ttl: Duration,
    mints: Semaphore,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafCache")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl LeafCache {
    /// An empty cache minting with `ca`.
    pub fn new(
        ca: Arc<Ca>,
        capacity: usize,
        ttl: Duration,
        max_concurrent_mints: usize,
        stats: Arc<Stats>,
    ) -> LeafCache {
        LeafCache {
            ca,
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            ttl,
            mints: Semaphore::new(max_concurrent_mints.max(1)),
            stats,
        }
    }

    /// Leaves in the cache now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LeafName, Arc<Slot>>> {
        // A panic while holding the lock leaves a map that is still consistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The leaf for `name`: from the cache, or minted (once, however many ask at once).
    pub async fn get(&self, name: &LeafName) -> Result<Arc<CertifiedKey>, CaError> {
        let slot = {
            let mut entries = self.lock();
            match entries.get(name) {
                Some(slot) if slot.created.elapsed() < self.ttl => slot.clone(),
                _ => {
                    entries.remove(name);
                    if entries.len() >= self.capacity {
                        self.evict(&mut entries);
                    }
                    let slot = Arc::new(Slot {
                        leaf: OnceCell::new(),
                        created: Instant::now(),
                    });
                    entries.insert(name.clone(), slot.clone());
                    self.stats
                        .leaf_cache_size
                        .store(entries.len() as u64, Ordering::Relaxed);
                    slot
                }
            }
        };
        if let Some(leaf) = slot.leaf.get() {
            self.stats.leaf_cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(leaf.clone());
        }
        let validity = self.ttl + LEAF_VALIDITY_MARGIN;
        slot.leaf
            .get_or_try_init(|| async {
                let _permit = self
                    .mints
                    .acquire()
                    .await
                    .expect("the mint semaphore is never closed");
                // A mint is a P-256 key generation and one signature: well under a
                // millisecond, so it runs inline rather than on the blocking pool.
                match self.ca.mint(name, validity) {
                    Ok(leaf) => {
                        self.stats.leaf_mints.fetch_add(1, Ordering::Relaxed);
                        Ok(Arc::new(leaf))
                    }
                    Err(e) => {
                        self.stats
                            .leaf_mint_failures
                            .fetch_add(1, Ordering::Relaxed);
                        Err(e)
                    }
                }
            })
            .await
            .cloned()
    }

    /// Makes room for one entry: drops the expired ones, then the oldest if still full.
    fn evict(&self, entries: &mut HashMap<LeafName, Arc<Slot>>) {
        let ttl = self.ttl;
        entries.retain(|_, slot| slot.created.elapsed() < ttl);
        while entries.len() >= self.capacity {
            let oldest = entries
                .iter()
                .min_by_key(|(_, slot)| slot.created)
                .map(|(name, _)| name.clone());
            match oldest {
                Some(name) => entries.remove(&name),
                None => break,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ca::{CaPaths, init};

    fn cache(capacity: usize, ttl: Duration) -> (tempfile::TempDir, LeafCache, Arc<Stats>) {
        let dir = tempfile::tempdir().unwrap();
        let paths = CaPaths::in_dir(dir.path());
        init(&paths).unwrap();
        let ca = Ca::load(&paths, Arc::new(rustls::crypto::ring::default_provider())).unwrap();
        let stats = Arc::new(Stats::default());
        let cache = LeafCache::new(Arc::new(ca), capacity, ttl, 2, stats.clone());
        (dir, cache, stats)
    }

    fn dns(name: &str) -> LeafName {
        LeafName::Dns(name.into())
    }

    #[tokio::test]
    async fn one_mint_per_host_however_many_ask_at_once() {
        let (_dir, cache, stats) = cache(100, Duration::from_secs(60));
        let cache = Arc::new(cache);
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.get(&dns("a.example")).await.unwrap() })
            })
            .collect();
        let mut leaves = Vec::new();
        for t in tasks {
            leaves.push(t.await.unwrap());
        }
        assert_eq!(stats.leaf_mints.load(Ordering::Relaxed), 1);
        assert!(leaves.iter().all(|l| Arc::ptr_eq(l, &leaves[0])));
        cache.get(&dns("b.example")).await.unwrap();
        assert_eq!(stats.leaf_mints.load(Ordering::Relaxed), 2);
        assert_eq!(stats.leaf_cache_size.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn bounded_size_drops_the_oldest() {
        let (_dir, cache, stats) = cache(3, Duration::from_secs(60));
        for name in ["a", "b", "c", "d"] {
            cache.get(&dns(name)).await.unwrap();
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(stats.leaf_cache_size.load(Ordering::Relaxed), 3);
        // "a" was dropped: asking again mints it anew; "d" is still there.
        cache.get(&dns("d")).await.unwrap();
        assert_eq!(stats.leaf_mints.load(Ordering::Relaxed), 4);
        cache.get(&dns("a")).await.unwrap();
        assert_eq!(stats.leaf_mints.load(Ordering::Relaxed), 5);
        assert_eq!(cache.len(), 3);
    }

    #[tokio::test]
    async fn an_expired_entry_is_minted_again() {
        let (_dir, cache, stats) = cache(10, Duration::from_millis(50));
        let first = cache.get(&dns("a")).await.unwrap();
        let again = cache.get(&dns("a")).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        tokio::time::sleep(Duration::from_millis(80)).await;
        let fresh = cache.get(&dns("a")).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &fresh));
        assert_eq!(stats.leaf_mints.load(Ordering::Relaxed), 2);
        assert_eq!(stats.leaf_cache_hits.load(Ordering::Relaxed), 1);
    }
}
