//! openai-whisper's tokenizer (`whisper/tokenizer.py`) on tiktoken-rs.
//!
//! The encoding is built exactly as openai's `get_encoding`: the byte-level BPE ranks from
//! `gpt2.tiktoken` or `multilingual.tiktoken`, the same split pattern, and the special tokens
//! appended after the ranks in openai's order. Token ids therefore match openai's one for one.
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use tiktoken_rs::CoreBPE;

/// openai's `LANGUAGES`, in its order: the order fixes the language token ids.
pub const LANGUAGES: &[(&str, &str)] = &[
    ("en", "english"),
    ("zh", "chinese"),
    ("de", "german"),
    ("es", "spanish"),
    ("ru", "russian"),
    ("ko", "korean"),
    ("fr", "french"),
    ("ja", "japanese"),
    ("pt", "portuguese"),
    ("tr", "turkish"),
    ("pl", "polish"),
    ("ca", "catalan"),
    ("nl", "dutch"),
    ("ar", "arabic"),
    ("sv", "swedish"),
    ("it", "italian"),
    ("id", "indonesian"),
    ("hi", "hindi"),
    ("fi", "finnish"),
    ("vi", "vietnamese"),
    ("he", "hebrew"),
    ("uk", "ukrainian"),
    ("el", "greek"),
    ("ms", "malay"),
    ("cs", "czech"),
    ("ro", "romanian"),
    ("da", "danish"),
    ("hu", "hungarian"),
    ("ta", "tamil"),
    ("no", "norwegian"),
    ("th", "thai"),
    ("ur", "urdu"),
    ("hr", "croatian"),
    ("bg", "bulgarian"),
    ("lt", "lithuanian"),
    ("la", "latin"),
    ("mi", "maori"),
    ("ml", "malayalam"),
    ("cy", "welsh"),
    ("sk", "slovak"),
    ("te", "telugu"),
    ("fa", "persian"),
    ("lv", "latvian"),
    ("bn", "bengali"),
    ("sr", "serbian"),
    ("az", "azerbaijani"),
    ("sl", "slovenian"),
    ("kn", "kannada"),
    ("et", "estonian"),
    ("mk", "macedonian"),
    ("br", "breton"),
    ("eu", "basque"),
    ("is", "icelandic"),
    ("hy", "armenian"),
    ("ne", "nepali"),
    ("mn", "mongolian"),
    ("bs", "bosnian"),
    ("kk", "kazakh"),
    ("sq", "albanian"),
    ("sw", "swahili"),
    ("gl", "galician"),
    ("mr", "marathi"),
    ("pa", "punjabi"),
    ("si", "sinhala"),
    ("km", "khmer"),
    ("sn", "shona"),
    ("yo", "yoruba"),
    ("so", "somali"),
    ("af", "afrikaans"),
    ("oc", "occitan"),
    ("ka", "georgian"),
    ("be", "belarusian"),
    ("tg", "tajik"),
    ("sd", "sindhi"),
    ("gu", "gujarati"),
    ("am", "amharic"),
    ("yi", "yiddish"),
    ("lo", "lao"),
    ("uz", "uzbek"),
    ("fo", "faroese"),
    ("ht", "haitian creole"),
    ("ps", "pashto"),
    ("tk", "turkmen"),
    ("nn", "nynorsk"),
    ("mt", "maltese"),
    ("sa", "sanskrit"),
    ("lb", "luxembourgish"),
    ("my", "myanmar"),
    ("bo", "tibetan"),
    ("tl", "tagalog"),
    ("mg", "malagasy"),
    ("as", "assamese"),
    ("tt", "tatar"),
    ("haw", "hawaiian"),
    ("ln", "lingala"),
    ("ha", "hausa"),
    ("ba", "bashkir"),
    ("jw", "javanese"),
    ("su", "sundanese"),
    ("yue", "cantonese"),
];

/// The aliases openai's `TO_LANGUAGE_CODE` adds to the names in [`LANGUAGES`].
pub const LANGUAGE_ALIASES: &[(&str, &str)] = &[
    ("burmese", "my"),
    ("valencian", "ca"),
    ("flemish", "nl"),
    ("haitian", "ht"),
    ("letzeburgesch", "lb"),
    ("pushto", "ps"),
    ("panjabi", "pa"),
    ("moldavian", "ro"),
    ("moldovan", "ro"),
    ("sinhalese", "si"),
    ("castilian", "es"),
    ("mandarin", "zh"),
];

