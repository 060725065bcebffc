//! Snippet functions callable from SQL: a `rust` cell declares `sql_function!(kelvin(f64) -> f64)`;
//! its module then exports `sbx_sql__kelvin__f64__f64`, and a query can call `kelvin(sst)`. An
//! aggregate, `sql_aggregate!(geomean(f64) -> f64 = GeoMean)`, exports
//! `sbx_sqlagg__geomean__f64__f64` and becomes an aggregate function (`aggregate`). The gateway
//! runs the calls in sandbox workers ([`SqlFunctions`]); this module turns Arrow columns into the
//! wire format of `sandbox/ABI.md` and back.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanBuilder, Float64Builder, Int64Builder};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{
    AggregateUDF, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

use crate::job::JobError;
use crate::job::scan::external;

mod aggregate;

/// The export-name prefix of snippet SQL functions.
pub const EXPORT_PREFIX: &str = "sbx_sql__";

/// The export-name prefix of snippet SQL aggregates.
pub const AGGREGATE_EXPORT_PREFIX: &str = "sbx_sqlagg__";

/// Whether a snippet function is called per row or per group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FunctionKind {
    /// `sql_function!`: one value per row.
    Scalar,
    /// `sql_aggregate!`: one value per group of rows.
    Aggregate,
}

/// A snippet function as its export declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlFunction {
    /// The SQL name (the Rust fn's name).
    pub name: String,
    /// Argument types.
    pub args: Vec<DataType>,
    /// Result type.
    pub ret: DataType,
    /// The wasm export that runs it.
    pub export: String,
    /// Scalar or aggregate.
    pub kind: FunctionKind,
}

impl SqlFunction {
    /// Reads `sbx_sql__<name>__<arg>_<arg>__<ret>` (types `f64`, `i64`, `bool`), or the same
    /// after `sbx_sqlagg__` for an aggregate (which takes at least one argument).
    pub fn from_export(export: &str) -> Option<Self> {
        let (kind, rest) = match export.strip_prefix(EXPORT_PREFIX) {
            Some(rest) => (FunctionKind::Scalar, rest),
            None => (FunctionKind::Aggregate, export.strip_prefix(AGGREGATE_EXPORT_PREFIX)?),
        };
        let mut parts = rest.rsplitn(3, "__");
        let (ret, args, name) = (parts.next()?, parts.next()?, parts.next()?);
        let args: Vec<DataType> =
            if args.is_empty() { Vec::new() } else { args.split('_').map(data_type).collect::<Option<_>>()? };
        if name.is_empty() || (kind == FunctionKind::Aggregate && args.is_empty()) {
            return None;
        }
        Some(Self { name: name.to_owned(), args, ret: data_type(ret)?, export: export.to_owned(), kind })
    }

    /// Makes the function callable from `session`'s queries, run by `runner`.
    pub(crate) fn register(&self, session: &SessionContext, runner: Arc<dyn SqlFunctions>) {
        match self.kind {
            FunctionKind::Scalar => session.register_udf(ScalarUDF::from(SnippetUdf::new(self.clone(), runner))),
            FunctionKind::Aggregate => {
                session.register_udaf(AggregateUDF::from(aggregate::SnippetUdaf::new(self.clone(), runner)))
            }
        }
    }
}

fn data_type(name: &str) -> Option<DataType> {
    match name {
        "f64" => Some(DataType::Float64),
        "i64" => Some(DataType::Int64),
        "bool" => Some(DataType::Boolean),
        _ => None,
    }
}

fn tag(t: &DataType) -> u8 {
    match t {
        DataType::Float64 => 0,
        DataType::Int64 => 1,
        _ => 2,
    }
}

/// Calls snippet functions: export name and input bytes in, output bytes out.
pub trait SqlFunctions: Send + Sync {
    /// Runs `export` on `input` (the wire format) in the sandbox.
    ///
    /// # Errors
    /// The function's failure (panic, trap, limit), as the statement should report it.
    fn call(&self, export: &str, input: &[u8]) -> Result<Vec<u8>, JobError>;
}

