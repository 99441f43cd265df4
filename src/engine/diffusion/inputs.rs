//! What a generation reads and how its images are described and named: LoRA files, the init,
//! mask and control images at the requested size, the model's native size, the A1111 infotext
//! and `NNNNN-SEED.png` numbering. Shared by `atelier generate`, the queue's generate runner and
//! the TUI's generate pane, so the three write the same images the same way.
use super::infotext::GenerationParams;
use super::pipeline::{Generation, Request};
use crate::engine::store::{self, InstalledModel};
use std::path::{Path, PathBuf};

/// The LoRA folder: `[diffusion] lora-dir`, else `<models dir>/lora`.
pub fn lora_dir(configured: &str, models_dir: &Path) -> PathBuf {
    if configured.is_empty() {
        models_dir.join("lora")
    } else {
        PathBuf::from(configured)
    }
}

/// An explicit LoRA argument (`--lora PATH:W`): an existing file as given, else a name as
/// [`resolve_lora`] resolves it.
pub fn resolve_lora_arg(name: &str, dir: &Path) -> Result<PathBuf, String> {
    let as_path = PathBuf::from(name);
    if as_path.is_file() {
        return Ok(as_path);
    }
    resolve_lora(name, dir)
}

/// A LoRA name (from a prompt's `<lora:NAME:W>`) to `NAME.safetensors` in the LoRA folder:
/// a single name, never a path, and a file that stays in the folder once symlinks are followed.
pub fn resolve_lora(name: &str, dir: &Path) -> Result<PathBuf, String> {
    if let Err(problem) = store::check_name(name) {
        return Err(format!(
            "LoRA '{name}': a LoRA name {problem}; it names NAME.safetensors in {}",
            dir.display()
        ));
    }
    let file = dir.join(format!("{name}.safetensors"));
    if file.is_file() {
        let inside = match (std::fs::canonicalize(&file), std::fs::canonicalize(dir)) {
            (Ok(f), Ok(d)) => f.starts_with(d),
            _ => false,
        };
        if !inside {
            return Err(format!(
                "LoRA '{name}': {} leads outside the LoRA folder {}",
                file.display(),
                dir.display()
            ));
        }
        return Ok(file);
    }
    let known: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let p = e.path();
                    (p.extension().is_some_and(|x| x == "safetensors"))
                        .then(|| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                        .flatten()
                })
                .collect()
        })
        .unwrap_or_default();
    Err(format!(
        "unknown LoRA '{name}': {} does not exist (LoRAs in {}: {})",
        file.display(),
        dir.display(),
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    ))
}

/// Resolves `(name, weight)` LoRAs to files.
pub fn resolve_loras(specs: &[(String, f64)], dir: &Path) -> Result<Vec<(PathBuf, f64)>, String> {
    specs
        .iter()
        .map(|(name, w)| resolve_lora(name, dir).map(|p| (p, *w)))
        .collect()
}

/// The model's native image size in pixels (`sample_size` × the VAE scale factor).
pub fn native_size(model: &InstalledModel) -> i64 {
    model
        .manifest
        .config
        .get("sample_size")
        .and_then(|v| v.as_integer())
        .unwrap_or(64)
        * model.manifest.dim("vae_scale_factor").unwrap_or(8)
}

/// An RGB image at `w`×`h` (Lanczos when it is another size, with a note saying so).
pub fn load_rgb_sized(
    path: &Path,
    what: &str,
    w: i64,
    h: i64,
) -> Result<(image::RgbImage, Option<String>), String> {
    let img = image::open(path)
        .map(|i| i.to_rgb8())
        .map_err(|e| format!("{}: cannot read the {what}: {e}", path.display()))?;
    if img.dimensions() == (w as u32, h as u32) {
        return Ok((img, None));
    }
    let note = format!(
        "{}: {}x{} resized to {w}x{h}",
        path.display(),
        img.width(),
        img.height()
    );
    let resized = image::imageops::resize(
        &img,
        w as u32,
        h as u32,
        image::imageops::FilterType::Lanczos3,
    );
    Ok((resized, Some(note)))
}

