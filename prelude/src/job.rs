//! Describing a job (dataset, variable, bbox, time range, map, reduce) and running it on the host.
//!
//! `map` and `reduce` are plain `fn` pointers (non-capturing closures coerce to them). In wasm a
//! function pointer is an index into the module's table, the same in every instance of the module,
//! so the host can call them in parallel worker instances through `sbx_invoke`, with a trampoline
//! (also a table index) that knows their key and value types.

use std::marker::PhantomData;

use crate::abi;
use crate::tile::Tile;
use crate::value::{Value, json_string, push_row_of};

/// What `sbx_invoke` calls: `(user function, input a, input b) -> output bytes`.
pub(crate) type Trampoline = fn(usize, &[u8], &[u8]) -> Vec<u8>;

/// A job being described: which tiles to read.
#[derive(Debug, Clone)]
pub struct Job {
    pub(crate) dataset: String,
    pub(crate) variable: Option<String>,
    pub(crate) bbox: Option<[f64; 4]>,
    pub(crate) time: Option<(String, String)>,
}

/// Starts describing a job over a registered dataset.
pub fn dataset(name: &str) -> Job {
    Job { dataset: name.to_owned(), variable: None, bbox: None, time: None }
}

impl Job {
    /// The variable to read (default: the dataset's first).
    pub fn variable(mut self, name: &str) -> Self {
        self.variable = Some(name.to_owned());
        self
    }

    /// Keeps cells inside west, south, east, north (degrees, inclusive); others are NaN in tiles.
    pub fn bbox(mut self, west: f64, south: f64, east: f64, north: f64) -> Self {
        self.bbox = Some([west, south, east, north]);
        self
    }

    /// Keeps time steps from `start` to `end` inclusive (`YYYY-MM-DD[THH:MM:SSZ]`).
    pub fn time(mut self, start: &str, end: &str) -> Self {
        self.time = Some((start.to_owned(), end.to_owned()));
        self
    }

    /// The map: runs once per selected tile, in parallel, and emits `(key, value)` pairs.
    pub fn map<K: Value, V: Value>(self, f: for<'a> fn(&Tile<'a>) -> Vec<(K, V)>) -> Mapped<K, V> {
        Mapped { job: self, map: f as usize, _types: PhantomData }
    }
}

