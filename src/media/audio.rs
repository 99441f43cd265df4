//! Decode any audio file (or the audio track of a video) to 16 kHz mono f32, Whisper's input.
//!
//! Parity with openai-whisper, which runs `ffmpeg -i FILE -ac 1 -ar 16000 -f s16le`:
//! - 16 kHz mono 16-bit input passes through untouched, so every sample equals ffmpeg's
//!   `s16 / 32768.0` bit for bit (symphonia converts i16 to f32 the same way).
//! - Channels are averaged to mono (ffmpeg's stereo downmix is the same 0.5/0.5 pan).
//! - Other rates go through rubato's synchronous FFT resampler ([`FftFixedInOut`]). Input and
//!   output rates are fixed integers, so the ratio is exact and never drifts; its anti-aliasing
//!   filter is a Blackman-Harris² windowed sinc as long as one FFT block, far cleaner than
//!   polynomial interpolation and cheaper than rubato's asynchronous sinc resampler. The
//!   filter's delay is trimmed so output sample `k` lines up with input time `k / 16000`, and
//!   the output holds `ceil(n * 16000 / rate)` samples, the count ffmpeg produces.
//! - A packet that fails to decode is skipped, as ffmpeg does; a file with no decodable audio
//!   at all is an error.
//! - In MP4/M4A/MOV the edit list's start (the AAC encoder's priming samples) is skipped as
//!   ffmpeg skips it; symphonia ignores `elst`, which would shift every timestamp by ~23 ms.
//!   Like ffmpeg 5, the end padding is kept.
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use rubato::{FftFixedInOut, Resampler};
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::codecs::CodecParameters;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

/// Whisper's sample rate.
pub const SAMPLE_RATE: u32 = 16_000;

/// Input frames per resampler block, at least (rounded up to an even number of the rate
/// pair's smallest block). Longer blocks give a longer, steeper anti-aliasing filter.
const RESAMPLER_CHUNK: usize = 2048;

/// Header limits, checked before a decoder allocates anything from them: a hostile header
/// (say, a 68-byte WAV claiming 4 GHz) must be refused, not obeyed. 384 kHz is the highest
/// rate any recorder writes; 32 channels is symphonia's own channel-mask width.
pub const MAX_SAMPLE_RATE: u32 = 384_000;
pub const MAX_CHANNELS: usize = 32;
pub const MAX_BITS_PER_SAMPLE: u32 = 64;
/// Frames in one packet (FLAC's largest block is 65535; AAC and MP3 take about a thousand).
pub const MAX_FRAMES_PER_PACKET: u64 = 1 << 18;
/// Decoded audio beyond this length is refused: the log-mel of the whole file is kept
/// (32 KB a second for 80 bins, 1.2 GB at this limit).
pub const MAX_DURATION_S: u64 = 10 * 3600;

/// After this many format resets (chained streams) in one file, stop following them.
const MAX_RESETS: u32 = 64;

/// Why a file could not be turned into 16 kHz mono samples. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("{}: cannot read the file: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: the file is empty (0 bytes)", path.display())]
    Empty { path: PathBuf },
    #[error("{}: is a directory, not a media file", path.display())]
    NotAFile { path: PathBuf },
    #[error("{}: not a recognised audio or video format ({detail})", path.display())]
    UnknownFormat { path: PathBuf, detail: String },
    #[error("{}: the file has no audio track", path.display())]
    NoAudioTrack { path: PathBuf },
    #[error("{}: unsupported audio codec ({detail})", path.display())]
    UnsupportedCodec { path: PathBuf, detail: String },
    #[error("{}: corrupt or truncated audio: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("{}: no audio could be decoded ({detail})", path.display())]
    NoAudioDecoded { path: PathBuf, detail: String },
    /// A header value or the decoded length is over one of the limits above.
    #[error("{}: {detail}", path.display())]
    OverLimit { path: PathBuf, detail: String },
    /// The decoder thread died (a panic outside the guarded calls): the stream is not whole.
    #[error("{}: the audio decoder failed: {detail}", path.display())]
    DecoderDied { path: PathBuf, detail: String },
}

