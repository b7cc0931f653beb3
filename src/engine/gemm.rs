//! f32 products with a frozen weight `W (n, k)`, row-major as the model holds it, read where it
//! lies, on the kernel pool:
//!
//! - forward, `Y (m, n) = X (m, k) Wᵀ`, computed as `Yᵀ = W Xᵀ`: the weight is the kernel's left
//!   operand, whose values it broadcasts from their rows; only the activations are packed (16
//!   tokens at a time, `k` values each);
//! - backward, `dX (m, k) = dY (m, n) W`: the weight is the right operand, and its rows already
//!   hold 16 consecutive columns side by side, so nothing is packed at all.
//!
//! A general GEMM (candle's) packs both operands on every call: for the short sequences of a
//! SEAL inner loop, re-packing the frozen weights was a tenth of a training step. Here a frozen
//! weight is never copied. The micro-kernel keeps a 6 x 16 tile of the output in twelve AVX2
//! registers (6 broadcasts and 2 loads feed 12 FMAs per step of the sum); blocks of 256 along
//! the sum keep the right operand's panel in L1 and the left one's rows in L2. Tasks own
//! disjoint tiles of the output, so they never meet. A portable loop of the same structure
//! serves CPUs without AVX2/FMA; the tests hold both to f64 sums.

use super::pool::{self, Pool};

const MR: usize = 6;
const NR: usize = 16;
/// Block of the sum in the backward: the weight's `KC x NR` panel, read from `KC` rows of the
/// weight, stays in L1 (16 KB).
const KC: usize = 256;
/// Block of the sum in the forward, whose right operand is a packed panel of activations read
/// in order: up to 96 KB of it in L2 beats storing (and re-adding) the forward's transposed
/// tile once per 256 steps of the sum; 10-15% faster forward products.
const KC_FORWARD: usize = 1536;
/// Rows of the left operand per task: `MC x KC` floats (~96 KB) stay in L2 in the backward; the
/// forward's `MC x KC_FORWARD` (~590 KB) still fits this machine's 1 MB L2.
const MC: usize = 96;
/// Column panels (of 16 tokens) up to which a forward shares out its rows rather than its
/// columns: 64 tokens, whose packed activations (4 x 96 KB at most) every task can read.
const FEW_PANELS: usize = 4;
/// Below this many multiply-adds a product is not worth waking the threads.
const PARALLEL_MIN: usize = 1 << 18;
/// Below this many activation values, the forward packs them on the calling thread.
const PACK_PARALLEL_MIN: usize = 1 << 15;

/// The left operand: element `(row, kk)` at `ptr[row * rs + kk]` (both products read rows
/// whole: the weight's in the forward, the output gradient's in the backward).
#[derive(Clone, Copy)]
struct Left {
    ptr: *const f32,
    rs: usize,
}

impl Left {
    /// The operand from element `(row, kk)` on.
    ///
    /// # Safety
    /// The element is inside the operand.
    unsafe fn at(self, row: usize, kk: usize) -> Left {
        Left {
            // Safety: as documented.
            ptr: unsafe { self.ptr.add(row * self.rs + kk) },
            ..self
        }
    }
}

/// The right operand's panel: the `NR` values of step `kk` at `ptr[kk * ks..][..NR]`.
#[derive(Clone, Copy)]
struct Right {
    ptr: *const f32,
    ks: usize,
}

/// The output: element `(row, col)` at `ptr[row * rs + col * cs]`.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    rs: usize,
    cs: usize,
}

impl Out {
    /// The output from element `(row, col)` on.
    ///
    /// # Safety
    /// The element is inside the output.
    unsafe fn at(self, row: usize, col: usize) -> Out {
        Out {
            // Safety: as documented.
            ptr: unsafe { self.ptr.add(row * self.rs + col * self.cs) },
            ..self
        }
    }
}

// Safety: tasks only read `Left` and `Right`, and write disjoint tiles of `Out`.
unsafe impl Send for Left {}
unsafe impl Sync for Left {}
unsafe impl Send for Right {}
unsafe impl Sync for Right {}
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// Which operand of [`product`] the frozen weight is; it sets the block of the sum and how the
/// work is shared out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `yᵀ = W xᵀ`: the weight is A, the packed activations B.
    Forward,
    /// `dx = dy W`, and the strided products of attention: the weight (if any) is B.
    Backward,
}

