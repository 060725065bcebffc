//! A job's plan as protobuf: the `PhysicalExtensionCodec` for its three parts DataFusion does not
//! know (the tile scan, the map UDF, the reduce UDAF), the hook through which Ballista ships plans
//! to executors. Everything else in the plan (unnest, aggregates, repartitions, the scan's file
//! groups and projection) is datafusion-proto's own encoding.
//!
//! The bytes name things, they do not carry them: the dataset by name and selection (the decoding
//! side opens it from its own [`Catalog`]), the functions by identity (module hash and function
//! places, see [`TileFunctions::identity`]), which the decoding side resolves to functions of its
//! own. So a plan decoded where the dataset or the module is unknown fails with an error saying
//! which, never runs something else under the same name.

use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::from_proto::parse_protobuf_file_scan_config;
use datafusion_proto::physical_plan::to_proto::serialize_file_scan_config;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::FileScanExecConf;
use prost::Message;
use serde_json::{Value, json};

use super::plan::{MapUdf, ReduceUdaf, map_udf, reduce_udaf};
use super::scan::{Layout, ScanContext, TileSource};
use super::{TileCache, TileFunctions};
use crate::dataset::{Catalog, Selection};
use tilegate_context::RunContext;

/// Starts every part this codec writes: protobuf never starts a message with these bytes.
const MAGIC: &[u8; 8] = b"\xfftilegt\x01";

/// Finds the functions a plan names by their identity.
pub type ResolveFunctions = dyn Fn(&str) -> Option<Arc<dyn TileFunctions>> + Send + Sync;

/// The codec, with what a decoded plan needs of the place it runs in: datasets, the tile cache,
/// the statement's context (progress and cancel) and the functions.
pub struct JobCodec {
    catalog: Arc<Catalog>,
    cache: Arc<TileCache>,
    ctx: RunContext,
    functions: Arc<ResolveFunctions>,
}

impl std::fmt::Debug for JobCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobCodec")
    }
}

impl JobCodec {
    /// A codec decoding into `catalog`'s datasets, `cache` and `ctx`, with `functions` resolving
    /// identities.
    pub fn new(
        catalog: Arc<Catalog>,
        cache: Arc<TileCache>,
        ctx: RunContext,
        functions: Arc<ResolveFunctions>,
    ) -> Self {
        Self { catalog, cache, ctx, functions }
    }

    fn resolve(&self, identity: &str) -> Result<Arc<dyn TileFunctions>> {
        (self.functions)(identity).ok_or_else(|| {
            DataFusionError::Plan(format!(
                "the plan's functions {identity} are not known here (no module with that hash)"
            ))
        })
    }
}

/// `MAGIC`, the part's JSON header (length-prefixed), then its body.
fn write(buf: &mut Vec<u8>, header: &Value, body: &[u8]) {
    let header = header.to_string();
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&(header.len() as u32).to_le_bytes());
    buf.extend_from_slice(header.as_bytes());
    buf.extend_from_slice(body);
}

fn read(buf: &[u8]) -> Result<(Value, &[u8])> {
    let bad = |why: &str| DataFusionError::Plan(format!("not a tilegate plan part: {why}"));
    let rest = buf.strip_prefix(MAGIC.as_slice()).ok_or_else(|| bad("no tilegate mark"))?;
    let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(|| bad("truncated"))?;
    let len = u32::from_le_bytes(*len) as usize;
    let (header, body) = rest.split_at_checked(len).ok_or_else(|| bad("truncated header"))?;
    let header = serde_json::from_slice(header).map_err(|e| bad(&e.to_string()))?;
    Ok((header, body))
}

fn field<'a>(header: &'a Value, name: &str) -> Result<&'a Value> {
    header.get(name).ok_or_else(|| DataFusionError::Plan(format!("a tilegate plan part lacks '{name}'")))
}

fn text<'a>(header: &'a Value, name: &str) -> Result<&'a str> {
    field(header, name)?
        .as_str()
        .ok_or_else(|| DataFusionError::Plan(format!("a tilegate plan part's '{name}' is not a string")))
}

fn selection_json(s: &Selection) -> Value {
    json!({ "bbox": s.bbox, "time": s.time })
}

fn selection_of(v: &Value) -> Result<Selection> {
    let bad = || DataFusionError::Plan(format!("a tilegate scan's selection is malformed: {v}"));
    let bbox = match v.get("bbox") {
        None | Some(Value::Null) => None,
        Some(b) => Some(serde_json::from_value::<[f64; 4]>(b.clone()).map_err(|_| bad())?),
    };
    let time = match v.get("time") {
        None | Some(Value::Null) => None,
        Some(t) => Some(serde_json::from_value::<(i64, i64)>(t.clone()).map_err(|_| bad())?),
    };
    Ok(Selection { bbox, time })
}

