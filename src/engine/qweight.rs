//! Frozen weights kept in GGUF block formats (Q4_0, Q4_1, Q8_0) for inference on the CPU, and
//! their product with f32 activations.
//!
//! Decoding reads every weight once per token, so reading 4.5 to 8.5 bits a weight instead of 32
//! saves memory traffic, and integer products save arithmetic. The activations are rounded to 16
//! bits per block of 32 (llama.cpp and candle round them to 8, which flipped greedy choices at the
//! head), so a model whose GGUF blocks are used as they are computes the logits of its dequantized
//! f32 weights to within a few parts in 100,000.

use super::pool;
use candle_core::quantized::GgmlDType;
use std::ops::Range;
use std::sync::Mutex;

/// Weights per block in every supported format.
pub const BLOCK: usize = 32;

/// Above this many activation rows a product is compute-bound and the dense GEMM is faster.
pub const MAX_ROWS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockFormat {
    /// f16 scale `d`, 32 four-bit values `q`: `w = d (q - 8)`.
    Q4_0,
    /// f16 scale `d` and offset `m`, 32 four-bit values: `w = d q + m`.
    Q4_1,
    /// f16 scale `d`, 32 signed bytes: `w = d q`.
    Q8_0,
}

impl BlockFormat {
    pub fn from_ggml(dtype: GgmlDType) -> Option<BlockFormat> {
        match dtype {
            GgmlDType::Q4_0 => Some(BlockFormat::Q4_0),
            GgmlDType::Q4_1 => Some(BlockFormat::Q4_1),
            GgmlDType::Q8_0 => Some(BlockFormat::Q8_0),
            _ => None,
        }
    }

    pub fn block_bytes(self) -> usize {
        match self {
            BlockFormat::Q4_0 => 18,
            BlockFormat::Q4_1 => 20,
            BlockFormat::Q8_0 => 34,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BlockFormat::Q4_0 => "q4_0",
            BlockFormat::Q4_1 => "q4_1",
            BlockFormat::Q8_0 => "q8_0",
        }
    }

    /// Bytes of a block's f16 scale (and offset).
    fn head_bytes(self) -> usize {
        match self {
            BlockFormat::Q4_1 => 4,
            _ => 2,
        }
    }

    /// Bytes of a block's 32 values.
    fn value_bytes(self) -> usize {
        match self {
            BlockFormat::Q8_0 => 32,
            _ => 16,
        }
    }
}

/// Blocks of a row stored as one group: the group's scales side by side, then its offsets (Q4_1),
/// then its values. The kernels then read eight scales with one load and scale eight
/// activation blocks with one multiply, where the file's order (scale, values, scale, values,
/// ...) cost a few scalar instructions a block. On this machine's Zen 4 cores, one thread:
/// 1.7-2.0x faster Q4_1 products (`products_speed`), greedy decoding of SmolLM2 1.4-1.8x. A
/// row's last group holds what is left (`cols / 32 % 8` blocks, when not 0).
const GROUP: usize = 8;

/// Byte offsets in a row of `nb` blocks of block `b`'s scale, its offset (Q4_1 only) and its
/// values.
fn block_at(format: BlockFormat, nb: usize, b: usize) -> (usize, usize, usize) {
    let g0 = b / GROUP * GROUP;
    let (t, i) = (GROUP.min(nb - g0), b - g0);
    let start = g0 * format.block_bytes();
    (
        start + 2 * i,
        start + 2 * t + 2 * i,
        start + t * format.head_bytes() + i * format.value_bytes(),
    )
}

/// Rows of blocks in the file's order, regrouped as [`GROUP`] describes.
fn pack(format: BlockFormat, cols: usize, file: &[u8]) -> Vec<u8> {
    let (bb, nb) = (format.block_bytes(), cols / BLOCK);
    let (hb, vb) = (format.head_bytes(), format.value_bytes());
    let mut data = vec![0u8; file.len()];
    for (src, dst) in file
        .chunks_exact(nb * bb)
        .zip(data.chunks_exact_mut(nb * bb))
    {
        for (b, blk) in src.chunks_exact(bb).enumerate() {
            let (d, m, v) = block_at(format, nb, b);
            dst[d..d + 2].copy_from_slice(&blk[..2]);
            if hb == 4 {
                dst[m..m + 2].copy_from_slice(&blk[2..4]);
            }
            dst[v..v + vb].copy_from_slice(&blk[hb..]);
        }
    }
    data
}

