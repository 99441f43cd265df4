//! The CLIP BPE tokenizer, matching `open_clip.tokenize` (clean "lower", truncation with eot last).
//! The text cleaning (ftfy subset, HTML unescaping) is in `text_clean`.
use super::text_clean::clean;
use regex::Regex;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

pub const CONTEXT_LENGTH: usize = 77;
/// Changes when tokenization changes (it invalidates cached label embeddings).
pub const TOKENIZER_VERSION: &str = "clip-bpe-clean-2";
pub const SOT: i64 = 49406;
pub const EOT: i64 = 49407;
const SPECIALS: [&str; 2] = ["<start_of_text>", "<end_of_text>"];

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{path}: cannot read the CLIP BPE vocabulary: {message}")]
    Read { path: String, message: String },
}

pub struct ClipTokenizer {
    encoder: HashMap<String, i64>,
    ranks: HashMap<(String, String), usize>,
    byte_encoder: [char; 256],
    pattern: Regex,
    /// word → BPE pieces, at most `CACHE_WORDS` words of at most `CACHE_WORD_CHARS` chars (a
    /// full cache starts over), so hostile text cannot grow it without limit.
    cache: std::sync::Mutex<HashMap<String, Vec<String>>>,
}

const CACHE_WORDS: usize = 8192;
const CACHE_WORD_CHARS: usize = 64;

/// GPT-2's reversible byte -> printable char table.
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u32 {
        let printable =
            (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        let c = if printable {
            b
        } else {
            n += 1;
            255 + n
        };
        table[b as usize] = char::from_u32(c).unwrap_or('\0');
    }
    table
}

impl ClipTokenizer {
    /// Reads `bpe_simple_vocab_16e6.txt.gz`.
    pub fn load(path: &Path) -> Result<Self, TokenizerError> {
        let err = |message: String| TokenizerError::Read {
            path: path.display().to_string(),
            message,
        };
        let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
        let mut text = String::new();
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .map_err(|e| err(e.to_string()))?;
        Self::from_merges(&text).map_err(err)
    }

