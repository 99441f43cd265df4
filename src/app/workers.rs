//! Work the UI thread never does: scanning folders, the job queue (shared with `atelier
//! watch` through its journal), transcript and sidecar writes (CLIP jobs: clip.rs). Every worker reports back as
//! `Action::Event` on the one event channel.
use super::Msg;
use crate::config::Config;
use crate::engine::{store, DeviceThread, InstalledModel};
use crate::jobs::{
    self, runners, Job, JobEvent, JobFilter, JobId, JobKind, JobOptions, Priority, Queue,
    QueueSettings,
};
use crate::media::{walk, MediaKind};
use crate::output::registry::OutputRegistry;
use crate::output::sidecar;
use crate::output::writers::{self, Format, WriterOptions};
use crate::state::{Action, Event, Found, JobState, JobUpdate};
use crate::transcript::{Segment, Transcript};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn send(tx: &Sender<Msg>, ev: Event) {
    let _ = tx.send(Msg::Action(Action::Event(ev)));
}

/// Audio and images: what the library lists from the opened folders.
fn listed(path: &Path) -> bool {
    matches!(MediaKind::of(path), MediaKind::Audio | MediaKind::Image)
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{stem}{suffix}"))
}

/// A listed file with what is already beside it: a transcript (shown instead of made again)
/// or an image's tags sidecar.
fn found(path: PathBuf) -> Found {
    let kind = MediaKind::of(&path);
    let transcript = (kind == MediaKind::Audio)
        .then(|| std::fs::read_to_string(sibling(&path, ".json")).ok())
        .flatten()
        .and_then(|t| serde_json::from_str::<Transcript>(&t).ok());
    let tags = (kind == MediaKind::Image)
        .then(|| sidecar::read(&path))
        .flatten();
    Found {
        path,
        kind,
        transcript,
        tags,
    }
}

/// Lists the folders (and files) given on the command line, off the UI thread.
pub fn scan(inputs: Vec<PathBuf>, tx: Sender<Msg>) {
    std::thread::spawn(move || {
        let mut found: Vec<Found> = Vec::new();
        let mut errors = Vec::new();
        for input in &inputs {
            let input = std::path::absolute(input).unwrap_or_else(|_| input.clone());
            if input.is_dir() {
                let mut files = Vec::new();
                walk(&input, &listed, &mut files, &mut errors);
                found.extend(files.into_iter().map(self::found));
            } else if input.is_file() && listed(&input) {
                found.push(self::found(input));
            } else {
                errors.push(format!("{}: not a folder or a media file", input.display()));
            }
        }
        for e in errors {
            send(&tx, Event::Error(e));
        }
        send(&tx, Event::Found(found));
    });
}

/// The model thread, started on first use so the first frame never waits for it.
#[derive(Clone)]
pub struct Engine {
    device: crate::config::DeviceChoice,
    pub models_dir: PathBuf,
    thread: Arc<Mutex<Option<DeviceThread>>>,
}

impl Engine {
    pub fn new(device: crate::config::DeviceChoice, models_dir: PathBuf) -> Self {
        Engine {
            device,
            models_dir,
            thread: Arc::new(Mutex::new(None)),
        }
    }

    pub(super) fn thread(&self) -> Result<DeviceThread, String> {
        let mut slot = self
            .thread
            .lock()
            .map_err(|_| "the model thread lock is poisoned")?;
        if let Some(t) = slot.as_ref() {
            return Ok(t.clone());
        }
        let device =
            crate::engine::runtime::resolve_device(self.device).map_err(|e| e.to_string())?;
        let t = DeviceThread::shared(device)
            .map_err(|e| format!("cannot start the model thread: {e}"))?;
        *slot = Some(t.clone());
        Ok(t)
    }

    pub(super) fn model(&self, name: &str, family: &str) -> Result<InstalledModel, String> {
        store::find(&self.models_dir, name, family).map_err(|e| e.to_string())
    }
}

/// What the panes ask of the queue.
enum Op {
    Transcribe(Vec<PathBuf>),
    /// Transcribe again, diarized.
    Diarize(PathBuf),
    Retry(JobId),
    Cancel(JobId),
    Reprioritize(JobId, i32),
}

enum Slot {
    /// Opening (off the UI thread); what was asked meanwhile waits here.
    Opening(Vec<Op>),
    Open(Queue),
    Failed,
}