/// A job with its map: reduce it to get rows.
#[derive(Debug, Clone)]
pub struct Mapped<K, V> {
    job: Job,
    map: usize,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K: Value, V: Value> Mapped<K, V> {
    /// Merges the values of each key with `f` (must be associative; it runs in any grouping and
    /// order) and runs the job. Returns one row per key, sorted by key.
    ///
    /// # Panics
    /// When the host refuses or fails the job (unknown dataset, bad bbox, a failing map...): the
    /// statement then fails with the host's message.
    pub fn reduce_by_key(self, f: fn(V, V) -> V) -> Rows {
        self.run(f, true)
    }

    /// [`Mapped::reduce_by_key`] announcing only the calls every module must have (map, reduce,
    /// row), as a module written without the prelude may: the host then sends each tile whole,
    /// reduces a pair per call and asks for a row per key. For the host's tests of those paths.
    #[doc(hidden)]
    pub fn reduce_by_key_minimal_abi(self, f: fn(V, V) -> V) -> Rows {
        self.run(f, false)
    }

    /// Runs the job; `batched`: with the optional calls (`split_tile`, `fold`, `rows`).
    fn run(self, f: fn(V, V) -> V, batched: bool) -> Rows {
        let spec = self.spec(f, batched);
        let json = String::from_utf8(abi::host_run_job(spec.as_bytes())).unwrap_or_default();
        Rows::new(json, Some(self.job))
    }

    /// The job spec `sbx.run_job` takes (`sandbox/ABI.md` section 3).
    fn spec(&self, f: fn(V, V) -> V, batched: bool) -> String {
        let map_tramp: Trampoline = map_trampoline::<K, V>;
        let reduce_tramp: Trampoline = reduce_trampoline::<V>;
        let fold_tramp: Trampoline = fold_trampoline::<V>;
        let rows_tramp: Trampoline = rows_trampoline::<K, V>;
        let row_tramp: Trampoline = row_trampoline::<K, V>;
        let j = &self.job;
        let mut spec = String::from("{\"dataset\":");
        json_string(&mut spec, &j.dataset);
        spec.push_str(",\"variable\":");
        match &j.variable {
            Some(v) => json_string(&mut spec, v),
            None => spec.push_str("null"),
        }
        spec.push_str(",\"bbox\":");
        match j.bbox {
            Some([w, s, e, n]) => spec.push_str(&format!("[{w},{s},{e},{n}]")),
            None => spec.push_str("null"),
        }
        spec.push_str(",\"time\":");
        match &j.time {
            Some((a, b)) => {
                spec.push('[');
                json_string(&mut spec, a);
                spec.push(',');
                json_string(&mut spec, b);
                spec.push(']');
            }
            None => spec.push_str("null"),
        }
        spec.push_str(&format!(
            ",\"map\":[{},{}],\"reduce\":[{},{}],\"row\":[{},0]",
            map_tramp as usize, self.map, reduce_tramp as usize, f as usize, row_tramp as usize,
        ));
        if batched {
            spec.push_str(&format!(
                ",\"split_tile\":true,\"fold\":[{},{}],\"rows\":[{},0]",
                fold_tramp as usize, f as usize, rows_tramp as usize
            ));
        }
        spec.push('}');
        spec
    }
}

/// The rows of a job: a JSON array, one object per key, sorted by key.
#[derive(Debug, Clone)]
pub struct Rows {
    json: String,
    job: Option<Job>,
}

impl Rows {
    pub(crate) fn new(json: String, job: Option<Job>) -> Self {
        Self { json, job }
    }

    /// The job that made the rows (its dataset and selection).
    pub(crate) fn job(&self) -> Option<&Job> {
        self.job.as_ref()
    }

    /// The rows as JSON text.
    pub fn json(&self) -> &str {
        &self.json
    }
}

/// A map call: the tile's head in `tile` and its values apart in `values` (the spec's
/// `"split_tile"`), or the whole tile in `tile`.
fn map_trampoline<K: Value, V: Value>(f: usize, tile: &[u8], values: &[u8]) -> Vec<u8> {
    // SAFETY: `f` came from `Job::map` as this exact fn type, paired with this trampoline.
    let f: for<'a> fn(&Tile<'a>) -> Vec<(K, V)> = unsafe { core::mem::transmute(f) };
    let pairs = f(&Tile::from_parts(tile, values));
    // u32 count, then per pair: u32 key length, key, u32 value length, value.
    let mut out = Vec::with_capacity(4 + pairs.len() * 72);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in &pairs {
        crate::value::value_field_encode(k, &mut out);
        crate::value::value_field_encode(v, &mut out);
    }
    out
}

fn reduce_trampoline<V: Value>(f: usize, a: &[u8], b: &[u8]) -> Vec<u8> {
    // SAFETY: `f` came from `Mapped::reduce_by_key` as this exact fn type.
    let f: fn(V, V) -> V = unsafe { core::mem::transmute(f) };
    let mut out = Vec::new();
    f(V::decode(a), V::decode(b)).encode(&mut out);
    out
}

/// A state sent (and returned) for a group without one yet.
const FRESH: u32 = u32::MAX;

