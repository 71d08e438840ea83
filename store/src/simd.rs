//! The two distance kernels of a vector search, chosen at run time for the CPU it runs on: the
//! `u8 × i8` dot product that scores the graph walk's quantized codes, and the `f32` dot product
//! that rescores candidates and scores filtered subsets exactly.
//!
//! Why run-time dispatch: the release binary is built for baseline x86-64 (SSE2), so the
//! compiler cannot use AVX2 or AVX-512 on its own, and building with `-C target-cpu=native`
//! (15–18% faster here) would make a binary that crashes on older CPUs. Each wide kernel is a
//! `#[target_feature]` function, called only after `is_x86_feature_detected!` said the CPU has
//! it; [`Kernels::detect`] picks the widest once, and the index keeps the function pointers.
//!
//! Every kernel computes the same function as the scalar one: exactly for the integer kernel (an
//! `i32` sum of at most 2^16 products of magnitude 255 × 128 cannot overflow, see
//! [`MAX_DIM`]), and up to `f32` rounding for the float one (the order of the additions differs).
//! The tests check both on random and edge lengths. `VITRINE_SIMD=scalar|avx2|avx512` caps the
//! level, to measure what each one brings.

// `unsafe` is confined to this module: calling a `#[target_feature]` function and the SIMD
// intrinsics. Each call site is guarded by a feature check made when the `Kernels` was built.
#![allow(unsafe_code)]

use std::sync::OnceLock;

/// Vectors longer than this are refused by the index: up to here the integer kernel's `i32` sum
/// cannot overflow (65536 × 255 × 128 < 2^31).
pub const MAX_DIM: usize = 65_536;

/// An instruction set level, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Portable Rust (the compiler vectorizes it for the baseline target).
    Scalar,
    /// x86-64 AVX2 + FMA.
    Avx2,
    /// x86-64 AVX-512 F/BW with VNNI (`vpdpbusd`: 64 `u8 × i8` products per instruction).
    Avx512,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512-vnni",
        }
    }

    /// The widest level this CPU has.
    pub fn available() -> Level {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
            {
                return Level::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Level::Avx2;
            }
        }
        Level::Scalar
    }
}