impl AudioError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            AudioError::Io { path, .. }
            | AudioError::Empty { path }
            | AudioError::NotAFile { path }
            | AudioError::UnknownFormat { path, .. }
            | AudioError::NoAudioTrack { path }
            | AudioError::UnsupportedCodec { path, .. }
            | AudioError::Corrupt { path, .. }
            | AudioError::NoAudioDecoded { path, .. }
            | AudioError::OverLimit { path, .. }
            | AudioError::DecoderDied { path, .. } => path,
        }
    }
}

/// Decodes the whole file into memory as 16 kHz mono samples in [-1, 1].
pub fn decode_to_16k_mono(path: &Path) -> Result<Vec<f32>, AudioError> {
    let mut all = Vec::new();
    stream_16k_mono(path, 30.0, |chunk| {
        all.extend_from_slice(chunk);
        ControlFlow::Continue(())
    })?;
    Ok(all)
}

/// Reads `path` on its own thread as 16 kHz mono pieces of `chunk_seconds` (what a Whisper
/// job takes), so decoding overlaps the model's work and a long file never sits in memory
/// whole. A decode error arrives last, as `describe` words it.
pub fn stream_file(
    path: &Path,
    chunk_seconds: f64,
    describe: fn(AudioError) -> String,
) -> std::sync::mpsc::Receiver<Result<Vec<f32>, String>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(4);
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        // A panic anywhere in the decoding (not only inside the guarded symphonia calls) is
        // an error for this file, sent last: a closed channel alone would read as a
        // complete stream and a truncated transcript would be marked done.
        let sent = guarded(|| {
            let mut chunks_sent = 0;
            stream_16k_mono(&path, chunk_seconds, |chunk| {
                test_hook_panic(&path, chunks_sent);
                chunks_sent += 1;
                match tx.send(Ok(chunk.to_vec())) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(_) => ControlFlow::Break(()),
                }
            })
        });
        let err = match sent {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => e,
            Err(detail) => AudioError::DecoderDied {
                path: path.clone(),
                detail,
            },
        };
        let _ = tx.send(Err(describe(err)));
    });
    rx
}

/// Test hook: `ATELIER_TEST_PANIC_DECODING=NAME` panics the decoder thread after the first
/// chunk of a file named NAME was sent, as a decoder bug would.
fn test_hook_panic(path: &Path, chunks_sent: u64) {
    if chunks_sent > 0
        && std::env::var_os("ATELIER_TEST_PANIC_DECODING")
            .is_some_and(|name| path.file_name() == Some(name.as_os_str()))
    {
        panic!("test hook: ATELIER_TEST_PANIC_DECODING");
    }
}

/// Decodes the file as 16 kHz mono and hands it to `on_chunk` in chunks of
/// `chunk_seconds * 16000` samples (the last one may be shorter), so a long file never sits
/// in memory at once. `on_chunk` returns [`ControlFlow::Break`] to stop early.
/// Returns how many samples were handed over.
pub fn stream_16k_mono<F>(path: &Path, chunk_seconds: f64, on_chunk: F) -> Result<u64, AudioError>
where
    F: FnMut(&[f32]) -> ControlFlow<()>,
{
    let chunk_len = if chunk_seconds.is_finite() && chunk_seconds > 0.0 {
        ((chunk_seconds * f64::from(SAMPLE_RATE)).round() as usize).max(1)
    } else {
        SAMPLE_RATE as usize
    };
    let mut source = Source::open(path)?;
    let mut sink = Chunker::new(chunk_len, on_chunk);
    let mut resampler: Option<Resampler16k> = None;
    let mut mono = Vec::new();

    while sink.wants_more() {
        let Some(rate) = source.next_mono(&mut mono)? else {
            break;
        };
        if rate == 0 {
            return Err(source.corrupt("a packet reports a sample rate of 0 Hz"));
        }
        check_rate(path, rate)?;
        if resampler.as_ref().map(|r| r.rate_in) != Some(rate) {
            if let Some(old) = resampler.take() {
                old.finish(&mut sink).map_err(|e| source.corrupt(e))?;
            }
            resampler = Some(Resampler16k::new(rate).map_err(|e| source.corrupt(e))?);
        }
        if let Some(r) = resampler.as_mut() {
            r.push(&mono, &mut sink).map_err(|e| source.corrupt(e))?;
        }
        if sink.sent_or_held() > MAX_DURATION_S * u64::from(SAMPLE_RATE) {
            return Err(AudioError::OverLimit {
                path: path.to_path_buf(),
                detail: format!(
                    "the audio is longer than the limit of {} hours",
                    MAX_DURATION_S / 3600
                ),
            });
        }
    }
    if sink.wants_more() {
        if let Some(r) = resampler.take() {
            r.finish(&mut sink).map_err(|e| source.corrupt(e))?;
        }
    }
    if !source.decoded_any {
        return Err(AudioError::NoAudioDecoded {
            path: path.to_path_buf(),
            detail: source
                .last_error
                .take()
                .unwrap_or_else(|| "the audio track holds no samples".to_string()),
        });
    }
    Ok(sink.finish())
}

