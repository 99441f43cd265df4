//! Word-level timestamps: openai-whisper's `timing.py`. The decoder is re-run over a window's
//! text; the cross-attention of the alignment heads, filtered and aligned to the audio frames
//! by dynamic time warping, gives each word its start and end.
use super::audio::{HOP_LENGTH, SAMPLE_RATE};
use super::decode::Task;
use super::model::{ModelError, WhisperModel};
use super::tokenizer::py_isspace;
use crate::transcript::{Segment, Word};
use tch::{Kind, Tensor};

/// openai's defaults for `prepend_punctuations` and `append_punctuations`.
pub const PREPEND_PUNCTUATIONS: &str = "\"'“¿([{-";
pub const APPEND_PUNCTUATIONS: &str = "\"'.。,，!！?？:：”)]}、";

/// `find_alignment`'s `medfilt_width`.
const MEDFILT_WIDTH: usize = 7;
/// openai's `TOKENS_PER_SECOND`: one audio token per two mel frames.
const TOKENS_PER_SECOND: f64 = (SAMPLE_RATE / (HOP_LENGTH * 2)) as f64;
/// Words ending a sentence: such a word, or the word after one, is cut to twice the median.
const SENTENCE_END_MARKS: &str = ".。!！?？";

#[derive(Debug, Clone, PartialEq)]
pub struct WordTiming {
    pub word: String,
    pub tokens: Vec<u32>,
    pub start: f64,
    pub end: f64,
    pub probability: f64,
}

/// What one window's words need besides the model.
pub struct AlignmentInput<'a> {
    /// The window's cross-attention K/V, as decoding used it.
    pub cross_kv: &'a Tensor,
    /// Mel frames of real audio in the window (`segment_size`).
    pub num_frames: usize,
    pub language: &'a str,
    pub task: Task,
    pub prepend_punctuations: &'a str,
    pub append_punctuations: &'a str,
}

/// openai's `median_filter` along the last axis of rows of `row_len` values: reflect padding
/// of `width / 2`, median of each window. Rows no longer than `width / 2` come back as they
/// are. `width` must be odd (openai asserts it). NaN sorts last, as in `torch.sort`.
pub fn median_filter(x: &[f32], row_len: usize, width: usize) -> Vec<f32> {
    let pad = width / 2;
    if row_len <= pad {
        return x.to_vec();
    }
    let reflect = |p: usize| -> usize {
        // Index `p` of the padded row, as an index of the row itself.
        if p < pad {
            pad - p
        } else if p - pad < row_len {
            p - pad
        } else {
            2 * (row_len - 1) + pad - p
        }
    };
    let mut out = Vec::with_capacity(x.len());
    let mut window = vec![0f32; width];
    for row in x.chunks(row_len) {
        for i in 0..row.len() {
            for (k, w) in window.iter_mut().enumerate() {
                *w = row[reflect(i + k)];
            }
            window.sort_by(|a, b| {
                a.partial_cmp(b)
                    .unwrap_or_else(|| a.is_nan().cmp(&b.is_nan()))
            });
            out.push(window[pad]);
        }
    }
    out
}

