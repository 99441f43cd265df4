//! The generate pane's runtime: Stable Diffusion requests on the model thread (through the
//! engine's `run_job`, as `atelier generate` runs them), live previews, the PNGs. The compare
//! view's images are compare.rs, the status bar's memory figure memory.rs.
use super::{GenerateRunner, Msg};
use crate::config::{Config, DeviceChoice, DiffusionConfig};
use crate::engine::diffusion::inputs;
use crate::engine::diffusion::pipeline::{self, Progress, SessionSpec};
use crate::engine::diffusion::request::{self, SdRequest, SeedChoice};
use crate::engine::runtime::ModelJobError;
use crate::engine::{runtime, store, CancelToken, DeviceThread};
use crate::output::atomic::write_atomic;
use crate::output::png_meta;
use crate::state::generate::Defaults;
use crate::state::{Action, Event, GenerateRequest};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};

/// A live preview every this many steps.
const PREVIEW_EVERY: usize = 1;

fn send(tx: &Sender<Msg>, ev: Event) {
    let _ = tx.send(Msg::Action(Action::Event(ev)));
}

/// The pane's starting parameters from `[diffusion]`.
pub fn defaults(config: &DiffusionConfig) -> Defaults {
    Defaults {
        model: config.model.clone(),
        steps: config.steps,
        guidance: config.guidance as f32,
        scheduler: config.scheduler.clone(),
        width: config.width,
        height: config.height,
    }
}

