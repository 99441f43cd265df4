//! What a file or folder given to `atelier models import PATH` holds, from its file names and
//! a few small reads (JSON configs, a safetensors header, a zip's listing). [`probe`] does the
//! reading; [`detect`] is a pure function of what it read (unit-tested), and the one place
//! that decides the family, the source format and the export options of an import.
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// What can be imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Whisper,
    Clip,
    Vad,
    Speaker,
    Sd,
    Controlnet,
    Lora,
}

impl Kind {
    pub const ALL: &'static [Kind] = &[
        Kind::Whisper,
        Kind::Clip,
        Kind::Vad,
        Kind::Speaker,
        Kind::Sd,
        Kind::Controlnet,
        Kind::Lora,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Whisper => "whisper",
            Kind::Clip => "clip",
            Kind::Vad => "vad",
            Kind::Speaker => "speaker",
            Kind::Sd => "sd",
            Kind::Controlnet => "controlnet",
            Kind::Lora => "lora",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.name() == text)
    }
}

/// The outcome of [`detect`]: the family, the format the export tool is told, the file or
/// folder it reads, and what else it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub kind: Kind,
    /// ct2, openai, hf (Whisper, CLIP); open_clip (CLIP); diffusers, single-file (SD);
    /// diffusers (ControlNet); kohya, diffusers (LoRA); wheel (VAD).
    pub format: &'static str,
    /// The file or folder to hand to the export tool (a weights file inside a folder).
    pub source: PathBuf,
    /// CLIP: the open_clip architecture; SD single files: the built-in config.
    pub arch: Option<String>,
    /// How the source was recognised, for the user.
    pub what: String,
}

/// A safetensors tensor: its name and shape.
pub type Tensors = BTreeMap<String, Vec<i64>>;

/// What [`probe`] read of a path.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub path: PathBuf,
    pub is_dir: bool,
    /// A folder's file names (not recursive).
    pub entries: Vec<String>,
    /// A folder's `config.json`, `model_index.json`, `open_clip_config.json` (parsed).
    pub json: BTreeMap<String, serde_json::Value>,
    /// The tensors of the file (or of a folder's one weights file), when it is safetensors.
    pub tensors: Option<Tensors>,
    /// Which file `tensors` came from.
    pub tensors_file: Option<PathBuf>,
    /// A zip's member names (a wheel, a torch archive).
    pub zip_names: Option<Vec<String>>,
    /// A `torch.save` archive's pickle (`ARCHIVE/data.pkl`, the dict of names without the
    /// tensor data), when it is small enough to be a model's.
    pub pickle: Option<Vec<u8>>,
    /// The first bytes of a file.
    pub head: Vec<u8>,
}

const JSON_FILES: &[&str] = &["config.json", "model_index.json", "open_clip_config.json"];
/// Folder weights files whose header is read, in order.
const WEIGHT_FILES: &[&str] = &[
    "open_clip_model.safetensors",
    "model.safetensors",
    "diffusion_pytorch_model.safetensors",
];
/// A larger JSON header is not a model's (real ones are well under 10 MB).
const MAX_HEADER: u64 = 100 << 20;

/// The tensors named in a safetensors file's header (None: not safetensors).
pub fn safetensors_header(path: &Path) -> Option<Tensors> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let n = u64::from_le_bytes(len);
    if n == 0 || n > MAX_HEADER {
        return None;
    }
    let mut buf = vec![0u8; usize::try_from(n).ok()?];
    f.read_exact(&mut buf).ok()?;
    let header: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&buf).ok()?;
    Some(
        header
            .into_iter()
            .filter(|(k, _)| k != "__metadata__")
            .map(|(k, v)| {
                let shape = v
                    .get("shape")
                    .and_then(|s| s.as_array())
                    .map(|s| s.iter().filter_map(|d| d.as_i64()).collect())
                    .unwrap_or_default();
                (k, shape)
            })
            .collect(),
    )
}

