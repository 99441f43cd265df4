//! CLIP end to end on a random-weight ViT-B/32 (open_clip's real config), exported by the tool in
//! this test run: embedding parity with open_clip in Python, zero-shot top-5 order, the index
//! (incremental, resumable, pruning, search = brute force), the label-embedding cache and the
//! bad-input corpus. A random RN50 (open_clip's config) gets the same embedding parity check.
//!
//! Tolerance: cosine ≥ 0.9999 per vector (libtorch runs the same graph; the JPEG decoders differ
//! by a few levels, which moves an embedding far less than that).
mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const MODEL: &str = "clip-rand-vit-b-32";

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn models(&self) -> PathBuf {
        self.dir.path().join("models")
    }
    fn checkpoint(&self) -> PathBuf {
        self.dir.path().join("ckpt.pt")
    }
    fn images(&self) -> PathBuf {
        self.dir.path().join("pp/images")
    }
}

/// Exported once per test binary.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let f = Fixture { dir };
        common::export_tool(&[
            "import-clip",
            "--random-init",
            "ViT-B-32",
            "--name",
            MODEL,
            "--models",
            f.models().to_str().unwrap(),
            "--save-checkpoint",
            f.checkpoint().to_str().unwrap(),
        ]);
        common::run_python(
            "tools/export/refs/clip_preprocess_ref.py",
            &[f.dir.path().join("pp").as_os_str()],
        );
        f
    })
}

const RN50: &str = "clip-rand-rn50";

/// A random RN50 in its own models folder, with its checkpoint; exported once per test binary.
fn rn50() -> &'static tempfile::TempDir {
    static D: OnceLock<tempfile::TempDir> = OnceLock::new();
    D.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        common::export_tool(&[
            "import-clip",
            "--random-init",
            "RN50",
            "--name",
            RN50,
            "--models",
            dir.path().join("models").to_str().unwrap(),
            "--save-checkpoint",
            dir.path().join("ckpt.pt").to_str().unwrap(),
        ]);
        dir
    })
}

fn atelier(state: &Path) -> Command {
    atelier_with(state, &fixture().models())
}

fn atelier_with(state: &Path, models: &Path) -> Command {
    let mut cmd = common::atelier();
    cmd.env("ATELIER_MODELS", models)
        .env("XDG_CACHE_HOME", state.join("cache"))
        .env("XDG_STATE_HOME", state.join("state"))
        .env("XDG_DATA_HOME", state.join("data"))
        .env("ATELIER_CONFIG_DIR", state.join("config"));
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run atelier")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "atelier failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn python_ref(mode: &str, args: &[&std::ffi::OsStr], req: &Value) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let (req_path, out_path) = (dir.path().join("req.json"), dir.path().join("out.json"));
    std::fs::write(&req_path, req.to_string()).unwrap();
    let mut all: Vec<&std::ffi::OsStr> = vec![std::ffi::OsStr::new(mode)];
    all.extend_from_slice(args);
    all.push(req_path.as_os_str());
    all.push(out_path.as_os_str());
    common::run_python("tools/export/refs/clip_model_ref.py", &all);
    serde_json::from_str(&std::fs::read_to_string(out_path).unwrap()).unwrap()
}

fn vecf(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn image_list() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixture().images())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn embeddings_match_open_clip() {
    check_embeddings(&fixture().models(), MODEL, "embed", &fixture().checkpoint());
}

#[test]
fn rn50_embeddings_match_open_clip() {
    let dir = rn50().path();
    check_embeddings(&dir.join("models"), RN50, "embed", &dir.join("ckpt.pt"));
}

