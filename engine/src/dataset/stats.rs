//! Summary statistics that merge exactly: count, min, max, sum, cos(lat)-weighted sum, M2.

use serde::{Deserialize, Serialize};

/// Statistics of a set of valid (non-NaN) cells. Merging two is exact (Chan et al. for M2), so
/// per-tile stats combine into per-day, per-region or global stats in any order.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Valid cells.
    pub count: u64,
    /// Smallest value (0 when `count` is 0).
    pub min: f64,
    /// Largest value (0 when `count` is 0).
    pub max: f64,
    /// Sum of values.
    pub sum: f64,
    /// Sum of `cos(lat) * value`.
    pub wsum: f64,
    /// Sum of `cos(lat)`.
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
        // Second pass: M2 around the exact mean is more accurate than a running update.
        let mean = s.sum / s.count as f64;
        s.m2 = cells.filter(|(v, _)| !v.is_nan()).map(|(v, _)| (f64::from(v) - mean).powi(2)).sum();
        s
    }

    /// The stats of both sets together.
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

    /// Unweighted mean.
    pub fn mean(&self) -> f64 {
        if self.count == 0 { f64::NAN } else { self.sum / self.count as f64 }
    }

    /// cos(lat)-weighted mean, as NEXUS reports `mean`.
    pub fn weighted_mean(&self) -> f64 {
        if self.weight == 0.0 { f64::NAN } else { self.wsum / self.weight }
    }

    /// Population standard deviation (ddof = 0), as NEXUS reports `std`.
    pub fn std(&self) -> f64 {
        if self.count == 0 { f64::NAN } else { (self.m2 / self.count as f64).sqrt() }
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
        assert!((merged.weighted_mean() - whole.weighted_mean()).abs() < 1e-12);
        assert_eq!(Stats::default().merge(merged), merged);
        assert_eq!(Stats::of([(f32::NAN, 1.0)].into_iter()), Stats::default());
    }
}
