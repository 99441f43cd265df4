//! The diffusion loop: txt2img, img2img, inpainting, ControlNet and SDXL, following diffusers'
//! pipelines step for step (and their random draws in order, so a locked seed reproduces them).
use super::lora::{self, FusedLoras, LoraPatch};
use super::model::{ControlNet, ModelError, SdModel};
use super::prompt;
use super::scheduler::{self, SchedulerConfig, SchedulerKind};
use super::seed::{Noise, Variation};
use super::{preview, vae_tiling};
use crate::engine::runtime::{DeviceThread, ModelJobError};
use crate::engine::store::InstalledModel;
use crate::engine::CancelToken;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

/// A prompt without its `<lora:name:weight>` tags, and the tags.
pub fn split_loras(text: &str) -> (String, Vec<(String, f64)>) {
    let parsed = prompt::extract_loras(text);
    (parsed.text, parsed.loras)
}
use tch::{Device, Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("scheduler: {0}")]
    Scheduler(String),
    #[error("{0}")]
    Invalid(String),
    #[error("LoRA: {0}")]
    Lora(String),
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Torch(#[from] tch::TchError),
}

/// An image for img2img/inpainting: `[1, 3, H, W]` in [0, 1] on the CPU, already at the
/// requested size.
pub struct InitImage {
    pub pixels: Tensor,
    pub strength: f64,
    /// `[1, 1, H, W]` in [0, 1]; white (≥ 0.5) is repainted.
    pub mask: Option<Tensor>,
}

pub struct ControlInput {
    /// `[1, 3, H, W]` in [0, 1] on the CPU, at the requested size.
    pub image: Tensor,
    pub scale: f64,
    pub guidance_start: f64,
    pub guidance_end: f64,
}

pub struct Request {
    pub prompt: String,
    pub negative: String,
    pub steps: usize,
    pub guidance: f64,
    pub scheduler: SchedulerKind,
    pub width: i64,
    pub height: i64,
    pub batch: usize,
    pub seed: u64,
    pub variation: Option<(u64, f64)>,
    pub init: Option<InitImage>,
    pub control: Option<ControlInput>,
    /// LoRA files and weights: `--lora` plus the prompt's `<lora:…>` tags, resolved to files.
    pub loras: Vec<(PathBuf, f64)>,
    pub vae_tiling: bool,
    /// Send a preview every N steps (0: never).
    pub preview_every: usize,
}

pub enum Progress {
    Step { step: usize, total: usize },
    Preview { step: usize, image: image::RgbImage },
    Decoding,
}

/// What one generation produced.
pub struct Generation {
    pub images: Vec<image::RgbImage>,
    /// The final latents `[B, 4, h, w]` (float32, CPU), before VAE scaling.
    pub latents: Tensor,
    /// The decoded pixels `[B, 3, H, W]` in [-1, 1] (float32, CPU).
    pub pixels: Tensor,
    pub seeds: Vec<u64>,
    /// Peak memory: device memory in use on CUDA (sampled), peak RSS on the CPU.
    pub peak_memory: Option<u64>,
    pub steps_run: usize,
    /// Seconds spent in the denoising loop.
    pub denoise_seconds: f64,
    pub model_hash: String,
}

/// Text conditioning for the UNet: `[2B or B, S, D]`, plus SDXL's pooled embeddings and time ids.
struct Conditioning {
    hidden: Tensor,
    pooled: Option<Tensor>,
    time_ids: Option<Tensor>,
}

fn call_err(e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Scheduler(e.to_string())
}

