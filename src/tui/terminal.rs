//! Owns the terminal: raw mode, the alternate screen, mouse clicks and wheel, and bracketed paste on
//! entry, and their undoing on every way out: a normal return, an error, a panic (the hook
//! restores the terminal before the message is printed, so it is readable), and SIGTERM,
//! SIGHUP or SIGINT (a flag the main loop checks each tick).

use anyhow::{Context as _, Result};
use crossterm::event::{DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste};
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::layout::Rect;
use ratatui::{Frame, Terminal};
use std::io::{self, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};

/// Whether the terminal is in our modes now; the panic hook restores only then.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Puts the terminal back as it was. Safe to call more than once.
pub fn restore_terminal() -> io::Result<()> {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return Ok(());
    }
    let raw = disable_raw_mode();
    let screen = execute!(
        io::stdout(),
        DisableBracketedPaste,
        DisableMouseCapture,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
    raw.and(screen)
}

/// Mouse reporting of clicks and the wheel only, in SGR form. crossterm's `EnableMouseCapture`
/// also reports every pointer movement, a stream of events over SSH that nothing here uses.
struct ClicksAndWheel;

impl crossterm::Command for ClicksAndWheel {
    fn write_ansi(&self, f: &mut impl std::fmt::Write) -> std::fmt::Result {
        f.write_str("\x1b[?1000h\x1b[?1006h")
    }
}

fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = restore_terminal();
            previous(info);
        }));
    });
}

pub struct Tui {
    terminal: Terminal<CrosstermBackend<Stdout>>,
    signalled: Arc<AtomicBool>,
    signal_ids: Vec<signal_hook::SigId>,
}

impl Tui {
    pub fn enter() -> Result<Tui> {
        install_panic_hook();
        let signalled = Arc::new(AtomicBool::new(false));
        let mut signal_ids = Vec::new();
        for signal in [
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGHUP,
            signal_hook::consts::SIGINT,
        ] {
            let id = signal_hook::flag::register(signal, Arc::clone(&signalled))
                .with_context(|| format!("cannot watch signal {signal}"))?;
            signal_ids.push(id);
        }
        enable_raw_mode().context("cannot put the terminal in raw mode")?;
        ACTIVE.store(true, Ordering::SeqCst);
        let entered = execute!(
            io::stdout(),
            EnterAlternateScreen,
            ClicksAndWheel,
            EnableBracketedPaste
        );
        let terminal = entered
            .and_then(|_| Terminal::new(CrosstermBackend::new(io::stdout())))
            .inspect_err(|_| {
                let _ = restore_terminal();
            })
            .context("cannot set up the terminal")?;
        Ok(Tui {
            terminal,
            signalled,
            signal_ids,
        })
    }

    /// Whether a termination signal arrived.
    pub fn signalled(&self) -> bool {
        self.signalled.load(Ordering::SeqCst)
    }

    pub fn draw(&mut self, render: impl FnOnce(&mut Frame)) -> Result<()> {
        self.terminal.draw(render).context("cannot draw")?;
        Ok(())
    }

    pub fn area(&self) -> Rect {
        self.terminal
            .size()
            .map(|s| Rect::new(0, 0, s.width, s.height))
            .unwrap_or_default()
    }

    pub fn restore(&mut self) -> Result<()> {
        for id in self.signal_ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
        restore_terminal().context("cannot restore the terminal")
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        let _ = self.restore();
    }
}