/// `C (rows, cols) = A (rows, depth) B (depth, cols)`, or `C += A B` when `accumulate`, B in
/// column panels of `NR`: `right(p)` is panel `p` (columns `p*NR..p*NR+NR`, all 16 readable
/// even past `cols`).
#[allow(clippy::too_many_arguments)]
fn product(
    pool: &Pool,
    rows: usize,
    cols: usize,
    depth: usize,
    a: Left,
    right: &(dyn Fn(usize) -> Right + Sync),
    c: Out,
    kind: Kind,
    accumulate: bool,
) {
    let kc_block = match kind {
        Kind::Forward => KC_FORWARD,
        Kind::Backward => KC,
    };
    let panels = cols.div_ceil(NR);
    let threads = if rows * cols * depth >= PARALLEL_MIN {
        pool.threads()
    } else {
        1
    };
    // Taller blocks only past the pool's task limit (millions of rows).
    let mut mc = MC.max(rows.div_ceil(pool::MAX_TASKS).next_multiple_of(MR));
    if kind == Kind::Forward && panels <= FEW_PANELS {
        // A forward over a few tokens: its rows are the frozen weight's, read from memory, and
        // tasks that split its few columns would each read the same rows again. Shorter row
        // blocks give the tasks instead.
        mc = mc.min(rows.div_ceil(threads * 4).next_multiple_of(MR).max(2 * MR));
    }
    let row_blocks = rows.div_ceil(mc);
    // Tasks: a block of rows by a group of panels, about four tasks a thread, so a thread that
    // another process holds up leaves its share to the others.
    let groups = (threads * 4).div_ceil(row_blocks).clamp(1, panels);
    let per_group = panels.div_ceil(groups);
    let groups = panels.div_ceil(per_group);
    let task = move |t: usize, _thread: usize| {
        let (rb, pg) = (t / groups, t % groups);
        let (r0, r1) = (rb * mc, ((rb + 1) * mc).min(rows));
        let (p0, p1) = (pg * per_group, ((pg + 1) * per_group).min(panels));
        for k0 in (0..depth).step_by(kc_block) {
            let kc = kc_block.min(depth - k0);
            for p in p0..p1 {
                let b = right(p);
                // Safety: in bounds by `right`'s contract.
                let b = Right {
                    ptr: unsafe { b.ptr.add(k0 * b.ks) },
                    ks: b.ks,
                };
                let nr = NR.min(cols - p * NR);
                for i in (r0..r1).step_by(MR) {
                    let mr = MR.min(r1 - i);
                    // Safety: the tile lies inside A and C; rows past `mr` are not read.
                    let first = k0 == 0 && !accumulate;
                    unsafe { tile(a.at(i, k0), b, c.at(i, p * NR), kc, mr, nr, first) }
                }
            }
        }
    };
    let tasks = row_blocks * groups;
    if threads == 1 {
        (0..tasks).for_each(|t| task(t, 0));
    } else {
        pool.run(tasks, &task);
    }
}

/// One `mr x nr` tile (at most 6 x 16) over `kc` steps; `first` overwrites C, else adds to it.
///
/// # Safety
/// A holds `mr` rows of `kc` steps, B `kc` steps of 16 values, C the `mr x nr` tile.
unsafe fn tile(a: Left, b: Right, c: Out, kc: usize, mr: usize, nr: usize, first: bool) {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // Safety: the CPU has AVX2 and FMA; bounds as documented.
        unsafe { avx2::tile(a, b, c, kc, mr, nr, first) };
        return;
    }
    // Safety: as documented.
    unsafe { portable_tile(a, b, c, kc, mr, nr, first) }
}

/// # Safety
/// As for [`tile`].
unsafe fn portable_tile(a: Left, b: Right, c: Out, kc: usize, mr: usize, nr: usize, first: bool) {
    let mut acc = [[0f32; NR]; MR];
    for kk in 0..kc {
        for (i, row) in acc.iter_mut().enumerate().take(mr) {
            // Safety: as documented.
            let av = unsafe { *a.ptr.add(i * a.rs + kk) };
            for (j, v) in row.iter_mut().enumerate().take(nr) {
                *v = av.mul_add(unsafe { *b.ptr.add(kk * b.ks + j) }, *v);
            }
        }
    }
    // Safety: as documented.
    unsafe { store(&acc, c, mr, nr, first) }
}

/// Writes (or adds) the `mr x nr` corner of `acc` to C.
///
/// # Safety
/// C holds the `mr x nr` tile.
unsafe fn store(acc: &[[f32; NR]; MR], c: Out, mr: usize, nr: usize, first: bool) {
    // Raw pointers, no references: when `first`, C may not have been initialised yet.
    if c.rs == 1 {
        // The forward's transposed tile: each column is a run of `mr` floats in memory.
        for j in 0..nr {
            for (i, row) in acc.iter().enumerate().take(mr) {
                // Safety: the column's run is in C.
                unsafe {
                    let p = c.ptr.add(j * c.cs + i);
                    *p = if first { row[j] } else { *p + row[j] };
                }
            }
        }
        return;
    }
    for (i, row) in acc.iter().enumerate().take(mr) {
        for (j, &v) in row.iter().enumerate().take(nr) {
            // Safety: the element is in C.
            unsafe {
                let p = c.ptr.add(i * c.rs + j * c.cs);
                *p = if first { v } else { *p + v };
            }
        }
    }
}

