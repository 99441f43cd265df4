//! openai-whisper's `transcribe()` (transcribe.py): 30 s windows, timestamp-driven seek,
//! temperature fallback, no-speech skip, prompt conditioning; over clip ranges (from VAD).
use super::audio::{
    mel_window, mel_window_padded, silence_level, FRAMES_PER_SECOND, HOP_LENGTH, N_FRAMES,
    SAMPLE_RATE,
};
use super::decode::{decode, detect_language, DecodeOptions, DecodeResult, Task};
use super::model::{ModelError, WhisperModel};
use super::timing::{self, AlignmentInput};
use crate::engine::CancelToken;
use crate::transcript::{Segment, Transcript};

#[derive(Debug, Clone)]
pub struct TranscribeOptions {
    pub decode: DecodeOptions,
    pub temperatures: Vec<f64>,
    pub compression_ratio_threshold: Option<f64>,
    pub logprob_threshold: Option<f64>,
    pub no_speech_threshold: Option<f64>,
    pub condition_on_previous_text: bool,
    pub initial_prompt: Option<String>,
    pub carry_initial_prompt: bool,
    /// Seconds (start, end) to transcribe; empty: everything. VAD fills this with speech.
    pub clips: Vec<(f64, f64)>,
    /// A window cut short at a clip's end is filled with the log-mel of silence rather than
    /// openai's zeros. Set where the clips come from VAD: what follows a speech range is
    /// silence, and zeros (a faint, flat noise level in Whisper's log-mel scale) made
    /// tiny.en mishear words next to it ("old-sposed" for "ill-disposed"; WER 7.0% vs 1.4%
    /// on the benchmark file). `--clip-timestamps` keeps openai's zeros.
    pub pad_clips_with_silence: bool,
    /// Word-level timestamps (openai's `word_timestamps`); segments then follow their words.
    pub word_timestamps: bool,
    /// Above 1: faster-whisper's batched mode, this many windows per decoder call.
    pub batch_size: usize,
    /// With word timestamps: these join the next word...
    pub prepend_punctuations: String,
    /// ...and these the previous one.
    pub append_punctuations: String,
    /// With word timestamps: skip silences longer than this (seconds) around a likely
    /// hallucination.
    pub hallucination_silence_threshold: Option<f64>,
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        TranscribeOptions {
            decode: DecodeOptions::default(),
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            compression_ratio_threshold: Some(2.4),
            logprob_threshold: Some(-1.0),
            no_speech_threshold: Some(0.6),
            condition_on_previous_text: true,
            initial_prompt: None,
            carry_initial_prompt: false,
            clips: Vec::new(),
            pad_clips_with_silence: false,
            word_timestamps: false,
            batch_size: 1,
            prepend_punctuations: timing::PREPEND_PUNCTUATIONS.into(),
            append_punctuations: timing::APPEND_PUNCTUATIONS.into(),
            hallucination_silence_threshold: None,
        }
    }
}

/// What a transcription reports while it runs.
#[derive(Debug, Clone)]
pub enum Event {
    Language {
        code: String,
        probability: f64,
    },
    Segment(Segment),
    Progress {
        done_seconds: f64,
        total_seconds: f64,
    },
    /// Something the user should know that does not fail the file (e.g. diarization's).
    Warning(String),
}

#[derive(Debug, thiserror::Error)]
pub enum TranscribeError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("cancelled")]
    Cancelled,
    #[error("unknown language '{0}' (see `atelier transcribe --help` for the codes)")]
    UnknownLanguage(String),
    #[error("this model is English-only: it cannot {0}")]
    EnglishOnly(&'static str),
}

