//! How keys and values travel between instances (a fixed binary encoding, no serde) and how they
//! become JSON at the end.

use std::fmt::Write as _;

/// A key or value of a job. `encode`/`decode` must round-trip; `to_json` writes the final form.
pub trait Value: Sized {
    /// The field name a key gets in a result row (`{"<NAME>": key, ...value fields}`).
    const NAME: &'static str = "key";
    /// Appends the binary form.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads the binary form.
    fn decode(bytes: &[u8]) -> Self;
    /// Appends the JSON form.
    fn to_json(&self, out: &mut String);
}

/// A time, epoch seconds: as a key it names the row's `"time"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub i64);

impl Value for Time {
    const NAME: &'static str = "time";
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
    }
    fn decode(bytes: &[u8]) -> Self {
        Self(i64::decode(bytes))
    }
    fn to_json(&self, out: &mut String) {
        self.0.to_json(out);
    }
}

macro_rules! number {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn decode(bytes: &[u8]) -> Self {
                const N: usize = core::mem::size_of::<$t>();
                let mut raw = [0u8; N];
                raw.copy_from_slice(&bytes[..N]);
                <$t>::from_le_bytes(raw)
            }
            fn to_json(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
number!(i8, i16, i32, i64, u8, u16, u32, u64);

impl Value for usize {
    fn encode(&self, out: &mut Vec<u8>) {
        (*self as u64).encode(out);
    }
    fn decode(bytes: &[u8]) -> Self {
        u64::decode(bytes) as usize
    }
    fn to_json(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Value for isize {
    fn encode(&self, out: &mut Vec<u8>) {
        (*self as i64).encode(out);
    }
    fn decode(bytes: &[u8]) -> Self {
        i64::decode(bytes) as isize
    }
    fn to_json(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Value for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode(bytes: &[u8]) -> Self {
        bytes.first().is_some_and(|b| *b != 0)
    }
    fn to_json(&self, out: &mut String) {
        out.push_str(if *self { "true" } else { "false" });
    }
}

impl<T: Value> Value for Option<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        if let Some(v) = self {
            out.push(1);
            v.encode(out);
        } else {
            out.push(0);
        }
    }
    fn decode(bytes: &[u8]) -> Self {
        (bytes.first() == Some(&1)).then(|| T::decode(&bytes[1..]))
    }
    fn to_json(&self, out: &mut String) {
        match self {
            Some(v) => v.to_json(out),
            None => out.push_str("null"),
        }
    }
}

/// Declares a struct whose fields are all [`Value`]s, and implements [`Value`] for it: a
/// custom key or value of a map, or a statement's result. It becomes a JSON object.
///
/// ```ignore
/// record! {
///     #[derive(Debug, Clone, Copy)]
///     pub struct Warm { pub days: u64, pub hottest: f64 }
/// }
/// ```
#[macro_export]
macro_rules! record {
    ($(#[$attr:meta])* $vis:vis struct $name:ident { $($fvis:vis $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$attr])* $vis struct $name { $($fvis $field: $ty),* }
        impl $crate::Value for $name {
            fn encode(&self, out: &mut ::std::vec::Vec<u8>) {
                $( $crate::value_field_encode(&self.$field, out); )*
            }
            fn decode(bytes: &[u8]) -> Self {
                let mut at = 0usize;
                $( let $field = $crate::value_field_decode::<$ty>(bytes, &mut at); )*
                Self { $($field),* }
            }
            fn to_json(&self, out: &mut ::std::string::String) {
                let mut first = true;
                out.push('{');
                $(
                    if !::core::mem::take(&mut first) { out.push(','); }
                    $crate::json_string(out, ::core::stringify!($field));
                    out.push(':');
                    $crate::Value::to_json(&self.$field, out);
                )*
                let _ = first;
                out.push('}');
            }
        }
    };
}

/// A length-prefixed value (a [`record!`] field, a tuple's first part, a `Vec` item, a job's
/// key or value): u32 length, then its encoding.
#[doc(hidden)]
pub fn value_field_encode<T: Value>(value: &T, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    value.encode(out);
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// Reads a field written by [`value_field_encode`] at `*at` and moves past it.
#[doc(hidden)]
pub fn value_field_decode<T: Value>(bytes: &[u8], at: &mut usize) -> T {
    let len = u32::decode(&bytes[*at..]) as usize;
    let value = T::decode(&bytes[*at + 4..*at + 4 + len]);
    *at += 4 + len;
    value
}

impl Value for f64 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn decode(bytes: &[u8]) -> Self {
        f64::from_le_bytes(bytes[..8].try_into().unwrap_or_default())
    }
    fn to_json(&self, out: &mut String) {
        push_f64(out, *self);
    }
}

impl Value for f32 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn decode(bytes: &[u8]) -> Self {
        f32::from_le_bytes(bytes[..4].try_into().unwrap_or_default())
    }
    /// The shortest text that reads back as this `f32` (`10.1`, not the `f64` widening's
    /// `10.100000381469727`): what the data says, and fewer digits to find.
    fn to_json(&self, out: &mut String) {
        if self.is_finite() {
            let _ = write!(out, "{self:?}");
        } else {
            out.push_str("null");
        }
    }
}

impl Value for String {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(bytes: &[u8]) -> Self {
        String::from_utf8_lossy(bytes).into_owned()
    }
    fn to_json(&self, out: &mut String) {
        json_string(out, self);
    }
}

impl<A: Value, B: Value> Value for (A, B) {
    fn encode(&self, out: &mut Vec<u8>) {
        value_field_encode(&self.0, out);
        self.1.encode(out);
    }
    fn decode(bytes: &[u8]) -> Self {
        let len = u32::decode(bytes) as usize;
        (A::decode(&bytes[4..4 + len]), B::decode(&bytes[4 + len..]))
    }
    fn to_json(&self, out: &mut String) {
        out.push('[');
        self.0.to_json(out);
        out.push(',');
        self.1.to_json(out);
        out.push(']');
    }
}

impl<T: Value> Value for Vec<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        (self.len() as u32).encode(out);
        for item in self {
            value_field_encode(item, out);
        }
    }
    fn decode(bytes: &[u8]) -> Self {
        let n = u32::decode(bytes) as usize;
        let mut at = 4;
        (0..n)
            .map(|_| {
                let len = u32::decode(&bytes[at..]) as usize;
                let item = T::decode(&bytes[at + 4..at + 4 + len]);
                at += 4 + len;
                item
            })
            .collect()
    }
    fn to_json(&self, out: &mut String) {
        out.push('[');
        for (i, item) in self.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            item.to_json(out);
        }
        out.push(']');
    }
}