/// Block `b` of a packed row of `nb` blocks: its scale `d`, the offset every weight carries
/// (`w = d q + offset`) and its value bytes.
fn block_parts(format: BlockFormat, nb: usize, row: &[u8], b: usize) -> (f32, f32, &[u8]) {
    let (at_d, at_m, at_v) = block_at(format, nb, b);
    let d = f16_at(row, at_d);
    let offset = match format {
        BlockFormat::Q4_0 => -8.0 * d,
        BlockFormat::Q4_1 => f16_at(row, at_m),
        BlockFormat::Q8_0 => 0.0,
    };
    (d, offset, &row[at_v..at_v + format.value_bytes()])
}

/// A `(rows, cols)` matrix stored row by row in blocks of [`BLOCK`] weights along `cols`, each
/// row's blocks regrouped as [`GROUP`] describes (the same bytes, in another order).
#[derive(Clone)]
pub struct QWeight {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

impl std::fmt::Debug for QWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "QWeight({}, {}x{})",
            self.format.name(),
            self.rows,
            self.cols
        )
    }
}

impl QWeight {
    /// Blocks as a GGUF file stores them (row-major, `cols` a multiple of [`BLOCK`]).
    pub fn from_blocks(
        format: BlockFormat,
        rows: usize,
        cols: usize,
        data: Vec<u8>,
    ) -> Result<QWeight, String> {
        if !cols.is_multiple_of(BLOCK) {
            return Err(format!(
                "{cols} columns do not fill whole blocks of {BLOCK}"
            ));
        }
        let want = rows * cols / BLOCK * format.block_bytes();
        if data.len() != want {
            return Err(format!(
                "{} blocks of a {rows}x{cols} matrix take {want} bytes, got {}",
                format.name(),
                data.len()
            ));
        }
        Ok(QWeight {
            format,
            rows,
            cols,
            data: pack(format, cols, &data),
        })
    }

    /// Quantizes dense row-major weights to Q8_0 (ggml's rule: the scale maps the block's
    /// largest magnitude to 127), or `None` when `cols` does not fill whole blocks.
    pub fn quantize_q8_0(w: &[f32], rows: usize, cols: usize) -> Option<QWeight> {
        if !cols.is_multiple_of(BLOCK) || w.len() != rows * cols {
            return None;
        }
        let mut data = Vec::with_capacity(rows * cols / BLOCK * 34);
        for block in w.chunks_exact(BLOCK) {
            let amax = block.iter().fold(0f32, |a, &x| a.max(x.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            data.extend_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
            data.extend(block.iter().map(|&x| (x * inv).round() as i8 as u8));
        }
        Some(QWeight {
            format: BlockFormat::Q8_0,
            rows,
            cols,
            data: pack(BlockFormat::Q8_0, cols, &data),
        })
    }

    pub fn format(&self) -> BlockFormat {
        self.format
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    fn row_bytes(&self) -> usize {
        self.cols / BLOCK * self.format.block_bytes()
    }

    fn row(&self, r: usize) -> &[u8] {
        let n = self.row_bytes();
        &self.data[r * n..(r + 1) * n]
    }

    /// The same matrix with its rows reordered: row `i` of the result is row `from[i]` here.
    pub fn permute_rows(&self, from: &[usize]) -> QWeight {
        assert_eq!(from.len(), self.rows, "a permutation of every row");
        let mut data = Vec::with_capacity(self.data.len());
        for &r in from {
            data.extend_from_slice(self.row(r));
        }
        QWeight { data, ..*self }
    }

    /// Row `r` as f32 weights.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let (row, nb) = (self.row(r), self.cols / BLOCK);
        for (b, out) in out.chunks_exact_mut(BLOCK).enumerate().take(nb) {
            let (d, offset, values) = block_parts(self.format, nb, row, b);
            match self.format {
                BlockFormat::Q8_0 => {
                    for (o, &q) in out.iter_mut().zip(values) {
                        *o = d * q as i8 as f32;
                    }
                }
                BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
                    for (j, &q) in values.iter().enumerate() {
                        out[j] = d * (q & 0x0F) as f32 + offset;
                        out[j + 16] = d * (q >> 4) as f32 + offset;
                    }
                }
            }
        }
    }

    /// All weights as a row-major f32 matrix.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row(r, row);
        }
        out
    }

    /// Rows `rows` against every activation row: `out[(r - rows.start) * m + i]`.
    fn rows_dots(&self, kernel: Kernel, rows: Range<usize>, acts: &Acts, out: &mut [f32]) {
        let m = acts.rows();
        let w = &self.data[rows.start * self.row_bytes()..rows.end * self.row_bytes()];
        assert_eq!(
            out.len(),
            rows.len() * m,
            "an output per row and activation row"
        );
        let mut first = 0;
        while first < m {
            let take = (m - first).min(4);
            match take {
                4 => dots::<4>(kernel, self.format, w, acts, first, out),
                3 => dots::<3>(kernel, self.format, w, acts, first, out),
                2 => dots::<2>(kernel, self.format, w, acts, first, out),
                _ => dots::<1>(kernel, self.format, w, acts, first, out),
            }
            first += take;
        }
    }
}

