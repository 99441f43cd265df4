//! A1111 prompt syntax: `<lora:name:w>` extra networks, `(word:1.2)` / `(word)` / `[word]`
//! attention, `BREAK`, and the 75-token chunking with per-token weights of A1111's
//! `sd_hijack_clip.py` (`tokenize_line`, with its default comma backtrack of 20 tokens).
use super::infotext::{GenerationParams, InfotextError};
use crate::engine::clip::tokenizer::{ClipTokenizer, EOT, SOT};
use regex::Regex;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Tokens per chunk between BOS and EOS.
pub const CHUNK_LENGTH: usize = 75;
/// A1111's `comma_padding_backtrack` default: a chunk that fills up within this many tokens
/// after a comma is cut after the comma and the rest moves to the next chunk.
pub const COMMA_BACKTRACK: usize = 20;

fn regex(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).unwrap_or_else(|e| unreachable!("constant regex: {e}")))
}

/// A1111's `re_extra_net` (modules/extra_networks.py).
fn re_extra_net() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    regex(&RE, r"<(\w+):([^>]+)>")
}

/// A1111's `re_attention` (modules/prompt_parser.py, v1.10).
fn re_attention() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    regex(
        &RE,
        r"\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()\[\]:]+|:",
    )
}

fn re_break() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    regex(&RE, r"(?s)\s*\bBREAK\b\s*")
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParsedPrompt {
    /// The prompt with every `<type:args>` extra network removed, as A1111 removes them.
    pub text: String,
    /// `(name, weight)` of each `<lora:name[:w…]>` / `<lyco:…>`, in order (weight 1 when absent).
    pub loras: Vec<(String, f64)>,
}

/// A1111's `extra_networks.parse_prompt`: removes all `<type:args>` tags and returns the LoRAs
/// (`lora` and `lyco` alike). The first argument is the name, the second (the text-encoder
/// multiplier, which A1111 also uses for the UNet when there is no third) is the weight.
pub fn extract_loras(prompt: &str) -> ParsedPrompt {
    let mut loras = Vec::new();
    for c in re_extra_net().captures_iter(prompt) {
        if !matches!(&c[1], "lora" | "lyco") {
            continue;
        }
        let mut args = c[2].split(':');
        let name = args.next().unwrap_or_default().to_string();
        let weight = args
            .next()
            .and_then(|w| w.trim().parse::<f64>().ok())
            .unwrap_or(1.0);
        loras.push((name, weight));
    }
    let text = re_extra_net().replace_all(prompt, "").into_owned();
    ParsedPrompt { text, loras }
}

/// The deepest bracket nesting that takes effect, per bracket kind. A1111 has no limit, but its
/// parse costs (text runs × depth): deeper brackets are ignored here, so the parse stays linear,
/// and a prompt file that nests deeper is refused ([`check_prompt`]). At 32, `(` alone already
/// weighs 1.1^32 ≈ 21.
pub const MAX_ATTENTION_DEPTH: usize = 32;

/// A1111's `parse_prompt_attention`: text runs and their weights; `BREAK` (outside any bracket)
/// is the entry `("BREAK", -1.0)`. A weight that is not a number (`(a:1.2.3)`, which makes
/// A1111 raise) is read as text. Brackets nested deeper than [`MAX_ATTENTION_DEPTH`] have no
/// effect.
pub fn parse_attention(text: &str) -> Vec<(String, f64)> {
    parse_attention_counted(text).0
}

