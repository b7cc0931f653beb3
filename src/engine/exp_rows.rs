//! The exponentials of softmax rows, eight lanes at a time where the CPU has AVX2 and FMA.
//!
//! A training step takes ~12.6M exponentials in its loss (256 tokens x SmolLM2's 49k-word
//! vocabulary) and ~1M in attention; libm's `expf` takes them one at a time at a few
//! nanoseconds each. Here a polynomial after range reduction (the classic Cephes `expf`
//! coefficients) takes them eight at a time, within 2 ulp of the exact value (the tests hold it
//! to f64's `exp`). Values whose exponential is below f32's smallest normal number, -inf among
//! them, give exactly 0, so masked attention columns stay exact zeros; NaN stays NaN. Sums are
//! taken in eight lanes and then in a fixed order, so a row's result does not depend on which
//! thread took it.

/// Below this, `exp` is under f32's smallest normal number (and is taken as 0).
const LOW: f32 = -87.336_55;
/// Inputs are clamped here (a softmax's shifted values are at most 0; from ~88.3 on, the
/// result is inf).
const HIGH: f32 = 88.376_26;

/// The largest value of `row`; -inf for an empty row. NaN if the row holds one.
pub fn max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact(8);
    let mut nan = false;
    for c in &mut chunks {
        for (m, &x) in lanes.iter_mut().zip(c) {
            // `>` rather than f32::max, so the loop vectorises; NaN is looked for once below.
            *m = if x > *m { x } else { *m };
            nan |= x.is_nan();
        }
    }
    for &x in chunks.remainder() {
        lanes[0] = if x > lanes[0] { x } else { lanes[0] };
        nan |= x.is_nan();
    }
    if nan {
        return f32::NAN;
    }
    lanes.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x))
}

/// `row[i] = exp(row[i] - shift)` for every value; returns their sum.
pub fn exp_shifted(row: &mut [f32], shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::gemm::has_fma() {
        let at = row.as_mut_ptr();
        // Safety: the CPU has AVX2 and FMA; `at` is valid for `row.len()` reads and writes.
        return unsafe { avx2::exp_shifted(at, at, row.len(), shift) };
    }
    let mut sum = 0f32;
    for x in row.iter_mut() {
        *x = exp(*x - shift);
        sum += *x;
    }
    sum
}

/// The sum of `exp(row[i] - shift)`, leaving the row as it is.
pub fn sum_exp_shifted(row: &[f32], shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::gemm::has_fma() {
        // Safety: the CPU has AVX2 and FMA; the row is valid for `row.len()` reads, and a null
        // destination is never written.
        return unsafe { avx2::exp_shifted(row.as_ptr(), std::ptr::null_mut(), row.len(), shift) };
    }
    row.iter().map(|&x| exp(x - shift)).sum()
}

