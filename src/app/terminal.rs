//! Terminal ownership: a guard that restores the terminal on drop, a panic hook that
//! restores first and logs the backtrace, and stderr redirected away from the screen.
use crate::config::ImageProtocol;
use crate::media::playback::StderrSilencer;
use crossterm::{event, execute, terminal};
use std::io::{stdout, Write};

pub struct TerminalGuard {
    _stderr: StderrSilencer,
}

fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        stdout(),
        event::DisableMouseCapture,
        terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    );
    let _ = stdout().flush();
}

impl TerminalGuard {
    /// Enters raw mode and the alternate screen. stderr goes to `stderr.log` in the state dir
    /// until the guard drops, so libtorch or ALSA chatter never scribbles over the panes.
    pub fn enter(mouse: bool) -> std::io::Result<Self> {
        install_panic_hook();
        let stderr_log = crate::logging::state_dir().join("stderr.log");
        let guard = TerminalGuard {
            _stderr: StderrSilencer::redirect_to(&stderr_log),
        };
        terminal::enable_raw_mode()?;
        execute!(stdout(), terminal::EnterAlternateScreen)?;
        if mouse {
            execute!(stdout(), event::EnableMouseCapture)?;
        }
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            let backtrace = std::backtrace::Backtrace::force_capture();
            tracing::error!("panic: {info}\n{backtrace}");
            previous(info);
        }));
    });
}

/// The image protocol to use: the config's choice, else a guess from the environment.
/// (The TUI refines `auto` by querying the terminal.)
pub fn detect_image_protocol(configured: ImageProtocol) -> String {
    let tmux = std::env::var_os("TMUX").is_some();
    let via = if tmux { " via tmux passthrough" } else { "" };
    if configured != ImageProtocol::Auto {
        return format!("{configured:?} (from config){via}").to_lowercase();
    }
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let term = env("TERM");
    let program = env("TERM_PROGRAM");
    let guess = if std::env::var_os("KITTY_WINDOW_ID").is_some()
        || term.contains("kitty")
        || program == "ghostty"
    {
        "kitty"
    } else if program == "iTerm.app" || program == "WezTerm" {
        "iterm2"
    } else if term.contains("sixel") || term.starts_with("foot") || term.contains("mlterm") {
        "sixel"
    } else {
        "halfblocks"
    };
    format!("{guess} (detected from TERM={term:?}){via}")
}
