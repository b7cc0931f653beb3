//! Opening the terminal workbench on a live run or a recorded session.

use super::run::{load_config, ReplayArgs, RunArgs};
use anyhow::{bail, Result};
use clap::Args;
use seal_tui::engine::fetch;
use seal_tui::seal::runner::RunHandle;
use seal_tui::session;
use seal_tui::tui::{self, Feed, TuiOptions};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct ScreenArgs {
    /// Colour theme: dark, light, high-contrast, or a path to a theme file.
    #[arg(long, global = true)]
    pub theme: Option<String>,
    /// A key-binding file (TOML, `[keys]` table) overriding the defaults.
    #[arg(long, global = true)]
    pub keys: Option<PathBuf>,
}

fn options(screen: &ScreenArgs) -> TuiOptions {
    TuiOptions {
        theme: screen.theme.clone(),
        keys: screen.keys.clone(),
        themes_dir: PathBuf::from("themes"),
        no_color: std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
    }
}

/// Reads the theme and key map now, so a bad file is reported before a terminal is needed
/// and before a run (and its session folder) starts.
pub fn check_screen(screen: &ScreenArgs) -> Result<()> {
    tui::check_options(&options(screen))
}

pub fn need_terminal() -> Result<()> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!("the workbench needs a terminal; use --headless to run without one");
    }
    Ok(())
}

/// Checks the screen's files and the run's configuration, then fetches the default model
/// before the screen opens, so its progress is plainly visible.
pub fn prepare(args: &RunArgs, screen: &ScreenArgs) -> Result<()> {
    check_screen(screen)?;
    let cfg = load_config(args.config.as_ref(), args.model.as_ref())?;
    need_terminal()?;
    match &cfg.model.path {
        None if !fetch::default_model_path().exists() => {
            fetch::ensure_default_model(&mut |m| errln!("{m}"))?;
        }
        Some(p) => {
            if let Some(model) = fetch::named_model(p) {
                fetch::ensure_model(model, &mut |m| errln!("{m}"))?;
            }
        }
        None => {}
    }
    Ok(())
}

pub fn live(handle: RunHandle, screen: &ScreenArgs) -> Result<()> {
    need_terminal()?;
    let RunHandle {
        session_dir,
        events,
        commands,
        join,
    } = handle;
    let name = session_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let shown = tui::run(
        Feed::Live {
            events,
            commands,
            session: name,
        },
        options(screen),
    );
    // The loop records what it finishes; wait for it before leaving.
    let outcome = join
        .join()
        .map_err(|_| anyhow::anyhow!("the run thread panicked"))?;
    shown?;
    errln!("session: {}", session_dir.display());
    errln!(
        "continue with `seal-tui resume {0}`, replay with `seal-tui replay {0}`, tables with `seal-tui report {0}`",
        session_dir.display()
    );
    outcome.map_err(|e| e.context("the run stopped"))
}

pub fn replay(args: &ReplayArgs, screen: &ScreenArgs) -> Result<()> {
    check_screen(screen)?;
    super::run::check_speed(args.speed)?;
    let dir = session::resolve(&args.session)?;
    let (_, records, issues) = session::open(&dir)?;
    need_terminal()?;
    for issue in &issues {
        errln!("warning: {issue}");
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tui::run(
        Feed::Replay {
            records,
            session: name,
            speed: args.speed.max(1.0),
        },
        options(screen),
    )
}

/// `report FILE.json --screen`: a continual evaluation's forgetting matrix in the workbench.
pub fn forgetting(args: &super::run::ReportArgs, screen: &ScreenArgs) -> Result<()> {
    check_screen(screen)?;
    let data = super::eval::forgetting_of(std::path::Path::new(&args.session))?;
    need_terminal()?;
    tui::forgetting::show(data, options(screen))
}