/// The scalar rule: libm's `exp`, with the same flush to zero below [`LOW`].
fn exp(x: f32) -> f32 {
    if x < LOW {
        0.0
    } else {
        x.exp()
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{HIGH, LOW};
    use std::arch::x86_64::*;

    /// `exp` of eight values.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn exp8(x: __m256) -> __m256 {
        // min(HIGH, x) keeps a NaN x (the instruction returns its second operand on NaN).
        let x = _mm256_min_ps(_mm256_set1_ps(HIGH), x);
        let zero = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(LOW));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        // x - n ln 2, with ln 2 in two parts so the reduction is exact to f32.
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let r2 = _mm256_mul_ps(r, r);
        let y = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
        // 2^n through the exponent bits (n is within -126..=128 here; 128 gives inf).
        let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        let y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
        _mm256_andnot_ps(zero, y)
    }

    /// `dst[i] = exp(src[i] - shift)` for `i < len` (nothing written when `dst` is null; `dst`
    /// may be `src`); returns the sum of the exponentials.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `src` is valid for `len` reads and a non-null `dst` for `len`
    /// writes.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_shifted(src: *const f32, dst: *mut f32, len: usize, shift: f32) -> f32 {
        let s = _mm256_set1_ps(shift);
        let mut acc = _mm256_setzero_ps();
        let whole = len - len % 8;
        for i in (0..whole).step_by(8) {
            // Safety: elements i..i + 8 are inside both buffers.
            unsafe {
                let y = exp8(_mm256_sub_ps(_mm256_loadu_ps(src.add(i)), s));
                if !dst.is_null() {
                    _mm256_storeu_ps(dst.add(i), y);
                }
                acc = _mm256_add_ps(acc, y);
            }
        }
        if whole < len {
            let rest = len - whole;
            let mut tail = [f32::NEG_INFINITY; 8];
            // Safety: the last `rest` elements are inside both buffers; `tail` holds eight
            // values, and its -inf padding adds exact zeros.
            unsafe {
                std::ptr::copy_nonoverlapping(src.add(whole), tail.as_mut_ptr(), rest);
                let y = exp8(_mm256_sub_ps(_mm256_loadu_ps(tail.as_ptr()), s));
                _mm256_storeu_ps(tail.as_mut_ptr(), y);
                acc = _mm256_add_ps(acc, y);
                if !dst.is_null() {
                    std::ptr::copy_nonoverlapping(tail.as_ptr(), dst.add(whole), rest);
                }
            }
        }
        let mut lanes = [0f32; 8];
        // Safety: `lanes` holds eight values.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        (lanes[0] + lanes[4])
            + (lanes[1] + lanes[5])
            + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f64) -> f64 {
        let ulp = f64::from(f32::EPSILON) * b.abs().max(f64::from(f32::MIN_POSITIVE));
        (f64::from(a) - b).abs() / ulp
    }

    #[test]
    fn exponentials_are_within_two_ulp_of_f64_exp() {
        let mut xs: Vec<f32> = (0..200_001)
            .map(|i| -87.0 + 175.0 * i as f32 / 200_000.0)
            .collect();
        xs.extend([0.0, -0.0, 1e-30, -1e-30, 88.0, -87.3]);
        let mut row = xs.clone();
        exp_shifted(&mut row, 0.0);
        for (&x, &y) in xs.iter().zip(&row) {
            let exact = f64::from(x).exp();
            assert!(ulps(y, exact) <= 2.0, "exp({x}) = {y}, exact {exact}");
        }
    }

    #[test]
    fn a_rows_sum_is_close_to_f64_and_the_same_read_or_written() {
        // A softmax row: a vocabulary's worth of values at most 0 after the shift.
        let xs: Vec<f32> = (0..49_155)
            .map(|i| ((i * 7919) % 3001) as f32 / -100.0)
            .collect();
        let exact: f64 = xs.iter().map(|&x| (f64::from(x) - 0.5).exp()).sum();
        let mut row = xs.clone();
        let sum = exp_shifted(&mut row, 0.5);
        assert!(
            ((f64::from(sum) - exact) / exact).abs() < 1e-5,
            "{sum} vs {exact}"
        );
        assert_eq!(sum_exp_shifted(&xs, 0.5).to_bits(), sum.to_bits());
    }

    #[test]
    fn masked_values_give_exact_zeros_and_nan_stays_nan() {
        for len in [1, 7, 8, 9, 17] {
            let mut row = vec![f32::NEG_INFINITY; len];
            row[0] = 0.0;
            if len > 2 {
                row[2] = -100.0;
            }
            let sum = exp_shifted(&mut row, 0.0);
            assert_eq!(sum, 1.0);
            assert_eq!(row[0], 1.0);
            assert!(row[1..].iter().all(|&x| x == 0.0), "{row:?}");
        }
        let mut row = vec![0.0, f32::NAN, 1.0];
        assert!(exp_shifted(&mut row, 0.0).is_nan());
        assert!(row[1].is_nan());
        assert!(sum_exp_shifted(&[f32::NAN; 9], 0.0).is_nan());
    }

    #[test]
    fn max_finds_the_largest_value_anywhere_and_sees_nan() {
        for len in [0, 1, 5, 8, 13, 64] {
            for at in 0..len {
                let mut row: Vec<f32> = (0..len).map(|i| -(i as f32)).collect();
                row[at] = 3.5;
                assert_eq!(max(&row), 3.5);
                row[at] = f32::NAN;
                assert!(max(&row).is_nan());
            }
        }
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        assert_eq!(max(&[f32::NEG_INFINITY; 3]), f32::NEG_INFINITY);
    }
}
