//! Decoded tiles shared across sessions and workers, bounded in bytes, least recently used dropped first.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::dataset::TileData;

/// `(dataset, variable, chunk index)`.
type Key = (String, String, [u64; 3]);

/// Counters of a [`TileCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Tiles served from memory.
    pub hits: u64,
    /// Tiles decoded from the store.
    pub misses: u64,
    /// Bytes held now.
    pub bytes: usize,
    /// Tiles held now.
    pub tiles: usize,
}

/// The cache. A tile larger than the whole budget is served but not kept.
pub struct TileCache {
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    map: HashMap<Key, (Arc<TileData>, u64)>,
    order: BTreeMap<u64, Key>,
    clock: u64,
    bytes: usize,
    hits: u64,
    misses: u64,
}

fn size_of(tile: &TileData) -> usize {
    tile.values.len() * 4 + tile.lats.len() * 4 + tile.lons.len() * 4 + tile.times.len() * 8 + 128
}

impl TileCache {
    /// A cache holding up to `capacity` bytes of decoded tiles.
    pub fn new(capacity: usize) -> Self {
        Self { capacity, state: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The tile from memory, or `load`ed and kept. Loads run outside the lock, so two workers
    /// may decode the same tile at once; both get it, one copy is kept.
    ///
    /// # Errors
    /// Whatever `load` returns.
    pub fn get_or_load<E>(
        &self,
        key: (&str, &str, [u64; 3]),
        load: impl FnOnce() -> Result<TileData, E>,
    ) -> Result<Arc<TileData>, E> {
        let key: Key = (key.0.to_owned(), key.1.to_owned(), key.2);
        {
            let mut state = self.lock();
            state.clock += 1;
            let now = state.clock;
            if let Some((tile, used)) = state.map.get_mut(&key) {
                let (tile, old) = (tile.clone(), std::mem::replace(used, now));
                state.order.remove(&old);
                state.order.insert(now, key);
                state.hits += 1;
                return Ok(tile);
            }
            state.misses += 1;
        }
        let tile = Arc::new(load()?);
        let size = size_of(&tile);
        if size <= self.capacity {
            let mut state = self.lock();
            state.clock += 1;
            let now = state.clock;
            if let Some((_, old)) = state.map.insert(key.clone(), (tile.clone(), now)) {
                state.order.remove(&old);
                state.bytes -= size;
            }
            state.order.insert(now, key);
            state.bytes += size;
            while state.bytes > self.capacity {
                let Some((_, oldest)) = state.order.pop_first() else { break };
                if let Some((evicted, _)) = state.map.remove(&oldest) {
                    state.bytes -= size_of(&evicted);
                }
            }
        }
        Ok(tile)
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        let state = self.lock();
        CacheStats { hits: state.hits, misses: state.misses, bytes: state.bytes, tiles: state.map.len() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(n: usize) -> TileData {
        TileData { times: vec![0], lats: vec![0.0; 1], lons: vec![0.0; n], values: vec![1.0; n].into() }
    }

    #[test]
    fn hits_misses_and_eviction_by_bytes() {
        let one = size_of(&tile(100));
        let cache = TileCache::new(2 * one);
        let load = |n| move || Ok::<_, ()>(tile(n));
        cache.get_or_load(("d", "v", [0, 0, 0]), load(100)).unwrap();
        cache.get_or_load(("d", "v", [0, 0, 0]), load(100)).unwrap();
        cache.get_or_load(("d", "v", [1, 0, 0]), load(100)).unwrap();
        // Touch [0,0,0] so [1,0,0] is the least recently used, then overflow.
        cache.get_or_load(("d", "v", [0, 0, 0]), load(100)).unwrap();
        cache.get_or_load(("d", "v", [2, 0, 0]), load(100)).unwrap();
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.tiles), (2, 3, 2));
        assert!(s.bytes <= 2 * one);
        cache.get_or_load(("d", "v", [0, 0, 0]), load(100)).unwrap();
        assert_eq!(cache.stats().hits, 3, "the recently used tile survived");
        // Too big to keep: served, not cached.
        cache.get_or_load(("d", "v", [9, 0, 0]), load(10_000)).unwrap();
        assert_eq!(cache.stats().tiles, 2);
    }
}