fn zip_names(path: &Path) -> Option<Vec<String>> {
    let f = std::fs::File::open(path).ok()?;
    let zip = zip::ZipArchive::new(f).ok()?;
    Some(zip.file_names().map(String::from).collect())
}

/// A model's pickle lists its tensor names and small values; a larger one is not read.
const MAX_PICKLE: u64 = 64 << 20;

/// The `data.pkl` of a `torch.save` zip archive (None: none, or over [`MAX_PICKLE`]).
fn torch_pickle(path: &Path, names: &[String]) -> Option<Vec<u8>> {
    let name = names
        .iter()
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)?;
    let f = std::fs::File::open(path).ok()?;
    let mut zip = zip::ZipArchive::new(f).ok()?;
    let entry = zip.by_name(name).ok()?;
    if entry.size() > MAX_PICKLE {
        return None;
    }
    let mut buf = Vec::new();
    entry.take(MAX_PICKLE).read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// Reads what [`detect`] looks at.
pub fn probe(path: &Path) -> std::io::Result<Probe> {
    let meta = std::fs::metadata(path)?;
    let mut p = Probe {
        path: path.to_path_buf(),
        is_dir: meta.is_dir(),
        ..Probe::default()
    };
    if p.is_dir {
        for e in std::fs::read_dir(path)? {
            p.entries
                .push(e?.file_name().to_string_lossy().into_owned());
        }
        p.entries.sort();
        for name in JSON_FILES {
            let file = path.join(name);
            if let Ok(text) = std::fs::read_to_string(&file) {
                if let Ok(v) = serde_json::from_str(&text) {
                    p.json.insert(name.to_string(), v);
                }
            }
        }
        let weights = WEIGHT_FILES
            .iter()
            .map(|w| path.join(w))
            .find(|w| w.is_file())
            .or_else(|| {
                let st: Vec<&String> = p
                    .entries
                    .iter()
                    .filter(|e| e.ends_with(".safetensors"))
                    .collect();
                match st.as_slice() {
                    [one] => Some(path.join(one)),
                    _ => None,
                }
            });
        if let Some(w) = weights {
            p.tensors = safetensors_header(&w);
            p.tensors_file = p.tensors.as_ref().map(|_| w);
        }
    } else {
        let mut head = Vec::new();
        std::fs::File::open(path)?.take(64).read_to_end(&mut head)?;
        p.head = head;
        p.tensors = safetensors_header(path);
        p.tensors_file = p.tensors.as_ref().map(|_| path.to_path_buf());
        if p.head.starts_with(b"PK") {
            p.zip_names = zip_names(path);
            let lower = path.to_string_lossy().to_lowercase();
            if lower.ends_with(".pt") || lower.ends_with(".pth") {
                p.pickle = p.zip_names.as_deref().and_then(|n| torch_pickle(path, n));
            }
        }
    }
    Ok(p)
}

/// A hub cache folder (`models--org--name`) to the snapshot `refs/main` names, else its only
/// snapshot; any other path as it is.
pub fn hub_snapshot(path: &Path) -> Result<PathBuf, String> {
    let is_repo_folder = path
        .file_name()
        .is_some_and(|n| super::names::repo_of_hub_folder(&n.to_string_lossy()).is_some());
    if !is_repo_folder || !path.join("snapshots").is_dir() {
        return Ok(path.to_path_buf());
    }
    let snapshots = path.join("snapshots");
    if let Ok(main) = std::fs::read_to_string(path.join("refs/main")) {
        let hash = main.trim();
        if super::check_name(hash).is_ok() && snapshots.join(hash).is_dir() {
            return Ok(snapshots.join(hash));
        }
    }
    let found: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .map_err(|e| format!("{}: cannot read: {e}", snapshots.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!(
            "{}: a Hugging Face cache folder with no snapshot (download it again)",
            path.display()
        )),
        _ => Err(format!(
            "{}: several snapshots and no refs/main: give one, e.g. {}",
            path.display(),
            found[0].display()
        )),
    }
}

