//! The names users type for a model (openai-whisper's, faster-whisper's, open_clip's and the
//! hub's) resolve to the installed model, through every command that takes a model name; a
//! name not installed fails with the installed names and the import command of a source
//! already on disk. Also `models info`, `models remove` and `models verify --json`.
mod common;

use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// A model folder with one asset file: enough for every command up to loading it.
fn fake_model(store: &Path, name: &str, family: &str, variant: &str, repo: &str) {
    let dir = store.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("vocab.txt"), "hello\n").unwrap();
    let sha = atelier::engine::store::sha256_file(&dir.join("vocab.txt")).unwrap();
    let repo_line = if repo.is_empty() {
        String::new()
    } else {
        format!("source-repo = \"{repo}\"\n")
    };
    std::fs::write(
        dir.join("manifest.toml"),
        format!(
            "format = 1\nfamily = \"{family}\"\nname = \"{name}\"\nvariant = \"{variant}\"\n\
             device = \"cpu\"\ndtype = \"float32\"\nsource = \"tests/model_names.rs\"\n{repo_line}\n\
             [files.vocab]\npath = \"vocab.txt\"\nsha256 = \"{sha}\"\nkind = \"asset\"\n"
        ),
    )
    .unwrap();
}

/// A store as users have one: Whisper models from CT2 folders (no repo recorded), one from the
/// hub (repo recorded), CLIP and SD models.
fn store() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path().join("models");
    fake_model(&s, "whisper-tiny.en", "whisper", "tiny.en", "");
    fake_model(&s, "whisper-base", "whisper", "base", "");
    fake_model(&s, "my-small", "whisper", "small", "");
    fake_model(&s, "medium-model", "whisper", "medium", "");
    fake_model(&s, "lv3", "whisper", "large-v3", "");
    fake_model(&s, "fast-turbo", "whisper", "turbo", "");
    fake_model(
        &s,
        "whisper-distil-large-v3",
        "whisper",
        "custom-1280x2",
        "Systran/faster-distil-whisper-large-v3",
    );
    fake_model(&s, "clip-b32", "clip", "ViT-B-32", "");
    fake_model(
        &s,
        "clip-hf",
        "clip",
        "hf:abc123",
        "openai/clip-vit-large-patch14",
    );
    fake_model(&s, "sd-main", "sd", "sd15", "");
    fake_model(&s, "vad-silero", "vad", "silero-vad-6", "");
    tmp
}

fn atelier(tmp: &Path) -> Command {
    let mut cmd = common::atelier();
    cmd.env("ATELIER_MODELS", tmp.join("models"))
        .env("XDG_STATE_HOME", tmp.join("state"))
        .env("XDG_CONFIG_HOME", tmp.join("config"))
        .env("XDG_CACHE_HOME", tmp.join("cache"))
        .env("HF_HUB_CACHE", tmp.join("hub"))
        .env_remove("HF_HOME");
    cmd
}

