//! Durable job queue: the job model, the SQLite journal, workers and progress events.
//!
//! # The API the TUI and `atelier watch` use (keep it small and stable)
//!
//! * [`Queue::open`]`(store, runners, QueueSettings) -> Result<Queue, QueueError>`: requeues
//!   jobs a crash left `running` (cleaning their temp files) and starts the workers.
//! * [`Queue::enqueue`]`(kind, path, options, priority) -> Result<JobId, QueueError>`
//! * [`Queue::retry`]`(id)`, [`Queue::cancel`]`(id)`, [`Queue::reprioritize`]`(id, priority)`:
//!   `-> Result<bool, QueueError>` (false: the job was not in a state that allows it).
//! * [`Queue::subscribe`]`() -> std::sync::mpsc::Receiver<JobEvent>`: every event from now on.
//! * [`Queue::list`]`(&JobFilter) -> Result<Vec<Job>, QueueError>`, [`Queue::get`]`(id)`.
//! * [`Queue::shutdown`]`()`: stops the workers; a running job is cancelled and requeued.
//! * Types: [`Job`], [`JobId`], [`JobKind`], [`JobState`], [`JobOptions`], [`JobEvent`],
//!   [`JobFilter`], [`Priority`]; storage behind [`JobStore`] ([`SqliteStore`]);
//!   job kinds behind [`Runner`] ([`Runners`]).
//!
//! Outputs are exactly-once: each is written to `.atelier-jobID-XXXXXXXX.tmp` in its final
//! folder, fsynced and renamed without replacing anything but an earlier output of the same
//! input (else it takes `NAME.1.EXT`), and only then is the job marked done, in the same
//! transaction as its output records. A running job is held by a lease that its worker's
//! heartbeat renews; a job whose lease expired (its process or machine died) counts a crash
//! and is re-run by any worker, until `max_crashes` crashes fail it; its temp files are
//! removed. The journal is SQLite ([`SqliteStore`]) or a shared PostgreSQL ([`PgStore`]).
mod backend;
mod postgres;
mod queue;
mod runner;
pub mod runners;
mod sqlite;
mod store;

pub use backend::{open_store, QueueLocation};
pub use postgres::PgStore;
pub use queue::{fingerprint, take_back_orphans, Queue, QueueSettings};
pub use runner::{
    is_temp_name, remove_temp_files, temp_path, write_output, OutputLedger, RunContext, RunError,
    Runner, Runners,
};
pub use sqlite::{default_path, expand_home, journal_path, SqliteStore};
pub use store::{
    dedup_key, host_name, new_token, CancelOutcome, JobStore, NewJob, StoreError, WorkerInfo,
    WorkerRow,
};

pub use crate::domain::{JobId, JobKind, JobState};
use crate::transcript::Segment;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Higher runs first. Interactive work from the TUI goes ahead of watch-folder batches.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Priority(pub i32);

impl Priority {
    pub const BATCH: Priority = Priority(0);
    pub const INTERACTIVE: Priority = Priority(10);
}

/// What happens to the input once its job is done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnDone {
    #[default]
    Keep,
    /// Move the input into [`JobOptions::done_dir`].
    Move,
}

/// A job's options; absent values take the config's defaults when the job runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct JobOptions {
    /// Model name in the store.
    pub model: Option<String>,
    /// transcribe: spoken language (code or name).
    pub language: Option<String>,
    /// transcribe: output formats (txt, srt, vtt, tsv, json, all); empty: the config's.
    pub formats: Vec<String>,
    /// transcribe: Silero VAD on or off.
    pub vad: Option<bool>,
    /// transcribe: beam size (1: greedy).
    pub beam_size: Option<usize>,
    /// transcribe: tell speakers apart (diarization; needs the VAD).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diarize: Option<bool>,
    /// transcribe, diarized: exactly this many speakers, else estimated within the bounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speakers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_speakers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_speakers: Option<usize>,
    /// tag: a label set name or file.
    pub labels: Option<String>,
    /// tag: labels to keep.
    pub top_k: Option<usize>,
    /// index: the index database.
    pub index: Option<PathBuf>,
    /// The folder outputs go to; none: beside the input.
    pub output_dir: Option<PathBuf>,
    pub on_done: OnDone,
    /// With `on_done = move`: the folder the input is moved into.
    pub done_dir: Option<PathBuf>,
    /// The watch profile that queued the job, if any.
    pub profile: Option<String>,
    /// Folders the input and outputs must resolve inside, links followed (a watch rule's
    /// folder, its output and done folders); empty: anywhere. The first holds the input.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roots: Vec<PathBuf>,
}

