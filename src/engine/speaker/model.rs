//! resemblyzer's speaker encoder as exported by tools/export/speaker_export.py: `mel`
//! (librosa's mel power spectrogram, [N] samples → [1 + N / 160, 40]) and `encoder` (the GE2E
//! LSTM, [B, 160, 40] → [B, 256] unit vectors). What resemblyzer does around them, its
//! partial-utterance slicing and `normalize_volume`, is here.
use crate::engine::store::{InstalledModel, StoreError};
use tch::{CModule, Device, Kind, Tensor};

pub const HOP: usize = 160;
/// Mel frames in one partial utterance (1.6 s).
pub const PARTIAL_FRAMES: usize = 160;
const SAMPLE_RATE: f64 = 16_000.0;
/// Partials the encoder takes per call.
const BATCH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("speaker encoder failed: {0}")]
    Torch(String),
}

fn torch_err(e: tch::TchError) -> SpeakerError {
    SpeakerError::Torch(e.to_string())
}

pub struct SpeakerModel {
    mel: CModule,
    encoder: CModule,
    /// `embed_utterance`'s partial rate (per second) and minimum coverage of the last one.
    pub rate: f64,
    pub min_coverage: f64,
    /// `preprocess_wav`'s volume target (dBFS, raised only).
    pub target_dbfs: f64,
}

impl SpeakerModel {
    pub fn load(model: &InstalledModel) -> Result<Self, SpeakerError> {
        // Small, and fast enough on the CPU whatever the Whisper device (as the VAD).
        let mel = model.load_module("mel", Device::Cpu)?;
        let encoder = model.load_module("encoder", Device::Cpu)?;
        let cfg = &model.manifest.config;
        let get = |k: &str, d: f64| {
            cfg.get(k)
                .and_then(|v| v.as_float().or(v.as_integer().map(|i| i as f64)))
                .unwrap_or(d)
        };
        Ok(SpeakerModel {
            mel,
            encoder,
            rate: get("rate", 1.3),
            min_coverage: get("min-coverage", 0.75),
            target_dbfs: get("norm-target-dbfs", -30.0),
        })
    }

    /// The mel power spectrogram of `samples`, [frames, 40].
    pub fn mel(&self, samples: &[f32]) -> Result<Tensor, SpeakerError> {
        let wav = Tensor::from_slice(samples);
        self.mel.forward_ts(&[wav]).map_err(torch_err)
    }

    /// Unit embeddings of 160-frame slices of `mel` starting at `starts` (each start + 160
    /// must lie inside `mel`), [starts.len(), 256].
    pub fn embed_partials(&self, mel: &Tensor, starts: &[usize]) -> Result<Tensor, SpeakerError> {
        let mut out = Vec::new();
        for chunk in starts.chunks(BATCH) {
            let parts: Vec<Tensor> = chunk
                .iter()
                .map(|&s| mel.narrow(0, s as i64, PARTIAL_FRAMES as i64))
                .collect();
            let batch = Tensor::stack(&parts, 0);
            out.push(self.encoder.forward_ts(&[batch]).map_err(torch_err)?);
        }
        if out.is_empty() {
            return Ok(Tensor::zeros([0, 256], (Kind::Float, Device::Cpu)));
        }
        Ok(Tensor::cat(&out, 0))
    }

    /// resemblyzer's `VoiceEncoder.embed_utterance(wav)` for a preprocessed `wav`.
    pub fn embed_utterance(&self, wav: &[f32]) -> Result<Vec<f32>, SpeakerError> {
        let starts = partial_starts(wav.len(), self.rate, self.min_coverage);
        let need = starts.last().map_or(0, |s| s * HOP) + PARTIAL_FRAMES * HOP;
        let mut padded = wav.to_vec();
        if need >= padded.len() {
            padded.resize(need, 0.0);
        }
        let mel = self.mel(&padded)?;
        let partials = self.embed_partials(&mel, &starts)?;
        let mean = partials.mean_dim(0, false, Kind::Float);
        let unit = &mean / mean.norm();
        Vec::<f32>::try_from(&unit).map_err(torch_err)
    }
}

/// resemblyzer's `compute_partial_slices`: the start frame of each partial utterance.
pub fn partial_starts(n_samples: usize, rate: f64, min_coverage: f64) -> Vec<usize> {
    let n_frames = (n_samples + 1).div_ceil(HOP);
    let step = ((SAMPLE_RATE / rate) / HOP as f64).round().max(1.0) as usize;
    let steps = (n_frames + step + 1).saturating_sub(PARTIAL_FRAMES).max(1);
    let mut starts: Vec<usize> = (0..steps).step_by(step).collect();
    if let Some(&last) = starts.last() {
        let coverage = (n_samples as f64 - (last * HOP) as f64) / (PARTIAL_FRAMES * HOP) as f64;
        if coverage < min_coverage && starts.len() > 1 {
            starts.pop();
        }
    }
    starts
}

/// resemblyzer's `normalize_volume(wav, target_dbfs, increase_only=True)`, in place.
pub fn normalize_volume(wav: &mut [f32], target_dbfs: f64) {
    if wav.is_empty() {
        return;
    }
    let mean_sq = wav.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>() / wav.len() as f64;
    if mean_sq <= 0.0 {
        return;
    }
    let change = target_dbfs - 10.0 * mean_sq.log10();
    if change > 0.0 {
        let gain = 10f64.powf(change / 20.0) as f32;
        wav.iter_mut().for_each(|x| *x *= gain);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_slices_like_resemblyzer() {
        // compute_partial_slices(n, 1.3, 0.75) start frames (resemblyzer 0.1.4, by hand from
        // its formula: n_frames = ceil((n + 1) / 160), step = round(16000 / 1.3 / 160) = 77)
        assert_eq!(partial_starts(8000, 1.3, 0.75), vec![0]);
        assert_eq!(partial_starts(25_600, 1.3, 0.75), vec![0]);
        // 6.78 s: n_frames 679, steps 679 - 160 + 78 = 597 -> 0, 77, …, 539; the last covers
        // (108480 - 539*160) / 25600 = 0.87 >= 0.75, so kept
        let s = partial_starts(108_480, 1.3, 0.75);
        assert_eq!(s.first(), Some(&0));
        assert_eq!(s.last(), Some(&539));
        assert_eq!(s.len(), 8);
        // 3 s: n_frames 301, steps 219 -> 0, 77, 154; the last covers (48000 - 24640) / 25600
        // = 0.9125: kept
        assert_eq!(partial_starts(48_000, 1.3, 0.75), vec![0, 77, 154]);
        // 2.5 s: n_frames 251, steps 169 -> 0, 77, 154; 154 covers (40000-24640)/25600 = 0.6
        assert_eq!(partial_starts(40_000, 1.3, 0.75), vec![0, 77]);
    }

    #[test]
    fn volume_is_raised_to_the_target_only() {
        let mut quiet = vec![0.001f32, -0.001];
        normalize_volume(&mut quiet, -30.0);
        let rms = (quiet.iter().map(|x| x * x).sum::<f32>() / 2.0).sqrt();
        assert!((20.0 * rms.log10() + 30.0).abs() < 1e-3);
        let mut loud = vec![0.5f32, -0.5];
        normalize_volume(&mut loud, -30.0);
        assert_eq!(loud, vec![0.5, -0.5]);
        let mut silent = vec![0.0f32; 4];
        normalize_volume(&mut silent, -30.0);
        assert_eq!(silent, vec![0.0; 4]);
    }
}
