//! On-disk cache of ensembled label embeddings, so a label set is embedded once per model.
//!
//! The key is a sha256 over the model's and the vocabulary's sha256 (from the manifest), the
//! tokenizer version and every label's resolved prompts (its texts × the templates): editing a
//! label set or its templates, or changing the model, gives another key. One file per key,
//! written atomically: `ATCLIPL1`, n (u32 LE), dim (u32 LE), n × dim f32 LE.
use super::tokenizer::TOKENIZER_VERSION;
use super::zero_shot::LabelSet;
use crate::engine::store::InstalledModel;
use crate::output::atomic::write_atomic;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"ATCLIPL1";

/// `$XDG_CACHE_HOME/atelier/clip-labels`.
pub fn default_dir() -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join("atelier").join("clip-labels"))
}

fn file_sha<'a>(model: &'a InstalledModel, role: &str) -> &'a str {
    model
        .manifest
        .files
        .get(role)
        .map_or("", |f| f.sha256.as_str())
}

/// The cache file of `set` embedded by `model`, under `dir`.
pub fn path(dir: &Path, model: &InstalledModel, set: &LabelSet) -> PathBuf {
    let mut h = Sha256::new();
    for part in [
        file_sha(model, "model"),
        file_sha(model, "bpe"),
        TOKENIZER_VERSION,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for prompts in set.prompts() {
        h.update((prompts.len() as u64).to_le_bytes());
        for p in prompts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p.as_bytes());
        }
    }
    let key = hex::encode(h.finalize());
    let safe: String = set
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(32)
        .collect();
    dir.join(format!("{safe}-{}.bin", &key[..32]))
}

/// The cached embeddings, or None when the file is missing or does not hold `n` rows.
pub fn read(path: &Path, n: usize) -> Option<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).ok()?;
    let header = bytes.get(..16)?;
    if &header[..8] != MAGIC {
        return None;
    }
    let count = u32::from_le_bytes(header[8..12].try_into().ok()?) as usize;
    let dim = u32::from_le_bytes(header[12..16].try_into().ok()?) as usize;
    let body = &bytes[16..];
    if count != n || dim == 0 || body.len() != count * dim * 4 {
        return None;
    }
    let flat: Vec<f32> = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Some(flat.chunks_exact(dim).map(<[f32]>::to_vec).collect())
}

/// Writes the embeddings atomically (a reader never sees half a file).
pub fn write(path: &Path, embeddings: &[Vec<f32>]) -> std::io::Result<()> {
    let dim = embeddings.first().map_or(0, Vec::len);
    if embeddings.iter().any(|e| e.len() != dim) {
        return Err(std::io::Error::other("label embeddings of different sizes"));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut bytes = Vec::with_capacity(16 + embeddings.len() * dim * 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(embeddings.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&(dim as u32).to_le_bytes());
    for x in embeddings.iter().flatten() {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_wrong_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/x.bin");
        let e = vec![vec![1.0, -2.5, 3.0], vec![0.0, 0.5, f32::MIN_POSITIVE]];
        write(&p, &e).unwrap();
        assert_eq!(read(&p, 2), Some(e));
        assert_eq!(read(&p, 3), None);
        std::fs::write(&p, b"ATCLIPL1garbage").unwrap();
        assert_eq!(read(&p, 2), None);
    }
}

/// Where a label set's embeddings came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    Model,
}

/// The ensembled embeddings of `set` by `model`: from the disk cache when it has them, else
/// embedded on `thread` and cached (a cache that cannot be written only costs time later).
/// The one path `atelier tag`, the queue's tag jobs and the TUI take, so each process reuses
/// what another embedded.
pub fn embeddings(
    thread: &crate::engine::DeviceThread,
    model: &InstalledModel,
    set: &LabelSet,
    batch: usize,
) -> Result<(Vec<Vec<f32>>, Source), String> {
    let cache = default_dir().map(|d| path(&d, model, set));
    if let Some(hit) = cache.as_deref().and_then(|p| read(p, set.labels.len())) {
        tracing::info!(set = %set.name, "label embeddings from the cache");
        return Ok((hit, Source::Cache));
    }
    let embs = super::job::label_embeddings(thread, model.clone(), set, batch)?;
    if let Some(p) = &cache {
        if let Err(e) = write(p, &embs) {
            tracing::warn!("cannot cache the label embeddings: {e}");
        }
    }
    Ok((embs, Source::Model))
}