/// `$f::<R>(args)` with the loop's row count `R` set to `$mr` (1 to [`MR`]), so that each count
/// gets a loop with only its own sums in registers.
#[cfg(target_arch = "x86_64")]
macro_rules! by_rows {
    ($mr:expr, $f:ident($($arg:expr),*)) => {
        match $mr {
            1 => $f::<1>($($arg),*),
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            4 => $f::<4>($($arg),*),
            5 => $f::<5>($($arg),*),
            _ => $f::<MR>($($arg),*),
        }
    };
}

/// Whether this CPU has AVX2 and FMA (looked up once).
#[cfg(target_arch = "x86_64")]
pub(super) fn has_fma() -> bool {
    use std::sync::OnceLock;
    static YES: OnceLock<bool> = OnceLock::new();
    *YES.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// Whether this CPU also has AVX-512 (looked up once; only ever asked after [`has_fma`]).
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    use std::sync::OnceLock;
    static YES: OnceLock<bool> = OnceLock::new();
    *YES.get_or_init(|| is_x86_feature_detected!("avx512f"))
}

/// Which micro-kernel runs here.
pub fn kernel_name() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        return if has_avx512() { "avx512" } else { "avx2" };
    }
    "portable"
}

/// The inner loop in 16-lane registers: a step of the sum is one load of B and six
/// multiply-adds that take their row's value of A straight from memory, half the instructions
/// of the AVX2 loop for the same arithmetic. On this machine's Zen 4 cores (which split each
/// 16-lane operation in two) it still ran ~18% faster in L1 (114 against 96 GFLOP/s a thread),
/// presumably from issuing half the instructions. Each output is the same chain of FMAs in the
/// same order as in the AVX2 loop: bit-identical sums.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Right, MR, NR};
    use std::arch::x86_64::*;

    /// [`sums`] for the tile's `mr` rows only: a tile of a few tokens no longer computes six.
    ///
    /// # Safety
    /// As for [`sums`]; `1 <= mr <= MR`.
    pub(super) unsafe fn sums_of(
        rows: [*const f32; MR],
        b: Right,
        kc: usize,
        out: &mut [[f32; NR]; MR],
        mr: usize,
    ) {
        // Safety: as documented; the CPU has AVX-512F (checked by the caller).
        unsafe { by_rows!(mr, sums(rows, b, kc, out)) }
    }

    /// # Safety
    /// As for the AVX2 `sums`, on a CPU with AVX-512F; only the first `R` rows are read and
    /// written.
    #[target_feature(enable = "avx512f")]
    #[inline(never)]
    unsafe fn sums<const R: usize>(
        rows: [*const f32; MR],
        b: Right,
        kc: usize,
        out: &mut [[f32; NR]; MR],
    ) {
        let mut c = [_mm512_setzero_ps(); R];
        let mut bp = b.ptr;
        for kk in 0..kc {
            // Safety: as documented.
            unsafe {
                let bv = _mm512_loadu_ps(bp);
                for (sum, row) in c.iter_mut().zip(rows) {
                    *sum = _mm512_fmadd_ps(_mm512_set1_ps(*row.add(kk)), bv, *sum);
                }
                bp = bp.add(b.ks);
            }
        }
        for (row, v) in out.iter_mut().zip(c) {
            // Safety: a row of `out` holds 16 floats.
            unsafe { _mm512_storeu_ps(row.as_mut_ptr(), v) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// # Safety
    /// As for [`super::tile`], on a CPU with AVX2 and FMA. B's 16 values of a step are read in
    /// full even when `nr < 16`; the callers make them readable.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile(a: Left, b: Right, c: Out, kc: usize, mr: usize, nr: usize, first: bool) {
        // Rows past `mr` read row 0 again (their sums are dropped): no branch in the loop.
        let rows: [*const f32; MR] =
            std::array::from_fn(|i| unsafe { a.ptr.add(if i < mr { i * a.rs } else { 0 }) });
        let mut buf = [[0f32; NR]; MR];
        // Safety: as documented; `has_avx512` checked the CPU.
        unsafe {
            if nr <= NR / 2 {
                half_sums_of(rows, b, kc, &mut buf, mr)
            } else if has_avx512() {
                avx512::sums_of(rows, b, kc, &mut buf, mr)
            } else {
                sums(rows, b, kc, &mut buf)
            }
        };
        if c.cs == 1 && nr == NR {
            for (i, row) in buf.iter().enumerate().take(mr) {
                // Safety: the tile's row is in C.
                unsafe {
                    let p = c.ptr.add(i * c.rs);
                    let mut v0 = _mm256_loadu_ps(row.as_ptr());
                    let mut v1 = _mm256_loadu_ps(row.as_ptr().add(8));
                    if !first {
                        v0 = _mm256_add_ps(_mm256_loadu_ps(p), v0);
                        v1 = _mm256_add_ps(_mm256_loadu_ps(p.add(8)), v1);
                    }
                    _mm256_storeu_ps(p, v0);
                    _mm256_storeu_ps(p.add(8), v1);
                }
            }
            return;
        }
        // Safety: as documented.
        unsafe { store(&buf, c, mr, nr, first) }
    }

    /// [`half_sums`] for `mr` rows.
    ///
    /// # Safety
    /// As for [`half_sums`]; `1 <= mr <= MR`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn half_sums_of(
        rows: [*const f32; MR],
        b: Right,
        kc: usize,
        out: &mut [[f32; NR]; MR],
        mr: usize,
    ) {
        // Safety: as documented.
        unsafe { by_rows!(mr, half_sums(rows, b, kc, out)) }
    }

    /// A tile at most 8 columns wide (a forward over at most 8 tokens, or the last few tokens
    /// of a longer one) in 8-lane registers: half the work of 16 lanes on cores that split a
    /// 16-lane operation in two, and the same chain of multiply-adds for each output.
    ///
    /// # Safety
    /// Each of the first `R` rows holds `kc` floats; B holds `kc` steps of 8 floats, `b.ks`
    /// apart. Only the first 8 values of `out`'s first `R` rows are written.
    #[target_feature(enable = "avx2,fma")]
    #[inline(never)]
    unsafe fn half_sums<const R: usize>(
        rows: [*const f32; MR],
        b: Right,
        kc: usize,
        out: &mut [[f32; NR]; MR],
    ) {
        let mut c = [_mm256_setzero_ps(); R];
        let mut bp = b.ptr;
        for kk in 0..kc {
            // Safety: as documented.
            unsafe {
                let bv = _mm256_loadu_ps(bp);
                for (sum, row) in c.iter_mut().zip(rows) {
                    *sum = _mm256_fmadd_ps(_mm256_broadcast_ss(&*row.add(kk)), bv, *sum);
                }
                bp = bp.add(b.ks);
            }
        }
        for (row, v) in out.iter_mut().zip(c) {
            // Safety: a row of `out` holds 16 floats.
            unsafe { _mm256_storeu_ps(row.as_mut_ptr(), v) };
        }
    }

    /// The inner loop alone, kept out of line so that nothing around it can make the compiler
    /// spill one of its sixteen registers (twelve sums, two of B, a broadcast): that once cost
    /// a third of a training step.
    ///
    /// # Safety
    /// Each row holds `kc` floats; B holds `kc` steps of 16 floats, `b.ks` apart.
    #[target_feature(enable = "avx2,fma")]
    #[inline(never)]
    pub(super) unsafe fn sums(
        rows: [*const f32; MR],
        b: Right,
        kc: usize,
        out: &mut [[f32; NR]; MR],
    ) {
        let [r0, r1, r2, r3, r4, r5] = rows;
        let z = _mm256_setzero_ps();
        let (mut c00, mut c01, mut c10, mut c11, mut c20, mut c21) = (z, z, z, z, z, z);
        let (mut c30, mut c31, mut c40, mut c41, mut c50, mut c51) = (z, z, z, z, z, z);
        let mut bp = b.ptr;
        for kk in 0..kc {
            // Safety: as documented.
            unsafe {
                let b0 = _mm256_loadu_ps(bp);
                let b1 = _mm256_loadu_ps(bp.add(8));
                // One row of A: broadcast its value at `kk`, add it times B to the row's sums.
                macro_rules! row {
                    ($r:ident, $c0:ident, $c1:ident) => {
                        let a = _mm256_broadcast_ss(&*$r.add(kk));
                        $c0 = _mm256_fmadd_ps(a, b0, $c0);
                        $c1 = _mm256_fmadd_ps(a, b1, $c1);
                    };
                }
                row!(r0, c00, c01);
                row!(r1, c10, c11);
                row!(r2, c20, c21);
                row!(r3, c30, c31);
                row!(r4, c40, c41);
                row!(r5, c50, c51);
                bp = bp.add(b.ks);
            }
        }
        let sums = [
            [c00, c01],
            [c10, c11],
            [c20, c21],
            [c30, c31],
            [c40, c41],
            [c50, c51],
        ];
        for (row, [v0, v1]) in out.iter_mut().zip(sums) {
            // Safety: a row of `out` holds 16 floats.
            unsafe {
                _mm256_storeu_ps(row.as_mut_ptr(), v0);
                _mm256_storeu_ps(row.as_mut_ptr().add(8), v1);
            }
        }
    }
}

