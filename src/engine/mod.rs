//! The only module that touches tch. Everything above it sees plain Rust types.
pub mod clip;
pub mod diffusion;
pub mod runtime;
pub mod speaker;
pub mod store;
pub mod whisper;

pub use runtime::{CancelToken, DeviceThread};
pub use store::{InstalledModel, Manifest, StoreError};
