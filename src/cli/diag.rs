//! The diagnostic log (`tracing`): what the program did, for whoever debugs a run. It goes to
//! the session folder's `seal.log` once there is a session, to stderr for commands without one
//! when `SEAL_LOG` asks for it, and never to a terminal the screen owns. `SEAL_LOG` takes the
//! usual filter syntax (`debug`, `seal_tui::seal=trace,info`); the default level is `info`.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

enum Sink {
    /// Kept until the session's file is known (nothing may reach the terminal meanwhile).
    Buffer(Vec<u8>),
    Stderr,
    File(std::fs::File),
}

static SINK: Mutex<Sink> = Mutex::new(Sink::Buffer(Vec::new()));

/// A buffer's cap: a run that never names its file does not grow without bound.
const BUFFER_CAP: usize = 1 << 20;

struct SinkWriter;

impl Write for SinkWriter {
    /// Each call holds one formatted line. It passes the one sanitiser on its way, wherever it
    /// goes: `seal.log` is read with `tail` and `less` on a terminal too, and a line may quote
    /// model text or a server's reply.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let clean = seal_tui::text::sanitize(&text);
        let clean = clean.as_bytes();
        let mut sink = SINK.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *sink {
            Sink::Buffer(b) => {
                if b.len() + clean.len() <= BUFFER_CAP {
                    b.extend_from_slice(clean);
                }
            }
            Sink::Stderr => std::io::stderr().write_all(clean)?,
            Sink::File(f) => f.write_all(clean)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the subscriber. `stderr_allowed`: this command never opens the screen, so a
/// `SEAL_LOG` setting may print to stderr until a session file takes over.
pub fn init(stderr_allowed: bool) {
    let asked = std::env::var("SEAL_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let filter = tracing_subscriber::EnvFilter::try_new(asked.as_deref().unwrap_or("info"))
        .unwrap_or_else(|e| {
            errln!("warning: SEAL_LOG: {e}; using \"info\"");
            tracing_subscriber::EnvFilter::new("info")
        });
    if stderr_allowed && asked.is_some() {
        *SINK.lock().unwrap_or_else(|p| p.into_inner()) = Sink::Stderr;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(|| SinkWriter)
        .try_init();
}

/// Sends the log to `path` (appending), with whatever was buffered before.
pub fn to_file(path: &Path) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    let mut sink = SINK.lock().unwrap_or_else(|p| p.into_inner());
    match file {
        Ok(mut f) => {
            if let Sink::Buffer(b) = &*sink {
                let _ = f.write_all(b);
            }
            *sink = Sink::File(f);
        }
        Err(e) => {
            if matches!(*sink, Sink::Stderr) {
                errln!(
                    "warning: cannot write the diagnostic log {}: {e}",
                    path.display()
                );
            }
        }
    }
}