/// `x (m, cols) · Wᵀ` for several weights of the same width, each result `(m, rows)` row-major,
/// in one region of the kernel pool: the activations are rounded once, and the threads share
/// out the rows of all the weights (q, k and v of one layer, say) instead of meeting after each.
pub fn matmul_group(ws: &[&QWeight], x: &[f32], m: usize) -> Vec<Vec<f32>> {
    let Some(cols) = ws.first().map(|w| w.cols) else {
        return Vec::new();
    };
    assert!(ws.iter().all(|w| w.cols == cols), "weights of one width");
    assert_eq!(x.len(), m * cols, "activations (m, cols)");
    if m == 0 {
        return ws.iter().map(|_| Vec::new()).collect();
    }
    let acts = Acts::new(x, cols);
    let kernel = Kernel::detect();
    let pool = pool::global();
    // Each task owns a run of one weight's output rows; `(rows, m)` keeps that run contiguous.
    let mut transposed: Vec<Vec<f32>> = ws.iter().map(|w| vec![0f32; w.rows * m]).collect();
    let mut tasks: Vec<(usize, usize, Mutex<&mut [f32]>)> = Vec::new();
    for (i, (w, out)) in ws.iter().zip(transposed.iter_mut()).enumerate() {
        let per_task = rows_per_task(w.rows, pool.threads());
        for (t, chunk) in out.chunks_mut(per_task * m).enumerate() {
            tasks.push((i, t * per_task, Mutex::new(chunk)));
        }
    }
    pool.run(tasks.len(), &|task, _| {
        let (i, first, out) = &tasks[task];
        let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
        let rows = out.len() / m;
        ws[*i].rows_dots(kernel, *first..*first + rows, &acts, &mut out);
    });
    drop(tasks);
    transposed
        .into_iter()
        .zip(ws)
        .map(|(t, w)| match m {
            1 => t,
            _ => {
                let mut y = vec![0f32; m * w.rows];
                for (r, row) in t.chunks_exact(m).enumerate() {
                    for (i, &v) in row.iter().enumerate() {
                        y[i * w.rows + r] = v;
                    }
                }
                y
            }
        })
        .collect()
}

/// Activation rows in blocks of [`BLOCK`]: each block as 16-bit integers with an f32 scale
/// (`x ≈ scale q`, `|q| <= 32767`, so a block's rounding error is at most 1/65534 of its largest
/// magnitude, far below the weights' own 4- or 8-bit steps), and each block's exact f32 sum for
/// the offset term of the Q4 formats. Integer products are what make the kernel fast: one
/// instruction multiplies and pairs 16 weights.
struct Acts {
    q: Vec<i16>,
    scale: Vec<f32>,
    sum: Vec<f32>,
    blocks: usize,
}

impl Acts {
    fn new(x: &[f32], cols: usize) -> Acts {
        let mut q = vec![0i16; x.len()];
        let mut scale = Vec::with_capacity(x.len() / BLOCK);
        let mut sum = Vec::with_capacity(x.len() / BLOCK);
        for (block, out) in x.chunks_exact(BLOCK).zip(q.chunks_exact_mut(BLOCK)) {
            let amax = block.iter().fold(0f32, |a, &v| a.max(v.abs()));
            let d = amax / 32767.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            for (o, &v) in out.iter_mut().zip(block) {
                *o = (v * inv).round() as i16;
            }
            scale.push(d);
            sum.push(block.iter().sum());
        }
        Acts {
            q,
            scale,
            sum,
            blocks: cols / BLOCK,
        }
    }
}

impl Acts {
    fn rows(&self) -> usize {
        self.scale.len() / self.blocks.max(1)
    }
}

