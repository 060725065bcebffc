//! Summary statistics with an exact merge (Chan et al.), NEXUS's numbers for a set of cells.

use std::fmt::Write as _;

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
    /// values are skipped. The fast path: one branch-free pass per row, in `simd128` vectors on
    /// wasm (see `row_sums`).
    pub fn of_rows(values: &[f32], columns: usize, row_weights: &[f64]) -> Self {
        // Sums of d = v - k and d^2 around a shift k taken from the data keep M2 well conditioned
        // (no cancellation of large squares). A missing cell counts as k: d = 0 adds nothing, and
        // k, a valid value, cannot change min or max; only the count skips it.
        let Some(k) = values.iter().find(|v| !v.is_nan()).map(|&v| f64::from(v)) else { return Self::default() };
        let mut s = Self { min: k, max: k, ..Self::default() };
        let (mut shifted, mut squares) = (0.0f64, 0.0f64);
        for (row, &w) in values.chunks(columns.max(1)).zip(row_weights) {
            let r = row_sums(row, k);
            s.count += r.count;
            let sum = r.d + r.count as f64 * k;
            s.sum += sum;
            s.wsum += w * sum;
            s.weight += w * r.count as f64;
            shifted += r.d;
            squares += r.d2;
            s.min = s.min.min(r.min);
            s.max = s.max.max(r.max);
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

/// One row's valid cells, the sums of d = v - k and d^2 over them, and their min and max (k when
/// none is smaller or larger).
#[derive(Debug, Clone, Copy, PartialEq)]
struct RowSums {
    count: u64,
    d: f64,
    d2: f64,
    min: f64,
    max: f64,
}

impl RowSums {
    /// The sums of a kernel's 4 lanes: per-lane counts, minima and maxima, and d, d^2 already summed.
    fn of_lanes(count: [u32; 4], d: f64, d2: f64, lo: [f32; 4], hi: [f32; 4]) -> Self {
        Self {
            count: count.iter().map(|&c| u64::from(c)).sum(),
            d,
            d2,
            min: lo.iter().fold(f64::INFINITY, |m, &v| m.min(f64::from(v))),
            max: hi.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v))),
        }
    }

    /// Adds the valid cells of `values` one by one (a row's last few, after the vector steps).
    fn add_scalars(&mut self, values: &[f32], k: f64) {
        for &v in values.iter().filter(|v| !v.is_nan()) {
            let (x, dx) = (f64::from(v), f64::from(v) - k);
            self.count += 1;
            self.d += dx;
            self.d2 += dx * dx;
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
    }
}

/// [`RowSums`] of `row` around `k` (a valid value, so exact in `f32`).
fn row_sums(row: &[f32], k: f64) -> RowSums {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return simd::row_sums(row, k);
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    return lanes::row_sums(row, k);
}

/// The portable kernel, the same sums as [`simd`] in plain Rust: [`lanes::LANES`] lanes with the
/// count in `u32`, min and max in `f32` and d, d^2 in `f64`, which LLVM keeps in vector registers.
/// On wasm it only serves as the reference [`simd`] is tested against.
#[cfg_attr(all(target_arch = "wasm32", target_feature = "simd128"), allow(dead_code))]
mod lanes {
    use super::RowSums;

    /// Lanes per step.
    pub(super) const LANES: usize = 4;

    pub(super) fn row_sums(row: &[f32], k: f64) -> RowSums {
        let k32 = k as f32;
        let mut n = [0u32; LANES];
        let (mut lo, mut hi) = ([k32; LANES], [k32; LANES]);
        let (mut d, mut d2) = ([0.0f64; LANES], [0.0f64; LANES]);
        let mut chunks = row.chunks_exact(LANES);
        for chunk in &mut chunks {
            for l in 0..LANES {
                let v = chunk[l];
                let ok = !v.is_nan();
                let x = if ok { v } else { k32 };
                n[l] += u32::from(ok);
                lo[l] = if x < lo[l] { x } else { lo[l] };
                hi[l] = if x > hi[l] { x } else { hi[l] };
                let dx = f64::from(x) - k;
                d[l] += dx;
                d2[l] += dx * dx;
            }
        }
        let mut sums = RowSums::of_lanes(n, d.iter().sum(), d2.iter().sum(), lo, hi);
        sums.add_scalars(chunks.remainder(), k);
        sums
    }
}

