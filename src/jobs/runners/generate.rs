//! `generate`: Stable Diffusion from a prompt file (`NAME.prompt` or `NAME.txt`) into
//! `NAME.png`, with A1111's `parameters` chunk. The file holds a plain prompt, or a whole A1111
//! infotext (prompt, `Negative prompt: …`, `Steps: …, Sampler: …, Seed: …, Size: …`), whose
//! parameters then override `[diffusion]` in config.toml.
use crate::config::DiffusionConfig;
use crate::engine::diffusion::inputs;
use crate::engine::diffusion::pipeline::{self, Progress};
use crate::engine::diffusion::prompt::PromptFile;
use crate::engine::diffusion::request::{self, FromInfotext, Resolved, SdRequest};
use crate::engine::runtime::DeviceThread;
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
}

impl Runner for GenerateRunner {
    // No preload: a profile or `--model` may name another model than `[diffusion] model`;
    // each job loads (and keeps warm) its own, and a missing one fails the job with its name.

    fn run(&self, job: &Job, ctx: &RunContext) -> Result<Vec<PathBuf>, RunError> {
        // Bounded and checked (size, prompt length, infotext numbers); a whole infotext sets
        // the generation, anything else is a plain prompt.
        let file = PromptFile::read(&job.input).map_err(|e| RunError::Permanent(e.to_string()))?;
        let from = file.params.map(|params| FromInfotext {
            params,
            origin: job.input.clone(),
        });
        let req = SdRequest {
            model: job.options.model.clone(),
            prompt: from.is_none().then_some(file.prompt),
            from,
            ..SdRequest::default()
        };
        let Resolved {
            spec,
            request,
            described,
            ..
        } = request::resolve(&req, &self.config, &self.models_dir)
            .map_err(|e| RunError::Permanent(e.to_string()))?;
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
            .map_err(|e| match e {
                _ if ctx.cancel.is_cancelled() => RunError::Cancelled,
                e => RunError::from(e),
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