/// Encodes one prompt with every text encoder: `(hidden [1, 77·chunks, D], pooled [1, P])`.
fn encode_text(
    model: &mut SdModel,
    text: &str,
    chunks_min: usize,
) -> Result<(Tensor, Tensor), PipelineError> {
    let device = model.device;
    let mut hiddens = Vec::new();
    let mut pooled = None;
    for encoder in model.encoders.iter_mut() {
        let mut encoded = prompt::chunk(&encoder.tokenizer, text, encoder.pad_token);
        if encoded.ids.len() < chunks_min {
            let empty = prompt::chunk(&encoder.tokenizer, "", encoder.pad_token);
            while encoded.ids.len() < chunks_min {
                encoded.ids.push(empty.ids[0]);
                encoded.weights.push(empty.weights[0]);
            }
        }
        let mut parts = Vec::new();
        for (i, (ids, weights)) in encoded.ids.iter().zip(&encoded.weights).enumerate() {
            let ids = Tensor::from_slice(ids).view([1, 77]).to_device(device);
            let out = encoder.stage.call_tuple("forward", &[ids])?;
            let (Some(hidden), Some(pool)) = (out.first(), out.get(1)) else {
                return Err(PipelineError::Invalid(format!(
                    "{}: expected (hidden, pooled), got {} outputs",
                    encoder.stage.role,
                    out.len()
                )));
            };
            let mut hidden = hidden.to_kind(Kind::Float);
            if weights.iter().any(|&w| w != 1.0) {
                // A1111: scale each token's embedding, then restore the chunk's original mean.
                let w = Tensor::from_slice(weights)
                    .view([1, 77, 1])
                    .to_device(device);
                let original_mean = hidden.mean(Kind::Float);
                hidden = &hidden * w;
                let new_mean = hidden.mean(Kind::Float);
                hidden *= original_mean / new_mean;
            }
            if i == 0 {
                pooled = Some(pool.to_kind(Kind::Float));
            }
            parts.push(hidden);
        }
        if model.offload {
            encoder.stage.leave();
        }
        hiddens.push(Tensor::cat(&parts, 1));
    }
    // SDXL: the two encoders' hidden states side by side; pooled from the last encoder
    // (diffusers overwrites it encoder by encoder), first chunk (as A1111).
    let pooled =
        pooled.ok_or_else(|| PipelineError::Invalid("the model has no text encoder".into()))?;
    Ok((Tensor::cat(&hiddens, 2), pooled))
}

fn token_chunks(model: &SdModel, text: &str) -> usize {
    model
        .encoders
        .iter()
        .map(|e| prompt::chunk(&e.tokenizer, text, e.pad_token).ids.len())
        .max()
        .unwrap_or(1)
}

fn conditioning(
    model: &mut SdModel,
    req: &Request,
    cfg: bool,
) -> Result<Conditioning, PipelineError> {
    let positive = prompt::extract_loras(&req.prompt).text;
    let negative = prompt::extract_loras(&req.negative).text;
    let positive_chunks = token_chunks(model, &positive);
    prompt::check_chunks("prompt", positive_chunks)
        .map_err(|e| PipelineError::Invalid(e.to_string()))?;
    let negative_chunks = if cfg {
        token_chunks(model, &negative)
    } else {
        1
    };
    prompt::check_chunks("negative prompt", negative_chunks)
        .map_err(|e| PipelineError::Invalid(e.to_string()))?;
    let chunks = positive_chunks.max(negative_chunks);
    let (pos_hidden, pos_pooled) = encode_text(model, &positive, chunks)?;
    let batch = req.batch as i64;
    let xl = model.variant.is_xl();
    let (hidden, pooled) = if cfg {
        let (neg_hidden, neg_pooled) =
            if xl && negative.trim().is_empty() && model.config.force_zeros_for_empty_prompt {
                (pos_hidden.zeros_like(), pos_pooled.zeros_like())
            } else {
                encode_text(model, &negative, chunks)?
            };
        (
            Tensor::cat(
                &[
                    neg_hidden.repeat([batch, 1, 1]),
                    pos_hidden.repeat([batch, 1, 1]),
                ],
                0,
            ),
            Tensor::cat(
                &[neg_pooled.repeat([batch, 1]), pos_pooled.repeat([batch, 1])],
                0,
            ),
        )
    } else {
        (
            pos_hidden.repeat([batch, 1, 1]),
            pos_pooled.repeat([batch, 1]),
        )
    };
    let kind = model.config.kind;
    if !xl {
        return Ok(Conditioning {
            hidden: hidden.to_kind(kind),
            pooled: None,
            time_ids: None,
        });
    }
    // add_time_ids: original size, crop top-left (0, 0), target size.
    let (h, w) = (req.height as f32, req.width as f32);
    let rows = hidden.size()[0];
    let time_ids = Tensor::from_slice(&[h, w, 0.0, 0.0, h, w])
        .view([1, 6])
        .repeat([rows, 1])
        .to_device(model.device);
    Ok(Conditioning {
        hidden: hidden.to_kind(kind),
        pooled: Some(pooled.to_kind(kind)),
        time_ids: Some(time_ids.to_kind(kind)),
    })
}

