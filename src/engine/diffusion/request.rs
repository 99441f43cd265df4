//! One Stable Diffusion request, as `atelier generate`, the queue's prompt files and the TUI's
//! generate pane fill it in, and the one function that resolves and validates it: defaults
//! (the request's values, then an infotext's, then `[diffusion]` in config.toml, then the
//! model's native size), scheduler names, size and range checks, LoRA files, init / mask /
//! control images and the infotext that will be written.
use super::infotext::GenerationParams;
use super::inputs;
use super::pipeline::{self, ControlInput, InitImage, Request, SessionSpec};
use super::seed::resolve_seed;
use crate::config::DiffusionConfig;
use crate::domain::SchedulerKind;
use crate::engine::store;
use std::path::{Path, PathBuf};

/// The seed a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedChoice {
    /// A random one (chosen when resolving, recorded in the infotext).
    Random,
    Fixed(u64),
}

/// Parameters read from an infotext (`--from-image`, a prompt file), and where they came from.
#[derive(Debug, Clone)]
pub struct FromInfotext {
    pub params: GenerationParams,
    /// The file they were read from, named in errors.
    pub origin: PathBuf,
}

/// What a ControlNet does to the generation (diffusers' defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ControlSettings {
    pub scale: f64,
    pub start: f64,
    pub end: f64,
}

impl Default for ControlSettings {
    fn default() -> Self {
        ControlSettings {
            scale: 1.0,
            start: 0.0,
            end: 1.0,
        }
    }
}

/// How errors name a request's values: `atelier generate`'s flags (`--init-image`), or plain
/// words for the generate pane and prompt files (`init image`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Names {
    Flags,
    #[default]
    Plain,
}

impl Names {
    /// `field` as this filler names it (`field` is the plain name).
    fn of(self, field: &'static str) -> String {
        match self {
            Names::Plain => field.to_string(),
            Names::Flags => format!("--{}", field.replace(' ', "-")),
        }
    }

