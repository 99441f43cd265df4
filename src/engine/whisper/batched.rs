//! faster-whisper's batched mode: VAD speech packed into chunks of at most 30 s, decoded
//! independently (no prompt conditioning) several at a time, greedily; a chunk that fails
//! the fallback thresholds is redone alone with the temperature fallback.
use super::audio::{mel_window, HOP_LENGTH, N_FRAMES, SAMPLE_RATE};
use super::decode::decode_batch;
use super::model::WhisperModel;
use super::timing::{self, AlignmentInput};
use super::transcribe::{
    decode_with_fallback, resolve_language, split_segments, Event, TranscribeError,
    TranscribeOptions,
};
use crate::engine::CancelToken;
use crate::transcript::{Segment, Transcript};
use tch::Tensor;

/// Speech ranges (mel frames) decoded as one window with the silence between them cut
/// out, as faster-whisper's batched mode does: Whisper tends to stop after a long pause.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub parts: Vec<(usize, usize)>,
}

impl Chunk {
    pub fn frames(&self) -> usize {
        self.parts.iter().map(|(s, e)| e - s).sum()
    }

    /// The chunk's window: its parts' mel frames side by side, zero-padded to 30 s.
    fn mel(&self, mel: &Tensor) -> Tensor {
        let pieces: Vec<Tensor> = self
            .parts
            .iter()
            .map(|&(s, e)| mel.narrow(1, s as i64, (e - s) as i64))
            .collect();
        mel_window(&Tensor::cat(&pieces, 1), 0, self.frames())
    }

    /// Maps seconds on the chunk's timeline back to seconds in the file.
    pub fn to_file_time(&self, t: f64) -> f64 {
        let mut acc = 0.0;
        for &(s, e) in &self.parts {
            let len = seconds(e - s);
            if t <= acc + len {
                return seconds(s) + (t - acc).max(0.0);
            }
            acc += len;
        }
        self.parts.last().map_or(t, |&(_, e)| seconds(e))
    }

    /// Maps a word (chunk timeline) to the file: it stays inside the part it starts in, so a
    /// word at a cut never spans the silence that was cut out.
    pub fn word_to_file_time(&self, start: f64, end: f64) -> (f64, f64) {
        let mut acc = 0.0;
        for &(s, e) in &self.parts {
            let len = seconds(e - s);
            if start < acc + len {
                let from = seconds(s) + (start - acc).max(0.0);
                let to = seconds(s) + (end - acc).clamp(0.0, len);
                return (from, to.max(from));
            }
            acc += len;
        }
        (self.to_file_time(start), self.to_file_time(end))
    }
}

fn seconds(frames: usize) -> f64 {
    (frames * HOP_LENGTH) as f64 / SAMPLE_RATE as f64
}

/// Packs speech ranges (mel frames) into chunks of at most one window of speech; a range
/// longer than a window is cut into windows.
pub fn pack_chunks(speech: &[(usize, usize)]) -> Vec<Chunk> {
    let mut chunks: Vec<Chunk> = Vec::new();
    for &(mut s, e) in speech {
        while s < e {
            let piece = (s, e.min(s + N_FRAMES));
            s = piece.1;
            match chunks.last_mut() {
                Some(c) if c.frames() + (piece.1 - piece.0) <= N_FRAMES => c.parts.push(piece),
                _ => chunks.push(Chunk { parts: vec![piece] }),
            }
        }
    }
    chunks
}

fn needs_fallback(r: &super::decode::DecodeResult, o: &TranscribeOptions) -> bool {
    let low_logprob = o.logprob_threshold.is_some_and(|l| r.avg_logprob < l);
    let silent = o.no_speech_threshold.is_some_and(|n| r.no_speech_prob > n) && low_logprob;
    let repetitive = o
        .compression_ratio_threshold
        .is_some_and(|c| r.compression_ratio > c);
    (repetitive || low_logprob) && !silent && o.temperatures.len() > 1
}

