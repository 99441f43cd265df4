use super::export_tools;
use crate::app::terminal::{describe_protocol, image_picker};
use crate::config::{self, DeviceChoice};
use crate::engine::{runtime, store};
use crate::media::playback;
use std::process::ExitCode;

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Prints what Atelier found on this machine. Exit 1 when something needed is broken.
pub fn run(loaded: &config::Loaded, device: DeviceChoice) -> ExitCode {
    let mut failures = 0;
    println!("atelier {}", env!("CARGO_PKG_VERSION"));
    println!();
    let torch = runtime::libtorch();
    println!("libtorch");
    println!(
        "  in use         {} ({})",
        torch.version,
        torch.lib_dir.display()
    );
    println!("  found by       {}", torch.found_by());
    let built_series = runtime::series(runtime::LIBTORCH_VERSION);
    if built_series == torch.series() {
        println!(
            "  built against  {} ({}): matches",
            runtime::LIBTORCH_VERSION,
            runtime::LIBTORCH_LIB
        );
    } else {
        failures += 1;
        println!(
            "  built against  {} ({}): MISMATCH, rebuild with tools/dev.sh install --torch {}",
            runtime::LIBTORCH_VERSION,
            runtime::LIBTORCH_LIB,
            torch.lib_dir.parent().unwrap_or(&torch.lib_dir).display()
        );
    }
    match runtime::init() {
        runtime::CudaBackend::Loaded(path) => {
            println!("  cuda backend   loaded ({})", path.display())
        }
        runtime::CudaBackend::Unavailable(why) => println!("  cuda backend   not loaded: {why}"),
    }
    println!();
    println!("export tools");
    match export_tools::tools_root() {
        Ok(root) => println!("  tools          {}", root.join("tools/export").display()),
        Err(e) => println!("  tools          {e}"),
    }
    match export_tools::python() {
        Ok(py) => println!(
            "  python         {} (torch {}): matches",
            py.path.display(),
            py.torch.as_deref().unwrap_or("?")
        ),
        Err(e) => println!("  python         {e}"),
    }
    println!();
    println!("devices");
    match runtime::gpus() {
        Ok(report) => {
            println!(
                "  driver         NVIDIA {} (CUDA {})",
                report.driver_version.as_deref().unwrap_or("?"),
                report.cuda_driver_version.as_deref().unwrap_or("?")
            );
            for gpu in report.gpus {
                let free = gpu
                    .free_bytes
                    .map(|f| format!(", {} free", gib(f)))
                    .unwrap_or_default();
                println!(
                    "  gpu {}          {} ({}{free})",
                    gpu.index,
                    gpu.name,
                    gib(gpu.total_bytes)
                );
            }
        }
        Err(why) => println!("  gpus           none listed: {why}"),
    }
    match runtime::cuda_unavailable_reason() {
        None => println!(
            "  cuda           {} GPU(s) usable",
            runtime::cuda_device_count()
        ),
        Some(why) => println!("  cuda           absent: {why}; running on CPU"),
    }
    println!("  cpu threads    {}", runtime::cpu_threads());
    match runtime::resolve_device(device) {
        Ok(d) => println!("  selected       {d:?} (--device {device})"),
        Err(e) => {
            println!("  selected       error: {e}");
            failures += 1;
        }
    }
    println!();
    let dir = store::models_dir(&loaded.config.models_dir);
    println!("models           {}", dir.display());
    let models = store::list(&dir);
    if models.is_empty() {
        println!("  none installed (run tools/dev.sh demo, or `atelier models import`)");
    }
    for model in models {
        match model {
            Ok(m) => {
                let problems = m.verify(true);
                let marker = if m.manifest.random_init {
                    " [random weights: tests only]"
                } else {
                    ""
                };
                if problems.is_empty() {
                    println!(
                        "  ok    {:<24} {} {} {}/{} ({}){marker}",
                        m.name(),
                        m.manifest.family,
                        m.manifest.variant,
                        m.manifest.device,
                        m.manifest.dtype,
                        if m.manifest.exported_with.is_empty() {
                            "exported with an unrecorded torch"
                        } else {
                            &m.manifest.exported_with
                        }
                    );
                } else {
                    failures += 1;
                    println!("  BAD   {}", m.name());
                    for p in problems {
                        println!("        {p}");
                    }
                }
            }
            Err(e) => {
                failures += 1;
                println!("  BAD   {e}");
            }
        }
    }
    println!();
    println!("configuration");
    if loaded.sources.is_empty() {
        println!("  files          presets only");
    }
    for path in &loaded.sources {
        println!("  file           {}", path.display());
    }
    for e in &loaded.errors {
        println!("  error          {e} (presets used instead)");
    }
    println!("  theme          {}", loaded.theme.name);
    println!("  log            {}", crate::logging::log_path().display());
    println!();
    println!("terminal");
    let (picker, how) = image_picker(loaded.config.ui.image_protocol);
    println!("  image protocol {}", describe_protocol(&picker, how));
    println!();
    println!("audio");
    match playback::output_device() {
        Ok(name) => println!("  output         {name}"),
        Err(why) => println!("  output         none: {why} (transcript playback is off)"),
    }
    if failures > 0 {
        super::exit(super::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}
