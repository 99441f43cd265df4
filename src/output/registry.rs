//! Which files Atelier wrote outside the job queue (`atelier transcribe`, `atelier tag
//! --write-sidecar`, the TUI's saves), so that a rerun replaces its own earlier output and
//! nothing else. The queue records its jobs' outputs in the journal; this is the same promise
//! for the commands that have no job: an output never replaces a file that is not a recorded
//! output of the same input, unchanged since it was written (a user's edit makes it theirs).
//! On a clash the output takes `NAME.1.EXT` (see [`super::atomic::write_new`]) and says so.
//!
//! The record is a small SQLite file, `outputs.sqlite` in the state folder beside the
//! journal. When it cannot be opened, nothing existing is replaced.
use std::path::{Path, PathBuf};

use super::atomic::{write_new, TEMP_PREFIX};

pub struct OutputRegistry {
    conn: rusqlite::Connection,
}

/// The record's location: `$XDG_STATE_HOME/atelier/outputs.sqlite`.
pub fn default_path() -> PathBuf {
    crate::logging::state_dir().join("outputs.sqlite")
}

/// An output's identity on disk: replaced only while it is the very file we wrote.
fn stamp(path: &Path) -> Option<(i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    meta.file_type().is_file().then(|| {
        (
            meta.size() as i64,
            meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        )
    })
}

fn key(path: &Path) -> String {
    // The folder canonicalised (the file itself may not exist yet), the name as given.
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    dir.join(path.file_name().unwrap_or_default())
        .to_string_lossy()
        .into_owned()
}

fn input_key(input: &Path) -> String {
    input
        .canonicalize()
        .unwrap_or_else(|_| input.to_path_buf())
        .to_string_lossy()
        .into_owned()
}

impl OutputRegistry {
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS outputs (
                 path TEXT PRIMARY KEY,
                 input TEXT NOT NULL,
                 kind TEXT NOT NULL,
                 size INTEGER NOT NULL,
                 mtime_ns INTEGER NOT NULL
             );",
        )?;
        Ok(OutputRegistry { conn })
    }

    /// The default record, or `None` (with a warning in the log) when it cannot be opened.
    pub fn open_default() -> Option<Self> {
        let path = default_path();
        match Self::open(&path) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(
                    "{}: cannot open the output record ({e}); existing files are kept",
                    path.display()
                );
                None
            }
        }
    }

    /// Whether `path` is our unchanged output of `input` for `kind`.
    pub fn may_replace(&self, path: &Path, input: &Path, kind: &str) -> bool {
        let Some((size, mtime_ns)) = stamp(path) else {
            return false;
        };
        self.conn
            .query_row(
                "SELECT 1 FROM outputs WHERE path = ?1 AND input = ?2 AND kind = ?3
                 AND size = ?4 AND mtime_ns = ?5",
                rusqlite::params![key(path), input_key(input), kind, size, mtime_ns],
                |_| Ok(()),
            )
            .is_ok()
    }

    /// The recorded outputs of `input` for `kind` that are still unchanged on disk.
    pub fn outputs_of(&self, input: &Path, kind: &str) -> Vec<PathBuf> {
        let rows = self
            .conn
            .prepare("SELECT path FROM outputs WHERE input = ?1 AND kind = ?2 ORDER BY path")
            .and_then(|mut st| {
                st.query_map(rusqlite::params![input_key(input), kind], |r| {
                    r.get::<_, String>(0)
                })?
                .collect::<rusqlite::Result<Vec<String>>>()
            })
            .unwrap_or_default();
        rows.into_iter()
            .map(PathBuf::from)
            .filter(|p| self.may_replace(p, input, kind))
            .collect()
    }

    /// Records `path` (just written) as the output of `input` for `kind`.
    pub fn record(&self, path: &Path, input: &Path, kind: &str) -> rusqlite::Result<()> {
        let Some((size, mtime_ns)) = stamp(path) else {
            return Ok(());
        };
        self.conn.execute(
            "INSERT INTO outputs (path, input, kind, size, mtime_ns) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(path) DO UPDATE SET input = ?2, kind = ?3, size = ?4, mtime_ns = ?5",
            rusqlite::params![key(path), input_key(input), kind, size, mtime_ns],
        )?;
        Ok(())
    }
}

/// Writes `bytes` as `input`'s `kind` output at `path`, atomically. An existing file there
/// is replaced only when `registry` says it is our unchanged output of the same input;
/// otherwise the output takes the next free `NAME.N.EXT`. Returns the path written (the
/// caller says so when it is not `path`). A folder, link or device at a name is skipped.
pub fn write_output(
    registry: Option<&OutputRegistry>,
    path: &Path,
    input: &Path,
    kind: &str,
    bytes: &[u8],
) -> std::io::Result<PathBuf> {
    let may_replace = |p: &Path| registry.is_some_and(|r| r.may_replace(p, input, kind));
    let written = write_new(path, bytes, TEMP_PREFIX, &may_replace)?;
    if let Some(r) = registry {
        if let Err(e) = r.record(&written, input, kind) {
            tracing::warn!("{}: cannot record the output: {e}", written.display());
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reruns_replace_their_output_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let reg = OutputRegistry::open(&dir.path().join("state/outputs.sqlite")).unwrap();
        let input = dir.path().join("a.wav");
        std::fs::write(&input, b"audio").unwrap();
        let user = dir.path().join("a.txt");
        std::fs::write(&user, b"my notes").unwrap();

        // A user's file at the output name is kept; the output takes a.1.txt.
        let first = write_output(Some(&reg), &user, &input, "transcript", b"one").unwrap();
        assert_eq!(first, dir.path().join("a.1.txt"));
        assert_eq!(std::fs::read(&user).unwrap(), b"my notes");
        // A rerun replaces its own output at a.1.txt.
        let again = write_output(Some(&reg), &user, &input, "transcript", b"two").unwrap();
        assert_eq!(again, first);
        assert_eq!(std::fs::read(&first).unwrap(), b"two");
        // Another input's output, or the same file of another kind, is not ours to replace.
        let other = dir.path().join("b.wav");
        let b = write_output(Some(&reg), &user, &other, "transcript", b"b").unwrap();
        assert_eq!(b, dir.path().join("a.2.txt"));
        let k = write_output(Some(&reg), &user, &input, "tags", b"k").unwrap();
        assert_eq!(k, dir.path().join("a.3.txt"));
        // A user's edit of our output makes it theirs.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&first, b"edited by hand, longer").unwrap();
        let after = write_output(Some(&reg), &user, &input, "transcript", b"three").unwrap();
        assert_ne!(after, first);
        assert_eq!(std::fs::read(&first).unwrap(), b"edited by hand, longer");
        // Without a record nothing existing is replaced.
        let none = write_output(None, &first, &input, "transcript", b"x").unwrap();
        assert_ne!(none, first);
    }
}
