//! The shared vocabulary: plain types every layer may name, depending on nothing else in the
//! crate (no engine, no jobs, no tch). `state/`, `ui/` and `config/` take their names from
//! here (checked by `tests/layers.rs`).
mod device;
mod job;
mod media;
mod scheduler;

pub use device::DeviceChoice;
pub use job::{JobId, JobKind, JobState};
pub use media::MediaKind;
pub use scheduler::SchedulerKind;