pub fn transcribe(
    model: &WhisperModel,
    mel: &tch::Tensor,
    opts: &TranscribeOptions,
    cancel: &CancelToken,
    on_event: &mut dyn FnMut(Event),
) -> Result<Transcript, TranscribeError> {
    let tok = &model.tokenizer;
    let content_frames = mel.size()[1] as usize - N_FRAMES;
    let total_seconds = content_frames as f64 * HOP_LENGTH as f64 / SAMPLE_RATE as f64;
    let content_duration = (content_frames * HOP_LENGTH) as f64 / SAMPLE_RATE as f64;
    let mut decode_opts = opts.decode.clone();
    let language = resolve_language(model, mel, opts, on_event)?;
    decode_opts.language = Some(language.clone());

    let mut seek_clips: Vec<(usize, usize)> = opts
        .clips
        .iter()
        .map(|&(s, e)| {
            let s = (s * FRAMES_PER_SECOND as f64).round() as usize;
            let e = ((e * FRAMES_PER_SECOND as f64).round() as usize).min(content_frames);
            (s, e)
        })
        .filter(|(s, e)| s < e)
        .collect();
    if opts.clips.is_empty() {
        seek_clips.push((0, content_frames));
    }

    let clip_pad = if opts.pad_clips_with_silence {
        silence_level(mel)
    } else {
        0.0
    };
    let input_stride = N_FRAMES / model.dims.n_audio_ctx as usize;
    let n_text_ctx = model.dims.n_text_ctx as usize;
    let mut all_tokens: Vec<u32> = Vec::new();
    let mut segments: Vec<Segment> = Vec::new();
    let mut prompt_reset_since = 0;
    let mut remaining_prompt_length = n_text_ctx / 2 - 1;
    let initial_prompt_tokens = match &opts.initial_prompt {
        Some(p) => tok.encode(&format!(" {}", p.trim())),
        None => Vec::new(),
    };
    all_tokens.extend_from_slice(&initial_prompt_tokens);
    remaining_prompt_length = remaining_prompt_length.saturating_sub(initial_prompt_tokens.len());

    let mut clip_idx = 0;
    let mut seek = seek_clips.first().map_or(0, |c| c.0);
    let mut last_speech_timestamp = 0.0;
    let progress = |seek: usize| Event::Progress {
        done_seconds: (seek.min(content_frames) * HOP_LENGTH) as f64 / SAMPLE_RATE as f64,
        total_seconds,
    };
    while clip_idx < seek_clips.len() {
        if cancel.is_cancelled() {
            return Err(TranscribeError::Cancelled);
        }
        let (clip_start, clip_end) = seek_clips[clip_idx];
        if seek < clip_start {
            seek = clip_start;
        }
        if seek >= clip_end {
            clip_idx += 1;
            if let Some(c) = seek_clips.get(clip_idx) {
                seek = c.0;
            }
            continue;
        }
        let time_offset = (seek * HOP_LENGTH) as f64 / SAMPLE_RATE as f64;
        let window_end_time = ((seek + N_FRAMES) * HOP_LENGTH) as f64 / SAMPLE_RATE as f64;
        let segment_size = N_FRAMES.min(content_frames - seek).min(clip_end - seek);
        let segment_duration = (segment_size * HOP_LENGTH) as f64 / SAMPLE_RATE as f64;
        let clock = std::time::Instant::now();
        let window = mel_window_padded(mel, seek, segment_size, clip_pad).unsqueeze(0);
        let features = model.encode(&window)?;
        let xkv = model.cross_kv(&features)?;
        let encode_seconds = clock.elapsed().as_secs_f64();

        decode_opts.prompt = if opts.carry_initial_prompt {
            let ignored = initial_prompt_tokens
                .len()
                .max(prompt_reset_since)
                .min(all_tokens.len());
            let rest = &all_tokens[ignored..];
            let rest = &rest[rest.len().saturating_sub(remaining_prompt_length)..];
            [initial_prompt_tokens.as_slice(), rest].concat()
        } else {
            all_tokens[prompt_reset_since.min(all_tokens.len())..].to_vec()
        };
        let result = decode_with_fallback(model, &xkv, &decode_opts, opts)?;
        tracing::debug!(
            seek,
            frames = segment_size,
            tokens = result.tokens.len(),
            temperature = result.temperature,
            no_speech_prob = result.no_speech_prob,
            encode_seconds,
            decode_seconds = clock.elapsed().as_secs_f64() - encode_seconds,
            "window decoded"
        );

        if let Some(threshold) = opts.no_speech_threshold {
            let mut skip = result.no_speech_prob > threshold;
            if opts
                .logprob_threshold
                .is_some_and(|lt| result.avg_logprob > lt)
            {
                skip = false;
            }
            if skip {
                seek += segment_size;
                on_event(progress(seek));
                continue;
            }
        }
        let previous_seek = seek;

        let split = split_segments(tok, &result, seek, time_offset, segment_duration);
        let single_timestamp_ending = split.single_timestamp_ending;
        let mut current = split.segments;
        match split.last_timestamp_pos {
            Some(pos) if !single_timestamp_ending => seek += pos * input_stride,
            _ => seek += segment_size,
        }

        if opts.word_timestamps {
            let input = AlignmentInput {
                cross_kv: &xkv,
                num_frames: segment_size,
                language: &language,
                task: decode_opts.task,
                prepend_punctuations: &opts.prepend_punctuations,
                append_punctuations: &opts.append_punctuations,
            };
            timing::add_word_timestamps(&mut current, model, &input, last_speech_timestamp)?;
            if !single_timestamp_ending {
                if let Some(end) = timing::get_end(&current).filter(|&e| e > time_offset) {
                    seek = frames_at(end);
                }
            }
            if let Some(threshold) = opts.hallucination_silence_threshold {
                let window = Window {
                    time_offset,
                    window_end_time,
                    segment_duration,
                    previous_seek,
                    segment_size,
                    single_timestamp_ending,
                    content_duration,
                    content_frames,
                };
                match skip_hallucinations(
                    &mut current,
                    &window,
                    threshold,
                    last_speech_timestamp,
                    seek,
                ) {
                    Hallucination::SkipWindow(to) => {
                        seek = to;
                        on_event(progress(seek));
                        continue;
                    }
                    Hallucination::Seek(to) => seek = to,
                }
            }
            if let Some(end) = timing::get_end(&current) {
                last_speech_timestamp = end;
            }
        }

        for seg in current.iter_mut() {
            if seg.start == seg.end || seg.text.trim().is_empty() {
                seg.text.clear();
                seg.tokens.clear();
                if opts.word_timestamps {
                    seg.words = Some(Vec::new());
                }
            }
        }
        for mut seg in current {
            seg.id = segments.len();
            all_tokens.extend_from_slice(&seg.tokens);
            on_event(Event::Segment(seg.clone()));
            segments.push(seg);
        }
        if !opts.condition_on_previous_text || result.temperature > 0.5 {
            prompt_reset_since = all_tokens.len();
        }
        on_event(progress(seek));
    }
    Ok(Transcript {
        text: tok.decode(&all_tokens[initial_prompt_tokens.len()..]),
        segments,
        language,
    })
}