/// A snippet function as a DataFusion UDF.
pub(crate) struct SnippetUdf {
    function: SqlFunction,
    signature: Signature,
    runner: Arc<dyn SqlFunctions>,
}

impl SnippetUdf {
    pub(crate) fn new(function: SqlFunction, runner: Arc<dyn SqlFunctions>) -> Self {
        let signature = Signature::exact(function.args.clone(), Volatility::Volatile);
        Self { function, signature, runner }
    }
}

impl std::fmt::Debug for SnippetUdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "snippet function {}", self.function.export)
    }
}

impl PartialEq for SnippetUdf {
    fn eq(&self, other: &Self) -> bool {
        self.function == other.function
    }
}

impl Eq for SnippetUdf {}

impl Hash for SnippetUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.function.export.hash(state);
    }
}

impl ScalarUDFImpl for SnippetUdf {
    fn name(&self) -> &str {
        &self.function.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.function.ret.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let columns: Vec<ArrayRef> = args.args.iter().map(|a| a.to_array(rows)).collect::<Result<_>>()?;
        let input = encode(&columns, rows)?;
        let output = self.runner.call(&self.function.export, &input).map_err(|e| {
            external(JobError::new(&e.ename, format!("SQL function {}: {}", self.function.name, e.message)))
        })?;
        Ok(ColumnarValue::Array(decode(&output, rows, &self.function.ret)?))
    }
}

/// `u32 rows, u32 cols`, then per column `u8 type`, `rows` validity bytes, `rows * 8` value bytes.
fn encode(columns: &[ArrayRef], rows: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(8 + columns.len() * (1 + rows * 9));
    encode_into(&mut out, columns, rows, None)?;
    Ok(out)
}

/// Appends [`encode`]'s format for the rows `pick` lists (every one of the `rows` when `None`).
fn encode_into(out: &mut Vec<u8>, columns: &[ArrayRef], rows: usize, pick: Option<&[u32]>) -> Result<()> {
    let n = pick.map_or(rows, <[u32]>::len);
    let (Ok(n32), Ok(cols)) = (u32::try_from(n), u32::try_from(columns.len())) else {
        return Err(DataFusionError::Execution(format!("a batch of {n} rows is too large for a snippet function")));
    };
    out.reserve(8 + columns.len() * (1 + n * 9));
    out.extend_from_slice(&n32.to_le_bytes());
    out.extend_from_slice(&cols.to_le_bytes());
    for column in columns {
        out.push(tag(column.data_type()));
        match column.logical_nulls() {
            Some(nulls) => each(pick, rows, |i| out.push(u8::from(nulls.is_valid(i)))),
            None => each(pick, rows, |_| out.push(1)),
        }
        match column.data_type() {
            DataType::Float64 => {
                let values = column.as_primitive::<Float64Type>().values();
                each(pick, rows, |i| out.extend_from_slice(&values[i].to_le_bytes()));
            }
            DataType::Int64 => {
                let values = column.as_primitive::<Int64Type>().values();
                each(pick, rows, |i| out.extend_from_slice(&values[i].to_le_bytes()));
            }
            DataType::Boolean => {
                let b = column.as_boolean();
                each(pick, rows, |i| out.extend_from_slice(&i64::from(b.value(i)).to_le_bytes()));
            }
            other => {
                return Err(DataFusionError::Plan(format!("snippet functions take f64, i64 or bool, not {other}")));
            }
        }
    }
    Ok(())
}

/// Calls `f` on each row to send, in order: those `pick` lists, or all `rows`.
fn each(pick: Option<&[u32]>, rows: usize, f: impl FnMut(usize)) {
    match pick {
        Some(pick) => pick.iter().map(|&i| i as usize).for_each(f),
        None => (0..rows).for_each(f),
    }
}

