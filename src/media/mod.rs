//! Audio and image input/output.
pub mod audio;
pub mod playback;