/// openai's split pattern (`get_encoding`'s `pat_str`).
const PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Python's `base64.b64decode` accepts what strict decoders refuse: multilingual.tiktoken's
/// rank 50256 is a lone `=`, which decodes to the empty byte string.
const LENIENT_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Timestamp tokens `<|0.00|>` .. `<|30.00|>`, 20 ms apart.
pub const TIMESTAMP_TOKENS: u32 = 1501;

/// Languages written without spaces: words are split where the text decodes to whole
/// characters (openai's `split_to_word_tokens`).
const NO_SPACE_LANGUAGES: &[&str] = &["zh", "ja", "th", "lo", "my", "yue"];

/// Python's `string.punctuation`.
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// Normalises a language code or name (any case) to its code, as openai's `get_tokenizer`.
pub fn to_language_code(language: &str) -> Option<&'static str> {
    let lower = language.to_lowercase();
    let by_code = LANGUAGES.iter().find(|(code, _)| *code == lower);
    by_code
        .or_else(|| LANGUAGES.iter().find(|(_, name)| *name == lower))
        .map(|(code, _)| *code)
        .or_else(|| {
            LANGUAGE_ALIASES
                .iter()
                .find(|(alias, _)| *alias == lower)
                .map(|(_, code)| *code)
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Transcribe,
    Translate,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{}: cannot read the tokenizer ranks: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}:{line}: bad tokenizer rank line: {detail}", path.display())]
    BadLine {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    #[error("{}: bad tokenizer ranks: {detail}", path.display())]
    BadRanks { path: PathBuf, detail: String },
    #[error("unsupported language: {0}")]
    UnknownLanguage(String),
    #[error("language {code} is not one of this model's {num_languages} languages")]
    LanguageNotInModel { code: String, num_languages: usize },
}

/// openai-whisper's `Tokenizer`: the encoding plus its special token ids.
pub struct Tokenizer {
    bpe: CoreBPE,
    multilingual: bool,
    num_languages: usize,
    /// Number of ordinary (BPE) tokens; ids from here on are special.
    n_ranks: u32,
    n_vocab: u32,
    /// Every special token's text, indexed by `id - n_ranks`.
    special_text: Vec<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("multilingual", &self.multilingual)
            .field("num_languages", &self.num_languages)
            .field("n_vocab", &self.n_vocab)
            .finish()
    }
}

impl Tokenizer {
    /// Loads the ranks from `path`: a `.tiktoken` file, or a folder holding
    /// `multilingual.tiktoken` (when `multilingual`) or `gpt2.tiktoken`.
    pub fn load(
        path: &Path,
        multilingual: bool,
        num_languages: usize,
    ) -> Result<Tokenizer, TokenizerError> {
        let file = if path.is_dir() {
            path.join(if multilingual {
                "multilingual.tiktoken"
            } else {
                "gpt2.tiktoken"
            })
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(|source| TokenizerError::Io {
            path: file.clone(),
            source,
        })?;
        Self::from_ranks_text(&file, &text, multilingual, num_languages)
    }

    /// Builds the tokenizer from the text of a rank file; `path` only names it in errors.
    pub fn from_ranks_text(
        path: &Path,
        text: &str,
        multilingual: bool,
        num_languages: usize,
    ) -> Result<Tokenizer, TokenizerError> {
        let num_languages = num_languages.min(LANGUAGES.len());
        let bad_ranks = |detail: String| TokenizerError::BadRanks {
            path: path.to_path_buf(),
            detail,
        };
        let mut ranks: HashMap<Vec<u8>, u32> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let bad_line = |detail: String| TokenizerError::BadLine {
                path: path.to_path_buf(),
                line: i + 1,
                detail,
            };
            let mut parts = line.split_whitespace();
            let (Some(token), Some(rank), None) = (parts.next(), parts.next(), parts.next()) else {
                if line.trim().is_empty() {
                    continue;
                }
                return Err(bad_line("expected `base64-token rank`".to_string()));
            };
            let bytes = LENIENT_BASE64
                .decode(token.trim_end_matches('='))
                .map_err(|e| bad_line(format!("bad base64: {e}")))?;
            let rank: u32 = rank
                .parse()
                .map_err(|e| bad_line(format!("bad rank {rank:?}: {e}")))?;
            ranks.insert(bytes, rank);
        }
        let n_ranks =
            u32::try_from(ranks.len()).map_err(|_| bad_ranks("too many ranks".to_string()))?;
        // Specials are numbered from len(ranks) on, so the ranks must be exactly 0..len.
        let distinct: BTreeSet<u32> = ranks.values().copied().collect();
        if distinct.len() != ranks.len() || distinct.last().is_some_and(|&max| max >= n_ranks) {
            return Err(bad_ranks(format!(
                "ranks must be 0..{n_ranks} with no gaps or repeats"
            )));
        }

        let special_text = special_tokens(num_languages);
        let mut specials = HashMap::new();
        for (i, text) in special_text.iter().enumerate() {
            specials.insert(text.clone(), n_ranks + i as u32);
        }
        let n_vocab = n_ranks + special_text.len() as u32;
        let bpe = CoreBPE::new(
            ranks.into_iter().collect(),
            specials.into_iter().collect(),
            PATTERN,
        )
        .map_err(|e| bad_ranks(e.to_string()))?;
        Ok(Tokenizer {
            bpe,
            multilingual,
            num_languages,
            n_ranks,
            n_vocab,
            special_text,
        })
    }

