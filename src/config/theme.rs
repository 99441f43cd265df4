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

/// The semantic style names a theme's `[styles]` may set: a misspelt name is an error, not
/// a style no pane asks for. A dotted name falls back to its parent, then to `text`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StyleName {
    Text,
    Muted,
    Title,
    Border,
    BorderFocused,
    Selection,
    Mark,
    Status,
    StatusKey,
    Progress,
    Success,
    Warning,
    Error,
    Timestamp,
    Highlight,
    /// A transcript's speakers, in order of first appearance (the seventh takes `speaker.1`).
    Speaker1,
    Speaker2,
    Speaker3,
    Speaker4,
    Speaker5,
    Speaker6,
}

impl StyleName {
    pub const ALL: [StyleName; 21] = [
        StyleName::Text,
        StyleName::Muted,
        StyleName::Title,
        StyleName::Border,
        StyleName::BorderFocused,
        StyleName::Selection,
        StyleName::Mark,
        StyleName::Status,
        StyleName::StatusKey,
        StyleName::Progress,
        StyleName::Success,
        StyleName::Warning,
        StyleName::Error,
        StyleName::Timestamp,
        StyleName::Highlight,
        StyleName::Speaker1,
        StyleName::Speaker2,
        StyleName::Speaker3,
        StyleName::Speaker4,
        StyleName::Speaker5,
        StyleName::Speaker6,
    ];

    /// The speaker colours, in order.
    pub const SPEAKERS: [StyleName; 6] = [
        StyleName::Speaker1,
        StyleName::Speaker2,
        StyleName::Speaker3,
        StyleName::Speaker4,
        StyleName::Speaker5,
        StyleName::Speaker6,
    ];

    /// The colour of the speaker first heard `index`th (0-based), cycling through six.
    pub fn speaker(index: usize) -> Self {
        Self::SPEAKERS[index % Self::SPEAKERS.len()]
    }

    /// The name as theme files write it.
    pub fn name(self) -> &'static str {
        match self {
            StyleName::Text => "text",
            StyleName::Muted => "muted",
            StyleName::Title => "title",
            StyleName::Border => "border",
            StyleName::BorderFocused => "border.focused",
            StyleName::Selection => "selection",
            StyleName::Mark => "mark",
            StyleName::Status => "status",
            StyleName::StatusKey => "status.key",
            StyleName::Progress => "progress",
            StyleName::Success => "success",
            StyleName::Warning => "warning",
            StyleName::Error => "error",
            StyleName::Timestamp => "timestamp",
            StyleName::Highlight => "highlight",
            StyleName::Speaker1 => "speaker.1",
            StyleName::Speaker2 => "speaker.2",
            StyleName::Speaker3 => "speaker.3",
            StyleName::Speaker4 => "speaker.4",
            StyleName::Speaker5 => "speaker.5",
            StyleName::Speaker6 => "speaker.6",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The style used when a theme does not set this one (`text` has none: the default).
    pub fn parent(self) -> Option<Self> {
        match self {
            StyleName::Text => None,
            StyleName::BorderFocused => Some(StyleName::Border),
            StyleName::StatusKey => Some(StyleName::Status),
            _ => Some(StyleName::Text),
        }
    }
}

impl std::fmt::Display for StyleName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Semantic styles by name: `get(BorderFocused)` falls back to `border`, then `text`.
#[derive(Debug, Clone, Default)]
pub struct Theme {
    pub name: String,
    styles: HashMap<StyleName, Style>,
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
    pub fn get(&self, name: StyleName) -> Style {
        let mut key = Some(name);
        while let Some(k) = key {
            if let Some(style) = self.styles.get(&k) {
                return *style;
            }
            key = k.parent();
        }
        Style::default()
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
            let file: ThemeFile = table
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::invalid(&path, e))?;
            if let Some(key) = file.styles.keys().find(|k| StyleName::parse(k).is_none()) {
                let names: Vec<&str> = StyleName::ALL.iter().map(|s| s.name()).collect();
                return Err(ConfigError::invalid(
                    &path,
                    format!(
                        "styles.\"{key}\": unknown style name: use {}",
                        names.join(", ")
                    ),
                ));
            }
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
            // Every file's names were checked above.
            if let Some(name) = StyleName::parse(key) {
                styles.insert(name, style);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_theme_colours_six_speakers_apart() {
        for (name, text) in THEME_PRESETS {
            // set in the file itself, not only inherited
            for s in StyleName::SPEAKERS {
                assert!(text.contains(&format!("\"{}\"", s.name())), "{name}: {s}");
            }
            let theme = Theme::load(name, None).unwrap();
            let text_fg = theme.get(StyleName::Text).fg;
            let styles: Vec<Style> = StyleName::SPEAKERS.iter().map(|&s| theme.get(s)).collect();
            for (i, a) in styles.iter().enumerate() {
                assert!(
                    a.fg.is_some() && a.fg != text_fg,
                    "{name}: speaker.{}",
                    i + 1
                );
                for b in &styles[i + 1..] {
                    assert_ne!(a, b, "{name}: two speakers look the same");
                }
            }
        }
        assert_eq!(StyleName::speaker(0), StyleName::Speaker1);
        assert_eq!(StyleName::speaker(6), StyleName::Speaker1);
        assert_eq!(StyleName::parse("speaker.6"), Some(StyleName::Speaker6));
    }
}