/// A transformers folder (config.json, model.safetensors, preprocessor_config.json), as users
/// have them from the Hub, imported with `atelier models import clip`: the same embeddings as
/// the transformers model's get_image_features / get_text_features, on open_clip's transform
/// with the folder's mean and std (atelier preprocesses every model the open_clip way).
#[test]
fn transformers_folder_import_matches_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("clip-vit-rand-hf");
    common::run_python(
        "tools/export/refs/clip_model_ref.py",
        &[std::ffi::OsStr::new("make-hf"), hf.as_os_str()],
    );
    let models = tmp.path().join("models");
    ok(&run(atelier_with(tmp.path(), &models)
        .args(["models", "import", "clip"])
        .arg(&hf)
        .args(["--name", "clip-hf-rand"])));
    check_embeddings(&models, "clip-hf-rand", "embed-hf", &hf);
    // The same folder with no family given: its config.json says CLIP.
    ok(&run(atelier_with(tmp.path(), &models)
        .args(["models", "import"])
        .arg(&hf)
        .args(["--name", "clip-hf-auto"])));
    check_embeddings(&models, "clip-hf-auto", "embed-hf", &hf);
}

/// The fixture's weights saved as a bare state dict (the layout of openai `clip` `.pt` state
/// dicts and open_clip checkpoints), imported with `--format openai`, with `--format
/// open_clip --arch ViT-B-32` and with no family at all; as open_clip's `.safetensors`, and
/// as a TorchScript archive like openai's own files, each with no family: the same
/// embeddings as open_clip on those weights.
#[test]
fn openai_and_open_clip_checkpoint_imports_match_open_clip() {
    let tmp = tempfile::tempdir().unwrap();
    let pt = tmp.path().join("ViT-B-32-rand.pt");
    common::run_python(
        "tools/export/refs/clip_model_ref.py",
        &[
            std::ffi::OsStr::new("bare-state-dict"),
            fixture().checkpoint().as_os_str(),
            pt.as_os_str(),
        ],
    );
    let models = tmp.path().join("models");
    for (name, extra) in [
        ("clip-openai-rand", &["--format", "openai"][..]),
        (
            "clip-oc-rand",
            &["--format", "open_clip", "--arch", "ViT-B-32"][..],
        ),
    ] {
        ok(&run(atelier_with(tmp.path(), &models)
            .args(["models", "import", "clip"])
            .arg(&pt)
            .args(["--name", name])
            .args(extra)));
        check_embeddings(&models, name, "embed", &fixture().checkpoint());
    }
    // No family, format or architecture given: the file says what it is.
    ok(&run(atelier_with(tmp.path(), &models)
        .args(["models", "import"])
        .arg(&pt)
        .args(["--name", "clip-auto-rand"])));
    check_embeddings(&models, "clip-auto-rand", "embed", &fixture().checkpoint());
    // open_clip's .safetensors checkpoints: told by their tensor names.
    let st = tmp.path().join("clip-oc-rand.safetensors");
    common::run_python(
        "tools/export/refs/clip_model_ref.py",
        &[
            std::ffi::OsStr::new("safetensors-state-dict"),
            fixture().checkpoint().as_os_str(),
            st.as_os_str(),
        ],
    );
    ok(&run(atelier_with(tmp.path(), &models)
        .args(["models", "import"])
        .arg(&st)
        .args(["--name", "clip-st-rand"])));
    check_embeddings(&models, "clip-st-rand", "embed", &fixture().checkpoint());
    // openai's own files are TorchScript archives of the model: also told by their contents.
    let jit = tmp.path().join("clip-jit-rand.pt");
    common::run_python(
        "tools/export/refs/clip_model_ref.py",
        &[
            std::ffi::OsStr::new("jit-archive"),
            fixture().checkpoint().as_os_str(),
            jit.as_os_str(),
        ],
    );
    ok(&run(atelier_with(tmp.path(), &models)
        .args(["models", "import"])
        .arg(&jit)
        .args(["--name", "clip-jit-rand"])));
    check_embeddings(&models, "clip-jit-rand", "embed", &fixture().checkpoint());
}

