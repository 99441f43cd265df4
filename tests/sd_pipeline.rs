//! Stable Diffusion pipelines against diffusers' own pipelines on the same random tiny weights.
//!
//! The models are made once per test binary by `tools.export import-sd --random-init … --save-source`
//! (the traced modules in the store, the same weights as a diffusers folder); the references come
//! from `tools/export/refs/sd_pipeline_ref.py`, run once on every case with the same seeds.
//! LoRA cases: a random LoRA for the tiny SD 1.5 (tools/export/refs/sd_lora_ref.py
//! `--for-pipeline`, Kohya and PEFT formats), loaded by diffusers with `load_lora_weights` +
//! `fuse_lora(lora_scale=0.7)` and by atelier from `<lora:NAME:0.7>` / `--lora NAME:0.7`.
mod common;

use atelier::cmd::generate::parse_lora_flag;
use atelier::engine::diffusion::inputs::resolve_lora;
use atelier::engine::diffusion::model::{ControlNet, SdModel};
use atelier::engine::diffusion::pipeline::{
    self, ControlInput, Generation, InitImage, Loras, Progress, Request,
};
use atelier::engine::diffusion::scheduler::SchedulerKind;
use atelier::engine::diffusion::vae_tiling::{self, TileConfig};
use atelier::engine::{CancelToken, InstalledModel};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

const SIZE: i64 = 64;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn models(&self) -> PathBuf {
        self.dir.path().join("models")
    }
    fn src(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("src-{name}"))
    }
    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Exports the tiny models (no trace verification: sd_export's own test covers it) and writes
/// the input images.
fn fixture() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(|| {
        let _ = tch::no_grad_guard();
        let dir = tempfile::tempdir().unwrap();
        let fx = Fixture { dir };
        let models = fx.models();
        let exports: [(&str, &str, &str); 4] = [
            ("import-sd", "tiny-sd15", "sd15"),
            ("import-sd", "tiny-sd15-inpaint", "inpaint"),
            ("import-sd", "tiny-sdxl", "sdxl"),
            ("import-controlnet", "tiny-sd15", "cn"),
        ];
        std::thread::scope(|s| {
            for (cmd, config, name) in exports {
                let models = models.clone();
                let src = fx.src(name);
                s.spawn(move || {
                    common::export_tool(&[
                        cmd,
                        "--random-init",
                        config,
                        "--models",
                        models.to_str().unwrap(),
                        "--name",
                        name,
                        "--save-source",
                        src.to_str().unwrap(),
                        "--no-verify",
                    ]);
                });
            }
        });
        // Inputs: a smooth colour field, a mask with a white square, stripes for ControlNet.
        let init = image::RgbImage::from_fn(SIZE as u32, SIZE as u32, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 4) as u8, ((x + y) * 2) as u8])
        });
        init.save(fx.file("init.png")).unwrap();
        let mask = image::GrayImage::from_fn(SIZE as u32, SIZE as u32, |x, y| {
            let inside = (16..48).contains(&x) && (8..40).contains(&y);
            image::Luma([if inside { 255 } else { 0 }])
        });
        mask.save(fx.file("mask.png")).unwrap();
        let control = image::RgbImage::from_fn(SIZE as u32, SIZE as u32, |x, _| {
            let v = if (x / 8) % 2 == 0 { 255 } else { 0 };
            image::Rgb([v, v, v])
        });
        control.save(fx.file("control.png")).unwrap();
        let lora_dir = fx.file("lora");
        std::fs::create_dir_all(&lora_dir).unwrap();
        common::run_python(
            "tools/export/refs/sd_lora_ref.py",
            &[
                "--for-pipeline".as_ref(),
                fx.src("sd15").as_os_str(),
                lora_dir.as_os_str(),
            ],
        );
        fx
    })
}

/// How atelier is told to use a LoRA: a `<lora:NAME:W>` tag in the prompt, or `--lora NAME:W`.
#[derive(Clone, Copy)]
enum LoraUse {
    Tag,
    Flag,
}

