//! The terminal workbench: watches a SEAL run (live, or replayed from its log) and steers it.
//!
//! The screen is a fold over the run's events ([`crate::record::RunState`]) plus UI state
//! ([`app::App`]); [`draw::draw`] is a pure function of that; keys become [`keys::Action`]s
//! (TOML-configurable), and [`app::update`] turns actions into [`crate::record::Command`]s for the
//! loop. The main loop never waits on model work: it drains the event channel without
//! blocking, polls input with a short timeout, and redraws at most ~30 times a second, only
//! when something changed. No model code runs here.

pub mod app;
pub mod bench;
pub mod chrome;
pub mod draw;
pub mod editor;
pub mod forgetting;
pub mod highlight;
pub mod input;
pub mod keys;
pub mod labels;
pub mod layout;
pub mod overlay;
pub mod panes;
pub mod replay;
pub mod terminal;
pub mod theme;
pub mod wrap;

pub use app::{update, App};
pub use bench::{bench_draw, DrawBench};
pub use keys::{Action, KeyMap};
pub use theme::Theme;

use crate::record::{Command, Record};
use anyhow::Result;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::{Duration, Instant};

/// Where the screen's events come from.
pub enum Feed {
    /// A running loop: its events arrive on `events`; commands go back on `commands`.
    Live {
        events: Receiver<Record>,
        commands: Sender<Command>,
        session: String,
    },
    /// A recorded session, played back with its timing.
    Replay {
        records: Vec<Record>,
        session: String,
        /// Starting playback speed (1x to 100x; keys change it).
        speed: f64,
    },
}

#[derive(Clone, Debug, Default)]
pub struct TuiOptions {
    /// Theme name (a file `<themes_dir>/<name>.toml`, or a built-in), or a path to a theme file.
    pub theme: Option<String>,
    /// A keymap file whose `[keys]` entries override the defaults.
    pub keys: Option<PathBuf>,
    pub themes_dir: PathBuf,
    /// Draw without colour (set it when `NO_COLOR` is set).
    pub no_color: bool,
}

/// Time between frames: ~30 fps keeps streaming tokens and loss curves smooth over SSH.
const FRAME: Duration = Duration::from_millis(33);
/// The most time one frame spends folding events, so keys stay responsive under a flood.
const DRAIN_BUDGET: Duration = Duration::from_millis(8);

/// Reads the theme and the key map the options name, reporting a bad file without touching
/// the terminal (so it can be checked before a run starts).
pub fn check_options(options: &TuiOptions) -> Result<()> {
    // Read even when NO_COLOR will leave it unused: a file someone named should be sound.
    Theme::load(options.theme.as_deref(), &options.themes_dir, false)?;
    KeyMap::load(options.keys.as_deref())?;
    Ok(())
}

/// The theme and the key map the options name.
fn load_options(options: &TuiOptions) -> Result<(Theme, KeyMap)> {
    let theme = Theme::load(
        options.theme.as_deref(),
        &options.themes_dir,
        options.no_color,
    )?;
    Ok((theme, KeyMap::load(options.keys.as_deref())?))
}

/// Runs the workbench until the user quits. Theme and keymap errors are returned before the
/// terminal is touched. In live mode, after a quit the function returns once the loop closes
/// its event channel (a second quit, or ctrl-c, leaves at once).
pub fn run(feed: Feed, options: TuiOptions) -> Result<()> {
    let (theme, keymap) = load_options(&options)?;
    let (mut app, live) = match feed {
        Feed::Live {
            events,
            commands,
            session,
        } => (App::live(session, theme, keymap), Some((events, commands))),
        Feed::Replay {
            records,
            session,
            speed,
        } => {
            let mut app = App::replay(session, records, theme, keymap);
            if let Some(r) = app.replay.take() {
                app.replay = Some(r.with_speed(speed));
            }
            (app, None)
        }
    };
    let mut tui = terminal::Tui::enter()?;
    let outcome = main_loop(&mut tui, &mut app, live.as_ref());
    let restored = tui.restore();
    outcome.and(restored)
}

