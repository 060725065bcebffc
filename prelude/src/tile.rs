//! A zero-copy view of one tile, as the host lays it out in the instance's memory.
//!
//! Layout (little-endian, 8-aligned): 8 x u32 header `magic "TILE", version 1, nt, nlat, nlon,
//! t, y, x` (the last three: the tile's chunk index), then `i64 times[nt]`, `f32 lats[nlat]`,
//! `f32 lons[nlon]`, `f32 values[nt * nlat * nlon]` (C order). The host sets cells outside the
//! job's bbox and time range, and missing cells, to NaN. A host may send the values apart, in a
//! second buffer (the map's `b`; [`Tile::from_parts`]), so that it need not copy them behind the
//! header first.

use crate::{Stats, Time};
use std::cell::RefCell;

/// The header's magic number: "TILE" in little-endian ASCII.
pub const MAGIC: u32 = u32::from_le_bytes(*b"TILE");

/// One tile: coordinates and values, borrowed from the host's buffer.
#[derive(Debug, Clone, Copy)]
pub struct Tile<'a> {
    /// Chunk index `[time, lat, lon]`.
    pub index: [u32; 3],
    /// Epoch seconds of each time step.
    pub times: &'a [i64],
    /// Cell-centre latitudes.
    pub lats: &'a [f32],
    /// Cell-centre longitudes.
    pub lons: &'a [f32],
    /// Values `[time][lat][lon]`; NaN = missing.
    pub values: &'a [f32],
}

impl<'a> Tile<'a> {
    /// Reads the layout above, from one buffer.
    ///
    /// # Panics
    /// When the buffer is not a tile (bad magic, too short, misaligned): a host bug, reported as a panic.
    pub fn from_bytes(bytes: &'a [u8]) -> Self {
        Self::from_parts(bytes, &[])
    }

    /// Reads a tile sent in two buffers: `head` as [`encode_tile_head`] writes it (header, times,
    /// latitudes, longitudes) and its `values` apart. With `values` empty, `head` is the whole
    /// tile, as [`encode_tile`] writes it.
    ///
    /// # Panics
    /// When the buffers are not a tile (bad magic, too short, misaligned): a host bug, reported as a panic.
    pub fn from_parts(head: &'a [u8], values: &'a [u8]) -> Self {
        let word = |i: usize| u32::from_le_bytes(head[4 * i..4 * i + 4].try_into().unwrap_or_default());
        assert!(head.len() >= 32 && word(0) == MAGIC, "not a tile buffer");
        let (nt, nlat, nlon) = (word(2) as usize, word(3) as usize, word(4) as usize);
        let cells = nt * nlat * nlon;
        let times_at = 32;
        let lats_at = times_at + 8 * nt;
        let lons_at = lats_at + 4 * nlat;
        let (values, values_at) = if values.is_empty() { (head, lons_at + 4 * nlon) } else { (values, 0) };
        assert!(head.len() >= lons_at + 4 * nlon && values.len() >= values_at + 4 * cells, "tile buffer too short");
        for buffer in [head, values] {
            assert!((buffer.as_ptr() as usize).is_multiple_of(8), "tile buffer not 8-aligned");
        }
        // SAFETY: bounds checked above; both buffers are 8-aligned, so each section (at multiples
        // of 8 for i64 and of 4 for f32) is aligned; every bit pattern is a valid i64/f32.
        unsafe {
            let at = |buffer: &[u8], offset: usize| buffer.as_ptr().add(offset);
            Self {
                index: [word(5), word(6), word(7)],
                times: core::slice::from_raw_parts(at(head, times_at).cast::<i64>(), nt),
                lats: core::slice::from_raw_parts(at(head, lats_at).cast::<f32>(), nlat),
                lons: core::slice::from_raw_parts(at(head, lons_at).cast::<f32>(), nlon),
                values: core::slice::from_raw_parts(at(values, values_at).cast::<f32>(), cells),
            }
        }
    }

