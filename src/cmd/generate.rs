//! `atelier generate PROMPT`: Stable Diffusion from the command line. Images are written as
//! `NNNNN-SEED.png` (the next free number, never overwriting) with A1111's `parameters` chunk.
use crate::cli::GenerateArgs;
use crate::config::{DeviceChoice, Loaded};
use crate::engine::diffusion::infotext::GenerationParams;
use crate::engine::diffusion::inputs;
use crate::engine::diffusion::pipeline::{
    self, ControlInput, InitImage, Progress, Request, SessionSpec,
};
use crate::engine::diffusion::scheduler::SchedulerKind;
use crate::engine::diffusion::seed::resolve_seed;
use crate::engine::{runtime, store, CancelToken, DeviceThread};
use crate::output::png_meta;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    super::exit(super::EXIT_USAGE)
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    super::exit(super::EXIT_FAILURE)
}

/// Every scheduler's CLI name, from the scheduler table.
fn scheduler_names() -> String {
    SchedulerKind::all()
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `NAME:W` (W defaults to 1).
pub fn parse_lora_flag(text: &str) -> Result<(String, f64), String> {
    let (name, weight) = match text.rsplit_once(':') {
        Some((n, w)) => (
            n,
            w.trim()
                .parse::<f64>()
                .map_err(|_| format!("--lora {text}: '{w}' is not a weight (use NAME:WEIGHT)"))?,
        ),
        _ => (text, 1.0),
    };
    if name.trim().is_empty() {
        return Err(format!("--lora {text}: empty LoRA name (use NAME:WEIGHT)"));
    }
    Ok((name.trim().to_string(), weight))
}

/// The parameters of a generation before defaults, from `--from-image` and the flags.
struct Settings {
    prompt: String,
    negative: String,
    steps: usize,
    guidance: f64,
    seed: i64,
    scheduler: SchedulerKind,
    width: i64,
    height: i64,
    strength: f64,
    variation: Option<(u64, f64)>,
}

fn settings(
    args: &GenerateArgs,
    loaded: &Loaded,
    native: i64,
) -> Result<(Settings, Option<GenerationParams>), String> {
    let cfg = &loaded.config.diffusion;
    let from = match &args.from_image {
        None => None,
        Some(path) => {
            let text = png_meta::read_parameters(path)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| {
                    format!(
                        "{}: has no generation parameters (no `parameters` text chunk)",
                        path.display()
                    )
                })?;
            Some(GenerationParams::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?)
        }
    };
    let scheduler = match (&args.scheduler, &from) {
        (Some(name), _) => SchedulerKind::from_name(name).ok_or_else(|| {
            format!(
                "--scheduler: unknown scheduler '{name}' (valid: {})",
                scheduler_names()
            )
        })?,
        (None, Some(p)) => SchedulerKind::from_a1111(&p.sampler, p.schedule_type.as_deref())
            .ok_or_else(|| {
                format!(
                    "{}: sampler '{}' has no scheduler here (valid: {}); pass --scheduler",
                    args.from_image
                        .as_deref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    p.sampler,
                    scheduler_names()
                )
            })?,
        (None, None) => SchedulerKind::from_name(&cfg.scheduler).ok_or_else(|| {
            format!(
                "diffusion.scheduler in config.toml: unknown scheduler '{}' (valid: {})",
                cfg.scheduler,
                scheduler_names()
            )
        })?,
    };
    let dim = |flag: Option<i64>, from: Option<u32>, conf: u32| {
        flag.or(from.map(i64::from))
            .or((conf > 0).then_some(conf as i64))
            .unwrap_or(native)
    };
    let variation = match (
        args.variation_seed
            .or(from.as_ref().and_then(|p| p.variation_seed)),
        args.variation_strength
            .or(from.as_ref().and_then(|p| p.variation_strength)),
    ) {
        (Some(seed), strength) => Some((seed, strength.unwrap_or(0.0))),
        (None, Some(s)) if s > 0.0 => {
            return Err("--variation-strength needs --variation-seed".into());
        }
        _ => None,
    };
    let s = Settings {
        prompt: args
            .prompt
            .clone()
            .or(from.as_ref().map(|p| p.prompt.clone()))
            .unwrap_or_default(),
        negative: args
            .negative
            .clone()
            .or(from.as_ref().map(|p| p.negative_prompt.clone()))
            .unwrap_or_default(),
        steps: args
            .steps
            .or(from.as_ref().map(|p| p.steps as usize))
            .unwrap_or(cfg.steps.max(1) as usize),
        guidance: args
            .guidance
            .or(from.as_ref().map(|p| p.cfg_scale))
            .unwrap_or(cfg.guidance),
        seed: args
            .seed
            .or(from.as_ref().map(|p| p.seed as i64))
            .unwrap_or(-1),
        scheduler,
        width: dim(args.width, from.as_ref().map(|p| p.width), cfg.width),
        height: dim(args.height, from.as_ref().map(|p| p.height), cfg.height),
        strength: args
            .strength
            .or(from.as_ref().and_then(|p| p.denoising_strength))
            .unwrap_or(if args.mask.is_some() { 1.0 } else { 0.75 }),
        variation,
    };
    Ok((s, from))
}