/// A job as the journal holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub id: JobId,
    pub kind: JobKind,
    #[serde(serialize_with = "lossy_path")]
    pub input: PathBuf,
    pub options: JobOptions,
    pub state: JobState,
    pub priority: Priority,
    /// Runs started so far (a retry after a failure or a crash adds one).
    pub attempts: u32,
    pub max_attempts: u32,
    pub error: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// A queued job waits until then (retry backoff).
    pub not_before: i64,
    /// The input's size and mtime (ns) when it was queued.
    pub input_size: Option<u64>,
    pub input_mtime_ns: Option<i64>,
    /// Times the process died while running this job (see [`QueueSettings::max_crashes`]).
    pub crashes: u32,
    #[serde(serialize_with = "lossy_paths")]
    pub outputs: Vec<PathBuf>,
    /// The host and device of the worker that claimed it last (where it runs or ran).
    pub host: Option<String>,
    pub device: Option<String>,
    /// That worker's id ([`WorkerInfo::id`]).
    pub worker: Option<String>,
    /// The claim token of its current run: the owner's proof (never printed).
    #[serde(skip)]
    pub claim: Option<String>,
    /// Until when its owner's lease runs (unix ms); past it the job is an orphan.
    pub lease_until: Option<i64>,
    /// When the journal last changed this job (unix ms; what a viewer polls for).
    pub updated_at: i64,
}

impl Job {
    /// The folder outputs go to: the option's, or the input's own.
    pub fn output_dir(&self) -> PathBuf {
        match &self.options.output_dir {
            Some(d) => d.clone(),
            None => self
                .input
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        }
    }
}

/// Something that happened to a job. One channel carries all of them (see [`Queue::subscribe`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum JobEvent {
    Queued {
        id: JobId,
        kind: JobKind,
        #[serde(serialize_with = "lossy_path")]
        input: PathBuf,
        priority: Priority,
    },
    Started {
        id: JobId,
        attempt: u32,
    },
    /// `fraction` in 0..=1 when known.
    Progress {
        id: JobId,
        fraction: Option<f32>,
        message: String,
    },
    /// A piece of output as it is produced: `text` always; a transcribe job adds the whole
    /// `segment` (times, tokens, words), so a viewer can show it as it decodes.
    Partial {
        id: JobId,
        text: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        segment: Option<Box<Segment>>,
    },
    Done {
        id: JobId,
        #[serde(serialize_with = "lossy_paths")]
        outputs: Vec<PathBuf>,
    },
    /// `retry_at` (unix ms) when it will be tried again; none: it is `failed` for good.
    Failed {
        id: JobId,
        error: String,
        retry_at: Option<i64>,
    },
    Cancelled {
        id: JobId,
    },
    /// Back to `queued` (a retry, a new priority, or a shutdown that stopped it).
    Requeued {
        id: JobId,
        priority: Priority,
    },
}

impl JobEvent {
    pub fn id(&self) -> JobId {
        match self {
            JobEvent::Queued { id, .. }
            | JobEvent::Started { id, .. }
            | JobEvent::Progress { id, .. }
            | JobEvent::Partial { id, .. }
            | JobEvent::Done { id, .. }
            | JobEvent::Failed { id, .. }
            | JobEvent::Cancelled { id }
            | JobEvent::Requeued { id, .. } => *id,
        }
    }
}

/// Which jobs [`Queue::list`] returns; empty fields match everything. Newest last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    pub states: Vec<JobState>,
    pub kinds: Vec<JobKind>,
    /// Jobs of this input path.
    pub input: Option<PathBuf>,
    /// At most this many (the newest).
    pub limit: Option<usize>,
    /// Only jobs changed at or after this time (unix ms; see [`Job::updated_at`]).
    pub changed_since: Option<i64>,
}

/// Errors of the queue handle.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}: no such job")]
    NoSuchJob(JobId),
    #[error("cannot start the queue workers: {0}")]
    Spawn(std::io::Error),
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn lossy_path<S: serde::Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

fn lossy_paths<S: serde::Serializer>(ps: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ps.iter().map(|p| p.to_string_lossy()))
}
