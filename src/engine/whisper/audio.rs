//! openai-whisper's audio constants and its log-mel spectrogram, computed in chunks by the
//! exported `mel` module (STFT power → mel filters → log10, without normalisation).
use tch::{Device, Kind, Tensor};

pub const SAMPLE_RATE: usize = 16_000;
pub const N_FFT: usize = 400;
pub const HOP_LENGTH: usize = 160;
pub const CHUNK_LENGTH: usize = 30;
pub const N_SAMPLES: usize = CHUNK_LENGTH * SAMPLE_RATE;
pub const N_FRAMES: usize = N_SAMPLES / HOP_LENGTH;
pub const FRAMES_PER_SECOND: usize = SAMPLE_RATE / HOP_LENGTH;
/// Frames per mel-module call: bounds memory for long files.
const CHUNK_FRAMES: usize = 6_000;

/// The sample at index `i` of `audio ++ zeros(N_SAMPLES)` after torch.stft's reflect
/// padding of N_FFT/2 on both sides.
fn padded_sample(audio: &[f32], total: usize, i: usize) -> f32 {
    let pad = N_FFT / 2;
    let at = |j: usize| audio.get(j).copied().unwrap_or(0.0);
    if i < pad {
        at(pad - i)
    } else if i - pad < total {
        at(i - pad)
    } else {
        // Reflection of the zero padding at the end.
        let k = i - pad - total;
        at(total.saturating_sub(2 + k))
    }
}

/// `whisper.audio.log_mel_spectrogram(audio, n_mels, padding=N_SAMPLES)`: returns
/// `[n_mels, (len + N_SAMPLES) / HOP_LENGTH]` on the CPU.
pub fn log_mel_spectrogram(
    mel_module: &tch::CModule,
    audio: &[f32],
    device: Device,
) -> tch::Result<Tensor> {
    let total = audio.len() + N_SAMPLES;
    let n_frames = total / HOP_LENGTH;
    let mut parts = Vec::new();
    let mut f0 = 0;
    while f0 < n_frames {
        let f1 = (f0 + CHUNK_FRAMES).min(n_frames);
        let start = f0 * HOP_LENGTH;
        let end = (f1 - 1) * HOP_LENGTH + N_FFT;
        let chunk: Vec<f32> = (start..end)
            .map(|i| padded_sample(audio, total, i))
            .collect();
        let input = Tensor::from_slice(&chunk).to_device(device);
        let out = mel_module.forward_ts(&[input])?;
        parts.push(out.to_kind(Kind::Float).to_device(Device::Cpu));
        f0 = f1;
    }
    let log_spec = Tensor::cat(&parts, 1);
    let max = log_spec.max().double_value(&[]);
    Ok((log_spec.clamp_min(max - 8.0) + 4.0) / 4.0)
}

/// Slices `[n_mels, frames]` to `len` frames from `start`, zero-padding past the end
/// (openai's `pad_or_trim` on a segment).
pub fn mel_window(mel: &Tensor, start: usize, len: usize) -> Tensor {
    let total = mel.size()[1] as usize;
    let take = len.min(total.saturating_sub(start));
    let seg = mel.narrow(1, start as i64, take as i64);
    if take < N_FRAMES {
        seg.constant_pad_nd([0, (N_FRAMES - take) as i64])
    } else {
        seg
    }
}
