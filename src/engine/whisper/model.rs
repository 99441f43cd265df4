//! A Whisper model loaded from the store: four TorchScript modules plus the tokenizer.
use super::audio::MelStream;
use super::tokenizer::Tokenizer;
use crate::engine::store::{InstalledModel, StoreError};
use std::path::PathBuf;
use tch::{CModule, Device, IValue, Kind, Tensor};

#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub n_mels: i64,
    pub n_audio_ctx: i64,
    pub n_vocab: i64,
    pub n_text_ctx: i64,
    pub n_text_state: i64,
    pub n_text_layer: i64,
}

pub struct WhisperModel {
    pub name: String,
    pub dims: Dims,
    pub tokenizer: Tokenizer,
    pub multilingual: bool,
    pub alignment_heads: Vec<(i64, i64)>,
    pub device: Device,
    pub kind: Kind,
    mel: CModule,
    encoder: CModule,
    cross_kv: CModule,
    step: CModule,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{model}: manifest lacks dims.{key}")]
    MissingDim { model: String, key: String },
    #[error("{model}: exported for {exported}, but running on {running:?}: re-export it with `atelier models import --device …`")]
    WrongDevice {
        model: String,
        exported: String,
        running: Device,
    },
    #[error("{model}: {message}")]
    Torch { model: String, message: String },
    #[error("{manifest}: exported with export-version {found}; this atelier needs {EXPORT_VERSION}: import the model again (`atelier models import whisper SOURCE`)")]
    Outdated { manifest: PathBuf, found: i64 },
}

/// The exported interface this engine runs (tools/export/whisper_export.py EXPORT_VERSION):
/// 2 several tokens per decoder call, 3 cross K/V split into heads, 4 beams share their
/// audio's cross K/V, 5 the decoder writes into the caller's cache buffer in place, 6 the
/// encoder's attention through SDPA (same interface as 5).
pub const EXPORT_VERSION: i64 = 6;
/// The oldest export whose interface is `EXPORT_VERSION`'s.
const OLDEST_COMPATIBLE: i64 = 5;

/// The outputs of a decoder call (shapes per method below).
pub struct StepOutput {
    /// float32 logits.
    pub logits: Tensor,
    /// Raw cross-attention qk of the alignment heads, float32.
    pub align_qk: Tensor,
}

/// The decoder's self-attention keys and values of the tokens so far, for B rows.
///
/// One buffer of `n_text_ctx` slots that the decoder writes into in place, so a step copies
/// nothing (exports before version 5 returned a grown copy of the whole cache, three copies
/// per step inside the module).
pub struct KvCache {
    /// `[L, 2, B, n_text_ctx, D]`, the first `len` slots in use.
    buf: Tensor,
    len: usize,
}

impl KvCache {
    pub fn rows(&self) -> usize {
        self.buf.size()[2] as usize
    }

    /// Row i becomes the old row `sources[i]` (beam search reordering, or one prompt row
    /// expanded to several). The identity costs nothing.
    pub fn select_rows(&mut self, sources: &[i64]) {
        let identity =
            sources.len() == self.rows() && sources.iter().enumerate().all(|(i, &s)| s == i as i64);
        if identity {
            return;
        }
        let index = Tensor::from_slice(sources).to_device(self.buf.device());
        let used = self.len as i64;
        let live = self.buf.narrow(3, 0, used).index_select(2, &index);
        if sources.len() != self.rows() {
            let mut size = self.buf.size();
            size[2] = sources.len() as i64;
            self.buf = Tensor::zeros(size.as_slice(), (self.buf.kind(), self.buf.device()));
        }
        self.buf.narrow(3, 0, used).copy_(&live);
    }
}