pub fn transcribe_batched(
    model: &WhisperModel,
    mel: &tch::Tensor,
    opts: &TranscribeOptions,
    batch_size: usize,
    cancel: &CancelToken,
    on_event: &mut dyn FnMut(Event),
) -> Result<Transcript, TranscribeError> {
    let tok = &model.tokenizer;
    let content_frames = mel.size()[1] as usize - N_FRAMES;
    let language = resolve_language(model, mel, opts, on_event)?;
    let mut decode_opts = opts.decode.clone();
    decode_opts.language = Some(language.clone());
    decode_opts.prompt.clear();

    let speech: Vec<(usize, usize)> = if opts.clips.is_empty() {
        vec![(0, content_frames)]
    } else {
        opts.clips
            .iter()
            .map(|&(s, e)| {
                (
                    super::transcribe::frames_at(s),
                    super::transcribe::frames_at(e).min(content_frames),
                )
            })
            .filter(|(s, e)| s < e)
            .collect()
    };
    let chunks = pack_chunks(&speech);
    tracing::debug!(?speech, chunks = chunks.len(), "batched mode");
    let mut segments: Vec<Segment> = Vec::new();
    for batch in chunks.chunks(batch_size.max(1)) {
        if cancel.is_cancelled() {
            return Err(TranscribeError::Cancelled);
        }
        let windows: Vec<Tensor> = batch.iter().map(|c| c.mel(mel)).collect();
        let features = model.encode(&Tensor::stack(&windows, 0))?;
        let xkv = model.cross_kv(&features)?;
        let results = decode_batch(model, &xkv, &decode_opts)?;
        for (i, (chunk, mut result)) in batch.iter().zip(results).enumerate() {
            let chunk_xkv = xkv.narrow(2, i as i64, 1);
            tracing::debug!(parts = ?chunk.parts, tokens = ?result.tokens, "batched chunk");
            if needs_fallback(&result, opts) {
                result = decode_with_fallback(model, &chunk_xkv, &decode_opts, opts)?;
            }
            let silent = opts
                .no_speech_threshold
                .is_some_and(|t| result.no_speech_prob > t)
                && !opts
                    .logprob_threshold
                    .is_some_and(|l| result.avg_logprob > l);
            let frames = chunk.frames();
            let mut current = Vec::new();
            if !silent {
                // On the chunk's own timeline (seek 0); mapped to the file's below.
                let mut split = split_segments(tok, &result, 0, 0.0, seconds(frames));
                // No seek here: text after the last complete segment runs to the chunk's end.
                let rest_text: Vec<u32> = split
                    .rest
                    .iter()
                    .copied()
                    .filter(|&t| t < tok.eot())
                    .collect();
                if !split.single_timestamp_ending && !rest_text.is_empty() {
                    if let Some(mut tail) = split.segments.last().cloned() {
                        tail.start = tail.end;
                        tail.end = seconds(frames);
                        tail.text = tok.decode(&rest_text);
                        tail.tokens = split.rest.clone();
                        split.segments.push(tail);
                    }
                }
                current = split.segments;
            }
            if opts.word_timestamps && !current.is_empty() {
                let input = AlignmentInput {
                    cross_kv: &chunk_xkv,
                    num_frames: frames,
                    language: &language,
                    task: decode_opts.task,
                    prepend_punctuations: &opts.prepend_punctuations,
                    append_punctuations: &opts.append_punctuations,
                };
                timing::add_word_timestamps(&mut current, model, &input, 0.0)?;
            }
            for mut seg in current {
                if seg.start == seg.end || seg.text.trim().is_empty() {
                    continue;
                }
                seg.seek = chunk.parts[0].0;
                seg.start = chunk.to_file_time(seg.start);
                seg.end = chunk.to_file_time(seg.end);
                // openai rounds word times to 10 ms; keep that after the shift.
                let round2 = |t: f64| (t * 100.0).round() / 100.0;
                for w in seg.words.iter_mut().flatten() {
                    let (start, end) = chunk.word_to_file_time(w.start, w.end);
                    w.start = round2(start);
                    w.end = round2(end);
                }
                seg.id = segments.len();
                on_event(Event::Segment(seg.clone()));
                segments.push(seg);
            }
            on_event(Event::Progress {
                done_seconds: chunk.parts.last().map_or(0.0, |p| seconds(p.1)),
                total_seconds: seconds(content_frames),
            });
        }
    }
    let tokens: Vec<u32> = segments
        .iter()
        .flat_map(|s| s.tokens.iter().copied())
        .collect();
    Ok(Transcript {
        text: tok.decode(&tokens),
        segments,
        language,
    })
}

#[cfg(test)]
mod tests {
    use super::pack_chunks;

    #[test]
    fn chunks_pack_speech_up_to_a_window_and_split_long_ranges() {
        let parts = |c: &[super::Chunk]| c.iter().map(|c| c.parts.clone()).collect::<Vec<_>>();
        assert_eq!(
            parts(&pack_chunks(&[
                (0, 100),
                (200, 1000),
                (2900, 3100),
                (5000, 7500)
            ])),
            vec![
                vec![(0, 100), (200, 1000), (2900, 3100)],
                vec![(5000, 7500)]
            ]
        );
        assert_eq!(
            parts(&pack_chunks(&[(10, 7000)])),
            vec![vec![(10, 3010)], vec![(3010, 6010)], vec![(6010, 7000)]]
        );
        assert!(pack_chunks(&[]).is_empty());
    }

    #[test]
    fn chunk_times_map_back_across_the_cut_silence() {
        let c = super::Chunk {
            parts: vec![(100, 300), (1000, 1100)],
        };
        assert_eq!(c.to_file_time(0.0), 1.0);
        assert_eq!(c.to_file_time(1.5), 2.5);
        assert_eq!(c.to_file_time(2.5), 10.5);
        assert_eq!(c.to_file_time(9.0), 11.0);
        // A word across the cut ends where its part ends.
        assert_eq!(c.word_to_file_time(1.5, 2.5), (2.5, 3.0));
        assert_eq!(c.word_to_file_time(2.0, 2.5), (10.0, 10.5));
    }
}
