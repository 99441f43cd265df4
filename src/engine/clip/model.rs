//! The exported CLIP TorchScript (`encode_image`, `encode_text`) with its tokenizer and
//! preprocessing settings, read from the manifest.
use super::preprocess::PreprocessConfig;
use super::tokenizer::{ClipTokenizer, CONTEXT_LENGTH};
use crate::engine::store::{InstalledModel, StoreError};
use tch::{Device, Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{manifest}: {message}")]
    Manifest { manifest: String, message: String },
    #[error(transparent)]
    Tokenizer(#[from] super::tokenizer::TokenizerError),
    #[error("model call failed: {0}")]
    Torch(#[from] tch::TchError),
}

pub struct ClipModel {
    pub name: String,
    module: tch::CModule,
    pub tokenizer: ClipTokenizer,
    pub preprocess: PreprocessConfig,
    pub logit_scale: f64,
    pub embed_dim: i64,
    device: Device,
}

fn triple(model: &InstalledModel, key: &str, default: [f32; 3]) -> Result<[f32; 3], ClipError> {
    let Some(value) = model.manifest.config.get(key) else {
        return Ok(default);
    };
    let bad = || ClipError::Manifest {
        manifest: model.manifest_path().display().to_string(),
        message: format!("config.{key} must be a list of 3 numbers"),
    };
    let items = value.as_array().ok_or_else(bad)?;
    let nums: Vec<f32> = items
        .iter()
        .map(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
        .map(|v| v.map(|f| f as f32))
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    nums.try_into().map_err(|_| bad())
}

impl ClipModel {
    pub fn load(model: &InstalledModel, device: Device) -> Result<Self, ClipError> {
        let manifest = &model.manifest;
        let bad = |message: String| ClipError::Manifest {
            manifest: model.manifest_path().display().to_string(),
            message,
        };
        let context = manifest
            .dim("context-length")
            .unwrap_or(CONTEXT_LENGTH as i64);
        if context != CONTEXT_LENGTH as i64 {
            return Err(bad(format!(
                "context-length {context}; only {CONTEXT_LENGTH} is supported"
            )));
        }
        let mode = manifest.config.get("resize-mode").and_then(|v| v.as_str());
        if mode.is_some_and(|m| m != "shortest") {
            return Err(bad(format!(
                "resize-mode {mode:?}; only \"shortest\" is supported"
            )));
        }
        let size = manifest
            .dim("image-size")
            .filter(|&s| s > 0 && s <= 4096)
            .ok_or_else(|| bad("dims.image-size is missing or out of range".into()))?;
        let logit_scale = manifest
            .config
            .get("logit-scale")
            .and_then(|v| v.as_float())
            .filter(|s| s.is_finite() && *s > 0.0)
            .ok_or_else(|| bad("config.logit-scale is missing or not positive".into()))?;
        let defaults = PreprocessConfig::default();
        let preprocess = PreprocessConfig {
            size: size as u32,
            mean: triple(model, "mean", defaults.mean)?,
            std: triple(model, "std", defaults.std)?,
        };
        let tokenizer = ClipTokenizer::load(&model.file("bpe")?)?;
        let module = model.load_module("model", device)?;
        Ok(ClipModel {
            name: manifest.name.clone(),
            module,
            tokenizer,
            preprocess,
            logit_scale,
            embed_dim: manifest.dim("embed-dim").unwrap_or(0),
            device,
        })
    }

    fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>, ClipError> {
        let t = t.to_kind(Kind::Float).to_device(Device::Cpu).contiguous();
        let (n, d) = t.size2()?;
        let flat: Vec<f32> = Vec::<f32>::try_from(&t.view([-1]))?;
        Ok((0..n as usize)
            .map(|i| flat[i * d as usize..(i + 1) * d as usize].to_vec())
            .collect())
    }

    /// L2-normalized image embeddings of preprocessed CHW images.
    pub fn encode_images(&self, pixels: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, ClipError> {
        if pixels.is_empty() {
            return Ok(Vec::new());
        }
        let s = self.preprocess.size as i64;
        let flat: Vec<f32> = pixels.concat();
        let input = Tensor::from_slice(&flat)
            .view([pixels.len() as i64, 3, s, s])
            .to_device(self.device);
        let out = self.module.method_ts("encode_image", &[input])?;
        Self::rows(&normalize(&out))
    }

    /// L2-normalized text embeddings.
    pub fn encode_texts(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ClipError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = texts
            .iter()
            .flat_map(|t| self.tokenizer.tokenize(t))
            .collect();
        let input = Tensor::from_slice(&ids)
            .view([texts.len() as i64, CONTEXT_LENGTH as i64])
            .to_device(self.device);
        let out = self.module.method_ts("encode_text", &[input])?;
        Self::rows(&normalize(&out))
    }
}

fn normalize(t: &Tensor) -> Tensor {
    let t = t.to_kind(Kind::Float);
    let norm = t.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12);
    t / norm
}

/// Cosine top-k of `query` (D) against `matrix` rows (N x D, normalized), by a tch matmul.
pub fn top_k(
    matrix: &[f32],
    dim: usize,
    query: &[f32],
    k: usize,
) -> Result<Vec<(usize, f32)>, tch::TchError> {
    if dim == 0 || matrix.is_empty() || k == 0 {
        return Ok(Vec::new());
    }
    let n = matrix.len() / dim;
    let m = Tensor::from_slice(matrix).view([n as i64, dim as i64]);
    let q = Tensor::from_slice(query).view([dim as i64, 1]);
    let scores = m.matmul(&q).view([-1]);
    let (values, indices) = scores.topk(k.min(n) as i64, 0, true, true);
    let values = Vec::<f32>::try_from(&values)?;
    let indices = Vec::<i64>::try_from(&indices)?;
    Ok(indices
        .into_iter()
        .map(|i| i as usize)
        .zip(values)
        .collect())
}
