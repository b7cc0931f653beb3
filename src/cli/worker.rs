//! `seal-tui worker JOB`: one inner loop of a session, as a task of a cluster's job array runs
//! it (or a person, by hand, to debug one).

use anyhow::Result;
use clap::Args;
use seal_tui::seal::worker;
use seal_tui::setup;
use seal_tui::text::sanitize_line;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The unit's job file (`SESSION/cluster/units/<unit>/job.json`).
    pub job: PathBuf,
    /// Where to write training progress (default: beside the job, named after the array task).
    #[arg(long)]
    pub progress: Option<PathBuf>,
}

pub fn run(args: &WorkerArgs) -> Result<()> {
    let mut say = |m: &str| errln!("{}", sanitize_line(m));
    let prepare = setup::standard();
    match worker::run(
        &args.job,
        args.progress.as_deref(),
        prepare.as_ref(),
        &mut say,
    )? {
        Some(result) => errln!(
            "{}: done in {:.1} s (load {:.1} s)",
            result.unit,
            result.timing.total_secs,
            result.timing.load_secs
        ),
        None => errln!("nothing to do: the unit has a result"),
    }
    Ok(())
}
