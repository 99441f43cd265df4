//! One 30-second window: openai-whisper's `DecodingTask` (decoding.py), step by step over
//! the exported decoder with an explicit KV cache.
use super::model::{ModelError, WhisperModel};
use std::collections::HashMap;
use std::io::Write;
use tch::{Kind, Tensor};

pub use super::tokenizer::Task;

#[derive(Debug, Clone)]
pub struct DecodeOptions {
    pub task: Task,
    /// None: detect (the caller does it once per file, as openai's transcribe does).
    pub language: Option<String>,
    pub temperature: f64,
    pub sample_len: Option<usize>,
    pub best_of: Option<usize>,
    pub beam_size: Option<usize>,
    pub patience: Option<f64>,
    pub length_penalty: Option<f64>,
    pub prompt: Vec<u32>,
    pub prefix: Vec<u32>,
    /// openai's `suppress_tokens`: -1 means the non-speech symbols.
    pub suppress_tokens: Vec<i64>,
    pub suppress_blank: bool,
    pub without_timestamps: bool,
    pub max_initial_timestamp: Option<f64>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            task: Task::Transcribe,
            language: None,
            temperature: 0.0,
            sample_len: None,
            best_of: None,
            beam_size: None,
            patience: None,
            length_penalty: None,
            prompt: Vec::new(),
            prefix: Vec::new(),
            suppress_tokens: vec![-1],
            suppress_blank: true,
            without_timestamps: false,
            max_initial_timestamp: Some(1.0),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DecodeResult {
    pub tokens: Vec<u32>,
    pub text: String,
    pub avg_logprob: f64,
    pub no_speech_prob: f64,
    pub temperature: f64,
    pub compression_ratio: f64,
}

/// `len(text) / len(zlib.compress(text))`, as openai computes it (zlib level 6).
pub fn compression_ratio(text: &str) -> f64 {
    let bytes = text.as_bytes();
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    let compressed = enc
        .write_all(bytes)
        .and_then(|_| enc.finish())
        .map(|c| c.len())
        .unwrap_or(1);
    bytes.len() as f64 / compressed.max(1) as f64
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    row.iter().map(|&x| x as f64 - lse).collect()
}

fn logsumexp(values: &[f64]) -> f64 {
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + values.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// Language identification on one window's audio features: (code, probability per code).
pub fn detect_language(
    model: &WhisperModel,
    cross_kv: &Tensor,
) -> Result<(String, Vec<(String, f64)>), ModelError> {
    let tok = &model.tokenizer;
    let out = model.step(&[tok.sot()], 0, cross_kv, &model.empty_cache(1))?;
    let logits = row(&out.logits, 0);
    let langs: Vec<(String, u32)> = tok
        .all_language_codes()
        .iter()
        .zip(tok.all_language_tokens())
        .map(|(c, t)| (c.to_string(), t))
        .collect();
    let values: Vec<f32> = langs.iter().map(|(_, t)| logits[*t as usize]).collect();
    let probs: Vec<f64> = log_softmax(&values).into_iter().map(f64::exp).collect();
    let mut ranked: Vec<(String, f64)> = langs.into_iter().map(|(c, _)| c).zip(probs).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let best = ranked
        .first()
        .map(|(c, _)| c.clone())
        .unwrap_or_else(|| "en".into());
    Ok((best, ranked))
}

/// Row `i` of a 2-D float tensor. A shape mismatch here is a bug in the export, so it is
/// loud: a NaN row makes every decision fail visibly instead of silently.
fn row(t: &Tensor, i: i64) -> Vec<f32> {
    Vec::<f32>::try_from(t.get(i).to_kind(Kind::Float).contiguous())
        .ok()
        .filter(|v| v.len() > 1)
        .unwrap_or_else(|| {
            tracing::error!("unexpected logits shape {:?}", t.size());
            vec![f32::NAN; t.size().last().copied().unwrap_or(1).max(1) as usize]
        })
}

struct Filters {
    sample_begin: usize,
    suppress_blank: Vec<u32>,
    suppress: Vec<u32>,
    timestamps: bool,
    max_initial_timestamp_index: Option<usize>,
    eot: usize,
    no_timestamps: usize,
    timestamp_begin: usize,
}

impl Filters {
    fn new(model: &WhisperModel, opts: &DecodeOptions, sample_begin: usize) -> Self {
        let tok = &model.tokenizer;
        let eot = tok.eot();
        let mut suppress: Vec<u32> = Vec::new();
        if opts.suppress_tokens.contains(&-1) {
            suppress.extend(tok.non_speech_tokens());
        }
        suppress.extend(
            opts.suppress_tokens
                .iter()
                .filter(|&&t| t >= 0)
                .map(|&t| t as u32),
        );
        suppress.extend([
            tok.transcribe(),
            tok.translate(),
            tok.sot(),
            tok.sot_prev(),
            tok.sot_lm(),
        ]);
        suppress.push(tok.no_speech());
        suppress.sort_unstable();
        suppress.dedup();
        let precision = super::audio::CHUNK_LENGTH as f64 / model.dims.n_audio_ctx as f64;
        Filters {
            sample_begin,
            suppress_blank: if opts.suppress_blank {
                let mut v = tok.encode(" ");
                v.push(eot);
                v
            } else {
                Vec::new()
            },
            suppress,
            timestamps: !opts.without_timestamps,
            max_initial_timestamp_index: opts
                .max_initial_timestamp
                .map(|t| (t / precision).round() as usize),
            eot: eot as usize,
            no_timestamps: tok.no_timestamps() as usize,
            timestamp_begin: tok.timestamp_begin() as usize,
        }
    }

    fn apply(&self, logits: &mut [f32], seq: &[u32]) {
        let neg = f32::NEG_INFINITY;
        if seq.len() == self.sample_begin {
            for &t in &self.suppress_blank {
                logits[t as usize] = neg;
            }
        }
        for &t in &self.suppress {
            logits[t as usize] = neg;
        }
        if !self.timestamps {
            return;
        }
        let tb = self.timestamp_begin;
        logits[self.no_timestamps] = neg;
        let sampled = &seq[self.sample_begin..];
        let last_ts = sampled.last().is_some_and(|&t| t as usize >= tb);
        let penult_ts = sampled.len() < 2 || sampled[sampled.len() - 2] as usize >= tb;
        if last_ts {
            if penult_ts {
                logits[tb..].fill(neg);
            } else {
                logits[..self.eot].fill(neg);
            }
        }
        if let Some(&last) = sampled.iter().rev().find(|&&t| t as usize >= tb) {
            let upto = if last_ts && !penult_ts {
                last as usize
            } else {
                last as usize + 1
            };
            let upto = upto.min(logits.len());
            logits[tb..upto].fill(neg);
        }
        if seq.len() == self.sample_begin {
            logits[..tb].fill(neg);
            if let Some(max_index) = self.max_initial_timestamp_index {
                let last_allowed = tb + max_index;
                if last_allowed + 1 < logits.len() {
                    logits[last_allowed + 1..].fill(neg);
                }
            }
        }
        let logprobs = log_softmax(logits);
        let timestamp_logprob = logsumexp(&logprobs[tb..]);
        let max_text = logprobs[..tb]
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        if timestamp_logprob > max_text {
            logits[..tb].fill(neg);
        }
    }
}

/// The start-of-transcript tokens for the options' language and task (plus
/// `<|notimestamps|>` without timestamps).
fn sot_sequence(model: &WhisperModel, opts: &DecodeOptions) -> Result<Vec<u32>, ModelError> {
    let tok = &model.tokenizer;
    let mut seq = tok
        .sot_sequence(opts.language.as_deref(), opts.task)
        .map_err(|e| ModelError::Torch {
            model: model.name.clone(),
            message: e.to_string(),
        })?;
    if opts.without_timestamps {
        seq.push(tok.no_timestamps());
    }
    Ok(seq)
}

/// Decodes one window whose cross-attention K/V (`[L, 2, 1, ctx, D]`) is given.
pub fn decode(
    model: &WhisperModel,
    cross_kv: &Tensor,
    opts: &DecodeOptions,
) -> Result<DecodeResult, ModelError> {
    let tok = &model.tokenizer;
    let n_ctx = model.dims.n_text_ctx as usize;
    let sample_len = opts.sample_len.unwrap_or(n_ctx / 2);
    let eot = tok.eot();

    let sot_sequence = sot_sequence(model, opts)?;
    let mut initial: Vec<u32> = Vec::new();
    if !opts.prompt.is_empty() {
        initial.push(tok.sot_prev());
        let keep = (n_ctx / 2 - 1).min(opts.prompt.len());
        initial.extend_from_slice(&opts.prompt[opts.prompt.len() - keep..]);
    }
    initial.extend_from_slice(&sot_sequence);
    if !opts.prefix.is_empty() {
        let max_prefix = (n_ctx / 2).saturating_sub(sample_len);
        let keep = max_prefix.min(opts.prefix.len());
        initial.extend_from_slice(&opts.prefix[opts.prefix.len() - keep..]);
    }
    let sample_begin = initial.len();
    let sot_index = initial.iter().position(|&t| t == tok.sot()).unwrap_or(0);

    let filters = Filters::new(model, opts, sample_begin);

    // Prefill the prompt with one row, in one call.
    let out = model.prefill(&initial, 0, cross_kv, &model.empty_cache(1))?;
    let mut cache = out.cache;
    let no_speech_prob =
        log_softmax(&row(&out.logits, sot_index as i64))[tok.no_speech() as usize].exp();
    let first = out.logits.get(initial.len() as i64 - 1).unsqueeze(0);
    let beam = opts.beam_size.filter(|_| opts.temperature == 0.0);
    let n_group = beam.or(opts.best_of).unwrap_or(1).max(1);
    let expand = Tensor::zeros([n_group as i64], (Kind::Int64, cache.device()));
    cache = cache.index_select(2, &expand);
    let cross = cross_kv.index_select(2, &expand.to_device(cross_kv.device()));
    let mut logits: Vec<Vec<f32>> = vec![row(&first, 0); n_group];

    let mut seqs: Vec<Vec<u32>> = vec![initial.clone(); n_group];
    let mut sum_logprobs = vec![0f64; n_group];
    let mut beam_state = beam.map(|size| BeamState {
        size,
        max_candidates: ((size as f64) * opts.patience.unwrap_or(1.0))
            .round()
            .max(1.0) as usize,
        finished: Vec::new(),
    });

    for _ in 0..sample_len {
        for (k, l) in logits.iter_mut().enumerate() {
            filters.apply(l, &seqs[k]);
        }
        let completed = match beam_state.as_mut() {
            Some(state) => {
                let sources = state.update(&mut seqs, &logits, &mut sum_logprobs, eot);
                let idx: Vec<i64> = sources.iter().map(|&s| s as i64).collect();
                cache = cache.index_select(2, &Tensor::from_slice(&idx).to_device(cache.device()));
                state.finished.len() >= state.max_candidates
            }
            None => greedy_update(&mut seqs, &logits, &mut sum_logprobs, eot, opts.temperature),
        };
        if completed || seqs[0].len() > n_ctx {
            break;
        }
        let last: Vec<u32> = seqs.iter().map(|s| s[s.len() - 1]).collect();
        let out = model.step(&last, seqs[0].len() - 1, &cross, &cache)?;
        cache = out.cache;
        logits = (0..n_group as i64).map(|k| row(&out.logits, k)).collect();
    }

    // Finalize: candidates (tokens after sample_begin, up to eot) with their sum logprobs.
    let mut candidates: Vec<(Vec<u32>, f64)> = match beam_state {
        Some(mut state) => {
            if state.finished.len() < state.size {
                let mut order: Vec<usize> = (0..seqs.len()).collect();
                order.sort_by(|&a, &b| sum_logprobs[b].total_cmp(&sum_logprobs[a]));
                for j in order {
                    let mut s = seqs[j].clone();
                    s.push(eot);
                    state.insert(s, sum_logprobs[j]);
                    if state.finished.len() >= state.size {
                        break;
                    }
                }
            }
            state.finished
        }
        None => seqs
            .iter()
            .cloned()
            .zip(sum_logprobs.iter().copied())
            .collect(),
    };
    for (s, _) in candidates.iter_mut() {
        let body: Vec<u32> = s[sample_begin..]
            .iter()
            .copied()
            .take_while(|&t| t != eot)
            .collect();
        *s = body;
    }
    let score = |(s, lp): &(Vec<u32>, f64)| match opts.length_penalty {
        None => lp / s.len() as f64,
        Some(alpha) => lp / ((5.0 + s.len() as f64) / 6.0).powf(alpha),
    };
    let mut best = 0;
    for i in 1..candidates.len() {
        if score(&candidates[i]) > score(&candidates[best]) {
            best = i;
        }
    }
    let (tokens, lp) = candidates.swap_remove(best);
    let text = tok.decode(&tokens).trim().to_string();
    Ok(DecodeResult {
        avg_logprob: lp / (tokens.len() + 1) as f64,
        compression_ratio: compression_ratio(&text),
        tokens,
        text,
        no_speech_prob,
        temperature: opts.temperature,
    })
}

fn greedy_update(
    seqs: &mut [Vec<u32>],
    logits: &[Vec<f32>],
    sums: &mut [f64],
    eot: u32,
    temperature: f64,
) -> bool {
    for (k, seq) in seqs.iter_mut().enumerate() {
        let l = &logits[k];
        let next = if temperature == 0.0 {
            argmax(l)
        } else {
            let scaled: Vec<f32> = l.iter().map(|&x| (x as f64 / temperature) as f32).collect();
            let probs = Tensor::from_slice(&scaled).softmax(-1, Kind::Float);
            probs.multinomial(1, true).int64_value(&[0]) as usize
        };
        let logprobs = log_softmax(l);
        let last = seq[seq.len() - 1];
        if last != eot {
            sums[k] += logprobs[next];
        }
        seq.push(if last == eot { eot } else { next as u32 });
    }
    seqs.iter().all(|s| s[s.len() - 1] == eot)
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

struct BeamState {
    size: usize,
    max_candidates: usize,
    /// Finished sequences in insertion order (a Python dict).
    finished: Vec<(Vec<u32>, f64)>,
}

impl BeamState {
    fn insert(&mut self, seq: Vec<u32>, score: f64) {
        match self.finished.iter_mut().find(|(s, _)| *s == seq) {
            Some(entry) => entry.1 = score,
            None => self.finished.push((seq, score)),
        }
    }

    /// openai's BeamSearchDecoder.update for one audio; returns the source row of each beam.
    fn update(
        &mut self,
        seqs: &mut Vec<Vec<u32>>,
        logits: &[Vec<f32>],
        sums: &mut [f64],
        eot: u32,
    ) -> Vec<usize> {
        let mut order: Vec<Vec<u32>> = Vec::new();
        let mut scores: HashMap<Vec<u32>, (f64, usize)> = HashMap::new();
        for (j, seq) in seqs.iter().enumerate() {
            let logprobs = log_softmax(&logits[j]);
            let mut idx: Vec<usize> = (0..logprobs.len()).collect();
            let k = (self.size + 1).min(idx.len());
            idx.select_nth_unstable_by(k - 1, |&a, &b| logprobs[b].total_cmp(&logprobs[a]));
            let mut top: Vec<usize> = idx[..k].to_vec();
            top.sort_by(|&a, &b| logprobs[b].total_cmp(&logprobs[a]).then(a.cmp(&b)));
            for t in top {
                let mut s = seq.clone();
                s.push(t as u32);
                let value = (sums[j] + logprobs[t], j);
                if scores.insert(s.clone(), value).is_none() {
                    order.push(s);
                }
            }
        }
        // Stable sort, highest score first (Python's sorted(..., reverse=True)).
        order.sort_by(|a, b| scores[b].0.total_cmp(&scores[a].0));
        let mut next = Vec::new();
        let mut sources = Vec::new();
        let mut newly_finished = Vec::new();
        for s in order {
            let (score, source) = scores[&s];
            if s[s.len() - 1] == eot {
                newly_finished.push((s, score));
            } else {
                sums[next.len()] = score;
                next.push(s);
                sources.push(source);
                if next.len() == self.size {
                    break;
                }
            }
        }
        for (s, score) in newly_finished {
            if self.finished.len() >= self.max_candidates {
                break;
            }
            self.insert(s, score);
        }
        *seqs = next;
        sources
    }
}

/// Greedy decoding (temperature 0) of several windows at once, one row per window, with no
/// prompt: faster-whisper's batched mode. `cross_kv` is `[L, 2, n, ctx, D]`.
pub fn decode_batch(
    model: &WhisperModel,
    cross_kv: &Tensor,
    opts: &DecodeOptions,
) -> Result<Vec<DecodeResult>, ModelError> {
    let tok = &model.tokenizer;
    let rows = cross_kv.size()[2] as usize;
    let n_ctx = model.dims.n_text_ctx as usize;
    let sample_len = opts.sample_len.unwrap_or(n_ctx / 2);
    let eot = tok.eot();
    let initial = sot_sequence(model, opts)?;
    let sample_begin = initial.len();
    let sot_index = initial.iter().position(|&t| t == tok.sot()).unwrap_or(0);
    let filters = Filters::new(model, opts, sample_begin);

    let all: Vec<u32> = (0..rows).flat_map(|_| initial.iter().copied()).collect();
    let out = model.forward(&all, rows, 0, cross_kv, &model.empty_cache(rows as i64))?;
    let mut cache = out.cache;
    let mut no_speech = Vec::with_capacity(rows);
    let mut logits = Vec::with_capacity(rows);
    for r in 0..rows as i64 {
        let per_row = out.logits.get(r);
        no_speech
            .push(log_softmax(&row(&per_row, sot_index as i64))[tok.no_speech() as usize].exp());
        logits.push(row(&per_row, sample_begin as i64 - 1));
    }
    let mut seqs: Vec<Vec<u32>> = vec![initial.clone(); rows];
    let mut sums = vec![0f64; rows];
    for _ in 0..sample_len {
        for (k, l) in logits.iter_mut().enumerate() {
            filters.apply(l, &seqs[k]);
        }
        let completed = greedy_update(&mut seqs, &logits, &mut sums, eot, 0.0);
        if completed || seqs[0].len() > n_ctx {
            break;
        }
        let last: Vec<u32> = seqs.iter().map(|s| s[s.len() - 1]).collect();
        let out = model.step(&last, seqs[0].len() - 1, cross_kv, &cache)?;
        cache = out.cache;
        logits = (0..rows as i64).map(|k| row(&out.logits, k)).collect();
    }
    Ok(seqs
        .into_iter()
        .zip(sums)
        .zip(no_speech)
        .map(|((seq, lp), no_speech_prob)| {
            let tokens: Vec<u32> = seq[sample_begin..]
                .iter()
                .copied()
                .take_while(|&t| t != eot)
                .collect();
            let text = tok.decode(&tokens).trim().to_string();
            DecodeResult {
                avg_logprob: lp / (tokens.len() + 1) as f64,
                compression_ratio: compression_ratio(&text),
                tokens,
                text,
                no_speech_prob,
                temperature: 0.0,
            }
        })
        .collect())
}