/// [`parse_attention`] and its work: the weight multiplications it made plus the runs it
/// pushed, at most `(2 · MAX_ATTENTION_DEPTH + 1) ×` the runs (the property tests check it).
pub fn parse_attention_counted(text: &str) -> (Vec<(String, f64)>, usize) {
    let mut res: Vec<(String, f64)> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();
    // Brackets opened past the depth limit: their closers are consumed without effect.
    let (mut round_over, mut square_over) = (0usize, 0usize);
    let mut work = 0usize;
    let round_mult = 1.1;
    let square_mult = 1.0 / 1.1;
    let mut multiply = |res: &mut [(String, f64)], start: usize, m: f64| {
        for r in res.iter_mut().skip(start) {
            r.1 *= m;
            work += 1;
        }
    };
    for c in re_attention().captures_iter(text) {
        let token = c.get(0).map_or("", |m| m.as_str());
        let weight = c.get(1).and_then(|w| w.as_str().parse::<f64>().ok());
        if let Some(rest) = token.strip_prefix('\\') {
            res.push((rest.to_string(), 1.0));
        } else if token == "(" {
            if round.len() < MAX_ATTENTION_DEPTH {
                round.push(res.len());
            } else {
                round_over += 1;
            }
        } else if token == "[" {
            if square.len() < MAX_ATTENTION_DEPTH {
                square.push(res.len());
            } else {
                square_over += 1;
            }
        } else if round_over > 0 && (weight.is_some() || token == ")") {
            round_over -= 1;
        } else if let (Some(w), Some(start)) = (weight, round.last().copied()) {
            round.pop();
            multiply(&mut res, start, w);
        } else if token == ")" && !round.is_empty() {
            let start = round.pop().unwrap_or_default();
            multiply(&mut res, start, round_mult);
        } else if token == "]" && square_over > 0 {
            square_over -= 1;
        } else if token == "]" && !square.is_empty() {
            let start = square.pop().unwrap_or_default();
            multiply(&mut res, start, square_mult);
        } else {
            for (i, part) in re_break().split(token).enumerate() {
                if i > 0 {
                    res.push(("BREAK".to_string(), -1.0));
                }
                res.push((part.to_string(), 1.0));
            }
        }
    }
    for start in round {
        multiply(&mut res, start, round_mult);
    }
    for start in square {
        multiply(&mut res, start, square_mult);
    }
    work += res.len();
    if res.is_empty() {
        res.push((String::new(), 1.0));
    }
    // Merge runs of identical weights in one pass (`Vec::remove` in a loop is quadratic).
    let mut merged: Vec<(String, f64)> = Vec::with_capacity(res.len());
    for (text, w) in res {
        match merged.last_mut() {
            Some(last) if last.1 == w => last.0.push_str(&text),
            _ => merged.push((text, w)),
        }
    }
    (merged, work)
}

/// The deepest nesting of `(` or of `[` in `text`, as [`parse_attention`] reads the brackets
/// (escaped ones do not count).
pub fn attention_depth(text: &str) -> usize {
    let (mut round, mut square, mut deepest) = (0usize, 0usize, 0usize);
    for c in re_attention().captures_iter(text) {
        match c.get(0).map_or("", |m| m.as_str()) {
            "(" => round += 1,
            "[" => square += 1,
            ")" => round = round.saturating_sub(1),
            "]" => square = square.saturating_sub(1),
            _ if c.get(1).is_some_and(|w| w.as_str().parse::<f64>().is_ok()) => {
                round = round.saturating_sub(1)
            }
            _ => {}
        }
        deepest = deepest.max(round).max(square);
    }
    deepest
}

/// A prompt as CLIP chunks: each `[BOS, 75 tokens (EOS-padded), EOS]` with the pad token after
/// the first EOS, and the weight of each token (1 for BOS, EOS and padding).
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    pub ids: Vec<[i64; 77]>,
    pub weights: Vec<[f32; 77]>,
}

