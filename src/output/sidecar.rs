//! The tag sidecars of an image, the one format `atelier tag --write-sidecar`, the queue's
//! `tag` jobs and the TUI's tags pane write and read: `NAME.tags.json`
//! (`{"path": …, "labels": [{"label": …, "score": …}, …]}`, the score left out for tags set
//! by hand) and the caption `NAME.txt` (`label, label, …`), the caption file trainers such
//! as kohya_ss read beside each image.
use std::path::{Path, PathBuf};

use super::atomic::output_path;
use super::registry::{write_output, OutputRegistry};

/// What the output record calls sidecars (see [`super::registry`]).
pub const KIND: &str = "tags";

/// One tag: its label and, when a model gave it, its score.
#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    pub label: String,
    pub score: Option<f64>,
}

impl Tag {
    pub fn scored(label: impl Into<String>, score: f64) -> Self {
        Tag {
            label: label.into(),
            score: Some(score),
        }
    }
    pub fn manual(label: impl Into<String>) -> Self {
        Tag {
            label: label.into(),
            score: None,
        }
    }
}

/// `NAME.tags.json` and `NAME.txt` for `image` in `dir` (openai's output naming: the last
/// extension is replaced).
pub fn paths_in(dir: &Path, image: &Path) -> (PathBuf, PathBuf) {
    (
        output_path(dir, image, "tags.json"),
        output_path(dir, image, "txt"),
    )
}

/// [`paths_in`] the image's own folder.
pub fn paths(image: &Path) -> (PathBuf, PathBuf) {
    let dir = image
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    paths_in(dir, image)
}

/// The JSON record of `image`'s tags.
pub fn record(image: &Path, tags: &[Tag]) -> serde_json::Value {
    let labels: Vec<serde_json::Value> = tags
        .iter()
        .map(|t| match t.score {
            Some(s) => serde_json::json!({"label": t.label, "score": s}),
            None => serde_json::json!({"label": t.label}),
        })
        .collect();
    serde_json::json!({"path": image.to_string_lossy(), "labels": labels})
}

/// The bytes of both files: (`NAME.tags.json`, `NAME.txt`).
pub fn contents(image: &Path, tags: &[Tag]) -> (Vec<u8>, Vec<u8>) {
    let json = format!("{:#}\n", record(image, tags)).into_bytes();
    let labels: Vec<&str> = tags.iter().map(|t| t.label.as_str()).collect();
    let caption = format!("{}\n", labels.join(", ")).into_bytes();
    (json, caption)
}

/// Writes both sidecars of `image` beside it. A file at either name that is not our unchanged
/// sidecar of this image (a user's own `NAME.txt`) is kept and the sidecar takes
/// `NAME.1.tags.json`/`NAME.1.txt`. Returns the paths written.
pub fn write(
    registry: Option<&OutputRegistry>,
    image: &Path,
    tags: &[Tag],
) -> std::io::Result<(PathBuf, PathBuf)> {
    let (json_path, txt_path) = paths(image);
    let (json, caption) = contents(image, tags);
    let json_written = write_output(registry, &json_path, image, KIND, &json)?;
    let txt_written = write_output(registry, &txt_path, image, KIND, &caption)?;
    Ok((json_written, txt_written))
}

/// Removes `image`'s sidecars where they are our unchanged outputs (never a user's file).
/// Returns how many were removed.
pub fn remove(registry: Option<&OutputRegistry>, image: &Path) -> std::io::Result<usize> {
    let Some(registry) = registry else {
        return Ok(0);
    };
    let ours = registry.outputs_of(image, KIND);
    for p in &ours {
        std::fs::remove_file(p)?;
    }
    Ok(ours.len())
}

/// The labels of `image`'s `NAME.tags.json`, if it has one that parses.
pub fn read(image: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(paths(image).0).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(
        v.get("labels")?
            .as_array()?
            .iter()
            .filter_map(|l| l.get("label").and_then(|s| s.as_str()).map(str::to_string))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecars_round_trip_and_keep_a_users_caption() {
        let dir = tempfile::tempdir().unwrap();
        let reg = OutputRegistry::open(&dir.path().join("outputs.sqlite")).unwrap();
        let image = dir.path().join("cat.photo.jpg");
        std::fs::write(&image, b"jpeg").unwrap();
        let mine = dir.path().join("cat.photo.txt");
        std::fs::write(&mine, b"my caption\n").unwrap();
        let tags = [Tag::scored("cat", 0.9), Tag::manual("pet")];
        let (json, txt) = write(Some(&reg), &image, &tags).unwrap();
        assert_eq!(json, dir.path().join("cat.photo.tags.json"));
        assert_eq!(txt, dir.path().join("cat.photo.1.txt"));
        assert_eq!(std::fs::read(&mine).unwrap(), b"my caption\n");
        assert_eq!(std::fs::read_to_string(&txt).unwrap(), "cat, pet\n");
        assert_eq!(read(&image).unwrap(), vec!["cat", "pet"]);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert!((v["labels"][0]["score"].as_f64().unwrap() - 0.9).abs() < 1e-6);
        assert!(v["labels"][1].get("score").is_none());
        // Removing takes ours (the JSON and NAME.1.txt) and leaves the user's caption.
        assert_eq!(remove(Some(&reg), &image).unwrap(), 2);
        assert!(!json.exists() && !txt.exists());
        assert!(mine.exists());
    }
}
