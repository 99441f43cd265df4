//! Silero VAD (the TorchScript model from the `silero-vad` package) and a port of its
//! `get_speech_timestamps_from_probs`, used to keep Whisper away from silence and noise.
use crate::engine::store::{InstalledModel, StoreError};
use tch::{CModule, Device, IValue, Tensor};

#[derive(Debug, Clone)]
pub struct VadParams {
    pub threshold: f32,
    pub neg_threshold: f32,
    pub min_speech_duration_ms: f64,
    pub min_silence_duration_ms: f64,
    pub speech_pad_ms: f64,
}

impl Default for VadParams {
    fn default() -> Self {
        VadParams {
            threshold: 0.5,
            neg_threshold: 0.35,
            min_speech_duration_ms: 250.0,
            min_silence_duration_ms: 100.0,
            speech_pad_ms: 30.0,
        }
    }
}

pub const WINDOW: usize = 512;
/// Samples of the previous window that Silero looks at with each window.
const CONTEXT: usize = 64;
/// Windows per call of the batched module (about 33 s of audio).
const BATCH_WINDOWS: usize = 1024;
const SAMPLE_RATE: f64 = 16_000.0;

pub struct Vad {
    /// Silero's own module: one 512-sample window per call, state kept inside.
    module: CModule,
    /// `silero_vad_batched.ts` (export version 2): many windows per call, the LSTM state
    /// passed in and out. Models exported before it fall back to `module`.
    batched: Option<CModule>,
    pub params: VadParams,
}

#[derive(Debug, thiserror::Error)]
pub enum VadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("VAD model failed: {0}")]
    Torch(String),
}

impl Vad {
    pub fn load(model: &InstalledModel) -> Result<Self, VadError> {
        // Silero is small and stateful; it runs on the CPU whatever the Whisper device.
        let module = model.load_module("vad", Device::Cpu)?;
        let batched = if model.manifest.files.contains_key("vad-batched") {
            Some(model.load_module("vad-batched", Device::Cpu)?)
        } else {
            None
        };
        let cfg = &model.manifest.config;
        let get = |k: &str, d: f64| {
            cfg.get(k)
                .and_then(|v| v.as_float().or(v.as_integer().map(|i| i as f64)))
                .unwrap_or(d)
        };
        let d = VadParams::default();
        let params = VadParams {
            threshold: get("threshold", d.threshold as f64) as f32,
            neg_threshold: get("neg-threshold", d.neg_threshold as f64) as f32,
            min_speech_duration_ms: get("min-speech-duration-ms", d.min_speech_duration_ms),
            min_silence_duration_ms: get("min-silence-duration-ms", d.min_silence_duration_ms),
            speech_pad_ms: get("speech-pad-ms", d.speech_pad_ms),
        };
        Ok(Vad {
            module,
            batched,
            params,
        })
    }

    /// Uses Silero's own per-window module even where the batched one was exported (what
    /// models exported before it do).
    pub fn per_window(mut self) -> Self {
        self.batched = None;
        self
    }

    /// Whether the batched module is in use.
    pub fn is_batched(&self) -> bool {
        self.batched.is_some()
    }

    /// Speech probability of each 512-sample window (the last one zero-padded).
    pub fn speech_probs(&self, audio: &[f32]) -> Result<Vec<f32>, VadError> {
        let mut stream = self.stream()?;
        stream.push(audio)?;
        stream.finish()
    }

    /// Starts a new stream (Silero keeps its state between windows).
    pub fn stream(&self) -> Result<VadStream<'_>, VadError> {
        if self.batched.is_none() {
            self.module
                .method_is::<IValue>("reset_states", &[])
                .map_err(torch_err)?;
        }
        Ok(VadStream {
            vad: self,
            rest: Vec::new(),
            probs: Vec::new(),
            context: vec![0.0; CONTEXT],
            state: Tensor::zeros([2, 1, 128], (tch::Kind::Float, Device::Cpu)),
        })
    }

    /// Probabilities of consecutive whole windows through the batched module; `context`
    /// holds the 64 samples before `samples` and is updated, as is the LSTM `state`.
    fn batch(
        &self,
        module: &CModule,
        samples: &[f32],
        context: &mut [f32],
        state: &mut Tensor,
    ) -> Result<Vec<f32>, VadError> {
        let n = samples.len() / WINDOW;
        let mut rows = Vec::with_capacity(n * (CONTEXT + WINDOW));
        for i in 0..n {
            if i == 0 {
                rows.extend_from_slice(context);
            } else {
                rows.extend_from_slice(&samples[i * WINDOW - CONTEXT..i * WINDOW]);
            }
            rows.extend_from_slice(&samples[i * WINDOW..(i + 1) * WINDOW]);
        }
        if n > 0 {
            context.copy_from_slice(&samples[n * WINDOW - CONTEXT..n * WINDOW]);
        }
        let windows = Tensor::from_slice(&rows).view([n as i64, (CONTEXT + WINDOW) as i64]);
        let out = tch::no_grad(|| {
            module.forward_is(&[
                IValue::Tensor(windows),
                IValue::Tensor(state.shallow_clone()),
            ])
        })
        .map_err(torch_err)?;
        let IValue::Tuple(mut parts) = out else {
            return Err(VadError::Torch("unexpected batched VAD output".into()));
        };
        match (parts.pop(), parts.pop()) {
            (Some(IValue::Tensor(new_state)), Some(IValue::Tensor(probs))) => {
                *state = new_state;
                Vec::<f32>::try_from(probs.contiguous()).map_err(torch_err)
            }
            _ => Err(VadError::Torch("unexpected batched VAD output".into())),
        }
    }

    fn window(&self, chunk: &[f32]) -> Result<f32, VadError> {
        let x = Tensor::from_slice(chunk).unsqueeze(0);
        let out = self
            .module
            .forward_is(&[IValue::Tensor(x), IValue::Int(SAMPLE_RATE as i64)])
            .map_err(torch_err)?;
        match out {
            IValue::Tensor(t) => Ok(t.double_value(&[0, 0]) as f32),
            IValue::Double(p) => Ok(p as f32),
            _ => Err(VadError::Torch("unexpected VAD output".into())),
        }
    }
}

