//! The one table of the file types Atelier reads, by extension.
use std::path::Path;

/// What a file holds, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Image,
    /// A Stable Diffusion prompt file (a plain prompt or an A1111 infotext).
    Prompt,
    /// Anything else (a checksum job takes any file).
    Other,
}

/// Every kind with its name and the extensions it reads (lower case), in the order shown to
/// users. `Other` has no extensions: it is what no other kind claims.
const TABLE: &[(MediaKind, &str, &[&str])] = &[
    (
        MediaKind::Audio,
        "audio",
        &[
            "wav", "mp3", "m4a", "flac", "ogg", "opus", "aac", "wma", "mp4", "mkv", "mov", "webm",
            "avi",
        ],
    ),
    (
        MediaKind::Image,
        "image",
        &["jpg", "jpeg", "png", "gif", "webp", "bmp", "tif", "tiff"],
    ),
    (MediaKind::Prompt, "prompt", &["prompt", "txt"]),
    (MediaKind::Other, "other", &[]),
];

impl MediaKind {
    pub const ALL: &'static [MediaKind] = &[
        MediaKind::Audio,
        MediaKind::Image,
        MediaKind::Prompt,
        MediaKind::Other,
    ];

    fn row(self) -> Option<&'static (MediaKind, &'static str, &'static [&'static str])> {
        TABLE.iter().find(|(k, _, _)| *k == self)
    }

    pub fn name(self) -> &'static str {
        self.row().map_or("?", |r| r.1)
    }

    /// The extensions of this kind (lower case, no dot).
    pub fn extensions(self) -> &'static [&'static str] {
        self.row().map_or(&[], |r| r.2)
    }

    /// The kind of `path` by its extension (case-insensitive); `Other` when none matches.
    pub fn of(path: &Path) -> MediaKind {
        let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
            return MediaKind::Other;
        };
        let ext = ext.to_ascii_lowercase();
        TABLE
            .iter()
            .find(|(_, _, exts)| exts.contains(&ext.as_str()))
            .map_or(MediaKind::Other, |r| r.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_extension_ignore_case() {
        assert_eq!(MediaKind::of(Path::new("/a/b.WAV")), MediaKind::Audio);
        assert_eq!(MediaKind::of(Path::new("c.Jpeg")), MediaKind::Image);
        assert_eq!(MediaKind::of(Path::new("d.prompt")), MediaKind::Prompt);
        assert_eq!(MediaKind::of(Path::new("e.bin")), MediaKind::Other);
        assert_eq!(MediaKind::of(Path::new("noext")), MediaKind::Other);
    }

    #[test]
    fn each_extension_belongs_to_one_kind() {
        let mut seen = std::collections::HashSet::new();
        for k in MediaKind::ALL {
            for e in k.extensions() {
                assert!(seen.insert(*e), "{e} is in two kinds");
            }
        }
    }
}