/// Runs a symphonia call, turning a panic inside it (a demuxer or decoder bug on hostile
/// input) into an error instead of taking the program down.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        format!("the decoder failed: {msg}")
    })
}

/// A demuxer and a decoder for the file's first decodable audio track.
struct Source {
    path: PathBuf,
    format: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    planes: Vec<Vec<f32>>,
    decoded_any: bool,
    last_error: Option<String>,
    resets: u32,
    /// Leading frames the container says to skip (encoder delay).
    skip: u64,
}

impl Source {
    fn open(path: &Path) -> Result<Self, AudioError> {
        let io_err = |source| AudioError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io_err)?;
        if meta.is_dir() {
            return Err(AudioError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        if meta.len() == 0 {
            return Err(AudioError::Empty {
                path: path.to_path_buf(),
            });
        }
        let file = File::open(path).map_err(io_err)?;
        let mss = MediaSourceStream::new(Box::new(file), Default::default());
        let mut hint = Hint::new();
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            hint.with_extension(ext);
        }
        let probed = guarded(|| {
            symphonia::default::get_probe().probe(
                &hint,
                mss,
                FormatOptions::default(),
                MetadataOptions::default(),
            )
        });
        let format = match probed {
            Ok(Ok(format)) => format,
            Ok(Err(SymphoniaError::IoError(e))) if e.kind() != io::ErrorKind::UnexpectedEof => {
                return Err(io_err(e));
            }
            Ok(Err(e)) => {
                return Err(AudioError::UnknownFormat {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                })
            }
            Err(panic) => {
                return Err(AudioError::UnknownFormat {
                    path: path.to_path_buf(),
                    detail: panic,
                })
            }
        };
        let (decoder, track_id) = open_decoder(path, format.as_ref())?;
        let skip = if format.format_info().short_name == "isomp4" {
            let rate = decoder.codec_params().sample_rate.unwrap_or(0);
            mp4::encoder_delay(path, track_id, rate).unwrap_or(0)
        } else {
            0
        };
        Ok(Source {
            path: path.to_path_buf(),
            format,
            decoder,
            track_id,
            planes: Vec::new(),
            decoded_any: false,
            last_error: None,
            resets: 0,
            skip,
        })
    }

    fn corrupt(&self, detail: impl ToString) -> AudioError {
        AudioError::Corrupt {
            path: self.path.clone(),
            detail: detail.to_string(),
        }
    }

