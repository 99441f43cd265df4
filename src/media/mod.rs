//! Audio and image input/output, the table of file types and the folder walker.
pub mod audio;
pub mod files;
pub mod playback;

pub use files::{resolves_inside, walk, walk_root, MediaKind};