/// `reference`: the clip_model_ref.py mode ("embed": open_clip checkpoint, "embed-hf":
/// transformers folder) run on `source`.
fn check_embeddings(models: &Path, model: &str, reference: &str, source: &Path) {
    let state = tempfile::tempdir().unwrap();
    let images = image_list();
    let texts = [
        "a photo of a cat.",
        "A diagram of a ROCKET engine!",
        "",
        &"very long caption ".repeat(30),
        "café “quotes” 日本語",
    ];
    let mut cmd = atelier_with(state.path(), models);
    cmd.args(["embed", "--model", model, "--json"])
        .args(&images);
    for t in texts {
        cmd.args(["--text", t]);
    }
    let ours: Value = serde_json::from_str(&ok(&run(&mut cmd))).unwrap();
    common::json_schema::check("embed", &ours);
    let reference = python_ref(
        reference,
        &[source.as_os_str()],
        &serde_json::json!({"images": images, "texts": texts}),
    );
    let mut worst = (1.0f64, String::new());
    for (i, path) in images.iter().enumerate() {
        let c = cosine(
            &vecf(&ours["images"][i]["embedding"]),
            &vecf(&reference["images"][i]),
        );
        if c < worst.0 {
            worst = (c, path.display().to_string());
        }
    }
    for (i, t) in texts.iter().enumerate() {
        let c = cosine(
            &vecf(&ours["texts"][i]["embedding"]),
            &vecf(&reference["texts"][i]),
        );
        if c < worst.0 {
            worst = (c, format!("text {t:?}"));
        }
    }
    eprintln!("{model}: lowest cosine {:.7} ({})", worst.0, worst.1);
    assert!(worst.0 >= 0.9999, "cosine {} for {}", worst.0, worst.1);
}

/// Top-k labels must come in the reference's order; scores closer than 1e-6 may swap.
fn assert_same_order(ours: &Value, reference: &Value, what: &str) {
    let ours_labels: Vec<(String, f64)> = ours["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["label"].as_str().unwrap().to_string(),
                l["score"].as_f64().unwrap(),
            )
        })
        .collect();
    let ref_labels: Vec<(String, f64)> = reference
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l[0].as_str().unwrap().to_string(), l[1].as_f64().unwrap()))
        .collect();
    assert_eq!(ours_labels.len(), ref_labels.len(), "{what}");
    for (i, ((a, sa), (b, sb))) in ours_labels.iter().zip(&ref_labels).enumerate() {
        assert!(
            (sa - sb).abs() < 1e-5,
            "{what}: rank {i} score {sa} vs {sb}"
        );
        if a != b {
            assert!(
                (sa - sb).abs() < 1e-6,
                "{what}: rank {i} is {a} ({sa}), reference {b} ({sb})"
            );
        }
    }
}

#[test]
fn zero_shot_top5_matches_python() {
    let state = tempfile::tempdir().unwrap();
    // PNGs only: both sides then see identical pixels (JPEG decoders differ by a few levels,
    // which moves near-uniform random-model scores by ~1e-4), so this checks labels, templates,
    // ensembling and scoring alone.
    let images: Vec<PathBuf> = image_list()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .step_by(2)
        .collect();
    let ckpt = fixture().checkpoint();
    // A shipped label set (its own templates) and ad-hoc labels with the 7 ImageNet templates.
    let style = common::root().join("config/labels/style.toml");
    let labels = [
        "cat",
        "astronaut",
        "rocket",
        "coffee cup",
        "camera",
        "brick wall",
    ];
    let cases: Vec<(Vec<String>, Value)> = vec![
        (
            vec!["--labels".into(), "style".into()],
            serde_json::json!({"images": images, "label_set": style, "top_k": 5}),
        ),
        (
            labels
                .iter()
                .flat_map(|l| ["--label".to_string(), l.to_string()])
                .collect(),
            serde_json::json!({"images": images, "labels": labels, "templates": "imagenet-7", "top_k": 5}),
        ),
    ];
    for (flags, req) in cases {
        let out = ok(&run(atelier(state.path())
            .args(["tag", "--model", MODEL, "--json", "--top-k", "5"])
            .args(&flags)
            .args(&images)));
        let ours = common::json_schema::check_lines("tag", out.as_bytes());
        let reference = python_ref("zeroshot", &[ckpt.as_os_str()], &req);
        assert_eq!(ours.len(), images.len());
        for (i, o) in ours.iter().enumerate() {
            assert_same_order(
                o,
                &reference[i],
                &format!("{flags:?} {}", images[i].display()),
            );
        }
    }
}

