//! Headless commands: each returns the process exit code (0 ok, 1 failure, 2 usage/config).
pub mod clip;
pub mod config;
pub mod doctor;
pub mod export_tools;
pub mod generate;
pub mod import;
pub mod man;
pub mod models;
pub mod queue;
pub mod transcribe;
pub mod watch;

use std::process::ExitCode;

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

pub fn exit(code: u8) -> ExitCode {
    ExitCode::from(code)
}