fn torch_err(e: tch::TchError) -> VadError {
    VadError::Torch(e.to_string().lines().next().unwrap_or("").to_string())
}

/// Speech probabilities of audio that arrives in pieces.
pub struct VadStream<'a> {
    vad: &'a Vad,
    rest: Vec<f32>,
    probs: Vec<f32>,
    /// The batched module's context (last 64 samples seen) and LSTM state.
    context: Vec<f32>,
    state: Tensor,
}

impl VadStream<'_> {
    pub fn push(&mut self, samples: &[f32]) -> Result<(), VadError> {
        self.rest.extend_from_slice(samples);
        // The batched module waits for a full batch, so a decoder's small pieces still make
        // few calls; the per-window module takes each window as it comes.
        let step = if self.vad.batched.is_some() {
            BATCH_WINDOWS * WINDOW
        } else {
            WINDOW
        };
        let whole = self.rest.len() / step * step;
        self.run(whole)?;
        self.rest.drain(..whole);
        Ok(())
    }

    /// Runs the first `len` samples of `rest` (whole windows).
    fn run(&mut self, len: usize) -> Result<(), VadError> {
        match &self.vad.batched {
            Some(module) => {
                for piece in self.rest[..len].chunks(BATCH_WINDOWS * WINDOW) {
                    let p = self
                        .vad
                        .batch(module, piece, &mut self.context, &mut self.state)?;
                    self.probs.extend(p);
                }
            }
            None => {
                for chunk in self.rest[..len].chunks(WINDOW) {
                    self.probs.push(self.vad.window(chunk)?);
                }
            }
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<Vec<f32>, VadError> {
        if !self.rest.is_empty() {
            let len = self.rest.len().div_ceil(WINDOW) * WINDOW;
            self.rest.resize(len, 0.0);
            self.run(len)?;
        }
        Ok(self.probs)
    }
}

/// Silero's `get_speech_timestamps_from_probs` (max_speech_duration_s = inf): speech
/// ranges in samples.
pub fn speech_timestamps(probs: &[f32], audio_len: usize, p: &VadParams) -> Vec<(usize, usize)> {
    let min_speech = SAMPLE_RATE * p.min_speech_duration_ms / 1000.0;
    let pad = SAMPLE_RATE * p.speech_pad_ms / 1000.0;
    let min_silence = SAMPLE_RATE * p.min_silence_duration_ms / 1000.0;
    let mut speeches: Vec<(usize, usize)> = Vec::new();
    let mut triggered = false;
    let mut start = 0usize;
    let mut temp_end = 0usize;
    for (i, &prob) in probs.iter().enumerate() {
        let cur = WINDOW * i;
        if prob >= p.threshold && temp_end != 0 {
            temp_end = 0;
        }
        if prob >= p.threshold && !triggered {
            triggered = true;
            start = cur;
            continue;
        }
        if prob < p.neg_threshold && triggered {
            if temp_end == 0 {
                temp_end = cur;
            }
            if ((cur - temp_end) as f64) < min_silence {
                continue;
            }
            if ((temp_end - start) as f64) > min_speech {
                speeches.push((start, temp_end));
            }
            temp_end = 0;
            triggered = false;
        }
    }
    if triggered && ((audio_len.saturating_sub(start)) as f64) > min_speech {
        speeches.push((start, audio_len));
    }
    let n = speeches.len();
    for i in 0..n {
        if i == 0 {
            speeches[0].0 = (speeches[0].0 as f64 - pad).max(0.0) as usize;
        }
        if i + 1 < n {
            let silence = speeches[i + 1].0 as f64 - speeches[i].1 as f64;
            if silence < 2.0 * pad {
                let half = (silence / 2.0).floor();
                speeches[i].1 = (speeches[i].1 as f64 + half) as usize;
                speeches[i + 1].0 = (speeches[i + 1].0 as f64 - half).max(0.0) as usize;
            } else {
                speeches[i].1 = (speeches[i].1 as f64 + pad).min(audio_len as f64) as usize;
                speeches[i + 1].0 = (speeches[i + 1].0 as f64 - pad).max(0.0) as usize;
            }
        } else {
            speeches[i].1 = (speeches[i].1 as f64 + pad).min(audio_len as f64) as usize;
        }
    }
    speeches
}

/// Speech ranges as Whisper clips in seconds, widened by `pad` on each side (Silero's own
/// 30 ms clips word onsets such as a quiet "And"; faster-whisper pads by 400 ms for Whisper)
/// and joined when closer than `merge_gap`, so Whisper keeps its context across pauses.
pub fn clips(
    speeches: &[(usize, usize)],
    merge_gap: f64,
    pad: f64,
    audio_len: usize,
) -> Vec<(f64, f64)> {
    let total = audio_len as f64 / SAMPLE_RATE;
    let mut out: Vec<(f64, f64)> = Vec::new();
    for &(s, e) in speeches {
        let s = (s as f64 / SAMPLE_RATE - pad).max(0.0);
        let e = (e as f64 / SAMPLE_RATE + pad).min(total);
        match out.last_mut() {
            Some(last) if s - last.1 < merge_gap => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}
