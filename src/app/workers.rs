//! Work the UI thread never does: scanning folders, Whisper and CLIP jobs, file writes.
//! Every worker reports back as `Action::Event` on the one event channel.
use super::Msg;
use crate::config::Config;
use crate::engine::clip::index::{self, Index};
use crate::engine::clip::job as clip_job;
use crate::engine::clip::preprocess::load_image;
use crate::engine::clip::zero_shot;
use crate::engine::whisper::job::{self as whisper_job, JobMsg};
use crate::engine::whisper::tokenizer::to_language_code;
use crate::engine::whisper::{Event as WhisperEvent, TranscribeOptions};
use crate::engine::{store, CancelToken, DeviceThread, InstalledModel};
use crate::jobs::JobKind;
use crate::output::atomic::write_atomic;
use crate::output::writers::{self, Format, WriterOptions};
use crate::state::{tags::CANDIDATES, Action, Event, Found, JobState, MediaKind};
use crate::transcript::Transcript;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

fn send(tx: &Sender<Msg>, ev: Event) {
    let _ = tx.send(Msg::Action(Action::Event(ev)));
}

fn kind_of(path: &Path) -> Option<MediaKind> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    // The queue's table of what each job kind reads.
    if JobKind::Transcribe
        .input_extensions()
        .contains(&ext.as_str())
    {
        Some(MediaKind::Audio)
    } else if JobKind::Tag.input_extensions().contains(&ext.as_str()) {
        Some(MediaKind::Image)
    } else {
        None
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{stem}{suffix}"))
}

/// Tags of an image's `NAME.tags.json` sidecar (as `atelier tag --write-sidecar` writes it).
fn read_sidecar(image: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(sibling(image, ".tags.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(
        v.get("labels")?
            .as_array()?
            .iter()
            .filter_map(|l| l.get("label").and_then(|s| s.as_str()).map(str::to_string))
            .collect(),
    )
}

fn walk(dir: &Path, out: &mut Vec<Found>, errors: &mut Vec<String>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return errors.push(format!("{}: cannot list: {e}", dir.display())),
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            walk(&p, out, errors);
            continue;
        }
        match kind_of(&p) {
            Some(MediaKind::Audio) => {
                // A transcript already beside the file is shown instead of made again.
                let transcript = std::fs::read_to_string(sibling(&p, ".json"))
                    .ok()
                    .and_then(|t| serde_json::from_str::<Transcript>(&t).ok());
                out.push(Found {
                    path: p,
                    kind: MediaKind::Audio,
                    transcript,
                    tags: None,
                });
            }
            Some(MediaKind::Image) => {
                let tags = read_sidecar(&p);
                out.push(Found {
                    path: p,
                    kind: MediaKind::Image,
                    transcript: None,
                    tags,
                });
            }
            None => {}
        }
    }
}