/// A thread's reusable buffer of f32s.
pub(super) type Scratch = std::thread::LocalKey<std::cell::RefCell<Vec<f32>>>;

/// Scratch for packed activations, one per thread, so a training step allocates it once.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    scratch(&SCRATCH, len, f)
}

/// `len` values of this thread's `key` buffer (grown, never shrunk, holding whatever the last
/// user left), for `f`. Each user has its own key: a product inside `f` takes this module's.
pub(super) fn scratch<R>(key: &'static Scratch, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    key.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < len {
            s.resize(len, 0.0);
        }
        f(&mut s[..len])
    })
}

/// `y (m, n) = x (m, k) wᵀ` for a frozen `w (n, k)`; `y` is overwritten.
pub fn forward(x: &[f32], w: &[f32], m: usize, n: usize, k: usize, y: &mut [f32]) {
    assert!(y.len() >= m * n);
    // Safety: `y` holds `m x n` values.
    unsafe { forward_raw(x, w, m, n, k, y.as_mut_ptr(), false) }
}

/// `y (m, n) += x (m, k) wᵀ`.
pub fn forward_add(x: &[f32], w: &[f32], m: usize, n: usize, k: usize, y: &mut [f32]) {
    assert!(y.len() >= m * n);
    // Safety: `y` holds `m x n` values.
    unsafe { forward_raw(x, w, m, n, k, y.as_mut_ptr(), true) }
}

