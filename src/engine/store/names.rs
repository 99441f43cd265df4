//! The names users already type for a model (`tiny.en`, `ViT-B-32`, `openai/whisper-base`,
//! `stable-diffusion-v1-5/stable-diffusion-v1-5`), and the import sources already on disk
//! (the Hugging Face hub cache, openai-whisper's cache) that a missing name points to.
use super::InstalledModel;
use std::path::{Path, PathBuf};

/// One well-known model: its family, the variants our exporters write for it (a model with no
/// recorded `source-repo` gets this row's names by its variant), the short names other tools
/// use and the hub repos that hold it (CT2 conversions included).
pub struct Known {
    pub family: &'static str,
    pub variants: &'static [&'static str],
    pub names: &'static [&'static str],
    pub repos: &'static [&'static str],
}

macro_rules! whisper {
    ($v:literal, [$($n:literal),*], [$($r:literal),*]) => {
        Known { family: "whisper", variants: &[$v], names: &[$($n),*], repos: &[$($r),*] }
    };
}

/// openai-whisper's and faster-whisper's model names, open_clip's architectures, the hub
/// repos of each (one table: the resolver and the on-disk hints both read it).
pub const KNOWN: &[Known] = &[
    whisper!(
        "tiny.en",
        ["tiny.en"],
        ["openai/whisper-tiny.en", "Systran/faster-whisper-tiny.en"]
    ),
    whisper!(
        "tiny",
        ["tiny"],
        ["openai/whisper-tiny", "Systran/faster-whisper-tiny"]
    ),
    whisper!(
        "base.en",
        ["base.en"],
        ["openai/whisper-base.en", "Systran/faster-whisper-base.en"]
    ),
    whisper!(
        "base",
        ["base"],
        ["openai/whisper-base", "Systran/faster-whisper-base"]
    ),
    whisper!(
        "small.en",
        ["small.en"],
        ["openai/whisper-small.en", "Systran/faster-whisper-small.en"]
    ),
    whisper!(
        "small",
        ["small"],
        ["openai/whisper-small", "Systran/faster-whisper-small"]
    ),
    whisper!(
        "medium.en",
        ["medium.en"],
        [
            "openai/whisper-medium.en",
            "Systran/faster-whisper-medium.en"
        ]
    ),
    whisper!(
        "medium",
        ["medium"],
        ["openai/whisper-medium", "Systran/faster-whisper-medium"]
    ),
    whisper!(
        "large-v2",
        ["large-v2"],
        ["openai/whisper-large-v2", "Systran/faster-whisper-large-v2"]
    ),
    whisper!(
        "large-v3",
        ["large-v3", "large"],
        ["openai/whisper-large-v3", "Systran/faster-whisper-large-v3"]
    ),
    whisper!(
        "turbo",
        ["turbo", "large-v3-turbo"],
        [
            "openai/whisper-large-v3-turbo",
            "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
            "deepdml/faster-whisper-large-v3-turbo-ct2"
        ]
    ),
    // Distilled models have their own shapes (2 decoder layers): named by their repo only.
    whisper!(
        "",
        ["distil-large-v3"],
        [
            "distil-whisper/distil-large-v3",
            "Systran/faster-distil-whisper-large-v3"
        ]
    ),
    whisper!(
        "",
        ["distil-large-v3.5"],
        [
            "distil-whisper/distil-large-v3.5",
            "distil-whisper/distil-large-v3.5-ct2"
        ]
    ),
    whisper!(
        "",
        ["distil-large-v2"],
        [
            "distil-whisper/distil-large-v2",
            "Systran/faster-distil-whisper-large-v2"
        ]
    ),
    whisper!(
        "",
        ["distil-medium.en"],
        [
            "distil-whisper/distil-medium.en",
            "Systran/faster-distil-whisper-medium.en"
        ]
    ),
    whisper!(
        "",
        ["distil-small.en"],
        [
            "distil-whisper/distil-small.en",
            "Systran/faster-distil-whisper-small.en"
        ]
    ),
    Known {
        family: "clip",
        variants: &["ViT-B-32", "hf:clip-vit-base-patch32"],
        names: &["ViT-B-32", "ViT-B/32"],
        repos: &[
            "openai/clip-vit-base-patch32",
            "timm/vit_base_patch32_clip_224.openai",
        ],
    },
    Known {
        family: "clip",
        variants: &["ViT-B-16", "hf:clip-vit-base-patch16"],
        names: &["ViT-B-16", "ViT-B/16"],
        repos: &[
            "openai/clip-vit-base-patch16",
            "timm/vit_base_patch16_clip_224.openai",
        ],
    },
    Known {
        family: "clip",
        variants: &["ViT-L-14", "hf:clip-vit-large-patch14"],
        names: &["ViT-L-14", "ViT-L/14"],
        repos: &[
            "openai/clip-vit-large-patch14",
            "timm/vit_large_patch14_clip_224.openai",
        ],
    },
    Known {
        family: "clip",
        variants: &["ViT-L-14-336", "hf:clip-vit-large-patch14-336"],
        names: &["ViT-L-14-336", "ViT-L/14@336px"],
        repos: &["openai/clip-vit-large-patch14-336"],
    },
    Known {
        family: "clip",
        variants: &["RN50"],
        names: &["RN50"],
        repos: &[],
    },
    Known {
        family: "sd",
        variants: &["sd15"],
        names: &["sd15", "sd-1.5", "v1-5"],
        repos: &[
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            "runwayml/stable-diffusion-v1-5",
        ],
    },
    Known {
        family: "sd",
        variants: &["sd21"],
        names: &["sd21", "sd-2.1"],
        repos: &[
            "stabilityai/stable-diffusion-2-1",
            "stabilityai/stable-diffusion-2-1-base",
        ],
    },
    Known {
        family: "sd",
        variants: &["sdxl"],
        names: &["sdxl"],
        repos: &["stabilityai/stable-diffusion-xl-base-1.0"],
    },
];