fn check(s: &Settings) -> Result<(), String> {
    for (flag, v) in [("--width", s.width), ("--height", s.height)] {
        if v <= 0 || v % 8 != 0 {
            return Err(format!(
                "{flag} {v}: the size must be a positive multiple of 8 (e.g. {})",
                ((v.max(8) + 4) / 8) * 8
            ));
        }
    }
    if s.steps == 0 || s.steps > 1000 {
        return Err(format!("--steps {}: use 1 to 1000", s.steps));
    }
    if !(0.0..=1.0).contains(&s.strength) {
        return Err(format!("--strength {}: use a value in [0, 1]", s.strength));
    }
    if let Some((_, v)) = s.variation {
        if !(0.0..=1.0).contains(&v) {
            return Err(format!("--variation-strength {v}: use a value in [0, 1]"));
        }
    }
    Ok(())
}

/// Loads an image at (width, height), resizing with a note when it differs.
fn sized_rgb(path: &Path, what: &str, w: i64, h: i64) -> Result<image::RgbImage, String> {
    let (img, note) = inputs::load_rgb_sized(path, what, w, h)?;
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    Ok(img)
}

fn load_mask(path: &Path, w: u32, h: u32, image: &Path) -> Result<image::GrayImage, String> {
    let (mask, note) = inputs::load_mask_sized(path, w, h, image)?;
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    Ok(mask)
}

fn is_oom(message: &str) -> bool {
    let m = message.to_lowercase();
    m.contains("out of memory")
}