    /// Cells per time step.
    pub fn plane(&self) -> usize {
        self.lats.len() * self.lons.len()
    }

    /// The values of time step `t`, `[lat][lon]`.
    pub fn at_time(&self, t: usize) -> &'a [f32] {
        let n = self.plane();
        &self.values[t * n..(t + 1) * n]
    }

    /// `(value, cos(lat))` of every cell of time step `t` (NaN included; [`Stats::of`] skips them).
    pub fn weighted(&self, t: usize) -> impl Iterator<Item = (f32, f64)> + Clone + '_ {
        let nlon = self.lons.len();
        self.at_time(t).iter().enumerate().map(move |(i, &v)| (v, f64::from(self.lats[i / nlon]).to_radians().cos()))
    }

    /// cos(lat) of each row: the weight NEXUS gives a cell in `mean`. Remembered for the last few
    /// sets of latitudes (tiles of one band share them; `cos` in wasm is a software routine).
    pub fn row_weights(&self) -> Vec<f64> {
        const KEPT: usize = 16;
        thread_local! {
            static KNOWN: RefCell<Vec<(Vec<f32>, Vec<f64>)>> = const { RefCell::new(Vec::new()) };
        }
        KNOWN.with(|known| {
            let mut known = known.borrow_mut();
            if let Some((_, weights)) = known.iter().find(|(lats, _)| lats.as_slice() == self.lats) {
                return weights.clone();
            }
            let weights: Vec<f64> = self.lats.iter().map(|l| f64::from(*l).to_radians().cos()).collect();
            if known.len() == KEPT {
                known.remove(0);
            }
            known.push((self.lats.to_vec(), weights.clone()));
            weights
        })
    }

    /// Stats of the valid cells of time step `t`, given [`Tile::row_weights`].
    pub fn stats_at(&self, t: usize, row_weights: &[f64]) -> Stats {
        Stats::of_rows(self.at_time(t), self.lons.len(), row_weights)
    }

    /// Stats of all valid cells of the tile.
    pub fn stats(&self) -> Stats {
        let weights = self.row_weights();
        (0..self.times.len()).map(|t| self.stats_at(t, &weights)).fold(Stats::default(), Stats::merge)
    }

    /// Stats per time step, for the steps with at least one valid cell: NEXUS's time series map.
    pub fn stats_by_time(&self) -> Vec<(Time, Stats)> {
        let weights = self.row_weights();
        (0..self.times.len())
            .map(|t| (Time(self.times[t]), self.stats_at(t, &weights)))
            .filter(|(_, s)| s.count > 0)
            .collect()
    }

    /// Stats of each latitude row of time step `t` over its longitudes, as `(lat, stats)`, for the
    /// rows with a valid cell: a latitude/time Hovmöller's map.
    pub fn row_stats(&self, t: usize) -> Vec<(f32, Stats)> {
        let nlon = self.lons.len();
        let plane = self.at_time(t);
        self.lats
            .iter()
            .enumerate()
            .map(|(y, &lat)| {
                let weight = f64::from(lat).to_radians().cos();
                (lat, Stats::of_rows(&plane[y * nlon..(y + 1) * nlon], nlon, &[weight]))
            })
            .filter(|(_, s)| s.count > 0)
            .collect()
    }

    /// Stats of each longitude column of time step `t` over its latitudes (`mean` cos(lat)-weighted),
    /// as `(lon, stats)`, for the columns with a valid cell: a longitude/time Hovmöller's map.
    pub fn column_stats(&self, t: usize) -> Vec<(f32, Stats)> {
        let nlon = self.lons.len();
        let plane = self.at_time(t);
        let weights = self.row_weights();
        self.lons
            .iter()
            .enumerate()
            .map(|(x, &lon)| (lon, Stats::of(plane.iter().skip(x).step_by(nlon).copied().zip(weights.iter().copied()))))
            .filter(|(_, s)| s.count > 0)
            .collect()
    }

    /// Every valid cell of time step `t` as `((lat, lon), stats of its value)`: merged by key over
    /// time steps and tiles, per-pixel statistics (time-average and climatology maps).
    pub fn pixel_stats(&self, t: usize) -> Vec<((f32, f32), Stats)> {
        let nlon = self.lons.len();
        let weights = self.row_weights();
        self.at_time(t)
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_nan())
            .map(|(i, &v)| {
                let (y, w, v) = (i / nlon, weights[i / nlon], f64::from(v));
                let one = Stats { count: 1, min: v, max: v, sum: v, wsum: w * v, weight: w, m2: 0.0 };
                ((self.lats[y], self.lons[i % nlon]), one)
            })
            .collect()
    }

    /// Every valid cell as `(time, lat, lon, value)`.
    pub fn cells(&self) -> impl Iterator<Item = (i64, f32, f32, f32)> + '_ {
        let (nlat, nlon) = (self.lats.len(), self.lons.len());
        self.values.iter().enumerate().filter(|(_, v)| !v.is_nan()).map(move |(i, &v)| {
            let (t, y, x) = (i / (nlat * nlon), i / nlon % nlat, i % nlon);
            (self.times[t], self.lats[y], self.lons[x], v)
        })
    }
}

