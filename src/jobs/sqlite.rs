//! The SQLite journal: WAL, one transaction per change, paths stored as raw bytes so
//! non-UTF-8 names survive.
use super::store::{
    decode_row, orphaned, CancelOutcome, JobStore, NewJob, Orphaned, StoreError, WorkerInfo,
    WorkerRow,
};
use super::{Job, JobFilter, JobId, JobKind, JobOptions, JobState, Priority};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default journal: `$XDG_DATA_HOME/atelier/queue.sqlite`.
pub fn default_path() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("atelier")
        .join("queue.sqlite")
}

/// `~/x` as the home folder's `x`.
pub use crate::config::expand_home;

/// The journal `atelier watch`, `atelier queue` and the TUI share: the flag's, else
/// `[queue] path`, else [`default_path`].
pub fn journal_path(config: &crate::config::Config, flag: Option<&Path>) -> PathBuf {
    match flag {
        Some(p) => p.to_path_buf(),
        None if !config.queue.path.is_empty() => expand_home(&config.queue.path),
        None => default_path(),
    }
}

/// How long a write waits for another process's transaction.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

/// Version 1: the jobs and their outputs (crash counts included).
const V1: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    input BLOB NOT NULL,
    options TEXT NOT NULL,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    error TEXT,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    not_before INTEGER NOT NULL DEFAULT 0,
    input_size INTEGER,
    input_mtime_ns INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    owner INTEGER,
    crashes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, priority DESC, id);
CREATE INDEX IF NOT EXISTS jobs_input ON jobs (input, kind);
CREATE TABLE IF NOT EXISTS outputs (
    job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    path BLOB NOT NULL,
    PRIMARY KEY (job_id, path)
);
CREATE INDEX IF NOT EXISTS outputs_path ON outputs (path);
";

/// Version 2: leases (claim token, lease_until, host, device, worker), the de-duplication
/// key, `updated_at` kept by a trigger (what a viewer polls), and the workers' heartbeats.
const V2: &str = "
ALTER TABLE jobs ADD COLUMN claim TEXT;
ALTER TABLE jobs ADD COLUMN lease_until INTEGER;
ALTER TABLE jobs ADD COLUMN host TEXT;
ALTER TABLE jobs ADD COLUMN device TEXT;
ALTER TABLE jobs ADD COLUMN worker TEXT;
ALTER TABLE jobs ADD COLUMN dedup TEXT;
ALTER TABLE jobs ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET updated_at = COALESCE(finished_at, started_at, created_at);
CREATE UNIQUE INDEX jobs_dedup ON jobs (dedup);
CREATE INDEX jobs_lease ON jobs (state, lease_until);
CREATE INDEX jobs_not_before ON jobs (state, not_before);
CREATE INDEX jobs_updated ON jobs (updated_at);
CREATE TRIGGER jobs_touched AFTER UPDATE ON jobs FOR EACH ROW
    WHEN NEW.updated_at = OLD.updated_at
    BEGIN
        UPDATE jobs SET updated_at = CAST(unixepoch('subsec') * 1000 AS INTEGER)
        WHERE id = NEW.id;
    END;
CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    device TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    running INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX workers_heartbeat ON workers (heartbeat_at);
";

/// The versioned migrations, in order: a journal at version `v` gets every step above `v`.
const MIGRATIONS: &[(i64, &str)] = &[(1, V1), (2, V2)];

/// The columns of `jobs` every schema version has (v1 adds `crashes`).
const REQUIRED_COLUMNS: &[&str] = &[
    "id",
    "kind",
    "input",
    "options",
    "state",
    "priority",
    "attempts",
    "max_attempts",
    "error",
    "created_at",
    "started_at",
    "finished_at",
    "not_before",
    "input_size",
    "input_mtime_ns",
    "cancel_requested",
    "owner",
];

