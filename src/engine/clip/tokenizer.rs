//! The CLIP BPE tokenizer, matching `open_clip.tokenize` (clean "lower", truncation with eot last).
//!
//! open_clip cleans text with `ftfy.fix_text` and `html.unescape` twice. We apply the ftfy fixes
//! that change ordinary text (curly quotes, ligatures, full-width forms, line breaks, control
//! characters) and the common HTML entities; mojibake repair and NFC are not reproduced.
use regex::Regex;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

pub const CONTEXT_LENGTH: usize = 77;
/// Changes when tokenization changes (it invalidates cached label embeddings).
pub const TOKENIZER_VERSION: &str = "clip-bpe-clean-1";
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
}

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
        })
    }

    fn bpe(&self, token: &str) -> Vec<String> {
        if SPECIALS.contains(&token) {
            return vec![token.to_string()];
        }
        let chars: Vec<char> = token.chars().collect();
        let Some((last, init)) = chars.split_last() else {
            return Vec::new();
        };
        let mut word: Vec<String> = init.iter().map(|c| c.to_string()).collect();
        word.push(format!("{last}</w>"));
        while word.len() > 1 {
            let best = word
                .windows(2)
                .filter_map(|p| {
                    self.ranks
                        .get(&(p[0].clone(), p[1].clone()))
                        .map(|&r| (r, p))
                })
                .min_by_key(|(r, _)| *r);
            let Some((_, pair)) = best else { break };
            let (first, second) = (pair[0].clone(), pair[1].clone());
            let mut merged = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == first && word[i + 1] == second {
                    merged.push(format!("{first}{second}"));
                    i += 2;
                } else {
                    merged.push(word[i].clone());
                    i += 1;
                }
            }
            word = merged;
        }
        word
    }

    /// BPE ids of `text` without sot/eot.
    pub fn encode(&self, text: &str) -> Vec<i64> {
        let text = clean(text);
        let mut ids = Vec::new();
        for m in self.pattern.find_iter(&text) {
            let token: String = m
                .as_str()
                .bytes()
                .map(|b| self.byte_encoder[b as usize])
                .collect();
            for piece in self.bpe(&token) {
                // Every byte and every merge is in the vocabulary by construction.
                if let Some(&id) = self.encoder.get(&piece) {
                    ids.push(id);
                }
            }
        }
        ids
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

/// Python's `str.isspace` (str.split's separators): Unicode White_Space plus \x1c-\x1f.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// open_clip's "lower" cleaning: ftfy (subset), html unescape twice, strip, collapse whitespace, lower.
pub fn clean(text: &str) -> String {
    let fixed = ftfy_subset(text);
    let unescaped = html_unescape(&html_unescape(&fixed));
    let collapsed: Vec<&str> = unescaped
        .split(is_py_space)
        .filter(|w| !w.is_empty())
        .collect();
    // Per character: Python's lower() has no final-sigma rule.
    collapsed
        .join(" ")
        .chars()
        .flat_map(char::to_lowercase)
        .collect()
}

fn ftfy_subset(text: &str) -> String {
    let text = text.replace("\r\n", "\n");
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let cp = c as u32;
        match c {
            '\u{0}'..='\u{8}' | '\u{b}' | '\u{e}'..='\u{1f}' | '\u{7f}' => {}
            '\u{206a}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffc}' => {}
            '\r' | '\u{2028}' | '\u{2029}' | '\u{85}' => out.push('\n'),
            '\u{2bc}' | '\u{2018}'..='\u{201b}' => out.push('\''),
            '\u{201c}'..='\u{201f}' => out.push('"'),
            '\u{3000}' => out.push(' '),
            // Full-width ASCII variants.
            '\u{ff01}'..='\u{ff5e}' => out.push(char::from_u32(cp - 0xfee0).unwrap_or(c)),
            'ﬀ' => out.push_str("ff"),
            'ﬁ' => out.push_str("fi"),
            'ﬂ' => out.push_str("fl"),
            'ﬃ' => out.push_str("ffi"),
            'ﬄ' => out.push_str("ffl"),
            'ﬅ' | 'ﬆ' => out.push_str("st"),
            'Ĳ' => out.push_str("IJ"),
            'ĳ' => out.push_str("ij"),
            _ => out.push(c),
        }
    }
    out
}

/// `html.unescape` for the numeric references and the common named entities.
fn html_unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    const NAMED: &[(&str, &str)] = &[
        ("amp", "&"),
        ("lt", "<"),
        ("gt", ">"),
        ("quot", "\""),
        ("apos", "'"),
        ("nbsp", "\u{a0}"),
        ("copy", "©"),
        ("reg", "®"),
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        let after = &rest[1..];
        if let Some(num) = after.strip_prefix('#') {
            let (digits, radix) = match num.strip_prefix(['x', 'X']) {
                Some(hex) => (hex, 16),
                None => (num, 10),
            };
            let len = digits
                .chars()
                .take_while(|c| c.is_digit(radix))
                .map(char::len_utf8)
                .sum::<usize>();
            let value = u32::from_str_radix(&digits[..len], radix).ok();
            if let (true, Some(v)) = (len > 0, value) {
                let c = char::from_u32(v)
                    .filter(|_| v != 0 && !(0xd800..=0xdfff).contains(&v))
                    .unwrap_or('\u{fffd}');
                out.push(c);
                let consumed = 1 + (num.len() - digits.len()) + len;
                let semi = after[consumed..].starts_with(';') as usize;
                rest = &after[consumed + semi..];
                continue;
            }
        } else if let Some((name, value)) = NAMED.iter().find(|(n, _)| after.starts_with(n)) {
            let semi = after[name.len()..].starts_with(';') as usize;
            out.push_str(value);
            rest = &after[name.len() + semi..];
            continue;
        }
        out.push('&');
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        assert_eq!(clean("  A\t\nB  "), "a b");
        assert_eq!(clean("&amp;amp; “Hi”"), "& \"hi\"");
        assert_eq!(clean("ﬁne ＡＢ"), "fine ab");
    }
}