fn has_prefix(t: &Tensors, prefix: &str) -> bool {
    t.range(prefix.to_string()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(prefix))
}

/// Every key a LoRA file may hold: Kohya/A1111 (`lora_unet_…`, `lora_te…`), SGM and
/// diffusers/PEFT (`….lora_A.weight`, `….lora.down.weight`).
fn is_lora_key(k: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        ".lora_down.weight",
        ".lora_up.weight",
        ".lora_mid.weight",
        ".alpha",
        ".lora_A.weight",
        ".lora_B.weight",
        ".lora.down.weight",
        ".lora.up.weight",
        ".dora_scale",
    ];
    SUFFIXES.iter().any(|s| k.ends_with(s))
}

/// A LoRA's keys: every key is a LoRA key, and each down (A) matrix has its up (B) matrix.
pub fn check_lora(t: &Tensors) -> Result<&'static str, String> {
    if t.is_empty() {
        return Err("holds no tensors".into());
    }
    if let Some(k) = t.keys().find(|k| !is_lora_key(k)) {
        return Err(format!("tensor '{k}' is not a LoRA weight"));
    }
    let pairs = [
        (".lora_down.weight", ".lora_up.weight"),
        (".lora_A.weight", ".lora_B.weight"),
        (".lora.down.weight", ".lora.up.weight"),
    ];
    let mut downs = 0;
    for k in t.keys() {
        for (down, up) in pairs {
            if let Some(stem) = k.strip_suffix(down) {
                downs += 1;
                if !t.contains_key(&format!("{stem}{up}")) {
                    return Err(format!("'{k}' has no '{stem}{up}'"));
                }
            }
        }
    }
    if downs == 0 {
        return Err("holds no LoRA down/up matrix pairs".into());
    }
    Ok(if t.keys().any(|k| k.starts_with("lora_")) {
        "kohya"
    } else {
        "diffusers"
    })
}

/// The open_clip architecture of a checkpoint, from its vision tower's shapes.
fn open_clip_arch(t: &Tensors) -> Option<String> {
    let conv = t.get("visual.conv1.weight")?;
    let pos = t.get("visual.positional_embedding")?;
    let (&width, &patch) = (conv.first()?, conv.get(2)?);
    let tokens = *pos.first()?;
    let grid = ((tokens - 1) as f64).sqrt().round() as i64;
    let image = grid * patch;
    let arch = match (width, patch, image) {
        (768, 32, 224) => "ViT-B-32",
        (768, 16, 224) => "ViT-B-16",
        (1024, 14, 224) => "ViT-L-14",
        (1024, 14, 336) => "ViT-L-14-336",
        (1280, 14, 224) => "ViT-H-14",
        (1664, 14, 224) => "ViT-bigG-14",
        _ => return None,
    };
    Some(arch.to_string())
}

fn model_type(p: &Probe) -> Option<&str> {
    p.json.get("config.json")?.get("model_type")?.as_str()
}

