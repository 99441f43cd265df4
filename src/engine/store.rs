//! The model store: one folder per model, described by `manifest.toml` (docs/models.md).
//! Only files a manifest lists are ever loaded: a TorchScript archive can carry code.
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

pub mod detect;
pub mod names;

pub const MANIFEST: &str = "manifest.toml";
pub const FAMILIES: &[&str] = &["whisper", "clip", "sd", "vad", "controlnet", "speaker"];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: cannot read the manifest: {message}")]
    BadManifest { path: PathBuf, message: String },
    #[error("{path}: unknown model family '{family}' (known: whisper, clip, sd, vad, controlnet, speaker)")]
    UnknownFamily { path: PathBuf, family: String },
    #[error("{path}: missing (listed in {manifest} as '{role}')")]
    MissingFile {
        path: PathBuf,
        manifest: PathBuf,
        role: String,
    },
    #[error("{path}: sha256 mismatch: the manifest says {expected}, the file hashes to {actual} (corrupt or replaced; re-import the model)")]
    HashMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path}: cannot be loaded as TorchScript: {message}")]
    LoadFailed { path: PathBuf, message: String },
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model '{name}' has no '{role}' file in {manifest}")]
    MissingRole {
        name: String,
        role: String,
        manifest: PathBuf,
    },
    #[error("model '{name}' is not installed in {dir}; installed {what}: {installed}{hint}")]
    NotInstalled {
        name: String,
        dir: PathBuf,
        /// "whisper models", or "models" (any family).
        what: String,
        /// The installed names of the family ("none" when empty).
        installed: String,
        /// "; found on disk: … (import it with `…`)", or empty.
        hint: String,
    },
    #[error("model name '{name}' matches several installed {family} models: {matches} (give one of these names)")]
    Ambiguous {
        name: String,
        family: String,
        matches: String,
    },
    #[error("{manifest}: exported {exported}, but this atelier runs {running}: import it again for this runtime: {command}")]
    WrongRuntime {
        manifest: PathBuf,
        exported: String,
        running: String,
        command: String,
    },
    #[error("{path}: {key} = {value} is out of range, the limit is {min} to {max}")]
    BadDim {
        path: PathBuf,
        key: String,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error("model name '{name}': {problem}")]
    BadName { name: String, problem: &'static str },
    #[error("{path}: resolves to {target}, outside the model folder {dir} (a symlink out of the folder is never loaded)")]
    OutsideFolder {
        path: PathBuf,
        target: PathBuf,
        dir: PathBuf,
    },
    #[error("model '{name}' is a {actual} model, not a {expected} model")]
    WrongFamily {
        name: String,
        expected: String,
        actual: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    Torchscript,
    Asset,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileEntry {
    pub path: String,
    pub sha256: String,
    pub kind: FileKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    pub format: u32,
    pub family: String,
    pub name: String,
    pub variant: String,
    pub device: String,
    pub dtype: String,
    #[serde(default)]
    pub random_init: bool,
    #[serde(default)]
    pub source: String,
    /// The hub repo the weights came from (`openai/whisper-base`), when known: the model
    /// answers to that name (engine::store::names).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_repo: String,
    #[serde(default)]
    pub exported_with: String,
    #[serde(default)]
    pub created: String,
    /// The command that made this folder, less `--device`/`--dtype` (the re-import hint).
    #[serde(default)]
    pub import_command: String,
    pub files: BTreeMap<String, FileEntry>,
    #[serde(default)]
    pub dims: BTreeMap<String, i64>,
    #[serde(default)]
    pub config: toml::Table,
}

/// The range of each known `dims` key (generous: the largest real models are far inside).
/// A value decides allocations (`n_audio_ctx`, `n_mels`, `n_vocab`, …) or divides
/// (`n_audio_ctx`), so it is checked when the manifest is read.
const DIM_BOUNDS: &[(&str, i64, i64)] = &[
    ("n_mels", 1, 512),
    ("n_audio_ctx", 1, 3000),
    ("n_audio_state", 1, 16384),
    ("n_audio_head", 1, 256),
    ("n_audio_layer", 1, 256),
    ("n_text_ctx", 1, 8192),
    ("n_text_state", 1, 16384),
    ("n_text_head", 1, 256),
    ("n_text_layer", 1, 256),
    ("n_vocab", 1, 1 << 20),
    ("n_alignment_heads", 0, 65536),
    ("sample_rate", 1, 384_000),
    ("window", 1, 1 << 20),
    ("context", 0, 1 << 20),
    ("vae_scale_factor", 1, 64),
    ("latent_channels", 1, 256),
    ("down_residuals", 0, 256),
    ("image-size", 1, 4096),
    ("context-length", 1, 4096),
    ("embed-dim", 1, 16384),
    ("vocab-size", 1, 1 << 20),
];
/// Any other `dims` key (text_hidden, cross_attention_dim, …).
const DIM_DEFAULT_BOUND: (i64, i64) = (0, 1 << 20);
/// `config.sample_size` (SD latents a side: × the VAE factor, at most 8192 pixels).
const SAMPLE_SIZE_BOUND: (i64, i64) = (1, 1024);

/// A model, LoRA or other name a user or config gives: one path component, so that joining
/// it to its folder stays in that folder.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.contains(['/', '\\']) || Path::new(name).is_absolute() {
        return Err("must be a single name, not a path (no '/')");
    }
    if name == "." || name == ".." {
        return Err("must be a name, not '.' or '..'");
    }
    if name.contains('\0') {
        return Err("holds a NUL byte");
    }
    Ok(())
}

