//! open_clip's text cleaning before BPE ("lower"): `ftfy.fix_text`, `html.unescape` twice,
//! whitespace collapsed, lower case.
//!
//! No Rust crate does what ftfy does, so this is the subset that matters for prompts and
//! captions, in ftfy's order and repeated until nothing changes, per line:
//! HTML entities (only with a `;`, and not once a line holds a `<`), mojibake (UTF-8 read as
//! Windows-1252 or Latin-1, see [`fix_mojibake`]), C1 controls read as Windows-1252, Latin
//! ligatures, full- and half-width forms, curly quotes, line breaks, terminal escapes, control
//! characters, NFC. `html.unescape` is htmlize's WHATWG unescape. Not reproduced: ftfy's
//! badness score (we use the narrower rule in [`fix_mojibake`]), other source encodings
//! (MacRoman, cp437, Latin-2, …), a lost no-break space restored from a plain one, and
//! `html.unescape` dropping numeric references to invalid code points (`&#1;`).
use std::sync::OnceLock;
use unicode_normalization::UnicodeNormalization;

/// Windows-1252 as browsers decode it (every byte maps; 0x81, 0x8D, … to C1 controls): the
/// "sloppy-windows-1252" ftfy uses.
fn cp1252() -> &'static [char; 256] {
    static TABLE: OnceLock<[char; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = ['\0'; 256];
        for (b, slot) in t.iter_mut().enumerate() {
            let byte = [b as u8];
            let (s, _) = encoding_rs::WINDOWS_1252.decode_without_bom_handling(&byte);
            *slot = s.chars().next().unwrap_or('\u{fffd}');
        }
        t
    })
}

/// The byte a character was when UTF-8 was misread as Windows-1252 or Latin-1 (non-ASCII only).
fn cp1252_byte(c: char) -> Option<u8> {
    match c {
        '\u{80}'..='\u{ff}' => u8::try_from(c as u32).ok(),
        _ if c.is_ascii() => None,
        _ => cp1252()
            .iter()
            .position(|&x| x == c)
            .and_then(|b| u8::try_from(b).ok()),
    }
}

/// Python's `str.isspace` (str.split's separators): Unicode White_Space plus \x1c-\x1f.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// open_clip's `_clean_lower`.
pub fn clean(text: &str) -> String {
    let fixed = fix_text(text);
    let unescaped = htmlize::unescape(htmlize::unescape(&fixed).as_ref()).into_owned();
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

/// `ftfy.fix_text` (the subset above), line by line as ftfy does.
pub fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut unescape = true;
    for line in text.split_inclusive('\n') {
        if line.contains('<') {
            unescape = false;
        }
        out.push_str(&fix_segment(line, unescape));
    }
    out
}

fn fix_segment(text: &str, unescape: bool) -> String {
    let mut text = text.to_string();
    // ftfy loops until a pass changes nothing; a bound keeps a pathological input cheap.
    for _ in 0..16 {
        let before = text.clone();
        if unescape {
            text = unescape_entities(&text);
        }
        text = fix_mojibake(&text);
        text = text
            .chars()
            .map(|c| match c {
                '\u{80}'..='\u{9f}' => cp1252()[c as usize],
                _ => c,
            })
            .collect();
        text = text.chars().fold(String::new(), |mut s, c| {
            match ligature(c) {
                Some(l) => s.push_str(l),
                None => s.push(c),
            }
            s
        });
        text = text.chars().fold(String::new(), |mut s, c| {
            match c {
                '\u{3000}' => s.push(' '),
                '\u{ff01}'..='\u{ffef}' => s.extend(std::iter::once(c).nfkc()),
                _ => s.push(c),
            }
            s
        });
        text = text
            .chars()
            .map(|c| match c {
                '\u{2bc}' | '\u{2018}'..='\u{201b}' => '\'',
                '\u{201c}'..='\u{201f}' => '"',
                _ => c,
            })
            .collect();
        text = text
            .replace("\r\n", "\n")
            .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n");
        text = remove_terminal_escapes(&text);
        text.retain(|c| {
            !matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{e}'..='\u{1f}' | '\u{7f}'
                | '\u{206a}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffc}')
        });
        text = text.nfc().collect();
        if text == before {
            break;
        }
    }
    text
}

fn ligature(c: char) -> Option<&'static str> {
    Some(match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "ʼn",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "DŽ",
        'ǅ' => "Dž",
        'ǆ' => "dž",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "ſt",
        'ﬆ' => "st",
        _ => return None,
    })
}