/// [`forward`] into a new vector, never zeroed: the product writes every value (zeroing a
/// step's outputs first was a few percent of it, on one thread while the other waited).
pub fn forward_new(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut y = Vec::with_capacity(m * n);
    // Safety: the spare capacity holds `m x n` values, and the product writes every one of
    // them before `set_len` (`k == 0` writes zeros).
    unsafe {
        forward_raw(x, w, m, n, k, y.as_mut_ptr(), false);
        y.set_len(m * n);
    }
    y
}

/// # Safety
/// `y` points to `m x n` writable values, initialised unless `accumulate` is false.
unsafe fn forward_raw(
    x: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
    y: *mut f32,
    accumulate: bool,
) {
    assert!(x.len() >= m * k && w.len() >= n * k);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            // Safety: as documented.
            unsafe { std::ptr::write_bytes(y, 0, m * n) };
        }
        return;
    }
    let panels = m.div_ceil(NR);
    with_scratch(panels * NR * k, |packed| {
        // xᵀ in panels of 16 tokens: panel p holds, for each kk, tokens 16p..16p+16 (zeros past m).
        let pack = |p: usize, dst: &mut [f32]| {
            for j in 0..NR {
                let t = p * NR + j;
                if t < m {
                    for (kk, &v) in x[t * k..(t + 1) * k].iter().enumerate() {
                        dst[kk * NR + j] = v;
                    }
                } else {
                    (0..k).for_each(|kk| dst[kk * NR + j] = 0.0);
                }
            }
        };
        if panels > 1 && m * k >= PACK_PARALLEL_MIN {
            // Packing a training step's activations on one thread left the other idle for
            // a few percent of the step.
            let parts: Vec<std::sync::Mutex<&mut [f32]>> = packed
                .chunks_exact_mut(k * NR)
                .map(std::sync::Mutex::new)
                .collect();
            pool::global().run(parts.len(), &|p, _| {
                pack(p, &mut parts[p].lock().unwrap_or_else(|e| e.into_inner()))
            });
        } else {
            for (p, dst) in packed.chunks_exact_mut(k * NR).enumerate() {
                pack(p, dst);
            }
        }
        let packed = &*packed;
        let right = |p: usize| Right {
            ptr: packed[p * k * NR..].as_ptr(),
            ks: NR,
        };
        let left = Left {
            ptr: w.as_ptr(),
            rs: k,
        };
        // yᵀ, written in place: tile rows are output features, its columns tokens.
        let out = Out {
            ptr: y,
            rs: 1,
            cs: n,
        };
        product(
            pool::global(),
            n,
            m,
            k,
            left,
            &right,
            out,
            Kind::Forward,
            accumulate,
        );
    })
}

/// `dx (m, k) = dy (m, n) w` for a frozen `w (n, k)`; `dx` is overwritten.
pub fn backward(dy: &[f32], w: &[f32], m: usize, n: usize, k: usize, dx: &mut [f32]) {
    backward_whole(dy, w, m, n, k, dx, false)
}

/// `dx (m, k) += dy (m, n) w`.
pub fn backward_add(dy: &[f32], w: &[f32], m: usize, n: usize, k: usize, dx: &mut [f32]) {
    backward_whole(dy, w, m, n, k, dx, true)
}

fn backward_whole(
    dy: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
    dx: &mut [f32],
    accumulate: bool,
) {
    let whole = Strided::whole(dy, w, n, k);
    // Safety: a live slice.
    unsafe { backward_on(pool::global(), whole, m, n, k, Dest::of(dx), k, accumulate) }
}

/// [`backward`] into a new vector, never zeroed (as [`forward_new`]).
pub fn backward_new(dy: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let whole = Strided::whole(dy, w, n, k);
    let mut dx = Vec::with_capacity(m * k);
    let c = Dest {
        ptr: dx.as_mut_ptr(),
        len: m * k,
    };
    // Safety: the spare capacity holds `m x k` values; the product writes every one of them
    // (`n == 0` writes zeros) before `set_len`.
    unsafe {
        backward_on(pool::global(), whole, m, n, k, c, k, false);
        dx.set_len(m * k);
    }
    dx
}

/// Where a product writes: `len` values from `ptr`.
#[derive(Clone, Copy)]
struct Dest {
    ptr: *mut f32,
    len: usize,
}