#[test]
fn moderation_scores_match_python_and_flag_at_each_threshold() {
    let state = tempfile::tempdir().unwrap();
    let images: Vec<PathBuf> = image_list()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .take(3)
        .collect();
    let set_path = common::root().join("config/labels/moderation.toml");
    let set: toml::Value = toml::from_str(&std::fs::read_to_string(&set_path).unwrap()).unwrap();
    let thresholds: Vec<(String, f64)> = set["labels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| {
            let t = l.get("threshold")?;
            let t = t.as_float().or_else(|| t.as_integer().map(|i| i as f64))?;
            Some((l["name"].as_str().unwrap().to_string(), t))
        })
        .collect();
    let all = set["labels"].as_array().unwrap().len();
    let out = ok(&run(atelier(state.path())
        .args(["moderate", "--model", MODEL, "--json"])
        .args(&images)));
    let ours = common::json_schema::check_lines("moderate", out.as_bytes());
    let reference = python_ref(
        "zeroshot",
        &[fixture().checkpoint().as_os_str()],
        &serde_json::json!({"images": images, "label_set": set_path, "top_k": all}),
    );
    assert_eq!(ours.len(), images.len());
    for (i, o) in ours.iter().enumerate() {
        let cats = o["categories"].as_array().unwrap();
        assert_eq!(
            cats.len(),
            thresholds.len(),
            "every safety category, no benign label"
        );
        let mut any = false;
        for (c, (name, threshold)) in cats.iter().zip(&thresholds) {
            assert_eq!(c["category"], name.as_str());
            assert_eq!(c["threshold"].as_f64().unwrap(), *threshold);
            let want = reference[i]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r[0] == name.as_str())
                .unwrap()[1]
                .as_f64()
                .unwrap();
            let score = c["score"].as_f64().unwrap();
            assert!((score - want).abs() < 1e-5, "{name}: {score} vs {want}");
            assert_eq!(c["flagged"], score >= *threshold, "{c}");
            any |= score >= *threshold;
        }
        assert_eq!(o["flagged"], any, "{o}");
    }
}