/// JSON has no NaN or infinity: they are written as `null`.
/// Finite numbers keep a fraction or exponent (`300.0`, `1e-7`), so they read back as floats.
pub(crate) fn push_f64(out: &mut String, v: f64) {
    if v.is_finite() {
        let _ = write!(out, "{v:?}");
    } else {
        out.push_str("null");
    }
}

/// Appends `s` as a JSON string literal.
pub fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The row of a key and a value ([`push_row_of`] from their JSON), for tests.
#[cfg(test)]
pub(crate) fn row_json<K: Value, V: Value>(key: &K, value: &V) -> String {
    let mut k = String::new();
    key.to_json(&mut k);
    let mut v = String::new();
    value.to_json(&mut v);
    let mut row = String::with_capacity(k.len() + v.len() + 16);
    push_row_of::<K>(&mut row, &k, &v);
    row
}

/// Appends the row of a key and a value already in JSON (`key`, `value`):
/// `{"<K::NAME>": key, ...value fields}` when the value is a JSON object, else
/// `{"<K::NAME>": key, "value": value}`.
pub(crate) fn push_row_of<K: Value>(row: &mut String, key: &str, value: &str) {
    row.push('{');
    json_string(row, K::NAME);
    row.push(':');
    row.push_str(key);
    match value.strip_prefix('{') {
        Some("}") => row.push('}'),
        Some(fields) => {
            row.push(',');
            row.push_str(fields);
        }
        None => {
            row.push_str(",\"value\":");
            row.push_str(value);
            row.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Stats;

    fn round_trip<T: Value + PartialEq + core::fmt::Debug>(v: T) {
        let mut bytes = Vec::new();
        v.encode(&mut bytes);
        assert_eq!(T::decode(&bytes), v);
    }

    #[test]
    fn values_round_trip() {
        round_trip(Time(-5));
        round_trip(7u64);
        round_trip(2.5f64);
        round_trip(("band".to_string(), 3i32));
        round_trip(vec![(1u32, 2.0f32), (3, 4.0)]);
        round_trip(Stats { count: 3, min: 1.0, max: 2.0, sum: 4.0, wsum: 3.0, weight: 2.0, m2: 0.5 });
        round_trip((true, Some(3u8)));
        round_trip(None::<i16>);
        round_trip(7usize);
    }

    crate::record! {
        #[derive(Debug, Clone, PartialEq)]
        struct Warm { days: u64, name: String, hottest: Option<f64> }
    }

    #[test]
    fn records_round_trip_and_are_objects() {
        let warm = Warm { days: 3, name: "a".into(), hottest: Some(30.5) };
        round_trip(warm.clone());
        let mut json = String::new();
        warm.to_json(&mut json);
        assert_eq!(json, r#"{"days":3,"name":"a","hottest":30.5}"#);
        assert_eq!(row_json(&Time(1), &warm), r#"{"time":1,"days":3,"name":"a","hottest":30.5}"#);
    }

    #[test]
    fn rows_name_their_key() {
        let s = Stats::of([(1.0f32, 1.0), (3.0, 1.0)].into_iter());
        assert_eq!(row_json(&Time(10), &s), r#"{"time":10,"cnt":2,"min":1.0,"max":3.0,"mean":2.0,"std":1.0}"#);
        assert_eq!(row_json(&"a\"b".to_string(), &1.5f64), r#"{"key":"a\"b","value":1.5}"#);
        // f32 keys as the f32 reads (not its f64 widening), in forms JSON parses; no NaN.
        let pixel = (10.1f32, -0.125f32);
        assert_eq!(row_json(&pixel, &f32::NAN), r#"{"key":[10.1,-0.125],"value":null}"#);
        let json = |v: f32| {
            let mut text = String::new();
            v.to_json(&mut text);
            text
        };
        assert_eq!([1e-7f32, 3e20, 40.0, f32::INFINITY].map(json), ["1e-7", "3e20", "40.0", "null"]);
    }
}
