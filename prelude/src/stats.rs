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
    /// values are skipped. The fast path: one branch-free pass over the plane in vectors (see
    /// [`Kernel`]), with only a row's count and sum leaving the vectors at its end (for its weight).
    pub fn of_rows(values: &[f32], columns: usize, row_weights: &[f64]) -> Self {
        // Sums of d = v - k and d^2 around a shift k taken from the data keep M2 well conditioned
        // (no cancellation of large squares). A missing cell counts as k: d = 0 adds nothing, and
        // k, a valid value, cannot change min or max; only the count skips it.
        let Some(k) = Kernel::first_valid(values).map(f64::from) else { return Self::default() };
        let mut kernel = Kernel::new(k);
        let mut s = Self::default();
        let mut shifted = 0.0f64;
        for (row, &w) in values.chunks(columns.max(1)).zip(row_weights) {
            let (count, d) = kernel.row(row);
            s.count += count;
            let sum = d + count as f64 * k;
            s.sum += sum;
            s.wsum += w * sum;
            s.weight += w * count as f64;
            shifted += d;
        }
        if s.count == 0 {
            return Self::default();
        }
        let (min, max, squares) = kernel.finish();
        (s.min, s.max) = (min, max);
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

/// The running sums of [`Stats::of_rows`] around a shift `k` (a valid value, so exact in `f32`):
/// per row, its valid cells and the sum of d = v - k over them; over the whole plane, min, max and
/// the sum of d^2. A missing cell counts as k. In 128-bit vectors where there is an instruction
/// set for them ([`Vectors`]), one value at a time elsewhere (where the vector kernel is unused).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
type Kernel = InVectors<wasm::Simd128>;
#[cfg(target_arch = "x86_64")]
type Kernel = InVectors<x86::Sse2>;
#[cfg(not(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64")))]
type Kernel = OneByOne;

/// The portable kernel, one value at a time: the reference the vector kernels are tested against.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64"), allow(dead_code))]
struct OneByOne {
    k: f64,
    min: f64,
    max: f64,
    d2: f64,
}

#[cfg_attr(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64"), allow(dead_code))]
impl OneByOne {
    fn new(k: f64) -> Self {
        Self { k, min: k, max: k, d2: 0.0 }
    }

    /// The first value that is not NaN.
    fn first_valid(values: &[f32]) -> Option<f32> {
        values.iter().copied().find(|v| !v.is_nan())
    }

    /// The row's valid cells and their sum of d; keeps min, max and d^2.
    fn row(&mut self, row: &[f32]) -> (u64, f64) {
        let (mut count, mut d) = (0, 0.0);
        for &v in row.iter().filter(|v| !v.is_nan()) {
            let (x, dx) = (f64::from(v), f64::from(v) - self.k);
            count += 1;
            d += dx;
            self.d2 += dx * dx;
            self.min = if x < self.min { x } else { self.min };
            self.max = if x > self.max { x } else { self.max };
        }
        (count, d)
    }

    /// `(min, max, sum of d^2)` over every row.
    fn finish(self) -> (f64, f64, f64) {
        (self.min, self.max, self.d2)
    }
}

/// The vector instructions [`InVectors`] is written in: `V` holds 4 `f32` lanes (or 4 `i32` lanes
/// of masks and counts), `D` 2 `f64` lanes.
#[cfg_attr(not(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64")), allow(dead_code))]
trait Vectors {
    type V: Copy;
    type D: Copy;
    /// Four values from memory.
    fn load(four: &[f32]) -> Self::V;
    fn splat(v: f32) -> Self::V;
    fn splat_d(v: f64) -> Self::D;
    /// All bits set in the lanes that are not NaN.
    fn valid(v: Self::V) -> Self::V;
    /// Bitwise or.
    fn or(a: Self::V, b: Self::V) -> Self::V;
    /// Whether any bit is set.
    fn any(mask: Self::V) -> bool;
    /// `a` where `mask` is set, `b` elsewhere.
    fn select(mask: Self::V, a: Self::V, b: Self::V) -> Self::V;
    /// `i32` lanes: `counts - mask`, so a set mask adds 1.
    fn count(counts: Self::V, mask: Self::V) -> Self::V;
    fn min(a: Self::V, b: Self::V) -> Self::V;
    fn max(a: Self::V, b: Self::V) -> Self::V;
    /// The low and high halves as `f64`.
    fn widen(v: Self::V) -> (Self::D, Self::D);
    fn add(a: Self::D, b: Self::D) -> Self::D;
    fn sub(a: Self::D, b: Self::D) -> Self::D;
    fn mul(a: Self::D, b: Self::D) -> Self::D;
    fn counts(v: Self::V) -> [u32; 4];
    fn lanes(v: Self::V) -> [f32; 4];
    fn lanes_d(v: Self::D) -> [f64; 2];
}

/// The vector kernel: per step of 4 cells, a NaN mask, the count in `i32` lanes, min and max in
/// `f32` lanes (exact: the values are `f32`), and d, d^2 in two `f64` halves (as exact as
/// [`OneByOne`]). The main loop takes 16 cells a step and sums them pairwise before adding them to
/// the running sums: wasmtime's loop-header interrupt check makes Cranelift keep the running sums
/// in memory, so they are touched once per 16 cells, not per 4.
#[cfg_attr(not(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64")), allow(dead_code))]
#[derive(Clone, Copy)]
struct InVectors<I: Vectors> {
    k: f64,
    k32: I::V,
    k64: I::D,
    lo: I::V,
    hi: I::V,
    d2: [I::D; 2],
}

#[cfg_attr(not(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64")), allow(dead_code))]
impl<I: Vectors> InVectors<I> {
    fn new(k: f64) -> Self {
        let k32 = I::splat(k as f32);
        let zero = I::splat_d(0.0);
        Self { k, k32, k64: I::splat_d(k), lo: k32, hi: k32, d2: [zero, zero] }
    }

    /// The first value that is not NaN, looked for 16 cells a step: land and ice put long NaN runs
    /// before a tile's first valid cell, and a loop of one cell a step pays wasmtime's interrupt
    /// check (and Cranelift's spills around it) per cell.
    fn first_valid(values: &[f32]) -> Option<f32> {
        let mut blocks = values.chunks_exact(16);
        let found = blocks.find(|block| {
            let valid = |at: usize| I::valid(I::load(&block[at..at + 4]));
            I::any(I::or(I::or(valid(0), valid(4)), I::or(valid(8), valid(12))))
        });
        found.unwrap_or(blocks.remainder()).iter().copied().find(|v| !v.is_nan())
    }

    /// One step: the mask of valid lanes, the values (a NaN becomes k), and d in two halves.
    #[inline(always)]
    fn step(&self, v: I::V) -> (I::V, I::V, I::D, I::D) {
        let ok = I::valid(v);
        let x = I::select(ok, v, self.k32);
        let (low, high) = I::widen(x);
        (ok, x, I::sub(low, self.k64), I::sub(high, self.k64))
    }

    /// The row's valid cells and their sum of d; keeps min, max and d^2.
    fn row(&mut self, row: &[f32]) -> (u64, f64) {
        let (mut lo, mut hi, [mut d2_low, mut d2_high]) = (self.lo, self.hi, self.d2);
        let mut n = I::splat(0.0); // all bits zero: zero counts
        let (mut d_low, mut d_high) = (I::splat_d(0.0), I::splat_d(0.0));
        let mut blocks = row.chunks_exact(16);
        for block in &mut blocks {
            let (ok0, x0, l0, h0) = self.step(I::load(&block[..4]));
            let (ok1, x1, l1, h1) = self.step(I::load(&block[4..8]));
            let (ok2, x2, l2, h2) = self.step(I::load(&block[8..12]));
            let (ok3, x3, l3, h3) = self.step(I::load(&block[12..]));
            n = I::count(I::count(I::count(I::count(n, ok0), ok1), ok2), ok3);
            lo = I::min(lo, I::min(I::min(x0, x1), I::min(x2, x3)));
            hi = I::max(hi, I::max(I::max(x0, x1), I::max(x2, x3)));
            let sum = |a, b, c, d| I::add(I::add(a, b), I::add(c, d));
            let squares = |a, b, c, d| sum(I::mul(a, a), I::mul(b, b), I::mul(c, c), I::mul(d, d));
            d_low = I::add(d_low, sum(l0, l1, l2, l3));
            d_high = I::add(d_high, sum(h0, h1, h2, h3));
            d2_low = I::add(d2_low, squares(l0, l1, l2, l3));
            d2_high = I::add(d2_high, squares(h0, h1, h2, h3));
        }
        // The last 0 to 15 cells, 4 at a time, the final 1 to 3 padded with NaN.
        let rest = blocks.remainder();
        let mut padded = [f32::NAN; 4];
        let tail = rest.chunks_exact(4).remainder();
        padded[..tail.len()].copy_from_slice(tail);
        let fours = rest.chunks_exact(4).chain((!tail.is_empty()).then_some(&padded[..]));
        for four in fours {
            let (ok, x, low, high) = self.step(I::load(four));
            n = I::count(n, ok);
            (lo, hi) = (I::min(lo, x), I::max(hi, x));
            (d_low, d_high) = (I::add(d_low, low), I::add(d_high, high));
            d2_low = I::add(d2_low, I::mul(low, low));
            d2_high = I::add(d2_high, I::mul(high, high));
        }
        (self.lo, self.hi, self.d2) = (lo, hi, [d2_low, d2_high]);
        let count = I::counts(n).iter().map(|&c| u64::from(c)).sum();
        let [a, b] = I::lanes_d(I::add(d_low, d_high));
        (count, a + b)
    }

    /// `(min, max, sum of d^2)` over every row.
    fn finish(self) -> (f64, f64, f64) {
        let min = I::lanes(self.lo).iter().fold(self.k, |m, &v| m.min(f64::from(v)));
        let max = I::lanes(self.hi).iter().fold(self.k, |m, &v| m.max(f64::from(v)));
        let [a, b] = I::lanes_d(I::add(self.d2[0], self.d2[1]));
        (min, max, a + b)
    }
}

/// [`Vectors`] in wasm's `simd128` (one `v128` type for every lane shape).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm {
    use core::arch::wasm32::*;

    pub(super) struct Simd128;

    impl super::Vectors for Simd128 {
        type V = v128;
        type D = v128;

        #[inline(always)]
        fn load(four: &[f32]) -> v128 {
            assert!(four.len() >= 4);
            // SAFETY: 4 f32 = 16 readable bytes; `v128_load` needs no alignment.
            unsafe { v128_load(four.as_ptr().cast()) }
        }
        #[inline(always)]
        fn splat(v: f32) -> v128 {
            f32x4_splat(v)
        }
        #[inline(always)]
        fn splat_d(v: f64) -> v128 {
            f64x2_splat(v)
        }
        #[inline(always)]
        fn valid(v: v128) -> v128 {
            f32x4_eq(v, v)
        }
        #[inline(always)]
        fn or(a: v128, b: v128) -> v128 {
            v128_or(a, b)
        }
        #[inline(always)]
        fn any(mask: v128) -> bool {
            v128_any_true(mask)
        }
        #[inline(always)]
        fn select(mask: v128, a: v128, b: v128) -> v128 {
            v128_bitselect(a, b, mask)
        }
        #[inline(always)]
        fn count(counts: v128, mask: v128) -> v128 {
            i32x4_sub(counts, mask)
        }
        #[inline(always)]
        fn min(a: v128, b: v128) -> v128 {
            f32x4_pmin(a, b)
        }
        #[inline(always)]
        fn max(a: v128, b: v128) -> v128 {
            f32x4_pmax(a, b)
        }
        #[inline(always)]
        fn widen(v: v128) -> (v128, v128) {
            (f64x2_promote_low_f32x4(v), f64x2_promote_low_f32x4(i32x4_shuffle::<2, 3, 2, 3>(v, v)))
        }
        #[inline(always)]
        fn add(a: v128, b: v128) -> v128 {
            f64x2_add(a, b)
        }
        #[inline(always)]
        fn sub(a: v128, b: v128) -> v128 {
            f64x2_sub(a, b)
        }
        #[inline(always)]
        fn mul(a: v128, b: v128) -> v128 {
            f64x2_mul(a, b)
        }
        fn counts(v: v128) -> [u32; 4] {
            [
                u32x4_extract_lane::<0>(v),
                u32x4_extract_lane::<1>(v),
                u32x4_extract_lane::<2>(v),
                u32x4_extract_lane::<3>(v),
            ]
        }
        fn lanes(v: v128) -> [f32; 4] {
            [
                f32x4_extract_lane::<0>(v),
                f32x4_extract_lane::<1>(v),
                f32x4_extract_lane::<2>(v),
                f32x4_extract_lane::<3>(v),
            ]
        }
        fn lanes_d(v: v128) -> [f64; 2] {
            [f64x2_extract_lane::<0>(v), f64x2_extract_lane::<1>(v)]
        }
    }
}

