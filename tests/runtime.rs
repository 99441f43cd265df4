//! The libtorch in use and the exports made for it: models exported by another torch series,
//! or for another device or dtype, are refused at load with their manifest and the command
//! that imports them again; the export tools' Python must have the runtime's torch; the
//! installed launcher finds libtorch and the tools outside the source tree.
mod common;

use atelier::engine::runtime;
use atelier::engine::store::{self, InstalledModel, StoreError};
use std::path::Path;
use std::process::Command;

/// A model folder holding the selftest module, with a manifest written as the export tool
/// writes one (exported-with, device, dtype, import-command as given).
fn model(
    root: &Path,
    name: &str,
    exported_with: &str,
    device: &str,
    dtype: &str,
) -> InstalledModel {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(common::selftest_dir().join("selftest.ts"), dir.join("m.ts")).unwrap();
    let sha = store::sha256_file(&dir.join("m.ts")).unwrap();
    std::fs::write(
        dir.join("manifest.toml"),
        format!(
            "format = 1\nfamily = \"vad\"\nname = \"{name}\"\nvariant = \"test\"\ndevice = \"{device}\"\n\
             dtype = \"{dtype}\"\nexported-with = \"{exported_with}\"\n\
             import-command = \"atelier models import vad /src/silero.whl --name {name}\"\n\n\
             [files.m]\npath = \"m.ts\"\nsha256 = \"{sha}\"\nkind = \"torchscript\"\n"
        ),
    )
    .unwrap();
    InstalledModel::open(&dir).unwrap()
}

fn this_torch() -> String {
    format!("torch {}", runtime::libtorch().version)
}

#[test]
fn the_libtorch_in_use_is_the_one_built_against() {
    let torch = runtime::libtorch();
    assert!(torch.lib_dir.join("libtorch_cpu.so").is_file(), "{torch:?}");
    // tools/dev.sh builds against the venv's torch (or --torch DIR): the loader found it.
    assert_eq!(torch.series(), runtime::series(runtime::LIBTORCH_VERSION));
    assert_eq!(runtime::series("2.11.0+cu130"), "2.11");
    assert_eq!(runtime::series("2.13.0"), "2.13");
}

#[test]
fn a_model_of_this_runtime_loads() {
    let root = tempfile::tempdir().unwrap();
    let m = model(root.path(), "ok", &this_torch(), "cpu", "float32");
    m.load_module("m", tch::Device::Cpu).unwrap();
    assert!(m.verify(true).is_empty());
}

