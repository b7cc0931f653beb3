//! The bench the bad-input cases run on: a scratch folder per case, the real binary run with a
//! time limit, and checks on what it answered and on what it left on disk.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_seal-tui");

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One kind of bad input: a name a person reads, and the check that gives the input to the
/// binary and judges its answer (it panics when the answer is wrong).
pub struct Case {
    pub name: String,
    pub check: Box<dyn Fn(&Lab) + Send + Sync>,
}

pub fn case(name: impl Into<String>, check: impl Fn(&Lab) + Send + Sync + 'static) -> Case {
    Case {
        name: name.into(),
        check: Box::new(check),
    }
}

/// Runs a group's cases one after another, each in a fresh lab, and fails naming every case
/// that failed. Returns how many kinds the group has.
pub fn run_group(group: &str, cases: Vec<Case>) -> usize {
    let mut failures = Vec::new();
    let n = cases.len();
    for c in cases {
        let lab = Lab::new();
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (c.check)(&lab)));
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => eprintln!("ok    {group}: {} ({secs:.1} s)", c.name),
            Err(e) => {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                eprintln!("FAIL  {group}: {} ({secs:.1} s)", c.name);
                failures.push(format!("{}: {why}", c.name));
            }
        }
    }
    eprintln!("{group}: {n} kinds of bad input, {} failed", failures.len());
    assert!(
        failures.is_empty(),
        "{group}: {} of {n} cases failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    n
}

/// A scratch folder for one case, with its own sessions folder.
pub struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    pub fn new() -> Lab {
        let lab = Lab {
            dir: tempfile::tempdir().expect("a temp dir"),
        };
        std::fs::create_dir_all(lab.sessions()).unwrap();
        lab
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    pub fn sessions(&self) -> PathBuf {
        self.path("sessions")
    }

    /// The session folders under this lab's sessions folder.
    pub fn session_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(self.sessions())
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        dirs.sort();
        dirs
    }

    /// The only session folder; panics unless there is exactly one.
    pub fn session(&self) -> PathBuf {
        let dirs = self.session_dirs();
        assert_eq!(dirs.len(), 1, "expected one session folder, found {dirs:?}");
        dirs[0].clone()
    }

    pub fn cmd(&self, args: &[&str]) -> Run<'_> {
        Run {
            lab: self,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            stdin: None,
            timeout: Duration::from_secs(120),
        }
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.cmd(args).go()
    }
}

/// One invocation of the binary, being set up.
pub struct Run<'a> {
    lab: &'a Lab,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl Run<'_> {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Bytes fed on stdin, which is then closed (by default stdin is closed at once).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn timeout(mut self, secs: u64) -> Self {
        self.timeout = Duration::from_secs(secs);
        self
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(&self.args)
            .current_dir(root())
            .env("SEAL_SESSIONS_DIR", self.lab.sessions())
            // No case may fetch the default model: a missing -m fails fast on an empty folder.
            .env("SEAL_MODELS_DIR", self.lab.path("no-models"))
            .env("PIP_NO_INDEX", "1")
            .env_remove("SEAL_LOG")
            .env_remove("NO_COLOR");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts the binary with stdin left open (piped), stdout and stderr piped.
    pub fn spawn(&self) -> Child {
        use std::os::unix::process::CommandExt;
        let mut cmd = self.command();
        // A suite started under nohup or in a shell's background passes on SIGHUP and SIGINT
        // ignored (ignored signals survive exec); the signal cases need the child to meet them
        // as a program started from a terminal does.
        // Safety: signal(2) is async-signal-safe, and only the child's own dispositions change.
        unsafe {
            cmd.pre_exec(|| {
                for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGTERM] {
                    libc::signal(sig, libc::SIG_DFL);
                }
                Ok(())
            });
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start seal-tui")
    }

    pub fn go(self) -> Out {
        let started = Instant::now();
        let mut child = self
            .command()
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start seal-tui");
        if let Some(bytes) = self.stdin.clone() {
            let mut stdin = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                let _ = stdin.write_all(&bytes);
            });
        }
        finish(child, started, self.timeout, self.args.join(" "))
    }
}

