//! CF conventions as xarray writes them: time units and calendars, fill values, scale and offset.

use serde_json::{Map, Value};

/// How stored numbers become physical values: masked when equal to a fill value, then scaled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decoder {
    /// CF `_FillValue` (or the v2 array fill value xarray stores it as).
    pub fill: Option<f64>,
    /// CF `missing_value`.
    pub missing: Option<f64>,
    /// CF `scale_factor` (1 when absent).
    pub scale: f64,
    /// CF `add_offset` (0 when absent).
    pub offset: f64,
}

impl Decoder {
    /// Reads the CF attributes; `array_fill` is the fill value of a v2 array (xarray keeps `_FillValue` there).
    pub fn from_attributes(attrs: &Map<String, Value>, array_fill: Option<f64>) -> Result<Self, String> {
        let fill = match attrs.get("_FillValue") {
            Some(v) => Some(fill_number(v).ok_or_else(|| format!("cannot read _FillValue {v}"))?),
            None => array_fill,
        };
        let missing = attrs.get("missing_value").and_then(fill_number);
        let number = |key: &str, default: f64| match attrs.get(key) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| format!("attribute {key} must be a number, not {v}")),
        };
        Ok(Self { fill, missing, scale: number("scale_factor", 1.0)?, offset: number("add_offset", 0.0)? })
    }

    /// Decodes `f32` data in place when no scaling applies (fill and missing values become NaN):
    /// one compare per value that vectorises, where [`Decoder::decode`] goes through `f64`. False,
    /// and `values` untouched, when `scale_factor` or `add_offset` apply.
    pub fn decode_f32_in_place(&self, values: &mut [f32]) -> bool {
        if self.scale != 1.0 || self.offset != 0.0 {
            return false;
        }
        // A fill that is not exactly an f32 matches no f32; NaN compares equal to nothing, and a
        // NaN value stays NaN anyway.
        let as_f32 = |f: Option<f64>| f.filter(|f| f64::from(*f as f32) == *f).map_or(f32::NAN, |f| f as f32);
        let (fill, missing) = (as_f32(self.fill), as_f32(self.missing));
        if fill.is_nan() && missing.is_nan() {
            return true; // nothing to mask: NaN stays NaN
        }
        for v in values {
            if *v == fill || *v == missing {
                *v = f32::NAN;
            }
        }
        true
    }

    /// The physical value of a stored number, NaN when missing.
    #[inline]
    pub fn decode(&self, raw: f64) -> f32 {
        let is = |fill: Option<f64>| fill.is_some_and(|f| f == raw || (f.is_nan() && raw.is_nan()));
        if raw.is_nan() || is(self.fill) || is(self.missing) {
            return f32::NAN;
        }
        (raw * self.scale + self.offset) as f32
    }
}

/// A fill value: a JSON number, `"NaN"`/`"Infinity"`, or (Zarr v3 attributes) base64 of a little-endian f64.
pub fn fill_number(v: &Value) -> Option<f64> {
    use base64::Engine as _;
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            other => {
                let bytes = base64::engine::general_purpose::STANDARD.decode(other).ok()?;
                Some(f64::from_le_bytes(bytes.try_into().ok()?))
            }
        },
        _ => None,
    }
}

/// CF time units, e.g. `days since 2008-09-01`: how to turn stored numbers into epoch seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeUnits {
    /// Seconds per stored unit.
    pub seconds_per_unit: f64,
    /// The reference date, epoch seconds.
    pub epoch: i64,
}

impl TimeUnits {
    /// Parses `units` (`<unit> since <date>[ <time>]`) for a Gregorian calendar.
    pub fn parse(units: &str, calendar: Option<&str>) -> Result<Self, String> {
        match calendar.map(str::to_ascii_lowercase).as_deref() {
            None | Some("standard" | "gregorian" | "proleptic_gregorian") => {}
            Some(other) => {
                return Err(format!(
                    "calendar '{other}' is not supported (standard, gregorian, proleptic_gregorian are)"
                ));
            }
        }
        let (unit, since) = units
            .split_once(" since ")
            .ok_or_else(|| format!("time units '{units}' are not of the form '<unit> since <date>'"))?;
        let seconds_per_unit = match unit.trim().to_ascii_lowercase().as_str() {
            "days" | "day" | "d" => 86_400.0,
            "hours" | "hour" | "h" => 3_600.0,
            "minutes" | "minute" | "min" => 60.0,
            "seconds" | "second" | "s" => 1.0,
            "milliseconds" | "millisecond" | "ms" => 1e-3,
            "microseconds" | "microsecond" | "us" => 1e-6,
            other => return Err(format!("time unit '{other}' is not supported")),
        };
        Ok(Self { seconds_per_unit, epoch: parse_datetime(since.trim())? })
    }

    /// Epoch seconds of a stored value.
    pub fn to_epoch(&self, value: f64) -> i64 {
        self.epoch + (value * self.seconds_per_unit).round() as i64
    }
}