impl Manifest {
    pub fn parse(path: &Path, text: &str) -> Result<Self, StoreError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| {
            // One line: toml's Display draws the source lines under the message.
            let line = e
                .span()
                .and_then(|s| text.get(..s.start))
                .map(|before| format!(" (line {})", before.matches('\n').count() + 1))
                .unwrap_or_default();
            StoreError::BadManifest {
                path: path.to_path_buf(),
                message: format!("{}{line}", e.message().trim_end().replace('\n', "; ")),
            }
        })?;
        if !FAMILIES.contains(&manifest.family.as_str()) {
            return Err(StoreError::UnknownFamily {
                path: path.to_path_buf(),
                family: manifest.family,
            });
        }
        for (role, entry) in &manifest.files {
            let rel = Path::new(&entry.path);
            if rel.is_absolute()
                || rel
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(StoreError::BadManifest {
                    path: path.to_path_buf(),
                    message: format!("files.{role}: path must stay inside the model folder"),
                });
            }
        }
        manifest.check_dims(path)?;
        Ok(manifest)
    }

    /// Every `dims` value, and `config.sample_size`, inside its range.
    fn check_dims(&self, path: &Path) -> Result<(), StoreError> {
        let bad = |key: String, value: i64, (min, max): (i64, i64)| StoreError::BadDim {
            path: path.to_path_buf(),
            key,
            value,
            min,
            max,
        };
        for (key, &value) in &self.dims {
            let bound = DIM_BOUNDS
                .iter()
                .find(|(k, ..)| k == key)
                .map_or(DIM_DEFAULT_BOUND, |&(_, min, max)| (min, max));
            if !(bound.0..=bound.1).contains(&value) {
                return Err(bad(format!("dims.{key}"), value, bound));
            }
        }
        if let Some(v) = self.config.get("sample_size") {
            let value = v.as_integer().ok_or_else(|| StoreError::BadManifest {
                path: path.to_path_buf(),
                message: "config.sample_size: expected an integer".into(),
            })?;
            let (min, max) = SAMPLE_SIZE_BOUND;
            if !(min..=max).contains(&value) {
                return Err(bad("config.sample_size".into(), value, SAMPLE_SIZE_BOUND));
            }
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    pub fn dim(&self, key: &str) -> Option<i64> {
        self.dims.get(key).copied()
    }
}

/// A model folder whose manifest parsed.
#[derive(Debug, Clone)]
pub struct InstalledModel {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl InstalledModel {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(InstalledModel {
            dir: dir.to_path_buf(),
            manifest: Manifest::parse(&path, &text)?,
        })
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.dir.join(MANIFEST)
    }

    /// The path of a role's file, checked to exist.
    pub fn file(&self, role: &str) -> Result<PathBuf, StoreError> {
        let entry = self
            .manifest
            .files
            .get(role)
            .ok_or_else(|| StoreError::MissingRole {
                name: self.manifest.name.clone(),
                role: role.to_string(),
                manifest: self.manifest_path(),
            })?;
        let path = self.dir.join(&entry.path);
        if !path.is_file() {
            return Err(StoreError::MissingFile {
                path,
                manifest: self.manifest_path(),
                role: role.to_string(),
            });
        }
        Ok(path)
    }

    /// Refuses a model exported for another libtorch series, device or dtype than the ones it
    /// would run on here: a TorchScript archive from a newer torch may not load in an older
    /// libtorch, and a trace keeps the device and dtype it was made on.
    pub fn check_runtime(&self, device: tch::Device) -> Result<(), StoreError> {
        let m = &self.manifest;
        let torch = crate::engine::runtime::libtorch();
        let want_device = if device.is_cuda() { "cuda" } else { "cpu" };
        let torch_ok = self.torch_matches();
        let device_ok = m.device == want_device;
        let dtype_ok = device.is_cuda() || m.dtype != "float16";
        if torch_ok && device_ok && dtype_ok {
            return Ok(());
        }
        let dtype = if dtype_ok {
            m.dtype.as_str()
        } else {
            "float32"
        };
        Err(StoreError::WrongRuntime {
            manifest: self.manifest_path(),
            exported: format!("with {} for {}/{}", m.exported_with, m.device, m.dtype),
            running: format!("libtorch {} on {want_device}", torch.version),
            command: self.reimport_command(want_device, dtype),
        })
    }

    /// Whether the libtorch in use is of the series (major.minor) this model was exported
    /// with (manifests that do not say are taken as matching).
    pub fn torch_matches(&self) -> bool {
        let exported = self.manifest.exported_with.strip_prefix("torch ");
        exported.is_none_or(|v| {
            crate::engine::runtime::series(v) == crate::engine::runtime::libtorch().series()
        })
    }

    /// The command that exports this model again for `device`/`dtype`.
    pub fn reimport_command(&self, device: &str, dtype: &str) -> String {
        let m = &self.manifest;
        let base = if m.import_command.is_empty() {
            format!(
                "atelier models import {} SOURCE --name {}",
                m.family, m.name
            )
        } else {
            m.import_command.clone()
        };
        if let Some(rest) = base.strip_prefix("atelier ") {
            format!("atelier --device {device} {rest} --dtype {dtype}")
        } else {
            format!("{base} --device {device} --dtype {dtype}")
        }
    }

    /// The role's file, resolved (symlinks followed) and checked to stay inside the model
    /// folder.
    pub fn contained_file(&self, role: &str) -> Result<PathBuf, StoreError> {
        let path = self.file(role)?;
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StoreError::Io { path: p, source }
        };
        let dir = std::fs::canonicalize(&self.dir).map_err(io(&self.dir))?;
        let target = std::fs::canonicalize(&path).map_err(io(&path))?;
        if !target.starts_with(&dir) {
            return Err(StoreError::OutsideFolder {
                path,
                target,
                dir: self.dir.clone(),
            });
        }
        Ok(target)
    }

    /// Loads a TorchScript role onto `device`, in eval mode, after checking its sha256
    /// against the manifest (once per process and file version: see [`verified`]) and that
    /// it lies inside the model folder.
    pub fn load_module(&self, role: &str, device: tch::Device) -> Result<tch::CModule, StoreError> {
        self.check_runtime(device)?;
        let path = self.contained_file(role)?;
        let expected = self
            .manifest
            .files
            .get(role)
            .map(|e| e.sha256.clone())
            .unwrap_or_default();
        verified(&path, &expected)?;
        let mut module =
            tch::CModule::load_on_device(&path, device).map_err(|e| StoreError::LoadFailed {
                path: path.clone(),
                message: first_line(&e.to_string()),
            })?;
        module.set_eval();
        Ok(module)
    }

    /// Re-hashes every file and loads every TorchScript file. Returns every problem found.
    pub fn verify(&self, load: bool) -> Vec<StoreError> {
        let mut problems = Vec::new();
        // An export of another torch series is not loaded: it may not load, and it is
        // refused at run time anyway.
        let load = load && {
            let device = if self.manifest.device == "cuda" {
                tch::Device::Cuda(0)
            } else {
                tch::Device::Cpu
            };
            match self.check_runtime(device) {
                Err(e @ StoreError::WrongRuntime { .. }) if !self.torch_matches() => {
                    problems.push(e);
                    false
                }
                _ => true,
            }
        };
        for (role, entry) in &self.manifest.files {
            let path = match self.file(role) {
                Ok(p) => p,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            match sha256_file(&path) {
                Ok(actual) if actual.eq_ignore_ascii_case(&entry.sha256) => {
                    remember_verified(&path, &actual);
                }
                Ok(actual) => {
                    problems.push(StoreError::HashMismatch {
                        path,
                        expected: entry.sha256.clone(),
                        actual,
                    });
                    continue;
                }
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            }
            let exported_for_cuda = self.manifest.device.starts_with("cuda");
            if load && entry.kind == FileKind::Torchscript && !exported_for_cuda {
                if let Err(e) = self.load_module(role, tch::Device::Cpu) {
                    problems.push(e);
                }
            }
        }
        problems
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("unknown error")
        .to_string()
}

/// A file version: (device, inode, size, mtime in ns). A replaced or rewritten file gets
/// another, so its hash is checked again.
type FileVersion = (u64, u64, u64, i128);

fn file_version(path: &Path) -> Option<FileVersion> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    let mtime = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
    Some((m.dev(), m.ino(), m.size(), mtime))
}

/// The sha256 of each file version hashed in this process.
fn hash_cache() -> &'static std::sync::Mutex<std::collections::HashMap<FileVersion, String>> {
    static CACHE: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<FileVersion, String>>,
    > = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// How many files [`verified`] hashed in this process (a cached version is not hashed).
static HASHED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The number of files hashed to verify a load so far in this process.
pub fn verify_hash_count() -> usize {
    HASHED.load(std::sync::atomic::Ordering::SeqCst)
}

fn remember_verified(path: &Path, sha: &str) {
    if let (Some(version), Ok(mut cache)) = (file_version(path), hash_cache().lock()) {
        cache.insert(version, sha.to_ascii_lowercase());
    }
}

/// Checks `path` hashes to `expected` (the manifest's sha256). The result is kept per file
/// version (inode, size, mtime) for the process, so a second load does not hash again.
pub fn verified(path: &Path, expected: &str) -> Result<(), StoreError> {
    let version = file_version(path);
    let cached = version.and_then(|v| hash_cache().lock().ok()?.get(&v).cloned());
    let actual = match cached {
        Some(sha) => sha,
        None => {
            HASHED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let sha = sha256_file(path)?;
            // Keyed by the version seen before hashing: a file changed meanwhile gets a new
            // version and is hashed again next time.
            if let (Some(v), Ok(mut cache)) = (version, hash_cache().lock()) {
                cache.insert(v, sha.clone());
            }
            sha
        }
    };
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(StoreError::HashMismatch {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            actual,
        })
    }
}

