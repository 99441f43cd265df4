//! AUTOMATIC1111's `parameters` infotext: the text A1111 stores in its PNGs and shows under an image.
//!
//! ```text
//! a photo of a cat, (fluffy:1.2)
//! Negative prompt: blurry
//! Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x768, Model hash: 6ce0161689, Model: v1-5
//! ```
//!
//! The writer follows A1111's `processing.create_infotext` (key order, `Negative prompt:` line
//! only when there is one) and `infotext_utils.quote`; the parser follows
//! `infotext_utils.parse_generation_parameters` (its `re_param` regex, line stripping, JSON
//! unquoting, a value that fails to unquote kept as is, an empty value dropped, a later duplicate
//! key replacing the earlier value in place). A1111's UI-side defaults (`Clip skip: 1`, `RNG: GPU`,
//! …) are not filled in: a missing key stays missing.
use regex::Regex;
use std::sync::OnceLock;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InfotextError {
    #[error("the infotext has no parameters line (A1111 needs at least 3 `key: value` pairs on the last line)")]
    NoParameters,
    #[error("the infotext has no `{0}` parameter")]
    Missing(&'static str),
    #[error("the infotext's `{key}` parameter is not valid: {value:?}")]
    Invalid { key: String, value: String },
    #[error("the infotext's `{key}: {value}` is out of range, the limit is {limit}")]
    OutOfRange {
        key: String,
        value: String,
        limit: &'static str,
    },
}

/// The largest width or height an infotext may ask for (as `[diffusion] width`/`height`).
pub const MAX_SIZE: u32 = 8192;
/// The most steps an infotext may ask for (as `[diffusion] steps` and `--steps`).
pub const MAX_STEPS: u32 = 1000;
/// The largest CFG scale (as `[diffusion] guidance`).
pub const MAX_CFG_SCALE: f64 = 100.0;

/// Numeric A1111 keys we keep in `extra`, bounded too: `(key, min, max, limit text)`.
const EXTRA_BOUNDS: [(&str, f64, f64, &str); 5] = [
    ("Batch size", 1.0, 64.0, "1 to 64"),
    ("Batch count", 1.0, 1000.0, "1 to 1000"),
    ("Clip skip", 1.0, 12.0, "1 to 12"),
    ("Hires steps", 0.0, 1000.0, "0 to 1000"),
    ("Hires upscale", 0.0, 8.0, "0 to 8"),
];

/// One image's generation parameters. `extra` holds every other A1111 key (unquoted values) in
/// the order read; `order` is the key order of a parsed infotext (empty: A1111's order), so
/// `parse(s)?.to_infotext()` gives back `s` for what A1111 writes (numbers are rewritten in
/// their shortest form: `CFG scale: 7.0` becomes `CFG scale: 7`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerationParams {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: u32,
    /// A1111 sampler name ("Euler a", "DPM++ 2M", …).
    pub sampler: String,
    /// A1111 ≥ 1.9 "Schedule type" ("Automatic", "Karras", …).
    pub schedule_type: Option<String>,
    pub cfg_scale: f64,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    pub model_hash: Option<String>,
    pub model: Option<String>,
    pub denoising_strength: Option<f64>,
    pub variation_seed: Option<u64>,
    pub variation_strength: Option<f64>,
    /// "CPU" when the noise comes from the CPU generator (A1111's `RNG: CPU`, ours always).
    pub rng: Option<String>,
    /// `Lora hashes: "name: hash, name2: hash2"`.
    pub lora_hashes: Vec<(String, String)>,
    /// "atelier x.y" for our images.
    pub version: Option<String>,
    pub extra: Vec<(String, String)>,
    pub order: Vec<String>,
}

/// The keys we type, in A1111's `create_infotext` order; `extra` keys go before `Version`.
const TYPED_KEYS: [&str; 14] = [
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Seed",
    "Size",
    "Model hash",
    "Model",
    "Variation seed",
    "Variation seed strength",
    "Denoising strength",
    "RNG",
    "Lora hashes",
    "Version",
];