    pub fn is_multilingual(&self) -> bool {
        self.multilingual
    }

    pub fn num_languages(&self) -> usize {
        self.num_languages
    }

    /// All token ids, ordinary and special.
    pub fn n_vocab(&self) -> u32 {
        self.n_vocab
    }

    /// Encodes text as ordinary tokens: special-token text such as `<|endoftext|>` is
    /// encoded as plain text (tiktoken's `encode_ordinary`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.bpe.encode_ordinary(text)
    }

    /// Decodes text tokens, dropping timestamp tokens (openai's `decode`). Other special
    /// tokens appear as their text, invalid UTF-8 as U+FFFD, unknown ids are skipped.
    pub fn decode(&self, tokens: &[u32]) -> String {
        let begin = self.timestamp_begin();
        let kept: Vec<u32> = tokens.iter().copied().filter(|&t| t < begin).collect();
        self.decode_with_timestamps(&kept)
    }

    /// Decodes all tokens, timestamps included as `<|1.08|>` (openai's `decode_with_timestamps`).
    pub fn decode_with_timestamps(&self, tokens: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode_bytes(tokens)).into_owned()
    }

    /// The raw bytes of the tokens (unknown ids skipped).
    pub fn decode_bytes(&self, tokens: &[u32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(tokens.len() * 4);
        for &t in tokens {
            if t < self.n_ranks {
                // Ranks are validated to be exactly 0..n_ranks, so every id here is known.
                if let Ok(bytes) = self.bpe.decode_bytes(&[t]) {
                    out.extend_from_slice(&bytes);
                }
            } else if let Some(text) = self.special_text.get((t - self.n_ranks) as usize) {
                out.extend_from_slice(text.as_bytes());
            }
        }
        out
    }

    /// The id of a special token's text, e.g. `<|en|>`.
    pub fn special_token(&self, text: &str) -> Option<u32> {
        self.special_text
            .iter()
            .position(|s| s == text)
            .map(|i| self.n_ranks + i as u32)
    }

    pub fn eot(&self) -> u32 {
        self.n_ranks
    }

    pub fn sot(&self) -> u32 {
        self.n_ranks + 1
    }

    /// The first language token; languages follow in [`LANGUAGES`] order.
    fn first_language(&self) -> u32 {
        self.sot() + 1
    }

    pub fn translate(&self) -> u32 {
        self.first_language() + self.num_languages as u32
    }

    pub fn transcribe(&self) -> u32 {
        self.translate() + 1
    }

    pub fn sot_lm(&self) -> u32 {
        self.translate() + 2
    }

    pub fn sot_prev(&self) -> u32 {
        self.translate() + 3
    }

    /// openai: `no_speech` (`<|nospeech|>`).
    pub fn no_speech(&self) -> u32 {
        self.translate() + 4
    }

    pub fn no_timestamps(&self) -> u32 {
        self.translate() + 5
    }

    /// `<|0.00|>`; timestamp `i` (i * 20 ms) is `timestamp_begin + i`.
    pub fn timestamp_begin(&self) -> u32 {
        self.translate() + 6
    }

    /// The token of a language code (`en`, `yue`...), if this model has it.
    pub fn language_token(&self, code: &str) -> Option<u32> {
        LANGUAGES[..self.num_languages]
            .iter()
            .position(|(c, _)| *c == code)
            .map(|i| self.first_language() + i as u32)
    }

    /// The language tokens of this model, in [`LANGUAGES`] order.
    pub fn all_language_tokens(&self) -> Vec<u32> {
        (0..self.num_languages as u32)
            .map(|i| self.first_language() + i)
            .collect()
    }

    /// The language codes of this model, in [`LANGUAGES`] order.
    pub fn all_language_codes(&self) -> Vec<&'static str> {
        LANGUAGES[..self.num_languages]
            .iter()
            .map(|(c, _)| *c)
            .collect()
    }

    /// The prompt start, as openai's `get_tokenizer(...).sot_sequence`: `[sot]` for
    /// English-only models; `[sot, language, task]` for multilingual ones, where the
    /// language (a code, name or alias, any case) defaults to English. An unknown language is
    /// an error for both, as in openai.
    pub fn sot_sequence(
        &self,
        language: Option<&str>,
        task: Task,
    ) -> Result<Vec<u32>, TokenizerError> {
        // openai validates the language even for English-only models, then ignores it.
        let code = match language {
            Some(l) => {
                to_language_code(l).ok_or_else(|| TokenizerError::UnknownLanguage(l.to_string()))?
            }
            None => "en",
        };
        if !self.multilingual {
            return Ok(vec![self.sot()]);
        }
        let lang = self
            .language_token(code)
            .ok_or_else(|| TokenizerError::LanguageNotInModel {
                code: code.to_string(),
                num_languages: self.num_languages,
            })?;
        let task = match task {
            Task::Transcribe => self.transcribe(),
            Task::Translate => self.translate(),
        };
        Ok(vec![self.sot(), lang, task])
    }

    /// Tokens to suppress so the model does not invent speaker tags or sound annotations
    /// (openai's `non_speech_tokens`), sorted.
    pub fn non_speech_tokens(&self) -> Vec<u32> {
        const SYMBOLS: &str = "\"#()*+/:;<=>@[\\]^_`{|}~「」『』";
        const MULTI: &str = "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪";
        // U+2640..U+267F symbols share their first two UTF-8 bytes, so suppressing the first
        // token of a multi-token encoding is safe.
        const MISCELLANEOUS: &str = "♩♪♫♬♭♮♯";

        let mut result = BTreeSet::new();
        // Allow "-" and "'" between words, not at the start of one.
        for s in [" -", " '"] {
            if let Some(&t) = self.encode(s).first() {
                result.insert(t);
            }
        }
        let symbols = SYMBOLS
            .chars()
            .map(String::from)
            .chain(MULTI.split_whitespace().map(String::from));
        let misc = MISCELLANEOUS.chars().map(String::from);
        for (symbol, is_misc) in symbols.map(|s| (s, false)).chain(misc.map(|s| (s, true))) {
            for tokens in [self.encode(&symbol), self.encode(&format!(" {symbol}"))] {
                if tokens.len() == 1 || is_misc {
                    if let Some(&t) = tokens.first() {
                        result.insert(t);
                    }
                }
            }
        }
        result.into_iter().collect()
    }

    /// Splits tokens into words, as openai's `split_to_word_tokens` for `language`: at
    /// character boundaries for languages written without spaces, else at spaces and
    /// punctuation.
    pub fn split_to_word_tokens(
        &self,
        tokens: &[u32],
        language: Option<&str>,
    ) -> (Vec<String>, Vec<Vec<u32>>) {
        if language.is_some_and(|l| NO_SPACE_LANGUAGES.contains(&l)) {
            self.split_tokens_on_unicode(tokens)
        } else {
            self.split_tokens_on_spaces(tokens)
        }
    }

    /// Splits wherever the tokens so far decode to whole characters.
    pub fn split_tokens_on_unicode(&self, tokens: &[u32]) -> (Vec<String>, Vec<Vec<u32>>) {
        const REPLACEMENT: char = '\u{FFFD}';
        let full: Vec<char> = self.decode_with_timestamps(tokens).chars().collect();
        let mut words = Vec::new();
        let mut word_tokens = Vec::new();
        let mut current = Vec::new();
        let mut offset = 0usize;
        for &token in tokens {
            current.push(token);
            let decoded = self.decode_with_timestamps(&current);
            // A U+FFFD that is in the full text too is real text, not a cut character.
            let complete = match decoded.chars().position(|c| c == REPLACEMENT) {
                None => true,
                Some(at) => full.get(offset + at) == Some(&REPLACEMENT),
            };
            if complete {
                offset += decoded.chars().count();
                words.push(decoded);
                word_tokens.push(std::mem::take(&mut current));
            }
        }
        (words, word_tokens)
    }

    /// Joins the character-level pieces into words that start with a space, a special
    /// token or punctuation.
    pub fn split_tokens_on_spaces(&self, tokens: &[u32]) -> (Vec<String>, Vec<Vec<u32>>) {
        let (subwords, subword_tokens) = self.split_tokens_on_unicode(tokens);
        let mut words: Vec<String> = Vec::new();
        let mut word_tokens: Vec<Vec<u32>> = Vec::new();
        for (subword, toks) in subwords.into_iter().zip(subword_tokens) {
            let special = toks.first().is_some_and(|&t| t >= self.eot());
            let with_space = subword.starts_with(' ');
            // Python's `s.strip() in string.punctuation` is a substring test.
            let punctuation = PUNCTUATION.contains(py_strip(&subword));
            match (words.last_mut(), word_tokens.last_mut()) {
                (Some(word), Some(wt)) if !(special || with_space || punctuation) => {
                    word.push_str(&subword);
                    wt.extend(toks);
                }
                _ => {
                    words.push(subword);
                    word_tokens.push(toks);
                }
            }
        }
        (words, word_tokens)
    }
}