    pub fn from_merges(text: &str) -> Result<Self, String> {
        let lines: Vec<&str> = text.split('\n').collect();
        let end = 49152 - 256 - 2 + 1;
        if lines.len() < end {
            return Err(format!(
                "{} merge lines, expected at least {end}",
                lines.len()
            ));
        }
        let merges: Vec<(String, String)> = lines[1..end]
            .iter()
            .map(|l| {
                let mut parts = l.split_whitespace();
                match (parts.next(), parts.next()) {
                    (Some(a), Some(b)) => Ok((a.to_string(), b.to_string())),
                    _ => Err(format!("bad merge line '{l}'")),
                }
            })
            .collect::<Result<_, _>>()?;
        let byte_encoder = bytes_to_unicode();
        // open_clip's vocabulary lists the byte characters in dict order: the printable bytes
        // (mapped to themselves) first, then the remapped ones (code points 256 and up).
        let mut order: Vec<char> = byte_encoder.to_vec();
        order.sort_by_key(|&c| (c as u32 >= 256, c as u32));
        let mut vocab: Vec<String> = order.iter().map(|c| c.to_string()).collect();
        vocab.extend(order.iter().map(|c| format!("{c}</w>")));
        vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        vocab.extend(SPECIALS.iter().map(|s| s.to_string()));
        let encoder = vocab
            .into_iter()
            .enumerate()
            .map(|(i, v)| (v, i as i64))
            .collect();
        let ranks = merges
            .into_iter()
            .enumerate()
            .map(|(i, m)| (m, i))
            .collect();
        let pattern = Regex::new(
            r"(?i)<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
        )
        .map_err(|e| e.to_string())?;
        Ok(ClipTokenizer {
            encoder,
            ranks,
            byte_encoder,
            pattern,
            cache: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// [`Self::bpe_uncached`] through the bounded cache.
    fn bpe(&self, token: &str) -> Vec<String> {
        let cacheable = token.chars().count() <= CACHE_WORD_CHARS;
        if cacheable {
            if let Some(hit) = self.cache.lock().ok().and_then(|c| c.get(token).cloned()) {
                return hit;
            }
        }
        let pieces = self.bpe_uncached(token);
        if cacheable {
            if let Ok(mut cache) = self.cache.lock() {
                if cache.len() >= CACHE_WORDS {
                    cache.clear();
                }
                cache.insert(token.to_string(), pieces.clone());
            }
        }
        pieces
    }

    /// The number of words in the BPE cache (at most `CACHE_WORDS`).
    pub fn cached_words(&self) -> usize {
        self.cache.lock().map_or(0, |c| c.len())
    }

    fn bpe_uncached(&self, token: &str) -> Vec<String> {
        self.bpe_counted(token).0
    }

    /// openai's `bpe` (merge the lowest-ranked pair everywhere, then the next), with the work
    /// it took: the merges popped from a heap, so a word of n chars costs O(n log n), where
    /// openai's rescan of every pair after each merge is quadratic. The same pieces: every
    /// merge that contains a merged symbol was learnt after it, so a new pair never ranks
    /// below the pair just merged, and the heap's (rank, position) order visits the pairs
    /// in openai's order (lowest rank, then left to right without overlap).
    pub fn bpe_counted(&self, token: &str) -> (Vec<String>, usize) {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        if SPECIALS.contains(&token) {
            return (vec![token.to_string()], 0);
        }
        let chars: Vec<char> = token.chars().collect();
        let Some((last, init)) = chars.split_last() else {
            return (Vec::new(), 0);
        };
        let mut symbols: Vec<String> = init.iter().map(|c| c.to_string()).collect();
        symbols.push(format!("{last}</w>"));
        let n = symbols.len();
        // A doubly linked list over the symbols; `generation` changes when a symbol grows, so
        // heap entries for its old pairs are recognised as stale.
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut alive = vec![true; n];
        let mut generation = vec![0u32; n];
        let mut heap = BinaryHeap::with_capacity(n);
        let rank_of = |symbols: &[String], a: usize, b: usize| {
            self.ranks
                .get(&(symbols[a].clone(), symbols[b].clone()))
                .copied()
        };
        for i in 0..n.saturating_sub(1) {
            if let Some(r) = rank_of(&symbols, i, i + 1) {
                heap.push(Reverse((r, i, 0u32, 0u32)));
            }
        }
        let mut work = 0usize;
        while let Some(Reverse((_, left, gen_left, gen_right))) = heap.pop() {
            work += 1;
            let right = next[left];
            if !alive[left]
                || right >= n
                || generation[left] != gen_left
                || generation[right] != gen_right
            {
                continue;
            }
            let absorbed = std::mem::take(&mut symbols[right]);
            symbols[left].push_str(&absorbed);
            alive[right] = false;
            generation[left] += 1;
            next[left] = next[right];
            if next[left] < n {
                prev[next[left]] = left;
            }
            let before = prev[left];
            if before < n {
                if let Some(r) = rank_of(&symbols, before, left) {
                    heap.push(Reverse((r, before, generation[before], generation[left])));
                }
            }
            if next[left] < n {
                let after = next[left];
                if let Some(r) = rank_of(&symbols, left, after) {
                    heap.push(Reverse((r, left, generation[left], generation[after])));
                }
            }
        }
        let pieces = symbols
            .into_iter()
            .zip(alive)
            .filter_map(|(s, a)| a.then_some(s))
            .collect();
        (pieces, work)
    }

    /// BPE ids of `text` without sot/eot.
    pub fn encode(&self, text: &str) -> Vec<i64> {
        self.encode_counted(text, false).0
    }

    /// [`Self::encode`] with the BPE work it took (heap pops; `uncached` bypasses the cache,
    /// so the count covers every word). Linear in the text up to a log factor.
    pub fn encode_counted(&self, text: &str, uncached: bool) -> (Vec<i64>, usize) {
        let text = clean(text);
        let mut ids = Vec::new();
        let mut work = 0;
        for m in self.pattern.find_iter(&text) {
            let token: String = m
                .as_str()
                .bytes()
                .map(|b| self.byte_encoder[b as usize])
                .collect();
            let pieces = if uncached {
                let (pieces, w) = self.bpe_counted(&token);
                work += w;
                pieces
            } else {
                self.bpe(&token)
            };
            for piece in pieces {
                // Every byte and every merge is in the vocabulary by construction.
                if let Some(&id) = self.encoder.get(&piece) {
                    ids.push(id);
                }
            }
        }
        (ids, work)
    }

    /// `open_clip.tokenize(texts)`: [sot, ids…, eot] padded with 0 to 77, truncated with eot last.
    pub fn tokenize(&self, text: &str) -> [i64; CONTEXT_LENGTH] {
        let mut out = [0i64; CONTEXT_LENGTH];
        let mut tokens = vec![SOT];
        tokens.extend(self.encode(text));
        tokens.push(EOT);
        if tokens.len() > CONTEXT_LENGTH {
            tokens.truncate(CONTEXT_LENGTH);
            tokens[CONTEXT_LENGTH - 1] = EOT;
        }
        out[..tokens.len()].copy_from_slice(&tokens);
        out
    }
}
