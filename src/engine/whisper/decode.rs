//! One 30-second window: openai-whisper's `DecodingTask` (decoding.py), step by step over
//! the exported decoder with an explicit KV cache.
use super::model::{ModelError, WhisperModel};
use std::collections::HashMap;
use std::io::Write;
use tch::{Device, Kind, Tensor};

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

/// Language identification on one window's audio features: (code, probability per code).
pub fn detect_language(
    model: &WhisperModel,
    cross_kv: &Tensor,
) -> Result<(String, Vec<(String, f64)>), ModelError> {
    let tok = &model.tokenizer;
    let out = model.step(&[tok.sot()], 0, cross_kv, &mut model.empty_cache(1))?;
    let langs: Vec<(String, u32)> = tok
        .all_language_codes()
        .iter()
        .zip(tok.all_language_tokens())
        .map(|(c, t)| (c.to_string(), t))
        .collect();
    let ids: Vec<i64> = langs.iter().map(|(_, t)| i64::from(*t)).collect();
    let index = Tensor::from_slice(&ids).to_device(out.logits.device());
    let probs = out
        .logits
        .get(0)
        .index_select(0, &index)
        .to_kind(Kind::Double)
        .softmax(-1, Kind::Double);
    let probs = to_vec_f64(&probs, model)?;
    let mut ranked: Vec<(String, f64)> = langs.into_iter().map(|(c, _)| c).zip(probs).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let best = ranked
        .first()
        .map(|(c, _)| c.clone())
        .unwrap_or_else(|| "en".into());
    Ok((best, ranked))
}

fn torch_err(model: &WhisperModel, e: tch::TchError) -> ModelError {
    ModelError::Torch {
        model: model.name.clone(),
        message: e.to_string(),
    }
}

fn to_vec_f64(t: &Tensor, model: &WhisperModel) -> Result<Vec<f64>, ModelError> {
    t.f_to_device(tch::Device::Cpu)
        .and_then(|t| t.f_to_kind(Kind::Double))
        .and_then(|t| t.f_view([-1]))
        .and_then(|t| Vec::<f64>::try_from(&t))
        .map_err(|e| torch_err(model, e))
}

fn to_vec_i64(t: &Tensor, model: &WhisperModel) -> Result<Vec<i64>, ModelError> {
    t.f_to_device(tch::Device::Cpu)
        .and_then(|t| t.f_to_kind(Kind::Int64))
        .and_then(|t| t.f_view([-1]))
        .and_then(|t| Vec::<i64>::try_from(&t))
        .map_err(|e| torch_err(model, e))
}

/// `P(<|nospeech|>)` at row `index` of `[T, V]` logits.
fn no_speech_prob(model: &WhisperModel, logits: &Tensor, index: i64) -> Result<f64, ModelError> {
    let token = i64::from(model.tokenizer.no_speech());
    let lp = logits.get(index).log_softmax(-1, Kind::Float).get(token);
    Ok(to_vec_f64(&lp, model)?
        .first()
        .copied()
        .unwrap_or(f64::NAN)
        .exp())
}

/// openai's logit filters (SuppressBlank, SuppressTokens, ApplyTimestampRules), applied to
/// all rows at once on the logits' device; only the per-row timestamp ranges are decided
/// on the CPU, from the token sequences.
struct Filters {
    sample_begin: usize,
    /// Always-suppressed tokens (incl. `<|notimestamps|>` with timestamps), `[V]` bool.
    suppress: Tensor,
    /// Suppressed at the first sampled token: " " and `<|endoftext|>`.
    suppress_blank: Option<Tensor>,
    timestamps: bool,
    max_initial_timestamp_index: Option<usize>,
    eot: i64,
    timestamp_begin: i64,
}

