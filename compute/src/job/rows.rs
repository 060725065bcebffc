//! A job's last step: each reduced key's row from the guest, then every row sorted by key into
//! one JSON array. The guest calls go to the worker pool in parallel (a per-pixel map has a row
//! per pixel, a million at 0.25° over the globe, and formatting them is most of such a job).

use std::cmp::Ordering;
use std::sync::Mutex;
use std::sync::atomic::{self, AtomicUsize};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};

use super::wire::{put_field, read_fields};
use super::{JobError, TileFunctions};
use tilegate_context::{Meter, metered};

/// About this many bytes of keys and values per `rows` call: their JSON, several times larger
/// for verbose rows, stays under the sandbox's output cap (8 MiB by default).
const ROWS_CALL_BYTES: usize = 1 << 20;

/// The result of a job's plan (`key`, `value` columns) as a JSON array of rows, sorted by key;
/// the rows are made by `functions` on up to `workers` threads.
pub(super) fn rows_json(
    functions: &dyn TileFunctions,
    batches: &[RecordBatch],
    workers: usize,
    meter: &Meter,
) -> Result<Vec<u8>, JobError> {
    let mut rows = rows_of(functions, batches, workers, meter)?;
    // Each call's rows came sorted (by its thread): the stable sort merges those runs.
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let mut json = Vec::with_capacity(rows.iter().map(|r| r.1.len() + 1).sum::<usize>() + 2);
    json.push(b'[');
    for (i, (_, row)) in rows.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        json.extend_from_slice(row);
    }
    json.push(b']');
    Ok(json)
}

