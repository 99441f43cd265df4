//! The journal behind a small trait, so a shared server-backed queue can be added later.
use super::{Job, JobFilter, JobId, JobKind, JobOptions, Priority};
use std::path::{Path, PathBuf};

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

/// Durable job storage. Every method is one transaction; several processes may share one
/// journal (a claim is atomic).
pub trait JobStore: Send {
    fn insert(&mut self, job: &NewJob) -> Result<Job, StoreError>;
    fn get(&self, id: JobId) -> Result<Option<Job>, StoreError>;
    fn list(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError>;
    /// The highest-priority queued job due at `now` becomes `running` with one more attempt.
    /// `owner` is the claiming process (its pid), so another process can tell orphans.
    fn claim_next(&mut self, now: i64, owner: u32) -> Result<Option<Job>, StoreError> {
        self.claim_next_of(now, owner, None)
    }
    /// [`JobStore::claim_next`] among the jobs of `kinds` only (none: every kind).
    fn claim_next_of(
        &mut self,
        now: i64,
        owner: u32,
        kinds: Option<&[JobKind]>,
    ) -> Result<Option<Job>, StoreError>;
    /// The input's size and mtime (ns) as the run found it (what de-duplication compares).
    fn record_input(&mut self, id: JobId, size: u64, mtime_ns: i64) -> Result<(), StoreError>;
    /// `running` → `done` and the output records, in one transaction.
    fn complete(&mut self, id: JobId, outputs: &[PathBuf], now: i64) -> Result<(), StoreError>;
    /// `running` → `queued` again at `retry_at`, or → `failed` when `retry_at` is none.
    fn fail(
        &mut self,
        id: JobId,
        error: &str,
        retry_at: Option<i64>,
        now: i64,
    ) -> Result<(), StoreError>;
    fn cancel(&mut self, id: JobId, now: i64) -> Result<CancelOutcome, StoreError>;
    /// A running job stopped because it was cancelled.
    fn mark_cancelled(&mut self, id: JobId, now: i64) -> Result<(), StoreError>;
    /// Whether someone (maybe another process) asked a running job to stop.
    fn cancel_requested(&self, id: JobId) -> Result<bool, StoreError>;
    /// A running job goes back to `queued` without using up an attempt (shutdown).
    fn requeue(&mut self, id: JobId) -> Result<(), StoreError>;
    /// `failed` or `cancelled` → `queued` with its attempts and crashes reset.
    fn retry(&mut self, id: JobId, now: i64) -> Result<bool, StoreError>;
    fn reprioritize(&mut self, id: JobId, priority: Priority) -> Result<bool, StoreError>;
    /// At start-up, every `running` job whose owner is not `alive` (its process died) counts
    /// one crash: with a cancel requested it ends `cancelled`; at `max_crashes` crashes it
    /// ends `failed` ("the process died while running this job (N times)"); else it is
    /// `queued` again without using up an attempt. Returns them as they are now.
    fn requeue_orphans(
        &mut self,
        alive: &dyn Fn(u32) -> bool,
        max_crashes: u32,
    ) -> Result<Vec<Job>, StoreError>;
    /// Deletes done (and with `all`, failed and cancelled) jobs; returns how many.
    fn clear_finished(&mut self, all: bool) -> Result<usize, StoreError>;
    /// The newest job for this input and kind, whatever its state.
    fn latest_for(&self, input: &Path, kind: JobKind) -> Result<Option<Job>, StoreError>;
    /// Records `path` as an output of running job `id` (before it is done: a re-run after a
    /// crash then knows the file as its own).
    fn record_output(&mut self, id: JobId, path: &Path) -> Result<(), StoreError>;
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
}
