//! What runs a job of one kind, and the exactly-once output writes every kind uses.
use super::{Job, JobEvent, JobId, JobKind};
use crate::engine::CancelToken;
use crate::transcript::Segment;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
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

/// What a running job sees: its cancel token and a way to report progress.
pub struct RunContext {
    pub id: JobId,
    pub cancel: CancelToken,
    emit: Box<dyn Fn(JobEvent) + Send + Sync>,
}

impl RunContext {
    pub fn new(id: JobId, cancel: CancelToken, emit: Box<dyn Fn(JobEvent) + Send + Sync>) -> Self {
        RunContext { id, cancel, emit }
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

    /// [`write_output`] for this job.
    pub fn write(&self, path: &Path, bytes: &[u8]) -> Result<PathBuf, RunError> {
        write_output(self.id, path, bytes)
            .map(|()| path.to_path_buf())
            .map_err(|e| RunError::Transient(e.to_string()))
    }
}

/// The temp file an output of job `id` is written through: `.NAME.atelier-jobID.tmp`.
pub fn temp_path(id: JobId, path: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(temp_suffix(id));
    path.with_file_name(name)
}

fn temp_suffix(id: JobId) -> String {
    format!(".atelier-job{id}.tmp")
}

/// Whether `name` is a temp file of some job (the watcher never takes these).
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp") && name.contains(".atelier-job")
}

/// Writes `bytes` to `path` (creating its folder) so it is never seen half-written: a temp
/// file in the same folder named after the job, fsynced, renamed over `path`, then the
/// folder is fsynced. A crash leaves at most the temp file, which [`remove_temp_files`]
/// cleans when the job is re-run.
pub fn write_output(id: JobId, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let tmp = temp_path(id, path);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let written = (|| {
        std::fs::create_dir_all(dir)?;
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(named)
}

/// Removes job `id`'s temp files from `dir`; returns how many.
pub fn remove_temp_files(id: JobId, dir: &Path) -> usize {
    let suffix = temp_suffix(id);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.')
            && name.ends_with(&suffix)
            && std::fs::remove_file(entry.path()).is_ok()
        {
            tracing::info!("removed the half-written {}", entry.path().display());
            removed += 1;
        }
    }
    removed
}
