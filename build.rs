//! Adds an rpath to libtorch so `atelier`, `cargo run` and `cargo test` start without
//! `LD_LIBRARY_PATH`, and records the libtorch folder and version for `atelier doctor`, and
//! the export tools' Python for `atelier models import`.
use std::path::{Path, PathBuf};

fn main() {
    for var in [
        "DEP_TCH_LIBTORCH_LIB",
        "ATELIER_EXPORT_PYTHON",
        "ATELIER_TORCH_DEPS",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let python = std::env::var("ATELIER_EXPORT_PYTHON").unwrap_or_default();
    println!("cargo:rustc-env=ATELIER_EXPORT_PYTHON={python}");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:rustc-env=ATELIER_LIBTORCH_LIB=");
        println!("cargo:rustc-env=ATELIER_LIBTORCH_VERSION=unknown");
        return;
    };
    // The real folder, not the .venv/torch link: an installed binary keeps working when the
    // link is pointed at another torch.
    let lib = std::fs::canonicalize(&lib).unwrap_or_else(|_| PathBuf::from(&lib));
    let lib = lib.display().to_string();
    // A bare torch folder (an unpacked wheel) lacks the CUDA runtime its libtorch_cpu.so links
    // to; tools/dev.sh then names folders that have it. Those must also serve libtorch's own
    // lookups, which only an old-style DT_RPATH of the executable does.
    let deps: Vec<String> = std::env::var("ATELIER_TORCH_DEPS")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect();
    if !deps.is_empty() {
        println!("cargo:rustc-link-arg=-Wl,--disable-new-dtags");
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    for dir in &deps {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        println!("cargo:rustc-link-arg=-Wl,-rpath-link,{dir}");
    }
    println!("cargo:rustc-env=ATELIER_LIBTORCH_LIB={lib}");
    let root = Path::new(&lib).parent().unwrap_or(Path::new(&lib));
    println!(
        "cargo:rustc-env=ATELIER_LIBTORCH_VERSION={}",
        torch_version(root).unwrap_or_else(|| "unknown".into())
    );
}

/// A PyPI torch folder has version.py beside lib/; a plain libtorch has build-version.
fn torch_version(root: &Path) -> Option<String> {
    std::fs::read_to_string(root.join("version.py"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("__version__ = "))
                .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
        })
        .or_else(|| {
            std::fs::read_to_string(root.join("build-version"))
                .ok()
                .map(|v| v.trim().to_string())
        })
}