/// Refuses a journal path that is not a regular file (or absent): a folder, a device or
/// pipe, or a symbolic link (which could point a shared journal anywhere).
fn check_journal_file(path: &Path) -> Result<(), StoreError> {
    let refuse = |message: String| {
        Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            message,
        })
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => refuse(format!("cannot read it: {e}")),
        Ok(m) if m.file_type().is_symlink() => {
            let to = std::fs::read_link(path).unwrap_or_default();
            refuse(format!(
                "is a symbolic link (to {}): the journal must be a regular file; give its \
                 real path",
                to.display()
            ))
        }
        Ok(m) if m.is_dir() => refuse("is a folder, not a journal file".to_string()),
        Ok(m) if !m.is_file() => {
            refuse("is not a regular file (a device, pipe or socket)".to_string())
        }
        Ok(_) => Ok(()),
    }
}

/// The schema version this build writes (`PRAGMA user_version`). 0: before crash counts;
/// 1: before leases.
pub const SCHEMA_VERSION: i64 = 2;

const COLUMNS: &str = "id, kind, input, options, state, priority, attempts, max_attempts, error, \
     created_at, started_at, finished_at, not_before, input_size, input_mtime_ns, crashes, \
     host, device, worker, claim, lease_until, updated_at";

fn path_bytes(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}

fn bytes_path(b: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(b))
}

/// A row as read, before its text columns are checked.
struct RawJob {
    job: Job,
    kind: String,
    state: String,
    options: String,
}

fn raw_job(row: &Row) -> rusqlite::Result<RawJob> {
    Ok(RawJob {
        job: Job {
            id: JobId(row.get(0)?),
            kind: JobKind::Checksum,
            input: bytes_path(row.get(2)?),
            options: JobOptions::default(),
            state: JobState::Queued,
            priority: Priority(row.get(5)?),
            attempts: row.get(6)?,
            max_attempts: row.get(7)?,
            error: row.get(8)?,
            created_at: row.get(9)?,
            started_at: row.get(10)?,
            finished_at: row.get(11)?,
            not_before: row.get(12)?,
            input_size: row.get::<_, Option<i64>>(13)?.map(|s| s as u64),
            input_mtime_ns: row.get(14)?,
            crashes: row.get(15)?,
            outputs: Vec::new(),
            host: row.get(16)?,
            device: row.get(17)?,
            worker: row.get(18)?,
            claim: row.get(19)?,
            lease_until: row.get(20)?,
            updated_at: row.get(21)?,
        },
        kind: row.get(1)?,
        state: row.get(4)?,
        options: row.get(3)?,
    })
}

/// Creates the tables, or brings an older journal up to [`SCHEMA_VERSION`], in one
/// immediate transaction (two processes opening one journal at once migrate it once).
/// A journal from a newer build is refused rather than misread.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            message: format!(
                "schema version {version} was written by a newer atelier (this one reads up to \
                 {SCHEMA_VERSION})"
            ),
        });
    }
    let has_jobs: bool = tx
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'jobs'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(err)?
        > 0;
    if has_jobs {
        let columns: Vec<String> = {
            let mut stmt = tx
                .prepare("SELECT name FROM pragma_table_info('jobs')")
                .map_err(err)?;
            let names = stmt
                .query_map([], |r| r.get(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>());
            names.map_err(err)?
        };
        let missing: Vec<&str> = REQUIRED_COLUMNS
            .iter()
            .copied()
            .filter(|c| !columns.iter().any(|n| n == c))
            .collect();
        if !missing.is_empty() {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                message: format!(
                    "its jobs table lacks the column(s) {}: not an atelier journal, or damaged \
                     (move it away to start a new one)",
                    missing.join(", ")
                ),
            });
        }
        let has_crashes: bool = tx
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('jobs') WHERE name = 'crashes'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(err)?
            > 0;
        if !has_crashes {
            tx.execute_batch("ALTER TABLE jobs ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0")
                .map_err(err)?;
        }
    }
    for (to, sql) in MIGRATIONS {
        if version < *to {
            tx.execute_batch(sql).map_err(err)?;
            tracing::info!(
                "{}: journal schema migrated to version {to}",
                path.display()
            );
        }
    }
    if version < SCHEMA_VERSION {
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
            .map_err(err)?;
    }
    tx.commit().map_err(err)
}