/// Enough tasks that two threads stay balanced when one is slowed by other work, few enough
/// that scheduling stays small beside the work.
fn rows_per_task(rows: usize, threads: usize) -> usize {
    let tasks = (threads.max(1) * 8).min(rows.div_ceil(16)).max(1);
    rows.div_ceil(tasks)
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            use std::sync::OnceLock;
            static FOUND: OnceLock<bool> = OnceLock::new();
            let avx2 = *FOUND.get_or_init(|| {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            });
            if avx2 {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }
}

/// Which kernel products run with on this CPU, for benchmark output.
pub fn kernel_name() -> &'static str {
    match Kernel::detect() {
        Kernel::Portable => "portable",
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => "avx2",
    }
}

/// Weight rows `w` (whole rows, one after another) against activation rows `first..first + M`;
/// the result for row `r` and activation row `i` goes to `out[r * m + i]`.
fn dots<const M: usize>(
    kernel: Kernel,
    format: BlockFormat,
    w: &[u8],
    acts: &Acts,
    first: usize,
    out: &mut [f32],
) {
    let (nb, m) = (acts.blocks, acts.rows());
    let row_bytes = nb * format.block_bytes();
    assert!(
        nb > 0
            && w.len().is_multiple_of(row_bytes)
            && out.len() == w.len() / row_bytes * m
            && first + M <= m
            && acts.q.len() == m * nb * BLOCK
            && acts.sum.len() == m * nb,
        "shapes of a row product"
    );
    match kernel {
        // SAFETY: `detect` found AVX2, FMA and F16C on this CPU; the shapes are checked above.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe {
            match format {
                BlockFormat::Q4_0 => avx2::rows::<M, 0>(w, acts, first, out),
                BlockFormat::Q4_1 => avx2::rows::<M, 1>(w, acts, first, out),
                BlockFormat::Q8_0 => avx2::rows::<M, 2>(w, acts, first, out),
            }
        },
        Kernel::Portable => {
            for (r, row) in w.chunks_exact(row_bytes).enumerate() {
                let got = portable_row::<M>(format, row, acts, first);
                out[r * m + first..r * m + first + M].copy_from_slice(&got);
            }
        }
    }
}