/// diffusers' `get_timesteps`: the index of the first timestep run for a given strength.
pub fn start_index(steps: usize, strength: f64, order: usize) -> usize {
    let init = ((steps as f64 * strength).floor() as usize).min(steps);
    (steps - init) * order
}

/// VAE posterior sample `mean + std·noise` of an image in [-1, 1], scaled, one noise draw per
/// batch item.
fn encode_image(
    model: &mut SdModel,
    image: &Tensor,
    noise: &mut Noise,
    batch: i64,
) -> Result<Tensor, PipelineError> {
    let device = model.device;
    let kind = model.config.vae_kind;
    let scaling = model.config.scaling_factor;
    let offload = model.offload;
    let encoder = model.vae_encoder.as_mut().ok_or_else(|| {
        PipelineError::Invalid(
            "this model has no vae_encoder: img2img and inpainting need one (re-import it)".into(),
        )
    })?;
    let image = image.to_device(device).to_kind(kind);
    let out = encoder.call_tuple("forward", &[image])?;
    if offload {
        encoder.leave();
    }
    let (Some(mean), Some(std)) = (out.first(), out.get(1)) else {
        return Err(PipelineError::Invalid(
            "vae_encoder: expected (mean, std)".into(),
        ));
    };
    let mean = mean.to_kind(Kind::Float);
    let std = std.to_kind(Kind::Float);
    let per_item: Vec<i64> = mean.size()[1..].to_vec();
    let eps = noise.draw(&per_item).to_device(device);
    let mean = mean.repeat([batch, 1, 1, 1]);
    let std = std.repeat([batch, 1, 1, 1]);
    Ok((mean + std * eps) * scaling)
}

fn cuda_in_use(device: Device) -> Option<u64> {
    let Device::Cuda(index) = device else {
        return None;
    };
    crate::engine::runtime::gpu_memory_in_use(index)
}

/// The CPU process's peak resident set (VmHWM), in bytes.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

struct PeakMemory {
    device: Device,
    peak: Option<u64>,
}

impl PeakMemory {
    fn sample(&mut self) {
        if let Some(used) = cuda_in_use(self.device) {
            self.peak = Some(self.peak.map_or(used, |p| p.max(used)));
        }
    }
    fn finish(mut self) -> Option<u64> {
        if self.device.is_cuda() {
            self.sample();
            self.peak
        } else {
            peak_rss()
        }
    }
}