impl SqliteStore {
    /// Opens (creating) the journal at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Folder {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        check_journal_file(path)?;
        let err = |source: rusqlite::Error| match source.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Corrupt {
                    path: path.to_path_buf(),
                    message: format!(
                        "locked by another process for over {} s ({source}); is another atelier \
                         holding it?",
                        BUSY_TIMEOUT.as_secs()
                    ),
                }
            }
            Some(rusqlite::ErrorCode::NotADatabase) => StoreError::Corrupt {
                path: path.to_path_buf(),
                message: format!("not an SQLite journal ({source})"),
            },
            _ => StoreError::Sqlite {
                path: path.to_path_buf(),
                source,
            },
        };
        let mut conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        // With WAL, NORMAL survives a process crash; a power cut may lose the last
        // commits, which only makes a finished job run again (its outputs are replaced whole).
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
        migrate(&mut conn, path).map_err(|e| match e {
            StoreError::Sqlite { source, .. } => err(source),
            other => other,
        })?;
        Ok(SqliteStore {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The journal's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn finish(&self, raw: RawJob) -> Result<Job, StoreError> {
        let corrupt = |message: String| StoreError::Corrupt {
            path: self.path.clone(),
            message,
        };
        let mut job = raw.job;
        decode_row(&mut job, &raw.kind, &raw.state, &raw.options).map_err(corrupt)?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT path FROM outputs WHERE job_id = ?1 ORDER BY rowid")
            .map_err(|e| self.err(e))?;
        job.outputs = stmt
            .query_map([job.id.0], |r| r.get::<_, Vec<u8>>(0))
            .and_then(|rows| rows.map(|r| r.map(bytes_path)).collect())
            .map_err(|e| self.err(e))?;
        Ok(job)
    }

    fn query(&self, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<Job>, StoreError> {
        let raws: Vec<RawJob> = {
            let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map(args, raw_job)
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
            rows.map_err(|e| self.err(e))?
        };
        raws.into_iter().map(|r| self.finish(r)).collect()
    }

    fn one(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        Ok(self
            .query(
                &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"),
                &[&id.0],
            )?
            .pop())
    }
}

impl SqliteStore {
    fn insert_with(
        &mut self,
        job: &NewJob,
        dedup: Option<String>,
    ) -> Result<Option<Job>, StoreError> {
        let options = serde_json::to_string(&job.options).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            message: format!("cannot encode job options: {e}"),
        })?;
        let now = super::now_ms();
        let added = self
            .conn
            .execute(
                "INSERT INTO jobs (kind, input, options, state, priority, max_attempts, created_at, \
                 not_before, input_size, input_mtime_ns, dedup, updated_at) \
                 VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, 0, ?7, ?8, ?9, ?6) \
                 ON CONFLICT DO NOTHING",
                params![
                    job.kind.name(),
                    path_bytes(&job.input),
                    options,
                    job.priority.0,
                    job.max_attempts,
                    now,
                    job.input_size.map(|s| s as i64),
                    job.input_mtime_ns,
                    dedup,
                ],
            )
            .map_err(|e| self.err(e))?;
        if added == 0 {
            return Ok(None);
        }
        let id = JobId(self.conn.last_insert_rowid());
        self.one(id)?
            .ok_or_else(|| StoreError::Corrupt {
                path: self.path.clone(),
                message: format!("job {id} vanished after insert"),
            })
            .map(Some)
    }

    /// One guarded change: `sql` with `?1` the id and `?2` the claim token; whether it
    /// changed the (running) job.
    fn guarded(&self, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<bool, StoreError> {
        self.conn
            .execute(sql, args)
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }
}

