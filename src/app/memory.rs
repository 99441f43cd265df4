//! The status bar's memory figure, sampled off the UI thread: the GPU's through NVML, else
//! this process's resident set against the machine's RAM.
use super::Msg;
use crate::config::DeviceChoice;
use crate::engine::runtime;
use crate::state::{Action, Event, Memory};
use std::sync::mpsc::Sender;
use std::time::Duration;

/// Samples memory every `every` and sends `Event::Memory` when the figure (in MiB) changed.
/// CUDA: the GPU's used and total memory through NVML (loaded at run time; without it, no
/// figure). CPU: this process's resident set and the machine's RAM, from /proc.
pub fn spawn_memory_monitor(device: DeviceChoice, tx: Sender<Msg>, every: Duration) {
    std::thread::spawn(move || {
        let gpu = match runtime::resolve_device(device) {
            Ok(tch::Device::Cuda(i)) => Some(i),
            _ => None,
        };
        let nvml = gpu.and_then(|_| {
            nvml_wrapper::Nvml::init()
                .map_err(|e| tracing::info!("no GPU memory figure: NVML: {e}"))
                .ok()
        });
        let mut last = None;
        loop {
            let m = match (gpu, &nvml) {
                (Some(i), Some(nvml)) => gpu_memory(nvml, i),
                (Some(_), None) => None,
                (None, _) => process_memory(),
            };
            let shown = m.map(|m| (m.used >> 20, m.total >> 20));
            if let (Some(m), true) = (m, shown != last) {
                last = shown;
                if tx
                    .send(Msg::Action(Action::Event(Event::Memory(m))))
                    .is_err()
                {
                    return;
                }
            }
            std::thread::sleep(every);
        }
    });
}

/// The NVML device behind CUDA device `index`: CUDA numbers only the visible devices, NVML
/// all of them, so `CUDA_VISIBLE_DEVICES` (indices or UUIDs) maps one onto the other.
fn gpu_memory(nvml: &nvml_wrapper::Nvml, index: usize) -> Option<Memory> {
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let entry = visible
        .as_deref()
        .and_then(|v| v.split(',').nth(index).map(|s| s.trim().to_string()));
    let device = match entry {
        Some(e) if e.starts_with("GPU-") || e.starts_with("MIG-") => nvml.device_by_uuid(e),
        Some(e) => nvml.device_by_index(e.parse().ok()?),
        None => nvml.device_by_index(index as u32),
    }
    .ok()?;
    let info = device.memory_info().ok()?;
    Some(Memory {
        used: info.used,
        total: info.total,
        gpu: true,
    })
}

fn proc_kib(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// This process's resident set (VmRSS) and the machine's RAM (MemTotal).
pub fn process_memory() -> Option<Memory> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    Some(Memory {
        used: proc_kib(&status, "VmRSS:")?,
        total: proc_kib(&meminfo, "MemTotal:")?,
        gpu: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_figures_are_read_in_bytes() {
        assert_eq!(
            proc_kib("Name:\tx\nVmRSS:\t  2048 kB\n", "VmRSS:"),
            Some(2048 * 1024)
        );
        assert_eq!(proc_kib("MemTotal: 8 kB", "MemFree:"), None);
        let m = process_memory().unwrap();
        assert!(!m.gpu && m.used > 0 && m.used < m.total);
    }
}
