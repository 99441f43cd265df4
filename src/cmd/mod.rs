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

/// A command's error: the one line to print and the exit code it carries (1 a runtime
/// failure, 2 a usage or configuration error). Commands return it up to their entry point,
/// which reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdError {
    pub code: u8,
    pub message: String,
}

impl CmdError {
    /// A runtime failure (exit 1).
    pub fn failure(message: impl std::fmt::Display) -> Self {
        CmdError {
            code: EXIT_FAILURE,
            message: message.to_string(),
        }
    }

    /// A usage or configuration error (exit 2).
    pub fn usage(message: impl std::fmt::Display) -> Self {
        CmdError {
            code: EXIT_USAGE,
            message: message.to_string(),
        }
    }

    /// Prints `error: MESSAGE` on stderr and gives the exit code.
    pub fn report(self) -> ExitCode {
        eprintln!("error: {}", self.message);
        exit(self.code)
    }
}

impl std::fmt::Display for CmdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<CmdError> for ExitCode {
    fn from(e: CmdError) -> ExitCode {
        e.report()
    }
}

/// Reports a runtime failure (exit 1).
pub fn fail(message: impl std::fmt::Display) -> ExitCode {
    CmdError::failure(message).report()
}

/// Reports a usage or configuration error (exit 2).
pub fn usage(message: impl std::fmt::Display) -> ExitCode {
    CmdError::usage(message).report()
}

pub fn exit(code: u8) -> ExitCode {
    ExitCode::from(code)
}
