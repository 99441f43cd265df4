//! A1111 prompt syntax: `<lora:name:w>` extra networks, `(word:1.2)` / `(word)` / `[word]`
//! attention, `BREAK`, and the 75-token chunking with per-token weights of A1111's
//! `sd_hijack_clip.py` (`tokenize_line`, with its default comma backtrack of 20 tokens).
use crate::engine::clip::tokenizer::{ClipTokenizer, EOT, SOT};
use regex::Regex;
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

/// A1111's `parse_prompt_attention`: text runs and their weights; `BREAK` (outside any bracket)
/// is the entry `("BREAK", -1.0)`. A weight that is not a number (`(a:1.2.3)`, which makes
/// A1111 raise) is read as text.
pub fn parse_attention(text: &str) -> Vec<(String, f64)> {
    let mut res: Vec<(String, f64)> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();
    let round_mult = 1.1;
    let square_mult = 1.0 / 1.1;
    fn multiply(res: &mut [(String, f64)], start: usize, m: f64) {
        for r in res.iter_mut().skip(start) {
            r.1 *= m;
        }
    }
    for c in re_attention().captures_iter(text) {
        let token = c.get(0).map_or("", |m| m.as_str());
        let weight = c.get(1).and_then(|w| w.as_str().parse::<f64>().ok());
        if let Some(rest) = token.strip_prefix('\\') {
            res.push((rest.to_string(), 1.0));
        } else if token == "(" {
            round.push(res.len());
        } else if token == "[" {
            square.push(res.len());
        } else if let (Some(w), Some(start)) = (weight, round.last().copied()) {
            round.pop();
            multiply(&mut res, start, w);
        } else if token == ")" && !round.is_empty() {
            let start = round.pop().unwrap_or_default();
            multiply(&mut res, start, round_mult);
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
    if res.is_empty() {
        res.push((String::new(), 1.0));
    }
    // Merge runs of identical weights.
    let mut i = 0;
    while i + 1 < res.len() {
        if res[i].1 == res[i + 1].1 {
            let next = res.remove(i + 1);
            res[i].0.push_str(&next.0);
        } else {
            i += 1;
        }
    }
    res
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
