//! The journal behind a small trait: the embedded SQLite journal or a shared PostgreSQL.
//!
//! Ownership is a lease: a claim gives the job a fresh token and a `lease_until` that the
//! owner's heartbeat renews. Every change a worker makes to its job names the token, so a
//! worker whose lease expired (its machine died, or it slept past it) changes nothing: the
//! job became an orphan that any process may requeue, and the late worker discards its work.
use super::{Job, JobFilter, JobId, JobKind, JobOptions, Priority};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A journal error, naming the journal.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: job journal: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{path}: cannot create the journal's folder: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: job journal: {message}")]
    Corrupt { path: PathBuf, message: String },
    /// The PostgreSQL queue; `url` has no password.
    #[error("{url}: job queue: {message}")]
    Postgres { url: String, message: String },
}

/// One running queue (a process) as the journal knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Unique per process start.
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// The device its model thread runs on (`cpu`, `cuda:0`).
    pub device: String,
}

impl WorkerInfo {
    /// This process on `device`, with a fresh id.
    pub fn this_process(device: &str) -> WorkerInfo {
        let pid = std::process::id();
        let host = host_name();
        WorkerInfo {
            id: format!("{host}:{pid}:{}", &new_token()[..8]),
            host,
            pid,
            device: device.to_string(),
        }
    }
}

/// A live worker, from [`JobStore::workers`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkerRow {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub device: String,
    /// Unix ms.
    pub started_at: i64,
    pub heartbeat_at: i64,
    /// Jobs it runs now.
    pub running: u32,
}

/// This machine's name (`gethostname`), or `localhost`.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
    // (or truncates, which the length check below handles).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match (rc, std::str::from_utf8(&buf[..len])) {
        (0, Ok(name)) if !name.is_empty() => name.to_string(),
        _ => "localhost".to_string(),
    }
}

/// A fresh claim token: 128 bits from the standard library's randomly keyed hasher, the
/// pid, the time and a counter (unique, which is all a fencing token needs).
pub fn new_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let a = h.finish();
    h.write_u8(1);
    let b = h.finish();
    format!("{a:016x}{b:016x}")
}

/// The de-duplication key of a watched file: kind, input path, size and mtime. Two
/// watchers of one folder compute the same key, and the journal holds each key once.
pub fn dedup_key(kind: JobKind, input: &Path, size: u64, mtime_ns: i64) -> String {
    use sha2::Digest;
    use std::os::unix::ffi::OsStrExt;
    let mut h = sha2::Sha256::new();
    h.update(kind.name().as_bytes());
    h.update([0]);
    h.update(input.as_os_str().as_bytes());
    h.update([0]);
    h.update(size.to_le_bytes());
    h.update(mtime_ns.to_le_bytes());
    hex::encode(h.finalize())
}

/// A job to add.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub kind: JobKind,
    pub input: PathBuf,
    pub options: JobOptions,
    pub priority: Priority,
    pub max_attempts: u32,
    pub input_size: Option<u64>,
    pub input_mtime_ns: Option<i64>,
}

impl NewJob {
    /// The [`dedup_key`] when size and mtime are known.
    pub fn dedup_key(&self) -> Option<String> {
        Some(dedup_key(
            self.kind,
            &self.input,
            self.input_size?,
            self.input_mtime_ns?,
        ))
    }
}

/// What `cancel` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was queued; it is now cancelled.
    Cancelled,
    /// It is running; its worker was asked to stop.
    Requested,
    /// Finished already, or no such job.
    Nothing,
}

