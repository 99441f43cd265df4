//! The runners of the job kinds that exist in this build.
mod checksum;

pub use checksum::ChecksumRunner;
