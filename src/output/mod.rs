//! Output writers: transcripts, the one atomic-write helper, PNG metadata, image numbering.
pub mod atomic;
pub mod numbering;
pub mod png_meta;
pub mod registry;
pub mod sidecar;
pub mod writers;