#[derive(Clone)]
struct Case {
    name: String,
    kind: &'static str,
    scheduler: &'static str,
    steps: usize,
    guidance: f64,
    seed: u64,
    batch: usize,
    negative: &'static str,
    strength: f64,
    control: Option<(f64, f64, f64)>,
    /// (file stem in the fixture's LoRA folder, weight, how atelier gets it)
    lora: Option<(&'static str, f64, LoraUse)>,
}

fn case(name: &str, kind: &'static str, scheduler: &'static str) -> Case {
    Case {
        name: name.to_string(),
        kind,
        scheduler,
        steps: 4,
        guidance: 7.5,
        seed: 42,
        batch: 1,
        negative: "blurry, low quality",
        strength: 1.0,
        control: None,
        lora: None,
    }
}

const PROMPT: &str = "a watercolor painting of a lighthouse at dusk";

/// Every scheduler the reference can run here (diffusers' DPM++ SDE needs torchsde, which the
/// venv does not have; tests/sd_schedulers.rs covers that scheduler's math).
const SCHEDULERS: [&str; 8] = [
    "ddim",
    "euler",
    "euler-a",
    "dpmpp-2m",
    "dpmpp-2m-karras",
    "unipc",
    "lms",
    "pndm",
];

fn cases() -> Vec<Case> {
    let mut out: Vec<Case> = SCHEDULERS
        .iter()
        .map(|s| case(&format!("txt2img-{s}"), "txt2img", s))
        .collect();
    out.push(Case {
        batch: 2,
        seed: 7,
        ..case("txt2img-batch-euler-a", "txt2img", "euler-a")
    });
    out.push(Case {
        guidance: 1.0,
        ..case("txt2img-noguidance", "txt2img", "euler")
    });
    out.push(Case {
        strength: 0.6,
        ..case("img2img-euler-a", "img2img", "euler-a")
    });
    out.push(Case {
        strength: 0.75,
        ..case("img2img-ddim", "img2img", "ddim")
    });
    out.push(case("inpaint-unet9", "inpaint9", "euler"));
    out.push(Case {
        strength: 0.8,
        ..case("inpaint-unet9-strength", "inpaint9", "ddim")
    });
    out.push(case("inpaint-blend", "inpaint", "euler-a"));
    out.push(Case {
        control: Some((0.8, 0.0, 1.0)),
        ..case("controlnet", "controlnet", "euler")
    });
    out.push(Case {
        control: Some((1.2, 0.25, 0.75)),
        ..case("controlnet-window", "controlnet", "dpmpp-2m")
    });
    out.push(Case {
        negative: "",
        ..case("sdxl", "sdxl", "euler")
    });
    out.push(Case {
        steps: 3,
        ..case("sdxl-negative", "sdxl", "euler-a")
    });
    // Same seed, scheduler and steps as txt2img-euler-a / txt2img-dpmpp-2m-karras: the LoRA
    // must be what changes the result.
    out.push(Case {
        lora: Some(("style_kohya", 0.7, LoraUse::Tag)),
        ..case("txt2img-lora-kohya", "lora", "euler-a")
    });
    out.push(Case {
        lora: Some(("style_peft", 0.7, LoraUse::Flag)),
        ..case("txt2img-lora-peft", "lora", "dpmpp-2m-karras")
    });
    out
}

/// What atelier is asked: the prompt (with its `<lora:…>` tag) and the LoRA files with weights,
/// found as `atelier generate` finds them (the tag or flag, then NAME.safetensors in the folder).
fn prompt_and_loras(c: &Case) -> (String, Vec<(PathBuf, f64)>) {
    let Some((name, weight, how)) = c.lora else {
        return (PROMPT.to_string(), Vec::new());
    };
    let (prompt, specs) = match how {
        LoraUse::Tag => {
            let prompt = format!("{PROMPT} <lora:{name}:{weight}>");
            let specs = pipeline::split_loras(&prompt).1;
            (prompt, specs)
        }
        LoraUse::Flag => (
            PROMPT.to_string(),
            vec![parse_lora_flag(&format!("{name}:{weight}")).unwrap()],
        ),
    };
    assert_eq!(specs, vec![(name.to_string(), weight)], "{}", c.name);
    let dir = fixture().file("lora");
    let files = specs
        .iter()
        .map(|(n, w)| (resolve_lora(n, &dir).unwrap(), *w))
        .collect();
    (prompt, files)
}

fn model_name(kind: &str) -> &'static str {
    match kind {
        "inpaint9" => "inpaint",
        "sdxl" => "sdxl",
        _ => "sd15",
    }
}