#[test]
fn label_embeddings_are_cached_until_the_set_changes() {
    let state = tempfile::tempdir().unwrap();
    let set = state.path().join("pets.toml");
    let write_set = |labels: &str| {
        let text = format!("name = \"pets\"\ntemplates = [\"a photo of a {{}}.\", \"a {{}}.\"]\nlabels = [{labels}]\n");
        std::fs::write(&set, text).unwrap();
    };
    let images: Vec<PathBuf> = image_list().into_iter().take(2).collect();
    let tag = || {
        let out = run(atelier(state.path())
            .args(["tag", "--model", MODEL, "--json", "--labels"])
            .arg(&set)
            .args(&images));
        let stdout = ok(&out);
        let embedded = String::from_utf8_lossy(&out.stderr).contains("embedding label set 'pets'");
        (stdout, embedded)
    };
    let cached_files = || {
        std::fs::read_dir(state.path().join("cache/atelier/clip-labels"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    write_set(r#"{ name = "cat" }, { name = "dog" }"#);
    let (first, embedded) = tag();
    assert!(embedded, "the first run embeds the label set");
    assert_eq!(cached_files(), 1);
    let (second, embedded) = tag();
    assert!(!embedded, "the second run reads the cache");
    assert_eq!(first, second, "cached embeddings give the same scores");
    // A changed prompt is another key: embedded again, and its scores differ.
    write_set(r#"{ name = "cat" }, { name = "dog", prompt = "puppy" }"#);
    let (third, embedded) = tag();
    assert!(embedded, "a changed label set is embedded again");
    assert_eq!(cached_files(), 2);
    assert_ne!(first, third);
}

fn summary(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .find(|l| l.starts_with("indexed "))
        .unwrap_or_else(|| panic!("no summary in:\n{err}"))
        .to_string()
}

fn copy_images(dst: &Path, n: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dst).unwrap();
    let src: Vec<PathBuf> = image_list()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    (0..n)
        .map(|i| {
            let p = dst.join(format!("img{i:02}.png"));
            std::fs::copy(&src[i % src.len()], &p).unwrap();
            p
        })
        .collect()
}

#[test]
fn index_is_incremental_prunes_and_searches_like_brute_force() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("photos");
    let files = copy_images(&dir, 5);
    let db = state.path().join("index.sqlite");
    let index = |state: &Path| {
        let mut c = atelier(state);
        c.args(["index", "--model", MODEL, "--batch-size", "2", "--index"])
            .arg(&db)
            .arg(&dir);
        run(&mut c)
    };
    let first = index(state.path());
    ok(&first);
    assert!(
        summary(&first).contains("5 new, 0 updated, 0 unchanged, 0 pruned, 0 failed"),
        "{}",
        summary(&first)
    );

    // Same content, new mtime: not re-embedded. New content: re-embedded. Deleted: pruned.
    let touched = std::fs::read(&files[0]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&files[0], touched).unwrap();
    std::fs::copy(&files[2], &files[1]).unwrap();
    std::fs::remove_file(&files[4]).unwrap();
    let second = index(state.path());
    ok(&second);
    assert!(
        summary(&second).contains("0 new, 1 updated, 3 unchanged, 1 pruned, 0 failed"),
        "{}",
        summary(&second)
    );
    // --json: the same summary as one documented object.
    let mut c = atelier(state.path());
    c.args(["index", "--model", MODEL, "--json", "--index"])
        .arg(&db)
        .arg(&dir);
    let summary_json = common::json_schema::check_lines("index", ok(&run(&mut c)).as_bytes());
    assert_eq!(summary_json.len(), 1);
    let s = &summary_json[0];
    let counts: Vec<i64> = ["new", "updated", "unchanged", "pruned", "failed"]
        .iter()
        .map(|k| s[k].as_i64().unwrap())
        .collect();
    assert_eq!(counts, [0, 0, 4, 0, 0], "{s}");
    assert_eq!(s["index"], serde_json::json!(db.to_string_lossy()));

    // Search equals brute force over the stored matrix (numpy).
    let out = ok(&run(atelier(state.path()).args([
        "embed",
        "--model",
        MODEL,
        "--text",
        "a red rocket",
    ])));
    let query = serde_json::from_str::<Value>(&out).unwrap()["texts"][0]["embedding"].clone();
    let hits = ok(&run(atelier(state.path())
        .args([
            "search",
            "a red rocket",
            "--json",
            "--top",
            "3",
            "--model",
            MODEL,
            "--index",
        ])
        .arg(&db)));
    let ours = common::json_schema::check_lines("search", hits.as_bytes());
    let reference = python_ref(
        "search",
        &[db.as_os_str(), std::ffi::OsStr::new(MODEL)],
        &serde_json::json!({"query": query, "top": 3}),
    );
    assert_eq!(ours.len(), 3);
    // Scores rank for rank; paths as a set, since img01 and img02 are byte-identical copies
    // (a tie that numpy's argsort and libtorch's topk may order either way).
    let reference = reference.as_array().unwrap();
    for (o, r) in ours.iter().zip(reference) {
        assert!((o["score"].as_f64().unwrap() - r[1].as_f64().unwrap()).abs() < 1e-5);
    }
    // A tie can straddle the top-3 cut: name each hit by its first byte-identical file.
    let canon = |p: &str| -> String {
        let bytes = std::fs::read(p).unwrap();
        let mut same: Vec<PathBuf> = files
            .iter()
            .filter(|f| std::fs::read(f).is_ok_and(|b| b == bytes))
            .map(|f| std::fs::canonicalize(f).unwrap())
            .collect();
        same.sort();
        same[0].display().to_string()
    };
    let mut a: Vec<String> = ours
        .iter()
        .map(|o| canon(o["path"].as_str().unwrap()))
        .collect();
    let mut b: Vec<String> = reference
        .iter()
        .map(|r| canon(r[0].as_str().unwrap()))
        .collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);

    // similar: an indexed image finds its byte-identical copy first (cosine 1).
    let sim = ok(&run(atelier(state.path())
        .args([
            "similar", "--json", "--top", "1", "--model", MODEL, "--index",
        ])
        .arg(&db)
        .arg(&files[1])));
    let top = common::json_schema::check_lines("search", sim.as_bytes()).remove(0);
    assert_eq!(
        top["path"].as_str().unwrap(),
        std::fs::canonicalize(&files[2]).unwrap().to_str().unwrap()
    );
    assert!(top["score"].as_f64().unwrap() > 0.99999);
}

#[test]
fn killed_index_run_resumes() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("photos");
    copy_images(&dir, 16);
    let db = state.path().join("index.sqlite");
    let mut child = atelier(state.path())
        .args(["index", "--model", MODEL, "--batch-size", "1", "--index"])
        .arg(&db)
        .arg(&dir)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it (SIGKILL) once some batches are committed.
    let count = |db: &Path| -> i64 {
        rusqlite::Connection::open(db)
            .and_then(|c| c.query_row("SELECT count(*) FROM embeddings", [], |r| r.get(0)))
            .unwrap_or(0)
    };
    let start = std::time::Instant::now();
    while count(&db) < 3 && start.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = count(&db);
    assert!(
        (3..16).contains(&done),
        "{done} rows when killed (expected a partial run)"
    );
    let out = run(atelier(state.path())
        .args(["index", "--model", MODEL, "--index"])
        .arg(&db)
        .arg(&dir));
    ok(&out);
    let expect = format!(
        "{} new, 0 updated, {done} unchanged, 0 pruned, 0 failed",
        16 - done
    );
    assert!(
        summary(&out).contains(&expect),
        "{} (expected {expect})",
        summary(&out)
    );
    assert_eq!(count(&db), 16);
}

#[test]
fn bad_inputs_are_reported_and_the_run_goes_on() {
    let state = tempfile::tempdir().unwrap();
    let bad = state.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let good = image_list()[0].clone();
    let jpeg = std::fs::read(fixture().images().join("rocket.jpg")).unwrap();
    let png = std::fs::read(&good).unwrap();
    std::fs::write(bad.join("empty.png"), b"").unwrap();
    std::fs::write(bad.join("truncated.jpg"), &jpeg[..jpeg.len() / 3]).unwrap();
    std::fs::write(bad.join("truncated.png"), &png[..png.len() / 2]).unwrap();
    std::fs::write(
        bad.join("garbage.png"),
        b"\x89PNG\r\n\x1a\nthis is not a png at all",
    )
    .unwrap();
    std::fs::write(bad.join("notes.jpg"), b"just some text, not an image\n").unwrap();
    // 20000 x 20000 (over the 16384 px limit) but tiny on disk.
    let big = bad.join("bomb.png");
    let status = Command::new(common::python())
        .args([
            "-c",
            "import sys; from PIL import Image; Image.new('1', (20000, 20000)).save(sys.argv[1])",
        ])
        .arg(&big)
        .status()
        .unwrap();
    assert!(status.success());
    let mut names: Vec<PathBuf> = std::fs::read_dir(&bad)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let out = run(atelier(state.path())
        .args(["embed", "--model", MODEL])
        .args(&names)
        .arg(&good)
        .arg(state.path().join("missing.png")));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for name in &names {
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error:") && l.contains(name.to_str().unwrap()))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "{}: expected one error line in:\n{stderr}",
            name.display()
        );
    }
    assert!(stderr.contains("bomb.png: image too large"), "{stderr}");
    assert!(stderr.contains("empty.png: empty file"), "{stderr}");
    let json: Value = serde_json::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(
        json["images"].as_array().unwrap().len(),
        1,
        "the good image is still embedded"
    );

    // The same corpus through `tag` on the folder: every file named, exit 1, nothing else fails.
    let out = run(atelier(state.path())
        .args([
            "tag",
            "--model",
            MODEL,
            "--label",
            "cat",
            "--label",
            "dog",
            "--templates",
            "plain",
        ])
        .arg(&bad)
        .arg(&good));
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
}

