//! How keys and values travel between instances (a fixed binary encoding, no serde) and how they
//! become JSON at the end.

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
                out.push_str(&self.to_string());
            }
        }
    )*};
}
number!(i32, i64, u32, u64);

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
    fn to_json(&self, out: &mut String) {
        push_f64(out, f64::from(*self));
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
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        self.0.encode(out);
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
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
            let start = out.len();
            out.extend_from_slice(&[0; 4]);
            item.encode(out);
            let len = (out.len() - start - 4) as u32;
            out[start..start + 4].copy_from_slice(&len.to_le_bytes());
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
pub(crate) fn push_f64(out: &mut String, v: f64) {
    if v.is_finite() {
        out.push_str(&v.to_string());
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

/// A result row: `{"<K::NAME>": key, ...value fields}` when the value is a JSON object, else
/// `{"<K::NAME>": key, "value": value}`.
pub(crate) fn row_json<K: Value, V: Value>(key: &K, value: &V) -> String {
    let mut k = String::new();
    key.to_json(&mut k);
    let mut v = String::new();
    value.to_json(&mut v);
    let mut row = String::with_capacity(k.len() + v.len() + 16);
    row.push('{');
    json_string(&mut row, K::NAME);
    row.push(':');
    row.push_str(&k);
    match v.strip_prefix('{') {
        Some("}") => row.push('}'),
        Some(fields) => {
            row.push(',');
            row.push_str(fields);
        }
        None => {
            row.push_str(",\"value\":");
            row.push_str(&v);
            row.push('}');
        }
    }
    row
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
    }

    #[test]
    fn rows_name_their_key() {
        let s = Stats::of([(1.0f32, 1.0), (3.0, 1.0)].into_iter());
        assert_eq!(row_json(&Time(10), &s), r#"{"time":10,"cnt":2,"min":1,"max":3,"mean":2,"std":1}"#);
        assert_eq!(row_json(&"a\"b".to_string(), &1.5f64), r#"{"key":"a\"b","value":1.5}"#);
    }
}
