//! The TUI's CLIP worker: tags batches of images and searches the index, on the one
//! [`ClipSession`] (started on first use, as the CLI and the queue hold theirs).
use super::workers::Engine;
use super::Msg;
use crate::config::Config;
use crate::engine::clip::index::{self, Index};
use crate::engine::clip::session::ClipSession;
use crate::engine::clip::zero_shot;
use crate::state::{tags::CANDIDATES, Action, Event};
use std::path::PathBuf;
use std::sync::mpsc::{self, Sender};

fn send(tx: &Sender<Msg>, ev: Event) {
    let _ = tx.send(Msg::Action(Action::Event(ev)));
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
            let Some(s) = session.as_ref() else { continue };
            match work {
                ClipWork::Tag { paths, label_set } => {
                    tag(s, &config, &paths, &label_set, &tx);
                    send(&tx, Event::TaggingDone);
                    // A batch decodes many images: hand the freed heap back, as the queue
                    // does after each job.
                    crate::engine::runtime::release_freed_memory();
                }
                ClipWork::Search(q) => {
                    let r = s.text(&q).and_then(|e| search(s, &config, &e));
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
                    let r = s.embed_image(&path).and_then(|e| search(s, &config, &e));
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
    let session = ClipSession::start(thread, model)?;
    let status = session
        .model()
        .manifest
        .random_init
        .then(|| "random weights".to_string());
    send(
        tx,
        Event::Model {
            name: session.model().name().to_string(),
            status,
        },
    );
    Ok(session)
}

fn search(s: &ClipSession, config: &Config, query: &[f32]) -> Result<Vec<(PathBuf, f32)>, String> {
    let path = index::default_path(&config.clip.index);
    let idx = Index::open(&path, s.model().name()).map_err(|e| e.to_string())?;
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

fn tag(s: &ClipSession, config: &Config, paths: &[PathBuf], set_name: &str, tx: &Sender<Msg>) {
    let labels = zero_shot::load_label_set(set_name, zero_shot::user_dir().as_deref())
        .map_err(|e| e.to_string())
        .and_then(|set| s.labels(&set));
    let labels = match labels {
        Ok(l) => l,
        Err(e) => return send(tx, Event::Error(format!("label set {set_name}: {e}"))),
    };
    let names = labels.names();
    let batch = (config.clip.batch_size as usize).max(1);
    for chunk in paths.chunks(batch) {
        let mut ok = Vec::new();
        let mut pixels = Vec::new();
        for p in chunk {
            match s.pixels(p) {
                Ok(px) => {
                    ok.push(p.clone());
                    pixels.push(px);
                }
                Err(e) => send(
                    tx,
                    Event::TagFailed {
                        path: p.clone(),
                        error: e,
                    },
                ),
            }
        }
        if pixels.is_empty() {
            continue;
        }
        match s.embed_pixels(pixels) {
            Ok(image_embs) => {
                for (p, e) in ok.into_iter().zip(image_embs) {
                    let probs = s.scores(&e, &labels);
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
