//! Zarr stores as xarray writes them (v2 and v3, directory stores): metadata read directly (dims,
//! dtype, CF attributes, which zarrs passes through undecoded), chunks decoded by zarrs.
//!
//! In a sharded v3 array the unit read is the inner chunk (zarrs' subchunk): a tile is an inner
//! chunk, read alone through the shard's index, so a selection reads only the inner chunks it
//! covers and shards may be as large as a writer likes.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};
use zarrs::array::{
    Array, ArrayShardedExt, ArrayShardedReadableExt, ArrayShardedReadableExtCache, ArraySubset, CodecOptions,
    ElementOwned,
};
use zarrs::filesystem::FilesystemStore;

use super::Error;
use super::cf::Decoder;

/// Zarr format of a store.
pub(crate) fn format_of(path: &Path) -> Option<u8> {
    if path.join("zarr.json").is_file() {
        Some(3)
    } else if path.join(".zgroup").is_file() || path.join(".zmetadata").is_file() {
        Some(2)
    } else {
        None
    }
}

/// Stored element types we decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dtype {
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
}

impl Dtype {
    /// The Zarr v3 name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F64 => "float64",
            Self::I8 => "int8",
            Self::I16 => "int16",
            Self::I32 => "int32",
            Self::I64 => "int64",
            Self::U8 => "uint8",
            Self::U16 => "uint16",
            Self::U32 => "uint32",
            Self::U64 => "uint64",
        }
    }

    /// Parses a v3 `data_type` or a v2 `dtype` (`<f4`, `|i1`, ...).
    fn parse(s: &str) -> Option<Self> {
        let s = s.trim_start_matches(['<', '>', '|', '=']);
        Some(match s {
            "float32" | "f4" => Self::F32,
            "float64" | "f8" => Self::F64,
            "int8" | "i1" => Self::I8,
            "int16" | "i2" => Self::I16,
            "int32" | "i4" => Self::I32,
            "int64" | "i8" => Self::I64,
            "uint8" | "u1" => Self::U8,
            "uint16" | "u2" => Self::U16,
            "uint32" | "u4" => Self::U32,
            "uint64" | "u8" => Self::U64,
            _ => return None,
        })
    }
}

/// One array of a store: its metadata and a zarrs handle for its chunks.
pub(crate) struct ZArray {
    pub(crate) name: String,
    pub(crate) dims: Vec<String>,
    pub(crate) shape: Vec<u64>,
    /// The tile shape: the chunk shape, or the inner chunk shape of a sharded array.
    pub(crate) chunks: Vec<u64>,
    pub(crate) dtype: Dtype,
    pub(crate) attributes: Map<String, Value>,
    /// The array-level fill value of a v2 array (where xarray keeps `_FillValue`).
    pub(crate) v2_fill: Option<f64>,
    pub(crate) array: Array<FilesystemStore>,
    /// Shard indexes read so far, when the array is sharded (tiles are inner chunks).
    shards: Option<ArrayShardedReadableExtCache>,
}

/// Lists the arrays directly under the store root.
pub(crate) fn list_arrays(store_path: &Path, format: u8) -> Result<Vec<String>, Error> {
    let entries = std::fs::read_dir(store_path).map_err(|e| Error::Io(format!("{}: {e}", store_path.display())))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let p = e.path();
            if format == 3 {
                read_json(&p.join("zarr.json")).is_ok_and(|m| m["node_type"] == "array")
            } else {
                p.join(".zarray").is_file()
            }
        })
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

/// Opens one array of the store.
pub(crate) fn open_array(
    store: &Arc<FilesystemStore>,
    store_path: &Path,
    format: u8,
    name: &str,
) -> Result<ZArray, Error> {
    let dir = store_path.join(name);
    let bad = |what: String| Error::InvalidMetadata(format!("array '{name}': {what}"));
    let (meta, attributes) = if format == 3 {
        let meta = read_json(&dir.join("zarr.json"))?;
        let attrs = meta.get("attributes").and_then(Value::as_object).cloned().unwrap_or_default();
        (meta, attrs)
    } else {
        let meta = read_json(&dir.join(".zarray"))?;
        let attrs = match read_json(&dir.join(".zattrs")) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        (meta, attrs)
    };
    let numbers = |v: Option<&Value>| -> Option<Vec<u64>> { v?.as_array()?.iter().map(Value::as_u64).collect() };
    let shape = numbers(meta.get("shape")).ok_or_else(|| bad("no shape".into()))?;
    let (chunks, dtype_name, dims, v2_fill) = if format == 3 {
        let chunks = numbers(meta.pointer("/chunk_grid/configuration/chunk_shape"))
            .ok_or_else(|| bad("only regular chunk grids are supported".into()))?;
        let dtype = meta.get("data_type").and_then(Value::as_str).unwrap_or_default().to_owned();
        let dims = meta.get("dimension_names").and_then(Value::as_array).map(|d| names_of(d));
        (chunks, dtype, dims, None)
    } else {
        let chunks = numbers(meta.get("chunks")).ok_or_else(|| bad("no chunks".into()))?;
        let dtype = meta.get("dtype").and_then(Value::as_str).unwrap_or_default().to_owned();
        let dims = attributes.get("_ARRAY_DIMENSIONS").and_then(Value::as_array).map(|d| names_of(d));
        (chunks, dtype, dims, meta.get("fill_value").and_then(super::cf::fill_number))
    };
    let dtype = Dtype::parse(&dtype_name).ok_or_else(|| bad(format!("data type '{dtype_name}' is not supported")))?;
    let dims = dims.ok_or_else(|| {
        bad("no dimension names (v3 `dimension_names` or v2 `_ARRAY_DIMENSIONS`), as xarray writes them".into())
    })?;
    if dims.len() != shape.len() || chunks.len() != shape.len() {
        return Err(bad("shape, chunks and dimension names disagree in length".into()));
    }
    let array = Array::open(store.clone(), &format!("/{name}")).map_err(|e| bad(e.to_string()))?;
    let (chunks, shards) = match array.subchunk_shape() {
        Some(inner) if array.is_exclusively_sharded() && inner.len() == shape.len() => {
            let shards = ArrayShardedReadableExtCache::new(&array);
            (inner.iter().map(|n| n.get()).collect(), Some(shards))
        }
        _ => (chunks, None),
    };
    Ok(ZArray { name: name.to_owned(), dims, shape, chunks, dtype, attributes, v2_fill, array, shards })
}

