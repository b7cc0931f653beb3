//! `seal-tui run`, `resume`, `replay` and `report`: sessions from the command line.

use anyhow::{Context, Result};
use clap::Args;
use seal_tui::record::{Command, RunConfig, RunMode, RunState};
use seal_tui::seal::runner::{self, Launch, RunHandle};
use seal_tui::session;
use seal_tui::setup;
use seal_tui::text::story;
use std::io::BufRead;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run configuration (TOML); default: assets/seal.toml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run without the terminal UI, printing progress lines. Commands (JSON, one per line, e.g.
    /// {"command":"approve","id":"r1 c1 e2"}) may be given on stdin.
    #[arg(long)]
    pub headless: bool,
    /// How the run starts (default: the config's start_mode).
    #[arg(long, value_enum)]
    pub mode: Option<RunMode>,
    /// Use this model instead of the config's.
    #[arg(long)]
    pub model: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ResumeArgs {
    /// A session folder, or its id under the sessions folder.
    pub session: String,
    #[arg(long)]
    pub headless: bool,
    /// How the run continues (default: auto).
    #[arg(long, value_enum)]
    pub mode: Option<RunMode>,
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct ReplayArgs {
    pub session: String,
    /// Playback speed (1 = as recorded; 0 = as fast as possible).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    #[arg(long)]
    pub headless: bool,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A session (folder or id), or a results file written by `seal-tui eval` or `arc eval`.
    pub session: String,
    /// Where to write the CSV files (default: the session's report/ folder; for a results file,
    /// the same name ending in .csv, and for `arc eval`'s also its trials in NAME-trials.csv).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Open a continual evaluation's results file (`eval --continual`) in the workbench: its
    /// forgetting matrix as a heat map to move around in.
    #[arg(long)]
    pub screen: bool,
}

pub fn load_config(path: Option<&PathBuf>, model: Option<&PathBuf>) -> Result<RunConfig> {
    let default = seal_tui::record::config::resolve_path(
        std::path::Path::new("assets/seal.toml"),
        std::path::Path::new("."),
    );
    let path = path.unwrap_or(&default);
    let mut cfg = RunConfig::load(path)?;
    if let Some(m) = model {
        cfg.model.path = Some(std::path::absolute(m).unwrap_or_else(|_| m.clone()));
    }
    // The runner checks all this again; here the message can name the file.
    let invalid = || format!("{}: invalid run configuration", path.display());
    seal_tui::seal::settings::check(&cfg).with_context(invalid)?;
    setup::standard().check(&cfg).with_context(invalid)?;
    Ok(cfg)
}

/// Starts a new run. `watched`: a person is at the screen, so a grader that fails pauses the
/// run for them instead of stopping it.
pub fn start_run(args: &RunArgs, watched: bool) -> Result<RunHandle> {
    let cfg = load_config(args.config.as_ref(), args.model.as_ref())?;
    let root = session::sessions_dir();
    let launch = Launch {
        mode: args.mode,
        pause_on_grading_failure: watched,
    };
    let handle = runner::start(cfg, &root, setup::standard(), launch)?;
    super::diag::to_file(&handle.session_dir.join(session::DIAG_FILE));
    Ok(handle)
}

pub fn resume_run(args: &ResumeArgs, watched: bool) -> Result<RunHandle> {
    let dir = session::resolve(&args.session)?;
    let launch = Launch {
        mode: args.mode,
        pause_on_grading_failure: watched,
    };
    let handle = runner::resume(&dir, setup::standard(), launch)?;
    super::diag::to_file(&handle.session_dir.join(session::DIAG_FILE));
    Ok(handle)
}

/// Prints the story of a live run until it ends; stdin lines are forwarded as commands. A run
/// that fails ends the command with its error (a non-zero exit).
pub fn follow_headless(handle: RunHandle) -> Result<()> {
    let RunHandle {
        session_dir,
        events,
        commands,
        join,
    } = handle;
    errln!("session: {}", session_dir.display());
    // The stdin reader holds the only sender of commands: when stdin closes, the run learns
    // that none can come, and a wait for a decision or a step ends with an error, not forever.
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Command>(&line) {
                Ok(cmd) => {
                    if commands.send(cmd).is_err() {
                        break;
                    }
                }
                Err(e) => errln!("error: not a command, ignored: {line:?}: {e}"),
            }
        }
    });
    let mut state = RunState::default();
    for record in events.iter() {
        state.apply(&record.event);
        if let Some(line) = story::describe(&record) {
            outln!("{line}");
        }
    }
    let outcome = join
        .join()
        .map_err(|_| anyhow::anyhow!("the run thread panicked"))?;
    if !state.finished && session_dir.join(session::HEADER_FILE).exists() {
        errln!(
            "stopped before the end; continue with: seal-tui resume {}",
            session_dir.display()
        );
    }
    outcome
}

pub fn replay_headless(args: &ReplayArgs) -> Result<()> {
    check_speed(args.speed)?;
    let dir = session::resolve(&args.session)?;
    let (_, records, issues) = session::open(&dir)?;
    for issue in &issues {
        errln!("warning: {issue}");
    }
    let mut last = records.first().map(|r| r.t).unwrap_or(0.0);
    for record in &records {
        if args.speed > 0.0 {
            // Long idle gaps are compressed to at most a second of playback.
            let wait = ((record.t - last) / args.speed).clamp(0.0, 1.0);
            std::thread::sleep(std::time::Duration::from_secs_f64(wait));
        }
        last = record.t;
        if let Some(line) = story::describe(record) {
            outln!("{line}");
        }
    }
    Ok(())
}

/// A replay's speed: 0 (as fast as possible) or a positive factor.
pub fn check_speed(speed: f64) -> Result<()> {
    if !(speed.is_finite() && speed >= 0.0) {
        anyhow::bail!("--speed {speed}: must be 0 (as fast as possible) or a positive factor");
    }
    Ok(())
}

pub fn report(args: &ReportArgs) -> Result<()> {
    let path = std::path::Path::new(&args.session);
    if path.is_file() {
        // A results file of `seal-tui eval` or `arc eval`.
        return super::eval::report_file(path, args.out.as_deref());
    }
    let dir = session::resolve(&args.session)?;
    let (_, records, issues) = session::open(&dir)?;
    for issue in &issues {
        errln!("warning: {issue}");
    }
    let state = RunState::from_events(records.iter().map(|r| &r.event));
    outln!("{}", seal_tui::text::report::markdown_report(&state));
    if let Some(cluster) = seal_tui::text::report::cluster_markdown(&records) {
        outln!("{cluster}");
    }
    let out = args.out.clone().unwrap_or_else(|| dir.join("report"));
    for path in seal_tui::text::report::write_csv(&state, &out).context("writing the CSV report")? {
        errln!("wrote {}", path.display());
    }
    Ok(())
}
