//! The model store: one folder per model, described by `manifest.toml` (docs/models.md).
//! Only files a manifest lists are ever loaded: a TorchScript archive can carry code.
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "manifest.toml";
pub const FAMILIES: &[&str] = &["whisper", "clip", "sd", "vad", "controlnet"];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: cannot read the manifest: {message}")]
    BadManifest { path: PathBuf, message: String },
    #[error("{path}: unknown model family '{family}' (known: whisper, clip, sd, vad, controlnet)")]
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
    #[error("model '{name}' is not installed in {dir} (see `atelier models list`)")]
    NotInstalled { name: String, dir: PathBuf },
    #[error("{manifest}: exported {exported}, but this atelier runs {running}: import it again for this runtime: {command}")]
    WrongRuntime {
        manifest: PathBuf,
        exported: String,
        running: String,
        command: String,
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

impl Manifest {
    pub fn parse(path: &Path, text: &str) -> Result<Self, StoreError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| StoreError::BadManifest {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
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
        Ok(manifest)
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

    /// Loads a TorchScript role onto `device`, in eval mode.
    pub fn load_module(&self, role: &str, device: tch::Device) -> Result<tch::CModule, StoreError> {
        self.check_runtime(device)?;
        let path = self.file(role)?;
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
                Ok(actual) if actual.eq_ignore_ascii_case(&entry.sha256) => {}
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

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), dirs::home_dir()) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(path),
    }
}

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

/// Finds an installed model by name (the folder name or the manifest's name).
pub fn find(dir: &Path, name: &str, family: &str) -> Result<InstalledModel, StoreError> {
    let candidate = dir.join(name);
    let model = if candidate.join(MANIFEST).exists() {
        InstalledModel::open(&candidate)?
    } else {
        list(dir)
            .into_iter()
            .flatten()
            .find(|m| m.manifest.name == name)
            .ok_or_else(|| StoreError::NotInstalled {
                name: name.to_string(),
                dir: dir.to_path_buf(),
            })?
    };
    if model.manifest.family != family {
        return Err(StoreError::WrongFamily {
            name: name.to_string(),
            expected: family.to_string(),
            actual: model.manifest.family.clone(),
        });
    }
    Ok(model)
}
