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

/// openai's log-mel spectrogram of a stream of 16 kHz samples, computed as they arrive:
/// only the mel frames are kept (about 32 KB a second for 80 bins), never the audio.
///
/// The padded signal is openai's: reflect padding of N_FFT/2 at the start, then the audio,
/// then N_SAMPLES zeros (whose reflection at the end is zeros too). Frame `f` covers padded
/// samples `[f·HOP, f·HOP + N_FFT)`; openai drops the last STFT frame, so there are
/// `(len + N_SAMPLES) / HOP` frames.
pub struct MelStream {
    /// Padded samples from frame `next_frame`'s start on.
    pending: Vec<f32>,
    /// The first N_FFT/2 + 1 samples, held back until the start padding can be made.
    head: Vec<f32>,
    started: bool,
    next_frame: usize,
    samples: usize,
    parts: Vec<Tensor>,
}

impl Default for MelStream {
    fn default() -> Self {
        Self::new()
    }
}

impl MelStream {
    pub fn new() -> Self {
        MelStream {
            pending: Vec::new(),
            head: Vec::new(),
            started: false,
            next_frame: 0,
            samples: 0,
            parts: Vec::new(),
        }
    }

    /// Samples pushed so far.
    pub fn samples(&self) -> usize {
        self.samples
    }

    pub fn push(
        &mut self,
        module: &tch::CModule,
        samples: &[f32],
        device: Device,
    ) -> tch::Result<()> {
        self.samples += samples.len();
        if !self.started {
            self.head.extend_from_slice(samples);
            if self.head.len() <= N_FFT / 2 {
                return Ok(());
            }
            self.start();
        } else {
            self.pending.extend_from_slice(samples);
        }
        self.run(module, device, false)
    }

    fn start(&mut self) {
        let pad = N_FFT / 2;
        let head = std::mem::take(&mut self.head);
        // Reflection: padded[j] = audio[pad - j] for j < pad (zeros past a short file's end).
        self.pending = (0..pad)
            .map(|j| head.get(pad - j).copied().unwrap_or(0.0))
            .collect();
        self.pending.extend_from_slice(&head);
        self.started = true;
    }

    /// Computes the frames whose samples are all present, CHUNK_FRAMES per module call
    /// (all that remain when `last`).
    fn run(&mut self, module: &tch::CModule, device: Device, last: bool) -> tch::Result<()> {
        loop {
            let available = if self.pending.len() >= N_FFT {
                (self.pending.len() - N_FFT) / HOP_LENGTH + 1
            } else {
                0
            };
            let mut frames = available.min(CHUNK_FRAMES);
            if last {
                let total = (self.samples + N_SAMPLES) / HOP_LENGTH;
                frames = frames.min(total - self.next_frame);
            } else if frames < CHUNK_FRAMES {
                return Ok(()); // wait for more: fewer, larger module calls
            }
            if frames == 0 {
                return Ok(());
            }
            let end = (frames - 1) * HOP_LENGTH + N_FFT;
            let input = Tensor::from_slice(&self.pending[..end]).to_device(device);
            let out = module.forward_ts(&[input])?;
            self.parts
                .push(out.to_kind(Kind::Float).to_device(Device::Cpu));
            self.pending.drain(..frames * HOP_LENGTH);
            self.next_frame += frames;
        }
    }

    /// Ends the stream: `[n_mels, (len + N_SAMPLES) / HOP]`, normalised as openai does
    /// (`max(x, x.max() - 8)`, then `(x + 4) / 4`).
    pub fn finish(mut self, module: &tch::CModule, device: Device) -> tch::Result<Tensor> {
        if !self.started {
            self.start();
        }
        // N_SAMPLES zeros, and their reflection: zeros.
        self.pending
            .extend(std::iter::repeat_n(0f32, N_SAMPLES + N_FFT / 2));
        self.run(module, device, true)?;
        let log_spec = Tensor::cat(&self.parts, 1);
        let max = log_spec.max().double_value(&[]);
        Ok((log_spec.clamp_min(max - 8.0) + 4.0) / 4.0)
    }
}

/// `whisper.audio.log_mel_spectrogram(audio, n_mels, padding=N_SAMPLES)` of a whole
/// signal: `[n_mels, (len + N_SAMPLES) / HOP_LENGTH]` on the CPU.
pub fn log_mel_spectrogram(
    mel_module: &tch::CModule,
    audio: &[f32],
    device: Device,
) -> tch::Result<Tensor> {
    let mut stream = MelStream::new();
    stream.push(mel_module, audio, device)?;
    stream.finish(mel_module, device)
}

/// Slices `[n_mels, frames]` to `len` frames from `start`, zero-padding past the end
/// (openai's `pad_or_trim` on a segment).
pub fn mel_window(mel: &Tensor, start: usize, len: usize) -> Tensor {
    mel_window_padded(mel, start, len, 0.0)
}

/// `mel_window`, padded with `pad` instead of zeros.
pub fn mel_window_padded(mel: &Tensor, start: usize, len: usize, pad: f64) -> Tensor {
    let total = mel.size()[1] as usize;
    let take = len.min(total.saturating_sub(start));
    let seg = mel.narrow(1, start as i64, take as i64);
    if take < N_FRAMES {
        seg.pad([0, (N_FRAMES - take) as i64], "constant", Some(pad))
    } else {
        seg
    }
}

/// The log-mel value of digital silence in `mel`: its minimum, the `max - 8` floor, which
/// every file reaches in the 30 s of zeros appended before the transform.
pub fn silence_level(mel: &Tensor) -> f64 {
    mel.min().double_value(&[])
}
