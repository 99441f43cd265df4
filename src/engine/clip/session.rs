//! One CLIP model loaded on a model thread, with its label embeddings: the session that
//! `atelier tag|moderate|index|search|similar|embed`, the queue's tag and index jobs and the
//! TUI's CLIP worker each hold. Label embeddings come from the on-disk label cache
//! ([`super::label_cache`]), shared by every process, and are kept in memory per label set
//! content, so an edited set is embedded again and an unchanged one never twice.
use super::job::{self, ClipInfo};
use super::label_cache::{self, Source};
use super::preprocess::load_image;
use super::zero_shot::{self, LabelSet};
use crate::engine::{DeviceThread, InstalledModel};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

/// Texts per model call when embedding labels and queries.
pub const TEXT_BATCH: usize = 64;

/// A label set with its ensembled, normalised embeddings (one row per label).
#[derive(Debug, Clone)]
pub struct Labels {
    pub set: LabelSet,
    pub embeddings: Vec<Vec<f32>>,
}

impl Labels {
    /// The label names, in the set's order.
    pub fn names(&self) -> Vec<String> {
        self.set.labels.iter().map(|l| l.name.clone()).collect()
    }
}

pub struct ClipSession {
    thread: DeviceThread,
    model: InstalledModel,
    info: ClipInfo,
    /// By the label cache's key (model files, tokenizer, every resolved prompt).
    labels: Mutex<HashMap<String, Arc<Labels>>>,
}

impl ClipSession {
    /// Loads `model` on `thread` (its preprocessing and logit scale come back with it).
    pub fn start(thread: DeviceThread, model: InstalledModel) -> Result<Self, String> {
        let info = job::preload(&thread, model.clone())?;
        Ok(ClipSession {
            thread,
            model,
            info,
            labels: Mutex::new(HashMap::new()),
        })
    }

    pub fn model(&self) -> &InstalledModel {
        &self.model
    }

    pub fn info(&self) -> &ClipInfo {
        &self.info
    }

    pub fn logit_scale(&self) -> f64 {
        self.info.logit_scale
    }

    /// Normalised text embeddings, in order.
    pub fn texts(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, String> {
        job::encode_texts(&self.thread, self.model.clone(), texts, TEXT_BATCH)
    }

    pub fn text(&self, text: &str) -> Result<Vec<f32>, String> {
        self.texts(vec![text.to_string()])?
            .pop()
            .ok_or_else(|| "the model returned no embedding".to_string())
    }

    fn key(&self, set: &LabelSet) -> String {
        let file = label_cache::path(Path::new(""), &self.model, set);
        file.to_string_lossy().into_owned()
    }

    /// Whether `set`'s embeddings are at hand (in memory or in the disk cache) without a
    /// model call.
    pub fn labels_ready(&self, set: &LabelSet) -> bool {
        let memo = self
            .labels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&self.key(set));
        memo || label_cache::default_dir()
            .map(|d| label_cache::path(&d, &self.model, set))
            .is_some_and(|p| label_cache::read(&p, set.labels.len()).is_some())
    }

    /// The ensembled embeddings of `set`: from memory, the disk cache, or the model (then
    /// cached on disk for every process).
    pub fn labels(&self, set: &LabelSet) -> Result<Arc<Labels>, String> {
        let key = self.key(set);
        if let Some(hit) = self
            .labels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(Arc::clone(hit));
        }
        let (embeddings, source) =
            label_cache::embeddings(&self.thread, &self.model, set, TEXT_BATCH)?;
        if source == Source::Model {
            tracing::info!(set = %set.name, "label set embedded");
        }
        let labels = Arc::new(Labels {
            set: set.clone(),
            embeddings,
        });
        self.labels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Arc::clone(&labels));
        Ok(labels)
    }

    /// Softmax probabilities of an image embedding over `labels`.
    pub fn scores(&self, image: &[f32], labels: &Labels) -> Vec<f64> {
        zero_shot::scores(image, &labels.embeddings, self.info.logit_scale)
    }

    /// The model input of one image (decoded, resized and cropped as the model wants).
    pub fn pixels(&self, path: &Path) -> Result<Vec<f32>, String> {
        load_image(path, &self.info.preprocess).map_err(|e| e.to_string())
    }

    /// Image embeddings of preprocessed inputs, in order.
    pub fn embed_pixels(&self, pixels: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>, String> {
        job::encode_images(&self.thread, self.model.clone(), pixels)
    }

    /// The embedding of one image file.
    pub fn embed_image(&self, path: &Path) -> Result<Vec<f32>, String> {
        let pixels = self.pixels(path)?;
        self.embed_pixels(vec![pixels])
            .map_err(|e| format!("{}: {e}", path.display()))?
            .pop()
            .ok_or_else(|| format!("{}: the model returned no embedding", path.display()))
    }

    /// Decodes and preprocesses on CPU threads while the model embeds the previous batch of
    /// `batch` images. `sink` gets every input's index with its embedding or a one-line error
    /// naming the file, in completion order.
    pub fn embed_images(
        &self,
        paths: &[PathBuf],
        batch: usize,
        mut sink: impl FnMut(usize, Result<Vec<f32>, String>),
    ) {
        let batch = batch.max(1);
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 8);
        let next = AtomicUsize::new(0);
        let cfg = &self.info.preprocess;
        let (tx, rx) = mpsc::sync_channel::<(usize, Result<Vec<f32>, String>)>(batch * 2);
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
                    match self.embed_pixels(pixels) {
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
                        if pending.len() >= batch {
                            flush(&mut pending, &mut sink);
                        }
                    }
                    Err(e) => sink(i, Err(e)),
                }
            }
            flush(&mut pending, &mut sink);
        });
    }

    /// [`ClipSession::embed_images`], collected in input order.
    pub fn embed_all(&self, paths: &[PathBuf], batch: usize) -> Vec<Result<Vec<f32>, String>> {
        let mut out: Vec<Result<Vec<f32>, String>> =
            paths.iter().map(|_| Err(String::new())).collect();
        self.embed_images(paths, batch, |i, r| out[i] = r);
        out
    }
}