/// Runs one generation. `control` must be given when `req.control` is.
pub fn generate(
    model: &mut SdModel,
    mut control: Option<&mut ControlNet>,
    req: &Request,
    cancel: &CancelToken,
    progress: &mut dyn FnMut(Progress),
) -> Result<Generation, PipelineError> {
    if req.width % 8 != 0 || req.height % 8 != 0 || req.width <= 0 || req.height <= 0 {
        return Err(PipelineError::Invalid(format!(
            "size {}x{} is not a positive multiple of 8",
            req.width, req.height
        )));
    }
    if req.steps == 0 || req.batch == 0 {
        return Err(PipelineError::Invalid(
            "steps and batch must be at least 1".into(),
        ));
    }
    if req.control.is_some() && control.is_none() {
        return Err(PipelineError::Invalid(
            "a control image needs a ControlNet".into(),
        ));
    }
    let inpaint_unet = model.is_inpaint();
    if inpaint_unet && req.init.as_ref().and_then(|i| i.mask.as_ref()).is_none() {
        return Err(PipelineError::Invalid(format!(
            "model '{}' is an inpainting model (9-channel UNet): give --init-image and --mask",
            model.name
        )));
    }
    let device = model.device;
    let kind = model.config.kind;
    let mut memory = PeakMemory { device, peak: None };
    let batch = req.batch as i64;
    let cfg = req.guidance > 1.0;
    let cond = conditioning(model, req, cfg)?;
    memory.sample();

    let sched_config: SchedulerConfig = toml::Value::Table(model.config.scheduler.clone())
        .try_into()
        .map_err(call_err)?;
    let mut sched = scheduler::build(req.scheduler, &sched_config, req.steps).map_err(call_err)?;
    let order = sched.order().max(1);
    let timesteps: Vec<f64> = sched.timesteps().to_vec();

    let seeds: Vec<u64> = (0..batch as u64)
        .map(|i| req.seed.wrapping_add(i))
        .collect();
    let variation = req.variation.map(|(seed, strength)| Variation {
        seeds: (0..batch as u64).map(|i| seed.wrapping_add(i)).collect(),
        strength,
    });
    let mut noise = Noise::new(seeds.clone(), variation);
    let scale = model.config.vae_scale;
    let (lh, lw) = (req.height / scale, req.width / scale);
    let latent_shape = [model.config.latent_channels, lh, lw];

    // Latents and (inpainting) the mask inputs, drawing noise in diffusers' order.
    let mut begin = 0usize;
    let mut inpaint: Option<(Tensor, Tensor)> = None; // (mask [B,1,h,w], masked image latents)
    let mut blend: Option<(Tensor, Tensor)> = None; // (image latents, noise) for 4-channel inpainting
    let mut latents = match &req.init {
        None => noise.initial(&latent_shape).to_device(device) * sched.init_noise_sigma(),
        Some(init) => {
            let strength = init.strength.clamp(0.0, 1.0);
            begin = start_index(req.steps, strength, order);
            if begin >= timesteps.len() {
                return Err(PipelineError::Invalid(format!(
                    "strength {strength} leaves no step to run with {} steps",
                    req.steps
                )));
            }
            sched.set_begin_index(begin);
            match &init.mask {
                None => {
                    let image_latents =
                        encode_image(model, &(&init.pixels * 2.0 - 1.0), &mut noise, batch)?;
                    let eps = noise.initial(&latent_shape).to_device(device);
                    sched.add_noise(&image_latents, &eps, begin)
                }
                Some(mask) => {
                    let strength_max = strength >= 1.0;
                    let image_latents = if !inpaint_unet || !strength_max {
                        Some(encode_image(
                            model,
                            &(&init.pixels * 2.0 - 1.0),
                            &mut noise,
                            batch,
                        )?)
                    } else {
                        None
                    };
                    let eps = noise.initial(&latent_shape).to_device(device);
                    let latents = match (&image_latents, strength_max) {
                        (Some(il), false) => sched.add_noise(il, &eps, begin),
                        _ => &eps * sched.init_noise_sigma(),
                    };
                    let binary = mask.ge(0.5).to_kind(Kind::Float);
                    let keep = mask.lt(0.5).to_kind(Kind::Float);
                    let masked = (&init.pixels * 2.0 - 1.0) * keep;
                    // The masked image is encoded (and draws) whether or not the UNet uses it.
                    let masked_latents = encode_image(model, &masked, &mut noise, 1)?
                        .narrow(0, 0, 1)
                        .repeat([batch, 1, 1, 1]);
                    let small = binary
                        .upsample_nearest2d([lh, lw], None, None)
                        .to_device(device)
                        .repeat([batch, 1, 1, 1]);
                    if inpaint_unet {
                        inpaint = Some((small, masked_latents));
                    } else if let Some(il) = image_latents {
                        blend = Some((il, eps.shallow_clone()));
                        inpaint = Some((small, masked_latents));
                    }
                    latents
                }
            }
        }
    };
    memory.sample();

    let control_image = match (&req.control, control.as_deref()) {
        (Some(c), Some(_)) => {
            let img = c.image.repeat([batch, 1, 1, 1]);
            let img = if cfg {
                Tensor::cat(&[&img, &img], 0)
            } else {
                img
            };
            Some(img.to_device(device).to_kind(kind))
        }
        _ => None,
    };

    let run = &timesteps[begin..];
    let total = run.len();
    let loop_started = Instant::now();
    let per_item: Vec<i64> = latent_shape.to_vec();
    for (i, &t) in run.iter().enumerate() {
        if cancel.is_cancelled() {
            return Err(PipelineError::Cancelled);
        }
        let index = begin + i;
        let doubled = if cfg {
            Tensor::cat(&[&latents, &latents], 0)
        } else {
            latents.shallow_clone()
        };
        let mut input = sched.scale_model_input(&doubled, index);
        let rows = input.size()[0];
        if let (true, Some((mask, masked))) = (inpaint_unet, &inpaint) {
            let (m, mi) = if cfg {
                (
                    Tensor::cat(&[mask, mask], 0),
                    Tensor::cat(&[masked, masked], 0),
                )
            } else {
                (mask.shallow_clone(), masked.shallow_clone())
            };
            input = Tensor::cat(&[input, m, mi], 1);
        }
        let input = input.to_kind(kind);
        let tt = Tensor::full([rows], t, (Kind::Float, device));
        let mut args = vec![
            input.shallow_clone(),
            tt.shallow_clone(),
            cond.hidden.shallow_clone(),
        ];
        if let (Some(p), Some(ids)) = (&cond.pooled, &cond.time_ids) {
            args.push(p.shallow_clone());
            args.push(ids.shallow_clone());
        }
        let keep = |c: &ControlInput| {
            let n = total as f64;
            let off = (i as f64) / n < c.guidance_start || ((i + 1) as f64) / n > c.guidance_end;
            if off {
                0.0
            } else {
                c.scale
            }
        };
        let control_scale = req.control.as_ref().map(keep).unwrap_or(0.0);
        let noise_pred = match (control.as_deref_mut(), &control_image) {
            (Some(net), Some(cimg)) if control_scale != 0.0 => {
                let mut cargs = vec![
                    input.shallow_clone(),
                    tt.shallow_clone(),
                    cond.hidden.shallow_clone(),
                    cimg.shallow_clone(),
                ];
                cargs.extend(args[3..].iter().map(|t| t.shallow_clone()));
                let residuals = net.stage.call_tuple("forward", &cargs)?;
                let mut uargs = args;
                uargs.extend(residuals.into_iter().map(|r| r * control_scale));
                model.unet.method("forward_control", &uargs)?
            }
            _ => model.unet.forward(&args)?,
        };
        let noise_pred = noise_pred.to_kind(Kind::Float);
        let noise_pred = if cfg {
            let parts = noise_pred.chunk(2, 0);
            &parts[0] + (&parts[1] - &parts[0]) * req.guidance
        } else {
            noise_pred
        };
        let mut draw = || noise.draw(&per_item).to_device(device);
        latents = sched.step(&noise_pred, index, &latents, &mut draw);
        if let (Some((mask, _)), Some((image_latents, eps))) = (&inpaint, &blend) {
            let proper = if i + 1 < total {
                sched.add_noise(image_latents, eps, index + 1)
            } else {
                image_latents.shallow_clone()
            };
            latents = (1.0 - mask) * proper + mask * &latents;
        }
        memory.sample();
        progress(Progress::Step { step: i + 1, total });
        if req.preview_every > 0 && (i + 1) % req.preview_every == 0 && i + 1 < total {
            if let Some(image) = preview::latents_to_rgb(&latents, model.variant.is_xl())
                .into_iter()
                .next()
            {
                progress(Progress::Preview { step: i + 1, image });
            }
        }
    }
    if model.offload {
        model.unet.leave();
        if let Some(net) = control {
            net.stage.leave();
        }
    }
    let denoise_seconds = loop_started.elapsed().as_secs_f64();
    progress(Progress::Decoding);
    let pixels = decode(model, &latents, req.vae_tiling)?;
    memory.sample();
    let images = to_images(&pixels)?;
    Ok(Generation {
        images,
        latents: latents.to_kind(Kind::Float).to_device(Device::Cpu),
        pixels,
        seeds,
        peak_memory: memory.finish(),
        steps_run: total,
        denoise_seconds,
        model_hash: model.hash.clone(),
    })
}

