//! Adds an rpath to libtorch so `atelier`, `cargo run` and `cargo test` start without
//! `LD_LIBRARY_PATH`, and records the libtorch folder and version for `atelier doctor`.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:rustc-env=ATELIER_LIBTORCH_LIB=");
        println!("cargo:rustc-env=ATELIER_LIBTORCH_VERSION=unknown");
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    println!("cargo:rustc-env=ATELIER_LIBTORCH_LIB={lib}");
    // A PyPI torch folder has version.py beside lib/; a plain libtorch has build-version.
    let root = Path::new(&lib).parent().unwrap_or(Path::new(&lib));
    let version = std::fs::read_to_string(root.join("version.py"))
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
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=ATELIER_LIBTORCH_VERSION={version}");
}
