//! What runs a job of one kind, and the exactly-once output writes every kind uses.
use super::{Job, JobEvent, JobId, JobKind};
use crate::engine::CancelToken;
use crate::media::resolves_inside;
use crate::output::atomic::{write_new, TEMP_PREFIX};
use crate::transcript::Segment;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a run did not finish. Errors about the input itself (unreadable, corrupt) are
/// permanent; others (a full disk, a stopped model thread) are retried with backoff.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Permanent(String),
    #[error("{0}")]
    Transient(String),
    #[error("cancelled")]
    Cancelled,
}

/// The model thread's error, kind for kind; a panic is retried like one in a runner.
impl From<crate::engine::runtime::ModelJobError> for RunError {
    fn from(e: crate::engine::runtime::ModelJobError) -> Self {
        use crate::engine::runtime::ModelJobError as M;
        match e {
            M::Permanent(m) => RunError::Permanent(m),
            M::Transient(m) => RunError::Transient(m),
            M::Cancelled => RunError::Cancelled,
            M::Panicked(m) => RunError::Transient(format!("the job crashed: {m}")),
        }
    }
}

/// Runs jobs of one kind. Implementations keep their models loaded between jobs.
pub trait Runner: Send + Sync {
    /// Runs `job`, writing each output with [`write_output`] (or `ctx.write`), and returns
    /// the outputs' paths. Check `ctx.cancel` between steps.
    fn run(&self, job: &Job, ctx: &RunContext) -> Result<Vec<PathBuf>, RunError>;

    /// Loads `model` (none: the config's) now and keeps it warm, so a missing model fails
    /// before any job (`atelier watch` calls it once per model its rules name).
    fn preload(&self, model: Option<&str>) -> Result<(), String> {
        let _ = model;
        Ok(())
    }
}

/// The runner of each kind. A kind without one fails its jobs with a clear message.
#[derive(Clone, Default)]
pub struct Runners {
    map: HashMap<JobKind, Arc<dyn Runner>>,
    /// Claim only jobs of the kinds here (a process sharing its journal leaves the others to
    /// a process that runs them).
    own_kinds_only: bool,
}

impl Runners {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the runner of `kind` (the lead wires `Generate` here once diffusion is merged).
    pub fn insert(&mut self, kind: JobKind, runner: Arc<dyn Runner>) -> &mut Self {
        self.map.insert(kind, runner);
        self
    }

    pub fn get(&self, kind: JobKind) -> Option<&Arc<dyn Runner>> {
        self.map.get(&kind)
    }

    /// The queue then claims only jobs of the kinds with a runner here; by default it claims
    /// every job and fails those of a kind it cannot run.
    pub fn own_kinds_only(mut self) -> Self {
        self.own_kinds_only = true;
        self
    }

    /// The kinds this queue claims: none means every kind.
    pub fn claimed_kinds(&self) -> Option<Vec<JobKind>> {
        self.own_kinds_only.then(|| {
            JobKind::ALL
                .iter()
                .map(|(k, _)| *k)
                .filter(|k| self.map.contains_key(k))
                .collect()
        })
    }

    /// Why a kind cannot run in this build.
    pub fn missing(kind: JobKind) -> String {
        match kind {
            JobKind::Generate => {
                "generate: Stable Diffusion is not available in this build".to_string()
            }
            other => format!("{other}: this job kind is not available in this process"),
        }
    }
}

/// What the journal knows about a job's outputs (the queue gives each job one).
pub trait OutputLedger: Send + Sync {
    /// Whether this job may replace `path`: a recorded output of a job of the same input
    /// and kind. Any other file is the user's.
    fn may_replace(&self, path: &Path) -> bool;
    /// Whether the job may still write: false once its lease is lost (another worker owns
    /// the job now), so a worker that stalled never puts a late output in place.
    fn may_write(&self) -> bool {
        true
    }
    /// Records `path` as this job's output as soon as it is in place, so a re-run after a
    /// crash replaces it instead of writing a copy.
    fn record(&self, path: &Path);
}

/// What a running job sees: its cancel token and a way to report progress.
pub struct RunContext {
    pub id: JobId,
    pub cancel: CancelToken,
    emit: Box<dyn Fn(JobEvent) + Send + Sync>,
    ledger: Option<Arc<dyn OutputLedger>>,
    /// Outputs must resolve inside one of these (empty: anywhere).
    roots: Vec<PathBuf>,
}

impl RunContext {
    pub fn new(id: JobId, cancel: CancelToken, emit: Box<dyn Fn(JobEvent) + Send + Sync>) -> Self {
        RunContext {
            id,
            cancel,
            emit,
            ledger: None,
            roots: Vec::new(),
        }
    }

