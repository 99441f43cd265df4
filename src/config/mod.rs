//! Configuration: embedded presets with the user's TOML merged over them.
//!
//! A broken user file never stops Atelier: it is reported and the presets are used.
mod keymap;
mod merge;
mod theme;

pub use keymap::{parse_key, KeyBinding, KeySection, Keymap};
pub use merge::merge_toml;
pub use theme::{StyleName, Theme, THEME_PRESETS};

pub use crate::domain::DeviceChoice;
use crate::domain::JobKind;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const PRESET_CONFIG: &str = include_str!("../../config/config.toml");
pub const PRESET_KEYMAP: &str = include_str!("../../config/keymap.toml");

/// An error in a configuration file: which file, and what (toml's message carries the line).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ConfigError {
    fn invalid(path: &Path, message: impl ToString) -> Self {
        ConfigError::Invalid {
            path: path.to_path_buf(),
            message: message.to_string().trim_end().to_string(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub theme: String,
    pub device: String,
    pub models_dir: String,
    pub log_level: String,
    pub ui: UiConfig,
    pub whisper: WhisperConfig,
    pub clip: ClipConfig,
    pub queue: QueueConfig,
    pub watch: Vec<WatchProfile>,
    pub diffusion: DiffusionConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageProtocol {
    #[default]
    Auto,
    Kitty,
    Sixel,
    Iterm2,
    Halfblocks,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct UiConfig {
    pub image_protocol: ImageProtocol,
    pub max_fps: u32,
    pub mouse: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct WhisperConfig {
    pub model: String,
    pub language: String,
    pub task: String,
    pub vad: bool,
    pub vad_model: String,
    pub output_formats: Vec<String>,
    pub beam_size: u32,
    pub word_timestamps: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClipConfig {
    pub model: String,
    /// The embedding index (SQLite); empty: `$XDG_DATA_HOME/atelier/clip-index.sqlite`.
    pub index: String,
    pub batch_size: u32,
}

/// `[queue]`: the job journal and its workers (see docs/watch.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct QueueConfig {
    /// The journal (SQLite). Empty: `$XDG_DATA_HOME/atelier/queue.sqlite`.
    pub path: String,
    /// A shared PostgreSQL queue (`postgres://user@host/db`; also `ATELIER_QUEUE_URL`).
    /// Empty: the SQLite journal at `path`.
    pub url: String,
    /// How long a claimed job's lease runs; its worker renews it every third of that. A job
    /// whose worker stopped renewing (its process or machine died) is re-run after it.
    pub lease_ms: u64,
    /// Jobs at once on a CPU and on a GPU.
    pub workers_cpu: u32,
    pub workers_cuda: u32,
    /// Runs before a failing job lands in `failed`.
    pub max_attempts: u32,
    /// Times the process may die while running a job before the job lands in `failed`.
    pub max_crashes: u32,
    /// The first retry's wait; each further retry waits twice as long.
    pub retry_backoff_ms: u64,
    /// How long a file's size and mtime must stay the same before it is taken.
    pub stable_ms: u64,
    /// The polling watcher's interval (network filesystems).
    pub poll_interval_ms: u64,
}

/// One `[[watch]]` profile: a folder, what to run on its files and where outputs go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct WatchProfile {
    pub name: String,
    pub path: String,
    /// Globs (relative to `path`) a file must match; empty: the kind's usual extensions.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// transcribe | tag | index | generate | checksum
    pub kind: String,
    pub model: String,
    pub language: String,
    pub formats: Vec<String>,
    pub vad: Option<bool>,
    /// transcribe: tell speakers apart (needs the VAD); `speakers` exactly, else estimated
    /// within `min-speakers..=max-speakers`.
    pub diarize: bool,
    pub speakers: Option<usize>,
    pub min_speakers: Option<usize>,
    pub max_speakers: Option<usize>,
    pub labels: String,
    pub top_k: Option<usize>,
    pub index: String,
    /// Empty: outputs beside each input; else a mirror tree rooted here.
    pub output_dir: String,
    /// keep | move (into `done-dir`, default `PATH/done`)
    pub on_done: String,
    pub done_dir: String,
    /// This profile's own journal; empty: `[queue] path`.
    pub queue: String,
    /// auto (poll on network filesystems) | always | never
    pub poll: String,
    /// Marker-file mode: take `FILE` only once `FILE` + this suffix exists (e.g. ".ready").
    pub marker: String,
    pub priority: i32,
}

/// The names `[[watch]] on-done` and `poll` accept.
pub const ON_DONE: &[&str] = &["keep", "move", ""];
pub const POLL_MODES: &[&str] = &["auto", "always", "never", ""];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DiffusionConfig {
    pub model: String,
    pub steps: u32,
    pub guidance: f64,
    /// A scheduler's CLI name (`atelier generate --scheduler`), checked when generating.
    pub scheduler: String,
    /// 0: the model's native size.
    pub width: u32,
    pub height: u32,
    /// Where `--lora NAME` looks for NAME.safetensors. Empty: `<models dir>/lora`.
    pub lora_dir: String,
    /// Empty: the current folder.
    pub output_dir: String,
}

/// The range each numeric key accepts: a value outside it is refused at load, naming the
/// file, the key and the limit (a huge backoff or batch would stall or exhaust the process).
struct Bound {
    key: &'static str,
    value: f64,
    min: f64,
    max: f64,
}

impl Config {
    fn bounds(&self) -> Vec<Bound> {
        let b = |key, value: f64, min, max| Bound {
            key,
            value,
            min,
            max,
        };
        let q = &self.queue;
        let d = &self.diffusion;
        vec![
            b("ui.max-fps", self.ui.max_fps.into(), 1.0, 240.0),
            b(
                "whisper.beam-size",
                self.whisper.beam_size.into(),
                0.0,
                32.0,
            ),
            b("clip.batch-size", self.clip.batch_size.into(), 0.0, 1024.0),
            b("queue.workers-cpu", q.workers_cpu.into(), 0.0, 64.0),
            b("queue.workers-cuda", q.workers_cuda.into(), 0.0, 64.0),
            b("queue.max-attempts", q.max_attempts.into(), 0.0, 100.0),
            // The retry wait is capped at 1 h anyway: a larger first wait is a typo.
            b(
                "queue.retry-backoff-ms",
                q.retry_backoff_ms as f64,
                0.0,
                3_600_000.0,
            ),
            b("queue.stable-ms", q.stable_ms as f64, 0.0, 3_600_000.0),
            // Shorter than the heartbeat's round trip would orphan live jobs.
            b("queue.lease-ms", q.lease_ms as f64, 300.0, 86_400_000.0),
            b(
                "queue.poll-interval-ms",
                q.poll_interval_ms as f64,
                0.0,
                3_600_000.0,
            ),
            b("diffusion.steps", d.steps.into(), 0.0, 1000.0),
            b("diffusion.guidance", d.guidance, 0.0, 100.0),
            b("diffusion.width", d.width.into(), 0.0, 8192.0),
            b("diffusion.height", d.height.into(), 0.0, 8192.0),
        ]
    }

    /// Numbers in their range and sizes that SD takes: checked on the merged configuration
    /// (a key the user did not set keeps its preset value).
    fn check_bounds(&self, path: &Path) -> Result<(), ConfigError> {
        for b in self.bounds() {
            // NaN is outside every range.
            if !(b.min..=b.max).contains(&b.value) {
                return Err(ConfigError::invalid(
                    path,
                    format!(
                        "{} = {}: out of range, the limit is {} to {}",
                        b.key, b.value, b.min, b.max
                    ),
                ));
            }
        }
        for (key, v) in [
            ("diffusion.width", self.diffusion.width),
            ("diffusion.height", self.diffusion.height),
        ] {
            if v % 8 != 0 {
                return Err(ConfigError::invalid(
                    path,
                    format!("{key} = {v}: must be a multiple of 8 (0: the model's native size)"),
                ));
            }
        }
        Ok(())
    }

    /// Checks the values serde cannot: names that must parse.
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        self.device
            .parse::<DeviceChoice>()
            .map_err(|e| ConfigError::invalid(path, format!("device: {e}")))?;
        if !["transcribe", "translate", ""].contains(&self.whisper.task.as_str()) {
            return Err(ConfigError::invalid(
                path,
                format!(
                    "whisper.task: unknown task '{}': use transcribe or translate",
                    self.whisper.task
                ),
            ));
        }
        for (i, w) in self.watch.iter().enumerate() {
            let at =
                |m: String| ConfigError::invalid(path, format!("watch[{i}] ({}): {m}", w.name));
            if w.path.is_empty() {
                return Err(at("path is required".into()));
            }
            if !w.kind.is_empty() && JobKind::parse(&w.kind).is_none() {
                return Err(at(format!("unknown kind '{}'", w.kind)));
            }
            if !ON_DONE.contains(&w.on_done.as_str()) {
                return Err(at(format!("on-done: '{}': use keep or move", w.on_done)));
            }
            if !POLL_MODES.contains(&w.poll.as_str()) {
                return Err(at(format!("poll: '{}': use auto, always or never", w.poll)));
            }
            check_speakers(w.speakers, w.min_speakers, w.max_speakers, "").map_err(at)?;
            let counted =
                w.speakers.is_some() || w.min_speakers.is_some() || w.max_speakers.is_some();
            if counted && !w.diarize {
                return Err(at(
                    "speakers, min-speakers and max-speakers need diarize = true".into(),
                ));
            }
            if w.diarize && w.vad == Some(false) {
                return Err(at(
                    "diarize = true needs the VAD's speech ranges: remove vad = false".into(),
                ));
            }
            if w.diarize
                && !w.kind.is_empty()
                && JobKind::parse(&w.kind) != Some(JobKind::Transcribe)
            {
                return Err(at(format!(
                    "diarize = true is for kind = \"transcribe\", not '{}'",
                    w.kind
                )));
            }
            for g in w.include.iter().chain(&w.exclude) {
                globset::Glob::new(g).map_err(|e| at(format!("glob '{g}': {e}")))?;
            }
        }
        for format in &self.whisper.output_formats {
            if !["txt", "srt", "vtt", "tsv", "json", "all"].contains(&format.as_str()) {
                return Err(ConfigError::invalid(
                    path,
                    format!("whisper.output-formats: unknown format '{format}'"),
                ));
            }
        }
        Ok(())
    }

    pub fn device_choice(&self) -> DeviceChoice {
        self.device.parse().unwrap_or(DeviceChoice::Auto)
    }
}

/// Checks a speaker count: `speakers` (exact) or `min-speakers`/`max-speakers`, each at
/// least 1, min not above max. Messages name the keys with `prefix` (`--` for flags).
pub fn check_speakers(
    exact: Option<usize>,
    min: Option<usize>,
    max: Option<usize>,
    prefix: &str,
) -> Result<(), String> {
    if exact.is_some() && (min.is_some() || max.is_some()) {
        return Err(format!(
            "{prefix}speakers cannot be combined with {prefix}min-speakers or {prefix}max-speakers"
        ));
    }
    for (key, v) in [
        ("speakers", exact),
        ("min-speakers", min),
        ("max-speakers", max),
    ] {
        if v == Some(0) {
            return Err(format!("{prefix}{key} must be at least 1"));
        }
    }
    if let (Some(a), Some(b)) = (min, max) {
        if a > b {
            return Err(format!(
                "{prefix}min-speakers {a} is more than {prefix}max-speakers {b}"
            ));
        }
    }
    Ok(())
}

/// The user's configuration folder: `$XDG_CONFIG_HOME/atelier`, or `ATELIER_CONFIG_DIR`.
pub fn config_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("ATELIER_CONFIG_DIR") {
        return Some(PathBuf::from(dir));
    }
    dirs::config_dir().map(|d| d.join("atelier"))
}

/// The effective configuration and where it came from.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub keymap: Keymap,
    pub theme: Theme,
    /// User files that were read and applied.
    pub sources: Vec<PathBuf>,
    /// Problems found; each one made Atelier fall back to the presets for that file.
    pub errors: Vec<ConfigError>,
    /// The problem with config.toml itself, if any (also in `errors`). The TUI shows it and
    /// runs on the presets; a headless command refuses to run (exit 2), since a daemon on the
    /// presets would silently do other work than the file says.
    pub config_error: Option<String>,
}

/// Parses and validates one user config text on its own, so errors carry its own line numbers.
pub fn parse_user_config(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    let config: Config = toml::from_str(text).map_err(|e| ConfigError::invalid(path, e))?;
    config.validate(path)?;
    toml::from_str(text).map_err(|e| ConfigError::invalid(path, e))
}

/// Merges a user config text over the presets.
pub fn config_from_user(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let user = parse_user_config(path, text)?;
    let mut merged: toml::Table = toml::from_str(PRESET_CONFIG)
        .map_err(|e| ConfigError::invalid(Path::new("<preset config.toml>"), e))?;
    merge_toml(&mut merged, user);
    let mut config: Config = merged
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::invalid(path, e))?;
    config.validate(path)?;
    config.check_bounds(path)?;
    config.expand_home();
    Ok(config)
}

