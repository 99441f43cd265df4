//! Audio output through cpal.
use cpal::traits::{DeviceTrait, HostTrait};

/// Redirects the process's stderr to /dev/null while alive: ALSA and libtorch print there
/// directly, which would scribble over the TUI or clutter `doctor`.
pub struct StderrSilencer {
    saved: Option<i32>,
}

impl StderrSilencer {
    pub fn new() -> Self {
        Self::redirect_to(std::path::Path::new("/dev/null"))
    }

    /// Sends stderr to `path` (appending) until dropped.
    pub fn redirect_to(path: &std::path::Path) -> Self {
        use std::os::unix::io::AsRawFd;
        let Ok(target) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        else {
            return StderrSilencer { saved: None };
        };
        // SAFETY: dup/dup2 on the process's own stderr with a valid open descriptor.
        let saved = unsafe {
            let saved = libc::dup(2);
            if saved < 0 || libc::dup2(target.as_raw_fd(), 2) < 0 {
                None
            } else {
                Some(saved)
            }
        };
        StderrSilencer { saved }
    }
}

impl Default for StderrSilencer {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for StderrSilencer {
    fn drop(&mut self) {
        if let Some(fd) = self.saved.take() {
            // SAFETY: restores the descriptor saved in `redirect_to`.
            unsafe {
                libc::dup2(fd, 2);
                libc::close(fd);
            }
        }
    }
}

/// The default output device's name, or why there is none.
pub fn output_device() -> Result<String, String> {
    let _quiet = StderrSilencer::new();
    let host = cpal::default_host();
    let device = host
        .default_output_device()
        .ok_or_else(|| format!("no audio output device ({} host)", host.id().name()))?;
    let name = device
        .description()
        .map(|d| d.to_string())
        .unwrap_or_else(|_| "default".to_string());
    match device.default_output_config() {
        Ok(cfg) => Ok(format!(
            "{name} ({} Hz, {} ch)",
            cfg.sample_rate(),
            cfg.channels()
        )),
        Err(e) => Err(format!("{name}: unusable: {e}")),
    }
}
