//! Query results as Livy's `sql` output: `application/json` = `{"schema": <Spark StructType>,
//! "data": [[row values], ...]}` with Spark type names, and a `text/plain` table.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::common::ScalarValue;
use serde_json::{Value, json};

use super::SqlResult;
use crate::dataset::cf;

/// Livy output `data`: MIME type → value.
pub type Data = std::collections::BTreeMap<String, Value>;

/// Livy output data for `result`, with at most `max_rows` rows. When rows were left out, the JSON
/// says so (`"truncated": true, "totalRows": n`) and so does the last line of the text.
pub fn livy_data(result: &SqlResult, max_rows: usize) -> Data {
    let total = result.rows();
    let fields: Vec<Value> = result
        .schema
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": spark_type(f.data_type()), "nullable": f.is_nullable(), "metadata": {}}))
        .collect();
    let mut data = Vec::with_capacity(total.min(max_rows));
    let mut kept = Vec::new();
    for batch in &result.batches {
        let room = max_rows - data.len();
        if room == 0 {
            break;
        }
        let batch = batch.slice(0, batch.num_rows().min(room));
        for row in 0..batch.num_rows() {
            data.push(Value::Array(batch.columns().iter().map(|c| cell(c, row)).collect()));
        }
        kept.push(batch);
    }
    let mut json = json!({"schema": {"type": "struct", "fields": fields}, "data": data});
    let mut text = pretty_format_batches(&kept).map_or_else(|e| e.to_string(), |t| t.to_string());
    if kept.is_empty() {
        let names: Vec<&str> = result.schema.fields().iter().map(|f| f.name().as_str()).collect();
        text = format!("({}) no rows", names.join(", "));
    }
    if total > data.len() {
        json["truncated"] = json!(true);
        json["totalRows"] = json!(total);
        text.push_str(&format!("\nshowing {} of {total} rows", data.len()));
    }
    Data::from([("application/json".to_owned(), json), ("text/plain".to_owned(), Value::String(text))])
}

/// Spark's name for an Arrow type (what Livy's sql output carries in `schema.fields[].type`).
pub fn spark_type(t: &DataType) -> Value {
    let name = match t {
        DataType::Boolean => "boolean",
        DataType::Int8 => "byte",
        DataType::Int16 | DataType::UInt8 => "short",
        DataType::Int32 | DataType::UInt16 => "integer",
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "long",
        DataType::Float16 | DataType::Float32 => "float",
        DataType::Float64 => "double",
        DataType::Timestamp(..) => "timestamp",
        DataType::Date32 | DataType::Date64 => "date",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary",
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => return Value::String(format!("decimal({p},{s})")),
        DataType::List(f) | DataType::LargeList(f) => {
            return json!({"type": "array", "elementType": spark_type(f.data_type()), "containsNull": f.is_nullable()});
        }
        DataType::Struct(fields) => {
            let fields: Vec<Value> = fields
                .iter()
                .map(|f| json!({"name": f.name(), "type": spark_type(f.data_type()), "nullable": f.is_nullable(), "metadata": {}}))
                .collect();
            return json!({"type": "struct", "fields": fields});
        }
        _ => "string",
    };
    Value::String(name.to_owned())
}

/// One value as JSON: numbers as numbers (NaN and infinities as null), times and dates as ISO
/// strings, anything else as its text.
fn cell(column: &ArrayRef, row: usize) -> Value {
    if column.is_null(row) {
        return Value::Null;
    }
    let Ok(scalar) = ScalarValue::try_from_array(column, row) else { return Value::Null };
    let number = |x: f64| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number);
    match scalar {
        ScalarValue::Boolean(Some(b)) => Value::Bool(b),
        ScalarValue::Int8(Some(v)) => json!(v),
        ScalarValue::Int16(Some(v)) => json!(v),
        ScalarValue::Int32(Some(v)) => json!(v),
        ScalarValue::Int64(Some(v)) => json!(v),
        ScalarValue::UInt8(Some(v)) => json!(v),
        ScalarValue::UInt16(Some(v)) => json!(v),
        ScalarValue::UInt32(Some(v)) => json!(v),
        ScalarValue::UInt64(Some(v)) => json!(v),
        ScalarValue::Float32(Some(v)) => number(f64::from(v)),
        ScalarValue::Float64(Some(v)) => number(v),
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            Value::String(s)
        }
        ScalarValue::TimestampSecond(Some(v), _)
            if matches!(column.data_type(), DataType::Timestamp(TimeUnit::Second, _)) =>
        {
            Value::String(cf::iso(v))
        }
        _ => {
            let options = FormatOptions::default();
            ArrayFormatter::try_new(column.as_ref(), &options)
                .map_or(Value::Null, |f| Value::String(f.value(row).to_string()))
        }
    }
}