/// A1111's `tokenize_line` (with `parse_attention`, no textual inversion): 75-token chunks,
/// `BREAK` starting a new chunk, a chunk ending within `COMMA_BACKTRACK` tokens after a comma
/// cut after that comma. Pass text without `<lora:…>` tags (`extract_loras`).
/// `pad_token`: 49407 (CLIP-L, SD1.5) or 0 (OpenCLIP: SD2.1, SDXL's second encoder).
pub fn chunk(tokenizer: &ClipTokenizer, text: &str, pad_token: i64) -> Encoded {
    let comma = tokenizer.encode(",").first().copied();
    let mut chunks: Vec<(Vec<i64>, Vec<f32>)> = Vec::new();
    let (mut tokens, mut mults): (Vec<i64>, Vec<f32>) = (Vec::new(), Vec::new());
    let mut last_comma: Option<usize> = None;

    let next_chunk = |tokens: &mut Vec<i64>,
                      mults: &mut Vec<f32>,
                      last_comma: &mut Option<usize>,
                      chunks: &mut Vec<(Vec<i64>, Vec<f32>)>| {
        tokens.resize(CHUNK_LENGTH, EOT);
        mults.resize(CHUNK_LENGTH, 1.0);
        *last_comma = None;
        chunks.push((std::mem::take(tokens), std::mem::take(mults)));
    };

    for (part, weight) in parse_attention(text) {
        if part == "BREAK" && weight == -1.0 {
            next_chunk(&mut tokens, &mut mults, &mut last_comma, &mut chunks);
            continue;
        }
        for token in tokenizer.encode(&part) {
            if Some(token) == comma {
                last_comma = Some(tokens.len());
            } else if let Some(lc) = last_comma.filter(|&lc| {
                COMMA_BACKTRACK != 0
                    && tokens.len() == CHUNK_LENGTH
                    && tokens.len() - lc <= COMMA_BACKTRACK
            }) {
                let reloc_tokens = tokens.split_off(lc + 1);
                let reloc_mults = mults.split_off(lc + 1);
                next_chunk(&mut tokens, &mut mults, &mut last_comma, &mut chunks);
                tokens = reloc_tokens;
                mults = reloc_mults;
            }
            if tokens.len() == CHUNK_LENGTH {
                next_chunk(&mut tokens, &mut mults, &mut last_comma, &mut chunks);
            }
            tokens.push(token);
            mults.push(weight as f32);
        }
    }
    if !tokens.is_empty() || chunks.is_empty() {
        next_chunk(&mut tokens, &mut mults, &mut last_comma, &mut chunks);
    }

    let mut out = Encoded {
        ids: Vec::with_capacity(chunks.len()),
        weights: Vec::with_capacity(chunks.len()),
    };
    for (t, m) in chunks {
        let mut ids = [pad_token; 77];
        let mut weights = [1.0f32; 77];
        ids[0] = SOT;
        ids[1..=CHUNK_LENGTH].copy_from_slice(&t);
        ids[CHUNK_LENGTH + 1] = EOT;
        weights[1..=CHUNK_LENGTH].copy_from_slice(&m);
        // A1111's process_tokens: everything after the first EOS is the pad token.
        if let Some(first_eos) = ids.iter().position(|&id| id == EOT) {
            for id in ids.iter_mut().skip(first_eos + 1) {
                *id = pad_token;
            }
        }
        out.ids.push(ids);
        out.weights.push(weights);
    }
    out
}

/// The largest prompt file read (a long A1111 infotext is a few KiB).
pub const MAX_PROMPT_FILE_BYTES: u64 = 256 * 1024;
/// The longest prompt (and negative prompt), in characters.
pub const MAX_PROMPT_CHARS: usize = 32 * 1024;
/// The most 75-token CLIP chunks a prompt may take: each is one text-encoder pass.
pub const MAX_CHUNKS: usize = 32;