/// Parses `YYYY-MM-DD[( |T)HH:MM[:SS[.fff]]][Z]` (UTC) into epoch seconds. Years 0000–9999,
/// real calendar dates and clock times only.
pub fn parse_datetime(s: &str) -> Result<i64, String> {
    let bad = || format!("cannot read date '{s}' (expected YYYY-MM-DD[THH:MM:SS], years 0000 to 9999)");
    let s = s.trim().trim_end_matches('Z').trim_end_matches("+00:00");
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, t.trim()),
        None => (s, ""),
    };
    let mut parts = date.split('-');
    let mut next = || parts.next().and_then(|p| p.parse::<i64>().ok()).ok_or_else(bad);
    let (y, m, d) = (next()?, next()?, next()?);
    if !(0..=9999).contains(&y) || !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return Err(bad());
    }
    let mut secs = 0.0;
    if !time.is_empty() {
        let mut hms = time.split(':');
        for (scale, below) in [(3600.0, 24.0), (60.0, 60.0), (1.0, 61.0)] {
            if let Some(p) = hms.next() {
                let v = p.parse::<f64>().map_err(|_| bad())?;
                if !(0.0..below).contains(&v) {
                    return Err(bad());
                }
                secs += v * scale;
            }
        }
        if hms.next().is_some() {
            return Err(bad());
        }
    }
    Ok(prelude::nexus::days_from_civil(y, m, d) * 86_400 + secs as i64)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` of epoch seconds.
pub fn iso(epoch: i64) -> String {
    prelude::nexus::iso(epoch, "Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn f32_in_place_decoding_equals_the_f64_path() {
        let raw = [1.5f32, -999.0, f32::NAN, 0.1, 1e30, f32::INFINITY, -0.0, 7.0];
        for (fill, missing) in [(Some(-999.0), Some(7.0)), (Some(0.1), None), (Some(f64::NAN), None), (None, Some(0.0))]
        {
            let d = Decoder { fill, missing, scale: 1.0, offset: 0.0 };
            let mut fast = raw;
            assert!(d.decode_f32_in_place(&mut fast));
            let slow: Vec<f32> = raw.iter().map(|&v| d.decode(f64::from(v))).collect();
            // Equal as numbers, NaN where NaN (`-0.0 + 0.0` makes the f64 path's -0 a +0).
            let same = fast.iter().zip(&slow).all(|(a, b)| a == b || (a.is_nan() && b.is_nan()));
            assert!(same, "{d:?}: {fast:?} vs {slow:?}");
        }
        let scaled = Decoder { fill: None, missing: None, scale: 0.01, offset: 0.0 };
        let mut untouched = raw;
        assert!(!scaled.decode_f32_in_place(&mut untouched));
        assert_eq!(untouched.map(f32::to_bits), raw.map(f32::to_bits));
    }

    #[test]
    fn time_units() {
        let t = TimeUnits::parse("days since 2008-09-01", Some("standard")).unwrap();
        assert_eq!(t.to_epoch(0.0), 1_220_227_200);
        assert_eq!(iso(t.to_epoch(15.0)), "2008-09-16T00:00:00Z");
        let h = TimeUnits::parse("hours since 1970-01-01 00:00:00", None).unwrap();
        assert_eq!(h.to_epoch(25.0), 90_000);
        assert_eq!(parse_datetime("2000-03-01T12:30:00Z").unwrap(), 951_913_800);
        assert!(TimeUnits::parse("days since 2000-01-01", Some("360_day")).is_err());
        assert!(TimeUnits::parse("fortnights since 2000-01-01", None).is_err());
        for bad in [
            "2008-13-01",
            "2008-02-30",
            "2007-02-29",
            "2008-01-01T24:00",
            "2008-01-01T1e300",
            "99999999999999-01-01",
            "2008-01-01T00:60",
        ] {
            assert!(parse_datetime(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_datetime("2008-02-29T23:59:60").unwrap(), parse_datetime("2008-03-01").unwrap());
        for day in [-800_000i64, -1, 0, 59, 10_957, 20_000] {
            let (y, m, d) = prelude::nexus::civil_from_days(day);
            assert_eq!(prelude::nexus::days_from_civil(y, m, d), day);
        }
    }

    #[test]
    fn fill_scale_offset() {
        let attrs = json!({"_FillValue": -32768, "scale_factor": 0.01, "add_offset": 20.0});
        let d = Decoder::from_attributes(attrs.as_object().unwrap(), None).unwrap();
        assert!(d.decode(-32768.0).is_nan());
        assert!((d.decode(150.0) - 21.5).abs() < 1e-6);
        let v3 = json!({"_FillValue": "AAAAAAAA+H8="});
        let d = Decoder::from_attributes(v3.as_object().unwrap(), None).unwrap();
        assert!(d.fill.unwrap().is_nan());
        assert!(d.decode(f64::NAN).is_nan());
        assert_eq!(d.decode(3.5), 3.5);
    }
}