/// `u8 type`, `rows` validity bytes, `rows * 8` value bytes.
fn decode(bytes: &[u8], rows: usize, ret: &DataType) -> Result<ArrayRef> {
    let bad = |why: &str| external(JobError::abi(format!("a snippet function's output {why}")));
    if bytes.len() != 1 + rows * 9 {
        return Err(bad(&format!("is {} bytes, not {} for {rows} rows", bytes.len(), 1 + rows * 9)));
    }
    if bytes[0] != tag(ret) {
        return Err(bad("has the wrong type"));
    }
    let valid = &bytes[1..1 + rows];
    let value = |i: usize| {
        let at = 1 + rows + 8 * i;
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&bytes[at..at + 8]);
        raw
    };
    Ok(match ret {
        DataType::Float64 => {
            let mut b = Float64Builder::with_capacity(rows);
            (0..rows).for_each(|i| b.append_option((valid[i] == 1).then(|| f64::from_le_bytes(value(i)))));
            std::sync::Arc::new(b.finish())
        }
        DataType::Int64 => {
            let mut b = Int64Builder::with_capacity(rows);
            (0..rows).for_each(|i| b.append_option((valid[i] == 1).then(|| i64::from_le_bytes(value(i)))));
            std::sync::Arc::new(b.finish())
        }
        _ => {
            let mut b = BooleanBuilder::with_capacity(rows);
            (0..rows).for_each(|i| b.append_option((valid[i] == 1).then(|| i64::from_le_bytes(value(i)) != 0)));
            std::sync::Arc::new(b.finish())
        }
    })
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Float64Array;

    use super::*;

    #[test]
    fn export_names_declare_signatures() {
        let f = SqlFunction::from_export("sbx_sql__kelvin__f64__f64").unwrap();
        assert_eq!(
            (f.name.as_str(), f.args.as_slice(), &f.ret),
            ("kelvin", &[DataType::Float64][..], &DataType::Float64)
        );
        let f = SqlFunction::from_export("sbx_sql__is_warm__f64_i64__bool").unwrap();
        assert_eq!((f.name.as_str(), f.args.len(), &f.ret), ("is_warm", 2, &DataType::Boolean));
        assert_eq!(SqlFunction::from_export("sbx_sql__pi____f64").unwrap().args, []);
        assert!(SqlFunction::from_export("sbx_sql__x__str__f64").is_none());
        assert!(SqlFunction::from_export("sbx_main").is_none());
        assert_eq!(SqlFunction::from_export("sbx_sql__kelvin__f64__f64").unwrap().kind, FunctionKind::Scalar);
        let f = SqlFunction::from_export("sbx_sqlagg__w_mean__f64_f64__f64").unwrap();
        assert_eq!(
            (f.name.as_str(), f.args.len(), &f.ret, f.kind),
            ("w_mean", 2, &DataType::Float64, FunctionKind::Aggregate)
        );
        // An aggregate has arguments (its rows); a function has a name.
        assert!(SqlFunction::from_export("sbx_sqlagg__n____i64").is_none());
        assert!(SqlFunction::from_export("sbx_sql______f64").is_none());
    }

    #[test]
    fn columns_encode_and_results_decode() {
        let column: ArrayRef = Arc::new(Float64Array::from(vec![Some(1.5), None]));
        let bytes = encode(&[column], 2).unwrap();
        assert_eq!(&bytes[..9], &[2, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(&bytes[9..11], &[1, 0]);
        assert_eq!(&bytes[11..19], &1.5f64.to_le_bytes());
        let mut out = vec![0u8, 1, 0];
        out.extend_from_slice(&2.5f64.to_le_bytes());
        out.extend_from_slice(&0f64.to_le_bytes());
        let array = decode(&out, 2, &DataType::Float64).unwrap();
        let array = array.as_primitive::<Float64Type>();
        assert_eq!((array.value(0), array.is_null(1)), (2.5, true));
        assert!(decode(&out[..5], 2, &DataType::Float64).is_err());
    }
}
