//! `atelier generate PROMPT`: Stable Diffusion from the command line. Images are written as
//! `NNNNN-SEED.png` (the next free number, never overwriting) with A1111's `parameters` chunk.
use super::{fail, usage};
use crate::app::terminal;
use crate::cli::GenerateArgs;
use crate::config::{DeviceChoice, Loaded};
use crate::engine::diffusion::infotext::GenerationParams;
use crate::engine::diffusion::inputs;
use crate::engine::diffusion::pipeline::{self, Progress};
use crate::engine::diffusion::request::{
    self, ControlSettings, FromInfotext, Names, RequestError, Resolved, SdRequest, SeedChoice,
};
use crate::engine::{runtime, CancelToken, DeviceThread};
use crate::output::png_meta;
use ratatui_image::picker::ProtocolType;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;

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

/// The flags as one [`SdRequest`]; `--from-image` fills what the flags leave out.
fn sd_request(args: &GenerateArgs) -> Result<SdRequest, String> {
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
            let params =
                GenerationParams::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            Some(FromInfotext {
                params,
                origin: path.clone(),
            })
        }
    };
    let loras = args
        .lora
        .iter()
        .map(|flag| parse_lora_flag(flag))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SdRequest {
        names: Names::Flags,
        model: args.model.clone(),
        prompt: args.prompt.clone(),
        negative: args.negative.clone(),
        steps: args.steps,
        guidance: args.guidance,
        // -1: random, overriding an infotext's seed.
        seed: args
            .seed
            .map(|s| u64::try_from(s).map_or(SeedChoice::Random, SeedChoice::Fixed)),
        scheduler: args.scheduler.clone(),
        width: args.width,
        height: args.height,
        batch: args.batch,
        strength: args.strength,
        variation_seed: args.variation_seed,
        variation_strength: args.variation_strength,
        init_image: args.init_image.clone(),
        mask: args.mask.clone(),
        controlnet: args.controlnet.clone(),
        control_image: args.control_image.clone(),
        control: ControlSettings {
            scale: args.control_scale,
            start: args.control_start,
            end: args.control_end,
        },
        loras,
        vae_tiling: args.vae_tiling,
        offload: args.offload,
        preview_every: if args.preview { args.preview_every } else { 0 },
        from,
    })
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
    let req = match sd_request(&args) {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    let resolved = match request::resolve(&req, cfg, models_dir) {
        Ok(r) => r,
        Err(RequestError::Usage(e)) => return usage(e),
        Err(RequestError::Failure(e)) => return fail(e),
    };
    let Resolved {
        spec,
        request,
        described,
        notes,
    } = resolved;
    if spec.model.manifest.random_init {
        eprintln!(
            "warning: {}: random weights (a test model): its images mean nothing",
            spec.model.name()
        );
    }
    for note in notes {
        eprintln!("note: {note}");
    }
    // The TUI's protocol choice (the terminal is asked before the progress bar starts).
    let protocol = if args.preview && std::io::stdout().is_terminal() {
        terminal::image_picker(loaded.config.ui.image_protocol)
            .0
            .protocol_type()
    } else {
        ProtocolType::Halfblocks
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

    let seed = request.seed;
    let steps = request.steps;
    let thread = match DeviceThread::spawn(device) {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot start the model thread: {e}")),
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
    let bar = indicatif::ProgressBar::new(steps as u64);
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
                        show(&image, protocol);
                    });
                }
            }
            Progress::Decoding => bar.set_message("decoding"),
        }
    }
    bar.finish_and_clear();
    let result = match job.join() {
        Ok(r) => r.map_err(|e| e.to_string()),
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
        if args.json {
            println!("{}", image_json(&path, &params));
        } else {
            println!("{}", path.display());
        }
        if args.preview && std::io::stdout().is_terminal() {
            show(image, protocol);
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

/// `generate --json`: one object per image (docs/diffusion.md).
fn image_json(
    path: &std::path::Path,
    p: &crate::engine::diffusion::infotext::GenerationParams,
) -> serde_json::Value {
    serde_json::json!({
        "path": path, "seed": p.seed, "prompt": p.prompt, "negative_prompt": p.negative_prompt,
        "steps": p.steps, "sampler": p.sampler, "schedule_type": p.schedule_type,
        "cfg_scale": p.cfg_scale, "width": p.width, "height": p.height, "model": p.model,
        "model_hash": p.model_hash, "denoising_strength": p.denoising_strength,
        "variation_seed": p.variation_seed, "variation_strength": p.variation_strength,
        "loras": p.lora_hashes.iter().map(|(n, h)| serde_json::json!({"name": n, "hash": h}))
            .collect::<Vec<_>>(),
        "infotext": p.to_infotext(),
    })
}

fn show(image: &image::RgbImage, protocol: ProtocolType) {
    let config = terminal::viuer_config(protocol, 40);
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