/// The TUI's handle on the durable job queue: the journal `atelier watch` and `atelier
/// queue` use ([queue] path, else the default), runners for every kind on the model
/// thread, its events and the journal's changes (other processes' jobs too) turned into
/// `Event::Jobs` for the library pane.
#[derive(Clone)]
pub struct JobQueue {
    slot: Arc<Mutex<Slot>>,
    tx: Sender<Msg>,
}

impl JobQueue {
    /// Opens the journal and starts the workers off the UI thread.
    pub fn open(engine: Engine, config: Config, tx: Sender<Msg>) -> Self {
        let me = JobQueue {
            slot: Arc::new(Mutex::new(Slot::Opening(Vec::new()))),
            tx: tx.clone(),
        };
        let handle = me.clone();
        std::thread::spawn(move || {
            let opened = open_queue(&engine, &config);
            let waiting = {
                let Ok(mut slot) = handle.slot.lock() else {
                    return;
                };
                let next = match &opened {
                    Ok(q) => Slot::Open(q.clone()),
                    Err(_) => Slot::Failed,
                };
                match std::mem::replace(&mut *slot, next) {
                    Slot::Opening(ops) => ops,
                    _ => Vec::new(),
                }
            };
            match opened {
                Ok(queue) => {
                    let events = queue.subscribe();
                    for op in waiting {
                        handle.apply(&queue, op);
                    }
                    follow(&queue, &events, &config.whisper.model, &tx);
                }
                Err(e) => send(&tx, Event::Error(format!("job queue: {e}"))),
            }
        });
        me
    }

    pub fn transcribe(&self, paths: Vec<PathBuf>) {
        self.run(Op::Transcribe(paths));
    }

    pub fn diarize(&self, path: PathBuf) {
        self.run(Op::Diarize(path));
    }

    pub fn retry(&self, id: JobId) {
        self.run(Op::Retry(id));
    }

    pub fn cancel(&self, id: JobId) {
        self.run(Op::Cancel(id));
    }

    pub fn reprioritize(&self, id: JobId, priority: i32) {
        self.run(Op::Reprioritize(id, priority));
    }

    /// The files the journal records as outputs of `input`'s latest `kind` job (the queue's
    /// transcripts, which a save from the transcript pane replaces).
    pub fn outputs_of(&self, input: &Path, kind: JobKind) -> Vec<PathBuf> {
        let queue = match self.slot.lock().as_deref() {
            Ok(Slot::Open(q)) => Some(q.clone()),
            _ => None,
        };
        queue
            .and_then(|q| q.latest_for(input, kind).ok().flatten())
            .filter(|j| j.state == crate::jobs::JobState::Done)
            .map(|j| j.outputs)
            .unwrap_or_default()
    }

    /// Stops the workers: a running job is queued again (`atelier watch` or the next start
    /// runs it).
    pub fn shutdown(&self) {
        let queue = match self.slot.lock().as_deref() {
            Ok(Slot::Open(q)) => Some(q.clone()),
            _ => None,
        };
        if let Some(q) = queue {
            q.shutdown();
        }
    }

    fn run(&self, op: Op) {
        let queue = {
            let Ok(mut slot) = self.slot.lock() else {
                return;
            };
            match &mut *slot {
                Slot::Opening(ops) => return ops.push(op),
                Slot::Open(q) => q.clone(),
                Slot::Failed => {
                    return send(&self.tx, Event::Error("the job queue is not open".into()))
                }
            }
        };
        // Journal writes wait on SQLite locks other processes may hold: off the UI thread.
        let me = self.clone();
        std::thread::spawn(move || me.apply(&queue, op));
    }

    fn apply(&self, queue: &Queue, op: Op) {
        let result = match op {
            Op::Transcribe(paths) => paths.iter().try_for_each(|p| {
                // A file with a queued or running transcription is not queued twice.
                let busy = queue
                    .latest_for(p, JobKind::Transcribe)?
                    .is_some_and(|j| !j.state.is_finished());
                if !busy {
                    queue.enqueue(
                        JobKind::Transcribe,
                        p,
                        JobOptions::default(),
                        Priority::INTERACTIVE,
                    )?;
                }
                Ok(())
            }),
            Op::Diarize(p) => (|| {
                let busy = queue
                    .latest_for(&p, JobKind::Transcribe)?
                    .is_some_and(|j| !j.state.is_finished());
                if busy {
                    send(
                        &self.tx,
                        Event::Info(format!(
                            "{}: being transcribed: diarize it when that is done",
                            p.display()
                        )),
                    );
                    return Ok(());
                }
                let options = JobOptions {
                    diarize: Some(true),
                    ..JobOptions::default()
                };
                queue
                    .enqueue(JobKind::Transcribe, &p, options, Priority::INTERACTIVE)
                    .map(|_| ())
            })(),
            Op::Retry(id) => queue.retry(id).map(|ok| self.refused(ok, id, "retry")),
            Op::Cancel(id) => queue.cancel(id).map(|ok| self.refused(ok, id, "cancel")),
            Op::Reprioritize(id, p) => queue
                .reprioritize(id, Priority(p))
                .map(|ok| self.refused(ok, id, "re-prioritize")),
        };
        if let Err(e) = result {
            send(&self.tx, Event::Error(format!("job queue: {e}")));
        }
    }

