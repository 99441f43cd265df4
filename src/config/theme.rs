use super::{merge_toml, ConfigError};
use ratatui::style::{Color, Modifier, Style};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Themes shipped in the binary: (name, toml).
pub const THEME_PRESETS: &[(&str, &str)] = &[
    ("dark", include_str!("../../themes/dark.toml")),
    ("light", include_str!("../../themes/light.toml")),
    (
        "high-contrast",
        include_str!("../../themes/high-contrast.toml"),
    ),
];

/// Semantic styles by name. `get("border.focused")` falls back to "border", then "text".
#[derive(Debug, Clone, Default)]
pub struct Theme {
    pub name: String,
    styles: HashMap<String, Style>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct StyleSpec {
    fg: Option<String>,
    bg: Option<String>,
    #[serde(default)]
    modifiers: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    #[serde(default)]
    palette: HashMap<String, String>,
    #[serde(default)]
    styles: HashMap<String, StyleSpec>,
}

const MAX_INHERIT_DEPTH: usize = 16;

impl Theme {
    pub fn get(&self, name: &str) -> Style {
        let mut key = name;
        loop {
            if let Some(style) = self.styles.get(key) {
                return *style;
            }
            match key.rfind('.') {
                Some(i) => key = &key[..i],
                None => return self.styles.get("text").copied().unwrap_or_default(),
            }
        }
    }

    pub fn preset_default() -> Self {
        Self::load("dark", None).unwrap_or_default()
    }

    /// Names of every theme available: presets plus the user's folder.
    pub fn available(user_dir: Option<&Path>) -> Vec<String> {
        let mut names: Vec<String> = THEME_PRESETS.iter().map(|(n, _)| n.to_string()).collect();
        if let Some(Ok(entries)) = user_dir.map(std::fs::read_dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().and_then(|e| e.to_str()) == Some("toml") {
                    if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                        if !names.iter().any(|n| n == stem) {
                            names.push(stem.to_string());
                        }
                    }
                }
            }
        }
        names
    }

    /// Loads a theme by name: the user's folder first, then the presets; follows `inherits`.
    pub fn load(name: &str, user_dir: Option<&Path>) -> Result<Self, ConfigError> {
        let mut chain: Vec<(PathBuf, toml::Table)> = Vec::new();
        let mut next = Some(name.to_string());
        while let Some(current) = next.take() {
            if chain.len() >= MAX_INHERIT_DEPTH {
                let path = chain.last().map(|(p, _)| p.clone()).unwrap_or_default();
                return Err(ConfigError::invalid(
                    &path,
                    format!("theme '{name}': `inherits` chain is too deep or loops"),
                ));
            }
            let (path, text) = find_theme(&current, user_dir, chain.last().map(|(p, _)| p))?;
            if chain.iter().any(|(p, _)| *p == path) {
                return Err(ConfigError::invalid(
                    &path,
                    format!("theme '{current}' inherits itself (a loop)"),
                ));
            }
            let mut table: toml::Table =
                toml::from_str(&text).map_err(|e| ConfigError::invalid(&path, e))?;
            match table.remove("inherits") {
                Some(toml::Value::String(parent)) => next = Some(parent),
                Some(_) => {
                    return Err(ConfigError::invalid(
                        &path,
                        "`inherits` must be a theme name",
                    ))
                }
                None => {}
            }
            // Check each file on its own so an error names the file that has it.
            let _: ThemeFile = table
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::invalid(&path, e))?;
            chain.push((path, table));
        }
        let mut merged = toml::Table::new();
        let top = chain.first().map(|(p, _)| p.clone()).unwrap_or_default();
        for (_, table) in chain.into_iter().rev() {
            merge_toml(&mut merged, table);
        }
        let file: ThemeFile = merged
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::invalid(&top, e))?;
        let mut styles = HashMap::new();
        for (key, spec) in &file.styles {
            let style = resolve_style(spec, &file.palette)
                .map_err(|e| ConfigError::invalid(&top, format!("styles.\"{key}\": {e}")))?;
            styles.insert(key.clone(), style);
        }
        Ok(Theme {
            name: name.to_string(),
            styles,
        })
    }
}

fn find_theme(
    name: &str,
    user_dir: Option<&Path>,
    child: Option<&PathBuf>,
) -> Result<(PathBuf, String), ConfigError> {
    if let Some(dir) = user_dir {
        let path = dir.join(format!("{name}.toml"));
        // A user theme may inherit the preset of the same name ("dark" over "dark").
        if path.is_file() && child != Some(&path) {
            return std::fs::read_to_string(&path)
                .map(|t| (path.clone(), t))
                .map_err(|source| ConfigError::Read { path, source });
        }
    }
    THEME_PRESETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, text)| {
            (
                PathBuf::from(format!("<preset themes/{n}.toml>")),
                text.to_string(),
            )
        })
        .ok_or_else(|| {
            ConfigError::invalid(
                child.map(PathBuf::as_path).unwrap_or(Path::new("config")),
                format!("unknown theme '{name}'"),
            )
        })
}

fn resolve_color(value: &str, palette: &HashMap<String, String>) -> Result<Color, String> {
    let raw = palette.get(value).map(String::as_str).unwrap_or(value);
    Color::from_str(raw).map_err(|_| format!("unknown colour '{value}'"))
}

fn resolve_style(spec: &StyleSpec, palette: &HashMap<String, String>) -> Result<Style, String> {
    let mut style = Style::default();
    if let Some(fg) = &spec.fg {
        style = style.fg(resolve_color(fg, palette)?);
    }
    if let Some(bg) = &spec.bg {
        style = style.bg(resolve_color(bg, palette)?);
    }
    for m in &spec.modifiers {
        let modifier = match m.as_str() {
            "bold" => Modifier::BOLD,
            "dim" => Modifier::DIM,
            "italic" => Modifier::ITALIC,
            "underlined" => Modifier::UNDERLINED,
            "reversed" => Modifier::REVERSED,
            "crossed-out" => Modifier::CROSSED_OUT,
            other => return Err(format!("unknown modifier '{other}'")),
        };
        style = style.add_modifier(modifier);
    }
    Ok(style)
}