    /// "X needs Y" for two values that go together.
    fn needs(
        self,
        (a, a_plain): (&'static str, &str),
        (b, b_plain): (&'static str, &str),
    ) -> String {
        match self {
            Names::Plain => format!("{a_plain} needs {b_plain}"),
            Names::Flags => format!("{} needs {}", self.of(a), self.of(b)),
        }
    }
}

/// One generation before defaults. `None`: the infotext's value, else the config's.
#[derive(Debug, Clone, Default)]
pub struct SdRequest {
    /// How errors name the values.
    pub names: Names,
    /// A model name in the store; none: `[diffusion] model`.
    pub model: Option<String>,
    pub prompt: Option<String>,
    pub negative: Option<String>,
    pub steps: Option<usize>,
    pub guidance: Option<f64>,
    pub seed: Option<SeedChoice>,
    /// A CLI name (`euler-a`) or an A1111 sampler name (`Euler a`).
    pub scheduler: Option<String>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    /// Images (0 counts as 1).
    pub batch: usize,
    /// img2img denoising strength; none: 0.75, or 1.0 with a mask.
    pub strength: Option<f64>,
    pub variation_seed: Option<u64>,
    pub variation_strength: Option<f64>,
    pub init_image: Option<PathBuf>,
    pub mask: Option<PathBuf>,
    /// A ControlNet model name and its conditioning image go together.
    pub controlnet: Option<String>,
    pub control_image: Option<PathBuf>,
    pub control: ControlSettings,
    /// (name or path, weight), before the prompt's `<lora:…>` tags.
    pub loras: Vec<(String, f64)>,
    pub vae_tiling: bool,
    pub offload: bool,
    /// A latent preview every N steps (0: none).
    pub preview_every: usize,
    pub from: Option<FromInfotext>,
}

/// Why a request cannot run: a usage error (a value or a combination that is wrong, exit 2
/// for the CLI) or a failure (a missing model, LoRA or unreadable image, exit 1).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failure(String),
}

/// A request ready for `pipeline::run_job`.
pub struct Resolved {
    pub spec: SessionSpec,
    pub request: Request,
    /// The infotext of the request (each image's adds its own seed: `inputs::for_image`).
    pub described: GenerationParams,
    /// Notes for the user (an image resized to the requested size).
    pub notes: Vec<String>,
}

/// Every scheduler's CLI name, from the scheduler table.
pub fn scheduler_names() -> String {
    SchedulerKind::all()
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The scheduler: the request's name, else the infotext's A1111 sampler and schedule type
/// (or a CLI name written there), else the config's. An unknown name is an error with the
/// list; an infotext schedule type that no scheduler here runs is not replaced by another.
fn scheduler(req: &SdRequest, config: &DiffusionConfig) -> Result<SchedulerKind, RequestError> {
    let usage = RequestError::Usage;
    if let Some(name) = &req.scheduler {
        let prefix = match req.names {
            Names::Flags => "--scheduler: ",
            Names::Plain => "",
        };
        return SchedulerKind::from_name(name).ok_or_else(|| {
            usage(format!(
                "{prefix}unknown scheduler '{name}' (valid: {})",
                scheduler_names()
            ))
        });
    }
    if let Some(from) = &req.from {
        let p = &from.params;
        // A CLI name written in the Sampler field, only without a schedule type (a schedule
        // type no scheduler here runs is not dropped).
        return SchedulerKind::from_a1111(&p.sampler, p.schedule_type.as_deref())
            .or_else(|| {
                p.schedule_type
                    .is_none()
                    .then(|| SchedulerKind::from_cli_name(&p.sampler))
                    .flatten()
            })
            .ok_or_else(|| {
                usage(format!(
                    "{}: sampler '{}'{} has no scheduler here (valid: {})",
                    from.origin.display(),
                    p.sampler,
                    p.schedule_type
                        .as_deref()
                        .map(|s| format!(" with schedule type '{s}'"))
                        .unwrap_or_default(),
                    scheduler_names()
                ))
            });
    }
    SchedulerKind::from_name(&config.scheduler).ok_or_else(|| {
        usage(format!(
            "diffusion.scheduler in config.toml: unknown scheduler '{}' (valid: {})",
            config.scheduler,
            scheduler_names()
        ))
    })
}

/// The values a generation runs with, checked.
struct Settings {
    prompt: String,
    negative: String,
    steps: usize,
    guidance: f64,
    seed: SeedChoice,
    scheduler: SchedulerKind,
    width: i64,
    height: i64,
    strength: f64,
    variation: Option<(u64, f64)>,
}

fn settings(
    req: &SdRequest,
    config: &DiffusionConfig,
    native: i64,
) -> Result<Settings, RequestError> {
    let usage = |m: String| Err(RequestError::Usage(m));
    let names = req.names;
    let from = req.from.as_ref().map(|f| &f.params);
    let dim = |asked: Option<i64>, infotext: Option<u32>, conf: u32| {
        asked
            .or(infotext.filter(|v| *v > 0).map(i64::from))
            .or((conf > 0).then_some(i64::from(conf)))
            .unwrap_or(native)
    };
    let variation = match (
        req.variation_seed.or(from.and_then(|p| p.variation_seed)),
        req.variation_strength
            .or(from.and_then(|p| p.variation_strength)),
    ) {
        (Some(seed), strength) => Some((seed, strength.unwrap_or(0.0))),
        (None, Some(s)) if s > 0.0 => {
            return usage(names.needs(
                ("variation strength", "a variation strength"),
                ("variation seed", "a variation seed"),
            ));
        }
        _ => None,
    };
    let s = Settings {
        prompt: req
            .prompt
            .clone()
            .or(from.map(|p| p.prompt.clone()))
            .unwrap_or_default(),
        negative: req
            .negative
            .clone()
            .or(from.map(|p| p.negative_prompt.clone()))
            .unwrap_or_default(),
        steps: req
            .steps
            .or(from.map(|p| p.steps as usize))
            .unwrap_or(config.steps.max(1) as usize),
        guidance: req
            .guidance
            .or(from.map(|p| p.cfg_scale))
            .unwrap_or(config.guidance),
        seed: req
            .seed
            .or(from.map(|p| SeedChoice::Fixed(p.seed)))
            .unwrap_or(SeedChoice::Random),
        scheduler: scheduler(req, config)?,
        width: dim(req.width, from.map(|p| p.width), config.width),
        height: dim(req.height, from.map(|p| p.height), config.height),
        strength: req
            .strength
            .or(from.and_then(|p| p.denoising_strength))
            .unwrap_or(if req.mask.is_some() { 1.0 } else { 0.75 }),
        variation,
    };
    for (what, v) in [("width", s.width), ("height", s.height)] {
        if v <= 0 || v % 8 != 0 || v > 8192 {
            return usage(format!(
                "{} {v}: the size must be a positive multiple of 8 up to 8192 (e.g. {})",
                names.of(what),
                ((v.clamp(8, 8192) + 4) / 8) * 8
            ));
        }
    }
    if s.steps == 0 || s.steps > 1000 {
        return usage(format!("{} {}: use 1 to 1000", names.of("steps"), s.steps));
    }
    if !(0.0..=1.0).contains(&s.strength) {
        return usage(format!(
            "{} {}: use a value in [0, 1]",
            names.of("strength"),
            s.strength
        ));
    }
    if let Some((_, v)) = s.variation {
        if !(0.0..=1.0).contains(&v) {
            return usage(format!(
                "{} {v}: use a value in [0, 1]",
                names.of("variation strength")
            ));
        }
    }
    if !s.guidance.is_finite() {
        return usage(format!(
            "{} {}: use a finite number",
            names.of("guidance"),
            s.guidance
        ));
    }
    if req.mask.is_some() && req.init_image.is_none() {
        return usage(names.needs(
            ("mask", "a mask"),
            ("init image", "an init image (the image to inpaint)"),
        ));
    }
    if req.controlnet.is_some() != req.control_image.is_some() {
        return usage(match names {
            Names::Flags => "--controlnet and --control-image go together".into(),
            Names::Plain => "a ControlNet and its control image go together".into(),
        });
    }
    Ok(s)
}

/// Resolves and validates `req` against the config and the model store.
pub fn resolve(
    req: &SdRequest,
    config: &DiffusionConfig,
    models_dir: &Path,
) -> Result<Resolved, RequestError> {
    let fail = RequestError::Failure;
    let name = req.model.clone().unwrap_or_else(|| config.model.clone());
    let model = store::find(models_dir, &name, "sd").map_err(|e| fail(e.to_string()))?;
    let s = settings(req, config, inputs::native_size(&model))?;
    let mut notes = Vec::new();

    let lora_dir = inputs::lora_dir(&config.lora_dir, models_dir);
    // The request's own LoRAs may be paths (`--lora ./x.safetensors`); the prompt's
    // `<lora:NAME:W>` tags are single names inside the LoRA folder.
    let mut loras = req
        .loras
        .iter()
        .map(|(name, w)| inputs::resolve_lora_arg(name, &lora_dir).map(|p| (p, *w)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(fail)?;
    loras.extend(
        inputs::resolve_loras(&pipeline::split_loras(&s.prompt).1, &lora_dir).map_err(fail)?,
    );

    let init = match &req.init_image {
        None => None,
        Some(path) => {
            let (img, note) =
                inputs::load_rgb_sized(path, "init image", s.width, s.height).map_err(fail)?;
            notes.extend(note);
            let mask = match &req.mask {
                None => None,
                Some(mp) => {
                    let (m, note) = inputs::load_mask_sized(mp, img.width(), img.height(), path)
                        .map_err(fail)?;
                    notes.extend(note);
                    Some(pipeline::mask_to_tensor(&m))
                }
            };
            Some(InitImage {
                pixels: pipeline::image_to_tensor(&img),
                strength: s.strength,
                mask,
            })
        }
    };
    let (controlnet, control) = match (&req.controlnet, &req.control_image) {
        (Some(name), Some(image)) => {
            let net =
                store::find(models_dir, name, "controlnet").map_err(|e| fail(e.to_string()))?;
            let (img, note) =
                inputs::load_rgb_sized(image, "control image", s.width, s.height).map_err(fail)?;
            notes.extend(note);
            let input = ControlInput {
                image: pipeline::image_to_tensor(&img),
                scale: req.control.scale,
                guidance_start: req.control.start,
                guidance_end: req.control.end,
            };
            (Some(net), Some(input))
        }
        _ => (None, None),
    };
    let seed = match s.seed {
        SeedChoice::Fixed(n) => n,
        SeedChoice::Random => resolve_seed(-1),
    };
    let request = Request {
        prompt: s.prompt,
        negative: s.negative,
        steps: s.steps,
        guidance: s.guidance,
        scheduler: s.scheduler,
        width: s.width,
        height: s.height,
        batch: req.batch.max(1),
        seed,
        variation: s.variation,
        init,
        control,
        loras,
        vae_tiling: req.vae_tiling,
        preview_every: req.preview_every,
    };
    let described = inputs::describe(&request, model.name());
    let spec = SessionSpec {
        model,
        controlnet,
        offload: req.offload,
    };
    Ok(Resolved {
        spec,
        request,
        described,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DiffusionConfig {
        DiffusionConfig {
            model: "sd".into(),
            steps: 25,
            guidance: 7.5,
            scheduler: "dpmpp-2m-karras".into(),
            ..Default::default()
        }
    }

    fn from(sampler: &str, schedule: Option<&str>) -> FromInfotext {
        FromInfotext {
            params: GenerationParams {
                prompt: "a cat".into(),
                steps: 12,
                sampler: sampler.into(),
                schedule_type: schedule.map(Into::into),
                cfg_scale: 5.0,
                seed: 7,
                width: 64,
                height: 128,
                variation_seed: Some(3),
                variation_strength: Some(0.25),
                ..Default::default()
            },
            origin: PathBuf::from("in.prompt"),
        }
    }

    #[test]
    fn the_request_wins_then_the_infotext_then_the_config() {
        let cfg = config();
        let s = settings(&SdRequest::default(), &cfg, 512).unwrap();
        assert_eq!((s.steps, s.width, s.height), (25, 512, 512));
        assert_eq!(s.scheduler, SchedulerKind::DpmPp2MKarras);
        assert_eq!(s.seed, SeedChoice::Random);

        let req = SdRequest {
            from: Some(from("Euler a", None)),
            ..Default::default()
        };
        let s = settings(&req, &cfg, 512).unwrap();
        assert_eq!((s.steps, s.width, s.height), (12, 64, 128));
        assert_eq!(s.prompt, "a cat");
        assert_eq!(s.scheduler, SchedulerKind::EulerAncestral);
        assert_eq!(s.seed, SeedChoice::Fixed(7));
        assert_eq!(
            s.variation,
            Some((3, 0.25)),
            "the infotext's variation is kept"
        );

        let req = SdRequest {
            steps: Some(3),
            width: Some(96),
            scheduler: Some("ddim".into()),
            seed: Some(SeedChoice::Random),
            ..req
        };
        let s = settings(&req, &cfg, 512).unwrap();
        assert_eq!((s.steps, s.width, s.height), (3, 96, 128));
        assert_eq!(s.scheduler, SchedulerKind::Ddim);
        assert_eq!(s.seed, SeedChoice::Random);
    }

    #[test]
    fn an_unsupported_schedule_type_is_an_error_not_another_schedule() {
        let cfg = config();
        let req = SdRequest {
            from: Some(from("Euler", Some("Exponential"))),
            ..Default::default()
        };
        let err = settings(&req, &cfg, 512).err().unwrap().to_string();
        assert!(
            err.contains("in.prompt") && err.contains("Exponential"),
            "{err}"
        );
        // A CLI name in the Sampler field is read.
        let req = SdRequest {
            from: Some(from("euler-a", None)),
            ..Default::default()
        };
        assert_eq!(
            settings(&req, &cfg, 512).unwrap().scheduler,
            SchedulerKind::EulerAncestral
        );
    }

    #[test]
    fn bad_values_are_usage_errors_that_name_them() {
        let cfg = config();
        let cases: Vec<(SdRequest, &str)> = vec![
            (
                SdRequest {
                    width: Some(100),
                    ..Default::default()
                },
                "width 100",
            ),
            (
                SdRequest {
                    height: Some(0),
                    ..Default::default()
                },
                "height 0",
            ),
            (
                SdRequest {
                    steps: Some(0),
                    ..Default::default()
                },
                "steps 0",
            ),
            (
                SdRequest {
                    strength: Some(1.5),
                    ..Default::default()
                },
                "strength 1.5",
            ),
            (
                SdRequest {
                    variation_strength: Some(0.5),
                    ..Default::default()
                },
                "needs a variation seed",
            ),
            (
                SdRequest {
                    scheduler: Some("nope".into()),
                    ..Default::default()
                },
                "unknown scheduler 'nope'",
            ),
            (
                SdRequest {
                    mask: Some("m.png".into()),
                    ..Default::default()
                },
                "a mask needs an init image",
            ),
            (
                SdRequest {
                    controlnet: Some("cn".into()),
                    ..Default::default()
                },
                "go together",
            ),
        ];
        for (req, want) in cases {
            match settings(&req, &cfg, 512) {
                Err(RequestError::Usage(e)) => assert!(e.contains(want), "{want}: {e}"),
                Err(e) => panic!("{want}: not a usage error: {e}"),
                Ok(_) => panic!("{want}: accepted"),
            }
        }
    }
}