fn class_name<'a>(p: &'a Probe, file: &str) -> Option<&'a str> {
    p.json.get(file)?.get("_class_name")?.as_str()
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// What the probed path holds, or why it is none of the importable kinds.
pub fn detect(p: &Probe) -> Result<Detected, String> {
    let at = |kind, format, source: &Path, arch: Option<String>, what: &str| Detected {
        kind,
        format,
        source: source.to_path_buf(),
        arch,
        what: what.to_string(),
    };
    let path = p.path.as_path();
    if p.is_dir {
        let has = |f: &str| p.entries.iter().any(|e| e == f);
        if has("model_index.json") {
            return Ok(at(
                Kind::Sd,
                "diffusers",
                path,
                None,
                "a diffusers pipeline folder",
            ));
        }
        if class_name(p, "config.json").is_some_and(|c| c.starts_with("ControlNet")) {
            return Ok(at(
                Kind::Controlnet,
                "diffusers",
                path,
                None,
                "a diffusers ControlNet folder",
            ));
        }
        if has("open_clip_config.json") {
            let weights = p.tensors_file.clone().or_else(|| {
                ["open_clip_pytorch_model.bin"]
                    .iter()
                    .find(|w| has(w))
                    .map(|w| path.join(w))
            });
            let Some(weights) = weights else {
                return Err(format!(
                    "{}: an open_clip folder without open_clip_model.safetensors or open_clip_pytorch_model.bin",
                    path.display()
                ));
            };
            let arch = p.tensors.as_ref().and_then(open_clip_arch);
            return Ok(at(
                Kind::Clip,
                "open_clip",
                &weights,
                arch,
                "an open_clip hub folder",
            ));
        }
        if has("model.bin") && has("config.json") {
            return Ok(at(
                Kind::Whisper,
                "ct2",
                path,
                None,
                "a CTranslate2 (faster-whisper) folder",
            ));
        }
        match model_type(p) {
            Some("whisper") => {
                return Ok(at(
                    Kind::Whisper,
                    "hf",
                    path,
                    None,
                    "a transformers Whisper folder",
                ))
            }
            Some("clip") => {
                return Ok(at(Kind::Clip, "hf", path, None, "a transformers CLIP folder"))
            }
            Some(other) => {
                return Err(format!(
                    "{}: config.json says model_type '{other}', which atelier does not import (whisper and clip transformers folders are)",
                    path.display()
                ))
            }
            None => {}
        }
        let pts: Vec<&String> = p.entries.iter().filter(|e| e.ends_with(".pt")).collect();
        if let [one] = pts.as_slice() {
            let file = path.join(one);
            return Err(format!(
                "{}: holds one checkpoint; import the file itself: atelier models import {}",
                path.display(),
                file.display()
            ));
        }
        return Err(format!(
            "{}: not a model folder atelier knows (no model_index.json, config.json with a model_type or ControlNet class, open_clip_config.json, or CTranslate2 model.bin)",
            path.display()
        ));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lower = name.to_ascii_lowercase();
    if let Some(zip) = &p.zip_names {
        if lower.ends_with(".whl") {
            if zip.iter().any(|n| n.ends_with("silero_vad.jit")) {
                return Ok(at(Kind::Vad, "wheel", path, None, "the silero-vad wheel"));
            }
            if zip.iter().any(|n| n.ends_with("resemblyzer/pretrained.pt")) {
                return Ok(at(
                    Kind::Speaker,
                    "wheel",
                    path,
                    None,
                    "the resemblyzer wheel (speaker encoder)",
                ));
            }
            return Err(format!(
                "{}: a wheel without silero_vad/data/silero_vad.jit or resemblyzer/pretrained.pt (only the silero-vad and resemblyzer wheels are imported)",
                path.display()
            ));
        }
    }
    if let Some(t) = &p.tensors {
        if has_prefix(t, "model.diffusion_model.") {
            let inpaint = t
                .get("model.diffusion_model.input_blocks.0.0.weight")
                .and_then(|s| s.get(1))
                .is_some_and(|&c| c == 9);
            let (config, what) = if has_prefix(t, "conditioner.embedders.1.") {
                ("sdxl", "an SDXL single-file checkpoint")
            } else if has_prefix(t, "cond_stage_model.model.") {
                ("sd21", "an SD 2.x single-file checkpoint")
            } else if inpaint {
                (
                    "sd15-inpaint",
                    "an SD 1.x inpainting single-file checkpoint",
                )
            } else {
                ("sd15", "an SD 1.x single-file checkpoint")
            };
            // The built-in configs by the UNet's width: 320 the real ones, 32 the tiny test
            // ones of tools/export/sd_configs.py.
            let tiny = t
                .get("model.diffusion_model.input_blocks.0.0.weight")
                .and_then(|s| s.first())
                .is_some_and(|&w| w == 32);
            let config = match (tiny, config) {
                (false, c) => c.to_string(),
                (true, "sd21") => "tiny-sd21v".to_string(),
                (true, c) => format!("tiny-{c}"),
            };
            if inpaint && !config.ends_with("sd15-inpaint") {
                return Err(format!(
                    "{}: an {config} inpainting checkpoint (only SD 1.x inpainting has a built-in config; import its diffusers folder)",
                    path.display()
                ));
            }
            return Ok(at(Kind::Sd, "single-file", path, Some(config), what));
        }
        if has_prefix(t, "control_model.") || has_prefix(t, "controlnet_cond_embedding.") {
            return Err(format!(
                "{}: a single-file ControlNet; import its diffusers folder (config.json + diffusion_pytorch_model.safetensors)",
                path.display()
            ));
        }
        if t.keys().any(|k| is_lora_key(k)) {
            return match check_lora(t) {
                Ok(format) => Ok(at(Kind::Lora, format, path, None, "a LoRA")),
                Err(problem) => Err(format!("{}: not a usable LoRA: {problem}", path.display())),
            };
        }
        if has_prefix(t, "visual.") && t.contains_key("token_embedding.weight") {
            let arch = open_clip_arch(t);
            return Ok(at(
                Kind::Clip,
                "open_clip",
                path,
                arch,
                "an open_clip checkpoint",
            ));
        }
        return Err(format!(
            "{}: a safetensors file that is none of: an SD/SDXL checkpoint, a LoRA, an open_clip checkpoint",
            path.display()
        ));
    }
    if name == "model.bin" {
        return Ok(at(
            Kind::Whisper,
            "ct2",
            path,
            None,
            "a CTranslate2 model.bin",
        ));
    }
    if lower.ends_with(".pt") || lower.ends_with(".pth") {
        let s = stem(path);
        let known = |family: &str| {
            super::names::KNOWN
                .iter()
                .any(|k| k.family == family && k.names.iter().any(|n| n.eq_ignore_ascii_case(&s)))
        };
        // openai's CLIP files are TorchScript archives (code/ inside); its Whisper files are
        // torch.save dicts of `dims` and `model_state_dict`. A torch.save'd CLIP state dict
        // (openai's or open_clip's layout) names `visual.…` and `token_embedding.weight`.
        let torchscript = p
            .zip_names
            .as_ref()
            .is_some_and(|z| z.iter().any(|n| n.contains("/code/")));
        // Pickled dict keys are stored as their UTF-8 bytes.
        let names = |key: &[u8]| {
            p.pickle
                .as_ref()
                .is_some_and(|d| d.windows(key.len()).any(|w| w == key))
        };
        let clip_state_dict = names(b"token_embedding.weight") && names(b"visual.");
        let whisper_dict = names(b"model_state_dict") && names(b"dims");
        if !whisper_dict && clip_state_dict {
            return Ok(at(
                Kind::Clip,
                "openai",
                path,
                known("clip").then_some(s),
                "a CLIP state dict (openai/open_clip layout)",
            ));
        }
        if whisper_dict || known("whisper") || (!torchscript && !known("clip")) {
            return Ok(at(
                Kind::Whisper,
                "openai",
                path,
                None,
                "an openai-whisper checkpoint",
            ));
        }
        return Ok(at(
            Kind::Clip,
            "openai",
            path,
            known("clip").then_some(s),
            "an openai CLIP checkpoint",
        ));
    }
    Err(format!(
        "{}: not a model file atelier knows (a CTranslate2 model.bin, an openai .pt, an SD/SDXL or open_clip .safetensors, a LoRA .safetensors, the silero-vad wheel, or a model folder)",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, keys: &[(&str, &[i64])]) -> Probe {
        Probe {
            path: PathBuf::from(format!("/x/{name}")),
            tensors: (!keys.is_empty()).then(|| {
                keys.iter()
                    .map(|(k, s)| (k.to_string(), s.to_vec()))
                    .collect()
            }),
            ..Probe::default()
        }
    }

    fn dir(entries: &[&str], json: &[(&str, serde_json::Value)]) -> Probe {
        Probe {
            path: PathBuf::from("/x/folder"),
            is_dir: true,
            entries: entries.iter().map(|e| e.to_string()).collect(),
            json: json
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            ..Probe::default()
        }
    }

    #[test]
    fn folders() {
        let d = detect(&dir(&["model_index.json", "unet"], &[])).unwrap();
        assert_eq!((d.kind, d.format), (Kind::Sd, "diffusers"));
        let cfg = serde_json::json!({"_class_name": "ControlNetModel"});
        let d = detect(&dir(&["config.json"], &[("config.json", cfg)])).unwrap();
        assert_eq!(d.kind, Kind::Controlnet);
        let d = detect(&dir(&["config.json", "model.bin", "vocabulary.txt"], &[])).unwrap();
        assert_eq!((d.kind, d.format), (Kind::Whisper, "ct2"));
        let w = serde_json::json!({"model_type": "whisper"});
        let d = detect(&dir(&["config.json"], &[("config.json", w)])).unwrap();
        assert_eq!((d.kind, d.format), (Kind::Whisper, "hf"));
        let c = serde_json::json!({"model_type": "clip"});
        let d = detect(&dir(&["config.json"], &[("config.json", c)])).unwrap();
        assert_eq!((d.kind, d.format), (Kind::Clip, "hf"));
        let bert = serde_json::json!({"model_type": "bert"});
        let e = detect(&dir(&["config.json"], &[("config.json", bert)])).unwrap_err();
        assert!(e.contains("model_type 'bert'"), "{e}");
        let e = detect(&dir(&["notes.txt", "photo.jpg"], &[])).unwrap_err();
        assert!(e.contains("/x/folder: not a model folder"), "{e}");
    }

    #[test]
    fn single_files_by_keys() {
        let unet = "model.diffusion_model.input_blocks.0.0.weight";
        let sd15 = file("a.safetensors", &[(unet, &[320, 4, 3, 3])]);
        assert_eq!(detect(&sd15).unwrap().arch.as_deref(), Some("sd15"));
        let inpaint = file("a.safetensors", &[(unet, &[320, 9, 3, 3])]);
        assert_eq!(
            detect(&inpaint).unwrap().arch.as_deref(),
            Some("sd15-inpaint")
        );
        let sd21 = file(
            "a.safetensors",
            &[
                (unet, &[320, 4, 3, 3]),
                ("cond_stage_model.model.ln_final.weight", &[1024]),
            ],
        );
        assert_eq!(detect(&sd21).unwrap().arch.as_deref(), Some("sd21"));
        let sdxl = file(
            "a.safetensors",
            &[
                (unet, &[320, 4, 3, 3]),
                ("conditioner.embedders.1.model.ln_final.weight", &[1280]),
            ],
        );
        assert_eq!(detect(&sdxl).unwrap().arch.as_deref(), Some("sdxl"));
        let tiny = file("a.safetensors", &[(unet, &[32, 4, 3, 3])]);
        assert_eq!(detect(&tiny).unwrap().arch.as_deref(), Some("tiny-sd15"));
        let cn = file(
            "cn.safetensors",
            &[("control_model.input_hint_block.0.weight", &[16])],
        );
        assert!(detect(&cn).unwrap_err().contains("single-file ControlNet"));
        let clip = file(
            "c.safetensors",
            &[
                ("visual.conv1.weight", &[768, 3, 32, 32]),
                ("visual.positional_embedding", &[50, 768]),
                ("token_embedding.weight", &[49408, 512]),
            ],
        );
        let d = detect(&clip).unwrap();
        assert_eq!((d.kind, d.arch.as_deref()), (Kind::Clip, Some("ViT-B-32")));
        let other = file("o.safetensors", &[("encoder.weight", &[3])]);
        assert!(detect(&other).unwrap_err().contains("none of"));
    }

    #[test]
    fn lora_keys_are_checked() {
        let kohya = file(
            "l.safetensors",
            &[
                ("lora_unet_down_blocks_0_attn.lora_down.weight", &[4, 320]),
                ("lora_unet_down_blocks_0_attn.lora_up.weight", &[320, 4]),
                ("lora_unet_down_blocks_0_attn.alpha", &[]),
            ],
        );
        assert_eq!(detect(&kohya).unwrap().format, "kohya");
        let peft = file(
            "l.safetensors",
            &[
                ("unet.a.to_q.lora_A.weight", &[4, 320]),
                ("unet.a.to_q.lora_B.weight", &[320, 4]),
            ],
        );
        assert_eq!(detect(&peft).unwrap().format, "diffusers");
        let half = file("l.safetensors", &[("unet.a.to_q.lora_A.weight", &[4, 320])]);
        assert!(detect(&half)
            .unwrap_err()
            .contains("has no 'unet.a.to_q.lora_B.weight'"));
        let mixed = file(
            "l.safetensors",
            &[
                ("x.lora_down.weight", &[4]),
                ("x.lora_up.weight", &[4]),
                ("other", &[1]),
            ],
        );
        assert!(detect(&mixed)
            .unwrap_err()
            .contains("'other' is not a LoRA weight"));
    }

    #[test]
    fn a_torch_save_dict_is_told_by_its_keys_not_its_name() {
        // The pickles of torch.save'd dicts hold their keys as UTF-8 bytes.
        let mut clip = file("my-finetune.pt", &[]);
        clip.pickle = Some(b"\x80\x02}q\x00(X\x14\x00\x00\x00positional_embeddingX\x13\x00\x00\x00visual.conv1.weightX\x16\x00\x00\x00token_embedding.weight".to_vec());
        let d = detect(&clip).unwrap();
        assert_eq!((d.kind, d.format), (Kind::Clip, "openai"));
        // A Whisper checkpoint named like a CLIP model is still Whisper.
        let mut whisper = file("ViT-B-32.pt", &[]);
        whisper.pickle = Some(b"}(X\x04\x00\x00\x00dimsX\x10\x00\x00\x00model_state_dict".to_vec());
        assert_eq!(detect(&whisper).unwrap().kind, Kind::Whisper);
        // No pickle to read (a legacy torch.save): the name decides, as before.
        assert_eq!(
            detect(&file("base.en.pt", &[])).unwrap().kind,
            Kind::Whisper
        );
    }

    #[test]
    fn checkpoints_and_wheels() {
        let pt = file("small.pt", &[]);
        assert_eq!(detect(&pt).unwrap().kind, Kind::Whisper);
        let mut clip = file("ViT-B-32.pt", &[]);
        clip.zip_names = Some(vec!["ViT-B-32/code/__torch__.py".into()]);
        let d = detect(&clip).unwrap();
        assert_eq!((d.kind, d.arch.as_deref()), (Kind::Clip, Some("ViT-B-32")));
        let mut whl = file("silero_vad-6.2.3-py3-none-any.whl", &[]);
        whl.zip_names = Some(vec!["silero_vad/data/silero_vad.jit".into()]);
        assert_eq!(detect(&whl).unwrap().kind, Kind::Vad);
        let mut spk = file("Resemblyzer-0.1.4-py3-none-any.whl", &[]);
        spk.zip_names = Some(vec!["resemblyzer/pretrained.pt".into()]);
        assert_eq!(detect(&spk).unwrap().kind, Kind::Speaker);
        whl.zip_names = Some(vec!["numpy/__init__.py".into()]);
        assert!(detect(&whl).is_err());
        assert!(detect(&file("notes.txt", &[]))
            .unwrap_err()
            .contains("not a model file"));
    }
}