impl Filters {
    fn new(model: &WhisperModel, opts: &DecodeOptions, sample_begin: usize) -> Self {
        let tok = &model.tokenizer;
        let eot = tok.eot();
        let mut suppress: Vec<i64> = Vec::new();
        if opts.suppress_tokens.contains(&-1) {
            suppress.extend(tok.non_speech_tokens().into_iter().map(i64::from));
        }
        suppress.extend(opts.suppress_tokens.iter().filter(|&&t| t >= 0));
        suppress.extend(
            [
                tok.transcribe(),
                tok.translate(),
                tok.sot(),
                tok.sot_prev(),
                tok.sot_lm(),
                tok.no_speech(),
            ]
            .map(i64::from),
        );
        if !opts.without_timestamps {
            suppress.push(i64::from(tok.no_timestamps()));
        }
        let n_vocab = model.dims.n_vocab;
        suppress.retain(|&t| (0..n_vocab).contains(&t));
        suppress.sort_unstable();
        suppress.dedup();
        let device = model.device;
        let mask = Tensor::zeros([n_vocab], (Kind::Bool, device)).index_fill(
            0,
            &Tensor::from_slice(&suppress).to_device(device),
            1,
        );
        let precision = super::audio::CHUNK_LENGTH as f64 / model.dims.n_audio_ctx as f64;
        let suppress_blank = opts.suppress_blank.then(|| {
            let mut v: Vec<i64> = tok.encode(" ").into_iter().map(i64::from).collect();
            v.push(i64::from(eot));
            Tensor::from_slice(&v).to_device(device)
        });
        Filters {
            sample_begin,
            suppress: mask,
            suppress_blank,
            timestamps: !opts.without_timestamps,
            max_initial_timestamp_index: opts
                .max_initial_timestamp
                .map(|t| (t / precision).round() as usize),
            eot: i64::from(eot),
            timestamp_begin: i64::from(tok.timestamp_begin()),
        }
    }