/// A1111's `re_param` (infotext_utils.py), unchanged.
fn re_param() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r#"\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)"#)
            .unwrap_or_else(|e| unreachable!("constant regex: {e}"))
    })
}

/// Python's `str.isspace`.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// A1111's `quote`: JSON (non-ASCII kept) when the value holds `,`, a newline or `:`. We also
/// quote a value A1111 would misread unquoted: empty, starting with whitespace (the regex eats
/// it) or starting and ending with `"` (it would be JSON-decoded). A1111 parses both forms alike.
pub fn quote(value: &str) -> String {
    let needs = value.is_empty()
        || value.contains([',', '\n', ':'])
        || value.starts_with(is_py_space)
        || (value.len() >= 2 && value.starts_with('"') && value.ends_with('"'));
    if needs {
        serde_json::to_string(value).unwrap_or_else(|_| value.to_string())
    } else {
        value.to_string()
    }
}

/// A1111's `unquote`: a value in double quotes is JSON-decoded; one that fails stays as is.
fn unquote(value: &str) -> String {
    if value.starts_with('"') && value.ends_with('"') {
        if let Ok(s) = serde_json::from_str::<String>(value) {
            return s;
        }
    }
    value.to_string()
}

/// The `key: value` pairs of A1111's last line, unquoted, as `parse_generation_parameters` reads
/// them (before it splits `WxH` values into `-1`/`-2` keys): empty values dropped, a repeated key
/// replaces the earlier value in place.
pub fn parse_pairs(line: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for c in re_param().captures_iter(line) {
        let (k, v) = (&c[1], &c[2]);
        if v.is_empty() {
            continue; // A1111: `v[0]` raises, the pair is skipped
        }
        let v = unquote(v);
        match out.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v,
            None => out.push((k.to_string(), v)),
        }
    }
    out
}

/// A1111's split of an infotext into (prompt, negative prompt, parameters line).
pub fn split_infotext(text: &str) -> (String, String, String) {
    let trimmed = text.trim_matches(is_py_space);
    let mut lines: Vec<&str> = trimmed.split('\n').collect();
    let mut last = lines.pop().unwrap_or_default();
    if re_param().find_iter(last).count() < 3 {
        lines.push(last);
        last = "";
    }
    let (mut prompt, mut negative) = (String::new(), String::new());
    let mut done_with_prompt = false;
    for line in lines {
        let mut line = line.trim_matches(is_py_space);
        if let Some(rest) = line.strip_prefix("Negative prompt:") {
            done_with_prompt = true;
            line = rest.trim_matches(is_py_space);
        }
        let target = if done_with_prompt {
            &mut negative
        } else {
            &mut prompt
        };
        if !target.is_empty() {
            target.push('\n');
        }
        target.push_str(line);
    }
    (prompt, negative, last.to_string())
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, InfotextError> {
    value.trim().parse().map_err(|_| InfotextError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
    })
}

/// A number in `range` (NaN is in none), else `OutOfRange` naming `limit`.
fn bounded<T>(
    key: &str,
    value: &str,
    range: std::ops::RangeInclusive<T>,
    limit: &'static str,
) -> Result<T, InfotextError>
where
    T: std::str::FromStr + PartialOrd,
{
    let n: T = number(key, value)?;
    if range.contains(&n) {
        Ok(n)
    } else {
        Err(InfotextError::OutOfRange {
            key: key.to_string(),
            value: value.to_string(),
            limit,
        })
    }
}