impl Dest {
    fn of(values: &mut [f32]) -> Dest {
        Dest {
            ptr: values.as_mut_ptr(),
            len: values.len(),
        }
    }
}

/// [`backward`] on the calling thread alone, for a task of the kernel pool that shares out
/// several products itself.
pub fn backward_here(dy: &[f32], w: &[f32], m: usize, n: usize, k: usize, dx: &mut [f32]) {
    backward_here_strided(dy, w, k, m, n, k, dx)
}

/// [`backward_here`] with `w`'s rows `ldw >= k` values apart: the first `k` columns of a wider
/// matrix (a head's transposed keys, of which a block of early queries sees the first few).
pub fn backward_here_strided(
    dy: &[f32],
    w: &[f32],
    ldw: usize,
    m: usize,
    n: usize,
    k: usize,
    dx: &mut [f32],
) {
    let operands = Strided {
        a: dy,
        lda: n,
        b: w,
        ldb: ldw,
    };
    product_here(operands, m, n, k, dx, k, false)
}

/// Two operands read in place, each a block of a wider matrix: `a`'s rows `lda` values apart,
/// `b`'s `ldb`.
#[derive(Clone, Copy)]
pub struct Strided<'a> {
    pub a: &'a [f32],
    pub lda: usize,
    pub b: &'a [f32],
    pub ldb: usize,
}

impl<'a> Strided<'a> {
    /// `a (m, n)` and `b (n, k)` whole, row after row.
    fn whole(a: &'a [f32], b: &'a [f32], n: usize, k: usize) -> Strided<'a> {
        Strided {
            a,
            lda: n,
            b,
            ldb: k,
        }
    }
}

/// `c (m, k) = a (m, n) b (n, k)`, or `c += a b` when `accumulate`, on the calling thread, `c`'s
/// rows `ldc` values apart: blocks of wider matrices, where a causal mask leaves the rest zero.
pub fn product_here(
    operands: Strided<'_>,
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    static HERE: std::sync::OnceLock<Pool> = std::sync::OnceLock::new();
    let pool = HERE.get_or_init(|| Pool::new(1));
    // Safety: a live slice.
    unsafe { backward_on(pool, operands, m, n, k, Dest::of(c), ldc, accumulate) }
}

