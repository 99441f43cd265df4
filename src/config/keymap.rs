use super::{merge_toml, ConfigError, PRESET_KEYMAP};
use crate::state::{action_description, Pane};
use crossterm::event::{KeyCode, KeyModifiers};
use std::collections::BTreeMap;
use std::path::Path;

/// A key with modifiers, as written in keymap.toml ("ctrl-d", "G", "space").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyBinding {
    pub code: KeyCode,
    pub modifiers: KeyModifiers,
}

/// Parses "ctrl-shift-x", "pagedown", "?", "f5".
pub fn parse_key(text: &str) -> Result<KeyBinding, String> {
    let mut modifiers = KeyModifiers::NONE;
    let mut rest = text;
    loop {
        let lower = rest.to_ascii_lowercase();
        let (m, len) = if lower.starts_with("ctrl-") {
            (KeyModifiers::CONTROL, 5)
        } else if lower.starts_with("alt-") {
            (KeyModifiers::ALT, 4)
        } else if lower.starts_with("shift-") {
            (KeyModifiers::SHIFT, 6)
        } else {
            break;
        };
        if rest.len() == len {
            break; // "ctrl-" alone is not a modifier of nothing
        }
        modifiers |= m;
        rest = &rest[len..];
    }
    let code = match rest.to_ascii_lowercase().as_str() {
        "enter" | "return" => KeyCode::Enter,
        "esc" | "escape" => KeyCode::Esc,
        "tab" => KeyCode::Tab,
        "backtab" => KeyCode::BackTab,
        "space" => KeyCode::Char(' '),
        "up" => KeyCode::Up,
        "down" => KeyCode::Down,
        "left" => KeyCode::Left,
        "right" => KeyCode::Right,
        "home" => KeyCode::Home,
        "end" => KeyCode::End,
        "pageup" => KeyCode::PageUp,
        "pagedown" => KeyCode::PageDown,
        "delete" | "del" => KeyCode::Delete,
        "backspace" => KeyCode::Backspace,
        "insert" => KeyCode::Insert,
        f if f.len() > 1 && f.starts_with('f') && f[1..].parse::<u8>().is_ok() => {
            match f[1..].parse::<u8>() {
                Ok(n @ 1..=24) => KeyCode::F(n),
                _ => return Err(format!("unknown key '{text}'")),
            }
        }
        _ => {
            let mut chars = rest.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => KeyCode::Char(c),
                _ => return Err(format!("unknown key '{text}'")),
            }
        }
    };
    Ok(KeyBinding { code, modifiers })
}

// crossterm's key types are not Ord; order bindings by how they are written.
impl Ord for KeyBinding {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.to_string().cmp(&other.to_string())
    }
}

impl PartialOrd for KeyBinding {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for KeyBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.modifiers.contains(KeyModifiers::CONTROL) {
            write!(f, "ctrl-")?;
        }
        if self.modifiers.contains(KeyModifiers::ALT) {
            write!(f, "alt-")?;
        }
        if self.modifiers.contains(KeyModifiers::SHIFT) {
            write!(f, "shift-")?;
        }
        match self.code {
            KeyCode::Char(' ') => write!(f, "space"),
            KeyCode::Char(c) => write!(f, "{c}"),
            KeyCode::F(n) => write!(f, "f{n}"),
            KeyCode::BackTab => write!(f, "backtab"),
            KeyCode::PageUp => write!(f, "pageup"),
            KeyCode::PageDown => write!(f, "pagedown"),
            other => write!(f, "{}", format!("{other:?}").to_ascii_lowercase()),
        }
    }
}

/// The sections of keymap.toml: a misspelt `[section]` is an error, not a section no pane
/// reads. Declared in alphabetical order, the order help and `config print` list them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeySection {
    Generate,
    Global,
    List,
    Preview,
    Queue,
    Tags,
    Transcript,
}

impl KeySection {
    pub const ALL: [KeySection; 7] = [
        KeySection::Generate,
        KeySection::Global,
        KeySection::List,
        KeySection::Preview,
        KeySection::Queue,
        KeySection::Tags,
        KeySection::Transcript,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KeySection::Generate => "generate",
            KeySection::Global => "global",
            KeySection::List => "list",
            KeySection::Preview => "preview",
            KeySection::Queue => "queue",
            KeySection::Tags => "tags",
            KeySection::Transcript => "transcript",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The section of a pane (looked up before `list` and `global`).
    pub fn of(pane: Pane) -> Self {
        match pane {
            Pane::Queue => KeySection::Queue,
            Pane::Transcript => KeySection::Transcript,
            Pane::Tags => KeySection::Tags,
            Pane::Generate => KeySection::Generate,
            Pane::Preview => KeySection::Preview,
        }
    }
}

impl std::fmt::Display for KeySection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Sections mapping keys to action names.
#[derive(Debug, Clone, Default)]
pub struct Keymap {
    pub sections: BTreeMap<KeySection, BTreeMap<KeyBinding, String>>,
}

impl Keymap {
    fn from_table(path: &Path, table: &toml::Table) -> Result<Self, ConfigError> {
        let mut sections = BTreeMap::new();
        for (name, value) in table {
            let Some(section) = KeySection::parse(name) else {
                let names: Vec<&str> = KeySection::ALL.iter().map(|s| s.name()).collect();
                return Err(ConfigError::invalid(
                    path,
                    format!("unknown section [{name}]: use {}", names.join(", ")),
                ));
            };
            let toml::Value::Table(keys) = value else {
                return Err(ConfigError::invalid(
                    path,
                    format!("[{section}] must be a table of key = \"action\""),
                ));
            };
            let mut map = BTreeMap::new();
            for (key, action) in keys {
                let binding = parse_key(key)
                    .map_err(|e| ConfigError::invalid(path, format!("[{section}] {e}")))?;
                let Some(action) = action.as_str() else {
                    return Err(ConfigError::invalid(
                        path,
                        format!("[{section}] \"{key}\": the action must be a string"),
                    ));
                };
                if action != "none" && action_description(action).is_none() {
                    return Err(ConfigError::invalid(
                        path,
                        format!("[{section}] \"{key}\": unknown action '{action}'"),
                    ));
                }
                map.insert(binding, action.to_string());
            }
            sections.insert(section, map);
        }
        Ok(Keymap { sections })
    }

    pub fn preset() -> Self {
        let table: toml::Table = toml::from_str(PRESET_KEYMAP).unwrap_or_default();
        Self::from_table(Path::new("<preset keymap.toml>"), &table).unwrap_or_default()
    }

    /// The presets with a user keymap merged over them; `"none"` unbinds a key.
    pub fn with_user(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let user: toml::Table = toml::from_str(text).map_err(|e| ConfigError::invalid(path, e))?;
        // Validate the user's table alone first, so errors name the user's file.
        Self::from_table(path, &user)?;
        let mut merged: toml::Table = toml::from_str(PRESET_KEYMAP).unwrap_or_default();
        merge_toml(&mut merged, user);
        let mut keymap = Self::from_table(path, &merged)?;
        for section in keymap.sections.values_mut() {
            section.retain(|_, action| action != "none");
        }
        Ok(keymap)
    }

    /// The action bound to a key in `section`, falling back to `global`.
    pub fn action(&self, section: KeySection, key: KeyBinding) -> Option<&str> {
        [section, KeySection::Global]
            .iter()
            .filter_map(|s| self.sections.get(s))
            .find_map(|m| m.get(&key))
            .map(String::as_str)
    }
}
