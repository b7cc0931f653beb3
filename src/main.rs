//! The `seal-tui` command line.

mod cli;

use clap::Parser;

fn main() {
    pin_thread_count();
    let args = cli::Cli::parse();
    if let Err(err) = cli::run(args) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

/// candle asks for its thread count before every matrix multiply, and without
/// `RAYON_NUM_THREADS` it re-counts the physical cores from /proc each time: a quarter of a
/// short training step went there. Setting the variable once, to the same count, removes that.
fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // Still single-threaded here: no other thread can be reading the environment.
        std::env::set_var(
            "RAYON_NUM_THREADS",
            num_cpus::get_physical().max(1).to_string(),
        );
    }
}