    /// Decodes the next packet that yields audio, downmixed to mono into `out`; returns its
    /// sample rate, or `None` at the end of the stream.
    fn next_mono(&mut self, out: &mut Vec<f32>) -> Result<Option<u32>, AudioError> {
        loop {
            let packet = match guarded(|| self.format.next_packet()) {
                Ok(Ok(Some(packet))) => packet,
                Ok(Ok(None)) => return Ok(None),
                Ok(Err(SymphoniaError::ResetRequired)) => {
                    // A chained stream (e.g. concatenated Ogg): pick the audio track again.
                    self.resets += 1;
                    if self.resets > MAX_RESETS {
                        return Ok(None);
                    }
                    let (decoder, track_id) = open_decoder(&self.path, self.format.as_ref())?;
                    self.decoder = decoder;
                    self.track_id = track_id;
                    continue;
                }
                // Truncated or damaged container: keep what was decoded, as ffmpeg does.
                Ok(Err(e @ (SymphoniaError::IoError(_) | SymphoniaError::DecodeError(_)))) => {
                    if self.decoded_any {
                        tracing::warn!("{}: stopped at a damaged packet: {e}", self.path.display());
                        return Ok(None);
                    }
                    return Err(AudioError::NoAudioDecoded {
                        path: self.path.clone(),
                        detail: e.to_string(),
                    });
                }
                Ok(Err(e)) => return Err(self.corrupt(e)),
                Err(panic) => {
                    if self.decoded_any {
                        tracing::warn!("{}: {panic}", self.path.display());
                        return Ok(None);
                    }
                    return Err(self.corrupt(panic));
                }
            };
            if packet.track_id != self.track_id {
                continue;
            }
            let decoder = &mut self.decoder;
            let planes = &mut self.planes;
            let decoded = guarded(|| match decoder.decode(&packet) {
                Ok(buf) => {
                    buf.copy_to_vecs_planar::<f32>(planes);
                    Ok(buf.spec().rate())
                }
                Err(e) => Err(e),
            });
            let rate = match decoded {
                Ok(Ok(rate)) => rate,
                // A damaged packet: skip it, as ffmpeg does.
                Ok(Err(
                    e @ (SymphoniaError::IoError(_)
                    | SymphoniaError::DecodeError(_)
                    | SymphoniaError::ResetRequired),
                )) => {
                    self.last_error = Some(e.to_string());
                    continue;
                }
                Ok(Err(e)) => return Err(self.corrupt(e)),
                Err(panic) => {
                    self.last_error = Some(panic);
                    self.decoder.reset();
                    continue;
                }
            };
            let frames = self.planes.first().map_or(0, Vec::len);
            self.decoded_any = true;
            let skipped = frames.min(usize::try_from(self.skip).unwrap_or(usize::MAX));
            self.skip -= skipped as u64;
            if skipped == frames {
                continue;
            }
            downmix(&self.planes, skipped..frames, out);
            return Ok(Some(rate));
        }
    }
}

/// The first audio track with a codec symphonia knows, and a decoder for it.
fn open_decoder(
    path: &Path,
    format: &dyn FormatReader,
) -> Result<(Box<dyn AudioDecoder>, u32), AudioError> {
    let audio_params = |t: &symphonia::core::formats::Track| match &t.codec_params {
        Some(CodecParameters::Audio(p)) => Some(p.clone()),
        _ => None,
    };
    let track = format
        .first_track_known_codec(TrackType::Audio)
        .or_else(|| format.first_track(TrackType::Audio));
    let Some(track) = track else {
        return Err(AudioError::NoAudioTrack {
            path: path.to_path_buf(),
        });
    };
    let Some(params) = audio_params(track) else {
        return Err(AudioError::UnsupportedCodec {
            path: path.to_path_buf(),
            detail: "the audio track has no codec parameters".to_string(),
        });
    };
    check_params(path, &params)?;
    let made = guarded(|| {
        symphonia::default::get_codecs()
            .make_audio_decoder(&params, &AudioDecoderOptions::default())
    });
    match made {
        Ok(Ok(decoder)) => Ok((decoder, track.id)),
        Ok(Err(e)) => Err(AudioError::UnsupportedCodec {
            path: path.to_path_buf(),
            detail: format!("codec id {}: {e}", params.codec),
        }),
        Err(panic) => Err(AudioError::UnsupportedCodec {
            path: path.to_path_buf(),
            detail: panic,
        }),
    }
}

fn check_rate(path: &Path, rate: u32) -> Result<(), AudioError> {
    if rate > MAX_SAMPLE_RATE {
        return Err(AudioError::OverLimit {
            path: path.to_path_buf(),
            detail: format!("sample rate {rate} Hz is over the limit of {MAX_SAMPLE_RATE} Hz"),
        });
    }
    Ok(())
}

