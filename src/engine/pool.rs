//! A small thread pool for the quantized CPU products, made for a machine with few cores that
//! other work shares. (rayon's pool costs a wake-up per product and keeps one thread more than
//! there are cores spinning; a decode step runs ~200 products.)
//!
//! A parallel region is a number of tasks that every thread (the caller included) takes one at
//! a time from a shared counter. Taking tasks dynamically matters more here than anything else:
//! on two cores with a build running beside us, a thread is often descheduled, and with a fixed
//! split the whole region would wait for its half; with a counter the running thread simply
//! takes the rest. Idle threads spin only briefly (a decode step starts a region every few
//! microseconds), then yield, then sleep on a condition variable, so they never hold a core that
//! another thread of ours, or another process, could use. Starting a region allocates nothing.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle thread spins before yielding, and yields before sleeping.
const SPIN: Duration = Duration::from_micros(40);
const YIELD: Duration = Duration::from_micros(400);

/// Most tasks in one region (the task count shares a word with the region number).
pub const MAX_TASKS: usize = 0xFFFF;

type Task<'a> = &'a (dyn Fn(usize, usize) + Sync);

/// What the threads share. `claim` packs the region number (high 32 bits), its task count
/// (16 bits) and the next task index (low 16 bits), so a thread claims a task of the region it
/// saw, or sees that the region has changed, in one compare-and-swap.
struct Shared {
    claim: AtomicU64,
    /// Address of the caller's `Task` reference for the current region; valid while a task of
    /// that region is unfinished (the caller waits for all of them before returning).
    task: AtomicUsize,
    done: AtomicUsize,
    panicked: AtomicBool,
    sleepers: Mutex<usize>,
    wake: Condvar,
}

fn pack(region: u64, tasks: usize, next: usize) -> u64 {
    (region << 32) | ((tasks as u64) << 16) | next as u64
}

impl Shared {
    /// Claims and runs tasks of `region` until none are left; false if the region was over.
    fn work(&self, region: u64, thread: usize) -> bool {
        let mut ran = false;
        loop {
            let cur = self.claim.load(Ordering::Acquire);
            let (r, tasks, next) = (
                cur >> 32,
                (cur >> 16) as usize & 0xFFFF,
                cur as usize & 0xFFFF,
            );
            if r != region || next >= tasks {
                return ran;
            }
            if self
                .claim
                .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            // Safety: a claimed task of this region keeps the caller (and its `Task`) waiting.
            let task: Task = unsafe { *(self.task.load(Ordering::Acquire) as *const Task) };
            // A panicking task must still count as done, or the caller would wait forever; the
            // caller re-raises it.
            if catch_unwind(AssertUnwindSafe(|| task(next, thread))).is_err() {
                self.panicked.store(true, Ordering::Release);
            }
            self.done.fetch_add(1, Ordering::Release);
            ran = true;
        }
    }
}

pub struct Pool {
    shared: Arc<Shared>,
    threads: usize,
    /// One region at a time: callers on different threads take turns.
    region: Mutex<u64>,
}

impl Pool {
    /// A pool that runs regions on `threads` threads in all (the caller and `threads - 1`
    /// workers).
    pub fn new(threads: usize) -> Pool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            claim: AtomicU64::new(0),
            task: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleepers: Mutex::new(0),
            wake: Condvar::new(),
        });
        for i in 1..threads {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("seal-cpu-{i}"))
                .spawn(move || worker(&shared, i))
                .expect("cannot start a CPU kernel thread");
        }
        Pool {
            shared,
            threads,
            region: Mutex::new(0),
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `task(i, thread)` for every `i < tasks` (at most [`MAX_TASKS`]) on the pool's
    /// threads, and returns when all have finished. `thread` (below [`Pool::threads`]) says which
    /// thread runs a task, for per-thread scratch space.
    pub fn run(&self, tasks: usize, task: &(dyn Fn(usize, usize) + Sync)) {
        assert!(tasks <= MAX_TASKS, "too many tasks in one region");
        if tasks == 0 {
            return;
        }
        if tasks == 1 || self.threads == 1 {
            (0..tasks).for_each(|i| task(i, 0));
            return;
        }
        let mut region = self.region.lock().unwrap_or_else(|e| e.into_inner());
        *region += 1;
        let s = &*self.shared;
        let task_ref: Task = task;
        s.task
            .store(&task_ref as *const Task as usize, Ordering::Release);
        s.done.store(0, Ordering::Relaxed);
        s.claim.store(pack(*region, tasks, 0), Ordering::Release);
        {
            let sleepers = s.sleepers.lock().unwrap_or_else(|e| e.into_inner());
            if *sleepers > 0 {
                s.wake.notify_all();
            }
        }
        s.work(*region, 0);
        // Wait for tasks still running on other threads: spin, then yield the core.
        let start = Instant::now();
        while s.done.load(Ordering::Acquire) < tasks {
            if start.elapsed() < SPIN {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        if s.panicked.swap(false, Ordering::AcqRel) {
            panic!("a task of a CPU kernel region panicked");
        }
    }
}

fn worker(s: &Shared, thread: usize) {
    let mut seen = 0u64;
    loop {
        // Spin, then yield, then sleep until a new region appears.
        let start = Instant::now();
        let region = loop {
            let r = s.claim.load(Ordering::Acquire) >> 32;
            if r != seen {
                break r;
            }
            let waited = start.elapsed();
            if waited < SPIN {
                std::hint::spin_loop();
            } else if waited < YIELD {
                std::thread::yield_now();
            } else {
                let mut sleepers = s.sleepers.lock().unwrap_or_else(|e| e.into_inner());
                *sleepers += 1;
                // The caller publishes a region before taking this lock to look for sleepers,
                // so a region published after this check finds us counted and wakes us.
                while s.claim.load(Ordering::Acquire) >> 32 == seen {
                    sleepers = s.wake.wait(sleepers).unwrap_or_else(|e| e.into_inner());
                }
                *sleepers -= 1;
            }
        };
        seen = region;
        s.work(region, thread);
    }
}

/// The process's pool, started on first use, with candle's thread count (`RAYON_NUM_THREADS`,
/// which `main` sets to the cores left free).
pub fn global() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool::new(candle_core::utils::get_num_threads()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_per_region() {
        let pool = Pool::new(3);
        for round in 0..300u64 {
            let hits: Vec<AtomicU64> = (0..37).map(|_| AtomicU64::new(0)).collect();
            pool.run(hits.len(), &|i, thread| {
                assert!(thread < 3);
                hits[i].fetch_add(round + 1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == round + 1));
            if round % 100 == 0 {
                // Let the workers fall asleep, so waking them is tested too.
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    #[test]
    fn regions_from_several_threads_take_turns() {
        let pool = Arc::new(Pool::new(2));
        let total = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (pool, total) = (pool.clone(), total.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        pool.run(10, &|_, _| {
                            total.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(total.load(Ordering::Relaxed), 4 * 50 * 10);
    }

    #[test]
    fn a_panicking_task_reaches_the_caller_and_the_pool_goes_on() {
        let pool = Pool::new(2);
        let hit = std::panic::catch_unwind(AssertUnwindSafe(|| {
            pool.run(8, &|i, _| assert!(i != 5, "task five"));
        }));
        assert!(hit.is_err());
        let count = AtomicU64::new(0);
        pool.run(8, &|_, _| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 8);
    }
}
