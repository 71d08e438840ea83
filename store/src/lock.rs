//! One writer per data directory, across processes: an OS lock on `DATA/LOCK`.
//!
//! sled locks its own folder too, but a data directory holds more than one store during a reindex,
//! and the generations, `CURRENT` and the stale-store cleanup sit outside any store. Every writer
//! (`vitrine index`, `reindex`, `delete`, `rebuild`, `snapshot`, the service's writer) takes this
//! lock first and keeps it for as long as it writes; readers (the searcher) never take it.
//!
//! The lock is `flock(2)` through std's `File::try_lock`: the kernel drops it when the holder's
//! file closes or its process dies (SIGKILL included), so a crash never leaves it stuck. Two
//! handles opened separately conflict even inside one process, which keeps the rule testable.
//! The holder writes who it is into the file, so a writer that gives up can say whom to stop.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use vitrine_core::error::{CoreError, Result};

pub const LOCK_FILE: &str = "LOCK";
/// Between two attempts while waiting for the lock.
const POLL: Duration = Duration::from_millis(50);
/// The holder description is informational: a file grown by someone else is read only this far.
const MAX_HOLDER_BYTES: u64 = 4096;

/// Who holds the lock, as the holder wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    /// What the holder is, e.g. `vitrine serve` (never its full command line: flags may hold keys).
    pub role: String,
    /// Unix seconds when it took the lock.
    pub since: u64,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` (pid {}, since unix time {})", self.role, self.pid, self.since)
    }
}

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct WriteLock {
    file: File,
    path: PathBuf,
}

fn io(path: &Path, e: std::io::Error) -> CoreError {
    CoreError::io(path.display().to_string(), e)
}

/// This process's role: the program name and its subcommand, e.g. `vitrine index`.
pub fn process_role() -> String {
    let mut args = std::env::args();
    let prog = args
        .next()
        .map(|a| Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or(a))
        .unwrap_or_else(|| "vitrine".into());
    match args.next() {
        Some(sub) if !sub.starts_with('-') && sub.len() <= 32 && sub.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') => {
            format!("{prog} {sub}")
        }
        _ => prog,
    }
}

impl WriteLock {
    /// Take the lock of `data` (which must exist), waiting up to `wait` for another holder to let
    /// go. `Ok(None)`: someone else kept it all that time (see [`WriteLock::holder`]).
    pub fn acquire(data: &Path, role: &str, wait: Duration) -> Result<Option<WriteLock>> {
        let path = data.join(LOCK_FILE);
        // Not truncated on open: the holder's description must survive a failed attempt.
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(|e| io(&path, e))?;
        let start = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if start.elapsed() < wait => {
                    std::thread::sleep(POLL.min(wait.saturating_sub(start.elapsed())).max(Duration::from_millis(1)))
                }
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => return Err(io(&path, e)),
            }
        }
        let mut me = WriteLock { file, path };
        me.describe(role)?;
        Ok(Some(me))
    }

    fn describe(&mut self, role: &str) -> Result<()> {
        let holder = Holder { pid: std::process::id(), role: role.to_string(), since: crate::generation::now_secs() };
        let json = serde_json::to_vec(&holder).expect("a holder serializes");
        let path = &self.path;
        self.file.set_len(0).map_err(|e| io(path, e))?;
        self.file.seek(SeekFrom::Start(0)).and_then(|_| self.file.write_all(&json)).map_err(|e| io(path, e))
    }

    /// Who holds (or last held) the lock of `data`, if it said so.
    pub fn holder(data: &Path) -> Option<Holder> {
        let mut text = Vec::new();
        File::open(data.join(LOCK_FILE)).ok()?.take(MAX_HOLDER_BYTES).read_to_end(&mut text).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_then_gives_up_and_gets_it_after_release() {
        let d = tempfile::tempdir().unwrap();
        let first = WriteLock::acquire(d.path(), "first", Duration::ZERO).unwrap().expect("free");
        let t = Instant::now();
        assert!(WriteLock::acquire(d.path(), "second", Duration::from_millis(200)).unwrap().is_none());
        assert!(t.elapsed() >= Duration::from_millis(200), "it waited");
        let h = WriteLock::holder(d.path()).expect("the holder described itself");
        assert_eq!((h.role.as_str(), h.pid), ("first", std::process::id()));
        drop(first);
        let second = WriteLock::acquire(d.path(), "second", Duration::ZERO).unwrap();
        assert!(second.is_some(), "free again once dropped");
        assert_eq!(WriteLock::holder(d.path()).unwrap().role, "second");
    }

    #[test]
    fn a_waiter_gets_the_lock_when_the_holder_lets_go_in_time() {
        let d = tempfile::tempdir().unwrap();
        let first = WriteLock::acquire(d.path(), "first", Duration::ZERO).unwrap().unwrap();
        let released = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(first);
        });
        let got = WriteLock::acquire(d.path(), "second", Duration::from_secs(10)).unwrap();
        released.join().unwrap();
        assert!(got.is_some());
    }

    #[test]
    fn a_hostile_lock_file_is_only_informational() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(LOCK_FILE), vec![b'{'; 1 << 20]).unwrap();
        assert_eq!(WriteLock::holder(d.path()), None);
        let l = WriteLock::acquire(d.path(), "me", Duration::ZERO).unwrap().expect("garbage in the file is no lock");
        assert_eq!(WriteLock::holder(d.path()).unwrap().role, "me");
        drop(l);
    }
}
