//! Transcript writers.
pub mod atomic;
pub mod writers;
