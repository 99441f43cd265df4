//! CLIP work as jobs on the model thread: the model is loaded once and kept warm.
use super::model::ClipModel;
use super::preprocess::PreprocessConfig;
use super::zero_shot::{ensemble, LabelSet};
use crate::engine::runtime::{DeviceThread, ModelCache};
use crate::engine::store::InstalledModel;

fn clip<'a>(
    cache: &'a mut ModelCache,
    model: &InstalledModel,
) -> Result<&'a mut ClipModel, String> {
    let key = format!("clip:{}", model.dir.display());
    cache
        .get_or_try_insert(&key, |device| ClipModel::load(model, device))
        .map_err(|e| e.to_string())
}

/// What callers need to know about a loaded model.
#[derive(Debug, Clone)]
pub struct ClipInfo {
    pub preprocess: PreprocessConfig,
    pub logit_scale: f64,
}

/// Loads the model now, so a missing or broken model fails before any file is read.
pub fn preload(thread: &DeviceThread, model: InstalledModel) -> Result<ClipInfo, String> {
    thread
        .run(move |cache| {
            let m = clip(cache, &model)?;
            Ok(ClipInfo {
                preprocess: m.preprocess.clone(),
                logit_scale: m.logit_scale,
            })
        })
        .unwrap_or_else(|e| Err(e.to_string()))
}

/// Normalized embeddings of preprocessed images (one batch).
pub fn encode_images(
    thread: &DeviceThread,
    model: InstalledModel,
    pixels: Vec<Vec<f32>>,
) -> Result<Vec<Vec<f32>>, String> {
    thread
        .run(move |cache| {
            clip(cache, &model)?
                .encode_images(&pixels)
                .map_err(|e| e.to_string())
        })
        .unwrap_or_else(|e| Err(e.to_string()))
}

/// Normalized embeddings of texts, in batches of `batch`.
pub fn encode_texts(
    thread: &DeviceThread,
    model: InstalledModel,
    texts: Vec<String>,
    batch: usize,
) -> Result<Vec<Vec<f32>>, String> {
    thread
        .run(move |cache| {
            let m = clip(cache, &model)?;
            let mut out = Vec::with_capacity(texts.len());
            for chunk in texts.chunks(batch.max(1)) {
                out.extend(m.encode_texts(chunk).map_err(|e| e.to_string())?);
            }
            Ok(out)
        })
        .unwrap_or_else(|e| Err(e.to_string()))
}

/// One ensembled embedding per label (every prompt × template, normalized, averaged, renormalized).
pub fn label_embeddings(
    thread: &DeviceThread,
    model: InstalledModel,
    set: &LabelSet,
    batch: usize,
) -> Result<Vec<Vec<f32>>, String> {
    let prompts = set.prompts();
    let flat: Vec<String> = prompts.iter().flatten().cloned().collect();
    let embedded = encode_texts(thread, model, flat, batch)?;
    let mut out = Vec::with_capacity(prompts.len());
    let mut start = 0;
    for p in &prompts {
        out.push(ensemble(&embedded[start..start + p.len()]));
        start += p.len();
    }
    Ok(out)
}
