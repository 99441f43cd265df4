//! The runners of the job kinds. A kind without a runner in [`crate::jobs::Runners`] fails
//! its jobs with "not available in this build".
mod checksum;
mod clip;
mod generate;
mod whisper;

pub use checksum::ChecksumRunner;
pub use clip::ClipRunner;
pub use generate::GenerateRunner;
pub use whisper::WhisperRunner;