/// A hub repo name: `org/name`, each part a plain name (no path tricks).
pub fn is_repo_name(name: &str) -> bool {
    let mut parts = name.split('/');
    let (Some(org), Some(repo), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    [org, repo]
        .iter()
        .all(|p| super::check_name(p).is_ok() && !p.starts_with('.'))
}

fn tail(repo: &str) -> &str {
    repo.rsplit('/').next().unwrap_or(repo)
}

/// The rows a model answers to: by its recorded repo when it has one (a fine-tune of
/// `base` with its own repo is not `base`), else by its variant.
fn rows_of<'a>(
    family: &'a str,
    variant: &'a str,
    repo: &'a str,
) -> impl Iterator<Item = &'static Known> + 'a {
    KNOWN.iter().filter(move |k| {
        k.family == family
            && if repo.is_empty() {
                !variant.is_empty() && k.variants.contains(&variant)
            } else {
                k.repos.iter().any(|r| r.eq_ignore_ascii_case(repo))
            }
    })
}

/// Every name `model` answers to, besides its own name.
pub fn names_of(model: &InstalledModel) -> Vec<String> {
    let m = &model.manifest;
    let mut out = vec![m.name.clone()];
    if let Some(folder) = model.dir.file_name() {
        out.push(folder.to_string_lossy().into_owned());
    }
    // A model from a repo of its own (a fine-tune) is not named by its architecture.
    let own_repo = !m.source_repo.is_empty()
        && !KNOWN.iter().any(|k| {
            k.repos
                .iter()
                .any(|r| r.eq_ignore_ascii_case(&m.source_repo))
        });
    if !own_repo
        && !m.variant.is_empty()
        && !m.variant.starts_with("hf:")
        && !m.variant.starts_with("custom-")
    {
        out.push(m.variant.clone());
    }
    if !m.source_repo.is_empty() {
        out.push(m.source_repo.clone());
        out.push(tail(&m.source_repo).to_string());
    }
    for row in rows_of(&m.family, &m.variant, &m.source_repo) {
        out.extend(row.names.iter().map(|n| n.to_string()));
        out.extend(row.repos.iter().map(|r| r.to_string()));
        out.extend(row.repos.iter().map(|r| tail(r).to_string()));
    }
    if m.family == "whisper" {
        let extra: Vec<String> = out
            .iter()
            .filter(|n| !n.contains('/') && !n.contains("whisper"))
            .map(|n| format!("whisper-{n}"))
            .collect();
        out.extend(extra);
    }
    out.sort();
    out.dedup();
    out
}

/// Whether `query` names `model`.
pub fn answers_to(model: &InstalledModel, query: &str) -> bool {
    names_of(model)
        .iter()
        .any(|n| n.eq_ignore_ascii_case(query))
}

/// A source on disk that `atelier models import` takes: a hub cache folder or an openai
/// checkpoint, with the names it would answer to once imported.
#[derive(Debug, Clone)]
pub struct OnDisk {
    pub path: PathBuf,
    pub repo: String,
    pub family: &'static str,
}

