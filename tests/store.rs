//! The model store: manifests, verification failures, and a TorchScript module exported by
//! tools/export loaded and run from Rust, checked against Python's output.
mod common;

use atelier::engine::store::{self, FileEntry, FileKind, InstalledModel, Manifest, StoreError};
use std::collections::BTreeMap;
use std::path::Path;

fn make_model(root: &Path, name: &str) -> InstalledModel {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let ts = common::selftest_dir().join("selftest.ts");
    std::fs::copy(&ts, dir.join("module.ts")).unwrap();
    std::fs::write(dir.join("vocab.txt"), "hello\nworld\n").unwrap();
    let mut files = BTreeMap::new();
    for (role, path, kind) in [
        ("module", "module.ts", FileKind::Torchscript),
        ("vocab", "vocab.txt", FileKind::Asset),
    ] {
        files.insert(
            role.to_string(),
            FileEntry {
                path: path.into(),
                sha256: store::sha256_file(&dir.join(path)).unwrap(),
                kind,
            },
        );
    }
    let manifest = Manifest {
        format: 1,
        family: "vad".into(),
        name: name.into(),
        variant: "test".into(),
        device: "cpu".into(),
        dtype: "float32".into(),
        random_init: true,
        source: "tests/store.rs".into(),
        // The libtorch in use, whichever it is (2.13, or 2.11 through tools/dev.sh --torch).
        exported_with: format!("torch {}", atelier::engine::runtime::libtorch().version),
        created: String::new(),
        import_command: String::new(),
        source_repo: String::new(),
        files,
        dims: BTreeMap::from([("window".to_string(), 512)]),
        config: toml::Table::new(),
    };
    std::fs::write(dir.join("manifest.toml"), manifest.to_toml()).unwrap();
    InstalledModel::open(&dir).unwrap()
}

#[test]
fn manifest_round_trips() {
    let root = tempfile::tempdir().unwrap();
    let model = make_model(root.path(), "m");
    let text = std::fs::read_to_string(model.manifest_path()).unwrap();
    let again = Manifest::parse(&model.manifest_path(), &text).unwrap();
    assert_eq!(again, model.manifest);
    assert_eq!(again.dim("window"), Some(512));
    assert!(model.verify(true).is_empty(), "{:?}", model.verify(true));
}

#[test]
fn verify_reports_corrupt_wrong_hash_and_missing_files_by_path() {
    let root = tempfile::tempdir().unwrap();
    let good = make_model(root.path(), "good");
    let corrupt = make_model(root.path(), "corrupt");
    let hashed = make_model(root.path(), "hashed");
    let missing = make_model(root.path(), "missing");

    // Corrupt: truncate the TorchScript archive and fix up the hash, so the load must catch it.
    let ts = corrupt.dir.join("module.ts");
    let bytes = std::fs::read(&ts).unwrap();
    std::fs::write(&ts, &bytes[..bytes.len() / 2]).unwrap();
    let mut m = corrupt.manifest.clone();
    m.files.get_mut("module").unwrap().sha256 = store::sha256_file(&ts).unwrap();
    std::fs::write(corrupt.manifest_path(), m.to_toml()).unwrap();
    let corrupt = InstalledModel::open(&corrupt.dir).unwrap();
    let problems = corrupt.verify(true);
    assert!(
        matches!(&problems[..], [StoreError::LoadFailed { path, .. }] if path == &ts),
        "{problems:?}"
    );

    // Wrong hash: the file changed after export.
    std::fs::write(hashed.dir.join("vocab.txt"), "changed\n").unwrap();
    let problems = hashed.verify(true);
    assert!(
        matches!(&problems[..], [StoreError::HashMismatch { path, .. }] if path.ends_with("hashed/vocab.txt")),
        "{problems:?}"
    );
    assert!(problems[0].to_string().contains("vocab.txt"));

    // Missing file.
    std::fs::remove_file(missing.dir.join("module.ts")).unwrap();
    let problems = missing.verify(true);
    assert!(
        matches!(&problems[..], [StoreError::MissingFile { path, .. }] if path.ends_with("missing/module.ts")),
        "{problems:?}"
    );

    // The good model is unaffected, and listing still returns all four.
    assert!(good.verify(true).is_empty());
    assert_eq!(
        store::list(root.path())
            .iter()
            .filter(|m| m.is_ok())
            .count(),
        4
    );
}