/// `~` or `~/rest` as the home folder (as a shell would); any other path unchanged, and `~`
/// kept when the home folder is unknown. The one `~` expansion for every path key.
pub fn expand_home(path: &str) -> PathBuf {
    let home = || dirs::home_dir().filter(|h| !h.as_os_str().is_empty());
    if path == "~" {
        if let Some(h) = home() {
            return h;
        }
    }
    if let Some(rest) = path.strip_prefix("~/") {
        if let Some(h) = home() {
            return h.join(rest);
        }
    }
    PathBuf::from(path)
}

impl Config {
    /// Expands `~` in every key that names a path (`output-dir = "~/img"` is the home's
    /// `img`, not a literal `./~` folder).
    fn expand_home(&mut self) {
        let ex = |s: &mut String| {
            if s.starts_with('~') {
                *s = expand_home(s).to_string_lossy().into_owned();
            }
        };
        ex(&mut self.models_dir);
        ex(&mut self.clip.index);
        ex(&mut self.queue.path);
        ex(&mut self.diffusion.lora_dir);
        ex(&mut self.diffusion.output_dir);
        for w in &mut self.watch {
            for s in [
                &mut w.path,
                &mut w.labels,
                &mut w.index,
                &mut w.output_dir,
                &mut w.done_dir,
                &mut w.queue,
            ] {
                ex(s);
            }
        }
    }
}