/// A grayscale mask at `w`×`h` (nearest when it is another size, with a note saying so).
pub fn load_mask_sized(
    path: &Path,
    w: u32,
    h: u32,
    image: &Path,
) -> Result<(image::GrayImage, Option<String>), String> {
    let mask = image::open(path)
        .map(|i| i.to_luma8())
        .map_err(|e| format!("{}: cannot read the mask: {e}", path.display()))?;
    if mask.dimensions() == (w, h) {
        return Ok((mask, None));
    }
    let note = format!(
        "{}: the mask is {}x{} but the image {} is {w}x{h}; the mask is rescaled",
        path.display(),
        mask.width(),
        mask.height(),
        image.display()
    );
    let resized = image::imageops::resize(&mask, w, h, image::imageops::FilterType::Nearest);
    Ok((resized, Some(note)))
}

/// The infotext of a request before it runs (first image's seed, no model hash yet); see
/// [`for_image`] for each image it made.
pub fn describe(req: &Request, model_name: &str) -> GenerationParams {
    let lora_hashes: Vec<(String, String)> = req
        .loras
        .iter()
        .filter_map(|(path, _)| {
            let name = path.file_stem()?.to_string_lossy().into_owned();
            let hash = store::sha256_file(path).ok()?;
            Some((name, hash.chars().take(12).collect()))
        })
        .collect();
    GenerationParams {
        prompt: req.prompt.clone(),
        negative_prompt: req.negative.clone(),
        steps: req.steps as u32,
        sampler: req.scheduler.a1111_sampler().to_string(),
        schedule_type: Some(req.scheduler.a1111_schedule_type().to_string()),
        cfg_scale: req.guidance,
        seed: req.seed,
        width: req.width as u32,
        height: req.height as u32,
        model_hash: None,
        model: Some(model_name.to_string()),
        denoising_strength: req.init.as_ref().map(|i| i.strength),
        variation_seed: req.variation.map(|(v, _)| v),
        variation_strength: req.variation.map(|(_, s)| s),
        rng: Some("CPU".into()),
        lora_hashes,
        version: Some(format!("atelier {}", env!("CARGO_PKG_VERSION"))),
        ..Default::default()
    }
}

/// The infotext of image `index` of a batch: its own seed and variation seed, the model hash.
pub fn for_image(
    base: &GenerationParams,
    generation: &Generation,
    index: usize,
) -> GenerationParams {
    let mut p = base.clone();
    p.seed = generation
        .seeds
        .get(index)
        .copied()
        .unwrap_or(base.seed.wrapping_add(index as u64));
    p.variation_seed = base.variation_seed.map(|v| v.wrapping_add(index as u64));
    p.model_hash = Some(generation.model_hash.clone()).filter(|h| !h.is_empty());
    p
}

/// The next free `NNNNN` among files named `NNNNN-…` in `dir`.
pub fn next_number(dir: &Path) -> u32 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let digits: String = name.chars().take_while(|c| c.is_ascii_digit()).collect();
                    (digits.len() >= 5 && name[digits.len()..].starts_with('-'))
                        .then(|| digits.parse::<u32>().ok())
                        .flatten()
                })
                .max()
                .map_or(0, |n| n + 1)
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_continues_after_the_highest() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(next_number(dir.path()), 0);
        std::fs::write(dir.path().join("00003-42.png"), b"").unwrap();
        std::fs::write(dir.path().join("00001-7.png"), b"").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"").unwrap();
        assert_eq!(next_number(dir.path()), 4);
    }

    #[test]
    fn an_unknown_lora_names_the_file_and_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ink.safetensors"), b"").unwrap();
        let err = resolve_lora("ghost", dir.path()).unwrap_err();
        assert!(err.contains("unknown LoRA 'ghost'"), "{err}");
        assert!(err.contains("ink"), "{err}");
        assert_eq!(
            resolve_lora("ink", dir.path()).unwrap(),
            dir.path().join("ink.safetensors")
        );
    }
}