/// The reference file for every case, made once.
fn references() -> &'static Path {
    static REFS: OnceLock<PathBuf> = OnceLock::new();
    REFS.get_or_init(|| {
        let fx = fixture();
        let list: Vec<serde_json::Value> = cases()
            .iter()
            .map(|c| {
                let (pipe, src) = match c.kind {
                    "inpaint9" => ("inpaint", fx.src("inpaint")),
                    "inpaint" => ("inpaint", fx.src("sd15")),
                    "lora" => ("txt2img", fx.src("sd15")),
                    "sdxl" => ("sdxl", fx.src("sdxl")),
                    other => (other, fx.src("sd15")),
                };
                let (scale, start, end) = c.control.unwrap_or((1.0, 0.0, 1.0));
                let lora = c
                    .lora
                    .map(|(name, _, _)| fx.file("lora").join(format!("{name}.safetensors")));
                json!({
                    "name": c.name, "kind": pipe, "src": src, "scheduler": c.scheduler,
                    "prompt": PROMPT, "negative": c.negative, "steps": c.steps,
                    "guidance": c.guidance, "seed": c.seed, "batch": c.batch,
                    "width": SIZE, "height": SIZE, "strength": c.strength,
                    "init": fx.file("init.png"), "mask": fx.file("mask.png"),
                    "control": fx.file("control.png"), "controlnet": fx.src("cn"),
                    "control_scale": scale, "control_start": start, "control_end": end,
                    "lora": lora, "lora_scale": c.lora.map(|(_, w, _)| w),
                })
            })
            .collect();
        let json_path = fx.file("cases.json");
        std::fs::write(&json_path, serde_json::to_string(&list).unwrap()).unwrap();
        let out = fx.file("refs.safetensors");
        common::run_python(
            "tools/export/refs/sd_pipeline_ref.py",
            &[json_path.as_os_str(), out.as_os_str()],
        );
        out
    })
}

fn load_refs() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(references())
        .unwrap()
        .into_iter()
        .collect()
}

fn open_model(name: &str) -> SdModel {
    let dir = fixture().models().join(name);
    SdModel::load(&InstalledModel::open(&dir).unwrap(), Device::Cpu, false).unwrap()
}

fn rgb(path: &Path) -> Tensor {
    pipeline::image_to_tensor(&image::open(path).unwrap().to_rgb8())
}