/// The f64 a user meant by an f32 the pane holds (7.3, not 7.300000190734863), so the TUI
/// runs and records the same numbers `atelier generate` does for the same text.
fn wide(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

struct Shared {
    device: DeviceChoice,
    models_dir: PathBuf,
    config: DiffusionConfig,
    thread: Mutex<Option<DeviceThread>>,
    running: Mutex<HashMap<u64, CancelToken>>,
    /// Live previews, removed when the runner goes.
    previews: Option<tempfile::TempDir>,
    /// Previews of generations that finished with an image, removed when the next starts.
    stale: Mutex<Vec<PathBuf>>,
    /// One image written at a time, so two never take the same number.
    write: Mutex<()>,
}

/// The generate pane's runner: one request at a time on the model thread, which keeps the
/// model (and its fused LoRAs and ControlNet) loaded between requests.
pub struct SdRunner {
    shared: Arc<Shared>,
}

impl SdRunner {
    pub fn new(config: &Config, device: DeviceChoice) -> Self {
        Self::with_models(
            store::models_dir(&config.models_dir),
            config.diffusion.clone(),
            device,
        )
    }

    /// A runner on the models in `models_dir` (tests: a store made for the test).
    pub fn with_models(models_dir: PathBuf, config: DiffusionConfig, device: DeviceChoice) -> Self {
        let previews = tempfile::Builder::new()
            .prefix("atelier-previews-")
            .tempdir()
            .map_err(|e| tracing::warn!("no live previews: cannot make a temp folder: {e}"))
            .ok();
        SdRunner {
            shared: Arc::new(Shared {
                device,
                models_dir,
                config,
                thread: Mutex::new(None),
                running: Mutex::new(HashMap::new()),
                previews,
                stale: Mutex::new(Vec::new()),
                write: Mutex::new(()),
            }),
        }
    }
}

impl GenerateRunner for SdRunner {
    fn start(&mut self, request: GenerateRequest, events: Sender<Msg>) {
        let cancel = CancelToken::new();
        if let Ok(mut r) = self.shared.running.lock() {
            r.insert(request.id, cancel.clone());
        }
        let shared = Arc::clone(&self.shared);
        // Removed only now: the UI has long moved from them to their images, so none is
        // being decoded.
        let stale = self
            .shared
            .stale
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        for p in stale {
            let _ = std::fs::remove_file(p);
        }
        std::thread::spawn(move || {
            let id = request.id;
            let result = run_one(&shared, &request, &cancel, &events);
            if let Ok(mut r) = shared.running.lock() {
                r.remove(&id);
            }
            match result {
                Ok((image, previews)) => {
                    // The image replaces them; a failed or cancelled generation keeps its last.
                    if let Ok(mut stale) = shared.stale.lock() {
                        stale.extend(previews);
                    }
                    send(&events, Event::GenerateDone { id, image });
                }
                Err(ModelJobError::Cancelled) => send(&events, Event::GenerateCancelled { id }),
                Err(e) => send(
                    &events,
                    Event::GenerateFailed {
                        id,
                        error: e.to_string(),
                    },
                ),
            }
        });
    }

    fn cancel(&mut self, id: u64) {
        if let Some(token) = self
            .shared
            .running
            .lock()
            .ok()
            .and_then(|r| r.get(&id).cloned())
        {
            token.cancel();
        }
    }
}

impl Shared {
    fn thread(&self) -> Result<DeviceThread, String> {
        let mut slot = self
            .thread
            .lock()
            .map_err(|_| "the model thread lock is poisoned".to_string())?;
        if let Some(t) = slot.as_ref() {
            return Ok(t.clone());
        }
        let device = runtime::resolve_device(self.device).map_err(|e| e.to_string())?;
        let t = DeviceThread::shared(device)
            .map_err(|e| format!("cannot start the model thread: {e}"))?;
        *slot = Some(t.clone());
        Ok(t)
    }
}

/// What the pane asked for, as the pipeline takes it: the one [`SdRequest`], resolved and
/// checked as `atelier generate` does. Notes (an image resized) go to the status line.
pub fn prepare(
    models_dir: &Path,
    config: &DiffusionConfig,
    req: &GenerateRequest,
    note: &mut dyn FnMut(String),
) -> Result<(SessionSpec, pipeline::Request, String), String> {
    let (controlnet, control_image) = match &req.controlnet {
        Some((name, image)) => (Some(name.clone()), Some(image.clone())),
        None => (None, None),
    };
    let sd = SdRequest {
        model: Some(req.model.clone()),
        prompt: Some(req.prompt.clone()),
        negative: Some(req.negative.clone()),
        steps: Some(req.steps as usize),
        guidance: Some(wide(req.guidance)),
        seed: Some(SeedChoice::Fixed(req.seed)),
        scheduler: Some(req.scheduler.clone()),
        width: Some(i64::from(req.width)),
        height: Some(i64::from(req.height)),
        batch: 1,
        strength: req.init_image.as_ref().map(|_| wide(req.strength)),
        variation_seed: req.variation_seed,
        variation_strength: req
            .variation_seed
            .is_some()
            .then(|| wide(req.variation_strength)),
        init_image: req.init_image.clone(),
        mask: req.mask.clone(),
        controlnet,
        control_image,
        loras: req
            .loras
            .iter()
            .map(|(n, weight)| (n.clone(), wide(*weight)))
            .collect(),
        preview_every: PREVIEW_EVERY,
        ..SdRequest::default()
    };
    let resolved = request::resolve(&sd, config, models_dir).map_err(|e| e.to_string())?;
    resolved.notes.into_iter().for_each(&mut *note);
    let name = resolved.spec.model.name().to_string();
    Ok((resolved.spec, resolved.request, name))
}

fn output_dir(config: &DiffusionConfig) -> PathBuf {
    if config.output_dir.is_empty() {
        PathBuf::from(".")
    } else {
        PathBuf::from(&config.output_dir)
    }
}

/// Live previews are scaled up to the image's size, at most this many pixels on a side.
const PREVIEW_MAX: u32 = 512;

/// A preview at the image's size (the latent preview is 1/8 of it), written for the pane.
fn write_preview(
    dir: &Path,
    id: u64,
    step: usize,
    image: &image::RgbImage,
    w: u32,
    h: u32,
) -> Option<PathBuf> {
    let scale = (f64::from(PREVIEW_MAX) / f64::from(w.max(h).max(1))).min(1.0);
    let (w, h) = (
        ((f64::from(w) * scale) as u32).max(1),
        ((f64::from(h) * scale) as u32).max(1),
    );
    let big = image::imageops::resize(image, w, h, image::imageops::FilterType::Triangle);
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(big)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .ok()?;
    let path = dir.join(format!("{id}-{step:04}.png"));
    write_atomic(&path, &bytes).ok()?;
    Some(path)
}

/// Runs one request; the image written and the live previews shown on the way.
fn run_one(
    shared: &Shared,
    req: &GenerateRequest,
    cancel: &CancelToken,
    events: &Sender<Msg>,
) -> Result<(PathBuf, Vec<PathBuf>), ModelJobError> {
    let mut note = |n: String| send(events, Event::Info(n));
    let (spec, request, model_name) = prepare(&shared.models_dir, &shared.config, req, &mut note)?;
    let out_dir = output_dir(&shared.config);
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("{}: cannot create the folder: {e}", out_dir.display()))?;
    let thread = shared.thread()?;
    let described = inputs::describe(&request, &model_name);
    let model = spec.model.clone();
    let loaded = |thread: &DeviceThread| {
        let model = model.clone();
        thread
            .run(move |cache| pipeline::is_loaded(cache, &model))
            .unwrap_or(false)
    };
    if !loaded(&thread) {
        send(
            events,
            Event::Model {
                name: model_name.clone(),
                status: Some("loading".into()),
            },
        );
    }
    let (tx, rx) = mpsc::channel();
    let job = {
        let thread = thread.clone();
        let cancel = cancel.clone();
        std::thread::spawn(move || pipeline::run_job(&thread, spec, request, cancel, tx))
    };
    let (id, mut total) = (req.id, req.steps);
    let mut previews = Vec::new();
    for p in rx {
        let ev = match p {
            Progress::Step { step, total: t } => {
                total = t as u32;
                Event::GenerateProgress {
                    id,
                    step: step as u32,
                    total,
                    preview: None,
                }
            }
            Progress::Preview { step, image } => {
                let Some(dir) = shared.previews.as_ref() else {
                    continue;
                };
                let Some(path) = write_preview(dir.path(), id, step, &image, req.width, req.height)
                else {
                    continue;
                };
                previews.push(path.clone());
                Event::GenerateProgress {
                    id,
                    step: step as u32,
                    total,
                    preview: Some(path),
                }
            }
            Progress::Decoding => continue,
        };
        send(events, ev);
    }
    let result = job
        .join()
        .unwrap_or_else(|_| Err(ModelJobError::Panicked("the generation thread".into())));
    // The latents, decoded images and previews are freed: return them to the OS, as the
    // queue does after each job (the model stays cached on the device thread).
    crate::engine::runtime::release_freed_memory();
    let now_loaded = loaded(&thread);
    send(
        events,
        Event::Model {
            name: model_name.clone(),
            status: (!now_loaded).then(|| "not loaded".to_string()),
        },
    );
    let generation = result.map_err(|e| match e {
        _ if cancel.is_cancelled() => ModelJobError::Cancelled,
        ModelJobError::Permanent(m) => ModelJobError::Permanent(format!("{model_name}: {m}")),
        ModelJobError::Transient(m) => ModelJobError::Transient(format!("{model_name}: {m}")),
        e => e,
    })?;
    let image = generation
        .images
        .first()
        .ok_or_else(|| format!("{model_name}: the model returned no image"))?;
    let params = inputs::for_image(&described, &generation, 0);
    let _one = shared.write.lock();
    let mut number = inputs::next_number(&out_dir);
    let path = crate::output::numbering::claim_image_path(&out_dir, &mut number, params.seed)
        .map_err(|e| e.to_string())?;
    png_meta::write_png_with_parameters(&path, image, &params.to_infotext())
        .map_err(|e| e.to_string())?;
    Ok((std::path::absolute(&path).unwrap_or(path), previews))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pane_numbers_reach_the_pipeline_as_typed() {
        assert_eq!(wide(7.3), 7.3);
        assert_eq!(wide(0.75), 0.75);
        assert_eq!(wide(1e-3), 0.001);
    }
}