pub fn run(
    loaded: &Loaded,
    args: GenerateArgs,
    device: DeviceChoice,
    models_dir: &Path,
) -> ExitCode {
    let cfg = &loaded.config.diffusion;
    if let Some(n) = args.threads {
        runtime::set_threads(n);
    }
    let device = match runtime::resolve_device(device) {
        Ok(d) => d,
        Err(e) => return usage(e),
    };
    let name = args.model.clone().unwrap_or_else(|| cfg.model.clone());
    let model = match store::find(models_dir, &name, "sd") {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    if model.manifest.random_init {
        eprintln!(
            "warning: {}: random weights (a test model): its images mean nothing",
            model.name()
        );
    }
    let native = inputs::native_size(&model);
    let (s, _from) = match settings(&args, loaded, native) {
        Ok(v) => v,
        Err(e) => return usage(e),
    };
    if let Err(e) = check(&s) {
        return usage(e);
    }
    if args.mask.is_some() && args.init_image.is_none() {
        return usage("--mask needs --init-image (the image to inpaint)");
    }
    if args.controlnet.is_some() != args.control_image.is_some() {
        return usage("--controlnet and --control-image go together");
    }
    let lora_dir = inputs::lora_dir(&cfg.lora_dir, models_dir);
    let (_, prompt_loras) = pipeline::split_loras(&s.prompt);
    let mut lora_specs: Vec<(String, f64)> = Vec::new();
    for flag in &args.lora {
        match parse_lora_flag(flag) {
            Ok(v) => lora_specs.push(v),
            Err(e) => return usage(e),
        }
    }
    lora_specs.extend(prompt_loras);
    let loras = match inputs::resolve_loras(&lora_specs, &lora_dir) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };

    let init = match &args.init_image {
        None => None,
        Some(path) => {
            let img = match sized_rgb(path, "init image", s.width, s.height) {
                Ok(i) => i,
                Err(e) => return fail(e),
            };
            let mask = match &args.mask {
                None => None,
                Some(mp) => match load_mask(mp, img.width(), img.height(), path) {
                    Ok(m) => Some(pipeline::mask_to_tensor(&m)),
                    Err(e) => return fail(e),
                },
            };
            Some(InitImage {
                pixels: pipeline::image_to_tensor(&img),
                strength: s.strength,
                mask,
            })
        }
    };
    let control_model = match &args.controlnet {
        None => None,
        Some(n) => match store::find(models_dir, n, "controlnet") {
            Ok(m) => Some(m),
            Err(e) => return fail(e),
        },
    };
    let control = match &args.control_image {
        None => None,
        Some(path) => match sized_rgb(path, "control image", s.width, s.height) {
            Ok(img) => Some(ControlInput {
                image: pipeline::image_to_tensor(&img),
                scale: args.control_scale,
                guidance_start: args.control_start,
                guidance_end: args.control_end,
            }),
            Err(e) => return fail(e),
        },
    };
    let out_dir = args
        .out
        .clone()
        .or_else(|| (!cfg.output_dir.is_empty()).then(|| PathBuf::from(&cfg.output_dir)))
        .unwrap_or_else(|| PathBuf::from("."));
    if let Err(e) = std::fs::create_dir_all(&out_dir) {
        return fail(format!(
            "{}: cannot create the folder: {e}",
            out_dir.display()
        ));
    }

    let seed = resolve_seed(s.seed);
    let request = Request {
        prompt: s.prompt.clone(),
        negative: s.negative.clone(),
        steps: s.steps,
        guidance: s.guidance,
        scheduler: s.scheduler,
        width: s.width,
        height: s.height,
        batch: args.batch.max(1),
        seed,
        variation: s.variation,
        init,
        control,
        loras,
        vae_tiling: args.vae_tiling,
        preview_every: if args.preview { args.preview_every } else { 0 },
    };
    let described = inputs::describe(&request, model.name());
    let thread = match DeviceThread::spawn(device) {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot start the model thread: {e}")),
    };
    let spec = SessionSpec {
        model: model.clone(),
        controlnet: control_model,
        offload: args.offload,
    };
    let (tx, rx) = mpsc::channel();
    let cancel = CancelToken::new();
    let started = std::time::Instant::now();
    let job = {
        let thread = thread.clone();
        let cancel = cancel.clone();
        std::thread::spawn(move || pipeline::run_job(&thread, spec, request, cancel, tx))
    };
    let tty = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new(s.steps as u64);
    if !tty {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut step_started = None;
    for p in rx {
        match p {
            Progress::Step { step, total } => {
                step_started.get_or_insert_with(std::time::Instant::now);
                bar.set_length(total as u64);
                bar.set_position(step as u64);
            }
            Progress::Preview { step, image } => {
                if std::io::stdout().is_terminal() {
                    bar.suspend(|| {
                        println!("step {step}:");
                        show(&image);
                    });
                }
            }
            Progress::Decoding => bar.set_message("decoding"),
        }
    }
    bar.finish_and_clear();
    let result = match job.join() {
        Ok(r) => r,
        Err(_) => Err("the generation thread panicked".to_string()),
    };
    let generation = match result {
        Ok(g) => g,
        Err(e) if is_oom(&e) => {
            return fail(format!(
            "{e}\nthe GPU ran out of memory: try --offload (modules visit the GPU one at a time), \
                 --vae-tiling, a smaller --width/--height or --batch 1"
        ))
        }
        Err(e) => return fail(e),
    };
    let elapsed = started.elapsed().as_secs_f64();
    let mut number = inputs::next_number(&out_dir);
    for (i, image) in generation.images.iter().enumerate() {
        let params = inputs::for_image(&described, &generation, i);
        let path =
            match crate::output::numbering::claim_image_path(&out_dir, &mut number, params.seed) {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
        if let Err(e) = png_meta::write_png_with_parameters(&path, image, &params.to_infotext()) {
            return fail(e);
        }
        println!("{}", path.display());
        if args.preview && std::io::stdout().is_terminal() {
            show(image);
        }
    }
    let steps_run = generation.steps_run.max(1);
    let memory = generation
        .peak_memory
        .map(|b| format!(", peak memory {:.0} MiB", b as f64 / (1024.0 * 1024.0)))
        .unwrap_or_default();
    eprintln!(
        "{} image(s), seed {}, {} steps in {:.1} s ({:.2} s/step){memory}",
        generation.images.len(),
        seed,
        steps_run,
        elapsed,
        generation.denoise_seconds / steps_run as f64
    );
    ExitCode::SUCCESS
}

fn show(image: &image::RgbImage) {
    let config = viuer::Config {
        absolute_offset: false,
        width: Some(40),
        ..Default::default()
    };
    let dynamic = image::DynamicImage::ImageRgb8(image.clone());
    if let Err(e) = viuer::print(&dynamic, &config) {
        eprintln!("note: cannot show the image here: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_flags_parse_name_and_weight() {
        assert_eq!(parse_lora_flag("style:0.7").unwrap(), ("style".into(), 0.7));
        assert_eq!(parse_lora_flag("style").unwrap(), ("style".into(), 1.0));
        assert!(parse_lora_flag("style:x").is_err());
        assert!(parse_lora_flag(":1").is_err());
    }
}