/// `WxH`, each side 1 to [`MAX_SIZE`].
fn size(key: &str, value: &str) -> Result<(u32, u32), InfotextError> {
    let invalid = || InfotextError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
    };
    let (w, h) = value.split_once('x').ok_or_else(invalid)?;
    // Digits only, so a 40-digit side is out of range rather than "not a number".
    let side = |s: &str| -> Result<u64, InfotextError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        Ok(s.parse::<u64>().unwrap_or(u64::MAX))
    };
    let (w, h) = (side(w)?, side(h)?);
    let ok = |n: u64| (1..=u64::from(MAX_SIZE)).contains(&n);
    if ok(w) && ok(h) {
        Ok((w as u32, h as u32))
    } else {
        Err(InfotextError::OutOfRange {
            key: key.to_string(),
            value: value.to_string(),
            limit: "1 to 8192 pixels a side",
        })
    }
}

/// `Lora hashes` as A1111's Lora extension reads it: `name: hash` items separated by commas.
fn parse_lora_hashes(value: &str) -> Result<Vec<(String, String)>, InfotextError> {
    value
        .split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| match item.split_once(':') {
            Some((name, hash)) => Ok((name.trim().to_string(), hash.trim().to_string())),
            None => Err(InfotextError::Invalid {
                key: "Lora hashes".into(),
                value: value.to_string(),
            }),
        })
        .collect()
}

impl GenerationParams {
    /// A1111's parse. Steps, Sampler, CFG scale, Seed and Size are required (A1111 always
    /// writes them); typed keys must hold valid values, and numbers that size work (Steps,
    /// Size, CFG scale, strengths, [`EXTRA_BOUNDS`]) must be in range: `Steps: 10000000` is
    /// refused here, before anything is allocated for it. A missing key is reported before a
    /// bad value, so text that is not an infotext reads as `Missing`/`NoParameters`.
    pub fn parse(infotext: &str) -> Result<GenerationParams, InfotextError> {
        let (prompt, negative_prompt, last) = split_infotext(infotext);
        if last.is_empty() {
            return Err(InfotextError::NoParameters);
        }
        let mut p = GenerationParams {
            prompt,
            negative_prompt,
            ..Default::default()
        };
        let pairs = parse_pairs(&last);
        for key in ["Steps", "Sampler", "CFG scale", "Seed", "Size"] {
            if !pairs.iter().any(|(k, _)| k == key) {
                return Err(InfotextError::Missing(key));
            }
        }
        let (mut steps, mut sampler, mut cfg, mut seed, mut size) = (None, None, None, None, None);
        for (k, v) in pairs {
            match k.as_str() {
                "Steps" => {
                    let range = 1..=u64::from(MAX_STEPS);
                    steps = Some(bounded::<u64>(&k, &v, range, "1 to 1000")? as u32)
                }
                "Sampler" => sampler = Some(v),
                "Schedule type" => p.schedule_type = Some(v),
                "CFG scale" => cfg = Some(bounded(&k, &v, 0.0..=MAX_CFG_SCALE, "0 to 100")?),
                "Seed" => seed = Some(number::<u64>(&k, &v)?),
                "Size" => size = Some(self::size(&k, &v)?),
                "Model hash" => p.model_hash = Some(v),
                "Model" => p.model = Some(v),
                "Variation seed" => p.variation_seed = Some(number(&k, &v)?),
                "Variation seed strength" => {
                    p.variation_strength = Some(bounded(&k, &v, 0.0..=1.0, "0 to 1")?)
                }
                "Denoising strength" => {
                    p.denoising_strength = Some(bounded(&k, &v, 0.0..=1.0, "0 to 1")?)
                }
                "RNG" => p.rng = Some(v),
                "Lora hashes" => p.lora_hashes = parse_lora_hashes(&v)?,
                "Version" => p.version = Some(v),
                _ => {
                    if let Some((_, min, max, limit)) =
                        EXTRA_BOUNDS.iter().find(|(key, ..)| *key == k)
                    {
                        bounded::<f64>(&k, &v, *min..=*max, limit)?;
                    }
                    p.extra.push((k.clone(), v))
                }
            }
            p.order.push(k);
        }
        p.steps = steps.ok_or(InfotextError::Missing("Steps"))?;
        p.sampler = sampler.ok_or(InfotextError::Missing("Sampler"))?;
        p.cfg_scale = cfg.ok_or(InfotextError::Missing("CFG scale"))?;
        p.seed = seed.ok_or(InfotextError::Missing("Seed"))?;
        (p.width, p.height) = size.ok_or(InfotextError::Missing("Size"))?;
        Ok(p)
    }