fn is_oom(e: &PipelineError) -> bool {
    e.to_string().to_lowercase().contains("out of memory")
}

/// VAE decode to `[B, 3, H, W]` in [-1, 1] on the CPU; tiled when asked, or when the whole
/// decode runs out of device memory.
pub fn decode(
    model: &mut SdModel,
    latents: &Tensor,
    tiling: bool,
) -> Result<Tensor, PipelineError> {
    let kind = model.config.vae_kind;
    let z = (latents / model.config.scaling_factor).to_kind(kind);
    let offload = model.offload;
    let stage = &mut model.vae_decoder;
    let mut run = |z: &Tensor| -> Result<Tensor, PipelineError> {
        Ok(stage.forward(&[z.to_kind(kind)])?.to_kind(Kind::Float))
    };
    let out = if tiling {
        vae_tiling::decode_tiled(
            z.shallow_clone(),
            &mut run,
            vae_tiling::TileConfig::default(),
        )
    } else {
        match run(&z) {
            Err(e) if is_oom(&e) => {
                tracing::warn!("VAE decode ran out of device memory; retrying tiled");
                vae_tiling::decode_tiled(
                    z.shallow_clone(),
                    &mut run,
                    vae_tiling::TileConfig::default(),
                )
            }
            other => other,
        }
    }?;
    if offload {
        model.vae_decoder.leave();
    }
    Ok(out.to_device(Device::Cpu))
}