impl OnDisk {
    pub fn answers_to(&self, query: &str) -> bool {
        let q = query
            .strip_prefix("whisper-")
            .filter(|_| self.family == "whisper");
        let matches =
            |n: &str| n.eq_ignore_ascii_case(query) || q.is_some_and(|q| n.eq_ignore_ascii_case(q));
        if matches(&self.repo) || matches(tail(&self.repo)) {
            return true;
        }
        KNOWN.iter().any(|k| {
            k.family == self.family
                && k.repos.iter().any(|r| r.eq_ignore_ascii_case(&self.repo))
                && (k.names.iter().any(|n| matches(n))
                    || k.repos.iter().any(|r| matches(r) || matches(tail(r))))
        })
    }

    pub fn import_command(&self) -> String {
        let path = self.path.display().to_string();
        format!(
            "atelier models import {}",
            shlex::try_quote(&path)
                .map(|p| p.into_owned())
                .unwrap_or(path)
        )
    }
}

/// The Hugging Face hub cache: `HF_HUB_CACHE`, else `HF_HOME/hub`, else
/// `XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub` (huggingface_hub's order).
pub fn hf_hub_cache() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("HF_HUB_CACHE")
        .or_else(|| env("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| env("XDG_CACHE_HOME").map(|c| c.join("huggingface/hub")))
        .or_else(|| dirs::home_dir().map(|h| h.join(".cache/huggingface/hub")))
}

/// openai-whisper's download folder: `XDG_CACHE_HOME/whisper`, else `~/.cache/whisper`.
pub fn whisper_cache() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| dirs::home_dir().map(|h| h.join(".cache")))
        .map(|c| c.join("whisper"))
}

/// `models--org--name` → `org/name`.
pub fn repo_of_hub_folder(folder: &str) -> Option<String> {
    let rest = folder.strip_prefix("models--")?;
    let (org, name) = rest.split_once("--")?;
    (!org.is_empty() && !name.is_empty()).then(|| format!("{org}/{name}"))
}

/// The family a hub repo most likely holds, from the table, else from its name.
fn family_of_repo(repo: &str) -> Option<&'static str> {
    if let Some(k) = KNOWN
        .iter()
        .find(|k| k.repos.iter().any(|r| r.eq_ignore_ascii_case(repo)))
    {
        return Some(k.family);
    }
    let lower = repo.to_ascii_lowercase();
    if lower.contains("whisper") {
        Some("whisper")
    } else if lower.contains("controlnet") || lower.contains("control_v") {
        Some("controlnet")
    } else if lower.contains("clip") {
        Some("clip")
    } else if lower.contains("stable-diffusion") || lower.contains("sdxl") {
        Some("sd")
    } else {
        None
    }
}

/// The import sources of `family` in the hub cache and openai-whisper's cache (only folder
/// names are read).
pub fn sources_on_disk(family: &str) -> Vec<OnDisk> {
    let mut out = Vec::new();
    if let Some(hub) = hf_hub_cache() {
        if let Ok(entries) = std::fs::read_dir(&hub) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(repo) = repo_of_hub_folder(&name) else {
                    continue;
                };
                if let Some(found) = family_of_repo(&repo).filter(|f| *f == family) {
                    out.push(OnDisk {
                        path: e.path(),
                        repo,
                        family: found,
                    });
                }
            }
        }
    }
    if family == "whisper" {
        if let Some(dir) = whisper_cache() {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let path = e.path();
                    if path.extension().is_some_and(|x| x == "pt") {
                        let stem = path
                            .file_stem()
                            .map(|s| s.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        // openai's file names are its model names: base.pt, large-v3.pt …
                        let repo = KNOWN
                            .iter()
                            .find(|k| k.family == "whisper" && k.names.contains(&stem.as_str()))
                            .and_then(|k| k.repos.first())
                            .map_or(stem.clone(), |r| r.to_string());
                        out.push(OnDisk {
                            path,
                            repo,
                            family: "whisper",
                        });
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The repo a source path comes from: a hub cache path (`models--org--name`, or a snapshot
/// inside it), else a folder or file named like a known repo (`faster-whisper-small`).
pub fn repo_of_source(path: &Path) -> Option<String> {
    for part in path.components().rev() {
        if let Some(repo) = repo_of_hub_folder(&part.as_os_str().to_string_lossy()) {
            return Some(repo);
        }
    }
    let name = path.file_name()?.to_string_lossy();
    let name = if name == "model.bin" {
        path.parent()?.file_name()?.to_string_lossy()
    } else {
        name
    };
    KNOWN
        .iter()
        .flat_map(|k| k.repos.iter())
        .find(|r| tail(r).eq_ignore_ascii_case(&name))
        .map(|r| r.to_string())
}
