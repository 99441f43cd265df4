//! `atelier generate` through the binary: bad input, file naming, determinism, `--from-image`.
mod common;

use atelier::output::png_meta;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

/// A store with the tiny random SD 1.5 model, exported once per test binary.
fn store() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let models = dir.path().join("models");
        common::export_tool(&[
            "import-sd",
            "--random-init",
            "tiny-sd15",
            "--models",
            models.to_str().unwrap(),
            "--name",
            "tiny",
            "--no-verify",
        ]);
        // A copy whose UNet file is gone: a model with a missing part.
        let broken = models.join("broken");
        std::fs::create_dir_all(&broken).unwrap();
        for e in std::fs::read_dir(models.join("tiny")).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap();
            if name != "unet.ts" {
                std::fs::copy(&p, broken.join(name)).unwrap();
            }
        }
        let manifest = std::fs::read_to_string(broken.join("manifest.toml")).unwrap();
        std::fs::write(
            broken.join("manifest.toml"),
            manifest.replace("name = \"tiny\"", "name = \"broken\""),
        )
        .unwrap();
        std::fs::create_dir_all(models.join("lora")).unwrap();
        dir
    })
    .path()
}

fn generate(args: &[&str], out: &Path) -> Output {
    let state = store().join("state");
    let mut cmd = common::atelier();
    cmd.env("ATELIER_MODELS", store().join("models"))
        .env("XDG_STATE_HOME", &state)
        .env("ATELIER_CONFIG_DIR", state.join("config"))
        .args(["generate", "--device", "cpu", "--out"])
        .arg(out)
        .args(["--steps", "2"]);
    if !args.contains(&"--model") {
        cmd.args(["--model", "tiny"]);
    }
    cmd.args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn pngs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    v.sort();
    v
}

#[test]
fn bad_input_gives_a_clear_error_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let garbage = dir.path().join("garbage.png");
    std::fs::write(&garbage, b"not a png at all").unwrap();
    let plain = dir.path().join("plain.png");
    image::RgbImage::new(8, 8).save(&plain).unwrap();
    let missing = dir.path().join("missing.png");
    let (g, p, m) = (
        garbage.to_str().unwrap(),
        plain.to_str().unwrap(),
        missing.to_str().unwrap(),
    );
    // (arguments, exit code, text the message must hold)
    let corpus: Vec<(Vec<&str>, i32, String)> = vec![
        (vec!["x", "--width", "100"], 2, "multiple of 8".into()),
        (vec!["x", "--height", "0"], 2, "multiple of 8".into()),
        (
            vec!["x", "--scheduler", "heun2"],
            2,
            "unknown scheduler 'heun2' (valid: ddim, euler, euler-a".into(),
        ),
        (vec!["x", "--init-image", m], 1, m.to_string()),
        (vec!["x", "--init-image", g], 1, g.to_string()),
        (
            vec!["x", "--mask", p],
            2,
            "--mask needs --init-image".into(),
        ),
        (
            vec!["x", "--lora", "nosuch:0.5"],
            1,
            "unknown LoRA 'nosuch'".into(),
        ),
        (
            vec!["x", "--lora", "style:heavy"],
            2,
            "'heavy' is not a weight".into(),
        ),
        (vec!["x <lora:ghost:1>"], 1, "unknown LoRA 'ghost'".into()),
        (
            vec!["x", "--model", "nosuch"],
            1,
            "'nosuch' is not installed".into(),
        ),
        (vec!["x", "--model", "broken"], 1, "unet.ts: missing".into()),
        (
            vec!["--from-image", p],
            2,
            format!("{p}: has no generation parameters"),
        ),
        (vec!["--from-image", g], 2, g.to_string()),
        (vec!["x", "--strength", "1.5"], 2, "--strength 1.5".into()),
        (
            vec!["x", "--controlnet", "tiny"],
            2,
            "--controlnet and --control-image go together".into(),
        ),
    ];
    for (args, code, text) in corpus {
        let o = generate(&args, &out);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(&text), "{args:?}: {err:?} lacks {text:?}");
    }
    assert!(
        !out.exists() || pngs(&out).is_empty(),
        "no image for bad input"
    );
}

#[test]
fn names_never_overwrite_seeds_are_reproducible_and_from_image_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args = [
        "a red bicycle, (oil painting:1.2)",
        "--seed",
        "5",
        "-n",
        "blurry",
    ];
    assert!(generate(&args, &out).status.success());
    assert!(generate(&args, &out).status.success());
    let other = generate(&["a red bicycle", "--seed", "6"], &out);
    assert!(other.status.success(), "{}", stderr(&other));
    let files = pngs(&out);
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["00000-5.png", "00001-5.png", "00002-6.png"]);
    let a = std::fs::read(&files[0]).unwrap();
    assert_eq!(
        a,
        std::fs::read(&files[1]).unwrap(),
        "same seed, same bytes"
    );
    assert_ne!(
        a,
        std::fs::read(&files[2]).unwrap(),
        "another seed, another image"
    );
    let params = png_meta::read_parameters(&files[0]).unwrap().unwrap();
    assert!(params.starts_with("a red bicycle, (oil painting:1.2)\nNegative prompt: blurry\n"));
    assert!(
        params.contains("Steps: 2,") && params.contains("Seed: 5,"),
        "{params}"
    );
    assert!(params.contains("Size: 64x64"), "{params}");

    // --from-image with no other flag repeats the generation exactly.
    let again = generate(&["--from-image", files[0].to_str().unwrap()], &out);
    assert!(again.status.success(), "{}", stderr(&again));
    let repeat = out.join("00003-5.png");
    assert_eq!(
        std::fs::read(&repeat).unwrap(),
        a,
        "--from-image reproduces the image"
    );
}