/// How a full result is downloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per row (`application/x-ndjson`).
    JsonLines,
    /// A header line, then one line per row (`text/csv`).
    Csv,
    /// The Arrow IPC stream format (`application/vnd.apache.arrow.stream`).
    Arrow,
    /// A Parquet file, zstd-compressed (`application/vnd.apache.parquet`).
    Parquet,
}

impl Format {
    /// The format named `jsonl`, `csv`, `arrow` or `parquet`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "jsonl" | "json" | "ndjson" => Some(Self::JsonLines),
            "csv" => Some(Self::Csv),
            "arrow" => Some(Self::Arrow),
            "parquet" => Some(Self::Parquet),
            _ => None,
        }
    }

    /// The `Content-Type` of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::JsonLines => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Arrow => "application/vnd.apache.arrow.stream",
            Self::Parquet => "application/vnd.apache.parquet",
        }
    }
}

/// Every row of `result` in `format`.
///
/// # Errors
/// When Arrow cannot write a column type in that format.
pub fn write(result: &SqlResult, format: Format) -> Result<Vec<u8>, String> {
    use datafusion::arrow::{csv, ipc, json};
    let mut out = Vec::new();
    let batches: Vec<&datafusion::arrow::array::RecordBatch> = result.batches.iter().collect();
    let e = |e: datafusion::arrow::error::ArrowError| e.to_string();
    match format {
        Format::JsonLines => {
            let mut writer = json::LineDelimitedWriter::new(&mut out);
            writer.write_batches(&batches).map_err(e)?;
            writer.finish().map_err(e)?;
        }
        Format::Csv => {
            if batches.is_empty() {
                let names: Vec<&str> = result.schema.fields().iter().map(|f| f.name().as_str()).collect();
                out.extend_from_slice(format!("{}\n", names.join(",")).as_bytes());
            } else {
                let mut writer = csv::WriterBuilder::new().with_header(true).build(&mut out);
                for batch in batches {
                    writer.write(batch).map_err(e)?;
                }
            }
        }
        Format::Arrow => {
            let mut writer = ipc::writer::StreamWriter::try_new(&mut out, &result.schema).map_err(e)?;
            for batch in batches {
                writer.write(batch).map_err(e)?;
            }
            writer.finish().map_err(e)?;
        }
        Format::Parquet => {
            use parquet::arrow::ArrowWriter;
            use parquet::basic::{Compression, ZstdLevel};
            use parquet::file::properties::WriterProperties;
            let p = |e: parquet::errors::ParquetError| e.to_string();
            let properties =
                WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
            let (schema, batches) = parquet_ready(result).map_err(e)?;
            let mut writer = ArrowWriter::try_new(&mut out, schema, Some(properties)).map_err(p)?;
            for batch in &batches {
                writer.write(batch).map_err(p)?;
            }
            writer.close().map_err(p)?;
        }
    }
    Ok(out)
}

/// The result with second timestamps as milliseconds: Parquet has no second unit, and readers
/// (pyarrow, pandas) take seconds written as such for plain integers.
fn parquet_ready(result: &SqlResult) -> Result<(SchemaRef, Vec<RecordBatch>), ArrowError> {
    let widen = |t: &DataType| match t {
        DataType::Timestamp(TimeUnit::Second, tz) => DataType::Timestamp(TimeUnit::Millisecond, tz.clone()),
        other => other.clone(),
    };
    let fields: Vec<Field> =
        result.schema.fields().iter().map(|f| f.as_ref().clone().with_data_type(widen(f.data_type()))).collect();
    let schema = Arc::new(Schema::new_with_metadata(fields, result.schema.metadata().clone()));
    let batches = result
        .batches
        .iter()
        .map(|batch| {
            let columns = batch
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| if c.data_type() == f.data_type() { Ok(c.clone()) } else { cast(c, f.data_type()) })
                .collect::<Result<Vec<_>, _>>()?;
            RecordBatch::try_new(schema.clone(), columns)
        })
        .collect::<Result<_, _>>()?;
    Ok((schema, batches))
}