/// [`Vectors`] in SSE2, which every x86-64 has (`i32` lanes live in `__m128` bit for bit).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    pub(super) struct Sse2;

    impl super::Vectors for Sse2 {
        type V = __m128;
        type D = __m128d;

        #[inline(always)]
        fn load(four: &[f32]) -> __m128 {
            assert!(four.len() >= 4);
            // SAFETY: 4 f32 = 16 readable bytes; `_mm_loadu_ps` needs no alignment.
            unsafe { _mm_loadu_ps(four.as_ptr()) }
        }
        #[inline(always)]
        fn splat(v: f32) -> __m128 {
            // SAFETY (here and below): SSE2 is part of every x86-64.
            unsafe { _mm_set1_ps(v) }
        }
        #[inline(always)]
        fn splat_d(v: f64) -> __m128d {
            unsafe { _mm_set1_pd(v) }
        }
        #[inline(always)]
        fn valid(v: __m128) -> __m128 {
            unsafe { _mm_cmpeq_ps(v, v) }
        }
        #[inline(always)]
        fn or(a: __m128, b: __m128) -> __m128 {
            unsafe { _mm_or_ps(a, b) }
        }
        #[inline(always)]
        fn any(mask: __m128) -> bool {
            unsafe { _mm_movemask_ps(mask) != 0 }
        }
        #[inline(always)]
        fn select(mask: __m128, a: __m128, b: __m128) -> __m128 {
            unsafe { _mm_or_ps(_mm_and_ps(mask, a), _mm_andnot_ps(mask, b)) }
        }
        #[inline(always)]
        fn count(counts: __m128, mask: __m128) -> __m128 {
            unsafe { _mm_castsi128_ps(_mm_sub_epi32(_mm_castps_si128(counts), _mm_castps_si128(mask))) }
        }
        #[inline(always)]
        fn min(a: __m128, b: __m128) -> __m128 {
            unsafe { _mm_min_ps(a, b) }
        }
        #[inline(always)]
        fn max(a: __m128, b: __m128) -> __m128 {
            unsafe { _mm_max_ps(a, b) }
        }
        #[inline(always)]
        fn widen(v: __m128) -> (__m128d, __m128d) {
            unsafe { (_mm_cvtps_pd(v), _mm_cvtps_pd(_mm_movehl_ps(v, v))) }
        }
        #[inline(always)]
        fn add(a: __m128d, b: __m128d) -> __m128d {
            unsafe { _mm_add_pd(a, b) }
        }
        #[inline(always)]
        fn sub(a: __m128d, b: __m128d) -> __m128d {
            unsafe { _mm_sub_pd(a, b) }
        }
        #[inline(always)]
        fn mul(a: __m128d, b: __m128d) -> __m128d {
            unsafe { _mm_mul_pd(a, b) }
        }
        fn counts(v: __m128) -> [u32; 4] {
            Self::lanes(v).map(f32::to_bits)
        }
        fn lanes(v: __m128) -> [f32; 4] {
            let mut out = [0.0f32; 4];
            // SAFETY: `out` is 16 writable bytes; `_mm_storeu_ps` needs no alignment.
            unsafe { _mm_storeu_ps(out.as_mut_ptr(), v) };
            out
        }
        fn lanes_d(v: __m128d) -> [f64; 2] {
            let mut out = [0.0f64; 2];
            // SAFETY: `out` is 16 writable bytes; `_mm_storeu_pd` needs no alignment.
            unsafe { _mm_storeu_pd(out.as_mut_ptr(), v) };
            out
        }
    }
}

