//! Zero-shot classification: label sets (config/labels/*.toml), prompt templates (one table,
//! config/labels/templates.toml), template ensembling and softmax scores.
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const PRESET_TEMPLATES: &str = include_str!("../../../config/labels/templates.toml");
pub const PRESET_LABEL_SETS: &[(&str, &str)] = &[
    (
        "general",
        include_str!("../../../config/labels/general.toml"),
    ),
    ("scene", include_str!("../../../config/labels/scene.toml")),
    ("style", include_str!("../../../config/labels/style.toml")),
    (
        "moderation",
        include_str!("../../../config/labels/moderation.toml"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("unknown label set '{name}' (known: {known}; or add {dir}/{name}.toml)")]
    Unknown {
        name: String,
        known: String,
        dir: String,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    pub name: String,
    /// Text put into the templates instead of the name.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Several prompts, ensembled with the templates.
    #[serde(default)]
    pub prompts: Vec<String>,
    /// A safety category: flagged at or above this score.
    #[serde(default)]
    pub threshold: Option<f64>,
}

impl Label {
    pub fn plain(name: &str) -> Self {
        Label {
            name: name.to_string(),
            prompt: None,
            prompts: Vec::new(),
            threshold: None,
        }
    }

    fn texts(&self) -> Vec<&str> {
        let mut t: Vec<&str> = self.prompts.iter().map(String::as_str).collect();
        if let Some(p) = &self.prompt {
            t.push(p);
        }
        if t.is_empty() {
            t.push(&self.name);
        }
        t
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum TemplateRef {
    Named(String),
    List(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSetFile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub templates: TemplateRef,
    pub labels: Vec<Label>,
}

/// A label set with its templates resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelSet {
    pub name: String,
    pub labels: Vec<Label>,
    pub templates: Vec<String>,
}

impl LabelSet {
    /// The prompts of every label: label i owns `prompts[i]`.
    pub fn prompts(&self) -> Vec<Vec<String>> {
        self.labels
            .iter()
            .map(|l| {
                l.texts()
                    .iter()
                    .flat_map(|t| self.templates.iter().map(move |tpl| tpl.replace("{}", t)))
                    .collect()
            })
            .collect()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplatesFile {
    templates: BTreeMap<String, Vec<String>>,
}

/// The template table: presets, with the user's `labels/templates.toml` merged over them.
pub fn templates(user_dir: Option<&Path>) -> Result<BTreeMap<String, Vec<String>>, LabelError> {
    let parse = |path: &str, text: &str| -> Result<BTreeMap<String, Vec<String>>, LabelError> {
        toml::from_str::<TemplatesFile>(text)
            .map(|t| t.templates)
            .map_err(|e| LabelError::Invalid {
                path: path.to_string(),
                message: e.to_string().trim_end().to_string(),
            })
    };
    let mut table = parse("<preset labels/templates.toml>", PRESET_TEMPLATES)?;
    if let Some(path) = user_dir.map(|d| d.join("templates.toml")) {
        if let Ok(text) = std::fs::read_to_string(&path) {
            table.extend(parse(&path.display().to_string(), &text)?);
        }
    }
    Ok(table)
}

pub fn parse_label_set(
    path: &str,
    text: &str,
    table: &BTreeMap<String, Vec<String>>,
) -> Result<LabelSet, LabelError> {
    let invalid = |message: String| LabelError::Invalid {
        path: path.to_string(),
        message,
    };
    let file: LabelSetFile =
        toml::from_str(text).map_err(|e| invalid(e.to_string().trim_end().to_string()))?;
    let templates = match file.templates {
        TemplateRef::Named(n) => table.get(&n).cloned().ok_or_else(|| {
            invalid(format!(
                "templates: unknown template set '{n}' (known: {})",
                table.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?,
        TemplateRef::List(l) => l,
    };
    if templates.is_empty() || templates.iter().any(|t| !t.contains("{}")) {
        return Err(invalid("templates: each template must contain {}".into()));
    }
    if file.labels.is_empty() {
        return Err(invalid("labels: the set is empty".into()));
    }
    for l in &file.labels {
        if let Some(t) = l.threshold.filter(|t| !(0.0..=1.0).contains(t)) {
            return Err(invalid(format!(
                "label '{}': threshold {t} is not in [0, 1]",
                l.name
            )));
        }
    }
    Ok(LabelSet {
        name: file.name,
        labels: file.labels,
        templates,
    })
}

/// The user's label folder: `~/.config/atelier/labels`.
pub fn user_dir() -> Option<PathBuf> {
    crate::config::config_dir().map(|d| d.join("labels"))
}

/// Finds a label set: a path to a .toml file, the user's labels/NAME.toml, or a preset.
pub fn load_label_set(name: &str, user: Option<&Path>) -> Result<LabelSet, LabelError> {
    let table = templates(user)?;
    let as_path = Path::new(name);
    let candidates = [
        (name.ends_with(".toml")).then(|| as_path.to_path_buf()),
        user.map(|d| d.join(format!("{name}.toml"))),
    ];
    for path in candidates.into_iter().flatten() {
        if path.is_file() {
            let text = std::fs::read_to_string(&path).map_err(|e| LabelError::Invalid {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            return parse_label_set(&path.display().to_string(), &text, &table);
        }
    }
    match PRESET_LABEL_SETS.iter().find(|(n, _)| *n == name) {
        Some((n, text)) => parse_label_set(&format!("<preset labels/{n}.toml>"), text, &table),
        None => Err(LabelError::Unknown {
            name: name.to_string(),
            known: PRESET_LABEL_SETS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", "),
            dir: user.map_or("~/.config/atelier/labels".into(), |d| {
                d.display().to_string()
            }),
        }),
    }
}

/// Ad-hoc labels from `--label TEXT…`, with the given template set.
pub fn ad_hoc(labels: &[String], templates: Vec<String>) -> LabelSet {
    LabelSet {
        name: "custom".into(),
        labels: labels.iter().map(|l| Label::plain(l)).collect(),
        templates,
    }
}

pub fn l2_normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|x| (*x as f64).powi(2))
        .sum::<f64>()
        .sqrt()
        .max(1e-12);
    for x in v {
        *x = (*x as f64 / norm) as f32;
    }
}

/// Ensembling: normalize each prompt embedding, average, renormalize.
pub fn ensemble(prompt_embeddings: &[Vec<f32>]) -> Vec<f32> {
    let dim = prompt_embeddings.first().map_or(0, Vec::len);
    let mut mean = vec![0f64; dim];
    for e in prompt_embeddings {
        let mut e = e.clone();
        l2_normalize(&mut e);
        for (m, x) in mean.iter_mut().zip(&e) {
            *m += *x as f64;
        }
    }
    let mut out: Vec<f32> = mean
        .iter()
        .map(|m| (m / prompt_embeddings.len().max(1) as f64) as f32)
        .collect();
    l2_normalize(&mut out);
    out
}

/// `softmax(logit_scale * cos)` of one normalized image embedding against the label embeddings.
pub fn scores(image: &[f32], labels: &[Vec<f32>], logit_scale: f64) -> Vec<f64> {
    let logits: Vec<f64> = labels
        .iter()
        .map(|l| {
            logit_scale
                * l.iter()
                    .zip(image)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
        })
        .collect();
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

/// Indices of the `k` best scores at or above `threshold`, best first.
pub fn top_k(scores: &[f64], k: usize, threshold: f64) -> Vec<(usize, f64)> {
    let mut idx: Vec<(usize, f64)> = scores
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, s)| *s >= threshold)
        .collect();
    idx.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    idx.truncate(k);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse() {
        let table = templates(None).unwrap();
        assert_eq!(table["imagenet-80"].len(), 80);
        assert_eq!(table["imagenet-7"].len(), 7);
        for (name, _) in PRESET_LABEL_SETS {
            let set = load_label_set(name, None).unwrap();
            assert!(!set.labels.is_empty());
        }
        let m = load_label_set("moderation", None).unwrap();
        assert!(m.labels.iter().any(|l| l.threshold.is_some()));
    }

    #[test]
    fn softmax_and_top_k() {
        let s = scores(&[1.0, 0.0], &[vec![1.0, 0.0], vec![0.0, 1.0]], 10.0);
        assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(top_k(&s, 1, 0.0)[0].0, 0);
        assert!(top_k(&s, 5, 0.999_999).is_empty());
    }
}