pub fn sha256_file(path: &Path) -> Result<String, StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The models folder: `ATELIER_MODELS`, else the config's `models-dir`, else the data dir.
pub fn models_dir(configured: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("ATELIER_MODELS").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if !configured.is_empty() {
        return expand_home(configured);
    }
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("atelier")
        .join("models")
}

use crate::config::expand_home;

/// Every model folder in the store, each read on its own: a bad one never hides the others.
pub fn list(dir: &Path) -> Vec<Result<InstalledModel, StoreError>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.iter()
        .filter(|d| d.join(MANIFEST).exists())
        .map(|d| InstalledModel::open(d))
        .collect()
}

/// Finds an installed model by a name users type: the folder or manifest name, else a name
/// the model answers to ([`names::names_of`]: `tiny.en`, `whisper-base`, `ViT-B-32`,
/// `openai/whisper-base`, …). Every command that takes a model name comes here.
pub fn find(dir: &Path, name: &str, family: &str) -> Result<InstalledModel, StoreError> {
    resolve(dir, name, Some(family))
}

/// Finds an installed model of any family by a name users type (`models info`, `remove`).
pub fn find_any(dir: &Path, name: &str) -> Result<InstalledModel, StoreError> {
    resolve(dir, name, None)
}

fn resolve(dir: &Path, name: &str, family: Option<&str>) -> Result<InstalledModel, StoreError> {
    if !names::is_repo_name(name) {
        check_name(name).map_err(|problem| StoreError::BadName {
            name: name.to_string(),
            problem,
        })?;
        let candidate = dir.join(name);
        if candidate.join(MANIFEST).exists() {
            return of_family(InstalledModel::open(&candidate)?, name, family);
        }
    }
    let installed: Vec<InstalledModel> = list(dir).into_iter().flatten().collect();
    if let Some(m) = installed.iter().find(|m| m.manifest.name == name) {
        return of_family(m.clone(), name, family);
    }
    let of: Vec<&InstalledModel> = installed
        .iter()
        .filter(|m| family.is_none_or(|f| m.manifest.family == f))
        .collect();
    let matches: Vec<&InstalledModel> = of
        .iter()
        .copied()
        .filter(|m| names::answers_to(m, name))
        .collect();
    let family_text = family.unwrap_or("any").to_string();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(not_installed(dir, name, family, &of)),
        many => Err(StoreError::Ambiguous {
            name: name.to_string(),
            family: family_text,
            matches: many.iter().map(|m| m.name()).collect::<Vec<_>>().join(", "),
        }),
    }
}

