//! A file transcription as one job on the model thread: VAD, then Whisper, streaming events.
use super::transcribe::{transcribe, Event, TranscribeError, TranscribeOptions};
use super::vad::{self, Vad};
use super::WhisperModel;
use crate::engine::runtime::{DeviceThread, ModelCache};
use crate::engine::store::InstalledModel;
use crate::engine::CancelToken;
use crate::transcript::Transcript;
use std::sync::mpsc;

/// Seconds of silence between VAD speech ranges below which they are decoded as one clip.
pub const VAD_MERGE_GAP: f64 = 2.0;

pub enum JobMsg {
    Event(Event),
    /// VAD found this much speech (seconds) in this many ranges.
    Speech {
        seconds: f64,
        ranges: usize,
    },
    Done(Result<Transcript, String>),
}

/// Loads (once) and keeps warm the Whisper model and VAD named by these manifests.
fn whisper<'a>(
    cache: &'a mut ModelCache,
    model: &InstalledModel,
) -> Result<&'a mut WhisperModel, String> {
    let key = format!("whisper:{}", model.dir.display());
    cache
        .get_or_try_insert(&key, |device| WhisperModel::load(model, device))
        .map_err(|e| e.to_string())
}

/// Loads both models now, so a missing or broken model fails before any file is read.
pub fn preload(
    thread: &DeviceThread,
    model: InstalledModel,
    vad: Option<InstalledModel>,
) -> Result<(), String> {
    thread
        .run(move |cache| {
            whisper(cache, &model)?;
            if let Some(v) = vad {
                let key = format!("vad:{}", v.dir.display());
                cache
                    .get_or_try_insert(&key, |_| Vad::load(&v))
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        })
        .unwrap_or_else(|| Err("the model thread has stopped".into()))
}

/// Queues the transcription of `audio` (16 kHz mono); messages arrive on the returned channel.
pub fn submit(
    thread: &DeviceThread,
    model: InstalledModel,
    vad_model: Option<InstalledModel>,
    audio: Vec<f32>,
    mut options: TranscribeOptions,
    cancel: CancelToken,
) -> mpsc::Receiver<JobMsg> {
    let (tx, rx) = mpsc::channel();
    let reply = tx.clone();
    let submitted = thread.submit(move |cache| {
        let result = (|| -> Result<Transcript, String> {
            if let Some(v) = &vad_model {
                let key = format!("vad:{}", v.dir.display());
                let vad = cache
                    .get_or_try_insert(&key, |_| Vad::load(v))
                    .map_err(|e| e.to_string())?;
                let probs = vad.speech_probs(&audio).map_err(|e| e.to_string())?;
                let speech = vad::speech_timestamps(&probs, audio.len(), &vad.params);
                // Batched mode packs the raw speech ranges into windows itself.
                let gap = if options.batch_size > 1 {
                    0.0
                } else {
                    VAD_MERGE_GAP
                };
                let clips = vad::clips(&speech, gap);
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
            }
            let model = whisper(cache, &model)?;
            let mut on_event = |e: Event| {
                let _ = tx.send(JobMsg::Event(e));
            };
            let result = if options.batch_size > 1 {
                let size = options.batch_size;
                super::batched::transcribe_batched(
                    model,
                    &audio,
                    &options,
                    size,
                    &cancel,
                    &mut on_event,
                )
            } else {
                transcribe(model, &audio, &options, &cancel, &mut on_event)
            };
            result.map_err(|e| match e {
                TranscribeError::Cancelled => "cancelled".to_string(),
                other => other.to_string(),
            })
        })();
        let _ = tx.send(JobMsg::Done(result));
    });
    if !submitted {
        let _ = reply.send(JobMsg::Done(Err("the model thread has stopped".into())));
    }
    rx
}
