//! `generate`: Stable Diffusion from a prompt file (`NAME.prompt` or `NAME.txt`) into
//! `NAME.png`, with A1111's `parameters` chunk. The file holds a plain prompt, or a whole A1111
//! infotext (prompt, `Negative prompt: …`, `Steps: …, Sampler: …, Seed: …, Size: …`), whose
//! parameters then override `[diffusion]` in config.toml.
use crate::config::DiffusionConfig;
use crate::engine::diffusion::infotext::GenerationParams;
use crate::engine::diffusion::inputs;
use crate::engine::diffusion::pipeline::{self, Progress, Request, SessionSpec};
use crate::engine::diffusion::scheduler::SchedulerKind;
use crate::engine::diffusion::seed::resolve_seed;
use crate::engine::runtime::DeviceThread;
use crate::engine::store::{self, InstalledModel};
use crate::jobs::{Job, RunContext, RunError, Runner};
use crate::output::atomic::output_path;
use crate::output::png_meta::encode_png_with_parameters;
use std::path::PathBuf;
use std::sync::mpsc;

pub struct GenerateRunner {
    thread: DeviceThread,
    models_dir: PathBuf,
    config: DiffusionConfig,
}

impl GenerateRunner {
    pub fn new(thread: DeviceThread, models_dir: PathBuf, config: DiffusionConfig) -> Self {
        GenerateRunner {
            thread,
            models_dir,
            config,
        }
    }

    fn model(&self, job: &Job) -> Result<InstalledModel, String> {
        let name = job
            .options
            .model
            .clone()
            .unwrap_or_else(|| self.config.model.clone());
        store::find(&self.models_dir, &name, "sd").map_err(|e| e.to_string())
    }
}

impl Runner for GenerateRunner {
    // No preload: a profile or `--model` may name another model than `[diffusion] model`;
    // each job loads (and keeps warm) its own, and a missing one fails the job with its name.

    fn run(&self, job: &Job, ctx: &RunContext) -> Result<Vec<PathBuf>, RunError> {
        let text = std::fs::read_to_string(&job.input)
            .map_err(|e| RunError::Permanent(format!("cannot read the prompt file: {e}")))?;
        let text = text.trim();
        if text.is_empty() {
            return Err(RunError::Permanent("the prompt file is empty".into()));
        }
        let model = self.model(job).map_err(RunError::Permanent)?;
        let cfg = &self.config;
        let params = GenerationParams::parse(text).ok();
        let native = inputs::native_size(&model);
        let size = |p: Option<u32>, c: u32| i64::from(p.unwrap_or(c)).max(0);
        let (mut width, mut height) = (
            size(params.as_ref().map(|p| p.width), cfg.width),
            size(params.as_ref().map(|p| p.height), cfg.height),
        );
        if width == 0 {
            width = native;
        }
        if height == 0 {
            height = native;
        }
        if width % 8 != 0 || height % 8 != 0 {
            return Err(RunError::Permanent(format!(
                "size {width}x{height}: width and height must be multiples of 8"
            )));
        }
        let scheduler = match &params {
            Some(p) => SchedulerKind::from_a1111(&p.sampler, p.schedule_type.as_deref())
                .or_else(|| SchedulerKind::from_name(&p.sampler)),
            None => SchedulerKind::from_name(&cfg.scheduler),
        }
        .ok_or_else(|| {
            RunError::Permanent(
                "unknown scheduler (sampler) in the prompt file or [diffusion] scheduler".into(),
            )
        })?;
        let prompt = params
            .as_ref()
            .map_or_else(|| text.to_string(), |p| p.prompt.clone());
        let negative = params
            .as_ref()
            .map(|p| p.negative_prompt.clone())
            .unwrap_or_default();
        let steps = params.as_ref().map_or(cfg.steps, |p| p.steps).max(1) as usize;
        let guidance = params.as_ref().map_or(cfg.guidance, |p| p.cfg_scale);
        let seed = params.as_ref().map_or_else(|| resolve_seed(-1), |p| p.seed);
        let lora_dir = inputs::lora_dir(&cfg.lora_dir, &self.models_dir);
        let (_, prompt_loras) = pipeline::split_loras(&prompt);
        let loras = inputs::resolve_loras(&prompt_loras, &lora_dir).map_err(RunError::Permanent)?;
        let request = Request {
            prompt: prompt.clone(),
            negative: negative.clone(),
            steps,
            guidance,
            scheduler,
            width,
            height,
            batch: 1,
            seed,
            variation: None,
            init: None,
            control: None,
            loras,
            vae_tiling: false,
            preview_every: 0,
        };
        let described = inputs::describe(&request, model.name());
        let spec = SessionSpec {
            model: model.clone(),
            controlnet: None,
            offload: false,
        };
        let (tx, rx) = mpsc::channel();
        let worker = {
            let thread = self.thread.clone();
            let cancel = ctx.cancel.clone();
            std::thread::spawn(move || pipeline::run_job(&thread, spec, request, cancel, tx))
        };
        for p in rx {
            if let Progress::Step { step, total } = p {
                ctx.progress(
                    Some(step as f32 / total.max(1) as f32),
                    format!("step {step}/{total}"),
                );
            }
        }
        let generation = worker
            .join()
            .map_err(|_| RunError::Transient("the generation thread panicked".into()))?
            .map_err(|e| {
                if ctx.cancel.is_cancelled() {
                    RunError::Cancelled
                } else {
                    RunError::Permanent(e)
                }
            })?;
        let image = generation
            .images
            .first()
            .ok_or_else(|| RunError::Permanent("the model returned no image".into()))?;
        let info = inputs::for_image(&described, &generation, 0);
        let bytes = encode_png_with_parameters(image, &info.to_infotext())
            .map_err(|e| RunError::Permanent(format!("cannot encode the PNG: {e}")))?;
        let out = output_path(&job.output_dir(), &job.input, "png");
        Ok(vec![ctx.write(&out, &bytes)?])
    }
}