/// The reduce over many groups at once (the host's batched reduce; wire format in
/// `sandbox/ABI.md`): input `u32 op = 1, u32 groups`, each group's value (`u32 len` and bytes,
/// or `FRESH`), `u32 n`, then `n` times `u32 group` and a value to reduce into it, in order;
/// output `u32 groups` and each group's value after.
fn fold_trampoline<V: Value>(f: usize, input: &[u8], _: &[u8]) -> Vec<u8> {
    // SAFETY: `f` came from `Mapped::reduce_by_key` as this exact fn type.
    let f: fn(V, V) -> V = unsafe { core::mem::transmute(f) };
    let mut batch = Batch { input, at: 0 };
    assert_eq!(batch.word(), 1, "reduce: a batch that is not a merge");
    let groups = batch.word() as usize;
    let mut states: Vec<Option<V>> = (0..groups).map(|_| batch.value()).collect();
    for _ in 0..batch.word() {
        let group = batch.word() as usize;
        assert!(group < groups, "reduce: group {group} of {groups}");
        if let Some(b) = batch.value() {
            let state = &mut states[group];
            *state = Some(match state.take() {
                None => b,
                Some(a) => f(a, b),
            });
        }
    }
    let mut out = Vec::with_capacity(4 + 64 * groups);
    out.extend_from_slice(&(groups as u32).to_le_bytes());
    for state in &states {
        match state {
            Some(v) => crate::value::value_field_encode(v, &mut out),
            None => out.extend_from_slice(&FRESH.to_le_bytes()),
        }
    }
    out
}

/// What the batched reduce returns for `input`, as bytes: the same code, callable off wasm (the
/// host's tests run it natively).
#[doc(hidden)]
pub fn job_fold_bytes<V: Value>(f: fn(V, V) -> V, input: &[u8]) -> Vec<u8> {
    fold_trampoline::<V>(f as usize, input, &[])
}

/// What the batched rows call returns for `input`, as bytes, off wasm (the host's tests).
#[doc(hidden)]
pub fn job_rows_bytes<K: Value, V: Value>(input: &[u8]) -> Vec<u8> {
    rows_trampoline::<K, V>(0, input, &[])
}

/// Reads a fold's or a rows call's input.
struct Batch<'a> {
    input: &'a [u8],
    at: usize,
}

impl<'a> Batch<'a> {
    fn word(&mut self) -> u32 {
        let Some(b) = self.input.get(self.at..self.at + 4) else {
            panic!("job: a batch of {} bytes ends early", self.input.len())
        };
        self.at += 4;
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// A value (`u32 len` and its encoding), or `None` for `FRESH`.
    fn value<V: Value>(&mut self) -> Option<V> {
        match self.word() {
            FRESH => None,
            len => Some(V::decode(self.take(len))),
        }
    }

    /// `u32 len` and that many bytes.
    fn bytes(&mut self) -> &'a [u8] {
        let len = self.word();
        self.take(len)
    }

    fn take(&mut self, len: u32) -> &'a [u8] {
        let end = self.at + len as usize;
        let Some(bytes) = self.input.get(self.at..end) else {
            panic!("job: a batch of {} bytes ends early", self.input.len())
        };
        self.at = end;
        bytes
    }
}

/// The key's JSON, a newline, then the row's JSON (the host sorts by the first, returns the second).
fn row_trampoline<K: Value, V: Value>(_: usize, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = String::new();
    push_row::<K, V>(&mut out, &mut String::new(), key, value);
    out.into_bytes()
}

/// Appends what [`row_trampoline`] returns; `scratch` holds the key's and value's JSON (each
/// formatted once: float formatting is most of a per-pixel job's rows).
fn push_row<K: Value, V: Value>(out: &mut String, scratch: &mut String, key: &[u8], value: &[u8]) {
    let (k, v) = (K::decode(key), V::decode(value));
    scratch.clear();
    k.to_json(scratch);
    let key_len = scratch.len();
    v.to_json(scratch);
    let (key, value) = scratch.split_at(key_len);
    out.push_str(key);
    out.push('\n');
    push_row_of::<K>(out, key, value);
}

