//! The runners of the job kinds that exist in this build. `generate` has none yet: its jobs
//! fail with "not available in this build" until a diffusion runner is inserted into
//! [`crate::jobs::Runners`].
mod checksum;
mod clip;
mod whisper;

pub use checksum::ChecksumRunner;
pub use clip::ClipRunner;
pub use whisper::WhisperRunner;