/// Refuses the header values a decoder sizes its buffers by, before it is made.
fn check_params(
    path: &Path,
    params: &symphonia::core::codecs::audio::AudioCodecParameters,
) -> Result<(), AudioError> {
    let over = |detail: String| {
        Err(AudioError::OverLimit {
            path: path.to_path_buf(),
            detail,
        })
    };
    match params.sample_rate {
        Some(0) => return over("the header gives a sample rate of 0 Hz".to_string()),
        Some(rate) => check_rate(path, rate)?,
        None => {}
    }
    if let Some(ch) = &params.channels {
        match ch.count() {
            0 => return over("the header gives 0 channels".to_string()),
            n if n > MAX_CHANNELS => {
                return over(format!(
                    "{n} channels is over the limit of {MAX_CHANNELS} channels"
                ))
            }
            _ => {}
        }
    }
    for bits in [params.bits_per_sample, params.bits_per_coded_sample]
        .into_iter()
        .flatten()
    {
        if bits == 0 || bits > MAX_BITS_PER_SAMPLE {
            return over(format!(
                "{bits} bits per sample is outside 1 to {MAX_BITS_PER_SAMPLE}"
            ));
        }
    }
    for (what, frames) in [
        ("frames per packet", params.max_frames_per_packet),
        ("frames per block", params.frames_per_block),
    ] {
        if let Some(n) = frames.filter(|&n| n > MAX_FRAMES_PER_PACKET) {
            return over(format!(
                "{n} {what} is over the limit of {MAX_FRAMES_PER_PACKET}"
            ));
        }
    }
    Ok(())
}

/// Averages frames `range` of the planes into one channel; one plane is copied unchanged.
fn downmix(planes: &[Vec<f32>], range: std::ops::Range<usize>, out: &mut Vec<f32>) {
    out.clear();
    match planes {
        [] => {}
        [mono] => out.extend_from_slice(&mono[range]),
        [first, rest @ ..] => {
            out.extend_from_slice(&first[range.clone()]);
            for plane in rest {
                for (o, s) in out.iter_mut().zip(&plane[range.clone()]) {
                    *o += s;
                }
            }
            let scale = 1.0 / planes.len() as f32;
            for o in out.iter_mut() {
                *o *= scale;
            }
        }
    }
}

/// Just enough of ISO BMFF (MP4, M4A, MOV) to read a track's edit list, which symphonia's
/// reader ignores. The edit's media time is the encoder delay (AAC priming), which ffmpeg
/// skips.
mod mp4 {
    use super::*;

    /// Larger `moov` boxes are not read (they would be hostile, or absurd).
    const MAX_MOOV: u64 = 64 << 20;

    /// The encoder delay of track `track_id` in frames at `rate`, if its edit list has a
    /// single non-empty edit (the common case; other tracks are left as they are).
    pub(super) fn encoder_delay(path: &Path, track_id: u32, rate: u32) -> Option<u64> {
        if rate == 0 {
            return None;
        }
        edit_delay(&read_moov(path)?, track_id, rate)
    }

    /// [`encoder_delay`] on the body of a `moov` box already read.
    pub(super) fn edit_delay(moov: &[u8], track_id: u32, rate: u32) -> Option<u64> {
        if rate == 0 {
            return None;
        }
        let trak = boxes(moov)
            .filter(|(kind, _)| kind == b"trak")
            .map(|(_, body)| body)
            .find(|trak| child(trak, b"tkhd").and_then(track_header_id) == Some(track_id))?;
        let media_scale = timescale(child(child(trak, b"mdia")?, b"mdhd")?)?;
        let elst = child(child(trak, b"edts")?, b"elst")?;
        let v1 = *elst.first()? == 1;
        let entry_len = if v1 { 20 } else { 12 };
        let mut edit = None;
        for i in 0..be_u32(elst, 4)? as usize {
            // Entry: segment duration, media time (v1: 64-bit each), then the rate.
            let at = 8 + i.checked_mul(entry_len)?;
            let media_time = if v1 {
                be_u64(elst, at + 8)? as i64
            } else {
                i64::from(be_u32(elst, at + 4)? as i32)
            };
            if media_time == -1 {
                continue; // an empty edit: a start offset, not audio
            }
            if edit.is_some() {
                return None;
            }
            edit = Some(u64::try_from(media_time).ok()?);
        }
        rescale(edit?, rate, media_scale)
    }

    fn rescale(value: u64, rate: u32, timescale: u32) -> Option<u64> {
        if timescale == 0 {
            return None;
        }
        let scaled = u128::from(value) * u128::from(rate) / u128::from(timescale);
        u64::try_from(scaled).ok()
    }