/// The language to decode in: the given one (checked against the model), English for
/// English-only models, or detected on the first 30 s of `clips` (or of the file).
pub(super) fn resolve_language(
    model: &WhisperModel,
    mel: &tch::Tensor,
    opts: &TranscribeOptions,
    on_event: &mut dyn FnMut(Event),
) -> Result<String, TranscribeError> {
    let tok = &model.tokenizer;
    if let Some(lang) = &opts.decode.language {
        if tok.language_token(lang).is_none() {
            return Err(TranscribeError::UnknownLanguage(lang.clone()));
        }
        if !model.multilingual && lang != "en" {
            return Err(TranscribeError::EnglishOnly(
                "transcribe languages other than English",
            ));
        }
    }
    if !model.multilingual && opts.decode.task == Task::Translate {
        return Err(TranscribeError::EnglishOnly("translate"));
    }
    if let Some(lang) = &opts.decode.language {
        return Ok(lang.clone());
    }
    if !model.multilingual {
        return Ok("en".into());
    }
    let start = opts.clips.first().map_or(0, |c| frames_at(c.0));
    let window = mel_window(mel, start, N_FRAMES).unsqueeze(0);
    let features = model.encode(&window)?;
    let xkv = model.cross_kv(&features)?;
    let (code, probs) = detect_language(model, &xkv)?;
    let probability = probs.first().map_or(0.0, |p| p.1);
    on_event(Event::Language {
        code: code.clone(),
        probability,
    });
    Ok(code)
}