fn run_case(model: &mut SdModel, control: Option<&mut ControlNet>, c: &Case) -> Generation {
    let fx = fixture();
    let init = match c.kind {
        "img2img" => Some(InitImage {
            pixels: rgb(&fx.file("init.png")),
            strength: c.strength,
            mask: None,
        }),
        "inpaint" | "inpaint9" => Some(InitImage {
            pixels: rgb(&fx.file("init.png")),
            strength: c.strength,
            mask: Some(pipeline::mask_to_tensor(
                &image::open(fx.file("mask.png")).unwrap().to_luma8(),
            )),
        }),
        _ => None,
    };
    let (prompt, loras) = prompt_and_loras(c);
    let req = Request {
        prompt,
        negative: c.negative.into(),
        steps: c.steps,
        guidance: c.guidance,
        scheduler: SchedulerKind::from_name(c.scheduler).unwrap(),
        width: SIZE,
        height: SIZE,
        batch: c.batch,
        seed: c.seed,
        variation: None,
        init,
        control: c.control.map(|(scale, start, end)| ControlInput {
            image: rgb(&fx.file("control.png")),
            scale,
            guidance_start: start,
            guidance_end: end,
        }),
        loras,
        vae_tiling: false,
        preview_every: 0,
    };
    let mut steps = 0;
    let g = pipeline::generate(model, control, &req, &CancelToken::new(), &mut |p| {
        if let Progress::Step { .. } = p {
            steps += 1
        }
    })
    .unwrap();
    assert_eq!(
        steps, g.steps_run,
        "{}: one progress event per step",
        c.name
    );
    g
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Final latents and decoded pixels against diffusers. Tolerance: the same fp32 weights run
/// through TorchScript vs eager PyTorch differ in op order at ~1e-6; a few denoising steps with
/// guidance 7.5 amplify that, so 2e-3 absolute on latents (whose values reach ~±4·σ) and on
/// pixels (range [-1, 1]) — far below what a wrong draw, timestep or formula gives (≥ 0.1).
fn compare(c: &Case, g: &Generation, refs: &HashMap<String, Tensor>) {
    let rl = &refs[&format!("{}.latents", c.name)];
    let rp = &refs[&format!("{}.pixels", c.name)];
    assert_eq!(g.latents.size(), rl.size(), "{}: latent shape", c.name);
    let dl = max_abs(&g.latents, rl);
    let dp = max_abs(&g.pixels, rp);
    eprintln!(
        "{}: max |Δlatents| {dl:.2e}, max |Δpixels| {dp:.2e}",
        c.name
    );
    assert!(
        dl < 2e-3,
        "{}: latents differ from diffusers by {dl}",
        c.name
    );
    assert!(
        dp < 2e-3,
        "{}: pixels differ from diffusers by {dp}",
        c.name
    );
}

fn run_kind(kinds: &[&str]) {
    let refs = load_refs();
    let _guard = tch::no_grad_guard();
    let mut models: HashMap<&str, SdModel> = HashMap::new();
    let mut cn: Option<ControlNet> = None;
    for c in cases().iter().filter(|c| kinds.contains(&c.kind)) {
        let name = model_name(c.kind);
        let model = models.entry(name).or_insert_with(|| open_model(name));
        let control = if c.kind == "controlnet" {
            Some(cn.get_or_insert_with(|| {
                let dir = fixture().models().join("cn");
                ControlNet::load(&InstalledModel::open(&dir).unwrap(), Device::Cpu, false).unwrap()
            }))
        } else {
            None
        };
        let g = run_case(model, control, c);
        compare(c, &g, &refs);
    }
}

#[test]
fn txt2img_matches_diffusers_with_every_scheduler() {
    run_kind(&["txt2img"]);
}

#[test]
fn img2img_and_inpainting_match_diffusers() {
    run_kind(&["img2img", "inpaint", "inpaint9"]);
}

#[test]
fn controlnet_and_sdxl_match_diffusers() {
    run_kind(&["controlnet", "sdxl"]);
}

/// A LoRA fused by atelier (`<lora:style_kohya:0.7>` in the prompt, `--lora style_peft:0.7`)
/// gives diffusers' `load_lora_weights` + `fuse_lora(lora_scale=0.7)` result within the same
/// tolerance as the other cases: the fused weights differ from diffusers' by a few float32 ulps
/// (tests/sd_lora.rs), as small as the TorchScript-vs-eager differences the tolerance covers.
/// Unfusing gives the plain model's result again.
#[test]
fn lora_in_the_prompt_or_flag_matches_diffusers_fuse_lora() {
    let refs = load_refs();
    let _guard = tch::no_grad_guard();
    let mut model = open_model("sd15");
    let mut loras = Loras::new();
    let all = cases();
    let find = |name: &str| all.iter().find(|c| c.name == name).unwrap();
    for (lora_case, base_case) in [
        ("txt2img-lora-kohya", "txt2img-euler-a"),
        ("txt2img-lora-peft", "txt2img-dpmpp-2m-karras"),
    ] {
        let c = find(lora_case);
        loras.apply(&mut model, &prompt_and_loras(c).1).unwrap();
        let g = run_case(&mut model, None, c);
        compare(c, &g, &refs);
        // The LoRA is what makes the difference: far more than the tolerance from the plain
        // model's image with the same seed and scheduler.
        let plain = max_abs(&g.pixels, &refs[&format!("{base_case}.pixels")]);
        eprintln!("{lora_case}: max |Δpixels| from {base_case} {plain:.2e}");
        assert!(
            plain > 0.1,
            "{lora_case}: the LoRA changed the image by only {plain}"
        );
    }
    loras.apply(&mut model, &[]).unwrap();
    let c = find("txt2img-euler-a");
    let g = run_case(&mut model, None, c);
    compare(c, &g, &refs);
}

#[test]
fn tiled_vae_decode_agrees_with_the_whole_decode() {
    let _guard = tch::no_grad_guard();
    let mut model = open_model("sd15");
    // 160×96 latent pixels: 3×2 tiles of 64 with 16 overlap; a 1280×768 image.
    let z = Tensor::randn([1, 4, 96, 160], (Kind::Float, Device::Cpu));
    let whole = pipeline::decode(&mut model, &z, false).unwrap();
    let tiled = pipeline::decode(&mut model, &z, true).unwrap();
    assert_eq!(whole.size(), tiled.size());
    // The VAE's GroupNorm and mid-block attention see the whole latent, so a tile decodes a
    // little differently from the same region of the whole; the blend must keep that small
    // everywhere, seams included (a hard seam or a misplaced tile gives differences near 1).
    let diff = (&whole - &tiled).abs();
    let mean = diff.mean(Kind::Float).double_value(&[]);
    let starts = vae_tiling::tile_starts(
        160,
        TileConfig::default().tile,
        TileConfig::default().overlap,
    );
    let mut seam_max: f64 = 0.0;
    for &x in &starts[1..] {
        let band = diff.narrow(3, x * 8, 16 * 8);
        seam_max = seam_max.max(band.mean(Kind::Float).double_value(&[]));
    }
    eprintln!("tiled vs whole: mean |Δ| {mean:.3e}, worst seam band mean |Δ| {seam_max:.3e}");
    assert!(mean < 0.05, "mean difference {mean}");
    assert!(seam_max < 0.05, "seam band difference {seam_max}");
}
