//! Earlier results of a session as tables: a JSON value kept in the session becomes a table when it
//! is Livy's sql output (`{"schema": ..., "data": [[...]]}`: the schema's Spark types are used) or a
//! list of objects (rows of a job; columns are the union of the keys in first-seen order, typed
//! from the values: integers `long`, other numbers `double`, strings, bools; anything else its JSON
//! text).
//!
//! A list of objects is read twice from its text, never built as a tree: first the columns and
//! their types ([`Survey`]), then the columns themselves ([`Build`]). As `serde_json::Value`s a
//! million small objects cost about seventy times their text (half a gigabyte for 8 MB).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampSecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::MemTable;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::dataset::cf;

/// Column names, column types and rows (one value per column).
type Columns = (Vec<String>, Vec<DataType>, Vec<Vec<Value>>);

/// The largest Livy-shaped value (`{"schema", "data"}`) read as a table: it is read through a
/// `serde_json::Value` tree, some twenty times its size (the gateway's own `sql` results are at most
/// `sql_max_rows` rows; a list of objects has no such bound, it is read in streaming passes).
pub(crate) const LIVY_TABLE_BYTES: usize = 4 << 20;

/// The table a kept JSON value stands for, or `None` when it is not table-shaped (or a Livy-shaped
/// value over [`LIVY_TABLE_BYTES`]).
pub(crate) fn table(json: &[u8]) -> Option<MemTable> {
    let first = json.iter().find(|b| !b.is_ascii_whitespace())?;
    let (fields, columns) = match first {
        b'[' => objects(json)?,
        b'{' if json.len() > LIVY_TABLE_BYTES => return None,
        b'{' => {
            let value: Value = serde_json::from_slice(json).ok()?;
            let o = value.as_object()?;
            if !(o.contains_key("schema") && o.contains_key("data")) {
                return None;
            }
            let (names, types, rows) = livy(&value)?;
            let fields = names.iter().zip(&types).map(|(n, t)| Field::new(n, t.clone(), true)).collect();
            let columns = types.iter().enumerate().map(|(i, t)| column(t, rows.iter().map(|r| &r[i]))).collect();
            (fields, columns)
        }
        _ => return None,
    };
    let schema = Arc::new(Schema::new(fields));
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

/// A non-empty list of objects as columns, or `None` for anything else.
fn objects(json: &[u8]) -> Option<(Vec<Field>, Vec<ArrayRef>)> {
    let mut survey = Survey::default();
    let mut reader = serde_json::Deserializer::from_slice(json);
    Rows(&mut survey).deserialize(&mut reader).ok()?;
    reader.end().ok()?;
    if survey.rows == 0 {
        return None;
    }
    let types: Vec<DataType> = survey.kinds.iter().map(|k| k.data_type()).collect();
    let mut build = Build { index: survey.index, columns: types.iter().map(Column::new).collect(), row: 0 };
    Rows(&mut build).deserialize(&mut serde_json::Deserializer::from_slice(json)).ok()?;
    let fields = survey.names.iter().zip(&types).map(|(n, t)| Field::new(n, t.clone(), true)).collect();
    Some((fields, build.columns.into_iter().map(Column::finish).collect()))
}

/// What one pass does with each object of the list.
trait Pass {
    /// One object: its entries come from `map`.
    fn object<'de, A: MapAccess<'de>>(&mut self, map: A) -> Result<(), A::Error>;
}

/// The list: every element must be an object.
struct Rows<'p, P>(&'p mut P);

impl<'de, P: Pass> DeserializeSeed<'de> for Rows<'_, P> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, P: Pass> Visitor<'de> for Rows<'_, P> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of objects")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Object(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

struct Object<'p, P>(&'p mut P);

impl<'de, P: Pass> DeserializeSeed<'de> for Object<'_, P> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, P: Pass> Visitor<'de> for Object<'_, P> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.0.object(map)
    }
}

/// The first pass: the columns in first-seen order and the kinds of value each holds.
#[derive(Default)]
struct Survey {
    names: Vec<String>,
    index: HashMap<String, usize>,
    kinds: Vec<Kinds>,
    rows: usize,
}

impl Pass for Survey {
    fn object<'de, A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let at = match self.index.get(key.as_ref()) {
                Some(&at) => at,
                None => {
                    self.names.push(key.clone().into_owned());
                    self.index.insert(key.into_owned(), self.kinds.len());
                    self.kinds.push(Kinds::default());
                    self.kinds.len() - 1
                }
            };
            let kind = map.next_value_seed(KindOf)?;
            self.kinds[at].0 |= kind;
        }
        self.rows += 1;
        Ok(())
    }
}

/// The kinds of value a column holds, as bits.
#[derive(Default, Clone, Copy)]
struct Kinds(u8);

const INTEGER: u8 = 1;
const FLOAT: u8 = 2;
const BOOL: u8 = 4;
const OTHER: u8 = 8;

impl Kinds {
    fn data_type(self) -> DataType {
        match self.0 {
            INTEGER => DataType::Int64,
            k if k != 0 && k & !(INTEGER | FLOAT) == 0 => DataType::Float64,
            BOOL => DataType::Boolean,
            _ => DataType::Utf8,
        }
    }
}

/// A value's kind (0 for null), read without keeping it.
struct KindOf;