pub fn preset_config() -> Config {
    // The preset is part of the binary and is covered by tests; it cannot fail at run time.
    toml::from_str(PRESET_CONFIG).unwrap_or_default()
}

fn read_optional(path: &Path) -> Result<Option<String>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Loads config, keymap and theme. `config_file` overrides the default user config path.
pub fn load(config_file: Option<&Path>, theme_override: Option<&str>) -> Loaded {
    let dir = config_dir();
    let mut errors = Vec::new();
    let mut sources = Vec::new();

    let config_path = config_file
        .map(Path::to_path_buf)
        .or_else(|| dir.as_ref().map(|d| d.join("config.toml")));
    let mut config = preset_config();
    let mut config_error = None;
    if let Some(path) = &config_path {
        match read_optional(path) {
            Ok(Some(text)) => match config_from_user(path, &text) {
                Ok(c) => {
                    config = c;
                    sources.push(path.clone());
                }
                Err(e) => errors.push(e),
            },
            Ok(None) if config_file.is_some() => errors.push(ConfigError::Read {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
            }),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
        config_error = errors.first().map(ToString::to_string);
    }

    let mut keymap = Keymap::preset();
    if let Some(path) = dir.as_ref().map(|d| d.join("keymap.toml")) {
        match read_optional(&path) {
            Ok(Some(text)) => match Keymap::with_user(&path, &text) {
                Ok(k) => {
                    keymap = k;
                    sources.push(path);
                }
                Err(e) => errors.push(e),
            },
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }

    let user_themes = dir.as_ref().map(|d| d.join("themes"));
    let theme_name = theme_override.unwrap_or(&config.theme).to_string();
    let theme = match Theme::load(&theme_name, user_themes.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            errors.push(e);
            Theme::preset_default()
        }
    };
    Loaded {
        config,
        keymap,
        theme,
        sources,
        errors,
        config_error,
    }
}

/// `atelier config check`: every problem in the user's files, without falling back.
pub fn check(config_file: Option<&Path>) -> (Vec<PathBuf>, Vec<ConfigError>) {
    let loaded = load(config_file, None);
    let mut checked = loaded.sources.clone();
    let mut errors = loaded.errors;
    // Every theme the user ships must load too, not only the active one.
    if let Some(themes) = config_dir().map(|d| d.join("themes")) {
        if let Ok(entries) = std::fs::read_dir(&themes) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                    continue;
                }
                let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                    continue;
                };
                match Theme::load(name, Some(&themes)) {
                    Ok(_) => checked.push(path),
                    Err(e) => {
                        if !errors.iter().any(|x| x.to_string() == e.to_string()) {
                            errors.push(e)
                        }
                    }
                }
            }
        }
    }
    (checked, errors)
}