    /// The body of the top-level `moov` box, when the file starts with `ftyp`.
    fn read_moov(path: &Path) -> Option<Vec<u8>> {
        let mut file = File::open(path).ok()?;
        let len = file.metadata().ok()?.len();
        let mut pos = 0u64;
        while pos.checked_add(8)? <= len {
            file.seek(SeekFrom::Start(pos)).ok()?;
            let mut head = [0u8; 16];
            file.read_exact(&mut head[..8]).ok()?;
            let kind: [u8; 4] = [head[4], head[5], head[6], head[7]];
            if pos == 0 && &kind != b"ftyp" {
                return None;
            }
            let (size, header) = match be_u32(&head, 0)? {
                0 => (len - pos, 8),
                1 => {
                    file.read_exact(&mut head[8..16]).ok()?;
                    (be_u64(&head, 8)?, 16)
                }
                size => (u64::from(size), 8),
            };
            if size < header {
                return None;
            }
            if &kind == b"moov" {
                let body = size - header;
                if body > MAX_MOOV || body > len - pos {
                    return None;
                }
                let mut buf = vec![0; usize::try_from(body).ok()?];
                file.read_exact(&mut buf).ok()?;
                return Some(buf);
            }
            pos = pos.checked_add(size)?;
        }
        None
    }

    /// The child boxes in a box body, as (type, body).
    fn boxes(mut data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
        std::iter::from_fn(move || {
            let kind: [u8; 4] = data.get(4..8)?.try_into().ok()?;
            let (size, header) = match be_u32(data, 0)? {
                0 => (data.len(), 8),
                1 => (usize::try_from(be_u64(data, 8)?).ok()?, 16),
                size => (usize::try_from(size).ok()?, 8),
            };
            if size < header || size > data.len() {
                return None;
            }
            let body = &data[header..size];
            data = &data[size..];
            Some((kind, body))
        })
    }

    fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
        boxes(data).find(|(k, _)| k == kind).map(|(_, body)| body)
    }

    /// `mdhd`: the timescale after version, flags and two timestamps.
    fn timescale(full_box: &[u8]) -> Option<u32> {
        be_u32(full_box, if *full_box.first()? == 1 { 20 } else { 12 })
    }

    /// `tkhd`: the track id, laid out like a timescale.
    fn track_header_id(full_box: &[u8]) -> Option<u32> {
        timescale(full_box)
    }

    fn be_u32(data: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_be_bytes(
            data.get(at..at.checked_add(4)?)?.try_into().ok()?,
        ))
    }

    fn be_u64(data: &[u8], at: usize) -> Option<u64> {
        Some(u64::from_be_bytes(
            data.get(at..at.checked_add(8)?)?.try_into().ok()?,
        ))
    }
}

/// One stretch of audio at one input rate, resampled to 16 kHz with its delay trimmed.
struct Resampler16k {
    rate_in: u32,
    /// `None` when the input is already 16 kHz: samples pass through untouched.
    fft: Option<FftFixedInOut<f32>>,
    pending: Vec<f32>,
    out: Vec<Vec<f32>>,
    /// Output samples still to drop at the start (the filter's delay).
    skip: usize,
    frames_in: u64,
    frames_out: u64,
}

impl Resampler16k {
    fn new(rate_in: u32) -> Result<Self, String> {
        let fft = if rate_in == SAMPLE_RATE {
            None
        } else {
            // The filter is centred on input sample `block_in / 2`. With an even number of
            // smallest blocks, both block sizes are even and that centre falls exactly on
            // output sample `block_out / 2` (rubato's `output_delay`), so trimming the delay
            // leaves no fractional-sample shift. An odd count shifts the output by up to half
            // a sample, which costs 20+ dB of SNR above 3 kHz.
            let rate = rate_in as usize;
            let smallest = rate / gcd(rate, SAMPLE_RATE as usize);
            let blocks = RESAMPLER_CHUNK.div_ceil(smallest).next_multiple_of(2);
            let fft = FftFixedInOut::<f32>::new(rate, SAMPLE_RATE as usize, blocks * smallest, 1)
                .map_err(|e| format!("cannot resample {rate_in} Hz: {e}"))?;
            Some(fft)
        };
        let skip = fft.as_ref().map_or(0, |f| f.output_delay());
        let out = fft
            .as_ref()
            .map_or_else(Vec::new, |f| f.output_buffer_allocate(true));
        Ok(Resampler16k {
            rate_in,
            fft,
            pending: Vec::new(),
            out,
            skip,
            frames_in: 0,
            frames_out: 0,
        })
    }

