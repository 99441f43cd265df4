//! Logging to `$XDG_STATE_HOME/atelier/atelier.log`; the level comes from `ATELIER_LOG`,
//! else the config. Nothing is logged to the terminal: the TUI owns it.
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

pub fn state_dir() -> PathBuf {
    dirs::state_dir()
        .or_else(dirs::data_local_dir)
        .unwrap_or_else(std::env::temp_dir)
        .join("atelier")
}

pub fn log_path() -> PathBuf {
    state_dir().join("atelier.log")
}

/// Starts file logging. Keep the guard alive for the life of the program.
pub fn init(config_level: &str) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let dir = state_dir();
    std::fs::create_dir_all(&dir).ok()?;
    let filter = EnvFilter::try_from_env("ATELIER_LOG")
        .or_else(|_| EnvFilter::try_new(config_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let appender = tracing_appender::rolling::never(&dir, "atelier.log");
    let (writer, guard) = tracing_appender::non_blocking(appender);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .try_init()
        .ok()?;
    Some(guard)
}