/// Durable job storage. Every method is one transaction; several processes (on several
/// machines, with PostgreSQL) may share one journal: a claim is atomic, and a worker's
/// changes to its job name the claim token ([`Job::claim`]); `Ok(false)` from such a change
/// means the lease was lost (the job is someone else's now) and nothing was changed.
pub trait JobStore: Send {
    fn insert(&mut self, job: &NewJob) -> Result<Job, StoreError>;
    /// [`JobStore::insert`] unless a job with the same [`NewJob::dedup_key`] exists (in any
    /// state): then nothing, and `None`. Atomic (`ON CONFLICT DO NOTHING`).
    fn insert_unique(&mut self, job: &NewJob) -> Result<Option<Job>, StoreError>;
    fn get(&self, id: JobId) -> Result<Option<Job>, StoreError>;
    fn list(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError>;
    /// The highest-priority queued job due now becomes `running` with one more attempt, a
    /// fresh claim token and a lease of `lease` (renew it with [`JobStore::renew`]).
    fn claim_next(
        &mut self,
        worker: &WorkerInfo,
        lease: Duration,
    ) -> Result<Option<Job>, StoreError> {
        self.claim_next_of(worker, lease, None)
    }
    /// [`JobStore::claim_next`] among the jobs of `kinds` only (none: every kind).
    fn claim_next_of(
        &mut self,
        worker: &WorkerInfo,
        lease: Duration,
        kinds: Option<&[JobKind]>,
    ) -> Result<Option<Job>, StoreError>;
    /// Extends the lease of running job `id` held with `claim` to `lease` from now.
    fn renew(&mut self, id: JobId, claim: &str, lease: Duration) -> Result<bool, StoreError>;
    /// The input's size and mtime (ns) as the run found it (what de-duplication compares).
    fn record_input(
        &mut self,
        id: JobId,
        claim: &str,
        size: u64,
        mtime_ns: i64,
    ) -> Result<bool, StoreError>;
    /// `running` → `done` and the output records, in one transaction.
    fn complete(
        &mut self,
        id: JobId,
        claim: &str,
        outputs: &[PathBuf],
        now: i64,
    ) -> Result<bool, StoreError>;
    /// `running` → `queued` again at `retry_at`, or → `failed` when `retry_at` is none.
    fn fail(
        &mut self,
        id: JobId,
        claim: &str,
        error: &str,
        retry_at: Option<i64>,
        now: i64,
    ) -> Result<bool, StoreError>;
    fn cancel(&mut self, id: JobId, now: i64) -> Result<CancelOutcome, StoreError>;
    /// A running job stopped because it was cancelled.
    fn mark_cancelled(&mut self, id: JobId, claim: &str, now: i64) -> Result<bool, StoreError>;
    /// Whether someone (maybe another process) asked a running job to stop.
    fn cancel_requested(&self, id: JobId) -> Result<bool, StoreError>;
    /// A running job goes back to `queued` without using up an attempt (shutdown).
    fn requeue(&mut self, id: JobId, claim: &str) -> Result<bool, StoreError>;
    /// `failed` or `cancelled` → `queued` with its attempts and crashes reset.
    fn retry(&mut self, id: JobId, now: i64) -> Result<bool, StoreError>;
    fn reprioritize(&mut self, id: JobId, priority: Priority) -> Result<bool, StoreError>;
    /// Every `running` job whose lease expired (its worker died, on any machine, or slept
    /// past it) counts one crash: with a cancel requested it ends `cancelled`; at
    /// `max_crashes` crashes it ends `failed` ("the process died while running this job (N
    /// times)"); else it is `queued` again without using up an attempt. `clean` sees each
    /// such job first, while no other worker can claim it (the queue removes its temp files
    /// there). Returns them as they are now.
    fn requeue_expired(
        &mut self,
        max_crashes: u32,
        clean: &mut dyn FnMut(&Job),
    ) -> Result<Vec<Job>, StoreError>;
    /// Ends at once the leases of `running` jobs claimed on `host` by a process that is gone
    /// (`alive` says no to its pid, or it has no workers row: it never registered or it
    /// left), so a process that died on this machine leaves orphans the next start takes
    /// back without waiting out the lease. Returns how many leases it ended.
    fn expire_dead_on_host(
        &mut self,
        host: &str,
        alive: &dyn Fn(u32) -> bool,
    ) -> Result<usize, StoreError>;
    /// Records that `worker` is alive, running `running` jobs.
    fn heartbeat(&mut self, worker: &WorkerInfo, running: u32) -> Result<(), StoreError>;
    /// `worker` stopped cleanly.
    fn leave(&mut self, worker: &WorkerInfo) -> Result<(), StoreError>;
    /// Workers whose last heartbeat is at most `within` old, oldest first.
    fn workers(&self, within: Duration) -> Result<Vec<WorkerRow>, StoreError>;
    /// Deletes done (and with `all`, failed and cancelled) jobs; returns how many.
    fn clear_finished(&mut self, all: bool) -> Result<usize, StoreError>;
    /// The newest job for this input and kind, whatever its state.
    fn latest_for(&self, input: &Path, kind: JobKind) -> Result<Option<Job>, StoreError>;
    /// Records `path` as an output of running job `id` (before it is done: a re-run after a
    /// crash then knows the file as its own).
    fn record_output(&mut self, id: JobId, claim: &str, path: &Path) -> Result<bool, StoreError>;
    /// Whether `path` is a recorded output of some job of `input` and `kind`.
    fn is_output_of(&self, path: &Path, input: &Path, kind: JobKind) -> Result<bool, StoreError>;
    /// Whether `path` is an output of a done job.
    fn is_output(&self, path: &Path) -> Result<bool, StoreError>;
    /// How many jobs are queued or running.
    fn count_active(&self) -> Result<usize, StoreError>;
    /// When the next queued job is due (unix ms), if any is queued.
    fn next_due(&self) -> Result<Option<i64>, StoreError>;
    /// Done jobs whose input should have been moved away (on-done = move).
    fn done_with_move(&self) -> Result<Vec<Job>, StoreError>;
    /// Where the journal is, for messages (a file, or a URL without its password).
    fn describe(&self) -> String;
}

/// Fills in a row's kind, state and options from their text; the message names the job.
pub(super) fn decode_row(
    job: &mut Job,
    kind: &str,
    state: &str,
    options: &str,
) -> Result<(), String> {
    job.kind =
        JobKind::parse(kind).ok_or_else(|| format!("job {}: unknown kind '{kind}'", job.id))?;
    job.state = super::JobState::parse(state)
        .ok_or_else(|| format!("job {}: unknown state '{state}'", job.id))?;
    job.options =
        serde_json::from_str(options).map_err(|e| format!("job {}: options: {e}", job.id))?;
    Ok(())
}

/// What an expired job becomes (the decision both journals make): `cancelled` when a
/// cancel was asked, `failed` with the crash message at `max_crashes`, else `queued`.
pub(super) enum Orphaned {
    Cancelled,
    Failed(String),
    Queued,
}

pub(super) fn orphaned(job: &Job, cancel: bool, crashes: u32, max_crashes: u32) -> Orphaned {
    if cancel {
        // Cancelled while running, then the process died: the wish stands.
        Orphaned::Cancelled
    } else if crashes >= max_crashes.max(1) {
        Orphaned::Failed(format!(
            "{}: the process died while running this job ({crashes} times)",
            job.input.display()
        ))
    } else {
        Orphaned::Queued
    }
}