/// A window's tokens cut into segments at consecutive timestamp tokens (openai's rules).
pub(super) struct Split {
    pub segments: Vec<Segment>,
    pub single_timestamp_ending: bool,
    /// The position of the last timestamp of the last complete segment, when the tokens
    /// hold consecutive timestamps: the next window starts there.
    pub last_timestamp_pos: Option<usize>,
    /// Tokens after the last complete segment (openai re-decodes them in the next window).
    pub rest: Vec<u32>,
}

pub(super) fn split_segments(
    tok: &super::tokenizer::Tokenizer,
    result: &DecodeResult,
    seek: usize,
    time_offset: f64,
    segment_duration: f64,
) -> Split {
    let time_precision = TIME_PRECISION;
    let timestamp_begin = tok.timestamp_begin();
    let tokens = &result.tokens;
    let is_ts: Vec<bool> = tokens.iter().map(|&t| t >= timestamp_begin).collect();
    let n = tokens.len();
    let single_timestamp_ending = n >= 2 && !is_ts[n - 2] && is_ts[n - 1];
    let consecutive: Vec<usize> = (1..n).filter(|&i| is_ts[i - 1] && is_ts[i]).collect();
    let make = |start: f64, end: f64, toks: &[u32]| {
        let text_tokens: Vec<u32> = toks.iter().copied().filter(|&t| t < tok.eot()).collect();
        Segment {
            speaker: None,
            id: 0,
            seek,
            start,
            end,
            text: tok.decode(&text_tokens),
            tokens: toks.to_vec(),
            temperature: result.temperature,
            avg_logprob: result.avg_logprob,
            compression_ratio: result.compression_ratio,
            no_speech_prob: result.no_speech_prob,
            words: None,
        }
    };
    let mut segments = Vec::new();
    if consecutive.is_empty() {
        let mut duration = segment_duration;
        if let Some(&last) = tokens.iter().rev().find(|&&t| t >= timestamp_begin) {
            if last != timestamp_begin {
                duration = (last - timestamp_begin) as f64 * time_precision;
            }
        }
        segments.push(make(time_offset, time_offset + duration, tokens));
        return Split {
            segments,
            single_timestamp_ending,
            last_timestamp_pos: None,
            rest: Vec::new(),
        };
    }
    let mut slices = consecutive;
    if single_timestamp_ending {
        slices.push(n);
    }
    let mut last_slice = 0;
    for &cur in &slices {
        let sliced = &tokens[last_slice..cur];
        let start_pos = (sliced[0] - timestamp_begin) as f64;
        let end_pos = (sliced[sliced.len() - 1] - timestamp_begin) as f64;
        segments.push(make(
            time_offset + start_pos * time_precision,
            time_offset + end_pos * time_precision,
            sliced,
        ));
        last_slice = cur;
    }
    Split {
        segments,
        single_timestamp_ending,
        last_timestamp_pos: Some((tokens[last_slice - 1] - timestamp_begin) as usize),
        rest: tokens[last_slice..].to_vec(),
    }
}

/// Seconds per audio token: 2 mel frames of 10 ms.
pub(super) const TIME_PRECISION: f64 = (2 * HOP_LENGTH) as f64 / SAMPLE_RATE as f64;

/// Python's `round(seconds * FRAMES_PER_SECOND)` as a (never negative) frame index.
pub(super) fn frames_at(seconds: f64) -> usize {
    (seconds * FRAMES_PER_SECOND as f64)
        .round_ties_even()
        .max(0.0) as usize
}

