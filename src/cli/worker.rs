//! `seal-tui worker JOB...`: inner loops of a session, as a task of a cluster's job array runs
//! them (or a person, by hand, to debug one).

use anyhow::{bail, Result};
use clap::Args;
use seal_tui::seal::worker::Worker;
use seal_tui::setup;
use seal_tui::text::sanitize_line;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The units' job files (`SESSION/cluster/units/<unit>/job.json`), run in this order with
    /// the model loaded once.
    #[arg(required = true)]
    pub jobs: Vec<PathBuf>,
    /// Where to write training progress (default: beside each job, named after the array
    /// task); only with one job.
    #[arg(long)]
    pub progress: Option<PathBuf>,
}

pub fn run(args: &WorkerArgs) -> Result<()> {
    if args.progress.is_some() && args.jobs.len() > 1 {
        bail!("--progress names one file, so it goes with one job only");
    }
    let mut say = |m: &str| errln!("{}", sanitize_line(m));
    let prepare = setup::standard();
    let mut worker = Worker::new(prepare.as_ref());
    let mut failed = 0;
    // A unit that cannot run does not stop the others: the runner retries it on its own.
    for job in &args.jobs {
        match worker.run(job, args.progress.as_deref(), &mut say) {
            Ok(Some(result)) => errln!(
                "{}: done in {:.1} s (load {:.1} s)",
                result.unit,
                result.timing.total_secs,
                result.timing.load_secs
            ),
            Ok(None) => errln!(
                "{}: nothing to do: the unit has a result or is no longer wanted",
                job.display()
            ),
            // One unit alone fails as itself, its error the task's last words.
            Err(e) if args.jobs.len() == 1 => return Err(e),
            Err(e) => {
                failed += 1;
                errln!("{}: {e:#}", job.display());
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} unit(s) failed", args.jobs.len());
    }
    Ok(())
}