/// Lays out a tile: the host's side of [`Tile::from_bytes`], declared here once. `values` is
/// `times.len() * lats.len() * lons.len()` long. `keep`, when given, says per axis which time
/// steps, rows and columns are inside the job's selection; other cells are written as NaN.
pub fn encode_tile(
    out: &mut Vec<u8>,
    index: [u32; 3],
    times: &[i64],
    lats: &[f32],
    lons: &[f32],
    values: &[f32],
    keep: Option<[&[bool]; 3]>,
) {
    encode_tile_head(out, index, times, lats, lons);
    match keep {
        None => extend_f32(out, values),
        Some(keep) => extend_f32(out, &select_cells(values, lats.len(), lons.len(), keep)),
    }
}

/// The tile up to its values (header, times, latitudes, longitudes): with the values sent apart,
/// the host's side of [`Tile::from_parts`].
pub fn encode_tile_head(out: &mut Vec<u8>, index: [u32; 3], times: &[i64], lats: &[f32], lons: &[f32]) {
    out.clear();
    out.reserve(32 + 8 * times.len() + 4 * (lats.len() + lons.len()));
    for w in [MAGIC, 1, times.len() as u32, lats.len() as u32, lons.len() as u32, index[0], index[1], index[2]] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    times.iter().for_each(|t| out.extend_from_slice(&t.to_le_bytes()));
    extend_f32(out, lats);
    extend_f32(out, lons);
}

/// `values` (`[time][lat][lon]`, `nlat x nlon` per time step) with every cell outside `keep` (per
/// axis: the time steps, rows and columns inside a job's selection) set to NaN.
pub fn select_cells(values: &[f32], nlat: usize, nlon: usize, keep: [&[bool]; 3]) -> Vec<f32> {
    let [keep_t, keep_y, keep_x] = keep;
    let (nlat, nlon) = (nlat.max(1), nlon.max(1));
    let mut out = Vec::with_capacity(values.len());
    for (r, row) in values.chunks_exact(nlon).enumerate() {
        if keep_t[r / nlat] && keep_y[r % nlat] {
            out.extend(row.iter().zip(keep_x).map(|(&v, &k)| if k { v } else { f32::NAN }));
        } else {
            out.extend(std::iter::repeat_n(f32::NAN, nlon));
        }
    }
    out
}