impl WhisperModel {
    pub fn load(model: &InstalledModel, device: Device) -> Result<Self, ModelError> {
        let m = &model.manifest;
        let exported_cuda = m.device.starts_with("cuda");
        if exported_cuda != device.is_cuda() {
            return Err(ModelError::WrongDevice {
                model: m.name.clone(),
                exported: m.device.clone(),
                running: device,
            });
        }
        let dim = |key: &str| {
            m.dim(key).ok_or_else(|| ModelError::MissingDim {
                model: m.name.clone(),
                key: key.to_string(),
            })
        };
        let dims = Dims {
            n_mels: dim("n_mels")?,
            n_audio_ctx: dim("n_audio_ctx")?,
            n_vocab: dim("n_vocab")?,
            n_text_ctx: dim("n_text_ctx")?,
            n_text_state: dim("n_text_state")?,
            n_text_layer: dim("n_text_layer")?,
        };
        let multilingual = m
            .config
            .get("multilingual")
            .and_then(|v| v.as_bool())
            .unwrap_or(dims.n_vocab >= 51865);
        let num_languages =
            m.config
                .get("num-languages")
                .and_then(|v| v.as_integer())
                .unwrap_or(dims.n_vocab - 51765 - i64::from(multilingual)) as usize;
        let alignment_heads = m
            .config
            .get("alignment-heads")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|p| {
                        let p = p.as_array()?;
                        Some((p.first()?.as_integer()?, p.get(1)?.as_integer()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let tokenizer_path = model.file("tokenizer")?;
        let tokenizer =
            Tokenizer::load(&tokenizer_path, multilingual, num_languages).map_err(|e| {
                ModelError::Torch {
                    model: m.name.clone(),
                    message: format!("{}: {e}", tokenizer_path.display()),
                }
            })?;
        let version = m
            .config
            .get("export-version")
            .and_then(|v| v.as_integer())
            .unwrap_or(1);
        if version < OLDEST_COMPATIBLE {
            return Err(ModelError::Outdated {
                manifest: model.manifest_path(),
                found: version,
            });
        }
        let kind = if m.dtype == "float16" {
            Kind::Half
        } else {
            Kind::Float
        };
        Ok(WhisperModel {
            name: m.name.clone(),
            dims,
            tokenizer,
            multilingual,
            alignment_heads,
            device,
            kind,
            mel: model.load_module("mel", device)?,
            encoder: model.load_module("encoder", device)?,
            cross_kv: model.load_module("cross_kv", device)?,
            step: model.load_module("decoder_step", device)?,
        })
    }

    fn torch_err(&self, e: tch::TchError) -> ModelError {
        ModelError::Torch {
            model: self.name.clone(),
            message: e.to_string().lines().next().unwrap_or("").to_string(),
        }
    }

    pub fn log_mel(&self, audio: &[f32]) -> Result<Tensor, ModelError> {
        super::audio::log_mel_spectrogram(&self.mel, audio, self.device)
            .map_err(|e| self.torch_err(e))
    }

    /// Adds samples to a streaming log-mel.
    pub fn mel_push(&self, stream: &mut MelStream, samples: &[f32]) -> Result<(), ModelError> {
        stream
            .push(&self.mel, samples, self.device)
            .map_err(|e| self.torch_err(e))
    }

    /// The normalised log-mel of everything pushed.
    pub fn mel_finish(&self, stream: MelStream) -> Result<Tensor, ModelError> {
        stream
            .finish(&self.mel, self.device)
            .map_err(|e| self.torch_err(e))
    }

    /// `[1, n_mels, 3000]` (CPU) → audio features on the device.
    pub fn encode(&self, mel: &Tensor) -> Result<Tensor, ModelError> {
        let input = mel.to_device(self.device).to_kind(self.kind);
        self.encoder
            .forward_ts(&[input])
            .map_err(|e| self.torch_err(e))
    }

    /// Audio features → the cross-attention keys and values of every layer.
    pub fn cross_kv(&self, features: &Tensor) -> Result<Tensor, ModelError> {
        self.cross_kv
            .forward_ts(&[features])
            .map_err(|e| self.torch_err(e))
    }

    pub fn empty_cache(&self, rows: i64) -> KvCache {
        KvCache {
            buf: Tensor::zeros(
                [
                    self.dims.n_text_layer,
                    2,
                    rows,
                    self.dims.n_text_ctx,
                    self.dims.n_text_state,
                ],
                (self.kind, self.device),
            ),
            len: 0,
        }
    }

    /// One token per row at `position`, attending to `cache` and the audio.
    /// Returns logits `[B, V]` and align_qk `[B, A, ctx]`.
    pub fn step(
        &self,
        tokens: &[u32],
        position: usize,
        cross_kv: &Tensor,
        cache: &mut KvCache,
    ) -> Result<StepOutput, ModelError> {
        let out = self.forward(tokens, tokens.len(), position, cross_kv, cache)?;
        Ok(StepOutput {
            logits: out.logits.select(1, 0),
            align_qk: out.align_qk.select(2, 0),
        })
    }

    /// `tokens` (one row, from `position`) in one call: logits `[Tq, V]`, align_qk
    /// `[A, Tq, ctx]`.
    pub fn prefill(
        &self,
        tokens: &[u32],
        position: usize,
        cross_kv: &Tensor,
        cache: &mut KvCache,
    ) -> Result<StepOutput, ModelError> {
        if tokens.is_empty() {
            return Err(ModelError::Torch {
                model: self.name.clone(),
                message: "prefill of no tokens".into(),
            });
        }
        let out = self.forward(tokens, 1, position, cross_kv, cache)?;
        Ok(StepOutput {
            logits: out.logits.select(0, 0),
            align_qk: out.align_qk.select(0, 0),
        })
    }

    /// `rows` rows of `tokens.len() / rows` tokens each (row-major), at positions from
    /// `position`: logits `[B, Tq, V]`, align_qk `[B, A, Tq, ctx]`.
    pub fn forward(
        &self,
        tokens: &[u32],
        rows: usize,
        position: usize,
        cross_kv: &Tensor,
        cache: &mut KvCache,
    ) -> Result<StepOutput, ModelError> {
        let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
        let per_row = (tokens.len() / rows.max(1)) as i64;
        if position != cache.len || cache.rows() != rows {
            return Err(ModelError::Torch {
                model: self.name.clone(),
                message: format!(
                    "decoder called at position {position} for {rows} rows with a cache of {} tokens and {} rows",
                    cache.len,
                    cache.rows()
                ),
            });
        }
        if position as i64 + per_row > cache.buf.size()[3] {
            return Err(ModelError::Torch {
                model: self.name.clone(),
                message: format!(
                    "{} tokens exceed the text context of {}",
                    position as i64 + per_row,
                    cache.buf.size()[3]
                ),
            });
        }
        let tokens = Tensor::from_slice(&ids)
            .view([rows as i64, per_row])
            .to_device(self.device);
        let start = position as i64;
        let positions = Tensor::arange_start(start, start + per_row, (Kind::Int64, self.device));
        // `past` carries only its length: the number of cached tokens.
        let past = Tensor::zeros([start], (Kind::Float, self.device));
        let out = self
            .step
            .forward_is(&[
                IValue::Tensor(tokens),
                IValue::Tensor(positions),
                IValue::Tensor(cross_kv.shallow_clone()),
                IValue::Tensor(cache.buf.shallow_clone()),
                IValue::Tensor(past),
            ])
            .map_err(|e| self.torch_err(e))?;
        let (logits, align_qk) = match out {
            IValue::Tuple(v) => match <[IValue; 2]>::try_from(v) {
                Ok([IValue::Tensor(l), IValue::Tensor(a)]) => (l, a),
                _ => return Err(self.bad_output()),
            },
            _ => return Err(self.bad_output()),
        };
        cache.len += per_row as usize;
        Ok(StepOutput {
            // Logits stay on the device: the decoders filter and rank them there.
            logits: logits.to_kind(Kind::Float),
            align_qk: align_qk.to_kind(Kind::Float),
        })
    }

    fn bad_output(&self) -> ModelError {
        ModelError::Torch {
            model: self.name.clone(),
            message: "decoder_step did not return (logits, align_qk): re-export the model".into(),
        }
    }
}