fn info(tmp: &Path, name: &str) -> Result<Value, String> {
    let out = atelier(tmp)
        .args(["models", "info", name, "--json"])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn every_name_form_resolves_to_the_installed_model() {
    let tmp = store();
    let cases = [
        ("tiny.en", "whisper-tiny.en"),
        ("whisper-tiny.en", "whisper-tiny.en"),
        ("base", "whisper-base"),
        ("whisper-base", "whisper-base"),
        ("openai/whisper-base", "whisper-base"),
        ("Systran/faster-whisper-base", "whisper-base"),
        ("faster-whisper-base", "whisper-base"),
        ("small", "my-small"),
        ("whisper-small", "my-small"),
        ("medium", "medium-model"),
        ("whisper-medium", "medium-model"),
        ("large-v3", "lv3"),
        ("whisper-large-v3", "lv3"),
        ("openai/whisper-large-v3", "lv3"),
        ("turbo", "fast-turbo"),
        ("whisper-turbo", "fast-turbo"),
        ("large-v3-turbo", "fast-turbo"),
        ("openai/whisper-large-v3-turbo", "fast-turbo"),
        ("distil-large-v3", "whisper-distil-large-v3"),
        ("whisper-distil-large-v3", "whisper-distil-large-v3"),
        ("distil-whisper/distil-large-v3", "whisper-distil-large-v3"),
        ("ViT-B-32", "clip-b32"),
        ("vit-b-32", "clip-b32"),
        ("openai/clip-vit-base-patch32", "clip-b32"),
        ("ViT-L-14", "clip-hf"),
        ("openai/clip-vit-large-patch14", "clip-hf"),
        ("stable-diffusion-v1-5/stable-diffusion-v1-5", "sd-main"),
        ("runwayml/stable-diffusion-v1-5", "sd-main"),
        ("sd15", "sd-main"),
    ];
    for (typed, installed) in cases {
        let got = info(tmp.path(), typed).unwrap_or_else(|e| panic!("{typed}: {e}"));
        assert_eq!(got["name"], installed, "{typed}");
    }
    // Not a short name of anything installed: no guessing.
    for typed in [
        "tiny",
        "large-v2",
        "openai/whisper-small.en",
        "ViT-B-16",
        "org/unknown",
    ] {
        let e = info(tmp.path(), typed).unwrap_err();
        assert!(
            e.contains(&format!("model '{typed}' is not installed")),
            "{typed}: {e}"
        );
    }
}

#[test]
fn a_path_is_never_a_model_name() {
    let tmp = store();
    for typed in [
        "../models/whisper-base",
        "/etc/passwd",
        "a/b/c",
        "./base",
        "../x",
    ] {
        let e = info(tmp.path(), typed).unwrap_err();
        assert!(e.contains(&format!("model name '{typed}'")), "{typed}: {e}");
    }
}

/// A repo recorded at import that is not openai's is not openai's name: a fine-tune of `base`
/// does not answer to `base`.
#[test]
fn a_recorded_repo_outranks_the_variant() {
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path().join("models");
    fake_model(
        &s,
        "tuned",
        "whisper",
        "base",
        "someone/whisper-base-german",
    );
    assert_eq!(
        info(tmp.path(), "someone/whisper-base-german").unwrap()["name"],
        "tuned"
    );
    assert_eq!(
        info(tmp.path(), "whisper-base-german").unwrap()["name"],
        "tuned"
    );
    assert!(info(tmp.path(), "base").is_err());
}

#[test]
fn two_models_of_one_name_are_ambiguous() {
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path().join("models");
    fake_model(&s, "base-a", "whisper", "base", "");
    fake_model(&s, "base-b", "whisper", "base", "");
    let e = info(tmp.path(), "base").unwrap_err();
    assert!(
        e.contains("matches several installed") && e.contains("base-a, base-b"),
        "{e}"
    );
}

/// `transcribe --model` goes through the resolver: a missing name lists what is installed
/// and the import command of the sources found in the hub cache and openai-whisper's cache.
#[test]
fn a_missing_name_lists_the_installed_and_the_sources_on_disk() {
    let tmp = store();
    let hub = tmp
        .path()
        .join("hub/models--Systran--faster-whisper-small.en/snapshots/abc");
    std::fs::create_dir_all(&hub).unwrap();
    std::fs::create_dir_all(tmp.path().join("hub/models--openai--clip-vit-base-patch16")).unwrap();
    let openai = tmp.path().join("cache/whisper");
    std::fs::create_dir_all(&openai).unwrap();
    std::fs::write(openai.join("large-v2.pt"), b"not read").unwrap();
    let wav = tmp.path().join("a.wav");
    common::write_wav(&wav, &[0.0; 1600]);
    let run = |model: &str| {
        let out = atelier(tmp.path())
            .args(["transcribe", "--model", model])
            .arg(&wav)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run("small.en");
    assert!(e.contains("model 'small.en' is not installed"), "{e}");
    assert!(
        e.contains("installed whisper models: fast-turbo, lv3, medium-model, my-small, whisper-base, whisper-distil-large-v3, whisper-tiny.en"),
        "{e}"
    );
    let hub_folder = tmp
        .path()
        .join("hub/models--Systran--faster-whisper-small.en");
    assert!(
        e.contains(&format!("atelier models import {}", hub_folder.display())),
        "{e}"
    );
    let e = run("large-v2");
    assert!(
        e.contains(&format!(
            "atelier models import {}",
            openai.join("large-v2.pt").display()
        )),
        "{e}"
    );
    assert!(!e.contains("faster-whisper-small.en"), "{e}");
    // A CLIP repo is not offered for a Whisper name.
    assert!(!run("ViT-B-16").contains("clip-vit-base-patch16"));
}

#[test]
fn info_shows_files_sizes_hashes_and_source() {
    let tmp = store();
    let v = info(tmp.path(), "distil-large-v3").unwrap();
    for key in [
        "family",
        "variant",
        "device",
        "dtype",
        "exported_with",
        "source",
        "source_repo",
        "dir",
    ] {
        assert!(v.get(key).is_some(), "{key} missing in {v}");
    }
    assert_eq!(v["source_repo"], "Systran/faster-distil-whisper-large-v3");
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["role"], "vocab");
    assert_eq!(files[0]["size"], 6);
    assert_eq!(
        files[0]["sha256"],
        "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
    );
    let text = atelier(tmp.path())
        .args(["models", "info", "distil-large-v3"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("Systran/faster-distil-whisper-large-v3") && text.contains("vocab.txt"),
        "{text}"
    );
}

#[test]
fn remove_takes_only_store_names_and_removes_the_whole_folder() {
    let tmp = store();
    let models = tmp.path().join("models");
    let run = |name: &str| {
        atelier(tmp.path())
            .args(["models", "remove", name, "--json"])
            .output()
            .unwrap()
    };
    let out = run("no-such-model");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("model 'no-such-model' is not installed"));
    // An alias could mean another model than the user thinks: the store name is asked for.
    let out = run("tiny.en");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another name of 'whisper-tiny.en'"));
    assert!(models.join("whisper-tiny.en/manifest.toml").is_file());
    let out = run("whisper-tiny.en");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["removed"], "whisper-tiny.en");
    assert!(!models.join("whisper-tiny.en").exists());
    let left: Vec<String> = std::fs::read_dir(&models)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.iter().all(|n| !n.starts_with('.')), "{left:?}");
    assert_eq!(left.len(), 10);
}

#[test]
fn verify_json_reports_each_model_by_any_name() {
    let tmp = store();
    std::fs::write(
        tmp.path().join("models/whisper-base/vocab.txt"),
        "changed\n",
    )
    .unwrap();
    let out = atelier(tmp.path())
        .args(["models", "verify", "--json", "tiny.en", "base", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let by = |n: &str| lines.iter().find(|v| v["name"] == n).unwrap().clone();
    assert_eq!(by("whisper-tiny.en")["ok"], true);
    assert_eq!(by("whisper-tiny.en")["files"], 1);
    assert_eq!(by("whisper-base")["ok"], false);
    assert!(by("whisper-base")["problems"][0]
        .as_str()
        .unwrap()
        .contains("sha256 mismatch"));
    assert_eq!(by("nope")["ok"], false);
}