/// The rows of many keys in one call: input `u32 n`, then `n` times a key and its final value
/// (`u32 len` and bytes each); output `n` times `u32 len` and what [`row_trampoline`] returns.
fn rows_trampoline<K: Value, V: Value>(_: usize, input: &[u8], _: &[u8]) -> Vec<u8> {
    let mut batch = Batch { input, at: 0 };
    let mut out = Vec::with_capacity(input.len() * 2);
    let (mut row, mut scratch) = (String::new(), String::new());
    for _ in 0..batch.word() {
        let (key, value) = (batch.bytes(), batch.bytes());
        row.clear();
        push_row::<K, V>(&mut row, &mut scratch, key, value);
        out.extend_from_slice(&(row.len() as u32).to_le_bytes());
        out.extend_from_slice(row.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(a: f64, b: f64) -> f64 {
        a + b
    }

    /// `u32 n` and the states (`None` = fresh).
    fn states(out: &mut Vec<u8>, states: &[Option<f64>]) {
        out.extend_from_slice(&(states.len() as u32).to_le_bytes());
        for s in states {
            match s {
                Some(v) => crate::value::value_field_encode(v, out),
                None => out.extend_from_slice(&FRESH.to_le_bytes()),
            }
        }
    }

    /// A fold input: `states`, then `(group, value)` pairs.
    fn batch(groups: &[Option<f64>], pairs: &[(u32, f64)]) -> Vec<u8> {
        let mut input = 1u32.to_le_bytes().to_vec();
        states(&mut input, groups);
        input.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
        for (g, v) in pairs {
            input.extend_from_slice(&g.to_le_bytes());
            crate::value::value_field_encode(v, &mut input);
        }
        input
    }

    #[test]
    fn fold_reduces_each_value_into_its_group_in_order() {
        let input = batch(&[Some(1.0), None, None], &[(0, 2.0), (1, 5.0), (0, 4.0), (1, 0.5)]);
        // Group 2 saw nothing: it stays fresh.
        let mut want = Vec::new();
        states(&mut want, &[Some(7.0), Some(5.5), None]);
        assert_eq!(job_fold_bytes::<f64>(add, &input), want);
    }

    #[test]
    fn rows_are_each_key_and_row_in_order() {
        let mut input = 2u32.to_le_bytes().to_vec();
        for (k, v) in [(3i64, 1.5f64), (1, 2.0)] {
            crate::value::value_field_encode(&k, &mut input);
            crate::value::value_field_encode(&v, &mut input);
        }
        let out = job_rows_bytes::<i64, f64>(&input);
        let mut want = Vec::new();
        for (k, v) in [(3i64, 1.5f64), (1, 2.0)] {
            let (mut kb, mut vb) = (Vec::new(), Vec::new());
            k.encode(&mut kb);
            v.encode(&mut vb);
            let one = row_trampoline::<i64, f64>(0, &kb, &vb);
            want.extend_from_slice(&(one.len() as u32).to_le_bytes());
            want.extend_from_slice(&one);
        }
        assert_eq!(out, want);
        assert!(String::from_utf8_lossy(&out).contains("3\n"), "{out:?}");
    }

    #[test]
    #[should_panic(expected = "reduce: group 3 of 2")]
    fn fold_refuses_a_group_out_of_range() {
        job_fold_bytes::<f64>(add, &batch(&[None, None], &[(3, 1.0)]));
    }

    #[test]
    #[should_panic(expected = "ends early")]
    fn fold_refuses_a_short_batch() {
        let input = batch(&[Some(1.0)], &[(0, 2.0)]);
        job_fold_bytes::<f64>(add, &input[..input.len() - 3]);
    }

    #[test]
    fn the_spec_announces_the_optional_calls_only_when_batched() {
        fn nothing(_: &Tile) -> Vec<(i64, f64)> {
            Vec::new()
        }
        let mapped = dataset("sst").bbox(-10.0, -5.0, 10.0, 5.0).map(nothing);
        let (full, minimal) = (mapped.spec(add, true), mapped.spec(add, false));
        for both in ["\"dataset\":\"sst\"", "\"bbox\":[-10,-5,10,5]", "\"map\":[", "\"reduce\":[", "\"row\":["] {
            assert!(full.contains(both) && minimal.contains(both), "{both}: {full} / {minimal}");
        }
        for optional in ["\"split_tile\":true", "\"fold\":[", "\"rows\":["] {
            assert!(full.contains(optional) && !minimal.contains(optional), "{optional}: {full} / {minimal}");
        }
        assert!(full.ends_with('}') && minimal.ends_with('}'));
    }
}