/// A prompt over a limit.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PromptError {
    #[error("the {what} is {chars} characters long, the limit is {MAX_PROMPT_CHARS}")]
    TooLong { what: &'static str, chars: usize },
    #[error("the {what} nests brackets {depth} deep, the limit is {MAX_ATTENTION_DEPTH}")]
    TooDeep { what: &'static str, depth: usize },
    #[error("the {what} takes {chunks} chunks of 75 tokens, the limit is {MAX_CHUNKS}")]
    TooManyChunks { what: &'static str, chunks: usize },
    #[error("<lora:{name}:…> in the {what}: a LoRA is named by a single file name in the LoRA folder (no '/', '..' or absolute path)")]
    LoraName { what: &'static str, name: String },
}

/// The limits that need no tokenizer: the length, the bracket depth and the LoRA names.
/// `what` names the text in the error ("prompt", "negative prompt").
pub fn check_prompt(what: &'static str, text: &str) -> Result<(), PromptError> {
    let chars = text.chars().count();
    if chars > MAX_PROMPT_CHARS {
        return Err(PromptError::TooLong { what, chars });
    }
    let depth = attention_depth(text);
    if depth > MAX_ATTENTION_DEPTH {
        return Err(PromptError::TooDeep { what, depth });
    }
    if let Some((name, _)) = extract_loras(text)
        .loras
        .into_iter()
        .find(|(name, _)| crate::engine::store::check_name(name).is_err())
    {
        return Err(PromptError::LoraName { what, name });
    }
    Ok(())
}

/// The chunk-count limit, checked on the chunks [`chunk`] made.
pub fn check_chunks(what: &'static str, chunks: usize) -> Result<(), PromptError> {
    if chunks > MAX_CHUNKS {
        return Err(PromptError::TooManyChunks { what, chunks });
    }
    Ok(())
}

/// A prompt file refused; each message starts with the file.
#[derive(Debug, thiserror::Error)]
pub enum PromptFileError {
    #[error("{path}: cannot read the prompt file: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: the prompt file is larger than the limit of {MAX_PROMPT_FILE_BYTES} bytes")]
    TooBig { path: PathBuf },
    #[error("{path}: the prompt file is not UTF-8 text")]
    NotText { path: PathBuf },
    #[error("{path}: the prompt file is empty")]
    Empty { path: PathBuf },
    #[error("{path}: {source}")]
    Infotext {
        path: PathBuf,
        source: InfotextError,
    },
    #[error("{path}: {source}")]
    Prompt { path: PathBuf, source: PromptError },
}

/// A prompt file: a plain prompt, or a whole A1111 infotext (`params`).
#[derive(Clone, Debug, PartialEq)]
pub struct PromptFile {
    pub prompt: String,
    pub negative: String,
    pub params: Option<GenerationParams>,
}

impl PromptFile {
    /// Reads and checks a prompt file: at most [`MAX_PROMPT_FILE_BYTES`] (never more is read),
    /// UTF-8, not empty; an infotext's numbers in range; each prompt within
    /// [`check_prompt`]'s limits. Text whose last line is not an A1111 parameters line (or
    /// lacks one of its required keys) is a plain prompt.
    pub fn read(path: &Path) -> Result<PromptFile, PromptFileError> {
        let io = |source| PromptFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .map_err(io)?
            .take(MAX_PROMPT_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_PROMPT_FILE_BYTES {
            return Err(PromptFileError::TooBig {
                path: path.to_path_buf(),
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| PromptFileError::NotText {
            path: path.to_path_buf(),
        })?;
        Self::parse(path, &text)
    }

    /// [`PromptFile::read`] on text already read; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<PromptFile, PromptFileError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(PromptFileError::Empty {
                path: path.to_path_buf(),
            });
        }
        let params = match GenerationParams::parse(text) {
            Ok(p) => Some(p),
            Err(InfotextError::NoParameters | InfotextError::Missing(_)) => None,
            Err(source) => {
                return Err(PromptFileError::Infotext {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let (prompt, negative) = match &params {
            Some(p) => (p.prompt.clone(), p.negative_prompt.clone()),
            None => (text.to_string(), String::new()),
        };
        let prompt_err = |source| PromptFileError::Prompt {
            path: path.to_path_buf(),
            source,
        };
        check_prompt("prompt", &prompt).map_err(prompt_err)?;
        check_prompt("negative prompt", &negative).map_err(prompt_err)?;
        if let Some(p) = &params {
            if p.width % 8 != 0 || p.height % 8 != 0 {
                return Err(PromptFileError::Infotext {
                    path: path.to_path_buf(),
                    source: InfotextError::OutOfRange {
                        key: "Size".into(),
                        value: format!("{}x{}", p.width, p.height),
                        limit: "sides that are multiples of 8",
                    },
                });
            }
        }
        Ok(PromptFile {
            prompt,
            negative,
            params,
        })
    }
}