impl Value for Stats {
    /// 56 bytes: `count`, then the six `f64`s, little-endian (written at once: a reduce per
    /// pixel encodes millions of them).
    fn encode(&self, out: &mut Vec<u8>) {
        let mut bytes = [0u8; 56];
        bytes[..8].copy_from_slice(&self.count.to_le_bytes());
        let fields = [self.min, self.max, self.sum, self.wsum, self.weight, self.m2];
        for (at, v) in bytes[8..].chunks_exact_mut(8).zip(fields) {
            at.copy_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&bytes);
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
        for columns in [1, 3, 4, 5, 8, 15, 16, 17, 33, 45, 181] {
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

    #[test]
    fn vector_kernel_equals_one_by_one() {
        // Rows shorter than a step, at and past the 16-cell block, with every tail length; NaN runs.
        let k = 3.25f64;
        let (mut fast, mut slow) = (Kernel::new(k), OneByOne::new(k));
        for len in [0, 1, 2, 3, 4, 7, 15, 16, 17, 19, 31, 32, 35, 180, 181] {
            let row: Vec<f32> = (0..len)
                .map(|i| if (i * 5 + len) % 9 < 2 { f32::NAN } else { ((i * 31 + len) as f32 * 0.77).cos() * 40.0 })
                .collect();
            let ((n, d), (m, e)) = (fast.row(&row), slow.row(&row));
            assert_eq!(n, m, "{len} cells");
            assert!((d - e).abs() < 1e-12 * e.abs().max(1.0), "{len} cells: {d} vs {e}");
        }
        let ((min, max, d2), (lo, hi, e2)) = (fast.finish(), slow.finish());
        assert_eq!((min, max), (lo, hi));
        assert!((d2 - e2).abs() < 1e-12 * e2, "{d2} vs {e2}");
    }

    #[test]
    fn the_first_valid_value_is_found_in_every_place() {
        // Lengths around the 16-cell step; the one valid value in each place, then none at all.
        for len in [0, 1, 3, 15, 16, 17, 31, 32, 33, 180, 32_400] {
            let mut values = vec![f32::NAN; len];
            assert_eq!(Kernel::first_valid(&values), None, "{len} cells, all NaN");
            for at in (0..len).filter(|&at| at < 40 || at % 997 == 0 || at + 20 > len) {
                values[at] = at as f32 - 7.5;
                if at + 1 < len {
                    values[len - 1] = 1e9; // a later valid value does not count
                }
                let found = Kernel::first_valid(&values);
                assert_eq!(found, OneByOne::first_valid(&values), "{len} cells, valid from {at}");
                assert_eq!(found, Some(at as f32 - 7.5), "{len} cells, valid from {at}");
                values.iter_mut().for_each(|v| *v = f32::NAN);
            }
        }
    }
}
