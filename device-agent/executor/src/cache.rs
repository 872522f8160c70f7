//! Compiled modules kept for reuse, keyed by the SHA-256 of the module bytes.
//!
//! Why: devices run the same job again and again (a periodic collection, a retry), and
//! compiling is the most expensive part of a short job on wasmtime. The key is the
//! content hash computed here from the bytes about to run, never a hash someone else
//! claims, so a cache hit always means "these exact bytes". Least recently used entries
//! are evicted past the capacity. Shared by both backends (wasmi caches its validated
//! module, wasmtime its linked `InstancePre`).

use alloc::collections::BTreeMap;

use fleet_schemas::Digest;

/// Cache counters, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Runs that found their module compiled.
    pub hits: u64,
    /// Runs that compiled their module (including runs with the cache disabled).
    pub misses: u64,
    /// Modules held now.
    pub entries: usize,
}

pub(crate) struct ModuleCache<V> {
    capacity: usize,
    entries: BTreeMap<Digest, (V, u64)>,
    tick: u64,
    hits: u64,
    misses: u64,
}

impl<V: Clone> ModuleCache<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { capacity, entries: BTreeMap::new(), tick: 0, hits: 0, misses: 0 }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The module for `key`, counting a hit or a miss.
    pub(crate) fn get(&mut self, key: Option<&Digest>) -> Option<V> {
        self.tick += 1;
        let found = key.and_then(|key| self.entries.get_mut(key)).map(|(value, used)| {
            *used = self.tick;
            value.clone()
        });
        if found.is_some() {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        found
    }

    pub(crate) fn insert(&mut self, key: Digest, value: V) {
        if self.capacity == 0 {
            return;
        }
        while self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            let oldest = self.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| *k);
            match oldest {
                Some(oldest) => self.entries.remove(&oldest),
                None => break,
            };
        }
        self.entries.insert(key, (value, self.tick));
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats { hits: self.hits, misses: self.misses, entries: self.entries.len() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut cache = ModuleCache::new(2);
        let (a, b, c) = (Digest([1; 32]), Digest([2; 32]), Digest([3; 32]));
        cache.insert(a, 'a');
        cache.insert(b, 'b');
        assert_eq!(cache.get(Some(&a)), Some('a'));
        cache.insert(c, 'c');
        assert_eq!(cache.get(Some(&b)), None);
        assert_eq!(cache.get(Some(&a)), Some('a'));
        assert_eq!(cache.get(Some(&c)), Some('c'));
        assert_eq!(cache.stats(), CacheStats { hits: 3, misses: 1, entries: 2 });
    }

    #[test]
    fn capacity_zero_holds_nothing() {
        let mut cache = ModuleCache::new(0);
        cache.insert(Digest([1; 32]), 1);
        assert_eq!(cache.get(Some(&Digest([1; 32]))), None);
        assert!(!cache.enabled());
    }
}
