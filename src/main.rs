//! The `seal-tui` command line.

#[macro_use]
mod cli;

use clap::Parser;

/// candle allocates a fresh buffer for every tensor; with glibc's allocator each large one is a
/// new mapping whose pages fault in and are zeroed by the kernel. mimalloc keeps freed memory
/// for reuse, which made a LoRA training step markedly faster on CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    default_sigpipe();
    keep_freed_memory();
    let args = cli::Cli::parse();
    if args.computes() {
        pin_thread_count();
    }
    cli::diag::init(!args.opens_screen());
    if let Err(err) = cli::run(args) {
        tracing::error!("{err:#}");
        errln!("error: {err:#}");
        std::process::exit(1);
    }
}

/// mimalloc's option `purge_delay` (its index in the `mi_option_e` enum of the mimalloc 3.3 that
/// `libmimalloc-sys` 0.1.49 builds; the test below checks the index by its default).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    #[cfg(test)]
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
}

/// By default mimalloc hands freed pages back to the kernel a second after they empty, and a
/// training step's next tensors then fault in fresh pages the kernel must zero: a quarter of a
/// LoRA step's CPU time on a KVM guest (15x more page faults than with no purging). Keeping
/// them makes the process hold its peak until it exits, which is the memory the next step
/// needs anyway. `MIMALLOC_PURGE_DELAY` set by the person is kept.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // Safety: a plain setter of mimalloc's option table; -1 means "never purge".
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

/// Output piped into a program that stops reading (`| head`) ends this one quietly, as it does
/// other command-line tools, instead of a write error at every print.
fn default_sigpipe() {
    // Safety: called first thing in main, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// candle asks for its thread count before every matrix multiply, and without
/// `RAYON_NUM_THREADS` it re-counts the physical cores from /proc each time: a quarter of a
/// short training step went there. Setting the variable once removes that. The count is the
/// cores other work leaves free (`engine::device::cpu_threads`): on a busy machine fewer
/// threads are many times faster. `RAYON_NUM_THREADS` set by the person is kept.
fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let cores = num_cpus::get_physical();
        // A tenth of a second of the machine's own accounting; what is busy now is not ours.
        let busy = seal_tui::engine::device::busy_cores(std::time::Duration::from_millis(100))
            .unwrap_or(0.0);
        let threads = seal_tui::engine::device::cpu_threads(cores, busy);
        // Still single-threaded here (parsing the arguments starts no thread): no other thread
        // can be reading the environment.
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    // candle's own pool spins 25,000 rounds after each of its ops before sleeping, holding a
    // core that our kernel pool's next product needs (two cores here): a thousand keep the
    // short waits between ops and gave back ~15% of a training step's CPU time.
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // Single-threaded still, as above.
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1000");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option's index is version-specific: its default (1000 ms) and its neighbour's (NUMA
    /// nodes 0) pin it, and setting it reads back.
    #[test]
    fn purge_delay_option_is_the_one_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // Safety: plain getters and a setter of mimalloc's option table.
        unsafe {
            assert_eq!(mi_option_get(MI_OPTION_PURGE_DELAY), 1000);
            assert_eq!(mi_option_get(MI_OPTION_PURGE_DELAY + 1), 0);
            keep_freed_memory();
            assert_eq!(mi_option_get(MI_OPTION_PURGE_DELAY), -1);
        }
    }
}
