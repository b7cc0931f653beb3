//! The real binary under tmux, driven as a person would: launch the workbench on the tiny
//! model, step through one self-edit, approve it, quit; then replay the session and see the
//! approval on screen.

mod common;

use common::{scratch, tiny_gguf};
use seal_tui::engine::Arch;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Tmux {
    socket: PathBuf,
    session: String,
}

impl Tmux {
    fn start(name: &str, width: u16, height: u16, command: &str) -> Tmux {
        let socket = scratch().join(format!("tmux-{name}"));
        let t = Tmux {
            socket,
            session: name.to_string(),
        };
        let ok = t
            .cmd(&[
                "new-session",
                "-d",
                "-s",
                name,
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
                command,
            ])
            .status()
            .expect("tmux is needed for this test (apt-get install tmux)")
            .success();
        assert!(ok, "tmux did not start");
        t
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket).args(args);
        c
    }

    fn screen(&self) -> String {
        let out = self
            .cmd(&["capture-pane", "-p", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        self.cmd(&["send-keys", "-t", &self.session, keys])
            .status()
            .unwrap();
    }

    /// Waits until the screen satisfies `ok`, or fails with the last screen.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; the screen shows:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]).status();
    }
}

fn config(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = dir.join("e2e.toml");
    std::fs::write(
        &path,
        format!(
            "[model]\npath = \"{}\"\n[task]\ndata = \"{}\"\n[knowledge]\nprompts_dir = \"{}\"\n\
             [self_edit]\nk = 2\nmax_tokens = 16\n[inner]\nepochs = 1\n[outer]\nrounds = 1\n\
             start_mode = \"step\"\n",
            tiny_gguf(Arch::Qwen2).display(),
            root.join("assets/passages.json").display(),
            root.join("prompts").display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn step_approve_quit_then_replay_shows_the_approval() {
    let dir = scratch().join("e2e");
    std::fs::create_dir_all(&dir).unwrap();
    let sessions = dir.join("sessions");
    let cfg = config(&dir);
    let bin = env!("CARGO_BIN_EXE_seal-tui");
    let root = env!("CARGO_MANIFEST_DIR");
    let launch = format!(
        "cd {root} && SEAL_SESSIONS_DIR={} {bin} run --config {}",
        sessions.display(),
        cfg.display()
    );
    let t = Tmux::start("seal-e2e", 80, 24, &launch);
    t.wait_for("the workbench in step mode", |s| s.contains("STEP"));
    // Two steps: the unadapted baseline, then the first self-edit.
    t.keys("s");
    t.wait_for("the baseline", |s| {
        s.contains("sampling has not started") || s.contains("0/2 sampled")
    });
    t.keys("s");
    t.wait_for("the first self-edit", |s| s.contains("1/2 sampled"));
    t.keys("2");
    t.keys("y");
    t.wait_for("the approval", |s| s.contains("✓ approved"));
    t.keys("q");
    // Quitting with nothing in flight leaves at once; confirm if asked.
    std::thread::sleep(Duration::from_millis(500));
    if t.screen().contains("y/n") || t.screen().to_lowercase().contains("quit?") {
        t.keys("y");
    }
    let session = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = std::fs::read_dir(&sessions)
                .ok()
                .and_then(|mut d| d.next())
                .and_then(|e| e.ok())
                .map(|e| e.path());
            if let Some(p) = log {
                let text = std::fs::read_to_string(p.join("events.jsonl")).unwrap_or_default();
                if text.contains("\"edit_decision\"") {
                    break p;
                }
            }
            assert!(Instant::now() < deadline, "no decision was recorded");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    drop(t);

    let replay = format!(
        "cd {root} && {bin} replay {} --speed 100",
        session.display()
    );
    let t = Tmux::start("seal-e2e-replay", 80, 24, &replay);
    t.wait_for("the replay", |s| {
        s.contains("REPLAY") || s.contains("ENDED") || s.contains("Self-edits")
    });
    t.keys("2");
    let screen = t.wait_for("the replayed approval", |s| s.contains("✓ approved"));
    assert!(screen.contains("e1"), "{screen}");
    t.keys("q");
}

/// Runs `command` in tmux followed by `stty -a`, so the screen shows whether the terminal came
/// back in canonical (non-raw) mode and without the alternate screen. `EXIT=` is printed last,
/// so a screen that shows it shows the mode too.
fn terminal_after(name: &str, command: &str, kill_after: Option<Duration>) -> String {
    let t = Tmux::start(
        name,
        80,
        24,
        &format!(
            "{command}; code=$?; stty -a | tr ' ' '\\n' | grep -x -- '-\\?icanon'; echo EXIT=$code; sleep 30"
        ),
    );
    if let Some(d) = kill_after {
        t.wait_for("the workbench", |s| {
            s.contains("Self-edits") || s.contains("Context")
        });
        std::thread::sleep(d);
        // Only this pane's program: other tests run seal-tui at the same time.
        let out = t
            .cmd(&["display-message", "-p", "-t", &t.session, "#{pane_pid}"])
            .output()
            .unwrap();
        let shell = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let status = Command::new("pkill")
            .args(["-TERM", "-P", &shell, "-x", "seal-tui"])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "no seal-tui under the pane's shell {shell}"
        );
    }
    t.wait_for("the shell after the program", |s| s.contains("EXIT="))
}

#[test]
fn the_terminal_is_restored_after_a_panic_and_after_sigterm() {
    let dir = scratch().join("e2e-hygiene");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = config(&dir);
    let bin = env!("CARGO_BIN_EXE_seal-tui");
    let root = env!("CARGO_MANIFEST_DIR");
    let launch = |env: &str| {
        format!(
            "cd {root} && {env} SEAL_SESSIONS_DIR={} {bin} run --config {}",
            dir.join("sessions").display(),
            cfg.display()
        )
    };

    let screen = terminal_after("seal-panic", &launch("SEAL_TUI_TEST_PANIC=1"), None);
    assert!(screen.contains("test panic requested"), "{screen}");
    assert!(
        screen.lines().any(|l| l.trim() == "icanon"),
        "still in raw mode:\n{screen}"
    );
    assert!(
        !screen.contains("Self-edits"),
        "the alternate screen is still shown:\n{screen}"
    );

    let screen = terminal_after("seal-term", &launch(""), Some(Duration::from_millis(500)));
    assert!(
        screen.lines().any(|l| l.trim() == "icanon"),
        "still in raw mode:\n{screen}"
    );
    assert!(
        !screen.contains("Self-edits"),
        "the alternate screen is still shown:\n{screen}"
    );
}

/// `report FILE.json --screen` on a continual evaluation's results: the forgetting matrix
/// opens, the cursor moves with the workbench's keys, q closes it and the terminal is back.
/// A results file of another kind is refused before the screen opens.
#[test]
fn report_screen_shows_the_forgetting_matrix_and_gives_the_terminal_back() {
    let dir = scratch().join("e2e-forgetting");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("continual.json");
    let results = serde_json::json!({
        "kind": "seal-tui-eval",
        "continual": {
            "titles": ["Warsaw", "Normans", "Teacher"],
            "base": [0.1, 0.0, 0.2],
            "matrix": [[0.5], [0.25, 0.75], [0.2, 0.5, 1.0]],
            "template": "implications",
            "secs": 3.0
        }
    });
    std::fs::write(&file, results.to_string()).unwrap();
    let bin = env!("CARGO_BIN_EXE_seal-tui");
    let command = format!(
        "{bin} report {} --screen; code=$?; stty -a | tr ' ' '\\n' | grep -x -- '-\\?icanon'; echo EXIT=$code; sleep 30",
        file.display()
    );
    let t = Tmux::start("seal-forgetting", 80, 24, &command);
    let screen = t.wait_for("the matrix", |s| s.contains("Forgetting matrix"));
    assert!(
        screen.contains("After update 3 of 3 (p3), on p1 Warsaw: 20%"),
        "{screen}"
    );
    assert!(screen.contains("-30 pts since then"), "{screen}");
    t.keys("k");
    t.keys("l");
    t.wait_for("the cursor on p2 after update 2", |s| {
        s.contains("After update 2 of 3 (p2), on p2 Normans: 75%")
    });
    t.keys("q");
    let screen = t.wait_for("the shell after the program", |s| s.contains("EXIT="));
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(
        screen.lines().any(|l| l.trim() == "icanon"),
        "still in raw mode:\n{screen}"
    );
    assert!(!screen.contains("Forgetting matrix"), "{screen}");

    let table = dir.join("table.json");
    std::fs::write(
        &table,
        serde_json::json!({"kind": "seal-tui-eval", "conditions": []}).to_string(),
    )
    .unwrap();
    let out = Command::new(bin)
        .arg("report")
        .arg(&table)
        .arg("--screen")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--screen shows the forgetting matrix"),
        "{stderr}"
    );
}
