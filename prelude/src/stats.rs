//! Summary statistics with an exact merge (Chan et al.), NEXUS's numbers for a set of cells.

use crate::value::{Value, push_f64};

/// Statistics of valid cells: `mean` is cos(lat)-weighted, `min`/`max`/`cnt`/`std` unweighted,
/// `std` with ddof = 0, as NEXUS reports them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stats {
    /// Valid cells.
    pub count: u64,
    /// Smallest value (0 when empty).
    pub min: f64,
    /// Largest value (0 when empty).
    pub max: f64,
    /// Sum of values.
    pub sum: f64,
    /// Sum of cos(lat) x value.
    pub wsum: f64,
    /// Sum of cos(lat).
    pub weight: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
}

impl Stats {
    /// Stats of `(value, cos(lat))` pairs; NaN values are skipped.
    pub fn of(cells: impl Iterator<Item = (f32, f64)> + Clone) -> Self {
        let mut s = Self { min: f64::INFINITY, max: f64::NEG_INFINITY, ..Self::default() };
        for (v, w) in cells.clone() {
            if v.is_nan() {
                continue;
            }
            let v = f64::from(v);
            s.count += 1;
            s.min = s.min.min(v);
            s.max = s.max.max(v);
            s.sum += v;
            s.wsum += w * v;
            s.weight += w;
        }
        if s.count == 0 {
            return Self::default();
        }
        let mean = s.sum / s.count as f64;
        s.m2 = cells.filter(|(v, _)| !v.is_nan()).map(|(v, _)| (f64::from(v) - mean).powi(2)).sum();
        s
    }

    /// Stats of a `[row][column]` plane whose rows have weights `row_weights` (cos(lat)); NaN
    /// values are skipped. The fast path: one branch-free pass in [`LANES`] lanes, which LLVM turns
    /// into `simd128` vector code.
    pub fn of_rows(values: &[f32], columns: usize, row_weights: &[f64]) -> Self {
        // Sums of d = v - k and d^2 around a shift k taken from the data keep M2 well conditioned
        // (no cancellation of large squares). A missing cell counts as k: d = 0 adds nothing, and
        // k, a valid value, cannot change min or max; only the count skips it.
        let Some(k) = values.iter().find(|v| !v.is_nan()).map(|&v| f64::from(v)) else { return Self::default() };
        let mut s = Self { min: k, max: k, ..Self::default() };
        let (mut shifted, mut squares) = (0.0f64, 0.0f64);
        for (row, &w) in values.chunks(columns.max(1)).zip(row_weights) {
            let mut lanes = Lanes::new(k);
            let mut chunks = row.chunks_exact(LANES);
            for chunk in &mut chunks {
                for (l, &v) in chunk.iter().enumerate() {
                    lanes.add(l, v, k);
                }
            }
            for (l, &v) in chunks.remainder().iter().enumerate() {
                lanes.add(l, v, k);
            }
            let (n, d, d2, lo, hi) = lanes.total();
            s.count += n as u64;
            let sum = d + n * k;
            s.sum += sum;
            s.wsum += w * sum;
            s.weight += w * n;
            shifted += d;
            squares += d2;
            s.min = s.min.min(lo);
            s.max = s.max.max(hi);
        }
        if s.count == 0 {
            return Self::default();
        }
        s.m2 = (squares - shifted * shifted / s.count as f64).max(0.0);
        s
    }

    /// The stats of both sets together; exact for every field.
    pub fn merge(self, other: Self) -> Self {
        if self.count == 0 {
            return other;
        }
        if other.count == 0 {
            return self;
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let delta = other.sum / nb - self.sum / na;
        Self {
            count: self.count + other.count,
            min: self.min.min(other.min),
            max: self.max.max(other.max),
            sum: self.sum + other.sum,
            wsum: self.wsum + other.wsum,
            weight: self.weight + other.weight,
            m2: self.m2 + other.m2 + delta * delta * na * nb / (na + nb),
        }
    }

    /// cos(lat)-weighted mean.
    pub fn mean(&self) -> f64 {
        if self.weight == 0.0 { f64::NAN } else { self.wsum / self.weight }
    }

    /// Unweighted mean.
    pub fn plain_mean(&self) -> f64 {
        if self.count == 0 { f64::NAN } else { self.sum / self.count as f64 }
    }

    /// Population standard deviation (ddof = 0).
    pub fn std(&self) -> f64 {
        if self.count == 0 { f64::NAN } else { (self.m2 / self.count as f64).sqrt() }
    }
}

/// Lanes of [`Stats::of_rows`]: wide enough for `f64x2` vectors, unrolled twice.
pub const LANES: usize = 8;

/// Per-lane accumulators of one row: count, sum of d, sum of d^2, min, max.
struct Lanes {
    n: [f64; LANES],
    d: [f64; LANES],
    d2: [f64; LANES],
    lo: [f64; LANES],
    hi: [f64; LANES],
}

impl Lanes {
    fn new(k: f64) -> Self {
        Self { n: [0.0; LANES], d: [0.0; LANES], d2: [0.0; LANES], lo: [k; LANES], hi: [k; LANES] }
    }

