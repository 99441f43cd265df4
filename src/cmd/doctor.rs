use super::export_tools;
use crate::app::terminal::{describe_protocol, image_picker};
use crate::config::{self, DeviceChoice};
use crate::engine::{runtime, store};
use crate::media::playback;
use serde_json::{json, Value};
use std::process::ExitCode;

/// Prints a report line unless the report is JSON.
macro_rules! say {
    ($json:expr) => { if !$json { println!() } };
    ($json:expr, $($arg:tt)*) => { if !$json { println!($($arg)*) } };
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Prints what Atelier found on this machine (with `json`, one JSON object: docs/models.md
/// lists its fields). Exit 1 when something needed is broken.
pub fn run(loaded: &config::Loaded, device: DeviceChoice, json: bool) -> ExitCode {
    let mut failures = 0;
    let mut report = json!({ "version": env!("CARGO_PKG_VERSION") });
    say!(json, "atelier {}", env!("CARGO_PKG_VERSION"));
    say!(json);
    let torch = runtime::libtorch();
    say!(json, "libtorch");
    say!(
        json,
        "  in use         {} ({})",
        torch.version,
        torch.lib_dir.display()
    );
    say!(json, "  found by       {}", torch.found_by());
    let built_series = runtime::series(runtime::LIBTORCH_VERSION);
    report["libtorch"] = json!({
        "version": torch.version, "lib_dir": torch.lib_dir, "found_by": torch.found_by(),
        "built_against": runtime::LIBTORCH_VERSION,
        "matches": built_series == torch.series(),
    });
    if built_series == torch.series() {
        say!(
            json,
            "  built against  {} ({}): matches",
            runtime::LIBTORCH_VERSION,
            runtime::LIBTORCH_LIB
        );
    } else {
        failures += 1;
        say!(
            json,
            "  built against  {} ({}): MISMATCH, rebuild with tools/dev.sh install --torch {}",
            runtime::LIBTORCH_VERSION,
            runtime::LIBTORCH_LIB,
            torch.lib_dir.parent().unwrap_or(&torch.lib_dir).display()
        );
    }
    match runtime::init() {
        runtime::CudaBackend::Loaded(path) => {
            say!(json, "  cuda backend   loaded ({})", path.display());
            report["libtorch"]["cuda_backend"] = json!({"loaded": true, "path": path});
        }
        runtime::CudaBackend::Unavailable(why) => {
            say!(json, "  cuda backend   not loaded: {why}");
            report["libtorch"]["cuda_backend"] = json!({"loaded": false, "reason": why});
        }
    }
    say!(json);
    say!(json, "export tools");
    let tools = export_tools::tools_root();
    match &tools {
        Ok(root) => say!(
            json,
            "  tools          {}",
            root.join("tools/export").display()
        ),
        Err(e) => say!(json, "  tools          {e}"),
    }
    let python = export_tools::python();
    match &python {
        Ok(py) => say!(
            json,
            "  python         {} (torch {}): matches",
            py.path.display(),
            py.torch.as_deref().unwrap_or("?")
        ),
        Err(e) => say!(json, "  python         {e}"),
    }
    report["export_tools"] = json!({
        "tools": tools.as_ref().ok().map(|r| r.join("tools/export")),
        "tools_error": tools.as_ref().err(),
        "python": python.as_ref().ok().map(|p| &p.path),
        "python_torch": python.as_ref().ok().and_then(|p| p.torch.clone()),
        "python_error": python.as_ref().err(),
    });
    say!(json);
    say!(json, "devices");
    let mut devices = json!({});
    match runtime::gpus() {
        Ok(report) => {
            devices["driver"] = json!(report.driver_version);
            devices["cuda_driver"] = json!(report.cuda_driver_version);
            devices["gpus"] = report
                .gpus
                .iter()
                .map(|g| {
                    json!({"index": g.index, "name": g.name, "total_bytes": g.total_bytes,
                           "free_bytes": g.free_bytes})
                })
                .collect();
            say!(
                json,
                "  driver         NVIDIA {} (CUDA {})",
                report.driver_version.as_deref().unwrap_or("?"),
                report.cuda_driver_version.as_deref().unwrap_or("?")
            );
            for gpu in report.gpus {
                let free = gpu
                    .free_bytes
                    .map(|f| format!(", {} free", gib(f)))
                    .unwrap_or_default();
                say!(
                    json,
                    "  gpu {}          {} ({}{free})",
                    gpu.index,
                    gpu.name,
                    gib(gpu.total_bytes)
                );
            }
        }
        Err(why) => {
            say!(json, "  gpus           none listed: {why}");
            devices["gpus"] = json!([]);
            devices["gpus_error"] = json!(why.to_string());
        }
    }
    devices["cuda_usable"] = json!(runtime::cuda_device_count());
    devices["cuda_absent_reason"] = json!(runtime::cuda_unavailable_reason());
    devices["cpu_threads"] = json!(runtime::cpu_threads());
    match runtime::cuda_unavailable_reason() {
        None => say!(
            json,
            "  cuda           {} GPU(s) usable",
            runtime::cuda_device_count()
        ),
        Some(why) => say!(json, "  cuda           absent: {why}; running on CPU"),
    }
    say!(json, "  cpu threads    {}", runtime::cpu_threads());
    match runtime::resolve_device(device) {
        Ok(d) => {
            say!(json, "  selected       {d:?} (--device {device})");
            devices["selected"] = json!(format!("{d:?}"));
        }
        Err(e) => {
            say!(json, "  selected       error: {e}");
            devices["selected_error"] = json!(e.to_string());
            failures += 1;
        }
    }
    report["devices"] = devices;
    let mut installed = Vec::new();
    say!(json);
    let dir = store::models_dir(&loaded.config.models_dir);
    say!(json, "models           {}", dir.display());
    let models = store::list(&dir);
    if models.is_empty() {
        say!(
            json,
            "  none installed (run tools/dev.sh demo, or `atelier models import`)"
        );
    }
    for model in models {
        match model {
            Ok(m) => {
                let problems = m.verify(true);
                let mf = &m.manifest;
                installed.push(json!({
                    "name": mf.name, "family": mf.family, "variant": mf.variant,
                    "device": mf.device, "dtype": mf.dtype, "exported_with": mf.exported_with,
                    "random_init": mf.random_init, "ok": problems.is_empty(),
                    "problems": problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                }));
                let marker = if m.manifest.random_init {
                    " [random weights: tests only]"
                } else {
                    ""
                };
                if problems.is_empty() {
                    say!(
                        json,
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
                    say!(json, "  BAD   {}", m.name());
                    for p in problems {
                        say!(json, "        {p}");
                    }
                }
            }
            Err(e) => {
                failures += 1;
                say!(json, "  BAD   {e}");
                installed.push(json!({"name": null, "ok": false, "problems": [e.to_string()]}));
            }
        }
    }
    report["models"] = json!({"dir": dir, "installed": installed});
    say!(json);
    say!(json, "configuration");
    if loaded.sources.is_empty() {
        say!(json, "  files          presets only");
    }
    for path in &loaded.sources {
        say!(json, "  file           {}", path.display());
    }
    for e in &loaded.errors {
        say!(json, "  error          {e} (presets used instead)");
    }
    say!(json, "  theme          {}", loaded.theme.name);
    say!(
        json,
        "  log            {}",
        crate::logging::log_path().display()
    );
    report["config"] = json!({
        "files": loaded.sources,
        "errors": loaded.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        "theme": loaded.theme.name, "log": crate::logging::log_path(),
    });
    say!(json);
    say!(json, "terminal");
    let (picker, how) = image_picker(loaded.config.ui.image_protocol);
    let protocol = describe_protocol(&picker, how);
    say!(json, "  image protocol {protocol}");
    report["terminal"] = json!({"image_protocol": protocol});
    say!(json);
    say!(json, "audio");
    match playback::output_device() {
        Ok(name) => {
            say!(json, "  output         {name}");
            report["audio"] = json!({"output": name});
        }
        Err(why) => {
            say!(
                json,
                "  output         none: {why} (transcript playback is off)"
            );
            report["audio"] = json!({"output": Value::Null, "error": why.to_string()});
        }
    }
    report["failures"] = json!(failures);
    report["ok"] = json!(failures == 0);
    if json {
        println!("{report}");
    }
    if failures > 0 {
        super::exit(super::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}
