//! faster-whisper's batched mode: VAD speech packed into chunks of at most 30 s, decoded
//! independently (no prompt conditioning) several at a time, greedily; a chunk that fails
//! the fallback thresholds is redone alone with the temperature fallback.
use super::audio::{mel_window_padded, silence_level, HOP_LENGTH, N_FRAMES, SAMPLE_RATE};
use super::decode::decode_batch;
use super::model::WhisperModel;
use super::timing::{self, AlignmentInput};
use super::transcribe::{
    decode_with_fallback, resolve_language, split_segments, Event, TranscribeError,
    TranscribeOptions,
};
use crate::engine::CancelToken;
use crate::transcript::{Segment, Transcript};
use std::collections::{BTreeMap, VecDeque};
use tch::Tensor;

/// Speech (seconds) left after Whisper's last timestamp in a chunk that is decoded again.
const MIN_REMAINDER_SECONDS: f64 = 1.0;

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

    /// The chunk's window: its parts' mel frames side by side, padded to 30 s with `pad`
    /// (silence: faster-whisper pads each chunk's audio with zero samples).
    fn mel(&self, mel: &Tensor, pad: f64) -> Tensor {
        let pieces: Vec<Tensor> = self
            .parts
            .iter()
            .map(|&(s, e)| mel.narrow(1, s as i64, (e - s) as i64))
            .collect();
        mel_window_padded(&Tensor::cat(&pieces, 1), 0, self.frames(), pad)
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

    /// The chunk's speech after `t` seconds of its timeline, when at least `min_seconds` of
    /// it is left: what Whisper did not reach before it stopped. `None` when `t` is 0 (no
    /// progress was made, so decoding it again would loop).
    pub fn remainder(&self, t: f64, min_seconds: f64) -> Option<Chunk> {
        let offset = (t * SAMPLE_RATE as f64 / HOP_LENGTH as f64)
            .round()
            .max(0.0) as usize;
        if offset == 0 || offset >= self.frames() {
            return None;
        }
        let mut acc = 0;
        let mut parts = Vec::new();
        for &(s, e) in &self.parts {
            let len = e - s;
            if acc + len > offset {
                parts.push((s + offset.saturating_sub(acc), e));
            }
            acc += len;
        }
        let rest = Chunk { parts };
        (seconds(rest.frames()) >= min_seconds).then_some(rest)
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
    let silence = silence_level(mel);
    let mut queue: VecDeque<Chunk> = pack_chunks(&speech).into();
    tracing::debug!(?speech, chunks = queue.len(), "batched mode");
    let mut segments: Vec<Segment> = Vec::new();
    // Finished chunks by first frame, held until every chunk before them is finished, so
    // segments stream out in time order even when a remainder is decoded late.
    let mut finished: BTreeMap<usize, (Vec<Segment>, f64)> = BTreeMap::new();
    while !queue.is_empty() {
        if cancel.is_cancelled() {
            return Err(TranscribeError::Cancelled);
        }
        let take = batch_size.max(1).min(queue.len());
        let batch: Vec<Chunk> = queue.drain(..take).collect();
        let mut remainders = Vec::new();
        let windows: Vec<Tensor> = batch.iter().map(|c| c.mel(mel, silence)).collect();
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
            // Whisper may stop before the end of a full window; without seek, decode what it
            // did not reach as a chunk of its own (openai's seek to the last timestamp).
            let reached = current.last().map_or(0.0, |s| s.end);
            if let Some(rest) = chunk.remainder(reached, MIN_REMAINDER_SECONDS) {
                tracing::debug!(parts = ?rest.parts, "batched remainder");
                remainders.push(rest);
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
            let mut kept = Vec::new();
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
                kept.push(seg);
            }
            let done_seconds = chunk.parts.last().map_or(0.0, |p| seconds(p.1));
            finished.insert(chunk.parts[0].0, (kept, done_seconds));
        }
        // Remainders lie inside their chunks, before every chunk still queued.
        for rest in remainders.into_iter().rev() {
            queue.push_front(rest);
        }
        let next = queue.front().map_or(usize::MAX, |c| c.parts[0].0);
        while let Some(entry) = finished.first_entry() {
            if *entry.key() >= next {
                break;
            }
            let (kept, done_seconds) = entry.remove();
            for mut seg in kept {
                seg.id = segments.len();
                on_event(Event::Segment(seg.clone()));
                segments.push(seg);
            }
            on_event(Event::Progress {
                done_seconds,
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

    #[test]
    fn remainder_is_the_speech_after_the_last_timestamp() {
        let c = super::Chunk {
            parts: vec![(100, 300), (1000, 1300)],
        };
        // 1.5 s in: the rest of the first part and all of the second.
        assert_eq!(
            c.remainder(1.5, 1.0).map(|r| r.parts),
            Some(vec![(250, 300), (1000, 1300)])
        );
        // 3.0 s in: one second of the second part.
        assert_eq!(
            c.remainder(3.0, 1.0).map(|r| r.parts),
            Some(vec![(1100, 1300)])
        );
        // Too little left, nothing reached, or everything reached.
        assert_eq!(c.remainder(4.5, 1.0), None);
        assert_eq!(c.remainder(0.0, 1.0), None);
        assert_eq!(c.remainder(5.0, 1.0), None);
    }
}