impl<'de> DeserializeSeed<'de> for KindOf {
    type Value = u8;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u8, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KindOf {
    type Value = u8;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<u8, E> {
        Ok(BOOL)
    }
    fn visit_i64<E>(self, _: i64) -> Result<u8, E> {
        Ok(INTEGER)
    }
    fn visit_u64<E>(self, _: u64) -> Result<u8, E> {
        Ok(INTEGER)
    }
    fn visit_f64<E>(self, _: f64) -> Result<u8, E> {
        Ok(FLOAT)
    }
    fn visit_str<E>(self, _: &str) -> Result<u8, E> {
        Ok(OTHER)
    }
    fn visit_unit<E>(self) -> Result<u8, E> {
        Ok(0)
    }
    fn visit_none<E>(self) -> Result<u8, E> {
        Ok(0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u8, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(OTHER)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u8, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(OTHER)
    }
}

/// The second pass: each value appended to its column; a column an object lacks gets a null.
struct Build {
    index: HashMap<String, usize>,
    columns: Vec<Column>,
    row: usize,
}

impl Pass for Build {
    fn object<'de, A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match self.index.get(key.as_ref()).map(|&at| &mut self.columns[at]) {
                // A repeated key: the first value stands.
                Some(column) if column.len() <= self.row => map.next_value_seed(Append(column))?,
                _ => map.next_value::<IgnoredAny>().map(|_| ())?,
            }
        }
        self.row += 1;
        for column in &mut self.columns {
            if column.len() < self.row {
                column.append_null();
            }
        }
        Ok(())
    }
}

/// A column being built, of the type the survey found.
enum Column {
    Integer(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Text(StringBuilder),
}

impl Column {
    fn new(t: &DataType) -> Self {
        match t {
            DataType::Int64 => Self::Integer(Int64Builder::new()),
            DataType::Float64 => Self::Float(Float64Builder::new()),
            DataType::Boolean => Self::Bool(BooleanBuilder::new()),
            _ => Self::Text(StringBuilder::new()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Integer(b) => b.len(),
            Self::Float(b) => b.len(),
            Self::Bool(b) => b.len(),
            Self::Text(b) => b.len(),
        }
    }

    fn append_null(&mut self) {
        match self {
            Self::Integer(b) => b.append_null(),
            Self::Float(b) => b.append_null(),
            Self::Bool(b) => b.append_null(),
            Self::Text(b) => b.append_null(),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Self::Integer(mut b) => Arc::new(b.finish()),
            Self::Float(mut b) => Arc::new(b.finish()),
            Self::Bool(mut b) => Arc::new(b.finish()),
            Self::Text(mut b) => Arc::new(b.finish()),
        }
    }
}

/// Appends one value to its column: numbers and bools as such; in a text column a string as
/// itself and anything else as its JSON text.
struct Append<'c>(&'c mut Column);

impl<'de> DeserializeSeed<'de> for Append<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let raw = <&'de RawValue as serde::Deserialize>::deserialize(d)?;
        let text = raw.get();
        let column = self.0;
        if text == "null" {
            column.append_null();
            return Ok(());
        }
        match column {
            Column::Integer(b) => b.append_option(text.parse::<i64>().ok()),
            Column::Float(b) => b.append_option(text.parse::<f64>().ok()),
            Column::Bool(b) => b.append_option(text.parse::<bool>().ok()),
            Column::Text(b) if text.starts_with('"') => match serde_json::from_str::<std::borrow::Cow<'_, str>>(text) {
                Ok(s) => b.append_value(s),
                Err(_) => b.append_null(),
            },
            Column::Text(b) => b.append_value(text),
        }
        Ok(())
    }
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
        assert!(table(b"[{}, 1]").is_none() && table(b"{\"a\": 1}").is_none() && table(b"[{} ").is_none());
        // A Livy-shaped value is read through a tree: past its bound it is not a table.
        let rows = vec!["[\"2008-09-01T00:00:00Z\", 5]"; LIVY_TABLE_BYTES / 20].join(",");
        let big = String::from_utf8_lossy(livy).replace("[[\"2008-09-01T00:00:00Z\", 5]]", &format!("[{rows}]"));
        assert!(big.len() > LIVY_TABLE_BYTES && table(big.as_bytes()).is_none());
    }

    #[test]
    fn objects_read_from_text_keep_every_value_in_its_row() {
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::Int64Type;
        let rows = br#"[{"a": 1, "s": "x\"y"}, {"b": [1, 2], "a": null, "f": 2}, {"a": 2, "a": 3, "f": 2.5, "s": 7}]"#;
        let table = table(rows).unwrap();
        let batch = &table.batches[0].try_read().unwrap()[0].clone();
        let column = |name: &str| batch.column(batch.schema().index_of(name).unwrap()).clone();
        let a = column("a");
        let a = a.as_primitive::<Int64Type>();
        assert_eq!(a.iter().collect::<Vec<_>>(), [Some(1), None, Some(2)], "a repeated key: the first stands");
        let s = column("s");
        assert_eq!(s.as_string::<i32>().iter().collect::<Vec<_>>(), [Some("x\"y"), None, Some("7")]);
        let b = column("b");
        assert_eq!(b.as_string::<i32>().iter().collect::<Vec<_>>(), [None, Some("[1, 2]"), None]);
        let f = column("f");
        let f = f.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        assert_eq!(f.iter().collect::<Vec<_>>(), [None, Some(2.0), Some(2.5)]);
    }
}