/// Waits for a child to end, within `timeout` (after which it is killed and marked hung), and
/// collects what it wrote.
pub fn finish(mut child: Child, started: Instant, timeout: Duration, what: String) -> Out {
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = read(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = read(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let mut hung = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > timeout {
            hung = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    use std::os::unix::process::ExitStatusExt;
    Out {
        what,
        code: status.code(),
        signal: status.signal(),
        hung,
        stdout: String::from_utf8_lossy(&out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
        secs: started.elapsed().as_secs_f64(),
    }
}

/// What one invocation did.
#[derive(Debug)]
pub struct Out {
    pub what: String,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub hung: bool,
    pub stdout: String,
    pub stderr: String,
    pub secs: f64,
}

impl Out {
    pub fn show(&self) -> String {
        format!(
            "seal-tui {}\nexit {:?} signal {:?} after {:.1} s{}\n--- stdout\n{}\n--- stderr\n{}",
            self.what,
            self.code,
            self.signal,
            self.secs,
            if self.hung { " (HUNG, killed)" } else { "" },
            tail(&self.stdout),
            tail(&self.stderr)
        )
    }

    /// What every answer must be: in time, without a panic, with nothing that drives a
    /// terminal.
    pub fn sane(&self) -> &Self {
        assert!(!self.hung, "it hung\n{}", self.show());
        for (name, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            assert!(
                !text.contains("panicked"),
                "{name} shows a panic\n{}",
                self.show()
            );
            assert!(
                !text
                    .chars()
                    .any(|c| c == '\x1b' || ('\u{80}'..='\u{9f}').contains(&c)),
                "{name} carries a raw escape character\n{}",
                self.show()
            );
        }
        self
    }

    /// A clear error: a non-zero exit, an `error:` line, and each phrase in it.
    pub fn fails(&self, phrases: &[&str]) -> &Self {
        self.sane();
        assert!(
            self.code.is_some_and(|c| c != 0),
            "expected a failure\n{}",
            self.show()
        );
        assert!(
            self.stderr.contains("error:"),
            "no `error:` line\n{}",
            self.show()
        );
        self.says(phrases)
    }

    /// A success.
    pub fn ok(&self) -> &Self {
        self.sane();
        assert_eq!(self.code, Some(0), "expected success\n{}", self.show());
        self
    }

    /// A success with a visible warning carrying each phrase.
    pub fn warns(&self, phrases: &[&str]) -> &Self {
        self.ok();
        assert!(
            self.stderr.contains("warning") || self.stdout.contains("warning"),
            "no warning\n{}",
            self.show()
        );
        self.says(phrases)
    }

    /// Each phrase is in stdout or stderr.
    pub fn says(&self, phrases: &[&str]) -> &Self {
        for p in phrases {
            assert!(
                self.stderr.contains(p) || self.stdout.contains(p),
                "the answer lacks {p:?}\n{}",
                self.show()
            );
        }
        self
    }

    /// None of the phrases appears anywhere in the answer.
    pub fn never_says(&self, phrases: &[&str]) -> &Self {
        for p in phrases {
            assert!(
                !self.stderr.contains(p) && !self.stdout.contains(p),
                "the answer shows {p:?}\n{}",
                self.show()
            );
        }
        self
    }

    pub fn within(&self, secs: f64) -> &Self {
        assert!(self.secs < secs, "took {:.1} s\n{}", self.secs, self.show());
        self
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(40);
    lines[from..].join("\n")
}

/// The bytes of every file under some paths, to show that a command left them as they were.
pub struct Snapshot {
    roots: Vec<PathBuf>,
    files: BTreeMap<PathBuf, Vec<u8>>,
}

impl Snapshot {
    pub fn of(roots: &[&Path]) -> Snapshot {
        let roots: Vec<PathBuf> = roots.iter().map(|p| p.to_path_buf()).collect();
        Snapshot {
            files: read_all(&roots),
            roots,
        }
    }

    /// Every file is still there with the same bytes, and none was added.
    pub fn unchanged(&self) {
        let now = read_all(&self.roots);
        let before: Vec<&PathBuf> = self.files.keys().collect();
        let after: Vec<&PathBuf> = now.keys().collect();
        assert_eq!(before, after, "files were added or removed");
        for (path, bytes) in &self.files {
            assert!(now.get(path) == Some(bytes), "{} changed", path.display());
        }
    }

    /// Every file that was there still begins with the bytes it had (an append-only log may
    /// have grown, never lost anything).
    pub fn only_grew(&self) {
        let now = read_all(&self.roots);
        for (path, bytes) in &self.files {
            let after = now
                .get(path)
                .unwrap_or_else(|| panic!("{} was removed", path.display()));
            assert!(
                after.starts_with(bytes),
                "{} lost or rewrote what it held",
                path.display()
            );
        }
    }
}

fn read_all(roots: &[PathBuf]) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(path: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                walk(&entry.unwrap().path(), out);
            }
        } else if path.exists() {
            out.insert(path.to_path_buf(), std::fs::read(path).unwrap_or_default());
        }
    }
    let mut out = BTreeMap::new();
    for r in roots {
        walk(r, &mut out);
    }
    out
}

/// Copies a folder (one level of sub-folders is enough for models and sessions).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Waits until `ready()` holds, up to `secs`.
pub fn wait_for(secs: u64, what: &str, ready: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !ready() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