#[test]
fn json_lists_each_image_with_its_seed_and_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = generate(
        &[
            "a lighthouse at dusk",
            "--seed",
            "11",
            "-b",
            "2",
            "-n",
            "fog",
            "--json",
        ],
        &out,
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let images = common::json_schema::check_lines("generate", &run.stdout);
    let files = pngs(&out);
    assert_eq!(images.len(), 2, "one object per image");
    assert_eq!(files.len(), 2);
    for (image, file) in images.iter().zip(&files) {
        assert_eq!(image["path"], serde_json::json!(file.to_string_lossy()));
        // The object says what the PNG's own A1111 parameters say.
        let params = png_meta::read_parameters(file).unwrap().unwrap();
        assert_eq!(image["infotext"], serde_json::json!(params));
        let seed = image["seed"].as_i64().unwrap();
        assert!(params.contains(&format!("Seed: {seed},")), "{params}");
        assert_eq!(
            (image["prompt"].as_str(), image["negative_prompt"].as_str()),
            (Some("a lighthouse at dusk"), Some("fog"))
        );
        assert_eq!(
            (image["steps"].as_i64(), image["width"].as_i64()),
            (Some(2), Some(64))
        );
    }
    // A1111's batch: consecutive seeds.
    assert_eq!(images[0]["seed"], 11);
    assert_eq!(images[1]["seed"], 12);
}

#[test]
fn a1111_parameters_and_a_mismatched_mask_are_taken() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let a1111 = dir.path().join("a1111.png");
    let text = "a house by the sea\nNegative prompt: ugly\nSteps: 2, Sampler: Euler a, \
                Schedule type: Automatic, CFG scale: 6.5, Seed: 123, Size: 64x64, \
                Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.9.4";
    png_meta::write_png_with_parameters(&a1111, &image::RgbImage::new(64, 64), text).unwrap();
    let o = generate(&["--from-image", a1111.to_str().unwrap()], &out);
    assert!(o.status.success(), "{}", stderr(&o));
    let made = out.join("00000-123.png");
    let params = png_meta::read_parameters(&made).unwrap().unwrap();
    assert!(
        params.starts_with("a house by the sea\nNegative prompt: ugly\n"),
        "{params}"
    );
    assert!(
        params.contains("Sampler: Euler a") && params.contains("CFG scale: 6.5"),
        "{params}"
    );

    // A 32×32 mask for a 64×64 image: rescaled with a note naming the mask.
    let init = dir.path().join("init.png");
    image::RgbImage::from_pixel(64, 64, image::Rgb([200, 100, 50]))
        .save(&init)
        .unwrap();
    let mask = dir.path().join("mask.png");
    image::GrayImage::from_fn(32, 32, |x, _| image::Luma([if x < 16 { 255 } else { 0 }]))
        .save(&mask)
        .unwrap();
    let o = generate(
        &[
            "x",
            "--init-image",
            init.to_str().unwrap(),
            "--mask",
            mask.to_str().unwrap(),
            "--seed",
            "1",
        ],
        &out,
    );
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!("{}: the mask is 32x32", mask.display())),
        "{err}"
    );
    assert!(out.join("00001-1.png").exists());
}

/// A prompt file dropped into a watched folder (`atelier watch --kind generate`) gives the
/// same image as `atelier generate` with its parameters; an empty one fails alone.
#[test]
fn watched_prompt_files_generate_like_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let made = generate(&["a red bicycle", "--seed", "7", "-n", "blurry"], &out);
    assert!(made.status.success(), "{}", stderr(&made));
    let cli_png = pngs(&out).remove(0);
    let infotext = png_meta::read_parameters(&cli_png).unwrap().unwrap();

    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(inbox.join("bicycle.prompt"), &infotext).unwrap();
    std::fs::write(inbox.join("empty.prompt"), "  \n").unwrap();
    let state = store().join("state-watch");
    let watched = common::atelier()
        .env("ATELIER_MODELS", store().join("models"))
        .env("XDG_STATE_HOME", &state)
        .env("XDG_DATA_HOME", &state)
        .env("ATELIER_CONFIG_DIR", state.join("config"))
        .args([
            "watch", "--device", "cpu", "--kind", "generate", "--model", "tiny",
        ])
        .args(["--stable-ms", "100", "--exit-when-idle", "--queue"])
        .arg(dir.path().join("queue.sqlite"))
        .arg(&inbox)
        .output()
        .unwrap();
    // Exit code 1: one job (the empty prompt) failed.
    assert_eq!(watched.status.code(), Some(1), "{}", stderr(&watched));
    let queued_png = inbox.join("bicycle.png");
    let ours = image::open(&queued_png).unwrap().to_rgb8();
    let cli = image::open(&cli_png).unwrap().to_rgb8();
    assert_eq!(ours.as_raw(), cli.as_raw(), "same parameters, same pixels");
    let params = png_meta::read_parameters(&queued_png).unwrap().unwrap();
    assert!(params.contains("Seed: 7,"), "{params}");
    assert!(!inbox.join("empty.png").exists());
    let events = String::from_utf8_lossy(&watched.stdout);
    assert!(
        events.contains("the prompt file is empty"),
        "the empty prompt fails with its reason: {events}"
    );
}