#[test]
fn another_torch_series_is_refused_with_the_reimport_command() {
    let root = tempfile::tempdir().unwrap();
    let other = if runtime::libtorch().series() == "2.11" {
        "torch 2.13.0"
    } else {
        "torch 2.11.0"
    };
    let m = model(root.path(), "old", other, "cpu", "float32");
    let err = m.load_module("m", tch::Device::Cpu).unwrap_err();
    assert!(matches!(err, StoreError::WrongRuntime { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&m.manifest_path().display().to_string()),
        "{text}"
    );
    assert!(text.contains(other), "{text}");
    assert!(
        text.contains(
            "atelier --device cpu models import vad /src/silero.whl --name old --dtype float32"
        ),
        "{text}"
    );
    // verify reports it once and does not try to load the archive.
    let problems = m.verify(true);
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[test]
fn another_device_or_dtype_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let cuda = model(root.path(), "gpu", &this_torch(), "cuda", "float16");
    let text = cuda
        .load_module("m", tch::Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(text.contains("for cuda/float16"), "{text}");
    // float16 does not run on the CPU: the command asks for float32.
    assert!(
        text.contains("atelier --device cpu models import") && text.ends_with("--dtype float32"),
        "{text}"
    );
    let half_cpu = model(root.path(), "half", &this_torch(), "cpu", "float16");
    assert!(matches!(
        half_cpu.load_module("m", tch::Device::Cpu),
        Err(StoreError::WrongRuntime { .. })
    ));
}

#[test]
fn transcribe_refuses_an_export_of_another_torch_naming_its_manifest() {
    let state = tempfile::tempdir().unwrap();
    let models = tempfile::tempdir().unwrap();
    let src = common::test_models().join("whisper-tiny.en");
    let dst = models.path().join("whisper-tiny.en");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    let manifest = dst.join("manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let other = if runtime::libtorch().series() == "2.11" {
        "torch 2.13.0"
    } else {
        "torch 2.11.0"
    };
    let patched: String = text
        .lines()
        .map(|l| {
            if l.starts_with("exported-with") {
                format!("exported-with = \"{other}\"")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&manifest, patched + "\n").unwrap();
    let wav = state.path().join("a.wav");
    common::write_wav(&wav, &vec![0.0; 16000]);
    let out = common::atelier()
        .env("ATELIER_MODELS", models.path())
        .env("XDG_STATE_HOME", state.path())
        .env("ATELIER_CONFIG_DIR", state.path().join("config"))
        .args(["--device", "cpu", "transcribe"])
        .arg(&wav)
        .args(["--model", "whisper-tiny.en", "--no-vad", "-o"])
        .arg(state.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&manifest.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("atelier --device cpu models import whisper"),
        "{stderr}"
    );
    assert!(!state.path().join("a.txt").exists());
}

#[test]
fn models_import_needs_a_python_with_the_runtime_torch() {
    let state = tempfile::tempdir().unwrap();
    // A "Python" whose `import torch` fails.
    let python = state.path().join("python3");
    std::fs::write(&python, "#!/bin/sh\nexit 1\n").unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&python)
        .status()
        .unwrap();
    let out = common::atelier()
        .env("ATELIER_MODELS", state.path().join("models"))
        .env("XDG_STATE_HOME", state.path())
        .env("ATELIER_PYTHON", &python)
        .args(["models", "import", "vad"])
        .arg(common::root().join("Cargo.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let want = format!("no Python with torch {}", runtime::libtorch().series());
    assert!(stderr.contains(&want), "{stderr}");
    assert!(
        stderr.contains(&format!("{} (no torch)", python.display())),
        "{stderr}"
    );
    assert!(!state.path().join("models").exists());
}

/// `tools/dev.sh install`'s layout, made from this build: PREFIX/bin/atelier (the launcher),
/// PREFIX/lib/atelier/atelier, PREFIX/share/atelier/{tools,python}.
fn install(prefix: &Path) -> std::path::PathBuf {
    let lib = prefix.join("lib/atelier");
    let share = prefix.join("share/atelier");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::create_dir_all(share.join("tools")).unwrap();
    std::fs::create_dir_all(prefix.join("bin")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_atelier"), lib.join("atelier")).unwrap();
    let status = Command::new("cp")
        .arg("-r")
        .arg(common::root().join("tools/export"))
        .arg(common::root().join("tools/__init__.py"))
        .arg(share.join("tools"))
        .status()
        .unwrap();
    assert!(status.success());
    std::os::unix::fs::symlink(common::python(), share.join("python")).unwrap();
    let launcher = std::fs::read_to_string(common::root().join("tools/torch/launcher.sh")).unwrap();
    let bin = prefix.join("bin/atelier");
    std::fs::write(&bin, launcher.replace("@TORCH_LIB@", runtime::LIBTORCH_LIB)).unwrap();
    Command::new("chmod").arg("+x").arg(&bin).status().unwrap();
    bin
}

#[test]
fn the_installed_launcher_finds_libtorch_and_the_tools() {
    let prefix = tempfile::tempdir().unwrap();
    let bin = install(prefix.path());
    let torch_dir = Path::new(runtime::LIBTORCH_LIB)
        .parent()
        .unwrap()
        .to_path_buf();
    let run = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(&bin);
        cmd.arg("doctor")
            .env_remove("ATELIER_TORCH")
            .env_remove("ATELIER_TOOLS")
            .env_remove("ATELIER_PYTHON")
            .env("XDG_STATE_HOME", prefix.path().join("state"))
            .env("ATELIER_MODELS", prefix.path().join("models"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = run(&[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("the rpath"), "{text}");
    let tools = prefix.path().join("share/atelier/tools/export");
    assert!(
        text.contains(&format!("tools          {}", tools.display())),
        "{text}"
    );
    assert!(text.contains(": matches"), "{text}");

    let out = run(&[("ATELIER_TORCH", torch_dir.to_str().unwrap())]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("found by       ATELIER_TORCH"), "{text}");

    let bogus = prefix.path().join("no-torch");
    std::fs::create_dir_all(&bogus).unwrap();
    let out = run(&[("ATELIER_TORCH", bogus.to_str().unwrap())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("has no lib/libtorch_cpu.so"), "{stderr}");
}