/// # Safety
/// `c` points to `c.len` writable values, initialised unless `accumulate` is false.
#[allow(clippy::too_many_arguments)]
unsafe fn backward_on(
    pool: &Pool,
    Strided { a, lda, b, ldb }: Strided<'_>,
    m: usize,
    n: usize,
    k: usize,
    c: Dest,
    ldc: usize,
    accumulate: bool,
) {
    let within = |len: usize, rows: usize, ld: usize, cols: usize| {
        ld >= cols && (rows == 0 || cols == 0 || len >= (rows - 1) * ld + cols)
    };
    assert!(within(a.len(), m, lda, n) && within(b.len(), n, ldb, k) && within(c.len, m, ldc, k));
    if m == 0 || k == 0 {
        return;
    }
    if n == 0 {
        if !accumulate {
            for row in 0..m {
                // Safety: the row's first `k` values are in C.
                unsafe { std::ptr::write_bytes(c.ptr.add(row * ldc), 0, k) };
            }
        }
        return;
    }
    let left = Left {
        ptr: a.as_ptr(),
        rs: lda,
    };
    let whole = k / NR;
    if whole > 0 {
        // Columns in whole panels read b's rows in place.
        let right = |p: usize| Right {
            ptr: b[p * NR..].as_ptr(),
            ks: ldb,
        };
        let out = Out {
            ptr: c.ptr,
            rs: ldc,
            cs: 1,
        };
        product(
            pool,
            m,
            whole * NR,
            n,
            left,
            &right,
            out,
            Kind::Backward,
            accumulate,
        );
    }
    let rest = k - whole * NR;
    if rest > 0 {
        // The last columns from a zero-padded copy, so 16-wide loads stay in bounds.
        with_scratch(n * NR, |pad| {
            for (o, row) in pad.chunks_exact_mut(NR).enumerate() {
                row[..rest].copy_from_slice(&b[o * ldb + whole * NR..o * ldb + k]);
                row[rest..].fill(0.0);
            }
            let pad = &*pad;
            let right = |_: usize| Right {
                ptr: pad.as_ptr(),
                ks: NR,
            };
            let out = Out {
                // Safety: column whole*NR of row 0 is inside C (rest > 0).
                ptr: unsafe { c.ptr.add(whole * NR) },
                rs: ldc,
                cs: 1,
            };
            product(
                pool,
                m,
                rest,
                n,
                left,
                &right,
                out,
                Kind::Backward,
                accumulate,
            );
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rng::SplitMix64;

    fn random(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.next_f64() as f32 - 0.5).collect()
    }

    /// Random `x (m, k)`, `w (n, k)` and `dy (m, n)`.
    fn operands(rng: &mut SplitMix64, m: usize, n: usize, k: usize) -> [Vec<f32>; 3] {
        [random(rng, m * k), random(rng, n * k), random(rng, m * n)]
    }

    /// Each `got[row * cols + col]` (row-major, `cols` wide) is the f64 sum over `i < depth`
    /// of `term(row, col, i)`, to within 1e-4.
    fn assert_sums(
        got: &[f32],
        cols: usize,
        depth: usize,
        term: impl Fn(usize, usize, usize) -> f64,
        what: &str,
    ) {
        for (at, &g) in got.iter().enumerate() {
            let (row, col) = (at / cols, at % cols);
            let want: f64 = (0..depth).map(|i| term(row, col, i)).sum();
            let rows = got.len() / cols;
            assert!(
                (g as f64 - want).abs() < 1e-4,
                "{what} {rows}x{cols}x{depth} ({row},{col})"
            );
        }
    }

    #[test]
    fn products_match_f64_sums_at_awkward_shapes() {
        let mut rng = SplitMix64::new(5);
        for &(m, n, k) in &[
            (1, 1, 1),
            (7, 13, 5),
            (17, 6, 300),
            (33, 50, 16),
            (100, 96, 576),
            (5, 200, 530),
            (48, 1000, 64),
            // Past the forward's block of the sum.
            (20, 35, 1600),
            // A few tokens on both threads: the forward's rows shared out in short blocks.
            (40, 300, 200),
            // Empty sums: zeros, written.
            (3, 4, 0),
            (3, 0, 4),
        ] {
            let [x, w, dy] = operands(&mut rng, m, n, k);
            let mut y = vec![f32::NAN; m * n];
            forward(&x, &w, m, n, k, &mut y);
            assert_sums(
                &y,
                n,
                k,
                |t, o, kk| x[t * k + kk] as f64 * w[o * k + kk] as f64,
                "forward",
            );
            let mut dx = vec![f32::NAN; m * k];
            backward(&dy, &w, m, n, k, &mut dx);
            assert_sums(
                &dx,
                k,
                n,
                |t, kk, o| dy[t * n + o] as f64 * w[o * k + kk] as f64,
                "backward",
            );
            // Into new vectors: the same values; added to ones: the sums plus them.
            assert_eq!(forward_new(&x, &w, m, n, k), y);
            assert_eq!(backward_new(&dy, &w, m, n, k), dx);
            let ones = |len| vec![1f32; len];
            let (mut y1, mut dx1) = (ones(m * n), ones(m * k));
            forward_add(&x, &w, m, n, k, &mut y1);
            backward_add(&dy, &w, m, n, k, &mut dx1);
            for (got, want) in y1.iter().zip(&y).chain(dx1.iter().zip(&dx)) {
                assert!((got - (want + 1.0)).abs() < 1e-4, "{m}x{n}x{k}");
            }
        }
    }

    #[test]
    fn strided_blocks_are_multiplied_in_place_and_accumulated_on_request() {
        let mut rng = SplitMix64::new(8);
        // Blocks of wider matrices; k past whole panels and not, n past the block of the sum.
        for &(m, n, k) in &[(1, 1, 1), (7, 13, 5), (64, 300, 48), (10, 40, 37)] {
            let (lda, ldb, ldc) = (n + 3, k + 11, k + 5);
            let a = random(&mut rng, m * lda);
            let b = random(&mut rng, n * ldb);
            let before = random(&mut rng, m * ldc);
            let operands = Strided {
                a: &a,
                lda,
                b: &b,
                ldb,
            };
            let term = |row: usize, col: usize, i: usize| {
                a[row * lda + i] as f64 * b[i * ldb + col] as f64
            };
            for accumulate in [false, true] {
                let mut c = before.clone();
                product_here(operands, m, n, k, &mut c, ldc, accumulate);
                let block: Vec<f32> = c.chunks(ldc).flat_map(|row| row[..k].to_vec()).collect();
                assert_sums(
                    &block,
                    k,
                    n + 1,
                    |row, col, i| match i {
                        i if i < n => term(row, col, i),
                        _ if accumulate => before[row * ldc + col] as f64,
                        _ => 0.0,
                    },
                    "strided",
                );
                // Past each row's k columns, nothing is touched.
                for (row, (got, was)) in c.chunks(ldc).zip(before.chunks(ldc)).enumerate() {
                    assert_eq!(got[k..], was[k..], "row {row}");
                }
            }
        }
    }

    #[test]
    fn the_portable_tile_agrees_with_the_simd_one() {
        let mut rng = SplitMix64::new(6);
        let (mr, kc) = (5, 37);
        let a = random(&mut rng, MR * kc);
        let b = random(&mut rng, kc * NR);
        let left = Left {
            ptr: a.as_ptr(),
            rs: kc,
        };
        let right = Right {
            ptr: b.as_ptr(),
            ks: NR,
        };
        for (nr, cs) in [(16, 1), (9, 1), (8, 1), (3, 1), (16, MR), (5, MR)] {
            for first in [true, false] {
                let mut c1 = vec![1f32; MR * NR];
                let mut c2 = c1.clone();
                let rs = if cs == 1 { NR } else { 1 };
                // Safety: both buffers hold the tile at these strides.
                unsafe {
                    let o1 = Out {
                        ptr: c1.as_mut_ptr(),
                        rs,
                        cs,
                    };
                    let o2 = Out {
                        ptr: c2.as_mut_ptr(),
                        rs,
                        cs,
                    };
                    tile(left, right, o1, kc, mr, nr, first);
                    portable_tile(left, right, o2, kc, mr, nr, first);
                }
                for (x, y) in c1.iter().zip(&c2) {
                    assert!((x - y).abs() < 1e-5, "nr {nr} cs {cs} first {first}");
                }
            }
        }
    }

    /// Both SIMD loops give the same bits (same FMAs in the same order), with A's rows and B's
    /// steps strided as the forward and the backward read them. A CPU without AVX-512 has one
    /// loop only, and says so.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx512_loop_gives_the_avx2_loops_bits() {
        if !(has_fma() && has_avx512()) {
            eprintln!("no AVX-512 here: one SIMD loop only, nothing to compare");
            return;
        }
        let mut rng = SplitMix64::new(9);
        for (kc, rs, ks) in [(1, 1, NR), (37, 40, NR), (256, 300, 576)] {
            let a = random(&mut rng, MR * rs + kc);
            let b = random(&mut rng, kc * ks + NR);
            let rows: [*const f32; MR] = std::array::from_fn(|i| a[i * rs..].as_ptr());
            let right = Right {
                ptr: b.as_ptr(),
                ks,
            };
            let mut x = [[0f32; NR]; MR];
            // Safety: the CPU has AVX2; each row holds `kc` floats and B `kc` steps `ks` apart.
            unsafe { avx2::sums(rows, right, kc, &mut x) };
            let bits = |t: &[[f32; NR]]| t.concat().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            for mr in 1..=MR {
                let mut y = [[1f32; NR]; MR];
                // Safety: as above, and the CPU has AVX-512F.
                unsafe { avx512::sums_of(rows, right, kc, &mut y, mr) };
                assert_eq!(bits(&x[..mr]), bits(&y[..mr]), "kc {kc}, {mr} rows");
                let mut h = [[1f32; NR]; MR];
                // Safety: as above.
                unsafe { avx2::half_sums_of(rows, right, kc, &mut h, mr) };
                let half = |t: &[[f32; NR]]| -> Vec<u32> {
                    t.iter()
                        .flat_map(|r| r[..8].iter().map(|v| v.to_bits()))
                        .collect()
                };
                assert_eq!(
                    half(&x[..mr]),
                    half(&h[..mr]),
                    "kc {kc}, {mr} rows, 8 lanes"
                );
            }
        }
    }

    /// Throughput at a training step's shapes; `cargo test --release --lib gemm_speed --
    /// --ignored --nocapture`. A measurement, not a check.
    #[test]
    #[ignore]
    fn gemm_speed() {
        let mut rng = SplitMix64::new(7);
        let shapes = [
            // SEAL's self-edit lines: most are a few tokens to a few dozen.
            (2, 1536, 576),
            (9, 576, 1536),
            (32, 576, 576),
            (32, 576, 1536),
            (256, 1536, 576),
            (256, 576, 1536),
            (48, 1536, 576),
            (256, 49152, 576),
        ];
        for (m, n, k) in shapes {
            let [x, w, dy] = operands(&mut rng, m, n, k);
            let (mut y, mut dx) = (vec![0f32; m * n], vec![0f32; m * k]);
            let flops = 2.0 * (m * n * k) as f64;
            let time = |f: &mut dyn FnMut()| {
                f();
                let t = std::time::Instant::now();
                let reps = 10;
                (0..reps).for_each(|_| f());
                flops * reps as f64 / t.elapsed().as_secs_f64() / 1e9
            };
            let fwd = time(&mut || forward(&x, &w, m, n, k, &mut y));
            let bwd = time(&mut || backward(&dy, &w, m, n, k, &mut dx));
            eprintln!("{m}x{n}x{k}: forward {fwd:.1} GFLOP/s, backward {bwd:.1} GFLOP/s");
            // The same products with a different weight each time, as a step's layers come
            // one after another: the weights stream from memory instead of sitting in cache.
            let layers = (400_000_000 / (4 * n * k)).clamp(2, 30);
            let ws: Vec<Vec<f32>> = (0..layers).map(|_| random(&mut rng, n * k)).collect();
            let mut at = 0;
            let fwd = time(&mut || {
                at = (at + 1) % layers;
                forward(&x, &ws[at], m, n, k, &mut y)
            });
            let bwd = time(&mut || {
                at = (at + 1) % layers;
                backward(&dy, &ws[at], m, n, k, &mut dx)
            });
            eprintln!(
                "  {layers} weights in turn: forward {fwd:.1} GFLOP/s, backward {bwd:.1} GFLOP/s"
            );
        }
    }
}
