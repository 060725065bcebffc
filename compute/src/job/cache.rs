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
///
/// Least recently used tiles make room, with one exception that makes it scan-resistant: a scan
/// never evicts a tile it has used itself (see [`TileCache::scan`]). A scan bigger than the cache
/// (the global time series over 1.5 GB of tiles against the 512 MiB default) then keeps its first
/// tiles and serves the rest without keeping them, so running it again finds those tiles, where
/// plain LRU would have evicted each one before its next use, and paid a free and a fresh
/// allocation per tile for nothing.
pub struct TileCache {
    capacity: usize,
    state: Mutex<State>,
}

/// One scan's use of a [`TileCache`]: the cache's clock when the scan began.
#[derive(Clone)]
pub struct CacheScan {
    cache: Arc<TileCache>,
    began: u64,
}

#[derive(Default)]
struct State {
    map: HashMap<Key, (Arc<TileData>, u64)>,
    /// Tiles by last use (the cache's clock, which ticks on every use).
    order: BTreeMap<u64, Key>,
    clock: u64,
    bytes: usize,
    hits: u64,
    misses: u64,
}

impl State {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Marks `key` used now.
    fn touch(&mut self, key: &Key) -> Option<Arc<TileData>> {
        let now = self.tick();
        let (tile, used) = self.map.get_mut(key)?;
        let (tile, old) = (tile.clone(), std::mem::replace(used, now));
        self.order.remove(&old);
        self.order.insert(now, key.clone());
        Some(tile)
    }
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

    /// Starts a scan: the tiles it loads through the returned handle only evict tiles last used
    /// before now.
    pub fn scan(self: &Arc<Self>) -> CacheScan {
        let began = self.lock().tick();
        CacheScan { cache: self.clone(), began }
    }
}

impl CacheScan {
    /// The tile from memory, or `load`ed and kept when there is room for it, made by evicting
    /// tiles no use of which is newer than this scan. Loads run outside the lock, so two workers
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
            let mut state = self.cache.lock();
            if let Some(tile) = state.touch(&key) {
                state.hits += 1;
                return Ok(tile);
            }
            state.misses += 1;
        }
        let tile = Arc::new(load()?);
        let size = size_of(&tile);
        if size > self.cache.capacity {
            return Ok(tile);
        }
        let mut state = self.cache.lock();
        if state.map.contains_key(&key) {
            return Ok(tile); // another worker kept its copy meanwhile
        }
        while state.bytes + size > self.cache.capacity {
            match state.order.first_key_value() {
                Some((&used, _)) if used < self.began => {
                    let Some((_, oldest)) = state.order.pop_first() else { break };
                    if let Some((evicted, _)) = state.map.remove(&oldest) {
                        state.bytes -= size_of(&evicted);
                    }
                }
                // Everything left was used by this scan (or by one that began after it).
                _ => return Ok(tile),
            }
        }
        let now = state.tick();
        state.map.insert(key.clone(), (tile.clone(), now));
        state.order.insert(now, key);
        state.bytes += size;
        Ok(tile)
    }
}

impl TileCache {
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
        let cache = Arc::new(TileCache::new(2 * one));
        let load = |n| move || Ok::<_, ()>(tile(n));
        let first = cache.scan();
        first.get_or_load(("d", "v", [0, 0, 0]), load(100)).unwrap();
        first.get_or_load(("d", "v", [0, 0, 0]), load(100)).unwrap();
        first.get_or_load(("d", "v", [1, 0, 0]), load(100)).unwrap();
        // A later scan: touch [0,0,0] so [1,0,0] is the least recently used, then overflow.
        let second = cache.scan();
        second.get_or_load(("d", "v", [0, 0, 0]), load(100)).unwrap();
        second.get_or_load(("d", "v", [2, 0, 0]), load(100)).unwrap();
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.tiles), (2, 3, 2));
        assert!(s.bytes <= 2 * one);
        cache.scan().get_or_load(("d", "v", [0, 0, 0]), load(100)).unwrap();
        assert_eq!(cache.stats().hits, 3, "the recently used tile survived");
        // Too big to keep: served, not cached.
        cache.scan().get_or_load(("d", "v", [9, 0, 0]), load(10_000)).unwrap();
        assert_eq!(cache.stats().tiles, 2);
    }

    #[test]
    fn a_scan_bigger_than_the_cache_keeps_its_first_tiles() {
        let one = size_of(&tile(100));
        let cache = Arc::new(TileCache::new(2 * one));
        let load = |n| move || Ok::<_, ()>(tile(n));
        let run = |cache: &Arc<TileCache>, tiles: &[u64]| {
            let scan = cache.scan();
            for &t in tiles {
                scan.get_or_load(("d", "v", [t, 0, 0]), load(100)).unwrap();
            }
        };
        run(&cache, &[0, 1, 2, 3]);
        assert_eq!((cache.stats().misses, cache.stats().tiles), (4, 2));
        // The same scan again finds the two tiles the first kept (plain LRU would find none:
        // tiles 2 and 3 would have evicted 0 and 1, and each miss the next tile to be read).
        run(&cache, &[0, 1, 2, 3]);
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.tiles), (2, 6, 2));
        // A new scan over other tiles may evict what earlier scans used.
        run(&cache, &[7, 8]);
        run(&cache, &[7, 8, 0]);
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.tiles), (4, 9, 2), "7 and 8 kept, 0 read but not kept");
    }
}