/// Peak RSS allowed for `atelier tag` on one hostile image: libtorch and the ViT-B/32 take
/// under 1 GB; unchecked, the lying headers would ask for 3.6 GB (16384×1 resized whole) to
/// 30 GB (100000² pixels).
const IMAGE_RSS_BOUND_KB: i64 = 2048 * 1024;

/// The hostile image corpus through `atelier tag`, one process per file: each refused with its
/// one-line error naming the file (exit 1, no abort), the long thin ones tagged, every peak RSS
/// under the bound; and in one batch the good image is still tagged.
#[test]
fn hostile_images_through_tag_are_named_within_bounded_memory() {
    use common::hostile_images;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let tag = |files: &[PathBuf]| {
        let mut cmd = atelier(&d.join("state"));
        cmd.args([
            "tag", "--model", MODEL, "--json", "--label", "cat", "--label", "dog",
        ])
        .args(files);
        common::run_measured(&mut cmd)
    };
    let mut peaks = Vec::new();
    for (name, w, h) in hostile_images::LONG_THIN {
        let path = d.join(name);
        std::fs::write(&path, hostile_images::png(w, h, 2, None)).unwrap();
        let m = tag(std::slice::from_ref(&path));
        assert_eq!(m.code, 0, "{name}: {}", m.stderr);
        assert_eq!(m.stdout.lines().count(), 1, "{name}: {}", m.stdout);
        peaks.push((name, m.max_rss_kb));
    }
    let mut files = Vec::new();
    for (name, bytes, expect) in hostile_images::cases() {
        let path = d.join(name);
        std::fs::write(&path, &bytes).unwrap();
        let m = tag(std::slice::from_ref(&path));
        assert_ne!(m.code, 0, "{name} was accepted: {}", m.stdout);
        let line = m
            .stderr
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name}: no error names it:\n{}", m.stderr));
        assert!(
            line.contains(expect),
            "{name}: expected {expect:?} in {line:?}"
        );
        peaks.push((name, m.max_rss_kb));
        files.push(path);
    }
    for (name, kb) in &peaks {
        eprintln!("{name}: peak RSS {} MiB", kb / 1024);
        assert!(*kb < IMAGE_RSS_BOUND_KB, "{name}: peak RSS {kb} KB");
    }
    // The whole corpus with one good image in the middle: that one is tagged.
    files.insert(files.len() / 2, image_list()[0].clone());
    let m = tag(&files);
    assert_ne!(m.code, 0);
    let tagged: Vec<Value> = m
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(tagged.len(), 1, "{}\n{}", m.stdout, m.stderr);
    assert_eq!(
        tagged[0]["path"].as_str().unwrap(),
        image_list()[0].to_str().unwrap()
    );
}