    #[inline(always)]
    fn add(&mut self, l: usize, v: f32, k: f64) {
        let ok = !v.is_nan();
        let x = if ok { f64::from(v) } else { k };
        let d = x - k;
        self.n[l] += if ok { 1.0 } else { 0.0 };
        self.d[l] += d;
        self.d2[l] += d * d;
        self.lo[l] = if x < self.lo[l] { x } else { self.lo[l] };
        self.hi[l] = if x > self.hi[l] { x } else { self.hi[l] };
    }

    fn total(&self) -> (f64, f64, f64, f64, f64) {
        let sum = |a: &[f64; LANES]| a.iter().sum::<f64>();
        let lo = self.lo.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = self.hi.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (sum(&self.n), sum(&self.d), sum(&self.d2), lo, hi)
    }
}

impl Value for Stats {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.count.to_le_bytes());
        for v in [self.min, self.max, self.sum, self.wsum, self.weight, self.m2] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn decode(bytes: &[u8]) -> Self {
        let f = |i: usize| f64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap_or_default());
        let count = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
        Self { count, min: f(1), max: f(2), sum: f(3), wsum: f(4), weight: f(5), m2: f(6) }
    }

    /// NEXUS's fields: `{"cnt", "min", "max", "mean", "std"}`.
    fn to_json(&self, out: &mut String) {
        out.push_str("{\"cnt\":");
        out.push_str(&self.count.to_string());
        for (name, v) in [("min", self.min), ("max", self.max), ("mean", self.mean()), ("std", self.std())] {
            out.push_str(",\"");
            out.push_str(name);
            out.push_str("\":");
            push_f64(out, v);
        }
        out.push('}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_equals_stats_of_the_union() {
        let a: Vec<(f32, f64)> = (0..100).map(|i| ((i as f32 * 0.37).sin() * 10.0, 0.5)).collect();
        let b: Vec<(f32, f64)> = (0..37).map(|i| (i as f32 * 0.1 + 3.0, 0.9)).chain([(f32::NAN, 1.0)]).collect();
        let whole = Stats::of(a.iter().chain(b.iter()).copied());
        let merged = Stats::of(a.iter().copied()).merge(Stats::of(b.iter().copied()));
        assert_eq!(merged.count, 137);
        assert_eq!((merged.min, merged.max), (whole.min, whole.max));
        assert!((merged.m2 - whole.m2).abs() < 1e-9 * whole.m2);
        assert!((merged.mean() - whole.mean()).abs() < 1e-12);
        assert_eq!(Stats::default().merge(merged), merged);
        assert_eq!(Stats::of([(f32::NAN, 1.0)].into_iter()), Stats::default());
    }

    #[test]
    fn rows_equal_cells() {
        let values: Vec<f32> = (0..12).map(|i| if i % 5 == 0 { f32::NAN } else { i as f32 * 1.5 }).collect();
        let weights = [1.0, 0.5, 0.25];
        let by_rows = Stats::of_rows(&values, 4, &weights);
        let by_cells = Stats::of(values.iter().enumerate().map(|(i, &v)| (v, weights[i / 4])));
        assert_eq!((by_rows.count, by_rows.min, by_rows.max), (by_cells.count, by_cells.min, by_cells.max));
        for (a, b) in [
            (by_rows.sum, by_cells.sum),
            (by_rows.wsum, by_cells.wsum),
            (by_rows.weight, by_cells.weight),
            (by_rows.m2, by_cells.m2),
        ] {
            assert!((a - b).abs() < 1e-12 * b.abs().max(1.0), "{a} vs {b}");
        }
    }
}