    /// Outputs never replace a file `ledger` does not know as this input's.
    pub fn with_ledger(mut self, ledger: Arc<dyn OutputLedger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// Outputs must resolve (links followed) inside one of `roots`.
    pub fn confined_to(mut self, roots: Vec<PathBuf>) -> Self {
        self.roots = roots;
        self
    }
    /// `fraction` in 0..=1 when known.
    pub fn progress(&self, fraction: Option<f32>, message: impl Into<String>) {
        (self.emit)(JobEvent::Progress {
            id: self.id,
            fraction,
            message: message.into(),
        });
    }

    /// A piece of output as it is produced.
    pub fn partial(&self, text: impl Into<String>) {
        (self.emit)(JobEvent::Partial {
            id: self.id,
            text: text.into(),
            segment: None,
        });
    }

    /// A transcript segment as it is decoded (its text and the whole segment).
    pub fn segment(&self, segment: Segment) {
        (self.emit)(JobEvent::Partial {
            id: self.id,
            text: segment.text.clone(),
            segment: Some(Box::new(segment)),
        });
    }

    pub fn check_cancel(&self) -> Result<(), RunError> {
        if self.cancel.is_cancelled() {
            Err(RunError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Writes one output of this job ([`write_output`]), inside its roots, never over a
    /// user's file: on a clash it takes `NAME.1.EXT` and says so. Returns the path written.
    pub fn write(&self, path: &Path, bytes: &[u8]) -> Result<PathBuf, RunError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| {
            RunError::Transient(format!(
                "{}: cannot create the output folder: {e}",
                dir.display()
            ))
        })?;
        if !self.roots.is_empty() && !self.roots.iter().any(|r| resolves_inside(dir, r)) {
            return Err(RunError::Permanent(format!(
                "{}: the output folder resolves outside {} (a symbolic link?): not written",
                dir.display(),
                self.roots[0].display()
            )));
        }
        if self.ledger.as_ref().is_some_and(|l| !l.may_write()) {
            return Err(RunError::Cancelled);
        }
        let ledger = self.ledger.clone();
        let may_replace = move |p: &Path| ledger.as_ref().is_none_or(|l| l.may_replace(p));
        let written = write_output_checked(self.id, path, bytes, &may_replace)
            .map_err(|e| RunError::Transient(e.to_string()))?;
        if let Some(l) = &self.ledger {
            l.record(&written);
        }
        if written.as_path() != path {
            let note = format!(
                "{} exists and is not an output of this input: wrote {}",
                path.display(),
                written.display()
            );
            tracing::warn!("job {}: {note}", self.id);
            self.progress(None, note);
        }
        Ok(written)
    }
}

/// How every temp file of job `id` starts: `.atelier-jobID-` (then random, then `.tmp`).
fn temp_prefix(id: JobId) -> String {
    format!("{TEMP_PREFIX}job{id}-")
}

/// A temp file name job `id` might leave in `path`'s folder (tests of crash clean-up).
pub fn temp_path(id: JobId, path: &Path) -> PathBuf {
    path.with_file_name(format!("{}crash.tmp", temp_prefix(id)))
}

/// Whether `name` is a temp file of some job (the watcher never takes these). Also the
/// `.NAME.atelier-jobN.tmp` names of older builds.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.')
        && name.ends_with(".tmp")
        && (name.starts_with(TEMP_PREFIX) || name.contains(".atelier-job"))
}

/// Writes `bytes` to `path` (creating its folder) so it is never seen half-written: the
/// one atomic-write helper ([`crate::output::atomic::write_new`]) with a temp name of job
/// `id`; a crash leaves at most the temp file, which [`remove_temp_files`] cleans when the
/// job is re-run. Replaces an existing file (use [`RunContext::write`] in a job).
pub fn write_output(id: JobId, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    }
    write_output_checked(id, path, bytes, &|_| true).map(|_| ())
}

fn write_output_checked(
    id: JobId,
    path: &Path,
    bytes: &[u8],
    may_replace: &dyn Fn(&Path) -> bool,
) -> io::Result<PathBuf> {
    write_new(path, bytes, &temp_prefix(id), may_replace)
}

/// Removes job `id`'s temp files from `dir`; returns how many.
pub fn remove_temp_files(id: JobId, dir: &Path) -> usize {
    let (prefix, suffix) = (temp_prefix(id), format!(".atelier-job{id}.tmp"));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = name.starts_with(&prefix) && name.ends_with(".tmp")
            || name.starts_with('.') && name.ends_with(&suffix);
        if ours && std::fs::remove_file(entry.path()).is_ok() {
            tracing::info!("removed the half-written {}", entry.path().display());
            removed += 1;
        }
    }
    removed
}