fn lease_ms(lease: Duration) -> i64 {
    lease.as_millis().min(i64::MAX as u128) as i64
}

impl JobStore for SqliteStore {
    fn insert(&mut self, job: &NewJob) -> Result<Job, StoreError> {
        self.insert_with(job, None)?
            .ok_or_else(|| StoreError::Corrupt {
                path: self.path.clone(),
                message: "a job without a de-duplication key was refused".to_string(),
            })
    }

    fn insert_unique(&mut self, job: &NewJob) -> Result<Option<Job>, StoreError> {
        let key = job.dedup_key();
        self.insert_with(job, key)
    }

    fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.one(id)
    }

    fn list(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM jobs WHERE 1");
        let states: Vec<String> = filter
            .states
            .iter()
            .map(|s| format!("'{}'", s.name()))
            .collect();
        if !states.is_empty() {
            sql += &format!(" AND state IN ({})", states.join(","));
        }
        let kinds: Vec<String> = filter
            .kinds
            .iter()
            .map(|k| format!("'{}'", k.name()))
            .collect();
        if !kinds.is_empty() {
            sql += &format!(" AND kind IN ({})", kinds.join(","));
        }
        if let Some(t) = filter.changed_since {
            sql += &format!(" AND updated_at >= {t}");
        }
        let input = filter.input.as_deref().map(path_bytes);
        if input.is_some() {
            sql += " AND input = ?1";
        }
        sql += " ORDER BY id DESC";
        if let Some(n) = filter.limit {
            sql += &format!(" LIMIT {n}");
        }
        let mut jobs = match &input {
            Some(b) => self.query(&sql, &[b])?,
            None => self.query(&sql, &[])?,
        };
        jobs.reverse();
        Ok(jobs)
    }

    fn claim_next_of(
        &mut self,
        worker: &WorkerInfo,
        lease: Duration,
        kinds: Option<&[JobKind]>,
    ) -> Result<Option<Job>, StoreError> {
        // Kind names come from the fixed table, never from input.
        let only = match kinds {
            Some(kinds) => {
                let names: Vec<String> = kinds.iter().map(|k| format!("'{}'", k.name())).collect();
                format!(" AND kind IN ({})", names.join(","))
            }
            None => String::new(),
        };
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let now = super::now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let id: Option<i64> = tx
            .query_row(
                &format!(
                    "SELECT id FROM jobs WHERE state = 'queued' AND not_before <= ?1{only} \
                     ORDER BY priority DESC, id LIMIT 1"
                ),
                [now],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        if let Some(id) = id {
            tx.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?2, \
                 error = NULL, cancel_requested = 0, owner = ?3, claim = ?4, lease_until = ?5, \
                 host = ?6, device = ?7, worker = ?8 WHERE id = ?1",
                params![
                    id,
                    now,
                    worker.pid,
                    super::new_token(),
                    now.saturating_add(lease_ms(lease)),
                    worker.host,
                    worker.device,
                    worker.id
                ],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        match id {
            Some(id) => self.one(JobId(id)),
            None => Ok(None),
        }
    }

    fn renew(&mut self, id: JobId, claim: &str, lease: Duration) -> Result<bool, StoreError> {
        let until = super::now_ms().saturating_add(lease_ms(lease));
        self.guarded(
            "UPDATE jobs SET lease_until = ?3 WHERE id = ?1 AND claim = ?2 AND state = 'running'",
            &[&id.0, &claim, &until],
        )
    }

    fn record_input(
        &mut self,
        id: JobId,
        claim: &str,
        size: u64,
        mtime_ns: i64,
    ) -> Result<bool, StoreError> {
        self.guarded(
            "UPDATE jobs SET input_size = ?3, input_mtime_ns = ?4 \
             WHERE id = ?1 AND claim = ?2 AND state = 'running'",
            &[&id.0, &claim, &(size as i64), &mtime_ns],
        )
    }

    fn complete(
        &mut self,
        id: JobId,
        claim: &str,
        outputs: &[PathBuf],
        now: i64,
    ) -> Result<bool, StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let held = tx
            .execute(
                "UPDATE jobs SET state = 'done', finished_at = ?3, error = NULL, \
                 lease_until = NULL WHERE id = ?1 AND claim = ?2 AND state = 'running'",
                params![id.0, claim, now],
            )
            .map_err(err)?
            > 0;
        if !held {
            // Lost the lease: the job is someone else's; record nothing.
            return Ok(false);
        }
        tx.execute("DELETE FROM outputs WHERE job_id = ?1", [id.0])
            .map_err(err)?;
        for out in outputs {
            tx.execute(
                "INSERT OR IGNORE INTO outputs (job_id, path) VALUES (?1, ?2)",
                params![id.0, path_bytes(out)],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(true)
    }

    fn fail(
        &mut self,
        id: JobId,
        claim: &str,
        error: &str,
        retry_at: Option<i64>,
        now: i64,
    ) -> Result<bool, StoreError> {
        match retry_at {
            Some(at) => self.guarded(
                "UPDATE jobs SET state = 'queued', error = ?3, not_before = ?4, finished_at = ?5, \
                 lease_until = NULL WHERE id = ?1 AND claim = ?2 AND state = 'running'",
                &[&id.0, &claim, &error, &at, &now],
            ),
            None => self.guarded(
                "UPDATE jobs SET state = 'failed', error = ?3, finished_at = ?4, \
                 lease_until = NULL WHERE id = ?1 AND claim = ?2 AND state = 'running'",
                &[&id.0, &claim, &error, &now],
            ),
        }
    }

    fn cancel(&mut self, id: JobId, now: i64) -> Result<CancelOutcome, StoreError> {
        let cancelled = self
            .conn
            .execute(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?2 \
                 WHERE id = ?1 AND state = 'queued'",
                params![id.0, now],
            )
            .map_err(|e| self.err(e))?;
        if cancelled > 0 {
            return Ok(CancelOutcome::Cancelled);
        }
        let asked = self
            .conn
            .execute(
                "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND state = 'running'",
                [id.0],
            )
            .map_err(|e| self.err(e))?;
        Ok(if asked > 0 {
            CancelOutcome::Requested
        } else {
            CancelOutcome::Nothing
        })
    }

    fn mark_cancelled(&mut self, id: JobId, claim: &str, now: i64) -> Result<bool, StoreError> {
        self.guarded(
            "UPDATE jobs SET state = 'cancelled', finished_at = ?3, cancel_requested = 0, \
             lease_until = NULL WHERE id = ?1 AND claim = ?2 AND state = 'running'",
            &[&id.0, &claim, &now],
        )
    }

    fn cancel_requested(&self, id: JobId) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT cancel_requested FROM jobs WHERE id = ?1",
                [id.0],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|v| v == Some(1))
            .map_err(|e| self.err(e))
    }

    fn requeue(&mut self, id: JobId, claim: &str) -> Result<bool, StoreError> {
        self.guarded(
            "UPDATE jobs SET state = 'queued', attempts = MAX(attempts - 1, 0), \
             cancel_requested = 0, lease_until = NULL \
             WHERE id = ?1 AND claim = ?2 AND state = 'running'",
            &[&id.0, &claim],
        )
    }

    fn retry(&mut self, id: JobId, now: i64) -> Result<bool, StoreError> {
        self.conn
            .execute(
                "UPDATE jobs SET state = 'queued', attempts = 0, crashes = 0, error = NULL, \
                 not_before = ?2, finished_at = NULL WHERE id = ?1 AND state IN ('failed', 'cancelled')",
                params![id.0, now],
            )
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    fn reprioritize(&mut self, id: JobId, priority: Priority) -> Result<bool, StoreError> {
        self.conn
            .execute(
                "UPDATE jobs SET priority = ?2 WHERE id = ?1 AND state IN ('queued', 'running')",
                params![id.0, priority.0],
            )
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    fn requeue_expired(
        &mut self,
        max_crashes: u32,
        clean: &mut dyn FnMut(&Job),
    ) -> Result<Vec<Job>, StoreError> {
        let now = super::now_ms();
        // A cheap look first: most sweeps find nothing, and need no write lock.
        let any: bool = self
            .conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'running' \
                 AND (lease_until IS NULL OR lease_until <= ?1))",
                [now],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if !any {
            return Ok(Vec::new());
        }
        let max_crashes = max_crashes.max(1);
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        // Explicit, so `finish` and `clean` can use the connection inside the transaction;
        // held until COMMIT, so no worker claims these jobs meanwhile.
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.err(e))?;
        let raws: Result<Vec<RawJob>, StoreError> = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM jobs WHERE state = 'running' \
                 AND (lease_until IS NULL OR lease_until <= ?1)"
            ))
            .and_then(|mut stmt| {
                stmt.query_map([now], raw_job)
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            })
            .map_err(err);
        let raws = match raws {
            Ok(r) => r,
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        };
        let result = (|| -> Result<Vec<JobId>, StoreError> {
            let mut ids = Vec::new();
            for raw in raws {
                let cancel: bool = self
                    .conn
                    .query_row(
                        "SELECT cancel_requested FROM jobs WHERE id = ?1",
                        [raw.job.id.0],
                        |r| r.get::<_, i64>(0),
                    )
                    .map_err(err)?
                    != 0;
                let job = self.finish(raw)?;
                clean(&job);
                let crashes = job.crashes.saturating_add(1);
                let id = job.id.0;
                match orphaned(&job, cancel, crashes, max_crashes) {
                    Orphaned::Cancelled => self.conn.execute(
                        "UPDATE jobs SET state = 'cancelled', cancel_requested = 0, owner = NULL, \
                         lease_until = NULL, crashes = ?2, finished_at = ?3 WHERE id = ?1",
                        params![id, crashes, now],
                    ),
                    Orphaned::Failed(error) => self.conn.execute(
                        "UPDATE jobs SET state = 'failed', owner = NULL, lease_until = NULL, \
                         crashes = ?2, error = ?3, finished_at = ?4 WHERE id = ?1",
                        params![id, crashes, error, now],
                    ),
                    // A crash uses up one of the job's crashes, not one of its attempts.
                    Orphaned::Queued => self.conn.execute(
                        "UPDATE jobs SET state = 'queued', cancel_requested = 0, owner = NULL, \
                         lease_until = NULL, crashes = ?2, attempts = MAX(attempts - 1, 0) \
                         WHERE id = ?1",
                        params![id, crashes],
                    ),
                }
                .map_err(err)?;
                ids.push(job.id);
            }
            Ok(ids)
        })();
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        if let Err(e) = self.conn.execute_batch(end) {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(self.err(e));
        }
        let mut jobs = Vec::new();
        for id in result? {
            jobs.extend(self.one(id)?);
        }
        Ok(jobs)
    }

    fn heartbeat(&mut self, worker: &WorkerInfo, running: u32) -> Result<(), StoreError> {
        let now = super::now_ms();
        self.conn
            .execute(
                "INSERT INTO workers (id, host, pid, device, started_at, heartbeat_at, running) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6) \
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = ?5, running = ?6",
                params![
                    worker.id,
                    worker.host,
                    worker.pid,
                    worker.device,
                    now,
                    running
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn expire_dead_on_host(
        &mut self,
        host: &str,
        alive: &dyn Fn(u32) -> bool,
    ) -> Result<usize, StoreError> {
        let workers: Vec<(String, u32)> = self
            .conn
            .prepare("SELECT id, pid FROM workers WHERE host = ?1")
            .and_then(|mut st| {
                st.query_map([host], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| self.err(e))?;
        for (id, _) in workers.iter().filter(|(_, pid)| !alive(*pid)) {
            self.conn
                .execute("DELETE FROM workers WHERE id = ?1", [id])
                .map_err(|e| self.err(e))?;
        }
        self.conn
            .execute(
                "UPDATE jobs SET lease_until = 0 WHERE state = 'running' AND host = ?1 \
                 AND (worker IS NULL OR worker NOT IN (SELECT id FROM workers)) \
                 AND (lease_until IS NULL OR lease_until > 0)",
                [host],
            )
            .map_err(|e| self.err(e))
    }

    fn leave(&mut self, worker: &WorkerInfo) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM workers WHERE id = ?1", [&worker.id])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn workers(&self, within: Duration) -> Result<Vec<WorkerRow>, StoreError> {
        let since = super::now_ms().saturating_sub(lease_ms(within));
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, host, pid, device, started_at, heartbeat_at, running FROM workers \
                 WHERE heartbeat_at >= ?1 ORDER BY started_at, id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([since], |r| {
                Ok(WorkerRow {
                    id: r.get(0)?,
                    host: r.get(1)?,
                    pid: r.get(2)?,
                    device: r.get(3)?,
                    started_at: r.get(4)?,
                    heartbeat_at: r.get(5)?,
                    running: r.get(6)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(|e| self.err(e))
    }

    fn clear_finished(&mut self, all: bool) -> Result<usize, StoreError> {
        let sql = if all {
            "DELETE FROM jobs WHERE state IN ('done', 'failed', 'cancelled')"
        } else {
            "DELETE FROM jobs WHERE state = 'done'"
        };
        self.conn.execute(sql, []).map_err(|e| self.err(e))
    }

    fn latest_for(&self, input: &Path, kind: JobKind) -> Result<Option<Job>, StoreError> {
        Ok(self
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM jobs WHERE input = ?1 AND kind = ?2 ORDER BY id DESC LIMIT 1"
                ),
                &[&path_bytes(input), &kind.name()],
            )?
            .pop())
    }

    fn record_output(&mut self, id: JobId, claim: &str, path: &Path) -> Result<bool, StoreError> {
        // An upsert, so a path an earlier run of the job recorded (it died before its
        // commit) still counts as held: `OR IGNORE` changed no row, and the rerun took that
        // for a lost lease, abandoning the job `running` on every retry.
        self.guarded(
            "INSERT INTO outputs (job_id, path) SELECT id, ?3 FROM jobs \
             WHERE id = ?1 AND claim = ?2 AND state = 'running' \
             ON CONFLICT (job_id, path) DO UPDATE SET path = excluded.path",
            &[&id.0, &claim, &path_bytes(path)],
        )
    }

    fn is_output_of(&self, path: &Path, input: &Path, kind: JobKind) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT 1 FROM outputs o JOIN jobs j ON j.id = o.job_id \
                 WHERE o.path = ?1 AND j.input = ?2 AND j.kind = ?3 LIMIT 1",
                params![path_bytes(path), path_bytes(input), kind.name()],
                |_| Ok(()),
            )
            .optional()
            .map(|v| v.is_some())
            .map_err(|e| self.err(e))
    }

    fn is_output(&self, path: &Path) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT 1 FROM outputs WHERE path = ?1 LIMIT 1",
                [path_bytes(path)],
                |_| Ok(()),
            )
            .optional()
            .map(|v| v.is_some())
            .map_err(|e| self.err(e))
    }

    fn count_active(&self) -> Result<usize, StoreError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .map_err(|e| self.err(e))
    }

    fn next_due(&self) -> Result<Option<i64>, StoreError> {
        self.conn
            .query_row(
                "SELECT MIN(not_before) FROM jobs WHERE state = 'queued'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    fn done_with_move(&self) -> Result<Vec<Job>, StoreError> {
        let jobs = self.query(
            &format!(
                "SELECT {COLUMNS} FROM jobs WHERE state = 'done' AND options LIKE '%\"on-done\":\"move\"%'"
            ),
            &[],
        )?;
        Ok(jobs)
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}
