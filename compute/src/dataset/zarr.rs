//! Zarr stores as xarray writes them (v2 and v3, directory stores): metadata read directly (dims,
//! dtype, CF attributes, which zarrs passes through undecoded), chunks decoded by zarrs.
//!
//! A chunk whose codecs are just `bytes` and `zstd` (xarray's v3 default, and v2's zstd
//! compressor) is read and decompressed here, with one zstd context per thread: zarrs creates
//! a context per chunk, which cost about a sixth of decoding.
//!
//! In a sharded v3 array the unit read is the inner chunk (zarrs' subchunk): a tile is an inner
//! chunk, read alone through the shard's index, so a selection reads only the inner chunks it
//! covers and shards may be as large as a writer likes.

use std::cell::RefCell;
use std::io::Read as _;
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
    /// Set when the chunks are read here, not through zarrs (see [`Zstd`]).
    zstd: Option<Zstd>,
}

/// A chunk stored as its elements' bytes, zstd-compressed: v3 codecs `[bytes, zstd]`, or a v2
/// array with the zstd compressor, no filters and C order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Zstd {
    big_endian: bool,
}

impl Zstd {
    /// The chain of an array's metadata (`zarr.json` or `.zarray`), when it is this one.
    fn of(format: u8, meta: &Value) -> Option<Self> {
        let name = |v: &Value| v.get("name").and_then(Value::as_str).map(str::to_owned);
        if format == 3 {
            let [bytes, zstd] = meta.get("codecs")?.as_array()?.as_slice() else { return None };
            if name(bytes)? != "bytes" || name(zstd)? != "zstd" {
                return None;
            }
            let endian = bytes.pointer("/configuration/endian").and_then(Value::as_str).unwrap_or("little");
            return Some(Self { big_endian: endian == "big" });
        }
        let no_filters = meta.get("filters").is_none_or(|f| f.is_null() || f.as_array().is_some_and(Vec::is_empty));
        let c_order = meta.get("order").and_then(Value::as_str).is_none_or(|o| o == "C");
        let zstd = meta.pointer("/compressor/id").and_then(Value::as_str) == Some("zstd");
        let dtype = meta.get("dtype").and_then(Value::as_str)?;
        (no_filters && c_order && zstd).then_some(Self { big_endian: dtype.starts_with('>') })
    }
}

/// A stored element, from its bytes.
pub(crate) trait FromBytes: Sized {
    const SIZE: usize;
    fn from_le(bytes: &[u8]) -> Self;
    fn from_be(bytes: &[u8]) -> Self;
}

macro_rules! from_bytes {
    ($($t:ty),*) => {$(
        impl FromBytes for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn from_le(bytes: &[u8]) -> Self {
                let mut raw = [0u8; std::mem::size_of::<$t>()];
                raw.copy_from_slice(bytes);
                <$t>::from_le_bytes(raw)
            }
            fn from_be(bytes: &[u8]) -> Self {
                let mut raw = [0u8; std::mem::size_of::<$t>()];
                raw.copy_from_slice(bytes);
                <$t>::from_be_bytes(raw)
            }
        }
    )*};
}
from_bytes!(f32, f64, i8, i16, i32, i64, u8, u16, u32, u64);

/// This thread's zstd context, with buffers for a chunk's file and its decompressed bytes.
struct Decompression {
    context: zstd::bulk::Decompressor<'static>,
    file: Vec<u8>,
    bytes: Vec<u8>,
}