/// ftfy's `remove_terminal_escapes`: `ESC [ digits-and-semicolons letter`.
fn remove_terminal_escapes(text: &str) -> String {
    static RE: OnceLock<Option<regex::Regex>> = OnceLock::new();
    match RE
        .get_or_init(|| regex::Regex::new(r"\x1b\[[0-9;]*[a-zA-Z]").ok())
        .as_ref()
    {
        Some(re) => re.replace_all(text, "").into_owned(),
        None => text.to_string(),
    }
}

/// ftfy's `unescape_html`: `&#?[0-9A-Za-z]{1,24};` that names an HTML5 entity (or an
/// all-caps one of a lower-case entity, `&EACUTE;` → `É`) or a numeric reference.
fn unescape_entities(text: &str) -> String {
    static RE: OnceLock<Option<regex::Regex>> = OnceLock::new();
    let Some(re) = RE
        .get_or_init(|| regex::Regex::new(r"&#?[0-9A-Za-z]{1,24};").ok())
        .as_ref()
    else {
        return text.to_string();
    };
    re.replace_all(text, |caps: &regex::Captures| {
        let m = &caps[0];
        if let Some(v) = htmlize::ENTITIES.get(m.as_bytes()) {
            return String::from_utf8_lossy(v).into_owned();
        }
        if m.starts_with("&#") {
            let u = htmlize::unescape(m);
            return if u.contains(';') {
                m.to_string()
            } else {
                u.into_owned()
            };
        }
        let name = &m[1..m.len() - 1];
        let upper = name.chars().any(|c| c.is_ascii_uppercase())
            && !name.chars().any(|c| c.is_ascii_lowercase());
        let lower = format!("&{};", name.to_ascii_lowercase());
        match htmlize::ENTITIES.get(lower.as_bytes()) {
            Some(v) if upper && htmlize::unescape(m) == m => String::from_utf8_lossy(v)
                .chars()
                .flat_map(char::to_uppercase)
                .collect(),
            _ => m.to_string(),
        }
    })
    .into_owned()
}

/// Lead characters of 2-byte mojibake that ordinary text does not put before a Latin-1 symbol:
/// Â Ã (Latin), Î Ï (Greek), × (Hebrew), Ð Ñ (Cyrillic), Ø Ù (Arabic).
const MOJIBAKE_LEADS: &[char] = &['Â', 'Ã', 'Î', 'Ï', '×', 'Ð', 'Ñ', 'Ø', 'Ù'];

/// UTF-8 that was decoded as Windows-1252 (or Latin-1), as in `cafÃ©` or `donâ€™t`. A group of
/// 2–4 non-ASCII characters that encodes to one valid UTF-8 sequence looks bad when it is 3–4
/// bytes long, holds a Windows-1252 punctuation byte (0x80–0x9F), or starts with one of
/// [`MOJIBAKE_LEADS`]. As ftfy does, a segment with a bad group that re-decodes as UTF-8 as a
/// whole is decoded whole; otherwise only the bad groups are. Ordinary accented text
/// (`naïve`, `É»` alone) is left alone.
pub fn fix_mojibake(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    if !(0..chars.len()).any(|i| mojibake_at(&chars[i..]).is_some()) {
        return text.to_string();
    }
    let whole: Option<Vec<u8>> = chars
        .iter()
        .map(|&c| {
            if c.is_ascii() {
                u8::try_from(c as u32).ok()
            } else {
                cp1252_byte(c)
            }
        })
        .collect();
    if let Some(s) = whole.and_then(|b| String::from_utf8(b).ok()) {
        return s;
    }
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if let Some((c, used)) = mojibake_at(&chars[i..]) {
            out.push(c);
            i += used;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

fn mojibake_at(chars: &[char]) -> Option<(char, usize)> {
    let lead = cp1252_byte(*chars.first()?)?;
    let len = match lead {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return None,
    };
    let bytes: Vec<u8> = chars
        .get(..len)?
        .iter()
        .map(|&c| cp1252_byte(c))
        .collect::<Option<_>>()?;
    let decoded = std::str::from_utf8(&bytes).ok()?.chars().next()?;
    let bad = len >= 3
        || bytes[1..].iter().any(|b| (0x80..=0x9f).contains(b))
        || MOJIBAKE_LEADS.contains(&chars[0]);
    bad.then_some((decoded, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        assert_eq!(clean("  A\t\nB  "), "a b");
        assert_eq!(clean("&amp;amp; “Hi”"), "& \"hi\"");
        assert_eq!(clean("ﬁne ＡＢ"), "fine ab");
        assert_eq!(
            fix_mojibake("cafÃ© donâ€™t naïve É»"),
            "café don’t naïve É»"
        );
        assert_eq!(fix_mojibake("É» Ë†"), "ɻ ˆ");
    }
}