/// Appends `values` as little-endian bytes, in one sized copy (LLVM turns it into a `memcpy` on
/// little-endian targets; `extend_from_slice` per value checks capacity every time).
fn extend_f32(out: &mut Vec<u8>, values: &[f32]) {
    let start = out.len();
    out.resize(start + 4 * values.len(), 0);
    for (cell, v) in out[start..].chunks_exact_mut(4).zip(values) {
        cell.copy_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-cell-per-row tile with these latitudes, in 8-aligned memory.
    fn tile_bytes(lats: &[f32]) -> Vec<u64> {
        let mut bytes = Vec::new();
        encode_tile(&mut bytes, [0, 0, 0], &[0], lats, &[0.0], &vec![1.0; lats.len()], None);
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), words.as_mut_ptr().cast::<u8>(), bytes.len()) };
        words
    }

    /// `bytes` copied into 8-aligned memory.
    fn aligned(bytes: &[u8]) -> Vec<u64> {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), words.as_mut_ptr().cast::<u8>(), bytes.len()) };
        words
    }

    fn bytes_of(words: &[u64], len: usize) -> &[u8] {
        unsafe { core::slice::from_raw_parts(words.as_ptr().cast::<u8>(), len) }
    }

    #[test]
    fn a_tile_sent_in_two_parts_reads_as_the_whole_one() {
        let (times, lats, lons) = ([10i64, 20], [1.0f32, 2.0, 3.0], [5.0f32, 6.0, 7.0, 8.0]);
        let values: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let keep: [&[bool]; 3] = [&[true, false], &[false, true, true], &[true, true, false, true]];
        let mut whole = Vec::new();
        encode_tile(&mut whole, [1, 2, 3], &times, &lats, &lons, &values, Some(keep));
        let mut head = Vec::new();
        encode_tile_head(&mut head, [1, 2, 3], &times, &lats, &lons);
        let selected = select_cells(&values, lats.len(), lons.len(), keep);
        let (whole_words, head_words) = (aligned(&whole), aligned(&head));
        let one = Tile::from_bytes(bytes_of(&whole_words, whole.len()));
        let selected_bytes: Vec<u8> = selected.iter().flat_map(|v| v.to_le_bytes()).collect();
        let values_words = aligned(&selected_bytes);
        let two = Tile::from_parts(bytes_of(&head_words, head.len()), bytes_of(&values_words, selected_bytes.len()));
        assert_eq!((one.index, one.times, one.lats, one.lons), (two.index, two.times, two.lats, two.lons));
        let bits = |t: &Tile| t.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&one), bits(&two));
        // Kept: time 0, rows 1 and 2, columns 0, 1 and 3; the rest is NaN.
        let kept: Vec<f32> = two.values.iter().copied().filter(|v| !v.is_nan()).collect();
        assert_eq!(kept, [4.0, 5.0, 7.0, 8.0, 9.0, 11.0]);
    }

    #[test]
    #[should_panic(expected = "too short")]
    fn values_apart_must_cover_every_cell() {
        let mut head = Vec::new();
        encode_tile_head(&mut head, [0, 0, 0], &[0], &[0.0, 1.0], &[0.0, 1.0]);
        let (head_words, values_words) = (aligned(&head), aligned(&[0u8; 12]));
        Tile::from_parts(bytes_of(&head_words, head.len()), bytes_of(&values_words, 12));
    }

    #[test]
    fn row_weights_are_those_of_the_tiles_own_latitudes() {
        let bands: Vec<Vec<f32>> = (0..20).map(|b| vec![b as f32 * 4.0, b as f32 * 4.0 + 2.0]).collect();
        // More bands than are remembered, each seen twice, interleaved.
        for lats in bands.iter().chain(&bands).chain(bands.iter().rev()) {
            let words = tile_bytes(lats);
            let tile =
                Tile::from_bytes(unsafe { core::slice::from_raw_parts(words.as_ptr().cast::<u8>(), 8 * words.len()) });
            let want: Vec<f64> = lats.iter().map(|l| f64::from(*l).to_radians().cos()).collect();
            assert_eq!(tile.row_weights(), want, "{lats:?}");
        }
    }

    #[test]
    fn view_reads_the_layout_and_skips_nan() {
        let mut bytes = Vec::new();
        let values = [1.0, f32::NAN, 3.0, 5.0, 7.0, 9.0];
        let keep: [&[bool]; 3] = [&[true, true, false], &[true, true], &[true]];
        encode_tile(&mut bytes, [3, 1, 2], &[100, 200, 300], &[0.0, 60.0], &[10.0], &values, Some(keep));
        // Copy into u64 words: the layout wants 8-aligned memory, as `sbx_prepare` gives.
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), words.as_mut_ptr().cast::<u8>(), bytes.len()) };
        let tile = Tile::from_bytes(unsafe { core::slice::from_raw_parts(words.as_ptr().cast::<u8>(), bytes.len()) });
        assert_eq!(tile.index, [3, 1, 2]);
        assert_eq!(tile.times, &[100, 200, 300]);
        let by_time = tile.stats_by_time();
        assert_eq!(by_time.len(), 2, "time step 3 is outside the selection: all NaN, omitted");
        assert_eq!((by_time[0].0, by_time[0].1.count), (Time(100), 1));
        let day2 = by_time[1].1;
        assert_eq!((day2.count, day2.min, day2.max), (2, 3.0, 5.0));
        // cos(0) = 1 and cos(60°) = 0.5: weighted mean (3 + 2.5) / 1.5.
        assert!((day2.mean() - 11.0 / 3.0).abs() < 1e-9);
        assert_eq!(tile.cells().count(), 3);
        assert_eq!(tile.stats().count, 3);
    }

    #[test]
    fn rows_columns_and_pixels() {
        let mut bytes = Vec::new();
        // One day, rows at 0° and 60° (weights 1 and 0.5), three columns; one cell missing.
        let values = [1.0, 2.0, f32::NAN, 4.0, 6.0, 8.0];
        encode_tile(&mut bytes, [0, 0, 0], &[86_400], &[0.0, 60.0], &[10.0, 11.0, 12.0], &values, None);
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), words.as_mut_ptr().cast::<u8>(), bytes.len()) };
        let tile = Tile::from_bytes(unsafe { core::slice::from_raw_parts(words.as_ptr().cast::<u8>(), bytes.len()) });

        let rows = tile.row_stats(0);
        assert_eq!(rows.iter().map(|(lat, s)| (*lat, s.count)).collect::<Vec<_>>(), [(0.0, 2), (60.0, 3)]);
        let (_, north) = rows[1];
        assert_eq!((north.min, north.max), (4.0, 8.0));
        assert!((north.mean() - 6.0).abs() < 1e-12);
        assert!((north.std() - (8.0f64 / 3.0).sqrt()).abs() < 1e-12, "ddof = 0");

        let columns = tile.column_stats(0);
        assert_eq!(
            columns.iter().map(|(lon, s)| (*lon, s.count)).collect::<Vec<_>>(),
            [(10.0, 2), (11.0, 2), (12.0, 1)]
        );
        let (_, first) = columns[0];
        // cos-weighted: (1 x 1 + 0.5 x 4) / 1.5; std unweighted over {1, 4}.
        assert!((first.mean() - 2.0).abs() < 1e-9 && (first.std() - 1.5).abs() < 1e-12);
        assert!((columns[2].1.mean() - 8.0).abs() < 1e-12);

        let pixels = tile.pixel_stats(0);
        assert_eq!(pixels.len(), 5);
        assert_eq!(pixels[2].0, (60.0, 10.0));
        let merged = pixels.iter().map(|(_, s)| *s).fold(Stats::default(), Stats::merge);
        let whole = tile.stats();
        assert_eq!((merged.count, merged.min, merged.max, merged.sum), (whole.count, whole.min, whole.max, whole.sum));
        assert!((merged.mean() - whole.mean()).abs() < 1e-12 && (merged.m2 - whole.m2).abs() < 1e-9);
    }
}
