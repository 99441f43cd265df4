//! Stable Diffusion export (tools/export/sd_export.py): tiny random-weight models of the real
//! architectures exported to TorchScript, their manifests checked with `atelier models verify`, and
//! every exported module run from Rust and compared with the eager diffusers/transformers module's
//! output on the same inputs (tools/export/refs/sd_export_check.py, run during the test).
//! Also a single-file (original LDM layout) `.safetensors` imported back through diffusers'
//! `from_single_file`: its TorchScript parameters equal the diffusers-folder export's.
mod common;

use atelier::engine::store::InstalledModel;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::{CModule, Device, IValue, Tensor};

/// Same libtorch 2.13 CPU kernels in Python and here; only float reassociation (thread count)
/// can differ, far below 1e-5 of the output's magnitude for these small float32 networks.
const TOL: f64 = 1e-5;

struct Export {
    _root: tempfile::TempDir,
    models: PathBuf,
    source: PathBuf,
    name: String,
}

impl Export {
    fn dir(&self) -> PathBuf {
        self.models.join(&self.name)
    }
}

fn export(command: &str, config: &str, name: &str, extra: &[&str]) -> Export {
    let root = tempfile::tempdir().unwrap();
    let models = root.path().join("models");
    let source = root.path().join("source");
    let mut args = vec![
        command,
        "--random-init",
        config,
        "--models",
        models.to_str().unwrap(),
        "--name",
        name,
        "--save-source",
        source.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    common::export_tool(&args);
    Export {
        _root: root,
        models,
        source,
        name: name.to_string(),
    }
}

/// tiny-sd15 is used by two tests (parity and the single-file round trip): export it once.
/// `--no-verify`: the exporter's own traced-vs-eager check is what compare_with_diffusers does
/// independently here (the ControlNet test keeps it, so the exporter's check runs too).
fn tiny_sd15() -> &'static Export {
    static E: OnceLock<Export> = OnceLock::new();
    E.get_or_init(|| export("import-sd", "tiny-sd15", "tiny-sd15", &["--no-verify"]))
}

fn flatten(v: IValue) -> Vec<Tensor> {
    match v {
        IValue::Tensor(t) => vec![t],
        IValue::Tuple(items) | IValue::GenericList(items) => {
            items.into_iter().flat_map(flatten).collect()
        }
        IValue::TensorList(ts) => ts,
        other => panic!("unexpected TorchScript output {other:?}"),
    }
}

/// Runs every reference case of `sd_export_check.py refs` through the exported modules.
/// Returns the worst (relative) difference per role and method.
fn compare_with_diffusers(e: &Export) -> Vec<(String, f64)> {
    let refdir = e.models.parent().unwrap().join("ref");
    common::run_python(
        "tools/export/refs/sd_export_check.py",
        &[
            "refs".as_ref(),
            e.source.as_os_str(),
            e.dir().as_os_str(),
            refdir.as_os_str(),
        ],
    );
    let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(refdir.join("ref.safetensors"))
        .unwrap()
        .into_iter()
        .collect();
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(refdir.join("cases.json")).unwrap()).unwrap();
    let model = InstalledModel::open(&e.dir()).unwrap();
    let mut modules: HashMap<String, CModule> = HashMap::new();
    let mut worst: Vec<(String, f64)> = Vec::new();
    let _guard = tch::no_grad_guard();
    for case in cases.as_array().unwrap() {
        let role = case["role"].as_str().unwrap();
        let method = case["method"].as_str().unwrap();
        let module = modules
            .entry(role.to_string())
            .or_insert_with(|| model.load_module(role, Device::Cpu).unwrap());
        let inputs: Vec<IValue> = case["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| IValue::Tensor(tensors[n.as_str().unwrap()].shallow_clone()))
            .collect();
        let got = flatten(module.method_is(method, &inputs).unwrap());
        let want: Vec<&Tensor> = case["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| &tensors[n.as_str().unwrap()])
            .collect();
        assert_eq!(got.len(), want.len(), "{role}.{method}: output count");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.size(), w.size(), "{role}.{method}: output shape");
            let diff = (g - *w).abs().max().double_value(&[]);
            let scale = w.abs().max().double_value(&[]).max(1.0);
            let rel = diff / scale;
            assert!(
                rel <= TOL,
                "{role}.{method} {:?}: max abs diff {diff} (scale {scale})",
                g.size()
            );
            let key = format!("{role}.{method}");
            match worst.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => *v = v.max(rel),
                None => worst.push((key, rel)),
            }
        }
    }
    eprintln!("{}: worst relative diff per module {worst:?}", e.name);
    worst
}