    /// How many output samples `frames_in` input samples make: ffmpeg's count.
    fn target_out(&self) -> u64 {
        let num = u128::from(self.frames_in) * u128::from(SAMPLE_RATE);
        num.div_ceil(u128::from(self.rate_in)) as u64
    }

    fn push<F>(&mut self, input: &[f32], sink: &mut Chunker<F>) -> Result<(), String>
    where
        F: FnMut(&[f32]) -> ControlFlow<()>,
    {
        self.frames_in += input.len() as u64;
        if self.fft.is_none() {
            self.frames_out += input.len() as u64;
            sink.push(input);
            return Ok(());
        }
        self.pending.extend_from_slice(input);
        let mut used = 0;
        while let Some(fft) = self.fft.as_mut() {
            let need = fft.input_frames_next();
            if self.pending.len() - used < need {
                break;
            }
            let (_, n_out) = fft
                .process_into_buffer(&[&self.pending[used..used + need]], &mut self.out, None)
                .map_err(|e| format!("resampler: {e}"))?;
            used += need;
            self.emit(n_out, u64::MAX, sink);
        }
        self.pending.drain(..used);
        Ok(())
    }

    /// Flushes the filter with silence until the output reaches ffmpeg's sample count.
    fn finish<F>(mut self, sink: &mut Chunker<F>) -> Result<(), String>
    where
        F: FnMut(&[f32]) -> ControlFlow<()>,
    {
        let target = self.target_out();
        while self.frames_out < target && sink.wants_more() {
            let Some(fft) = self.fft.as_mut() else {
                break;
            };
            let need = fft.input_frames_next();
            self.pending.resize(need, 0.0);
            let (_, n_out) = fft
                .process_into_buffer(&[&self.pending[..need]], &mut self.out, None)
                .map_err(|e| format!("resampler: {e}"))?;
            self.pending.clear();
            self.emit(n_out, target, sink);
        }
        Ok(())
    }