    fn refused(&self, ok: bool, id: JobId, what: &str) {
        if !ok {
            send(
                &self.tx,
                Event::Info(format!("job {id}: nothing to {what} (it has moved on)")),
            );
        }
    }
}

fn open_queue(engine: &Engine, config: &Config) -> Result<Queue, String> {
    let journal = jobs::QueueLocation::resolve(config, None);
    let store = jobs::open_store(&journal).map_err(|e| e.to_string())?;
    let thread = engine.thread()?;
    // The kind the TUI queues (and checksums, always built): a daemon's CLIP and SD batches
    // stay with the daemon, so the TUI never loads those models for them.
    let runners = runners::build(config, &[JobKind::Transcribe], &thread, &engine.models_dir)
        .own_kinds_only();
    let settings = QueueSettings::from_config(&config.queue, thread.device.is_cuda());
    tracing::info!("job journal {}", journal.describe());
    Queue::open(store, runners, settings).map_err(|e| e.to_string())
}

/// How often the journal is read for changes made by other processes.
const POLL: Duration = Duration::from_secs(1);
/// The newest jobs the pane follows.
const FOLLOWED: usize = 10_000;

/// What the pane was last told about a job.
struct Seen {
    update: JobUpdate,
    /// The model the job names (none: the config's).
    model: Option<String>,
    started_at: Option<i64>,
    /// The segments streamed by this process's run, for a transcript without a JSON output.
    segments: Vec<Segment>,
}

/// Turns the queue's events and the journal's changes into `Event::Jobs`. A job's state is
/// always read back from the journal (one thread, reads in order), so an event that arrives
/// late never puts an older state back on screen.
fn follow(queue: &Queue, events: &mpsc::Receiver<JobEvent>, whisper_model: &str, tx: &Sender<Msg>) {
    let mut seen: HashMap<JobId, Seen> = HashMap::new();
    // Whisper models this process has loaded, and the runs still loading theirs.
    let mut loaded: HashSet<String> = HashSet::new();
    let mut loading: HashMap<JobId, String> = HashMap::new();
    let mut last_poll: Option<Instant> = None;
    // The first read lists the history: its transcripts are not loaded (the opened folders'
    // are, from beside their audio).
    let mut history = true;
    loop {
        if last_poll.is_none_or(|t| t.elapsed() >= POLL) {
            let filter = JobFilter {
                limit: Some(FOLLOWED),
                ..JobFilter::default()
            };
            match queue.list(&filter) {
                Ok(list) => {
                    let live = !std::mem::take(&mut history);
                    let changed: Vec<JobUpdate> = list
                        .iter()
                        .filter_map(|j| note(&mut seen, j, live, tx))
                        .collect();
                    if !changed.is_empty() && !send_ok(tx, Event::Jobs(changed)) {
                        return;
                    }
                }
                Err(e) => tracing::warn!("job journal: {e}"),
            }
            last_poll = Some(Instant::now());
        }
        let wait = last_poll.map_or(POLL, |t| POLL.saturating_sub(t.elapsed()));
        let event = match events.recv_timeout(wait) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let id = event.id();
        if !seen.contains_key(&id)
            || !matches!(event, JobEvent::Progress { .. } | JobEvent::Partial { .. })
        {
            if let Ok(Some(job)) = queue.get(id) {
                if let Some(u) = note(&mut seen, &job, true, tx) {
                    if !send_ok(tx, Event::Jobs(vec![u])) {
                        return;
                    }
                }
            }
        }
        let Some(s) = seen.get_mut(&id) else { continue };
        // The status bar's model: loading from a run's start here until its first output.
        let model = match &event {
            JobEvent::Started { .. } if s.update.kind == JobKind::Transcribe => {
                let name = s.model.clone().unwrap_or_else(|| whisper_model.to_string());
                (!loaded.contains(&name)).then(|| {
                    loading.insert(id, name.clone());
                    (name, Some("loading".to_string()))
                })
            }
            JobEvent::Progress { .. } | JobEvent::Partial { .. } | JobEvent::Done { .. } => {
                loading.remove(&id).map(|name| {
                    loaded.insert(name.clone());
                    (name, None)
                })
            }
            JobEvent::Failed { .. } | JobEvent::Cancelled { .. } | JobEvent::Requeued { .. } => {
                loading
                    .remove(&id)
                    .map(|name| (name, Some("not loaded".to_string())))
            }
            _ => None,
        };
        if let Some((name, status)) = model {
            if !send_ok(tx, Event::Model { name, status }) {
                return;
            }
        }
        match event {
            JobEvent::Progress {
                fraction: Some(f), ..
            } if s.update.state == JobState::Running => {
                s.update.progress = f64::from(f).clamp(0.0, 1.0);
                s.update.eta = eta(s.started_at, s.update.progress);
                if !send_ok(tx, Event::Jobs(vec![s.update.clone()])) {
                    return;
                }
            }
            JobEvent::Partial {
                segment: Some(segment),
                ..
            } if s.update.kind == JobKind::Transcribe && s.update.state == JobState::Running => {
                s.segments.push((*segment).clone());
                let ev = Event::Segment {
                    path: s.update.path.clone(),
                    segment: *segment,
                };
                if !send_ok(tx, ev) {
                    return;
                }
            }
            _ => {}
        }
    }
}