/// Lists the folders (and files) given on the command line, off the UI thread.
pub fn scan(inputs: Vec<PathBuf>, tx: Sender<Msg>) {
    std::thread::spawn(move || {
        let mut found = Vec::new();
        let mut errors = Vec::new();
        for input in &inputs {
            let input = std::path::absolute(input).unwrap_or_else(|_| input.clone());
            if input.is_dir() {
                walk(&input, &mut found, &mut errors);
            } else if let (true, Some(kind)) = (input.is_file(), kind_of(&input)) {
                found.push(Found {
                    path: input,
                    kind,
                    transcript: None,
                    tags: None,
                });
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
    models_dir: PathBuf,
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

    fn thread(&self) -> Result<DeviceThread, String> {
        let mut slot = self
            .thread
            .lock()
            .map_err(|_| "the model thread lock is poisoned")?;
        if let Some(t) = slot.as_ref() {
            return Ok(t.clone());
        }
        let device =
            crate::engine::runtime::resolve_device(self.device).map_err(|e| e.to_string())?;
        let t = DeviceThread::spawn(device)
            .map_err(|e| format!("cannot start the model thread: {e}"))?;
        *slot = Some(t.clone());
        Ok(t)
    }

    fn model(&self, name: &str, family: &str) -> Result<InstalledModel, String> {
        store::find(&self.models_dir, name, family).map_err(|e| e.to_string())
    }
}

struct Pending {
    path: PathBuf,
    priority: i32,
    seq: u64,
}

#[derive(Default)]
struct QueueState {
    pending: Vec<Pending>,
    running: Option<(PathBuf, CancelToken)>,
    seq: u64,
}

/// The transcription queue: highest priority first, then first come; one job at a time
/// on the model thread, segments streamed to the transcript pane as they decode.
#[derive(Clone)]
pub struct Transcriber {
    shared: Arc<(Mutex<QueueState>, Condvar)>,
}

impl Transcriber {
    pub fn spawn(engine: Engine, config: Config, tx: Sender<Msg>) -> Self {
        let shared = Arc::new((Mutex::new(QueueState::default()), Condvar::new()));
        let me = Transcriber {
            shared: Arc::clone(&shared),
        };
        std::thread::spawn(move || {
            let mut loaded = false;
            loop {
                let (path, cancel) = {
                    let (lock, cvar) = &*shared;
                    let Ok(mut q) = lock.lock() else { return };
                    while q.pending.is_empty() {
                        q = match cvar.wait(q) {
                            Ok(q) => q,
                            Err(_) => return,
                        };
                    }
                    let best = q
                        .pending
                        .iter()
                        .enumerate()
                        .max_by_key(|(_, p)| (p.priority, std::cmp::Reverse(p.seq)))
                        .map_or(0, |(i, _)| i);
                    let job = q.pending.remove(best);
                    let cancel = CancelToken::new();
                    q.running = Some((job.path.clone(), cancel.clone()));
                    (job.path, cancel)
                };
                transcribe_one(&engine, &config, &tx, &path, cancel, &mut loaded);
                if let Ok(mut q) = shared.0.lock() {
                    q.running = None;
                }
            }
        });
        me
    }

    pub fn enqueue(&self, paths: Vec<PathBuf>, priority: i32) {
        let (lock, cvar) = &*self.shared;
        if let Ok(mut q) = lock.lock() {
            for path in paths {
                if q.pending.iter().any(|p| p.path == path) {
                    continue;
                }
                q.seq += 1;
                let seq = q.seq;
                q.pending.push(Pending {
                    path,
                    priority,
                    seq,
                });
            }
            cvar.notify_one();
        }
    }

    /// Cancels a queued or running job; true when there was one.
    pub fn cancel(&self, path: &Path) -> bool {
        let Ok(mut q) = self.shared.0.lock() else {
            return false;
        };
        let before = q.pending.len();
        q.pending.retain(|p| p.path != path);
        let mut hit = q.pending.len() != before;
        if let Some((p, token)) = &q.running {
            if p == path {
                token.cancel();
                hit = true;
            }
        }
        hit
    }

    pub fn reprioritize(&self, path: &Path, priority: i32) {
        if let Ok(mut q) = self.shared.0.lock() {
            for p in q.pending.iter_mut().filter(|p| p.path == path) {
                p.priority = priority;
            }
        }
    }
}

fn job_event(
    path: &Path,
    state: JobState,
    progress: f64,
    eta: Option<f64>,
    error: Option<String>,
) -> Event {
    Event::Job {
        path: path.to_path_buf(),
        state,
        progress,
        eta,
        error,
    }
}

fn transcribe_one(
    engine: &Engine,
    config: &Config,
    tx: &Sender<Msg>,
    path: &Path,
    cancel: CancelToken,
    loaded: &mut bool,
) {
    let wcfg = &config.whisper;
    let fail = |e: String| send(tx, job_event(path, JobState::Failed, 0.0, None, Some(e)));
    let setup = (|| -> Result<_, String> {
        let thread = engine.thread()?;
        let model = engine.model(&wcfg.model, "whisper")?;
        let vad = if wcfg.vad {
            Some(engine.model(&wcfg.vad_model, "vad")?)
        } else {
            None
        };
        if !*loaded {
            send(
                tx,
                Event::Model {
                    name: model.name().to_string(),
                    status: Some("loading".into()),
                },
            );
            whisper_job::preload(&thread, model.clone(), vad.clone())?;
            send(
                tx,
                Event::Model {
                    name: model.name().to_string(),
                    status: None,
                },
            );
            *loaded = true;
        }
        Ok((thread, model, vad))
    })();
    let (thread, model, vad) = match setup {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let mut opts = TranscribeOptions::default();
    opts.decode.language = to_language_code(&wcfg.language).map(str::to_string);
    opts.decode.beam_size = Some(wcfg.beam_size as usize).filter(|&b| b > 1);
    opts.word_timestamps = wcfg.word_timestamps;
    send(tx, job_event(path, JobState::Running, 0.0, None, None));
    let started = Instant::now();
    let audio = crate::cmd::transcribe::stream_file(path);
    let rx = whisper_job::submit(&thread, model, vad, audio, opts, cancel.clone());
    for msg in rx {
        match msg {
            JobMsg::Event(WhisperEvent::Segment(segment)) => send(
                tx,
                Event::Segment {
                    path: path.to_path_buf(),
                    segment,
                },
            ),
            JobMsg::Event(WhisperEvent::Progress {
                done_seconds,
                total_seconds,
            }) => {
                let p = if total_seconds > 0.0 {
                    (done_seconds / total_seconds).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let elapsed = started.elapsed().as_secs_f64();
                let eta = (p > 0.02).then(|| elapsed * (1.0 - p) / p);
                send(tx, job_event(path, JobState::Running, p, eta, None));
            }
            JobMsg::Event(_) | JobMsg::Speech { .. } => {}
            JobMsg::Done(Err(e)) if cancel.is_cancelled() || e == "cancelled" => {
                let _ = e;
                return send(tx, job_event(path, JobState::Cancelled, 0.0, None, None));
            }
            JobMsg::Done(Err(e)) => return fail(e),
            JobMsg::Done(Ok(transcript)) => {
                let formats = formats_of(&wcfg.output_formats);
                let dir = path.parent().unwrap_or(Path::new("."));
                return match writers::write_files(
                    dir,
                    path,
                    &formats,
                    &transcript,
                    &WriterOptions::default(),
                ) {
                    Ok(_) => send(
                        tx,
                        Event::TranscriptDone {
                            path: path.to_path_buf(),
                            transcript,
                        },
                    ),
                    Err(e) => fail(format!(
                        "cannot write the transcript files in {}: {e}",
                        dir.display()
                    )),
                };
            }
        }
    }
    fail("the model thread stopped".into())
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
    config: &Config,
    tx: Sender<Msg>,
) {
    let names = if formats.is_empty() {
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
    let formats = if parsed.is_empty() {
        formats_of(&names)
    } else {
        parsed
    };
    std::thread::spawn(move || {
        let dir = media.parent().unwrap_or(Path::new(".")).to_path_buf();
        match writers::write_files(
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
pub fn write_sidecars(writes: Vec<(PathBuf, Option<Vec<String>>)>, tx: Sender<Msg>) {
    std::thread::spawn(move || {
        let mut n = 0;
        for (image, tags) in writes {
            let (json_path, txt_path) = (sibling(&image, ".tags.json"), sibling(&image, ".txt"));
            let result = match tags {
                Some(tags) => {
                    let labels: Vec<serde_json::Value> = tags
                        .iter()
                        .map(|t| serde_json::json!({ "label": t }))
                        .collect();
                    let record = serde_json::json!({ "path": image, "labels": labels });
                    write_atomic(&json_path, format!("{record:#}\n").as_bytes()).and_then(|_| {
                        write_atomic(&txt_path, format!("{}\n", tags.join(", ")).as_bytes())
                    })
                }
                None => [json_path, txt_path]
                    .iter()
                    .filter(|p| p.exists())
                    .try_for_each(std::fs::remove_file),
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

pub enum ClipWork {
    Tag {
        paths: Vec<PathBuf>,
        label_set: String,
    },
    Search(String),
    Similar(PathBuf),
}

/// Names of the label sets: presets and the user's folder.
pub fn label_sets() -> Vec<String> {
    let mut names: Vec<String> = zero_shot::PRESET_LABEL_SETS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    if let Some(Ok(entries)) = zero_shot::user_dir().map(std::fs::read_dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "toml") {
                if let Some(stem) = p.file_stem().and_then(|s| s.to_str()) {
                    if stem != "templates" && !names.iter().any(|n| n == stem) {
                        names.push(stem.to_string());
                    }
                }
            }
        }
    }
    names.retain(|n| n != "templates");
    names
}

struct ClipSession {
    thread: DeviceThread,
    model: InstalledModel,
    info: clip_job::ClipInfo,
    labels: HashMap<String, (Vec<String>, Vec<Vec<f32>>)>,
}

/// The CLIP worker: tags batches of images, searches the index. Latest work goes last.
pub fn spawn_clip(engine: Engine, config: Config, tx: Sender<Msg>) -> Sender<ClipWork> {
    let (work_tx, rx) = mpsc::channel::<ClipWork>();
    std::thread::spawn(move || {
        let mut session: Option<ClipSession> = None;
        for work in rx {
            if session.is_none() {
                match start_clip(&engine, &config, &tx) {
                    Ok(s) => session = Some(s),
                    Err(e) => {
                        send(&tx, Event::Error(format!("CLIP: {e}")));
                        if matches!(work, ClipWork::Tag { .. }) {
                            send(&tx, Event::TaggingDone);
                        }
                        continue;
                    }
                }
            }
            let Some(s) = session.as_mut() else { continue };
            match work {
                ClipWork::Tag { paths, label_set } => {
                    tag(s, &config, &paths, &label_set, &tx);
                    send(&tx, Event::TaggingDone);
                }
                ClipWork::Search(q) => {
                    let r = clip_job::encode_texts(&s.thread, s.model.clone(), vec![q.clone()], 1)
                        .and_then(|e| {
                            e.into_iter()
                                .next()
                                .ok_or_else(|| "no embedding".to_string())
                        })
                        .and_then(|e| search(s, &config, &e));
                    match r {
                        Ok(hits) => send(
                            &tx,
                            Event::SearchResults {
                                title: format!("'{q}'"),
                                hits,
                            },
                        ),
                        Err(e) => send(&tx, Event::Error(format!("search: {e}"))),
                    }
                }
                ClipWork::Similar(path) => {
                    let r = embed(s, &path).and_then(|e| search(s, &config, &e));
                    match r {
                        Ok(hits) => {
                            let title = format!(
                                "similar to {}",
                                path.file_name()
                                    .map(|n| n.to_string_lossy())
                                    .unwrap_or_default()
                            );
                            send(&tx, Event::SearchResults { title, hits })
                        }
                        Err(e) => send(&tx, Event::Error(format!("similar: {e}"))),
                    }
                }
            }
        }
    });
    work_tx
}

fn start_clip(engine: &Engine, config: &Config, tx: &Sender<Msg>) -> Result<ClipSession, String> {
    let thread = engine.thread()?;
    let model = engine.model(&config.clip.model, "clip")?;
    send(
        tx,
        Event::Model {
            name: model.name().to_string(),
            status: Some("loading".into()),
        },
    );
    let info = clip_job::preload(&thread, model.clone())?;
    let status = model
        .manifest
        .random_init
        .then(|| "random weights".to_string());
    send(
        tx,
        Event::Model {
            name: model.name().to_string(),
            status,
        },
    );
    Ok(ClipSession {
        thread,
        model,
        info,
        labels: HashMap::new(),
    })
}

fn embed(s: &ClipSession, path: &Path) -> Result<Vec<f32>, String> {
    let px = load_image(path, &s.info.preprocess).map_err(|e| e.to_string())?;
    clip_job::encode_images(&s.thread, s.model.clone(), vec![px])?
        .into_iter()
        .next()
        .ok_or_else(|| "no embedding".to_string())
}

fn search(s: &ClipSession, config: &Config, query: &[f32]) -> Result<Vec<(PathBuf, f32)>, String> {
    let path = index::default_path(&config.clip.index);
    let idx = Index::open(&path, s.model.name()).map_err(|e| e.to_string())?;
    if idx.is_empty().map_err(|e| e.to_string())? {
        return Err(format!(
            "the index {} is empty: run `atelier index DIR` first",
            path.display()
        ));
    }
    Ok(idx
        .search(query, 50)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(p, score)| (PathBuf::from(p), score))
        .collect())
}

fn tag(s: &mut ClipSession, config: &Config, paths: &[PathBuf], set_name: &str, tx: &Sender<Msg>) {
    if !s.labels.contains_key(set_name) {
        let r = zero_shot::load_label_set(set_name, zero_shot::user_dir().as_deref())
            .map_err(|e| e.to_string())
            .and_then(|set| {
                let embs = clip_job::label_embeddings(&s.thread, s.model.clone(), &set, 64)?;
                Ok((
                    set.labels
                        .iter()
                        .map(|l| l.name.clone())
                        .collect::<Vec<_>>(),
                    embs,
                ))
            });
        match r {
            Ok(v) => {
                s.labels.insert(set_name.to_string(), v);
            }
            Err(e) => return send(tx, Event::Error(format!("label set {set_name}: {e}"))),
        }
    }
    let Some((names, embs)) = s.labels.get(set_name) else {
        return;
    };
    let batch = (config.clip.batch_size as usize).max(1);
    for chunk in paths.chunks(batch) {
        let mut ok = Vec::new();
        let mut pixels = Vec::new();
        for p in chunk {
            match load_image(p, &s.info.preprocess) {
                Ok(px) => {
                    ok.push(p.clone());
                    pixels.push(px);
                }
                Err(e) => send(
                    tx,
                    Event::TagFailed {
                        path: p.clone(),
                        error: e.to_string(),
                    },
                ),
            }
        }
        if pixels.is_empty() {
            continue;
        }
        match clip_job::encode_images(&s.thread, s.model.clone(), pixels) {
            Ok(image_embs) => {
                for (p, e) in ok.into_iter().zip(image_embs) {
                    let probs = zero_shot::scores(&e, embs, s.info.logit_scale);
                    let scores = zero_shot::top_k(&probs, CANDIDATES, 0.0)
                        .into_iter()
                        .map(|(i, sc)| (names[i].clone(), sc as f32))
                        .collect();
                    send(tx, Event::TagScores { path: p, scores });
                }
            }
            Err(e) => {
                for p in ok {
                    send(
                        tx,
                        Event::TagFailed {
                            path: p,
                            error: e.clone(),
                        },
                    );
                }
            }
        }
    }
}