    /// Sends the first `n` samples of the output block on, after the delay, up to `limit`.
    fn emit<F>(&mut self, n: usize, limit: u64, sink: &mut Chunker<F>)
    where
        F: FnMut(&[f32]) -> ControlFlow<()>,
    {
        let Some(block) = self.out.first() else {
            return;
        };
        let block = &block[..n.min(block.len())];
        let dropped = self.skip.min(block.len());
        self.skip -= dropped;
        let block = &block[dropped..];
        let room = limit.saturating_sub(self.frames_out);
        let take = block.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        self.frames_out += take as u64;
        sink.push(&block[..take]);
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Cuts the output into fixed-size chunks for the caller's callback.
struct Chunker<F> {
    chunk_len: usize,
    buf: Vec<f32>,
    on_chunk: F,
    sent: u64,
    stopped: bool,
}

impl<F: FnMut(&[f32]) -> ControlFlow<()>> Chunker<F> {
    fn new(chunk_len: usize, on_chunk: F) -> Self {
        Chunker {
            chunk_len,
            buf: Vec::with_capacity(chunk_len.min(1 << 20)),
            on_chunk,
            sent: 0,
            stopped: false,
        }
    }

    fn wants_more(&self) -> bool {
        !self.stopped
    }

    /// Samples handed over so far, plus those waiting for a full chunk.
    fn sent_or_held(&self) -> u64 {
        self.sent + self.buf.len() as u64
    }

    fn push(&mut self, mut samples: &[f32]) {
        while !samples.is_empty() && !self.stopped {
            let take = (self.chunk_len - self.buf.len()).min(samples.len());
            self.buf.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if self.buf.len() == self.chunk_len {
                self.flush();
            }
        }
    }

    fn flush(&mut self) {
        if self.buf.is_empty() || self.stopped {
            return;
        }
        self.sent += self.buf.len() as u64;
        if (self.on_chunk)(&self.buf).is_break() {
            self.stopped = true;
        }
        self.buf.clear();
    }

    fn finish(mut self) -> u64 {
        self.flush();
        self.sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn wav_header(rate: u32, channels: u16, bits: u16, data_len: u32) -> Vec<u8> {
        let mut b = b"RIFF".to_vec();
        b.extend_from_slice(&(36 + data_len).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&channels.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * 2).to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&bits.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&data_len.to_le_bytes());
        b
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Mutated WAV and FLAC headers and arbitrary bytes: an error or samples, never a
        /// panic or an unbounded allocation (the limits cap what a header can ask for).
        #[test]
        fn header_parsing_survives_mutations(
            flac in any::<bool>(),
            edits in proptest::collection::vec((0usize..64, any::<u8>()), 0..8),
            tail in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut bytes = if flac {
                let mut b = b"fLaC\x80\0\0\x22".to_vec();
                b.extend_from_slice(&[0x10, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x03, 0xe8, 0x00, 0xf0]);
                b.extend_from_slice(&[0; 20]);
                b
            } else {
                wav_header(16_000, 1, 16, 256)
            };
            for (at, v) in edits {
                if let Some(b) = bytes.get_mut(at) {
                    *b = v;
                }
            }
            bytes.extend_from_slice(&tail);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(if flac { "x.flac" } else { "x.wav" });
            std::fs::write(&path, &bytes).unwrap();
            let mut total = 0u64;
            let _ = stream_16k_mono(&path, 1.0, |c| {
                total += c.len() as u64;
                ControlFlow::Continue(())
            });
            // A few hundred bytes of input cannot become more than a few seconds at 16 kHz
            // even upsampled from the lowest rate (1 Hz to 16 kHz of 256 samples is 4 M).
            prop_assert!(total <= 16_000 * 600);
        }

        /// The edit-list parser on arbitrary and on box-shaped bytes: no panic.
        #[test]
        fn edit_list_parser_survives_arbitrary_bytes(
            raw in proptest::collection::vec(any::<u8>(), 0..512),
            sizes in proptest::collection::vec(any::<u32>(), 1..6),
            track in any::<u32>(),
            rate in any::<u32>(),
        ) {
            let _ = mp4::edit_delay(&raw, track, rate);
            // Nested boxes with lying sizes: trak > tkhd, mdia > mdhd, edts > elst.
            let mut nested = Vec::new();
            for (kind, size) in [b"trak", b"edts", b"elst", b"mdia", b"mdhd", b"tkhd"].iter().zip(&sizes) {
                nested.extend_from_slice(&size.to_be_bytes());
                nested.extend_from_slice(*kind);
            }
            nested.extend_from_slice(&raw);
            let _ = mp4::edit_delay(&nested, track, rate);
        }
    }

    #[test]
    fn downmix_averages_channels() {
        let mut out = Vec::new();
        downmix(&[vec![1.0, 0.5], vec![0.0, -0.5]], 0..2, &mut out);
        assert_eq!(out, vec![0.5, 0.0]);
        downmix(&[vec![0.25, -1.0, 0.5]], 1..3, &mut out);
        assert_eq!(out, vec![-1.0, 0.5]);
    }

    #[test]
    fn chunker_cuts_fixed_chunks_and_stops() {
        let mut seen = Vec::new();
        let mut c = Chunker::new(3, |s: &[f32]| {
            seen.push(s.len());
            if seen.len() == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        c.push(&[0.0; 4]);
        c.push(&[0.0; 4]);
        assert!(!c.wants_more());
        assert_eq!(c.finish(), 6);
        assert_eq!(seen, vec![3, 3]);
    }

    #[test]
    fn resampler_keeps_ffmpeg_length() {
        for (rate, n) in [
            (44_100u32, 44_101usize),
            (8_000, 1234),
            (48_000, 17),
            (22_050, 0),
        ] {
            let mut r = Resampler16k::new(rate).unwrap();
            let mut total = 0usize;
            let mut sink = Chunker::new(1000, |s: &[f32]| {
                total += s.len();
                ControlFlow::Continue(())
            });
            r.push(&vec![0.1; n], &mut sink).unwrap();
            r.finish(&mut sink).unwrap();
            sink.finish();
            assert_eq!(total as u64, (n as u64 * 16_000).div_ceil(u64::from(rate)));
        }
    }
}