/// `[B, 3, H, W]` in [-1, 1] to 8-bit images as diffusers' `numpy_to_pil` rounds them.
pub fn to_images(pixels: &Tensor) -> Result<Vec<image::RgbImage>, PipelineError> {
    let (b, _, h, w) = pixels.size4()?;
    let bytes = ((pixels / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0)
        .round()
        .to_kind(Kind::Uint8)
        .permute([0, 2, 3, 1])
        .contiguous();
    let flat = Vec::<u8>::try_from(&bytes.view([-1]))?;
    let per = (h * w * 3) as usize;
    (0..b as usize)
        .map(|i| {
            image::RgbImage::from_raw(w as u32, h as u32, flat[i * per..(i + 1) * per].to_vec())
                .ok_or_else(|| PipelineError::Invalid("decoded image has the wrong size".into()))
        })
        .collect()
}

/// An 8-bit RGB image as `[1, 3, H, W]` float in [0, 1] on the CPU.
pub fn image_to_tensor(image: &image::RgbImage) -> Tensor {
    let (w, h) = image.dimensions();
    Tensor::from_slice(image.as_raw())
        .view([1, h as i64, w as i64, 3])
        .permute([0, 3, 1, 2])
        .to_kind(Kind::Float)
        / 255.0
}

/// A grayscale mask as `[1, 1, H, W]` float in [0, 1] on the CPU.
pub fn mask_to_tensor(mask: &image::GrayImage) -> Tensor {
    let (w, h) = mask.dimensions();
    Tensor::from_slice(mask.as_raw())
        .view([1, 1, h as i64, w as i64])
        .to_kind(Kind::Float)
        / 255.0
}

/// What the model thread keeps warm for one SD model: the model, its last ControlNet and the
/// LoRAs fused into it.
struct Session {
    model: SdModel,
    controlnet: Option<(PathBuf, ControlNet)>,
    loras: LoraState,
}

/// Which model (and ControlNet) a job runs on.
pub struct SessionSpec {
    pub model: InstalledModel,
    pub controlnet: Option<InstalledModel>,
    pub offload: bool,
}

/// The model cache's key for an SD model loaded by [`run_job`].
fn session_key(dir: &std::path::Path, offload: bool) -> String {
    format!("sd:{}:offload={offload}", dir.display())
}

/// Whether [`run_job`] has `model` loaded on this model thread (either offload setting).
pub fn is_loaded(cache: &crate::engine::runtime::ModelCache, model: &InstalledModel) -> bool {
    let loaded = cache.loaded();
    [false, true]
        .iter()
        .any(|&offload| loaded.contains(&session_key(&model.dir, offload)))
}

/// Runs a generation on the model thread, keeping the model loaded for the next one.
/// Progress goes to `progress`; the channel closes when the job ends.
pub fn run_job(
    thread: &DeviceThread,
    spec: SessionSpec,
    req: Request,
    cancel: CancelToken,
    progress: mpsc::Sender<Progress>,
) -> Result<Generation, ModelJobError> {
    let permanent = |e: PipelineError| ModelJobError::Permanent(e.to_string());
    thread
        .run(move |cache| -> Result<Generation, ModelJobError> {
            let device = cache.device;
            let key = session_key(&spec.model.dir, spec.offload);
            let session = cache
                .get_or_try_insert(&key, |device| {
                    SdModel::load(&spec.model, device, spec.offload).map(|model| Session {
                        model,
                        controlnet: None,
                        loras: Default::default(),
                    })
                })
                .map_err(|e| ModelJobError::Permanent(e.to_string()))?;
            if let Some(cn) = &spec.controlnet {
                if session.controlnet.as_ref().map(|(d, _)| d) != Some(&cn.dir) {
                    session.controlnet = None;
                    let net = ControlNet::load(cn, device, spec.offload)
                        .map_err(|e| ModelJobError::Permanent(e.to_string()))?;
                    if net.variant.is_xl() != session.model.variant.is_xl() {
                        return Err(ModelJobError::Permanent(format!(
                            "ControlNet '{}' is for {:?} models, '{}' is {:?}",
                            net.name, net.variant, session.model.name, session.model.variant
                        )));
                    }
                    session.controlnet = Some((cn.dir.clone(), net));
                }
            }
            // A LoRA fuse changes the weights in place: if it fails (or panics) half-way,
            // the model thread evicts the model rather than keep half-patched weights.
            let gone = || ModelJobError::Transient("the model was evicted".to_string());
            cache.begin_patch(&key);
            let session = cache.get_mut::<Session>(&key).ok_or_else(gone)?;
            session
                .loras
                .apply(&mut session.model, &req.loras)
                .map_err(permanent)?;
            cache.end_patch(&key);
            let session = cache.get_mut::<Session>(&key).ok_or_else(gone)?;
            let control = match spec.controlnet {
                Some(_) => session.controlnet.as_mut().map(|(_, c)| c),
                None => None,
            };
            let mut send = |p: Progress| {
                let _ = progress.send(p);
            };
            generate(&mut session.model, control, &req, &cancel, &mut send).map_err(|e| match e {
                PipelineError::Cancelled => ModelJobError::Cancelled,
                e => ModelJobError::Permanent(e.to_string()),
            })
        })
        .and_then(|r| r)
}

/// The LoRAs fused into a loaded model; another set unfuses the old one first (no reload).
#[derive(Default)]
struct LoraState {
    applied: Vec<(PathBuf, f64)>,
    fused: Option<FusedLoras>,
}

impl LoraState {
    fn apply(
        &mut self,
        model: &mut SdModel,
        wanted: &[(PathBuf, f64)],
    ) -> Result<(), PipelineError> {
        if wanted == self.applied.as_slice() {
            return Ok(());
        }
        let lora_err = |e: lora::LoraError| PipelineError::Lora(e.to_string());
        // Fetched afresh: an offloaded module's parameters are new tensors after each move.
        let mut params: Vec<(String, Tensor)> = Vec::new();
        for stage in model.stages_mut() {
            params.extend(stage.named_parameters()?);
        }
        if let Some(fused) = self.fused.take() {
            fused.unfuse(&params).map_err(lora_err)?;
        }
        self.applied.clear();
        if wanted.is_empty() {
            return Ok(());
        }
        let names: HashSet<String> = params.iter().map(|(n, _)| n.clone()).collect();
        let loaded: Vec<Vec<LoraPatch>> = wanted
            .iter()
            .map(|(path, _)| lora::load_lora(path, &names))
            .collect::<Result<_, _>>()
            .map_err(lora_err)?;
        let list: Vec<(&[LoraPatch], f64)> = loaded
            .iter()
            .zip(wanted)
            .map(|(patches, (_, w))| (patches.as_slice(), *w))
            .collect();
        self.fused = Some(lora::fuse_many(&params, &list).map_err(lora_err)?);
        self.applied = wanted.to_vec();
        Ok(())
    }
}

/// Fuses `loras` into a loaded model (unfusing what was fused before), for callers that drive
/// `generate` themselves (tests, benchmarks).
pub struct Loras(LoraState);

impl Loras {
    pub fn new() -> Self {
        Loras(LoraState::default())
    }
    pub fn apply(
        &mut self,
        model: &mut SdModel,
        loras: &[(PathBuf, f64)],
    ) -> Result<(), PipelineError> {
        self.0.apply(model, loras)
    }
}

impl Default for Loras {
    fn default() -> Self {
        Self::new()
    }
}
