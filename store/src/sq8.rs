//! 8-bit scalar quantization of vectors, calibrated from the data (faiss's `SQ8` with the
//! min-max range): dimension `d` of a vector is stored as the byte
//! `c_d = round((x_d − lo_d) / step_d)`, with `step_d = (hi_d − lo_d) / 255` and `lo_d`, `hi_d`
//! the smallest and largest value of that dimension over the segment.
//!
//! Scoring without decoding: with `x_d ≈ lo_d + step_d · c_d`,
//! `q · x ≈ Σ q_d lo_d + Σ (q_d step_d) c_d`. The first sum is the same for every point, so a
//! query ranks points by `Σ w_d c_d` with `w_d = q_d step_d`, and `w` is itself rounded to `i8`
//! with one scale (`w_d ≈ s · qi_d`, `s = max |w| / 127`). The ranking is then the integer dot
//! product `Σ qi_d c_d` of unsigned data bytes and signed query bytes: exactly what
//! `vpdpbusd` (AVX-512 VNNI) computes, 64 products at a time (see `simd.rs`).
//!
//! [`Calibration::Global`] is the older scheme (one range `±max |x|` for every dimension), kept
//! to measure against: on unit vectors, most dimensions use a fraction of that range, so per
//! dimension the same 256 levels are finer.
//!
//! Codes are computed when a segment is opened, from `vectors.f32`: nothing here is persisted.

/// How the 8-bit range of each dimension is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Calibration {
    /// Each dimension's own min and max over the segment (faiss `QT_8bit`, `RS_minmax`).
    #[default]
    PerDimension,
    /// One symmetric range, `±max |x|` over all dimensions.
    Global,
}

/// Running min and max, fed one vector at a time (a segment is read as a stream, never whole).
pub struct Calibrator {
    lo: Vec<f32>,
    hi: Vec<f32>,
}

impl Calibrator {
    pub fn new(dim: usize) -> Self {
        Calibrator { lo: vec![f32::INFINITY; dim], hi: vec![f32::NEG_INFINITY; dim] }
    }

    /// Take one vector (of the calibrator's dimension). Non-finite values are left out of the
    /// range: a corrupt vector must not flatten every other point's codes to one level (it
    /// encodes to the range's end or to 0, and its exact rescoring shows what it is).
    pub fn add(&mut self, v: &[f32]) {
        debug_assert_eq!(v.len(), self.lo.len());
        for ((lo, hi), &x) in self.lo.iter_mut().zip(&mut self.hi).zip(v) {
            if x.is_finite() {
                *lo = lo.min(x);
                *hi = hi.max(x);
            }
        }
    }

    pub fn finish(self, calibration: Calibration) -> Sq8 {
        let (mut lo, mut hi) = (self.lo, self.hi);
        // No vectors: every dimension is constant at 0.
        for (l, h) in lo.iter_mut().zip(&mut hi) {
            if l > h {
                (*l, *h) = (0.0, 0.0);
            }
        }
        if calibration == Calibration::Global {
            let m = lo.iter().chain(&hi).fold(0f32, |m, x| m.max(x.abs()));
            lo.fill(-m);
            hi.fill(m);
        }
        let step: Vec<f32> = lo.iter().zip(&hi).map(|(l, h)| (h - l) / 255.0).collect();
        let inv = step.iter().map(|&s| if s > 0.0 { 1.0 / s } else { 0.0 }).collect();
        Sq8 { lo, step, inv }
    }
}

/// A calibrated quantizer for vectors of one dimension.
pub struct Sq8 {
    lo: Vec<f32>,
    /// Width of one code step per dimension; 0 for a constant dimension (its code is always 0).
    step: Vec<f32>,
    /// `1 / step`, or 0 for a constant dimension.
    inv: Vec<f32>,
}

impl Sq8 {
    pub fn dim(&self) -> usize {
        self.lo.len()
    }

    /// The codes of `v` into `out` (both of the quantizer's dimension).
    pub fn encode(&self, v: &[f32], out: &mut [u8]) {
        for (((o, &x), &lo), &inv) in out.iter_mut().zip(v).zip(&self.lo).zip(&self.inv) {
            *o = ((x - lo) * inv).round().clamp(0.0, 255.0) as u8;
        }
    }