fn send_ok(tx: &Sender<Msg>, ev: Event) -> bool {
    tx.send(Msg::Action(Action::Event(ev))).is_ok()
}

/// Seconds left from the progress so far and when the run started (unix ms).
fn eta(started_at: Option<i64>, progress: f64) -> Option<f64> {
    let elapsed = (jobs::now_ms() - started_at?) as f64 / 1000.0;
    (progress > 0.02 && elapsed > 0.0).then(|| elapsed * (1.0 - progress) / progress)
}

/// Records `job`; returns its update when the pane must hear of it. A transcription that
/// has just finished also sends its transcript (when `live`: not for the history).
fn note(
    seen: &mut HashMap<JobId, Seen>,
    job: &Job,
    live: bool,
    tx: &Sender<Msg>,
) -> Option<JobUpdate> {
    let state = JobState::of(job.state);
    let prev = seen.get(&job.id);
    let unchanged = prev.is_some_and(|s| {
        s.update.state == state
            && s.update.priority == job.priority.0
            && s.update.error == job.error
            && s.started_at == job.started_at
    });
    if unchanged {
        return None;
    }
    let (progress, eta) = match state {
        JobState::Done => (1.0, None),
        // Progress is only known from this process's events; keep it across a priority change.
        JobState::Running => prev
            .filter(|s| s.started_at == job.started_at)
            .map_or((0.0, None), |s| (s.update.progress, s.update.eta)),
        _ => (0.0, None),
    };
    let update = JobUpdate {
        id: job.id,
        kind: job.kind,
        path: job.input.clone(),
        state,
        priority: job.priority.0,
        progress,
        eta,
        error: job.error.clone(),
    };
    let was_done = prev.is_some_and(|s| s.update.state == JobState::Done);
    let mut segments = match seen.remove(&job.id) {
        Some(s) if s.started_at == job.started_at => s.segments,
        _ => Vec::new(),
    };
    if live && state == JobState::Done && !was_done && job.kind == JobKind::Transcribe {
        if let Some(transcript) = finished_transcript(job, &segments) {
            // The update goes first so the file is listed when its transcript arrives.
            let _ = send_ok(tx, Event::Jobs(vec![update.clone()]));
            let _ = send_ok(
                tx,
                Event::TranscriptDone {
                    path: job.input.clone(),
                    transcript,
                },
            );
        }
        segments.clear();
    }
    seen.insert(
        job.id,
        Seen {
            update: update.clone(),
            model: job.options.model.clone(),
            started_at: job.started_at,
            segments,
        },
    );
    Some(update)
}