/// Asks the CPU to start loading the first cache line of `v` into L1 (a hint: it never faults and
/// changes no result; a no-op off x86-64). A graph walk calls it for the vector it scores next
/// while it scores the current one, so the next one's first line is not a full memory round trip
/// (the hardware prefetcher follows on from there within the vector).
#[inline(always)]
pub fn prefetch(v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetch` only hints the cache: it never faults, whatever the address (here a
    // valid one), and SSE is part of the x86-64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(v.as_ptr().cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// The kernels of one level. Copy it into the index: a call through these pointers costs a few
/// nanoseconds against the hundreds a 512-dimension product takes.
#[derive(Clone, Copy)]
pub struct Kernels {
    pub level: Level,
    /// `Σ codes[i] · q[i]` over equal-length slices.
    pub dot_u8i8: fn(&[u8], &[i8]) -> i32,
    /// `Σ a[i] · b[i]` over equal-length slices.
    pub dot_f32: fn(&[f32], &[f32]) -> f32,
}

impl Kernels {
    /// The widest kernels this CPU runs, capped by `VITRINE_SIMD` when it names a level; decided
    /// once per process.
    pub fn detect() -> Kernels {
        static DETECTED: OnceLock<Kernels> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let cap = match std::env::var("VITRINE_SIMD").as_deref() {
                Ok("scalar") => Level::Scalar,
                Ok("avx2") => Level::Avx2,
                _ => Level::Avx512,
            };
            Kernels::at(Level::available().min(cap)).expect("an available level")
        })
    }

    /// The kernels of `level`, or `None` when this CPU lacks it.
    pub fn at(level: Level) -> Option<Kernels> {
        if level > Level::available() {
            return None;
        }
        Some(match level {
            Level::Scalar => Kernels { level, dot_u8i8: scalar::dot_u8i8, dot_f32: scalar::dot_f32 },
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => Kernels { level, dot_u8i8: x86::dot_u8i8_avx2, dot_f32: x86::dot_f32_avx2 },
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => Kernels { level, dot_u8i8: x86::dot_u8i8_avx512, dot_f32: x86::dot_f32_avx512 },
            #[cfg(not(target_arch = "x86_64"))]
            _ => return None,
        })
    }

    /// Every level this CPU runs (for tests and benchmarks).
    pub fn all_available() -> Vec<Kernels> {
        [Level::Scalar, Level::Avx2, Level::Avx512].into_iter().filter_map(Kernels::at).collect()
    }
}

/// The reference kernels.
pub mod scalar {
    /// Integer dot product, with 16 independent lanes so that the compiler vectorizes it.
    pub fn dot_u8i8(a: &[u8], b: &[i8]) -> i32 {
        assert_eq!(a.len(), b.len());
        let mut acc = [0i32; 16];
        let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
        let tail: i32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| i32::from(*x) * i32::from(*y)).sum();
        for (x, y) in ca.zip(cb) {
            for i in 0..16 {
                acc[i] += i32::from(x[i]) * i32::from(y[i]);
            }
        }
        acc.iter().sum::<i32>() + tail
    }

    pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        vitrine_core::vector::dot(a, b)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    pub fn dot_u8i8_avx2(a: &[u8], b: &[i8]) -> i32 {
        assert_eq!(a.len(), b.len());
        // SAFETY: these pointers are only handed out by `Kernels::at(Level::Avx2)`, after the
        // CPU was found to have AVX2.
        unsafe { u8i8_avx2(a, b) }
    }

    pub fn dot_u8i8_avx512(a: &[u8], b: &[i8]) -> i32 {
        assert_eq!(a.len(), b.len());
        // SAFETY: only handed out by `Kernels::at(Level::Avx512)`, after the check for
        // AVX-512 F, BW and VNNI.
        unsafe { u8i8_avx512(a, b) }
    }

    pub fn dot_f32_avx2(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        // SAFETY: as above (AVX2 and FMA were checked).
        unsafe { f32_avx2(a, b) }
    }

    pub fn dot_f32_avx512(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        // SAFETY: as above (AVX-512 F was checked).
        unsafe { f32_avx512(a, b) }
    }

    /// 32 products a step: both halves widened to `i16`, multiplied and summed in pairs into
    /// `i32` (`vpmaddwd`). `vpmaddubsw` would take the bytes directly but saturates at `i16`
    /// (255 × 127 × 2 does not fit), so it would not compute the same function.
    #[target_feature(enable = "avx2")]
    fn u8i8_avx2(a: &[u8], b: &[i8]) -> i32 {
        let n = a.len();
        let mut acc0 = _mm256_setzero_si256();
        let mut acc1 = _mm256_setzero_si256();
        let mut i = 0;
        while i + 32 <= n {
            // SAFETY: i + 32 <= n, so each 16-byte load is inside both slices (unaligned loads).
            let (a0, a1, b0, b1) = unsafe {
                (
                    _mm_loadu_si128(a.as_ptr().add(i).cast()),
                    _mm_loadu_si128(a.as_ptr().add(i + 16).cast()),
                    _mm_loadu_si128(b.as_ptr().add(i).cast()),
                    _mm_loadu_si128(b.as_ptr().add(i + 16).cast()),
                )
            };
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(_mm256_cvtepu8_epi16(a0), _mm256_cvtepi8_epi16(b0)));
            acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(_mm256_cvtepu8_epi16(a1), _mm256_cvtepi8_epi16(b1)));
            i += 32;
        }
        let acc = _mm256_add_epi32(acc0, acc1);
        let mut lanes = [0i32; 8];
        // SAFETY: `lanes` holds exactly 32 bytes.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), acc) };
        lanes.iter().sum::<i32>() + super::scalar::dot_u8i8(&a[i..], &b[i..])
    }

    /// 64 products a step with `vpdpbusd` (unsigned bytes × signed bytes, four summed into each
    /// `i32` lane, no saturation), two accumulators to hide its latency.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn u8i8_avx512(a: &[u8], b: &[i8]) -> i32 {
        let n = a.len();
        let mut acc0 = _mm512_setzero_si512();
        let mut acc1 = _mm512_setzero_si512();
        let mut i = 0;
        while i + 128 <= n {
            // SAFETY: i + 128 <= n: all four 64-byte loads are inside both slices.
            let (a0, a1, b0, b1) = unsafe {
                (
                    _mm512_loadu_si512(a.as_ptr().add(i).cast()),
                    _mm512_loadu_si512(a.as_ptr().add(i + 64).cast()),
                    _mm512_loadu_si512(b.as_ptr().add(i).cast()),
                    _mm512_loadu_si512(b.as_ptr().add(i + 64).cast()),
                )
            };
            acc0 = _mm512_dpbusd_epi32(acc0, a0, b0);
            acc1 = _mm512_dpbusd_epi32(acc1, a1, b1);
            i += 128;
        }
        if i + 64 <= n {
            // SAFETY: i + 64 <= n.
            let (a0, b0) =
                unsafe { (_mm512_loadu_si512(a.as_ptr().add(i).cast()), _mm512_loadu_si512(b.as_ptr().add(i).cast())) };
            acc0 = _mm512_dpbusd_epi32(acc0, a0, b0);
            i += 64;
        }
        _mm512_reduce_add_epi32(_mm512_add_epi32(acc0, acc1)) + super::scalar::dot_u8i8(&a[i..], &b[i..])
    }

    #[target_feature(enable = "avx2,fma")]
    fn f32_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (j, acc) in acc.iter_mut().enumerate() {
                // SAFETY: i + 8j + 8 <= i + 32 <= n.
                let (x, y) = unsafe { (_mm256_loadu_ps(a.as_ptr().add(i + 8 * j)), _mm256_loadu_ps(b.as_ptr().add(i + 8 * j))) };
                *acc = _mm256_fmadd_ps(x, y, *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            // SAFETY: i + 8 <= n.
            let (x, y) = unsafe { (_mm256_loadu_ps(a.as_ptr().add(i)), _mm256_loadu_ps(b.as_ptr().add(i))) };
            acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
            i += 8;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds exactly 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
        lanes.iter().sum::<f32>() + a[i..].iter().zip(&b[i..]).map(|(x, y)| x * y).sum::<f32>()
    }

    #[target_feature(enable = "avx512f")]
    fn f32_avx512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let mut acc0 = _mm512_setzero_ps();
        let mut acc1 = _mm512_setzero_ps();
        let mut i = 0;
        while i + 32 <= n {
            // SAFETY: i + 32 <= n: both 16-float loads of each slice are inside it.
            let (x0, x1, y0, y1) = unsafe {
                (
                    _mm512_loadu_ps(a.as_ptr().add(i)),
                    _mm512_loadu_ps(a.as_ptr().add(i + 16)),
                    _mm512_loadu_ps(b.as_ptr().add(i)),
                    _mm512_loadu_ps(b.as_ptr().add(i + 16)),
                )
            };
            acc0 = _mm512_fmadd_ps(x0, y0, acc0);
            acc1 = _mm512_fmadd_ps(x1, y1, acc1);
            i += 32;
        }
        if i + 16 <= n {
            // SAFETY: i + 16 <= n.
            let (x, y) = unsafe { (_mm512_loadu_ps(a.as_ptr().add(i)), _mm512_loadu_ps(b.as_ptr().add(i))) };
            acc0 = _mm512_fmadd_ps(x, y, acc0);
            i += 16;
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) + a[i..].iter().zip(&b[i..]).map(|(x, y)| x * y).sum::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift, seeded: the kernels' inputs.
    fn bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// Lengths around every lane width (16, 32, 64, 128) and the common embedding sizes.
    fn lengths() -> Vec<usize> {
        let mut l: Vec<usize> = (0..=300).collect();
        l.extend([383, 384, 385, 511, 512, 513, 767, 768, 769, 1023, 1024, 1025, 1536, 4099]);
        l
    }

    #[test]
    fn every_integer_kernel_equals_the_scalar_one() {
        let kernels = Kernels::all_available();
        eprintln!("levels on this CPU: {:?}", kernels.iter().map(|k| k.level.name()).collect::<Vec<_>>());
        for n in lengths() {
            let a = bytes(n as u64 + 1, n);
            let b: Vec<i8> = bytes(n as u64 + 1000, n).into_iter().map(|x| x as i8).collect();
            let want = scalar::dot_u8i8(&a, &b);
            let naive: i32 = a.iter().zip(&b).map(|(x, y)| i32::from(*x) * i32::from(*y)).sum();
            assert_eq!(want, naive, "scalar at {n}");
            for k in &kernels {
                assert_eq!((k.dot_u8i8)(&a, &b), want, "{} at length {n}", k.level.name());
            }
        }
    }

    #[test]
    fn the_integer_kernels_hold_the_extremes_without_saturating() {
        // 255 × 127 and 255 × -128 everywhere: where `vpmaddubsw` would saturate.
        for n in [1, 31, 32, 64, 127, 128, 512, 4096] {
            let a = vec![255u8; n];
            for v in [127i8, -128] {
                let b = vec![v; n];
                let want = 255 * i32::from(v) * n as i32;
                for k in Kernels::all_available() {
                    assert_eq!((k.dot_u8i8)(&a, &b), want, "{} at {n} × {v}", k.level.name());
                }
            }
        }
        let (a, b) = (vec![255u8; MAX_DIM], vec![-128i8; MAX_DIM]);
        for k in Kernels::all_available() {
            assert_eq!((k.dot_u8i8)(&a, &b), -255 * 128 * MAX_DIM as i32, "{} at MAX_DIM", k.level.name());
        }
    }

    #[test]
    fn every_float_kernel_matches_the_scalar_one_up_to_rounding() {
        for n in lengths() {
            let f = |seed| -> Vec<f32> { bytes(seed, n).into_iter().map(|x| (f32::from(x) - 127.5) / 64.0).collect() };
            let (a, b) = (f(n as u64 + 7), f(n as u64 + 9000));
            let want = scalar::dot_f32(&a, &b);
            let magnitude: f32 = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum();
            for k in Kernels::all_available() {
                let got = (k.dot_f32)(&a, &b);
                assert!((got - want).abs() <= 1e-5 * magnitude.max(1.0), "{} at {n}: {got} vs {want}", k.level.name());
            }
        }
    }

    #[test]
    #[should_panic]
    fn unequal_lengths_are_a_bug_not_a_short_sum() {
        (Kernels::detect().dot_u8i8)(&[1, 2, 3], &[1, 2]);
    }

    #[test]
    fn levels_above_the_cpu_are_refused() {
        let top = Level::available();
        assert!(Kernels::at(top).is_some());
        assert!(Kernels::at(Level::Scalar).is_some());
        for l in [Level::Avx2, Level::Avx512] {
            assert_eq!(Kernels::at(l).is_some(), l <= top);
        }
        assert!(Kernels::detect().level <= top);
    }
}