fn portable_row<const M: usize>(
    format: BlockFormat,
    w: &[u8],
    acts: &Acts,
    first: usize,
) -> [f32; M] {
    let nb = acts.blocks;
    let mut acc = [0f32; M];
    let mut q = [0i32; BLOCK];
    for b in 0..nb {
        let (d, offset, values) = block_parts(format, nb, w, b);
        match format {
            BlockFormat::Q8_0 => {
                for (v, &byte) in q.iter_mut().zip(values) {
                    *v = byte as i8 as i32;
                }
            }
            BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
                for (j, &byte) in values.iter().enumerate() {
                    q[j] = (byte & 0x0F) as i32;
                    q[j + 16] = (byte >> 4) as i32;
                }
            }
        }
        for (i, a) in acc.iter_mut().enumerate() {
            let k = (first + i) * nb + b;
            let x = &acts.q[k * BLOCK..(k + 1) * BLOCK];
            let s: i32 = q.iter().zip(x).map(|(&q, &x)| q * x as i32).sum();
            *a += s as f32 * (d * acts.scale[k]) + offset * acts.sum[k];
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Acts, BLOCK, GROUP};
    use std::arch::x86_64::*;

    /// Bytes ahead of the current group to prefetch.
    const PREFETCH: usize = 512;

    /// `F`: 0 = Q4_0, 1 = Q4_1, 2 = Q8_0 (a constant, so each format gets its own loop).
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; the shapes are those `super::dots` checks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn rows<const M: usize, const F: u8>(
        w: &[u8],
        acts: &Acts,
        first: usize,
        out: &mut [f32],
    ) {
        let m = acts.rows();
        let row_bytes = acts.blocks * Format::<F>::BLOCK_BYTES;
        for (r, row) in w.chunks_exact(row_bytes).enumerate() {
            let got = unsafe { row_dot::<M, F>(row, acts, first) };
            out[r * m + first..r * m + first + M].copy_from_slice(&got);
        }
    }

    struct Format<const F: u8>;

    impl<const F: u8> Format<F> {
        const BLOCK_BYTES: usize = match F {
            0 => 18,
            1 => 20,
            _ => 34,
        };
        const HEAD_BYTES: usize = if F == 1 { 4 } else { 2 };
        const VALUE_BYTES: usize = if F == 2 { 32 } else { 16 };
    }

    /// One packed row (see [`super::GROUP`]) against activation rows `first..first + M`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn row_dot<const M: usize, const F: u8>(
        w: &[u8],
        acts: &Acts,
        first: usize,
    ) -> [f32; M] {
        let nb = acts.blocks;
        // Two accumulators per activation row, for even and odd blocks: with one, every block
        // waits for the previous block's multiply-add to finish.
        let (mut even, mut odd) = ([_mm256_setzero_ps(); M], [_mm256_setzero_ps(); M]);
        let mut offsets = [_mm256_setzero_ps(); M];
        let mut g0 = 0;
        while g0 < nb {
            let t = GROUP.min(nb - g0);
            // SAFETY: the group's bytes are inside the row (`g0 < nb`).
            let p = unsafe { w.as_ptr().add(g0 * Format::<F>::BLOCK_BYTES) };
            // The weights stream from memory once per token; asking a few lines ahead keeps
            // more reads in flight than the hardware prefetcher does on its own. A prefetch
            // past the row's end reads the next row (or nothing) and cannot fault.
            for line in (0..t * Format::<F>::BLOCK_BYTES).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH + line) as *const i8);
            }
            // SAFETY (this block): `t` scales (and offsets) lie at the group's start; the
            // activations hold `nb` blocks per row, `g0 + t <= nb`.
            let (d, offset) = unsafe {
                let d = halves(p, t);
                let offset = match F {
                    0 => _mm256_mul_ps(d, _mm256_set1_ps(-8.0)),
                    1 => halves(p.add(2 * t), t),
                    _ => _mm256_setzero_ps(),
                };
                (d, offset)
            };
            // Each activation block's scale times its weight block's, per activation row.
            let mut scales = [[0f32; GROUP]; M];
            for i in 0..M {
                let k = (first + i) * nb + g0;
                // SAFETY: as above.
                unsafe {
                    let s = singles(acts.scale.as_ptr().add(k), t);
                    _mm256_storeu_ps(scales[i].as_mut_ptr(), _mm256_mul_ps(d, s));
                    if F != 2 {
                        let sum = singles(acts.sum.as_ptr().add(k), t);
                        offsets[i] = _mm256_fmadd_ps(offset, sum, offsets[i]);
                    }
                }
            }
            // SAFETY: the values follow the group's scales and offsets.
            let values = unsafe { p.add(t * Format::<F>::HEAD_BYTES) };
            let rows: [usize; M] = std::array::from_fn(|i| (first + i) * nb + g0);
            // SAFETY: blocks `j < t` of the group; their activation blocks exist.
            unsafe {
                let mut j = 0;
                while j + 1 < t {
                    block::<M, F>(values, j, acts, &rows, &scales, &mut even);
                    block::<M, F>(values, j + 1, acts, &rows, &scales, &mut odd);
                    j += 2;
                }
                if j < t {
                    block::<M, F>(values, j, acts, &rows, &scales, &mut even);
                }
            }
            g0 += t;
        }
        let mut out = [0f32; M];
        for i in 0..M {
            out[i] = hsum(_mm256_add_ps(_mm256_add_ps(even[i], odd[i]), offsets[i]));
        }
        out
    }

    /// Block `j` of a group (values at `values`) against the activation rows whose blocks for
    /// the group start at `rows[i]`, scaled by `scales[i][j]`.
    ///
    /// # Safety
    /// AVX2, FMA; block `j` and its activation blocks exist.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block<const M: usize, const F: u8>(
        values: *const u8,
        j: usize,
        acts: &Acts,
        rows: &[usize; M],
        scales: &[[f32; GROUP]; M],
        acc: &mut [__m256; M],
    ) {
        // SAFETY: as documented.
        unsafe {
            let (w0, w1) = decode::<F>(values.add(j * Format::<F>::VALUE_BYTES));
            for i in 0..M {
                let x = acts.q.as_ptr().add((rows[i] + j) * BLOCK) as *const __m256i;
                let p = _mm256_add_epi32(
                    _mm256_madd_epi16(w0, _mm256_loadu_si256(x)),
                    _mm256_madd_epi16(w1, _mm256_loadu_si256(x.add(1))),
                );
                let scale = _mm256_set1_ps(scales[i][j]);
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, acc[i]);
            }
        }
    }

    /// A block's 32 values as 16-bit integers (Q4 values without their offset).
    ///
    /// # Safety
    /// AVX2; `values` holds the block's value bytes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn decode<const F: u8>(values: *const u8) -> (__m256i, __m256i) {
        if F == 2 {
            // SAFETY: 32 value bytes.
            unsafe {
                (
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(values as _)),
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(values.add(16) as _)),
                )
            }
        } else {
            let low = _mm_set1_epi8(0x0F);
            // SAFETY: 16 value bytes.
            let qs = unsafe { _mm_loadu_si128(values as _) };
            (
                _mm256_cvtepu8_epi16(_mm_and_si128(qs, low)),
                _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(qs, 4), low)),
            )
        }
    }

    /// Lanes `..t` set: `MASKS[8 - t..][..8]`.
    static MASKS: [i32; 2 * GROUP] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

    /// A mask of the first `t <= 8` lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn first_lanes(t: usize) -> __m256i {
        // SAFETY: `8 - t + 8 <= 16` values of the table.
        unsafe { _mm256_loadu_si256(MASKS[GROUP - t..].as_ptr() as *const __m256i) }
    }

    /// `t <= 8` f16 values from `p`, zeros after them.
    ///
    /// # Safety
    /// F16C; 16 bytes from `p` are readable (`t` a group's count: its bytes hold 16 past any
    /// of its scales or offsets).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn halves(p: *const u8, t: usize) -> __m256 {
        // SAFETY: as documented.
        let v = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p as _) });
        match t {
            // The lanes past `t` hold other bytes of the group, possibly not numbers.
            GROUP => v,
            _ => _mm256_and_ps(v, _mm256_castsi256_ps(first_lanes(t))),
        }
    }

    /// `t <= 8` f32 values from `p`, zeros after them.
    ///
    /// # Safety
    /// AVX; `p` holds `t` values.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn singles(p: *const f32, t: usize) -> __m256 {
        // SAFETY: as documented (masked lanes are not read).
        unsafe {
            match t {
                GROUP => _mm256_loadu_ps(p),
                _ => _mm256_maskload_ps(p, first_lanes(t)),
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Blocks made by candle's own quantizer, as a GGUF file would hold them.
    fn ggml_blocks(format: GgmlDType, w: &[f32], rows: usize, cols: usize) -> (QWeight, Vec<f32>) {
        let t = Tensor::from_slice(w, (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, format).unwrap();
        let dense = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let data = q.data().unwrap().into_owned();
        let f = BlockFormat::from_ggml(format).unwrap();
        (QWeight::from_blocks(f, rows, cols, data).unwrap(), dense)
    }

    fn reference(w: &[f32], x: &[f32], m: usize, rows: usize, cols: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * rows];
        for i in 0..m {
            for r in 0..rows {
                y[i * rows + r] = (0..cols)
                    .map(|c| w[r * cols + c] as f64 * x[i * cols + c] as f64)
                    .sum::<f64>() as f32;
            }
        }
        y
    }

    #[test]
    fn products_equal_the_dequantized_weights_in_every_format_kernel_and_row_count() {
        // 3 blocks a row (one short group), then 19 (two whole groups and a short one).
        for (rows, cols) in [(37, 96), (9, 608)] {
            products_equal_the_dequantized_weights(rows, cols);
        }
    }

    fn products_equal_the_dequantized_weights(rows: usize, cols: usize) {
        let w = random(rows * cols, 1);
        // Rounding grows with the length of the sums.
        let tolerance = 5e-6 * cols as f32;
        for format in [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let (q, dense) = ggml_blocks(format, &w, rows, cols);
            assert_eq!(
                q.dequantize(),
                dense,
                "{format:?}: our dequantisation is ggml's"
            );
            for m in 1..=MAX_ROWS {
                let x = random(m * cols, 10 + m as u64);
                let want = reference(&dense, &x, m, rows, cols);
                let mut kernels = vec![Kernel::Portable];
                if Kernel::detect() != Kernel::Portable {
                    kernels.push(Kernel::detect());
                }
                for kernel in kernels {
                    let acts = Acts::new(&x, cols);
                    let mut transposed = vec![0f32; rows * m];
                    q.rows_dots(kernel, 0..rows, &acts, &mut transposed);
                    let mut y = vec![0f32; m * rows];
                    for r in 0..rows {
                        for i in 0..m {
                            y[i * rows + r] = transposed[r * m + i];
                        }
                    }
                    let err = y
                        .iter()
                        .zip(&want)
                        .fold(0f32, |e, (a, b)| e.max((a - b).abs()));
                    assert!(err < tolerance, "{format:?} {kernel:?} m={m}: {err}");
                }
                let y = matmul_group(&[&q], &x, m).remove(0);
                let err = y
                    .iter()
                    .zip(&want)
                    .fold(0f32, |e, (a, b)| e.max((a - b).abs()));
                assert!(err < tolerance, "{format:?} matmul m={m}: {err}");
            }
        }
    }

    #[test]
    fn a_group_of_products_equals_each_alone() {
        let cols = 64;
        let ws: Vec<QWeight> = [(7, 1), (40, 2), (3, 3)]
            .iter()
            .map(|&(rows, seed)| {
                QWeight::quantize_q8_0(&random(rows * cols, seed), rows, cols).unwrap()
            })
            .collect();
        let refs: Vec<&QWeight> = ws.iter().collect();
        for m in [1, 3] {
            let x = random(m * cols, 9);
            let group = matmul_group(&refs, &x, m);
            for (w, got) in ws.iter().zip(&group) {
                let alone = matmul_group(&[w], &x, m).remove(0);
                assert_eq!(got, &alone);
            }
        }
    }

    #[test]
    fn our_q8_0_quantizer_matches_ggml() {
        let (rows, cols) = (5, 64);
        let mut w = random(rows * cols, 3);
        w[..BLOCK].fill(0.0); // an all-zero block has scale 0
        let (theirs, _) = ggml_blocks(GgmlDType::Q8_0, &w, rows, cols);
        let ours = QWeight::quantize_q8_0(&w, rows, cols).unwrap();
        assert_eq!(ours.dequantize(), theirs.dequantize());
        assert!(QWeight::quantize_q8_0(&w, 10, 32).is_some());
        assert!(QWeight::quantize_q8_0(&w[..rows * 48], rows, 48).is_none());
    }

    #[test]
    fn permuted_rows_and_wrong_sizes() {
        let (rows, cols) = (4, 32);
        let w = random(rows * cols, 4);
        let q = QWeight::quantize_q8_0(&w, rows, cols).unwrap();
        let p = q.permute_rows(&[2, 0, 3, 1]);
        let (a, b) = (q.dequantize(), p.dequantize());
        assert_eq!(&b[..cols], &a[2 * cols..3 * cols]);
        assert_eq!(&b[3 * cols..], &a[cols..2 * cols]);
        assert!(QWeight::from_blocks(BlockFormat::Q4_1, 4, 32, vec![0; 79]).is_err());
        assert!(QWeight::from_blocks(BlockFormat::Q4_1, 4, 33, vec![0; 80]).is_err());
        assert!(QWeight::from_blocks(BlockFormat::Q4_1, 4, 32, vec![0; 80]).is_ok());
    }

    /// Nanoseconds a weight block takes in one product with one activation row, on one thread
    /// (its CPU time, so other work on the machine barely moves it), at SmolLM2's shapes;
    /// `cargo test --release --lib products_speed -- --ignored --nocapture`. A measurement,
    /// not a check.
    #[test]
    #[ignore]
    fn products_speed() {
        fn thread_secs() -> f64 {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: a valid timespec to write to.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
            ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
        }
        let kernel = Kernel::detect();
        for (format, rows, cols) in [
            (GgmlDType::Q4_1, 1536, 576),
            (GgmlDType::Q4_1, 576, 1536),
            (GgmlDType::Q8_0, 49152, 576),
        ] {
            let (q, _) = ggml_blocks(format, &random(rows * cols, 2), rows, cols);
            for m in [1, 4] {
                let acts = Acts::new(&random(m * cols, 3), cols);
                let mut out = vec![0f32; rows * m];
                let reps = (40_000_000 / (rows * cols)).max(1);
                let mut best = f64::MAX;
                for _ in 0..5 {
                    let t = thread_secs();
                    for _ in 0..reps {
                        q.rows_dots(kernel, 0..rows, &acts, &mut out);
                    }
                    best = best.min((thread_secs() - t) / reps as f64);
                }
                let blocks = (rows * cols / BLOCK * m) as f64;
                eprintln!(
                    "{format:?} {rows}x{cols} m={m} ({kernel:?}): {:.2} ns a block and row",
                    best * 1e9 / blocks
                );
            }
        }
    }
}