fn of_family(
    model: InstalledModel,
    name: &str,
    family: Option<&str>,
) -> Result<InstalledModel, StoreError> {
    match family {
        Some(f) if model.manifest.family != f => Err(StoreError::WrongFamily {
            name: name.to_string(),
            expected: f.to_string(),
            actual: model.manifest.family.clone(),
        }),
        _ => Ok(model),
    }
}

fn not_installed(
    dir: &Path,
    name: &str,
    family: Option<&str>,
    of: &[&InstalledModel],
) -> StoreError {
    let installed = if of.is_empty() {
        "none".to_string()
    } else {
        of.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ")
    };
    let families: Vec<&str> = family.map_or(FAMILIES.to_vec(), |f| vec![f]);
    let found: Vec<String> = families
        .iter()
        .flat_map(|f| names::sources_on_disk(f))
        .filter(|s| s.answers_to(name))
        .map(|s| {
            format!(
                "{} (import it with `{}`)",
                s.path.display(),
                s.import_command()
            )
        })
        .collect();
    let hint = if found.is_empty() {
        String::new()
    } else {
        format!("; found on disk: {}", found.join(", "))
    };
    StoreError::NotInstalled {
        name: name.to_string(),
        dir: dir.to_path_buf(),
        what: family.map_or("models".to_string(), |f| format!("{f} models")),
        installed,
        hint,
    }
}
