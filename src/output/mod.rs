//! Transcript writers.
pub mod atomic;
pub mod png_meta;
pub mod writers;