/// Each key's sort key and row JSON, in calls of about [`ROWS_CALL_BYTES`] that `workers`
/// threads take in turn; the first error stops the others at their next call.
fn rows_of(
    functions: &dyn TileFunctions,
    batches: &[RecordBatch],
    workers: usize,
    meter: &Meter,
) -> Result<Vec<(SortKey, Vec<u8>)>, JobError> {
    let pairs: Vec<(&[u8], &[u8])> = batches
        .iter()
        .flat_map(|batch| {
            let (keys, values) = (batch.column(0).as_binary::<i32>(), batch.column(1).as_binary::<i32>());
            (0..batch.num_rows()).filter(|&i| values.is_valid(i)).map(move |i| (keys.value(i), values.value(i)))
        })
        .collect();
    let calls = calls(&pairs);
    let next = AtomicUsize::new(0);
    let failed = Mutex::new(None);
    let done = Mutex::new(Vec::with_capacity(calls.len()));
    let work = || {
        while let Some(call) = calls.get(next.fetch_add(1, atomic::Ordering::Relaxed)) {
            if failed.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                return;
            }
            match rows_call(functions, &pairs[call.clone()]) {
                Ok(rows) => done.lock().unwrap_or_else(|e| e.into_inner()).push((call.start, rows)),
                Err(e) => {
                    failed.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                }
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..workers.clamp(1, calls.len().max(1)) {
            scope.spawn(|| metered(meter, work));
        }
        metered(meter, work);
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort_unstable_by_key(|(start, _)| *start);
    Ok(done.into_iter().flat_map(|(_, rows)| rows).collect())
}

/// The pairs split into runs of about [`ROWS_CALL_BYTES`] (at least one pair each).
fn calls(pairs: &[(&[u8], &[u8])]) -> Vec<std::ops::Range<usize>> {
    let mut calls = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, (key, value)) in pairs.iter().enumerate() {
        bytes += key.len() + value.len() + 8;
        if bytes >= ROWS_CALL_BYTES || i + 1 == pairs.len() {
            calls.push(start..i + 1);
            (start, bytes) = (i + 1, 0);
        }
    }
    calls
}

/// One `rows` call: the rows of `pairs`, each with its key parsed to sort by, sorted by it (keys
/// are distinct, the reduce's groups, so there is no order among equals to keep).
fn rows_call(functions: &dyn TileFunctions, pairs: &[(&[u8], &[u8])]) -> Result<Vec<(SortKey, Vec<u8>)>, JobError> {
    let mut input = (pairs.len() as u32).to_le_bytes().to_vec();
    for (key, value) in pairs {
        put_field(&mut input, key);
        put_field(&mut input, value);
    }
    let output = functions.rows(&input)?;
    let outs = read_fields(&output, false, 1).filter(|outs| outs.len() == pairs.len()).ok_or_else(|| {
        JobError::abi(format!("the rows of {} keys came back as {} bytes", pairs.len(), output.len()))
    })?;
    let mut rows: Vec<(SortKey, Vec<u8>)> = outs
        .into_iter()
        .map(|out| {
            let split = out.iter().position(|&b| b == b'\n').unwrap_or(out.len());
            let key = serde_json::from_slice(&out[..split]).map_or(SortKey::Other(String::new()), SortKey::of);
            (key, out[(split + 1).min(out.len())..].to_vec())
        })
        .collect();
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(rows)
}

/// A key as it sorts, from its JSON: numbers numerically, strings lexically, arrays element by
/// element, anything else (objects, booleans, null) by its JSON text.
#[derive(Debug, Clone, PartialEq)]
enum SortKey {
    Number(f64),
    Text(String),
    List(Vec<SortKey>),
    Other(String),
}

impl SortKey {
    fn of(json: serde_json::Value) -> Self {
        use serde_json::Value;
        match json {
            Value::Number(n) => Self::Number(n.as_f64().unwrap_or(0.0)),
            Value::String(s) => Self::Text(s),
            Value::Array(items) => Self::List(items.into_iter().map(Self::of).collect()),
            other => Self::Other(other.to_string()),
        }
    }

    /// The text a key of another kind is compared by (its JSON).
    fn text(&self) -> String {
        match self {
            Self::Number(n) => serde_json::Number::from_f64(*n).map_or("null".into(), |n| n.to_string()),
            Self::Text(s) => serde_json::Value::String(s.clone()).to_string(),
            Self::List(items) => format!("[{}]", items.iter().map(Self::text).collect::<Vec<_>>().join(",")),
            Self::Other(text) => text.clone(),
        }
    }

    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Number(x), Self::Number(y)) => x.total_cmp(y),
            (Self::Text(x), Self::Text(y)) => x.cmp(y),
            (Self::List(x), Self::List(y)) => {
                x.iter().zip(y).map(|(p, q)| p.cmp(q)).find(|o| o.is_ne()).unwrap_or(x.len().cmp(&y.len()))
            }
            _ => self.text().cmp(&other.text()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(json: &str) -> SortKey {
        SortKey::of(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn keys_sort_as_their_json() {
        let mut keys: Vec<SortKey> =
            ["[10, 2.5]", "[-3, 7]", "[10, -1]", "\"b\"", "\"a\"", "2", "-1.5", "[10]", "null"].map(key).to_vec();
        keys.sort_by(SortKey::cmp);
        let texts: Vec<String> = keys.iter().map(SortKey::text).collect();
        // Numbers numerically, strings and arrays among their own kind, mixed kinds by JSON text.
        assert_eq!(
            texts,
            ["\"a\"", "\"b\"", "-1.5", "2.0", "[-3.0,7.0]", "[10.0]", "[10.0,-1.0]", "[10.0,2.5]", "null"]
        );
    }

    #[test]
    fn pairs_go_in_calls_of_about_a_megabyte_and_none_is_lost() {
        let big = vec![0u8; 300_000];
        let pairs: Vec<(&[u8], &[u8])> = (0..10).map(|_| (&b"k"[..], &big[..])).collect();
        assert_eq!(calls(&pairs), [0..4, 4..8, 8..10]);
        assert!(calls(&[]).is_empty());
        let huge = vec![0u8; 3 << 20];
        assert_eq!(calls(&[(&b"k"[..], &huge[..]), (&b"k"[..], &b"v"[..])]), [0..1, 1..2]);
    }
}
