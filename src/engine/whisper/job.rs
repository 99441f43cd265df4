//! A file transcription as one job on the model thread: VAD, then Whisper, streaming events.
use super::audio::MelStream;
use super::transcribe::{transcribe, Event, TranscribeError, TranscribeOptions};
use super::vad::{self, Vad};
use super::WhisperModel;
use crate::engine::runtime::{DeviceThread, ModelCache};
use crate::engine::speaker::{self, DiarizeOptions, SpeakerModel};
use crate::engine::store::InstalledModel;
use crate::engine::CancelToken;
use crate::transcript::Transcript;
use std::rc::Rc;
use std::sync::mpsc;

/// Seconds of silence between VAD speech ranges below which they are decoded as one clip.
pub const VAD_MERGE_GAP: f64 = 2.0;
/// Seconds added before and after each speech range (faster-whisper's speech_pad_ms).
pub const VAD_PAD: f64 = 0.4;

pub enum JobMsg {
    Event(Event),
    /// VAD found this much speech (seconds) in this many ranges.
    Speech {
        seconds: f64,
        ranges: usize,
    },
    Done(Result<Transcript, String>),
}

/// The Whisper model of this manifest, loaded once and kept warm on the model thread.
fn whisper(cache: &mut ModelCache, model: &InstalledModel) -> Result<Rc<WhisperModel>, String> {
    let key = format!("whisper:{}", model.dir.display());
    cache
        .get_or_try_insert(&key, |device| {
            WhisperModel::load(model, device).map(Rc::new)
        })
        .map(|m| Rc::clone(m))
        .map_err(|e| e.to_string())
}

fn vad(cache: &mut ModelCache, model: &InstalledModel) -> Result<Rc<Vad>, String> {
    let key = format!("vad:{}", model.dir.display());
    cache
        .get_or_try_insert(&key, |_| Vad::load(model).map(Rc::new))
        .map(|m| Rc::clone(m))
        .map_err(|e| e.to_string())
}

fn speaker_model(
    cache: &mut ModelCache,
    model: &InstalledModel,
) -> Result<Rc<SpeakerModel>, String> {
    let key = format!("speaker:{}", model.dir.display());
    cache
        .get_or_try_insert(&key, |_| SpeakerModel::load(model).map(Rc::new))
        .map(|m| Rc::clone(m))
        .map_err(|e| e.to_string())
}

/// Diarization of a job: the speaker model and how many speakers, with what names.
#[derive(Clone)]
pub struct SpeakerJob {
    pub model: InstalledModel,
    pub options: DiarizeOptions,
}

/// Loads the speaker model now, so a broken one fails before any file is read.
pub fn preload_speaker(thread: &DeviceThread, model: InstalledModel) -> Result<(), String> {
    thread
        .run(move |cache| speaker_model(cache, &model).map(|_| ()))
        .unwrap_or_else(|e| Err(e.to_string()))
}

/// Loads both models now, so a missing or broken model fails before any file is read.
pub fn preload(
    thread: &DeviceThread,
    model: InstalledModel,
    vad_model: Option<InstalledModel>,
) -> Result<(), String> {
    thread
        .run(move |cache| {
            whisper(cache, &model)?;
            if let Some(v) = vad_model {
                vad(cache, &v)?;
            }
            Ok(())
        })
        .unwrap_or_else(|e| Err(e.to_string()))
}

/// Audio for a job: 16 kHz mono pieces, or the reason the file could not be read.
pub type AudioChunk = Result<Vec<f32>, String>;

/// Queues the transcription of the audio arriving on `audio` (16 kHz mono pieces, as a
/// decoder thread reads the file): only the log-mel and VAD probabilities are kept, never
/// the whole signal. Messages arrive on the returned channel.
pub fn submit(
    thread: &DeviceThread,
    model: InstalledModel,
    vad_model: Option<InstalledModel>,
    audio: mpsc::Receiver<AudioChunk>,
    options: TranscribeOptions,
    cancel: CancelToken,
) -> mpsc::Receiver<JobMsg> {
    submit_diarized(thread, model, vad_model, audio, options, cancel, None)
}