fn cli_verify(models: &Path, name: &str) {
    let state = tempfile::tempdir().unwrap();
    let out = common::atelier()
        .env("ATELIER_MODELS", models)
        .env("XDG_STATE_HOME", state.path())
        .env("ATELIER_CONFIG_DIR", state.path().join("config"))
        .args(["models", "verify", name])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(name), "{stdout}");
    let out = common::atelier()
        .env("ATELIER_MODELS", models)
        .env("XDG_STATE_HOME", state.path())
        .env("ATELIER_CONFIG_DIR", state.path().join("config"))
        .args(["models", "list"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("RANDOM WEIGHTS"), "{stdout}");
}

fn roles(model: &InstalledModel) -> Vec<&str> {
    model.manifest.files.keys().map(String::as_str).collect()
}

fn cfg_str<'a>(model: &'a InstalledModel, key: &str) -> &'a str {
    model.manifest.config[key].as_str().unwrap()
}

fn cfg_int(model: &InstalledModel, key: &str) -> i64 {
    model.manifest.config[key].as_integer().unwrap()
}

#[test]
fn tiny_sd15_matches_diffusers() {
    let e = tiny_sd15();
    let m = InstalledModel::open(&e.dir()).unwrap();
    assert_eq!(m.manifest.family, "sd");
    assert_eq!(m.manifest.variant, "sd15");
    assert!(m.manifest.random_init);
    assert_eq!(
        roles(&m),
        [
            "text_encoder",
            "tokenizer",
            "unet",
            "vae_decoder",
            "vae_encoder"
        ]
    );
    assert_eq!(cfg_int(&m, "pad_token"), 49407);
    assert_eq!(cfg_int(&m, "in_channels"), 4);
    assert_eq!(cfg_str(&m, "prediction_type"), "epsilon");
    assert_eq!(cfg_str(&m, "attention"), "sdpa");
    assert!(m.manifest.config["random_init"].as_bool().unwrap());
    let sched = m.manifest.config["scheduler"].as_table().unwrap();
    assert_eq!(sched["_class_name"].as_str(), Some("PNDMScheduler"));
    assert_eq!(sched["beta_schedule"].as_str(), Some("scaled_linear"));
    // tiny-sd15's UNet: conv_in + 2 blocks x 2 layers + 1 downsampler
    assert_eq!(m.manifest.dim("down_residuals"), Some(6));
    cli_verify(&e.models, &e.name);
    let worst = compare_with_diffusers(e);
    for key in [
        "text_encoder.forward",
        "unet.forward",
        "unet.forward_control",
        "vae_encoder.forward",
        "vae_decoder.forward",
    ] {
        assert!(worst.iter().any(|(k, _)| k == key), "{key} not covered");
    }
}