/// `atelier tag --write-sidecar` writes `NAME.tags.json` and the caption `NAME.txt` beside the
/// image, keeps a user's own `NAME.txt` (the caption takes `NAME.1.txt`, and says so), and a
/// rerun replaces only its own files.
#[test]
fn sidecars_keep_a_users_caption_and_reruns_replace_their_own() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let image = d.join("photo.png");
    std::fs::copy(&image_list()[0], &image).unwrap();
    std::fs::write(d.join("photo.txt"), "my caption\n").unwrap();
    let tag = || {
        ok(&run(atelier(&d.join("state"))
            .args(["tag", "--model", MODEL, "--write-sidecar", "--top-k", "1"])
            .args(["--label", "cat", "--label", "dog"])
            .arg(&image)))
    };
    tag();
    assert_eq!(
        std::fs::read_to_string(d.join("photo.txt")).unwrap(),
        "my caption\n"
    );
    let caption = std::fs::read_to_string(d.join("photo.1.txt")).unwrap();
    assert!(caption == "cat\n" || caption == "dog\n", "{caption:?}");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("photo.tags.json")).unwrap()).unwrap();
    assert_eq!(json["labels"][0]["label"].as_str().unwrap(), caption.trim());
    assert!(json["labels"][0]["score"].is_number());
    tag();
    let mut names: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("photo"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["photo.1.txt", "photo.png", "photo.tags.json", "photo.txt"]
    );
}
