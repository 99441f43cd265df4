//! `checksum`: SHA-256 of the input into `NAME.sha256` (sha256sum's format).
use crate::jobs::{Job, RunContext, RunError, Runner};
use crate::output::atomic::output_path;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::PathBuf;

/// A cheap kind that goes through the same queue, journal and output writes as the others.
#[derive(Debug, Default)]
pub struct ChecksumRunner;

const CHUNK: usize = 1 << 20;

impl Runner for ChecksumRunner {
    fn run(&self, job: &Job, ctx: &RunContext) -> Result<Vec<PathBuf>, RunError> {
        let unreadable =
            |e: std::io::Error| RunError::Permanent(format!("cannot read the file: {e}"));
        let mut file = std::fs::File::open(&job.input).map_err(unreadable)?;
        let total = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut done = 0u64;
        loop {
            ctx.check_cancel()?;
            let n = file.read(&mut buf).map_err(unreadable)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            done += n as u64;
            if total > CHUNK as u64 {
                ctx.progress(Some(done as f32 / total as f32), "hashing");
            }
        }
        let name = job.input.file_name().unwrap_or_default().to_string_lossy();
        let line = format!("{}  {name}\n", hex::encode(hasher.finalize()));
        let out = output_path(&job.output_dir(), &job.input, "sha256");
        Ok(vec![ctx.write(&out, line.as_bytes())?])
    }
}