thread_local! {
    static DECOMPRESSION: RefCell<Option<Decompression>> = const { RefCell::new(None) };
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
    let zstd = if shards.is_none() { Zstd::of(format, &meta) } else { None };
    Ok(ZArray { name: name.to_owned(), dims, shape, chunks, dtype, attributes, v2_fill, array, shards, zstd })
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
    fn retrieve<T: ElementOwned + FromBytes>(&self, index: &[u64]) -> Result<Option<Vec<T>>, String> {
        if let Some(zstd) = self.zstd {
            return self.retrieve_zstd(index, zstd);
        }
        match &self.shards {
            Some(shards) => {
                self.array.retrieve_subchunk_opt::<Vec<T>>(shards, index, &CodecOptions::default()).map(Some)
            }
            None => self.array.retrieve_chunk_if_exists::<Vec<T>>(index),
        }
        .map_err(|e| e.to_string())
    }

    /// A `[bytes, zstd]` chunk: its file read into, and decompressed through, this thread's
    /// buffers and context (`None` when the chunk was never written).
    fn retrieve_zstd<T: FromBytes>(&self, index: &[u64], zstd: Zstd) -> Result<Option<Vec<T>>, String> {
        let path = self.array.storage().key_to_fspath(&self.array.chunk_key(index));
        let cells: u64 = self.chunks.iter().product();
        let expected = usize::try_from(cells).map_err(|e| e.to_string())? * T::SIZE;
        DECOMPRESSION.with(|cell| {
            let mut cell = cell.borrow_mut();
            let d = match &mut *cell {
                Some(d) => d,
                None => {
                    let context = zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?;
                    cell.insert(Decompression { context, file: Vec::new(), bytes: Vec::new() })
                }
            };
            d.file.clear();
            match std::fs::File::open(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.to_string()),
                Ok(mut file) => file.read_to_end(&mut d.file).map_err(|e| e.to_string())?,
            };
            d.bytes.clear();
            d.bytes.reserve(expected);
            let n = d.context.decompress_to_buffer(&d.file[..], &mut d.bytes).map_err(|e| format!("zstd: {e}"))?;
            if n != expected {
                return Err(format!("zstd: decompressed to {n} bytes, the chunk has {expected}"));
            }
            let elements = d.bytes.chunks_exact(T::SIZE);
            Ok(Some(if zstd.big_endian {
                elements.map(T::from_be).collect()
            } else {
                elements.map(T::from_le).collect()
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;
    use zarrs::array::codec::{BytesCodec, ZstdCodec};
    use zarrs::array::{ArrayBuilder, data_type};

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tilegate-zarr-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Every chunk of a 2 x 2 x 2 grid, read here and then through zarrs: the same values, or
    /// both absent. Returns how many were present.
    fn agree<T: ElementOwned + FromBytes + PartialEq + std::fmt::Debug>(z: &mut ZArray) -> usize {
        let grid = [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1], [1, 0, 0], [1, 0, 1], [1, 1, 0], [1, 1, 1]];
        let fast: Vec<Option<Vec<T>>> = grid.iter().map(|i| z.retrieve::<T>(i).unwrap()).collect();
        let chain = z.zstd.take();
        assert!(chain.is_some(), "the array should be read without zarrs");
        for (i, got) in grid.iter().zip(&fast) {
            assert_eq!(got, &z.retrieve::<T>(i).unwrap(), "chunk {i:?}");
        }
        z.zstd = chain;
        fast.iter().flatten().count()
    }

    #[test]
    fn zstd_chunks_read_here_equal_zarrs_reads() {
        let dir = scratch("v3");
        let store = Arc::new(FilesystemStore::new(&dir).unwrap());
        zarrs::group::GroupBuilder::new().build(store.clone(), "/").unwrap().store_metadata().unwrap();
        let dims = Some(["time", "lat", "lon"]);
        let values = |c: usize| (0..6).map(|i| (c * 6 + i) as f32 * 0.25 - 3.0).collect::<Vec<f32>>();
        let little = ArrayBuilder::new(vec![2, 4, 6], vec![1, 2, 3], data_type::float32(), f32::NAN)
            .bytes_to_bytes_codecs(vec![Arc::new(ZstdCodec::new(3, false))])
            .dimension_names(dims)
            .build(store.clone(), "/sst")
            .unwrap();
        let big = ArrayBuilder::new(vec![2, 4, 6], vec![1, 2, 3], data_type::int16(), -1i16)
            .array_to_bytes_codec(Arc::new(BytesCodec::big()))
            .bytes_to_bytes_codecs(vec![Arc::new(ZstdCodec::new(1, true))])
            .dimension_names(dims)
            .build(store.clone(), "/count")
            .unwrap();
        little.store_metadata().unwrap();
        big.store_metadata().unwrap();
        // Chunk [1, 1, 1] is never written: read as absent.
        for (c, index) in
            [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1], [1, 0, 0], [1, 0, 1], [1, 1, 0]].iter().enumerate()
        {
            little.store_chunk(index, values(c)).unwrap();
            big.store_chunk(index, values(c).iter().map(|v| (v * 1000.0) as i16).collect::<Vec<_>>()).unwrap();
        }
        let mut z = open_array(&store, &dir, 3, "sst").unwrap();
        assert_eq!(z.zstd, Some(Zstd { big_endian: false }));
        assert_eq!(agree::<f32>(&mut z), 7);
        let mut z = open_array(&store, &dir, 3, "count").unwrap();
        assert_eq!(z.zstd, Some(Zstd { big_endian: true }));
        assert_eq!(agree::<i16>(&mut z), 7);
        assert_eq!(z.retrieve::<i16>(&[0, 0, 1]).unwrap().unwrap()[0], -1500);

        // A truncated chunk and one that is not zstd: errors, as through zarrs.
        let chunk = dir.join("sst/c/0/0/0");
        let whole = std::fs::read(&chunk).unwrap();
        std::fs::write(&chunk, &whole[..whole.len() / 2]).unwrap();
        let z = open_array(&store, &dir, 3, "sst").unwrap();
        assert!(z.retrieve::<f32>(&[0, 0, 0]).unwrap_err().contains("zstd"));
        std::fs::write(&chunk, b"definitely not zstd").unwrap();
        assert!(z.retrieve::<f32>(&[0, 0, 0]).unwrap_err().contains("zstd"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_v2_zstd_array_big_endian_is_read_here_as_zarrs_reads_it() {
        let dir = scratch("v2");
        std::fs::write(dir.join(".zgroup"), r#"{"zarr_format": 2}"#).unwrap();
        std::fs::create_dir_all(dir.join("sst")).unwrap();
        let zarray = json!({
            "zarr_format": 2, "shape": [2, 4, 6], "chunks": [1, 2, 3], "dtype": ">f4", "order": "C",
            "fill_value": "NaN", "filters": null, "compressor": {"id": "zstd", "level": 1},
            "dimension_separator": "."
        });
        std::fs::write(dir.join("sst/.zarray"), zarray.to_string()).unwrap();
        std::fs::write(dir.join("sst/.zattrs"), r#"{"_ARRAY_DIMENSIONS": ["time", "lat", "lon"]}"#).unwrap();
        for c in 0..7u16 {
            let (t, y, x) = (c / 4, (c / 2) % 2, c % 2);
            let raw: Vec<u8> = (0..6).flat_map(|i| (f32::from(c * 6 + i) * 0.5).to_be_bytes()).collect();
            std::fs::write(dir.join(format!("sst/{t}.{y}.{x}")), zstd::bulk::compress(&raw, 1).unwrap()).unwrap();
        }
        let store = Arc::new(FilesystemStore::new(&dir).unwrap());
        let mut z = open_array(&store, &dir, 2, "sst").unwrap();
        assert_eq!(z.zstd, Some(Zstd { big_endian: true }));
        assert_eq!(agree::<f32>(&mut z), 7);
        assert_eq!(z.retrieve::<f32>(&[1, 1, 0]).unwrap().unwrap()[1], 18.5);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_the_plain_zstd_chain_is_read_here() {
        let v3 = |codecs: serde_json::Value| Zstd::of(3, &json!({ "codecs": codecs }));
        let bytes = json!({"name": "bytes", "configuration": {"endian": "little"}});
        let zstd = json!({"name": "zstd", "configuration": {"level": 0, "checksum": false}});
        assert_eq!(v3(json!([bytes, zstd])), Some(Zstd { big_endian: false }));
        assert_eq!(v3(json!([bytes, zstd, {"name": "crc32c"}])), None);
        assert_eq!(v3(json!([{"name": "transpose"}, bytes, zstd])), None);
        assert_eq!(v3(json!([bytes, {"name": "blosc"}])), None);
        let v2 = |extra: serde_json::Value| {
            let mut meta = json!({"dtype": "<f4", "order": "C", "filters": null, "compressor": {"id": "zstd"}});
            meta.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            Zstd::of(2, &meta)
        };
        assert_eq!(v2(json!({})), Some(Zstd { big_endian: false }));
        assert_eq!(v2(json!({"order": "F"})), None);
        assert_eq!(v2(json!({"filters": [{"id": "delta"}]})), None);
        assert_eq!(v2(json!({"compressor": {"id": "blosc"}})), None);
    }
}