/// A done transcription's transcript: its `NAME.json` output, else the segments streamed
/// here (when json is not among the formats).
fn finished_transcript(job: &Job, segments: &[Segment]) -> Option<Transcript> {
    let json = job.outputs.iter().find(|p| {
        p.extension().is_some_and(|e| e == "json") && !p.to_string_lossy().ends_with(".tags.json")
    });
    if let Some(p) = json {
        match std::fs::read_to_string(p)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Transcript>(&t).map_err(|e| e.to_string()))
        {
            Ok(t) => return Some(t),
            Err(e) => tracing::warn!("{}: cannot read the transcript: {e}", p.display()),
        }
    }
    (!segments.is_empty()).then(|| Transcript {
        text: segments.iter().map(|s| s.text.as_str()).collect(),
        segments: segments.to_vec(),
        language: String::new(),
    })
}

fn formats_of(names: &[String]) -> Vec<Format> {
    let mut out = Vec::new();
    for n in names {
        for f in Format::parse(n).unwrap_or_default() {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    if out.is_empty() {
        Format::all()
    } else {
        out
    }
}

/// Rewrites a transcript's output files (each atomically) after an edit or for an export.
pub fn save_transcript(
    media: PathBuf,
    transcript: Transcript,
    formats: Vec<String>,
    queue: JobQueue,
    config: &Config,
    tx: Sender<Msg>,
) {
    let from_config = formats.is_empty();
    let names = if from_config {
        config.whisper.output_formats.clone()
    } else {
        formats
    };
    let mut parsed = Vec::new();
    for n in &names {
        match Format::parse(n) {
            Ok(f) => parsed.extend(f),
            Err(e) => return send(&tx, Event::Error(format!("export: {e}"))),
        }
    }
    let mut formats = if parsed.is_empty() {
        formats_of(&names)
    } else {
        parsed
    };
    // A diarized transcript's files include its RTTM (as the queue wrote them).
    let speakers = transcript.segments.iter().any(|s| s.speaker.is_some());
    if from_config && speakers && !formats.contains(&Format::Rttm) {
        formats.push(Format::Rttm);
    }
    std::thread::spawn(move || {
        let dir = media.parent().unwrap_or(Path::new(".")).to_path_buf();
        let registry = OutputRegistry::open_default();
        adopt_queue_outputs(
            registry.as_ref(),
            &queue,
            &media,
            JobKind::Transcribe,
            writers::KIND,
        );
        match writers::write_files(
            registry.as_ref(),
            &dir,
            &media,
            &formats,
            &transcript,
            &WriterOptions::default(),
        ) {
            Ok(files) => send(&tx, Event::Saved { path: media, files }),
            Err(e) => send(
                &tx,
                Event::Error(format!(
                    "{}: cannot write the transcript files: {e}",
                    dir.display()
                )),
            ),
        }
    });
}

/// Writes (or, for None, removes) `NAME.tags.json` and the caption `NAME.txt` of each image.
/// The queue's own outputs of `input` (its latest done `job_kind` job, recorded in the
/// journal) are the TUI's to replace too: recorded as `kind` outputs in the output record.
fn adopt_queue_outputs(
    registry: Option<&OutputRegistry>,
    queue: &JobQueue,
    input: &Path,
    job_kind: JobKind,
    kind: &str,
) {
    let Some(r) = registry else { return };
    for p in &queue.outputs_of(input, job_kind) {
        if let Err(e) = r.record(p, input, kind) {
            tracing::warn!("{}: cannot record the output: {e}", p.display());
        }
    }
}

pub fn write_sidecars(
    writes: Vec<(PathBuf, Option<Vec<String>>)>,
    queue: JobQueue,
    tx: Sender<Msg>,
) {
    std::thread::spawn(move || {
        let registry = OutputRegistry::open_default();
        let mut n = 0;
        for (image, tags) in writes {
            adopt_queue_outputs(
                registry.as_ref(),
                &queue,
                &image,
                JobKind::Tag,
                sidecar::KIND,
            );
            let result = match tags {
                Some(tags) => {
                    let tags: Vec<sidecar::Tag> =
                        tags.into_iter().map(sidecar::Tag::manual).collect();
                    sidecar::write(registry.as_ref(), &image, &tags).map(|_| ())
                }
                // Only our own sidecars are removed, never a user's NAME.txt.
                None => sidecar::remove(registry.as_ref(), &image).map(|_| ()),
            };
            match result {
                Ok(()) => n += 1,
                Err(e) => send(
                    &tx,
                    Event::Error(format!(
                        "{}: cannot write the sidecar: {e}",
                        image.display()
                    )),
                ),
            }
        }
        send(&tx, Event::SidecarsWritten(n));
    });
}