#[test]
fn bad_manifests_are_isolated() {
    let root = tempfile::tempdir().unwrap();
    make_model(root.path(), "fine");
    let unknown = make_model(root.path(), "unknown");
    let text = std::fs::read_to_string(unknown.manifest_path())
        .unwrap()
        .replace("family = \"vad\"", "family = \"llama\"");
    std::fs::write(unknown.manifest_path(), text).unwrap();
    let escape = make_model(root.path(), "escape");
    let text = std::fs::read_to_string(escape.manifest_path())
        .unwrap()
        .replace("path = \"vocab.txt\"", "path = \"../../etc/passwd\"");
    std::fs::write(escape.manifest_path(), text).unwrap();
    std::fs::create_dir_all(root.path().join("garbage")).unwrap();
    std::fs::write(root.path().join("garbage/manifest.toml"), "not = [toml").unwrap();

    let listed = store::list(root.path());
    assert_eq!(listed.len(), 4);
    let errors: Vec<String> = listed
        .iter()
        .filter_map(|m| m.as_ref().err())
        .map(|e| e.to_string())
        .collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("unknown model family 'llama'")
                && e.contains("unknown/manifest.toml"))
    );
    assert!(errors
        .iter()
        .any(|e| e.contains("inside the model folder") && e.contains("escape")));
    assert!(errors.iter().any(|e| e.contains("garbage/manifest.toml")));
    assert!(store::find(root.path(), "fine", "vad").is_ok());
    assert!(matches!(
        store::find(root.path(), "fine", "whisper"),
        Err(StoreError::WrongFamily { .. })
    ));
    assert!(matches!(
        store::find(root.path(), "nope", "vad"),
        Err(StoreError::NotInstalled { .. })
    ));
}

#[test]
fn cli_verify_and_list_report_each_model() {
    let root = tempfile::tempdir().unwrap();
    make_model(root.path(), "alpha");
    let beta = make_model(root.path(), "beta");
    std::fs::write(beta.dir.join("vocab.txt"), "tampered").unwrap();
    let run = |args: &[&str]| {
        common::atelier()
            .env("ATELIER_MODELS", root.path())
            .env("XDG_STATE_HOME", root.path().join("state"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["models", "verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("ok    alpha"), "{stdout}");
    assert!(
        stdout.contains("FAIL  beta") && stdout.contains("sha256 mismatch"),
        "{stdout}"
    );
    let out = run(&["models", "verify", "alpha"]);
    assert_eq!(out.status.code(), Some(0));
    let out = run(&["models", "list"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("alpha") && stdout.contains("RANDOM WEIGHTS"),
        "{stdout}"
    );
}

#[test]
fn exported_torchscript_matches_python() {
    let dir = common::selftest_dir();
    let module = tch::CModule::load(dir.join("selftest.ts")).unwrap();
    let refs: std::collections::HashMap<String, tch::Tensor> =
        tch::Tensor::read_safetensors(dir.join("selftest_ref.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let input = &refs["input"];
    let a = module.forward_ts(&[input]).unwrap();
    let out = module
        .method_is("pair", &[tch::IValue::Tensor(input.shallow_clone())])
        .unwrap();
    let b = match out {
        tch::IValue::Tuple(v) if v.len() == 2 => match &v[1] {
            tch::IValue::Tensor(b) => b.shallow_clone(),
            other => panic!("unexpected output {other:?}"),
        },
        other => panic!("unexpected output {other:?}"),
    };
    // Same libtorch kernels on the same CPU: differences are float reassociation at most.
    let d1 = (&a - &refs["output"]).abs().max().double_value(&[]);
    let d2 = (&b - &refs["output2"]).abs().max().double_value(&[]);
    assert!(d1 <= 1e-5 && d2 <= 1e-5, "max abs diff {d1} {d2}");
}