/// [`submit`], then diarization when `speakers` is given: the audio is kept (4 bytes a
/// sample, 230 MB an hour), windows over the VAD's speech ranges are embedded and clustered,
/// and every segment and word gets its speaker. It needs the VAD model.
pub fn submit_diarized(
    thread: &DeviceThread,
    model: InstalledModel,
    vad_model: Option<InstalledModel>,
    audio: mpsc::Receiver<AudioChunk>,
    mut options: TranscribeOptions,
    cancel: CancelToken,
    speakers: Option<SpeakerJob>,
) -> mpsc::Receiver<JobMsg> {
    let (tx, rx) = mpsc::channel();
    let reply = tx.clone();
    let submitted = thread.submit(move |cache| {
        let result = (|| -> Result<Transcript, String> {
            let whisper = whisper(cache, &model)?;
            let vad = vad_model.as_ref().map(|v| vad(cache, v)).transpose()?;
            let spk = match &speakers {
                Some(_) if vad.is_none() => {
                    return Err(
                        "diarization needs the VAD's speech ranges (turn the VAD on)".into(),
                    )
                }
                Some(job) => Some(speaker_model(cache, &job.model)?),
                None => None,
            };
            let mut kept: Vec<f32> = Vec::new();
            let mut speech: Vec<(usize, usize)> = Vec::new();
            let started = std::time::Instant::now();
            let mut vad_seconds = 0.0;
            let mut mel = MelStream::new();
            let mut vad_stream = vad
                .as_deref()
                .map(Vad::stream)
                .transpose()
                .map_err(|e| e.to_string())?;
            for chunk in audio {
                if cancel.is_cancelled() {
                    return Err("cancelled".into());
                }
                let chunk = chunk?;
                if spk.is_some() {
                    kept.extend_from_slice(&chunk);
                }
                whisper
                    .mel_push(&mut mel, &chunk)
                    .map_err(|e| e.to_string())?;
                if let Some(v) = vad_stream.as_mut() {
                    let t = std::time::Instant::now();
                    v.push(&chunk).map_err(|e| e.to_string())?;
                    vad_seconds += t.elapsed().as_secs_f64();
                }
            }
            let samples = mel.samples();
            let mel = whisper.mel_finish(mel).map_err(|e| e.to_string())?;
            if let (Some(stream), Some(vad)) = (vad_stream, vad.as_ref()) {
                let t = std::time::Instant::now();
                let probs = stream.finish().map_err(|e| e.to_string())?;
                vad_seconds += t.elapsed().as_secs_f64();
                tracing::info!(
                    vad_seconds,
                    batched = vad.is_batched(),
                    windows = probs.len(),
                    "voice activity detected"
                );
                speech = vad::speech_timestamps(&probs, samples, &vad.params);
                // Batched mode packs the raw speech ranges into windows itself.
                let gap = if options.batch_size > 1 {
                    0.0
                } else {
                    VAD_MERGE_GAP
                };
                let clips = vad::clips(&speech, gap, VAD_PAD, samples);
                let seconds = speech.iter().map(|(s, e)| (e - s) as f64 / 16_000.0).sum();
                let _ = tx.send(JobMsg::Speech {
                    seconds,
                    ranges: speech.len(),
                });
                if clips.is_empty() {
                    return Ok(Transcript {
                        language: options.decode.language.clone().unwrap_or_default(),
                        ..Transcript::default()
                    });
                }
                options.clips = clips;
                options.pad_clips_with_silence = true;
            }
            let mut on_event = |e: Event| {
                let _ = tx.send(JobMsg::Event(e));
            };
            let result = if options.batch_size > 1 {
                let size = options.batch_size;
                super::batched::transcribe_batched(
                    &whisper,
                    &mel,
                    &options,
                    size,
                    &cancel,
                    &mut on_event,
                )
            } else {
                transcribe(&whisper, &mel, &options, &cancel, &mut on_event)
            };
            tracing::info!(
                seconds = started.elapsed().as_secs_f64(),
                "transcription finished"
            );
            let mut transcript = result.map_err(|e| match e {
                TranscribeError::Cancelled => "cancelled".to_string(),
                other => other.to_string(),
            })?;
            if let (Some(spk), Some(job)) = (spk, &speakers) {
                if cancel.is_cancelled() {
                    return Err("cancelled".into());
                }
                let t = std::time::Instant::now();
                let d = speaker::diarize(&spk, &kept, &speech, &job.options)
                    .map_err(|e| e.to_string())?;
                tracing::info!(
                    seconds = t.elapsed().as_secs_f64(),
                    windows = d.windows,
                    speakers = d.speakers,
                    "diarization finished"
                );
                if let Some(seconds) = d.too_short {
                    let _ = tx.send(JobMsg::Event(Event::Warning(format!(
                        "{seconds:.2} s of speech is too short to tell speakers apart \
                         (a range needs {} s); it is all given to one speaker",
                        speaker::diarize::MIN_EMBED_SECONDS
                    ))));
                }
                speaker::assign_speakers(&mut transcript, &d.turns, &job.options.names);
            }
            Ok(transcript)
        })();
        let _ = tx.send(JobMsg::Done(result));
    });
    if !submitted {
        let _ = reply.send(JobMsg::Done(Err("the model thread has stopped".into())));
    }
    rx
}