/// What the hallucination skip needs to know about the window just decoded.
struct Window {
    time_offset: f64,
    window_end_time: f64,
    segment_duration: f64,
    previous_seek: usize,
    segment_size: usize,
    single_timestamp_ending: bool,
    content_duration: f64,
    content_frames: usize,
}

enum Hallucination {
    /// Drop the whole window and decode again from this frame.
    SkipWindow(usize),
    /// Keep the (possibly truncated) segments and go on from this frame.
    Seek(usize),
}

/// openai's `hallucination_silence_threshold` block: a segment whose words look anomalous
/// and that is surrounded by silence (or by more anomalies) is dropped with what follows it,
/// and decoding resumes after the silence before it.
fn skip_hallucinations(
    current: &mut Vec<Segment>,
    w: &Window,
    threshold: f64,
    last_speech_timestamp: f64,
    mut seek: usize,
) -> Hallucination {
    if !w.single_timestamp_ending {
        if let Some(end) = timing::get_end(current).filter(|&e| e > w.time_offset) {
            seek = if w.window_end_time - end > threshold {
                frames_at(end)
            } else {
                w.previous_seek + w.segment_size
            };
        }
    }
    // A first segment that might be a hallucination: skip the silence before it.
    if let Some(first) = timing::next_words_segment(current) {
        if timing::is_segment_anomaly(Some(first)) {
            let gap = first.start - w.time_offset;
            if gap > threshold {
                return Hallucination::SkipWindow(w.previous_seek + frames_at(gap));
            }
        }
    }
    // A possible hallucination surrounded by silence or more hallucinations.
    let mut hal_last_end = last_speech_timestamp;
    for si in 0..current.len() {
        let segment = &current[si];
        if segment.words.as_ref().is_none_or(|w| w.is_empty()) {
            continue;
        }
        if timing::is_segment_anomaly(Some(segment)) {
            let next = timing::next_words_segment(&current[si + 1..]);
            let hal_next_start = match next.and_then(|s| s.words.as_ref()?.first()) {
                Some(word) => word.start,
                None => w.time_offset + w.segment_duration,
            };
            let silence_before = segment.start - hal_last_end > threshold
                || segment.start < threshold
                || segment.start - w.time_offset < 2.0;
            let silence_after = hal_next_start - segment.end > threshold
                || timing::is_segment_anomaly(next)
                || w.window_end_time - segment.end < 2.0;
            if silence_before && silence_after {
                seek = frames_at(f64::max(w.time_offset + 1.0, segment.start));
                if w.content_duration - segment.end < threshold {
                    seek = w.content_frames;
                }
                current.truncate(si);
                break;
            }
        }
        hal_last_end = current[si].end;
    }
    Hallucination::Seek(seek)
}

pub(super) fn decode_with_fallback(
    model: &WhisperModel,
    xkv: &tch::Tensor,
    base: &DecodeOptions,
    opts: &TranscribeOptions,
) -> Result<DecodeResult, ModelError> {
    let mut result = None;
    for &t in &opts.temperatures {
        let mut o = base.clone();
        o.temperature = t;
        if t > 0.0 {
            o.beam_size = None;
            o.patience = None;
        } else {
            o.best_of = None;
        }
        let r = decode(model, xkv, &o)?;
        let mut needs_fallback = false;
        if opts
            .compression_ratio_threshold
            .is_some_and(|c| r.compression_ratio > c)
        {
            needs_fallback = true;
        }
        if opts.logprob_threshold.is_some_and(|l| r.avg_logprob < l) {
            needs_fallback = true;
        }
        if opts
            .no_speech_threshold
            .is_some_and(|n| r.no_speech_prob > n)
            && opts.logprob_threshold.is_some_and(|l| r.avg_logprob < l)
        {
            needs_fallback = false;
        }
        result = Some(r);
        if !needs_fallback {
            break;
        }
    }
    // `temperatures` is never empty (the CLI checks); decode once at 0 otherwise.
    match result {
        Some(r) => Ok(r),
        None => decode(model, xkv, base),
    }
}