fn send(app: &mut App, commands: Option<&Sender<Command>>, out: Vec<Command>) {
    let Some(tx) = commands else {
        return;
    };
    for command in out {
        if tx.send(command).is_err() {
            app.loop_ended = true;
            app.notice = Some("the loop is not listening any more".into());
            break;
        }
    }
}

/// Folds what the loop sent since the last frame; returns whether anything changed.
fn drain(app: &mut App, events: &Receiver<Record>) -> bool {
    let started = Instant::now();
    let mut changed = false;
    loop {
        match events.try_recv() {
            Ok(record) => {
                app.apply_record(&record);
                changed = true;
                if started.elapsed() > DRAIN_BUDGET {
                    return true;
                }
            }
            Err(TryRecvError::Empty) => return changed,
            Err(TryRecvError::Disconnected) => {
                if !app.loop_ended {
                    app.loop_ended = true;
                    app.notice = Some("the loop has ended; q quits".into());
                    changed = true;
                }
                return changed;
            }
        }
    }
}

fn main_loop(
    tui: &mut terminal::Tui,
    app: &mut App,
    live: Option<&(Receiver<Record>, Sender<Command>)>,
) -> Result<()> {
    let commands = live.map(|(_, tx)| tx);
    let input = spawn_input_reader();
    let mut dirty = true;
    let mut last_draw: Option<Instant> = None;
    let mut last_tick = Instant::now();
    loop {
        if tui.signalled() {
            send(app, commands, vec![Command::Quit]);
            return Ok(());
        }
        match live {
            Some((events, _)) => dirty |= drain(app, events),
            None => {
                let now = Instant::now();
                dirty |= app.tick(now.duration_since(last_tick).as_secs_f64());
                last_tick = now;
            }
        }
        if app.loop_ended && app.quit == app::QuitState::Stopping {
            app.quit = app::QuitState::Exit;
        }
        if app.quit == app::QuitState::Exit {
            return Ok(());
        }
        let since_draw = last_draw.map_or(FRAME, |t| t.elapsed());
        if dirty && since_draw >= FRAME {
            tui.draw(|frame| draw::draw(app, frame))?;
            last_draw = Some(Instant::now());
            dirty = false;
            // A hook for the end-to-end test of terminal restoration after a panic.
            if std::env::var_os("SEAL_TUI_TEST_PANIC").is_some() {
                panic!("test panic requested by SEAL_TUI_TEST_PANIC");
            }
        }
        let wait = if dirty {
            FRAME.saturating_sub(since_draw)
        } else {
            FRAME
        };
        let first = match input.recv_timeout(wait) {
            Ok(event) => Some(event),
            Err(RecvTimeoutError::Timeout) => None,
            // The terminal is gone (a hang-up): nothing more can be shown or typed.
            Err(RecvTimeoutError::Disconnected) => {
                send(app, commands, vec![Command::Quit]);
                return Ok(());
            }
        };
        if let Some(first) = first {
            let screen = tui.area();
            let mut next = Some(first);
            while let Some(event) = next {
                let out = input::handle(app, &event, screen);
                send(app, commands, out);
                dirty |= !matches!(
                    event,
                    crossterm::event::Event::Mouse(crossterm::event::MouseEvent {
                        kind: crossterm::event::MouseEventKind::Moved,
                        ..
                    })
                );
                if app.quit == app::QuitState::Exit {
                    break;
                }
                next = input.try_recv().ok();
            }
        }
    }
}

/// Reads terminal input on its own thread. crossterm's `poll` can spin forever inside itself
/// once the terminal hangs up, which would keep the main loop from ever seeing the hang-up
/// signal; reading here and receiving with a timeout keeps the loop in charge.
fn spawn_input_reader() -> Receiver<crossterm::event::Event> {
    let (tx, rx) = std::sync::mpsc::channel();
    let _ = std::thread::Builder::new()
        .name("seal-input".into())
        .spawn(move || {
            while let Ok(event) = crossterm::event::read() {
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
    rx
}
