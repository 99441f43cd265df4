//! `atelier tag | index | search | similar | moderate | embed`: CLIP from the command line.
//!
//! Bad input (corrupt, truncated, empty, unsupported or over-size images) gets one line naming
//! the file; the run goes on and exits 1 at the end.
use crate::cli::{
    ClipModelArgs, EmbedArgs, IndexArgs, IndexQueryArgs, ModerateArgs, SearchArgs, SimilarArgs,
    TagArgs,
};
use crate::config::{DeviceChoice, Loaded};
use crate::engine::clip::index::{self, FileKey, Index, Status};
use crate::engine::clip::job::{self, ClipInfo};
use crate::engine::clip::label_cache;
use crate::engine::clip::preprocess::load_image;
use crate::engine::clip::query::{self, TermKind};
use crate::engine::clip::zero_shot::{self, LabelSet};
use crate::engine::{runtime, store, DeviceThread, InstalledModel};
use crate::media::{walk, MediaKind};
use crate::output::registry::OutputRegistry;
use crate::output::sidecar;
use serde_json::json;
use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

const TEXT_BATCH: usize = 64;

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    super::exit(super::EXIT_FAILURE)
}

fn finish(failed: usize) -> ExitCode {
    if failed > 0 {
        super::exit(super::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

/// The model thread with one CLIP model loaded.
struct Session {
    thread: DeviceThread,
    model: InstalledModel,
    info: ClipInfo,
    batch: usize,
}

impl Session {
    fn start(
        loaded: &Loaded,
        args: &ClipModelArgs,
        device: DeviceChoice,
        models_dir: &Path,
    ) -> Result<Self, String> {
        let cfg = &loaded.config.clip;
        if let Some(n) = args.threads {
            runtime::set_threads(n);
        }
        let device = runtime::resolve_device(device).map_err(|e| e.to_string())?;
        let name = args.model.clone().unwrap_or_else(|| cfg.model.clone());
        let model = store::find(models_dir, &name, "clip").map_err(|e| e.to_string())?;
        if model.manifest.random_init {
            eprintln!(
                "warning: {}: random weights (a test model): its results mean nothing",
                model.name()
            );
        }
        let thread = DeviceThread::spawn(device)
            .map_err(|e| format!("cannot start the model thread: {e}"))?;
        let info = job::preload(&thread, model.clone())?;
        let batch = args.batch_size.unwrap_or(cfg.batch_size as usize).max(1);
        Ok(Session {
            thread,
            model,
            info,
            batch,
        })
    }

    fn texts(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, String> {
        job::encode_texts(&self.thread, self.model.clone(), texts, TEXT_BATCH)
    }

    /// The ensembled label embeddings, from the label cache when it has them.
    fn labels(&self, set: &LabelSet) -> Result<Vec<Vec<f32>>, String> {
        let cached = label_cache::default_dir()
            .map(|d| label_cache::path(&d, &self.model, set))
            .is_some_and(|p| p.is_file());
        if !cached {
            let prompts: usize = set.prompts().iter().map(Vec::len).sum();
            eprintln!(
                "embedding label set '{}': {} labels, {prompts} prompts (once: the result is cached)",
                set.name,
                set.labels.len()
            );
        }
        label_cache::embeddings(&self.thread, &self.model, set, TEXT_BATCH).map(|(e, _)| e)
    }

    /// Decodes and preprocesses on CPU threads while the model embeds the previous batch.
    /// `sink` gets every input's index and its embedding or a one-line error naming the file.
    fn embed_images(
        &self,
        paths: &[PathBuf],
        mut sink: impl FnMut(usize, Result<Vec<f32>, String>),
    ) {
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 8);
        let next = AtomicUsize::new(0);
        let cfg = &self.info.preprocess;
        let (tx, rx) = mpsc::sync_channel::<(usize, Result<Vec<f32>, String>)>(self.batch * 2);
        std::thread::scope(|scope| {
            for _ in 0..workers.min(paths.len()) {
                let tx = tx.clone();
                let next = &next;
                scope.spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = paths.get(i) else { break };
                    let r = load_image(path, cfg).map_err(|e| e.to_string());
                    if tx.send((i, r)).is_err() {
                        break;
                    }
                });
            }
            drop(tx);
            let mut pending: Vec<(usize, Vec<f32>)> = Vec::new();
            let flush =
                |pending: &mut Vec<(usize, Vec<f32>)>,
                 sink: &mut dyn FnMut(usize, Result<Vec<f32>, String>)| {
                    if pending.is_empty() {
                        return;
                    }
                    let (ids, pixels): (Vec<usize>, Vec<Vec<f32>>) =
                        std::mem::take(pending).into_iter().unzip();
                    match job::encode_images(&self.thread, self.model.clone(), pixels) {
                        Ok(embs) => ids.into_iter().zip(embs).for_each(|(i, e)| sink(i, Ok(e))),
                        Err(e) => ids
                            .into_iter()
                            .for_each(|i| sink(i, Err(format!("{}: {e}", paths[i].display())))),
                    }
                };
            for (i, r) in rx {
                match r {
                    Ok(px) => {
                        pending.push((i, px));
                        if pending.len() >= self.batch {
                            flush(&mut pending, &mut sink);
                        }
                    }
                    Err(e) => sink(i, Err(e)),
                }
            }
            flush(&mut pending, &mut sink);
        });
    }

    /// Embeddings in input order.
    fn embed_all(&self, paths: &[PathBuf]) -> Vec<Result<Vec<f32>, String>> {
        let mut out: Vec<Result<Vec<f32>, String>> =
            paths.iter().map(|_| Err(String::new())).collect();
        self.embed_images(paths, |i, r| out[i] = r);
        out
    }
}

fn is_image(path: &Path) -> bool {
    MediaKind::of(path) == MediaKind::Image
}

/// Files as given (any extension, so bad files are reported), folders searched for images.
fn collect(inputs: &[PathBuf]) -> (Vec<PathBuf>, Vec<String>) {
    let (mut files, mut errors) = (Vec::new(), Vec::new());
    for input in inputs {
        if input.is_dir() {
            walk(input, &is_image, &mut files, &mut errors);
        } else if input.exists() {
            files.push(input.clone());
        } else {
            errors.push(format!("{}: no such file or folder", input.display()));
        }
    }
    (files, errors)
}

fn label_set_for(args: &TagArgs) -> Result<LabelSet, String> {
    if !args.label.is_empty() {
        let table =
            zero_shot::templates(zero_shot::user_dir().as_deref()).map_err(|e| e.to_string())?;
        let templates = table
            .get(&args.templates)
            .cloned()
            .ok_or_else(|| format!("--templates: unknown template set '{}'", args.templates))?;
        return Ok(zero_shot::ad_hoc(&args.label, templates));
    }
    let name = args.labels.as_deref().unwrap_or("general");
    zero_shot::load_label_set(name, zero_shot::user_dir().as_deref()).map_err(|e| e.to_string())
}

/// Scores every image against `set`, calling `each(path, scores)`; `each` returns false when
/// it failed (it printed why). Returns the exit code.
fn classify(
    loaded: &Loaded,
    clip: &ClipModelArgs,
    device: DeviceChoice,
    models_dir: &Path,
    set: &LabelSet,
    inputs: &[PathBuf],
    mut each: impl FnMut(&Path, Vec<f64>) -> bool,
) -> ExitCode {
    let (files, errors) = collect(inputs);
    let session = match Session::start(loaded, clip, device, models_dir) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let label_embs = match session.labels(set) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let mut failed = errors.len();
    for e in errors {
        eprintln!("error: {e}");
    }
    for (path, result) in files.iter().zip(session.embed_all(&files)) {
        match result {
            Ok(emb) => {
                let scores = zero_shot::scores(&emb, &label_embs, session.info.logit_scale);
                if !each(path, scores) {
                    failed += 1;
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    finish(failed)
}

pub fn tag(loaded: &Loaded, args: TagArgs, device: DeviceChoice, models_dir: &Path) -> ExitCode {
    let set = match label_set_for(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return super::exit(super::EXIT_USAGE);
        }
    };
    let registry = args
        .write_sidecar
        .then(OutputRegistry::open_default)
        .flatten();
    classify(
        loaded,
        &args.clip,
        device,
        models_dir,
        &set,
        &args.inputs,
        |path, scores| {
            let top = zero_shot::top_k(&scores, args.top_k, args.threshold);
            let tags: Vec<sidecar::Tag> = top
                .iter()
                .map(|(i, s)| sidecar::Tag::scored(&set.labels[*i].name, *s))
                .collect();
            let record = sidecar::record(path, &tags);
            if args.json {
                println!("{record}");
            } else {
                let text: Vec<String> = top
                    .iter()
                    .map(|(i, s)| format!("{} ({s:.3})", set.labels[*i].name))
                    .collect();
                println!("{}: {}", path.display(), text.join(", "));
            }
            if args.write_sidecar {
                match sidecar::write(registry.as_ref(), path, &tags) {
                    Ok(written) => {
                        let (want_json, want_txt) = sidecar::paths(path);
                        for (got, want) in [(&written.0, want_json), (&written.1, want_txt)] {
                            if *got != want {
                                eprintln!(
                                    "note: {} is not Atelier's: kept; wrote {}",
                                    want.display(),
                                    got.display()
                                );
                            }
                        }
                    }
                    Err(e) => {
                        eprintln!("error: cannot write the sidecar: {e}");
                        return false;
                    }
                }
            }
            true
        },
    )
}

pub fn moderate(
    loaded: &Loaded,
    args: ModerateArgs,
    device: DeviceChoice,
    models_dir: &Path,
) -> ExitCode {
    let set = match zero_shot::load_label_set(&args.labels, zero_shot::user_dir().as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return super::exit(super::EXIT_USAGE);
        }
    };
    if set.labels.iter().all(|l| l.threshold.is_none()) {
        eprintln!(
            "error: label set '{}' has no label with a threshold (no safety category)",
            set.name
        );
        return super::exit(super::EXIT_USAGE);
    }
    classify(
        loaded,
        &args.clip,
        device,
        models_dir,
        &set,
        &args.inputs,
        |path, scores| {
            let categories: Vec<(String, f64, f64)> = set
                .labels
                .iter()
                .zip(&scores)
                .filter_map(|(l, s)| l.threshold.map(|t| (l.name.clone(), *s, t)))
                .collect();
            let flagged: Vec<&(String, f64, f64)> =
                categories.iter().filter(|(_, s, t)| s >= t).collect();
            if args.json {
                let cats: Vec<serde_json::Value> = categories
                .iter()
                .map(|(n, s, t)| json!({"category": n, "score": s, "threshold": t, "flagged": s >= t}))
                .collect();
                println!(
                    "{}",
                    json!({"path": path, "flagged": !flagged.is_empty(), "categories": cats})
                );
            } else if flagged.is_empty() {
                println!("{}: ok", path.display());
            } else {
                let text: Vec<String> = flagged
                    .iter()
                    .map(|(n, s, t)| format!("{n} ({s:.3} ≥ {t})"))
                    .collect();
                println!("{}: FLAGGED {}", path.display(), text.join(", "));
            }
            true
        },
    )
}

fn index_path(loaded: &Loaded, flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .unwrap_or_else(|| index::default_path(&loaded.config.clip.index))
}

pub fn index(
    loaded: &Loaded,
    args: IndexArgs,
    device: DeviceChoice,
    models_dir: &Path,
) -> ExitCode {
    let session = match Session::start(loaded, &args.clip, device, models_dir) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let db_path = index_path(loaded, args.index.as_deref());
    let mut db = match Index::open(&db_path, session.model.name()) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let (files, errors) = collect(&args.dirs);
    let mut failed = errors.len();
    for e in errors {
        eprintln!("error: {e}");
    }
    let (mut unchanged, mut new, mut updated, mut pruned) = (0usize, 0usize, 0usize, 0usize);
    let mut seen = HashSet::new();
    let mut todo: Vec<(PathBuf, FileKey, String, Status)> = Vec::new();
    for path in &files {
        let key = match index::file_key(path) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                failed += 1;
                continue;
            }
        };
        seen.insert(key.path.clone());
        match db.status(&key, path) {
            Ok((Status::Unchanged, _)) => unchanged += 1,
            Ok((status, Some(hash))) => todo.push((path.clone(), key, hash, status)),
            Ok((_, None)) => unchanged += 1,
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    for dir in args.dirs.iter().filter(|d| d.is_dir()) {
        let Ok(abs) = std::fs::canonicalize(dir) else {
            continue;
        };
        match db.prune(&abs.to_string_lossy(), &seen) {
            Ok(n) => pruned += n,
            Err(e) => return fail(e),
        }
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(todo.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "indexing [{bar:30}] {pos}/{len} {per_sec} {elapsed}<{eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let paths: Vec<PathBuf> = todo.iter().map(|t| t.0.clone()).collect();
    let mut rows: Vec<(FileKey, String, Vec<f32>)> = Vec::new();
    let mut db_error = None;
    session.embed_images(&paths, |i, r| {
        if let Some(b) = &bar {
            b.inc(1);
        }
        match r {
            Ok(emb) => {
                let (_, key, hash, status) = &todo[i];
                rows.push((key.clone(), hash.clone(), emb));
                match status {
                    Status::New => new += 1,
                    _ => updated += 1,
                }
            }
            Err(e) => {
                let line = format!("error: {e}");
                match &bar {
                    Some(b) => b.println(line),
                    None => eprintln!("{line}"),
                }
                failed += 1;
            }
        }
        if rows.len() >= session.batch && db_error.is_none() {
            if let Err(e) = db.put_batch(&std::mem::take(&mut rows)) {
                db_error = Some(e);
            }
        }
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if db_error.is_none() && !rows.is_empty() {
        db_error = db.put_batch(&rows).err();
    }
    if let Some(e) = db_error {
        return fail(e);
    }
    if args.json {
        println!(
            "{}",
            json!({
                "model": session.model.name(), "index": db_path, "new": new,
                "updated": updated, "unchanged": unchanged, "pruned": pruned, "failed": failed,
            })
        );
    } else {
        eprintln!(
            "indexed {}: {new} new, {updated} updated, {unchanged} unchanged, {pruned} pruned, {failed} failed ({})",
            session.model.name(),
            db_path.display()
        );
    }
    finish(failed)
}

fn print_hits(hits: &[(String, f32)], json_out: bool) {
    for (path, score) in hits {
        if json_out {
            println!("{}", json!({"path": path, "score": score}));
        } else {
            println!("{score:.4}  {path}");
        }
    }
}

fn open_index(loaded: &Loaded, flag: Option<&Path>, model: &str) -> Result<Index, String> {
    let path = index_path(loaded, flag);
    if !path.is_file() {
        return Err(format!(
            "{}: no index yet: run `atelier index DIR…` first",
            path.display()
        ));
    }
    Index::open(&path, model).map_err(|e| e.to_string())
}

/// The model session and its index, as `search` and `similar` need them.
fn session_and_index(
    loaded: &Loaded,
    args: &IndexQueryArgs,
    device: DeviceChoice,
    models_dir: &Path,
) -> Result<(Session, Index), String> {
    let session = Session::start(loaded, &args.clip, device, models_dir)?;
    let db = open_index(loaded, args.index.as_deref(), session.model.name())?;
    Ok((session, db))
}

pub fn search(
    loaded: &Loaded,
    args: SearchArgs,
    device: DeviceChoice,
    models_dir: &Path,
) -> ExitCode {
    let (session, db) = match session_and_index(loaded, &args.results, device, models_dir) {
        Ok(pair) => pair,
        Err(e) => return fail(e),
    };
    let terms = match query::parse(&args.query) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: query: {e}");
            return super::exit(super::EXIT_USAGE);
        }
    };
    let mut parts = Vec::with_capacity(terms.len());
    for term in terms {
        let embedding = match &term.kind {
            TermKind::Text(text) => session.texts(vec![text.clone()]).and_then(|v| {
                v.into_iter()
                    .next()
                    .ok_or_else(|| "the model returned no embedding".to_string())
            }),
            TermKind::Image(path) => session.embed_all(std::slice::from_ref(path)).remove(0),
        };
        match embedding {
            Ok(e) => parts.push((term.weight, e)),
            Err(e) => return fail(e),
        }
    }
    // A plain query is used as the model gave it; arithmetic combines normalised terms.
    let query = match parts.as_slice() {
        [(w, e)] if *w == 1.0 => e.clone(),
        _ => query::combine(&parts),
    };
    match db.search(&query, args.results.top) {
        Ok(hits) => {
            print_hits(&hits, args.results.json);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

pub fn similar(
    loaded: &Loaded,
    args: SimilarArgs,
    device: DeviceChoice,
    models_dir: &Path,
) -> ExitCode {
    let (session, db) = match session_and_index(loaded, &args.results, device, models_dir) {
        Ok(pair) => pair,
        Err(e) => return fail(e),
    };
    let key = match index::file_key(&args.image) {
        Ok(k) => k,
        Err(e) => return fail(format!("{}: {e}", args.image.display())),
    };
    // An indexed, unchanged image is not embedded again.
    let stored = match db.status(&key, &args.image) {
        Ok((Status::Unchanged, _)) => db.get(&key.path).ok().flatten(),
        _ => None,
    };
    let query = match stored {
        Some(q) => q,
        None => match session
            .embed_all(std::slice::from_ref(&args.image))
            .remove(0)
        {
            Ok(q) => q,
            Err(e) => return fail(e),
        },
    };
    match db.search(&query, args.results.top + 1) {
        Ok(hits) => {
            let hits: Vec<(String, f32)> = hits
                .into_iter()
                .filter(|(p, _)| *p != key.path)
                .take(args.results.top)
                .collect();
            print_hits(&hits, args.results.json);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

pub fn embed(
    loaded: &Loaded,
    args: EmbedArgs,
    device: DeviceChoice,
    models_dir: &Path,
) -> ExitCode {
    let session = match Session::start(loaded, &args.clip, device, models_dir) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let mut failed = 0;
    let mut images = Vec::new();
    for (path, r) in args.files.iter().zip(session.embed_all(&args.files)) {
        match r {
            Ok(e) => images.push(json!({"path": path, "embedding": e})),
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    let texts = match session.texts(args.text.clone()) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let texts: Vec<serde_json::Value> = args
        .text
        .iter()
        .zip(texts)
        .map(|(t, e)| json!({"text": t, "embedding": e}))
        .collect();
    println!(
        "{}",
        json!({"model": session.model.name(), "logit_scale": session.info.logit_scale, "images": images, "texts": texts})
    );
    finish(failed)
}