#[test]
fn tiny_sdxl_matches_diffusers() {
    let e = export("import-sd", "tiny-sdxl", "tiny-sdxl", &["--no-verify"]);
    let m = InstalledModel::open(&e.dir()).unwrap();
    assert_eq!(m.manifest.variant, "sdxl");
    assert_eq!(
        roles(&m),
        [
            "text_encoder",
            "text_encoder_2",
            "tokenizer",
            "tokenizer_2",
            "unet",
            "vae_decoder",
            "vae_encoder"
        ]
    );
    assert_eq!(cfg_int(&m, "pad_token"), 49407);
    assert_eq!(cfg_int(&m, "pad_token_2"), 0);
    assert!(m.manifest.config["force_zeros_for_empty_prompt"]
        .as_bool()
        .unwrap());
    cli_verify(&e.models, &e.name);
    let worst = compare_with_diffusers(&e);
    assert!(worst.iter().any(|(k, _)| k == "text_encoder_2.forward"));
    assert!(worst.iter().any(|(k, _)| k == "unet.forward_control"));
}

#[test]
fn tiny_sd15_inpaint_matches_diffusers() {
    let e = export(
        "import-sd",
        "tiny-sd15-inpaint",
        "tiny-inpaint",
        &["--no-verify"],
    );
    let m = InstalledModel::open(&e.dir()).unwrap();
    assert_eq!(cfg_int(&m, "in_channels"), 9);
    cli_verify(&e.models, &e.name);
    compare_with_diffusers(&e);
}

#[test]
fn tiny_controlnet_matches_diffusers() {
    let e = export("import-controlnet", "tiny-sd15", "tiny-cn", &[]);
    let m = InstalledModel::open(&e.dir()).unwrap();
    assert_eq!(m.manifest.family, "controlnet");
    assert_eq!(m.manifest.variant, "sd15");
    assert_eq!(roles(&m), ["controlnet"]);
    // the same residual count as the tiny-sd15 UNet it controls
    assert_eq!(m.manifest.dim("down_residuals"), Some(6));
    cli_verify(&e.models, &e.name);
    let worst = compare_with_diffusers(&e);
    assert!(worst.iter().any(|(k, _)| k == "controlnet.forward"));
}

#[test]
fn single_file_checkpoint_imports_to_equal_weights() {
    let e = tiny_sd15();
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("tiny-sd15.safetensors");
    common::run_python(
        "tools/export/refs/sd_export_check.py",
        &[
            "single-file".as_ref(),
            e.source.as_os_str(),
            ckpt.as_os_str(),
        ],
    );
    let models = tmp.path().join("models");
    // --config: the built-in architecture name (its configs are written by the exporter)
    common::export_tool(&[
        "import-sd",
        ckpt.to_str().unwrap(),
        "--config",
        "tiny-sd15",
        "--models",
        models.to_str().unwrap(),
        "--name",
        "from-single-file",
        "--no-verify",
    ]);
    let single = InstalledModel::open(&models.join("from-single-file")).unwrap();
    assert!(!single.manifest.random_init);
    assert!(single.manifest.source.contains("single-file"));
    let folder = InstalledModel::open(&e.dir()).unwrap();
    for role in ["text_encoder", "unet", "vae_encoder", "vae_decoder"] {
        let a = folder.load_module(role, Device::Cpu).unwrap();
        let b = single.load_module(role, Device::Cpu).unwrap();
        let pa = a.named_parameters().unwrap();
        let pb: HashMap<String, Tensor> = b.named_parameters().unwrap().into_iter().collect();
        assert!(pa.len() > 10, "{role}: {} parameters", pa.len());
        assert_eq!(pa.len(), pb.len(), "{role}: parameter count");
        for (name, t) in &pa {
            let u = pb
                .get(name)
                .unwrap_or_else(|| panic!("{role}: {name} missing"));
            assert!(t.equal(u), "{role}: {name} differs");
        }
    }
    // a single file without --config is a clear error naming the file
    let out = std::process::Command::new(common::python())
        .current_dir(common::root())
        .args(["-m", "tools.export", "import-sd"])
        .arg(&ckpt)
        .args(["--models", models.to_str().unwrap(), "--name", "x"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("tiny-sd15.safetensors") && stderr.contains("--config"),
        "{stderr}"
    );
}
