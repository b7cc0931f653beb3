//! One writer per session: an exclusive OS lock (`flock`) on the session's `lock` file, held for
//! as long as a process may append to its log (a run, a resume, the workbench on a live run).
//!
//! The kernel releases the lock when its holder dies, however it dies, so a lock left by a
//! killed process is simply taken over; the pid and host written into the file only tell a
//! person who holds it. Readers (report, replay) never take the lock.

use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The lock file inside a session folder.
pub const LOCK_FILE: &str = "lock";

/// The session's writer lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct SessionLock {
    // Held open: closing the file would release the lock.
    _file: File,
    path: PathBuf,
}

impl SessionLock {
    /// Takes the lock of the session in `dir`, or fails naming the process that holds it.
    pub fn acquire(dir: &Path) -> Result<SessionLock> {
        let path = dir.join(LOCK_FILE);
        match take(&path).with_context(|| format!("cannot lock the session {}", dir.display()))? {
            Ok(lock) => Ok(lock),
            Err(holder) => bail!(
                "{}: this session is in use by {holder}; a session has one writer at a \
                 time, so wait for that process to end (or stop it) before running or \
                 resuming it here. Reading it (report, replay) works meanwhile",
                dir.display()
            ),
        }
    }

    /// Takes the lock on a file that one process appends to (a journal of finished work), or
    /// fails saying that another process holds it. The file's text is not touched.
    pub fn acquire_file(path: &Path) -> Result<SessionLock> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match flock(file, path)? {
            Ok(file) => Ok(SessionLock {
                _file: file,
                path: path.to_path_buf(),
            }),
            Err(_) => bail!(
                "{}: in use by another seal-tui process (one writer at a time); wait for it \
                 to end, or stop it, then run the same command again to continue",
                path.display()
            ),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the lock file at `path` and writes who holds it; `Err(holder)` when another process
/// holds it.
fn take(path: &Path) -> Result<Result<SessionLock, String>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open the lock {}", path.display()))?;
    let mut file = match flock(file, path)? {
        Ok(file) => file,
        Err(()) => {
            let holder = std::fs::read_to_string(path).unwrap_or_default();
            let holder = holder.lines().next().unwrap_or("").trim();
            return Ok(Err(if holder.is_empty() {
                "another process".to_string()
            } else {
                holder.to_string()
            }));
        }
    };
    let note = format!(
        "pid {} on host {} since {}\n",
        std::process::id(),
        hostname(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    // Informational only: a failure to write it does not weaken the lock.
    let _ = file
        .set_len(0)
        .and_then(|()| file.write_all(note.as_bytes()));
    Ok(Ok(SessionLock {
        _file: file,
        path: path.to_path_buf(),
    }))
}

/// How long a lock that is taken is retried before its holder is reported. A child process
/// that another thread forks (a llama.cpp server, `sbatch`, a test's subprocess) shares every
/// open file of this process until its `exec` closes them, and with them the locks of files
/// this process has already released; that window is short, a real holder's is not.
const CONTENTION_GRACE: Duration = Duration::from_secs(2);

/// An exclusive `flock` on `file` that does not wait on a holder beyond `CONTENTION_GRACE`;
/// `Err(())` when another open file holds it.
fn flock(file: File, path: &Path) -> Result<std::result::Result<File, ()>> {
    let start = Instant::now();
    loop {
        // Safety: flock on a descriptor this function owns; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(Ok(file));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::WouldBlock {
            return Err(err).with_context(|| format!("cannot lock {}", path.display()));
        }
        if start.elapsed() >= CONTENTION_GRACE {
            return Ok(Err(()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // Safety: the buffer outlives the call and its length is passed with it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "an unknown host".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_with_the_holder_named_then_admitted_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let first = SessionLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file, so a second open in this process conflicts as
        // a second process would.
        let err = format!("{:#}", SessionLock::acquire(dir.path()).unwrap_err());
        assert!(
            err.contains(&format!("pid {}", std::process::id())) && err.contains("host"),
            "{err}"
        );
        assert!(err.contains("in use"), "{err}");
        drop(first);
        let again = SessionLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(again.path()).unwrap();
        assert!(text.starts_with(&format!("pid {} on host", std::process::id())));
    }

    #[test]
    fn a_lock_released_within_the_grace_is_taken() {
        // As when a forked child still shares the released file until its exec.
        let dir = tempfile::tempdir().unwrap();
        let first = SessionLock::acquire(dir.path()).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(first);
        });
        let start = Instant::now();
        let again = SessionLock::acquire(dir.path());
        release.join().unwrap();
        assert!(again.is_ok(), "{:#}", again.unwrap_err());
        assert!(start.elapsed() < CONTENTION_GRACE);
    }

    #[test]
    fn leftover_text_of_a_dead_holder_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(LOCK_FILE),
            "pid 999999 on host gone since then\n",
        )
        .unwrap();
        let lock = SessionLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(lock.path()).unwrap();
        assert!(!text.contains("999999"), "{text}");
    }
}