impl PhysicalExtensionCodec for JobCodec {
    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let unknown = || DataFusionError::NotImplemented(format!("tilegate's codec cannot encode {}", node.name()));
        let exec = node.downcast_ref::<DataSourceExec>().ok_or_else(unknown)?;
        let config = exec.data_source().downcast_ref::<FileScanConfig>().ok_or_else(unknown)?;
        let source = config.file_source().downcast_ref::<TileSource>().ok_or_else(unknown)?;
        let scan = source.scan();
        let layout = match scan.layout {
            Layout::Encoded => "encoded",
            Layout::Cells => "cells",
        };
        let header = json!({
            "part": "scan",
            "dataset": scan.dataset.name(),
            "variables": scan.variables,
            "selection": selection_json(&scan.selection),
            "layout": layout,
        });
        let files = serialize_file_scan_config(config, self, converter)?;
        write(buf, &header, &files.encode_to_vec());
        Ok(())
    }

    fn try_decode(
        &self,
        buf: &[u8],
        _inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (header, body) = read(buf)?;
        if text(&header, "part")? != "scan" {
            return Err(DataFusionError::Plan(format!("a tilegate plan part is not a scan: {header}")));
        }
        let name = text(&header, "dataset")?;
        let dataset = self.catalog.get(name).map_err(|e| DataFusionError::Plan(e.to_string()))?;
        let variables: Vec<String> = serde_json::from_value(field(&header, "variables")?.clone())
            .map_err(|e| DataFusionError::Plan(format!("a tilegate scan's variables: {e}")))?;
        let layout = match text(&header, "layout")? {
            "encoded" => Layout::Encoded,
            "cells" => Layout::Cells,
            other => return Err(DataFusionError::Plan(format!("a tilegate scan's layout '{other}' is unknown"))),
        };
        let scan = Arc::new(ScanContext {
            dataset,
            variables,
            selection: selection_of(field(&header, "selection")?)?,
            cache: self.cache.scan(),
            ctx: self.ctx.clone(),
            layout,
        });
        let files = FileScanExecConf::decode(body)
            .map_err(|e| DataFusionError::Plan(format!("a tilegate scan's files: {e}")))?;
        let decode = PhysicalPlanDecodeContext::new(ctx, self);
        let config = parse_protobuf_file_scan_config(&files, &decode, converter, Arc::new(TileSource::new(scan)))?;
        Ok(DataSourceExec::from_data_source(config))
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        if let Some(map) = node.inner().downcast_ref::<MapUdf>() {
            let header = json!({
                "part": "map",
                "functions": map.functions.identity(),
                "dataset": map.dataset,
                "tiles": map.total,
            });
            write(buf, &header, &[]);
        }
        Ok(())
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        let (header, _) = read(buf).map_err(|e| DataFusionError::Plan(format!("scalar function {name}: {e}")))?;
        let tiles = field(&header, "tiles")?.as_u64().unwrap_or(0) as usize;
        let functions = self.resolve(text(&header, "functions")?)?;
        Ok(Arc::new(map_udf(functions, self.ctx.clone(), text(&header, "dataset")?, tiles)))
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        if let Some(reduce) = node.inner().downcast_ref::<ReduceUdaf>() {
            write(buf, &json!({ "part": "reduce", "functions": reduce.identity() }), &[]);
        }
        Ok(())
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        let (header, _) = read(buf).map_err(|e| DataFusionError::Plan(format!("aggregate function {name}: {e}")))?;
        Ok(Arc::new(reduce_udaf(self.resolve(text(&header, "functions")?)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_that_are_not_ours_or_are_cut_short_are_plan_errors() {
        let mut part = Vec::new();
        write(&mut part, &json!({ "part": "reduce", "functions": "abc" }), b"body");
        let (header, body) = read(&part).unwrap();
        assert_eq!((text(&header, "functions").unwrap(), body), ("abc", &b"body"[..]));
        for bad in [&b"\x0a\x03abc"[..], &part[..8], &part[..14], b""] {
            let e = read(bad).unwrap_err().to_string();
            assert!(e.contains("not a tilegate plan part"), "{e}");
        }
        let mut not_json = MAGIC.to_vec();
        not_json.extend_from_slice(&3u32.to_le_bytes());
        not_json.extend_from_slice(b"{no");
        assert!(read(&not_json).unwrap_err().to_string().contains("not a tilegate plan part"));
        assert!(text(&header, "dataset").unwrap_err().to_string().contains("lacks 'dataset'"));
    }

    #[test]
    fn selections_round_trip_and_malformed_ones_are_refused() {
        for s in [
            Selection::default(),
            Selection { bbox: Some([-150.0, 45.0, -120.0, 60.0]), time: Some((1_220_227_200, 1_221_523_200)) },
        ] {
            assert_eq!(selection_of(&selection_json(&s)).unwrap(), s);
        }
        for bad in [json!({"bbox": [1, 2, 3]}), json!({"time": "soon"}), json!({"bbox": "x"})] {
            assert!(selection_of(&bad).unwrap_err().to_string().contains("selection is malformed"), "{bad}");
        }
    }
}