/// The special tokens in openai's order, numbered after the ranks.
fn special_tokens(num_languages: usize) -> Vec<String> {
    let mut specials = vec![
        "<|endoftext|>".to_string(),
        "<|startoftranscript|>".to_string(),
    ];
    specials.extend(
        LANGUAGES[..num_languages]
            .iter()
            .map(|(code, _)| format!("<|{code}|>")),
    );
    specials.extend(
        [
            "<|translate|>",
            "<|transcribe|>",
            "<|startoflm|>",
            "<|startofprev|>",
            "<|nospeech|>",
            "<|notimestamps|>",
        ]
        .map(String::from),
    );
    // Python formats `i * 0.02` with `.2f`; the same double gives the same text.
    specials.extend((0..TIMESTAMP_TOKENS).map(|i| format!("<|{:.2}|>", f64::from(i) * 0.02)));
    specials
}

/// Python's `str.strip()`: whitespace as `str.isspace` defines it.
fn py_strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

/// Python's `str.isspace`: Unicode White_Space plus the separators U+001C..U+001F.
pub(crate) fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_codes_normalise_like_openai() {
        assert_eq!(to_language_code("EN"), Some("en"));
        assert_eq!(to_language_code("German"), Some("de"));
        assert_eq!(to_language_code("mandarin"), Some("zh"));
        assert_eq!(to_language_code("haitian creole"), Some("ht"));
        assert_eq!(to_language_code("klingon"), None);
        assert_eq!(LANGUAGES.len(), 100);
    }

    #[test]
    fn specials_follow_openai_order() {
        let s = special_tokens(99);
        assert_eq!(s.len(), 2 + 99 + 6 + 1501);
        assert_eq!(s[2], "<|en|>");
        assert_eq!(s[101], "<|translate|>");
        assert_eq!(s[107], "<|0.00|>");
        assert_eq!(s.last().map(String::as_str), Some("<|30.00|>"));
    }

    #[test]
    fn bad_rank_files_are_errors() {
        let p = Path::new("x.tiktoken");
        let err = Tokenizer::from_ranks_text(p, "YQ== 0\nYg== 0\n", false, 99).unwrap_err();
        assert!(err.to_string().contains("x.tiktoken"), "{err}");
        let err = Tokenizer::from_ranks_text(p, "YQ== 0\n!!! 1\n", false, 99).unwrap_err();
        assert!(err.to_string().contains("x.tiktoken:2"), "{err}");
        let err = Tokenizer::from_ranks_text(p, "YQ== 0\nYg== 5\n", false, 99).unwrap_err();
        assert!(err.to_string().contains("no gaps"), "{err}");
    }
}