/// The wasm kernel, written with `simd128` instructions: per 4 cells, a NaN mask, the count in
/// `i32x4`, min and max in `f32x4` (exact: the values are `f32`), and d, d^2 in two `f64x2`
/// halves, as exact as [`lanes`]. About 15 instructions per 4 cells and few enough live vectors
/// that Cranelift keeps them all in registers (the 8-lane `f64` loop spilled).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use core::arch::wasm32::{
        f32x4_eq, f32x4_extract_lane, f32x4_pmax, f32x4_pmin, f32x4_splat, f64x2_add, f64x2_extract_lane, f64x2_mul,
        f64x2_promote_low_f32x4, f64x2_splat, f64x2_sub, i32x4_extract_lane, i32x4_shuffle, i32x4_splat, i32x4_sub,
        v128, v128_bitselect, v128_load,
    };

    use super::RowSums;

    pub(super) fn row_sums(row: &[f32], k: f64) -> RowSums {
        let (k32, k64) = (f32x4_splat(k as f32), f64x2_splat(k));
        let (mut n, mut lo, mut hi) = (i32x4_splat(0), k32, k32);
        let zero = f64x2_splat(0.0);
        let (mut d_low, mut d_high, mut d2_low, mut d2_high) = (zero, zero, zero, zero);
        let mut chunks = row.chunks_exact(4);
        for chunk in &mut chunks {
            // SAFETY: `chunk` is 4 f32 = 16 readable bytes; `v128_load` needs no alignment.
            let v: v128 = unsafe { v128_load(chunk.as_ptr().cast()) };
            let ok = f32x4_eq(v, v);
            let x = v128_bitselect(v, k32, ok);
            n = i32x4_sub(n, ok);
            lo = f32x4_pmin(lo, x);
            hi = f32x4_pmax(hi, x);
            let low = f64x2_sub(f64x2_promote_low_f32x4(x), k64);
            let high = f64x2_sub(f64x2_promote_low_f32x4(i32x4_shuffle::<2, 3, 2, 3>(x, x)), k64);
            d_low = f64x2_add(d_low, low);
            d_high = f64x2_add(d_high, high);
            d2_low = f64x2_add(d2_low, f64x2_mul(low, low));
            d2_high = f64x2_add(d2_high, f64x2_mul(high, high));
        }
        let d = f64x2_add(d_low, d_high);
        let d2 = f64x2_add(d2_low, d2_high);
        let count = [
            i32x4_extract_lane::<0>(n),
            i32x4_extract_lane::<1>(n),
            i32x4_extract_lane::<2>(n),
            i32x4_extract_lane::<3>(n),
        ];
        let f32s = |v: v128| {
            [
                f32x4_extract_lane::<0>(v),
                f32x4_extract_lane::<1>(v),
                f32x4_extract_lane::<2>(v),
                f32x4_extract_lane::<3>(v),
            ]
        };
        let mut sums = RowSums::of_lanes(
            count.map(|c| c as u32),
            f64x2_extract_lane::<0>(d) + f64x2_extract_lane::<1>(d),
            f64x2_extract_lane::<0>(d2) + f64x2_extract_lane::<1>(d2),
            f32s(lo),
            f32s(hi),
        );
        sums.add_scalars(chunks.remainder(), k);
        sums
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
        let _ = write!(out, "{}", self.count);
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
        // Widths below, at and past the vector step, with a remainder; NaNs scattered, one row
        // wholly NaN, negative and positive values far from the shift.
        for columns in [1, 3, 4, 5, 8, 45, 181] {
            let rows = 5;
            let values: Vec<f32> = (0..rows * columns)
                .map(|i| match i {
                    i if i % 7 == 3 || i / columns == 2 => f32::NAN,
                    i => ((i as f32 * 0.37).sin() * 30.0) - 2.0,
                })
                .collect();
            let weights: Vec<f64> = (0..rows).map(|r| 1.0 / (r as f64 + 1.0)).collect();
            let by_rows = Stats::of_rows(&values, columns, &weights);
            let by_cells = Stats::of(values.iter().enumerate().map(|(i, &v)| (v, weights[i / columns])));
            let what = format!("{columns} columns");
            assert_eq!(
                (by_rows.count, by_rows.min, by_rows.max),
                (by_cells.count, by_cells.min, by_cells.max),
                "{what}"
            );
            for (a, b) in [
                (by_rows.sum, by_cells.sum),
                (by_rows.wsum, by_cells.wsum),
                (by_rows.weight, by_cells.weight),
                (by_rows.m2, by_cells.m2),
            ] {
                assert!((a - b).abs() < 1e-12 * b.abs().max(1.0), "{what}: {a} vs {b}");
            }
        }
        assert_eq!(Stats::of_rows(&[f32::NAN; 9], 3, &[1.0; 3]), Stats::default());
    }
}