fn names_of(values: &[Value]) -> Vec<String> {
    values.iter().map(|v| v.as_str().unwrap_or_default().to_owned()).collect()
}

pub(crate) fn read_json(path: &Path) -> Result<Value, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::InvalidMetadata(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| Error::InvalidMetadata(format!("{}: {e}", path.display())))
}

/// Runs `$body` with `$t` bound to the Rust type of the array's dtype (`x as f64` is then a
/// no-op for f64, hence the `unnecessary_cast` allowances below).
macro_rules! with_type {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            Dtype::F32 => {
                type $t = f32;
                $body
            }
            Dtype::F64 => {
                type $t = f64;
                $body
            }
            Dtype::I8 => {
                type $t = i8;
                $body
            }
            Dtype::I16 => {
                type $t = i16;
                $body
            }
            Dtype::I32 => {
                type $t = i32;
                $body
            }
            Dtype::I64 => {
                type $t = i64;
                $body
            }
            Dtype::U8 => {
                type $t = u8;
                $body
            }
            Dtype::U16 => {
                type $t = u16;
                $body
            }
            Dtype::U32 => {
                type $t = u32;
                $body
            }
            Dtype::U64 => {
                type $t = u64;
                $body
            }
        }
    };
}

impl ZArray {
    /// The whole array as f64 (for 1-D coordinates).
    #[allow(clippy::unnecessary_cast)]
    pub(crate) fn read_all(&self) -> Result<Vec<f64>, Error> {
        let subset = ArraySubset::new_with_shape(self.shape.clone());
        let values: Result<Vec<f64>, _> = with_type!(self.dtype, T => self
            .array
            .retrieve_array_subset::<Vec<T>>(&subset)
            .map(|v| v.into_iter().map(|x| x as f64).collect()));
        values.map_err(|e| Error::Corrupt(format!("array '{}': {e}", self.name)))
    }

    /// One chunk, decoded to physical values (NaN = missing); `None` when the chunk was never
    /// written (all fill). The vector has the full chunk shape, C order, padding included.
    #[allow(clippy::unnecessary_cast)]
    pub(crate) fn read_chunk(&self, index: &[u64], decoder: &Decoder) -> Result<Option<Vec<f32>>, Error> {
        let corrupt = |e: &dyn std::fmt::Display| Error::Corrupt(format!("array '{}' chunk {index:?}: {e}", self.name));
        if let Some(shards) = &self.shards {
            // An inner chunk that was never written (or whose shard was not) is all fill.
            if self.array.subchunk_byte_range(shards, index).map_err(|e| corrupt(&e))?.is_none() {
                return Ok(None);
            }
        }
        // Unscaled f32, the common case, is decoded in place; anything else through f64.
        if matches!(self.dtype, Dtype::F32) {
            let mut values = self.retrieve::<f32>(index).map_err(|e| corrupt(&e))?;
            if let Some(values) = &mut values
                && !decoder.decode_f32_in_place(values)
            {
                values.iter_mut().for_each(|v| *v = decoder.decode(f64::from(*v)));
            }
            return Ok(values);
        }
        let values: Result<Option<Vec<f32>>, _> = with_type!(self.dtype, T => self
            .retrieve::<T>(index)
            .map(|chunk| chunk.map(|v| v.into_iter().map(|x| decoder.decode(x as f64)).collect())));
        values.map_err(|e| corrupt(&e))
    }

    /// One chunk as stored: an inner chunk of a sharded array, or a whole chunk (`None` when it was
    /// never written; the caller has checked a sharded one exists).
    fn retrieve<T: ElementOwned>(&self, index: &[u64]) -> Result<Option<Vec<T>>, zarrs::array::ArrayError> {
        match &self.shards {
            Some(shards) => {
                self.array.retrieve_subchunk_opt::<Vec<T>>(shards, index, &CodecOptions::default()).map(Some)
            }
            None => self.array.retrieve_chunk_if_exists::<Vec<T>>(index),
        }
    }
}