    fn typed_value(&self, key: &str) -> Option<String> {
        let opt = |v: &Option<String>| v.clone();
        match key {
            "Steps" => Some(self.steps.to_string()),
            "Sampler" => Some(self.sampler.clone()),
            "Schedule type" => opt(&self.schedule_type),
            "CFG scale" => Some(self.cfg_scale.to_string()),
            "Seed" => Some(self.seed.to_string()),
            "Size" => Some(format!("{}x{}", self.width, self.height)),
            "Model hash" => opt(&self.model_hash),
            "Model" => opt(&self.model),
            "Variation seed" => self.variation_seed.map(|s| s.to_string()),
            "Variation seed strength" => self.variation_strength.map(|s| s.to_string()),
            "Denoising strength" => self.denoising_strength.map(|s| s.to_string()),
            "RNG" => opt(&self.rng),
            "Lora hashes" if !self.lora_hashes.is_empty() => Some(
                self.lora_hashes
                    .iter()
                    .map(|(name, hash)| {
                        // A1111 strips these from the alias so the list stays parseable.
                        let name: String =
                            name.chars().filter(|c| !matches!(c, ':' | ',')).collect();
                        format!("{name}: {hash}")
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            "Version" => opt(&self.version),
            _ => None,
        }
    }

    /// The `key: value` pairs of the parameters line, unquoted, in the order written.
    pub fn pairs(&self) -> Vec<(String, String)> {
        let value = |key: &str| -> Option<String> {
            if TYPED_KEYS.contains(&key) {
                self.typed_value(key)
            } else {
                self.extra
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
            }
        };
        let mut keys: Vec<&str> = self.order.iter().map(String::as_str).collect();
        let (before_version, version) = TYPED_KEYS.split_at(TYPED_KEYS.len() - 1);
        keys.extend(before_version);
        keys.extend(self.extra.iter().map(|(k, _)| k.as_str()));
        keys.extend(version);
        let mut out: Vec<(String, String)> = Vec::new();
        for key in keys {
            if out.iter().any(|(k, _)| k == key) {
                continue;
            }
            if let Some(v) = value(key) {
                out.push((key.to_string(), v));
            }
        }
        out
    }

    /// The infotext as A1111's `create_infotext` writes it.
    pub fn to_infotext(&self) -> String {
        let line = self
            .pairs()
            .iter()
            .map(|(k, v)| format!("{k}: {}", quote(v)))
            .collect::<Vec<_>>()
            .join(", ");
        let negative = if self.negative_prompt.is_empty() {
            String::new()
        } else {
            format!("\nNegative prompt: {}", self.negative_prompt)
        };
        format!("{}{negative}\n{line}", self.prompt)
            .trim_matches(is_py_space)
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_matches_a1111_rule() {
        assert_eq!(quote("Euler a"), "Euler a");
        assert_eq!(quote("a, b"), "\"a, b\"");
        assert_eq!(quote("x: \"y\""), "\"x: \\\"y\\\"\"");
        assert_eq!(quote("é: ü"), "\"é: ü\"");
    }

    #[test]
    fn missing_keys_are_errors() {
        assert_eq!(
            GenerationParams::parse("a cat\nSteps: 20, Sampler: Euler, Seed: 1, Size: 8x8"),
            Err(InfotextError::Missing("CFG scale"))
        );
        assert_eq!(
            GenerationParams::parse("just a prompt"),
            Err(InfotextError::NoParameters)
        );
    }
}