    /// Filters `logits` (`[n, V]` float, one row per sequence, all of one length) in place
    /// and returns their log-probabilities, as openai's decoders compute them afterwards.
    fn apply(&self, logits: &mut Tensor, seqs: &[Vec<u32>]) -> Tensor {
        let neg = f64::NEG_INFINITY;
        let _ = logits.masked_fill_(&self.suppress, neg);
        let at_begin = seqs.first().is_some_and(|s| s.len() == self.sample_begin);
        if at_begin {
            if let Some(blank) = &self.suppress_blank {
                let _ = logits.index_fill_(1, blank, neg);
            }
        }
        if !self.timestamps {
            return logits.log_softmax(-1, Kind::Float);
        }
        let n_vocab = logits.size().last().copied().unwrap_or(0);
        let tb = self.timestamp_begin.min(n_vocab);
        let fill = |row: usize, from: i64, to: i64| {
            let (from, to) = (from.clamp(0, n_vocab), to.clamp(0, n_vocab));
            if to > from {
                let _ = logits.get(row as i64).narrow(0, from, to - from).fill_(neg);
            }
        };
        for (r, seq) in seqs.iter().enumerate() {
            let sampled = &seq[self.sample_begin.min(seq.len())..];
            let is_ts = |t: u32| i64::from(t) >= tb;
            let last_ts = sampled.last().is_some_and(|&t| is_ts(t));
            let penult_ts = sampled.len() < 2 || is_ts(sampled[sampled.len() - 2]);
            if last_ts {
                if penult_ts {
                    fill(r, tb, n_vocab);
                } else {
                    fill(r, 0, self.eot);
                }
            }
            if let Some(&last) = sampled.iter().rev().find(|&&t| is_ts(t)) {
                let upto = if last_ts && !penult_ts {
                    i64::from(last)
                } else {
                    i64::from(last) + 1
                };
                fill(r, tb, upto);
            }
            if at_begin {
                fill(r, 0, tb);
                if let Some(max_index) = self.max_initial_timestamp_index {
                    fill(r, tb + max_index as i64 + 1, n_vocab);
                }
            }
        }
        // Text is suppressed where the timestamps together are likelier than any text token.
        let logprobs = logits.log_softmax(-1, Kind::Float);
        let timestamp = logprobs.narrow(1, tb, n_vocab - tb).logsumexp([1], false);
        let max_text = logprobs.narrow(1, 0, tb).amax([1], false);
        let only_timestamps = timestamp.gt_tensor(&max_text).unsqueeze(1);
        let _ = logits.narrow(1, 0, tb).masked_fill_(&only_timestamps, neg);
        logits.log_softmax(-1, Kind::Float)
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

/// Decodes one window whose cross-attention K/V (`[L, 2, 1, H, ctx, D/H]`) is given.
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
    let mut cache = model.empty_cache(1);
    let out = model.prefill(&initial, 0, cross_kv, &mut cache)?;
    let no_speech_prob = no_speech_prob(model, &out.logits, sot_index as i64)?;
    let beam = opts.beam_size.filter(|_| opts.temperature == 0.0);
    let n_group = beam.or(opts.best_of).unwrap_or(1).max(1);
    cache.select_rows(&vec![0; n_group]);
    // The rows share the window's cross K/V (one audio, n_group rows).
    let expand = Tensor::zeros([n_group as i64], (Kind::Int64, Device::Cpu));
    let mut logits = out
        .logits
        .narrow(0, initial.len() as i64 - 1, 1)
        .index_select(0, &expand.to_device(out.logits.device()));

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
        let logprobs = filters.apply(&mut logits, &seqs);
        let completed = match beam_state.as_mut() {
            Some(state) => {
                let sources = state.update(model, &mut seqs, &logprobs, &mut sum_logprobs, eot)?;
                let idx: Vec<i64> = sources.iter().map(|&s| s as i64).collect();
                cache.select_rows(&idx);
                state.finished.len() >= state.max_candidates
            }
            None => greedy_update(
                model,
                &mut seqs,
                &logits,
                &logprobs,
                &mut sum_logprobs,
                eot,
                opts.temperature,
            )?,
        };
        if completed || seqs[0].len() > n_ctx {
            break;
        }
        let last: Vec<u32> = seqs.iter().map(|s| s[s.len() - 1]).collect();
        let out = model.step(&last, seqs[0].len() - 1, cross_kv, &mut cache)?;
        logits = out.logits;
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

/// openai's GreedyDecoder.update: argmax (or a sample at `temperature`) per row; rows
/// that ended keep ending. Returns whether every row has ended.
fn greedy_update(
    model: &WhisperModel,
    seqs: &mut [Vec<u32>],
    logits: &Tensor,
    logprobs: &Tensor,
    sums: &mut [f64],
    eot: u32,
    temperature: f64,
) -> Result<bool, ModelError> {
    let next = if temperature == 0.0 {
        logits.argmax(-1, false)
    } else {
        (logits / temperature)
            .softmax(-1, Kind::Float)
            .multinomial(1, true)
            .squeeze_dim(1)
    };
    let current = logprobs.gather(1, &next.unsqueeze(1), false).squeeze_dim(1);
    let next = to_vec_i64(&next, model)?;
    let current = to_vec_f64(&current, model)?;
    for (k, seq) in seqs.iter_mut().enumerate() {
        let last = seq[seq.len() - 1];
        if last == eot {
            seq.push(eot);
        } else {
            sums[k] += current[k];
            seq.push(next[k] as u32);
        }
    }
    Ok(seqs.iter().all(|s| s[s.len() - 1] == eot))
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
        model: &WhisperModel,
        seqs: &mut Vec<Vec<u32>>,
        logprobs: &Tensor,
        sums: &mut [f64],
        eot: u32,
    ) -> Result<Vec<usize>, ModelError> {
        let n_vocab = logprobs.size().last().copied().unwrap_or(1);
        let k = ((self.size + 1) as i64).min(n_vocab);
        // Only the top k of each row leave the device, in torch's own order (as openai).
        let (values, indices) = logprobs.topk(k, -1, true, true);
        let values = to_vec_f64(&values, model)?;
        let indices = to_vec_i64(&indices, model)?;
        let k = k as usize;
        let mut order: Vec<Vec<u32>> = Vec::new();
        let mut scores: HashMap<Vec<u32>, (f64, usize)> = HashMap::new();
        for (j, seq) in seqs.iter().enumerate() {
            for i in j * k..(j + 1) * k {
                let mut s = seq.clone();
                s.push(indices[i] as u32);
                let value = (sums[j] + values[i], j);
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
        Ok(sources)
    }
}

/// Greedy decoding (temperature 0) of several windows at once, one row per window, with no
/// prompt: faster-whisper's batched mode. `cross_kv` is `[L, 2, n, H, ctx, D/H]`.
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
    let mut cache = model.empty_cache(rows as i64);
    let out = model.forward(&all, rows, 0, cross_kv, &mut cache)?;
    let mut no_speech = Vec::with_capacity(rows);
    for r in 0..rows as i64 {
        no_speech.push(no_speech_prob(model, &out.logits.get(r), sot_index as i64)?);
    }
    let mut logits = out.logits.select(1, sample_begin as i64 - 1);
    let mut seqs: Vec<Vec<u32>> = vec![initial.clone(); rows];
    let mut sums = vec![0f64; rows];
    for _ in 0..sample_len {
        let logprobs = filters.apply(&mut logits, &seqs);
        let completed = greedy_update(model, &mut seqs, &logits, &logprobs, &mut sums, eot, 0.0)?;
        if completed || seqs[0].len() > n_ctx {
            break;
        }
        let last: Vec<u32> = seqs.iter().map(|s| s[s.len() - 1]).collect();
        let out = model.step(&last, seqs[0].len() - 1, cross_kv, &mut cache)?;
        logits = out.logits;
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
