//! Earlier results of a session as tables: a JSON value kept in the session becomes a table when it
//! is Livy's sql output (`{"schema": ..., "data": [[...]]}`: the schema's Spark types are used) or a
//! list of objects (rows of a job; columns are the union of the keys in first-seen order, typed
//! from the values: integers `long`, other numbers `double`, strings, bools; anything else its JSON
//! text).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder, TimestampSecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::MemTable;
use serde_json::Value;

use crate::dataset::cf;

/// Column names, column types and rows (one value per column).
type Columns = (Vec<String>, Vec<DataType>, Vec<Vec<Value>>);

/// The table a kept JSON value stands for, or `None` when it is not table-shaped.
pub(crate) fn table(json: &[u8]) -> Option<MemTable> {
    let value: Value = serde_json::from_slice(json).ok()?;
    let (names, types, rows): Columns = match &value {
        Value::Object(o) if o.contains_key("schema") && o.contains_key("data") => livy(&value)?,
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => objects(items),
        _ => return None,
    };
    let fields: Vec<Field> = names.iter().zip(&types).map(|(n, t)| Field::new(n, t.clone(), true)).collect();
    let schema = Arc::new(Schema::new(fields));
    let columns: Vec<ArrayRef> = types.iter().enumerate().map(|(i, t)| column(t, rows.iter().map(|r| &r[i]))).collect();
    let batch = RecordBatch::try_new(schema.clone(), columns).ok()?;
    MemTable::try_new(schema, vec![vec![batch]]).ok()
}

fn livy(value: &Value) -> Option<Columns> {
    let fields = value["schema"]["fields"].as_array()?;
    let names = fields.iter().map(|f| f["name"].as_str().map(str::to_owned)).collect::<Option<Vec<_>>>()?;
    let types = fields
        .iter()
        .map(|f| match f["type"].as_str() {
            Some("long" | "integer" | "short" | "byte") => DataType::Int64,
            Some("double" | "float") => DataType::Float64,
            Some(t) if t.starts_with("decimal") => DataType::Float64,
            Some("boolean") => DataType::Boolean,
            Some("timestamp") => DataType::Timestamp(TimeUnit::Second, None),
            _ => DataType::Utf8,
        })
        .collect();
    let rows = value["data"].as_array()?.iter().map(|r| r.as_array().cloned().unwrap_or_default()).collect::<Vec<_>>();
    let width = names.len();
    Some((
        names,
        types,
        rows.into_iter()
            .map(|mut r| {
                r.resize(width, Value::Null);
                r
            })
            .collect(),
    ))
}

fn objects(items: &[Value]) -> Columns {
    let mut names: Vec<String> = Vec::new();
    for item in items {
        for key in item.as_object().into_iter().flat_map(|o| o.keys()) {
            if !names.contains(key) {
                names.push(key.clone());
            }
        }
    }
    let rows: Vec<Vec<Value>> = items.iter().map(|item| names.iter().map(|n| item[n].clone()).collect()).collect();
    let types = (0..names.len())
        .map(|i| {
            let present: Vec<&Value> = rows.iter().map(|r| &r[i]).filter(|v| !v.is_null()).collect();
            if present.is_empty() {
                DataType::Utf8
            } else if present.iter().all(|v| v.is_i64() || v.is_u64()) {
                DataType::Int64
            } else if present.iter().all(|v| v.is_number()) {
                DataType::Float64
            } else if present.iter().all(|v| v.is_boolean()) {
                DataType::Boolean
            } else {
                DataType::Utf8
            }
        })
        .collect();
    (names, types, rows)
}

fn column<'a>(t: &DataType, values: impl Iterator<Item = &'a Value>) -> ArrayRef {
    match t {
        DataType::Int64 => {
            let mut b = Int64Builder::new();
            values.for_each(|v| b.append_option(v.as_i64()));
            Arc::new(b.finish())
        }
        DataType::Float64 => {
            let mut b = Float64Builder::new();
            values.for_each(|v| b.append_option(v.as_f64()));
            Arc::new(b.finish())
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::new();
            values.for_each(|v| b.append_option(v.as_bool()));
            Arc::new(b.finish())
        }
        DataType::Timestamp(..) => {
            let mut b = TimestampSecondBuilder::new();
            values.for_each(|v| b.append_option(v.as_str().and_then(|s| cf::parse_datetime(s).ok()).or(v.as_i64())));
            Arc::new(b.finish())
        }
        _ => {
            let mut b = StringBuilder::new();
            values.for_each(|v| match v {
                Value::Null => b.append_null(),
                Value::String(s) => b.append_value(s),
                other => b.append_value(other.to_string()),
            });
            Arc::new(b.finish())
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::catalog::TableProvider;

    use super::*;

    #[test]
    fn rows_of_a_job_and_livy_outputs_become_tables() {
        let rows =
            br#"[{"time": 1, "cnt": 2, "mean": 1.5, "key": [1, 2]}, {"time": 2, "cnt": 3, "mean": 2, "extra": true}]"#;
        let t = table(rows).unwrap();
        let schema = t.schema();
        let types: Vec<(&str, &DataType)> =
            schema.fields().iter().map(|f| (f.name().as_str(), f.data_type())).collect();
        assert_eq!(
            types,
            [
                ("time", &DataType::Int64),
                ("cnt", &DataType::Int64),
                ("mean", &DataType::Float64),
                ("key", &DataType::Utf8),
                ("extra", &DataType::Boolean)
            ]
        );
        let livy = br#"{"schema": {"type": "struct", "fields": [{"name": "time", "type": "timestamp", "nullable": false, "metadata": {}}, {"name": "n", "type": "long", "nullable": false, "metadata": {}}]}, "data": [["2008-09-01T00:00:00Z", 5]]}"#;
        let t = table(livy).unwrap();
        assert_eq!(t.schema().field(0).data_type(), &DataType::Timestamp(TimeUnit::Second, None));
        assert!(table(b"42").is_none() && table(b"[1, 2]").is_none() && table(b"[]").is_none());
    }
}