    /// The query's side of the scoring: `round(q_d step_d / s)` (see the module doc). Points
    /// rank by `dot_u8i8(codes, this)`, higher is closer.
    pub fn query(&self, q: &[f32]) -> Vec<i8> {
        let w: Vec<f32> = q.iter().zip(&self.step).map(|(x, s)| x * s).collect();
        let max = w.iter().fold(0f32, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 && max.is_finite() { 127.0 / max } else { 0.0 };
        w.iter().map(|x| (x * scale).round().clamp(-127.0, 127.0) as i8).collect()
    }

    /// The vector a code stands for (tests and error measurements).
    pub fn decode(&self, codes: &[u8]) -> Vec<f32> {
        codes.iter().zip(&self.lo).zip(&self.step).map(|((&c, lo), s)| lo + s * f32::from(c)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::scalar::dot_u8i8;

    fn calibrated(rows: &[Vec<f32>], c: Calibration) -> Sq8 {
        let mut cal = Calibrator::new(rows[0].len());
        rows.iter().for_each(|r| cal.add(r));
        cal.finish(c)
    }

    #[test]
    fn codes_span_each_dimension_and_decode_within_half_a_step() {
        let rows = vec![vec![-1.0, 0.0, 5.0], vec![1.0, 0.5, 5.0], vec![0.0, 0.25, 5.0]];
        let q = calibrated(&rows, Calibration::PerDimension);
        let mut c = [0u8; 3];
        q.encode(&rows[0], &mut c);
        assert_eq!(c, [0, 0, 0], "each dimension's minimum is code 0; a constant dimension is 0");
        q.encode(&rows[1], &mut c);
        assert_eq!(c, [255, 255, 0], "each dimension's maximum is code 255");
        q.encode(&[0.5, 0.2, 5.0], &mut c);
        assert_eq!(c[..2], [191, 102], "(0.5 - -1) / (2 / 255) = 191.25; 0.2 / (0.5 / 255) = 102");
        let back = q.decode(&c);
        assert!((back[0] - 0.5).abs() <= 1.0 / 255.0 + 1e-6 && (back[1] - 0.2).abs() <= 0.25 / 255.0 + 1e-6);
        assert_eq!(back[2], 5.0, "a constant dimension decodes to its value");
        // Values outside the calibrated range clamp instead of wrapping.
        q.encode(&[9.0, -9.0, 1.0], &mut c);
        assert_eq!(c, [255, 0, 0]);
    }

    #[test]
    fn global_calibration_uses_one_symmetric_range() {
        let rows = vec![vec![-0.5, 0.1], vec![0.25, 0.2]];
        let q = calibrated(&rows, Calibration::Global);
        let mut c = [0u8; 2];
        q.encode(&[-0.5, 0.5], &mut c);
        assert_eq!(c, [0, 255], "±0.5 is the range of both dimensions");
        q.encode(&[0.25, -0.25], &mut c);
        assert_eq!(c, [191, 64], "(0.25 + 0.5) · 255 = 191.25, (-0.25 + 0.5) · 255 = 63.75");
    }

    #[test]
    fn the_integer_ranking_follows_the_float_one() {
        // Skewed dimensions, as in real embeddings: per-dimension calibration should rank (nearly)
        // like the float dot product, and better than one global range.
        let dim = 64;
        let mut x = 12345u64;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 20_000) as f32 / 10_000.0 - 1.0
        };
        let rows: Vec<Vec<f32>> = (0..500)
            .map(|_| (0..dim).map(|d| rnd() * if d < 4 { 1.0 } else { 0.05 } + if d == 5 { 0.3 } else { 0.0 }).collect())
            .collect();
        // A query that weighs the narrow dimensions: one global range gives them ~13 levels.
        let query: Vec<f32> = (0..dim).map(|d| if d < 4 { 0.0 } else { rnd() }).collect();
        let exact: Vec<f32> = rows.iter().map(|r| vitrine_core::vector::dot(&query, r)).collect();
        let mut true_top: Vec<usize> = (0..rows.len()).collect();
        true_top.sort_by(|&a, &b| exact[b].total_cmp(&exact[a]));
        let overlap = |c: Calibration| {
            let q = calibrated(&rows, c);
            let qq = q.query(&query);
            let mut code = vec![0u8; dim];
            let approx: Vec<i32> = rows
                .iter()
                .map(|r| {
                    q.encode(r, &mut code);
                    dot_u8i8(&code, &qq)
                })
                .collect();
            let mut top: Vec<usize> = (0..rows.len()).collect();
            top.sort_by(|&a, &b| approx[b].cmp(&approx[a]));
            top[..20].iter().filter(|i| true_top[..20].contains(i)).count()
        };
        let (per_dim, global) = (overlap(Calibration::PerDimension), overlap(Calibration::Global));
        assert!(per_dim >= 17, "per-dimension top-20 overlap {per_dim}");
        assert!(per_dim > global, "per-dimension {per_dim} vs global {global}");
    }

    #[test]
    fn degenerate_inputs_give_zero_codes_not_a_panic() {
        let q = Calibrator::new(4).finish(Calibration::PerDimension);
        let mut c = [7u8; 4];
        q.encode(&[1.0, -1.0, 0.0, 2.0], &mut c);
        assert_eq!(c, [0; 4]);
        assert_eq!(q.query(&[1.0, 2.0, 3.0, 4.0]), vec![0; 4]);
        let q = calibrated(&[vec![0.0, 1.0]], Calibration::PerDimension);
        assert_eq!(q.query(&[0.0, 0.0]), vec![0, 0], "a zero query");
        // Non-finite values neither widen the range nor wrap around.
        let q = calibrated(&[vec![0.0, -1.0], vec![f32::INFINITY, f32::NAN], vec![1.0, 1.0]], Calibration::PerDimension);
        let mut c = [0u8; 2];
        q.encode(&[0.25, 0.5], &mut c);
        assert_eq!(c, [64, 191], "the range is still [0, 1] and [-1, 1]");
        q.encode(&[f32::NAN, f32::NEG_INFINITY], &mut c);
        assert_eq!(c, [0, 0]);
        q.encode(&[f32::INFINITY, 2.0], &mut c);
        assert_eq!(c, [255, 255]);
    }
}