/// openai's `dtw_cpu` over an `n × m` cost matrix (row-major): the accumulated cost is kept in
/// float32 as openai's is, ties go to the left move, then the path is traced back from the
/// corner. Returns `(text_indices, time_indices)`.
pub fn dtw(x: &[f64], n: usize, m: usize) -> (Vec<i64>, Vec<i64>) {
    let w = m + 1;
    let mut cost = vec![f32::INFINITY; (n + 1) * w];
    let mut trace = vec![-1i8; (n + 1) * w];
    cost[0] = 0.0;
    for j in 1..=m {
        for i in 1..=n {
            let c0 = cost[(i - 1) * w + j - 1];
            let c1 = cost[(i - 1) * w + j];
            let c2 = cost[i * w + j - 1];
            let (c, t) = if c0 < c1 && c0 < c2 {
                (c0, 0)
            } else if c1 < c0 && c1 < c2 {
                (c1, 1)
            } else {
                (c2, 2)
            };
            cost[i * w + j] = (x[(i - 1) * m + j - 1] + f64::from(c)) as f32;
            trace[i * w + j] = t;
        }
    }
    trace[..w].fill(2);
    for i in 0..=n {
        trace[i * w] = 1;
    }
    let (mut i, mut j) = (n, m);
    let mut path = Vec::with_capacity(n + m);
    while i > 0 || j > 0 {
        path.push((i as i64 - 1, j as i64 - 1));
        match trace[i * w + j] {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    path.reverse();
    path.into_iter().unzip()
}

/// openai's `merge_punctuations`: leading punctuation joins the next word, trailing
/// punctuation the previous one; the emptied entries stay (with no text and no tokens).
pub fn merge_punctuations(alignment: &mut [WordTiming], prepended: &str, appended: &str) {
    if alignment.len() >= 2 {
        let mut j = alignment.len() - 1;
        for i in (0..alignment.len() - 1).rev() {
            let previous = &alignment[i];
            // Python's `s.strip() in prepended` is a substring test.
            if previous.word.starts_with(' ')
                && prepended.contains(previous.word.trim_matches(py_isspace))
            {
                let word = std::mem::take(&mut alignment[i].word);
                let tokens = std::mem::take(&mut alignment[i].tokens);
                let following = &mut alignment[j];
                following.word = word + &following.word;
                following.tokens = [tokens, std::mem::take(&mut following.tokens)].concat();
            } else {
                j = i;
            }
        }
    }
    let mut i = 0;
    for j in 1..alignment.len() {
        if !alignment[i].word.ends_with(' ') && appended.contains(alignment[j].word.as_str()) {
            let word = std::mem::take(&mut alignment[j].word);
            let tokens = std::mem::take(&mut alignment[j].tokens);
            alignment[i].word.push_str(&word);
            alignment[i].tokens.extend(tokens);
        } else {
            i = j;
        }
    }
}

/// Python's `round(x, 2)`: the exact binary value rounded half-to-even, read back.
pub fn round2(x: f64) -> f64 {
    if !x.is_finite() {
        return x;
    }
    format!("{x:.2}").parse().unwrap_or(x)
}

fn torch_err(model: &WhisperModel, e: tch::TchError) -> ModelError {
    ModelError::Torch {
        model: model.name.clone(),
        message: e.to_string().lines().next().unwrap_or("").to_string(),
    }
}

/// openai's `find_alignment`: word timings relative to the window start.
pub fn find_alignment(
    model: &WhisperModel,
    text_tokens: &[u32],
    input: &AlignmentInput,
) -> Result<Vec<WordTiming>, ModelError> {
    let tok = &model.tokenizer;
    // Attention beyond the window's audio is ignored; 2 mel frames per audio token.
    let n_frames = (input.num_frames / 2).min(model.dims.n_audio_ctx as usize);
    if text_tokens.is_empty() || n_frames == 0 {
        return Ok(Vec::new());
    }
    let sot_sequence = tok
        .sot_sequence(Some(input.language), input.task)
        .map_err(|e| ModelError::Torch {
            model: model.name.clone(),
            message: e.to_string(),
        })?;
    let eot = tok.eot();
    let mut tokens = sot_sequence.clone();
    tokens.push(tok.no_timestamps());
    tokens.extend_from_slice(text_tokens);
    tokens.push(eot);
    if tokens.len() > model.dims.n_text_ctx as usize {
        tracing::warn!(
            "word timestamps: {} tokens exceed the text context; skipped",
            tokens.len()
        );
        return Ok(Vec::new());
    }

    let mut token_probs = Vec::with_capacity(text_tokens.len());
    let s = sot_sequence.len();
    // The whole sequence in one decoder call.
    let out = model.prefill(&tokens, 0, input.cross_kv, &mut model.empty_cache(1))?;
    let all_logits = out
        .logits
        .f_to_device(tch::Device::Cpu)
        .map_err(|e| torch_err(model, e))?;
    for (i, &text_token) in text_tokens.iter().enumerate() {
        // softmax over the text vocabulary (`logits[:, :eot]`), at the next text token.
        let logits = all_logits
            .f_select(0, (s + i) as i64)
            .and_then(|r| r.f_narrow(0, 0, i64::from(eot)))
            .and_then(Vec::<f32>::try_from)
            .map_err(|e| torch_err(model, e))?;
        token_probs.push(text_probability(&logits, text_token as usize));
    }

    // heads × tokens × frames → softmax over frames, normalised per frame over the tokens.
    let weights = out
        .align_qk
        .f_narrow(2, 0, n_frames as i64)
        .and_then(|w| w.f_softmax(-1, Kind::Float))
        .and_then(|w| {
            let (std, mean) = w.f_std_mean_dim(-2, false, true)?;
            w.f_sub(&mean)?.f_div(&std)
        })
        .and_then(|w| w.f_to_device(tch::Device::Cpu))
        .and_then(|w| w.f_contiguous())
        .map_err(|e| torch_err(model, e))?;
    let n_heads = weights.size().first().copied().unwrap_or(0) as usize;
    if n_heads == 0 {
        return Err(ModelError::Torch {
            model: model.name.clone(),
            message: "the decoder exports no alignment heads, which word timestamps need: \
                      re-export the model"
                .into(),
        });
    }
    let weights = weights
        .f_view([-1])
        .and_then(Vec::<f32>::try_from)
        .map_err(|e| torch_err(model, e))?;
    let weights = median_filter(&weights, n_frames, MEDFILT_WIDTH);

    // Mean over heads, without the sot rows and the final eot row.
    let n_tokens = tokens.len();
    let rows = n_tokens - s - 1;
    let mut matrix = vec![0f32; rows * n_frames];
    for h in 0..n_heads {
        let head = &weights[(h * n_tokens + s) * n_frames..(h * n_tokens + s + rows) * n_frames];
        for (m, &v) in matrix.iter_mut().zip(head) {
            *m += v;
        }
    }
    let cost: Vec<f64> = matrix
        .iter()
        .map(|&v| -f64::from(v / n_heads as f32))
        .collect();
    let (text_indices, time_indices) = dtw(&cost, rows, n_frames);

    let mut with_eot = text_tokens.to_vec();
    with_eot.push(eot);
    let (words, word_tokens) = tok.split_to_word_tokens(&with_eot, Some(input.language));
    if word_tokens.len() <= 1 {
        return Ok(Vec::new());
    }
    let mut boundaries = vec![0usize];
    for t in &word_tokens[..word_tokens.len() - 1] {
        boundaries.push(boundaries[boundaries.len() - 1] + t.len());
    }
    let jump_times: Vec<f64> = (0..text_indices.len())
        .filter(|&k| k == 0 || text_indices[k] != text_indices[k - 1])
        .map(|k| time_indices[k] as f64 / TOKENS_PER_SECOND)
        .collect();
    let time_at = |b: usize| jump_times.get(b).copied().unwrap_or(f64::NAN);

    Ok(words
        .into_iter()
        .zip(word_tokens)
        .zip(boundaries.windows(2))
        .map(|((word, tokens), b)| {
            let probs = token_probs.get(b[0]..b[1]).unwrap_or_default();
            WordTiming {
                word,
                tokens,
                start: time_at(b[0]),
                end: time_at(b[1]),
                probability: probs.iter().sum::<f64>() / probs.len() as f64,
            }
        })
        .collect())
}

/// The probability of `token` under the softmax of `logits`, in float32 as openai's.
fn text_probability(logits: &[f32], token: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&x| f64::from(x - max).exp()).sum();
    let p = logits
        .get(token)
        .map_or(0.0, |&x| f64::from(x - max).exp() / sum);
    f64::from(p as f32)
}

/// openai's `add_word_timestamps` over one window's segments: fills `words` and moves each
/// segment's start and end to its words. `last_speech_timestamp` is the end of the last word
/// before this window.
pub fn add_word_timestamps(
    segments: &mut [Segment],
    model: &WhisperModel,
    input: &AlignmentInput,
    last_speech_timestamp: f64,
) -> Result<(), ModelError> {
    let Some(first) = segments.first() else {
        return Ok(());
    };
    let eot = model.tokenizer.eot();
    let text_tokens_per_segment: Vec<Vec<u32>> = segments
        .iter()
        .map(|s| s.tokens.iter().copied().filter(|&t| t < eot).collect())
        .collect();
    let text_tokens = text_tokens_per_segment.concat();
    let mut alignment = find_alignment(model, &text_tokens, input)?;

    let mut durations: Vec<f64> = alignment
        .iter()
        .map(|t| t.end - t.start)
        .filter(|&d| d != 0.0)
        .collect();
    durations.sort_by(f64::total_cmp);
    let median = match durations.len() {
        0 => 0.0,
        n if n % 2 == 1 => durations[n / 2],
        n => (durations[n / 2 - 1] + durations[n / 2]) / 2.0,
    };
    let median_duration = if median < 0.7 { median } else { 0.7 };
    let max_duration = median_duration * 2.0;

    // Words at sentence boundaries are at most twice the median word duration long.
    if !durations.is_empty() {
        for i in 1..alignment.len() {
            if alignment[i].end - alignment[i].start > max_duration {
                // Python's `word in marks` is a substring test.
                if SENTENCE_END_MARKS.contains(alignment[i].word.as_str()) {
                    alignment[i].end = alignment[i].start + max_duration;
                } else if SENTENCE_END_MARKS.contains(alignment[i - 1].word.as_str()) {
                    alignment[i].start = alignment[i].end - max_duration;
                }
            }
        }
    }
    merge_punctuations(
        &mut alignment,
        input.prepend_punctuations,
        input.append_punctuations,
    );

    let time_offset = (first.seek * HOP_LENGTH) as f64 / SAMPLE_RATE as f64;
    let mut last_speech_timestamp = last_speech_timestamp;
    let mut word_index = 0;
    for (segment, text_tokens) in segments.iter_mut().zip(&text_tokens_per_segment) {
        let mut saved_tokens = 0;
        let mut words: Vec<Word> = Vec::new();
        while word_index < alignment.len() && saved_tokens < text_tokens.len() {
            let timing = &alignment[word_index];
            if !timing.word.is_empty() {
                words.push(Word {
                    speaker: None,
                    word: timing.word.clone(),
                    start: round2(time_offset + timing.start),
                    end: round2(time_offset + timing.end),
                    probability: timing.probability,
                });
            }
            saved_tokens += timing.tokens.len();
            word_index += 1;
        }
        adjust_edges(
            segment,
            &mut words,
            median_duration,
            max_duration,
            &mut last_speech_timestamp,
        );
        segment.words = Some(words);
    }
    Ok(())
}

/// The first and last word after a pause are not longer than the median allows, and the
/// segment's start and end follow its words.
fn adjust_edges(
    segment: &mut Segment,
    words: &mut [Word],
    median_duration: f64,
    max_duration: f64,
    last_speech_timestamp: &mut f64,
) {
    let n = words.len();
    if n == 0 {
        return;
    }
    if words[0].end - *last_speech_timestamp > median_duration * 4.0
        && (words[0].end - words[0].start > max_duration
            || (n > 1 && words[1].end - words[0].start > max_duration * 2.0))
    {
        if n > 1 && words[1].end - words[1].start > max_duration {
            let boundary = py_max(words[1].end / 2.0, words[1].end - max_duration);
            words[0].end = boundary;
            words[1].start = boundary;
        }
        words[0].start = py_max0(words[0].end - max_duration);
    }
    // Prefer the segment-level start if the first word is too long.
    if segment.start < words[0].end && segment.start - 0.5 > words[0].start {
        words[0].start = py_max0(py_min(words[0].end - median_duration, segment.start));
    } else {
        segment.start = words[0].start;
    }
    // Prefer the segment-level end if the last word is too long.
    if segment.end > words[n - 1].start && segment.end + 0.5 < words[n - 1].end {
        words[n - 1].end = py_max(words[n - 1].start + median_duration, segment.end);
    } else {
        segment.end = words[n - 1].end;
    }
    *last_speech_timestamp = segment.end;
}

/// Python's `max(0, x)`.
fn py_max0(x: f64) -> f64 {
    py_max(0.0, x)
}

/// Python's `max(a, b)`: the first unless the second is greater.
fn py_max(a: f64, b: f64) -> f64 {
    if b > a {
        b
    } else {
        a
    }
}

/// Python's `min(a, b)`: the first unless the second is smaller.
fn py_min(a: f64, b: f64) -> f64 {
    if b < a {
        b
    } else {
        a
    }
}

/// openai's `get_end`: the end of the last word, else of the last segment.
pub fn get_end(segments: &[Segment]) -> Option<f64> {
    segments
        .iter()
        .rev()
        .flat_map(|s| s.words.iter().flatten().rev())
        .map(|w| w.end)
        .next()
        .or_else(|| segments.last().map(|s| s.end))
}

/// Punctuation that does not count as a word in the anomaly score (openai's `punctuation`).
const ANOMALY_PUNCTUATION: &str = "\"'“¿([{-\"'.。,，!！?？:：”)]}、";

/// openai's `word_anomaly_score`: very long, very short or improbable words score high.
fn word_anomaly_score(word: &Word) -> f64 {
    let duration = word.end - word.start;
    let mut score = 0.0;
    if word.probability < 0.15 {
        score += 1.0;
    }
    if duration < 0.133 {
        score += (0.133 - duration) * 15.0;
    }
    if duration > 2.0 {
        score += duration - 2.0;
    }
    score
}

/// openai's `is_segment_anomaly`: the first 8 words (punctuation aside) look hallucinated.
pub fn is_segment_anomaly(segment: Option<&Segment>) -> bool {
    let Some(words) = segment.and_then(|s| s.words.as_deref()) else {
        return false;
    };
    if words.is_empty() {
        return false;
    }
    let words: Vec<&Word> = words
        .iter()
        .filter(|w| !ANOMALY_PUNCTUATION.contains(w.word.as_str()))
        .take(8)
        .collect();
    let score: f64 = words.iter().map(|w| word_anomaly_score(w)).sum();
    score >= 3.0 || score + 0.01 >= words.len() as f64
}

/// openai's `next_words_segment`: the first segment that has words.
pub fn next_words_segment(segments: &[Segment]) -> Option<&Segment> {
    segments
        .iter()
        .find(|s| s.words.as_ref().is_some_and(|w| !w.is_empty()))
}
