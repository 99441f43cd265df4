//! The generate pane: prompt iteration for Stable Diffusion, with a seed lock and a history.
use crate::domain::SchedulerKind;
use std::path::PathBuf;

use super::{clamp_move, open_prompt, AppState, Cmd, Effect, PromptKind};

/// Scheduler names the pane offers, from the SD engine's scheduler table (names only: nothing
/// here runs a model).
pub fn schedulers() -> Vec<&'static str> {
    SchedulerKind::all().iter().map(|k| k.name()).collect()
}

/// The pane's starting parameters, from `[diffusion]` in config.toml.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    pub model: String,
    pub steps: u32,
    pub guidance: f32,
    pub scheduler: String,
    /// 0: keep the pane's 512.
    pub width: u32,
    pub height: u32,
}

/// Everything one generation needs; the runtime hands it to the SD runner.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    pub id: u64,
    pub prompt: String,
    pub negative: String,
    pub steps: u32,
    pub guidance: f32,
    pub scheduler: String,
    pub width: u32,
    pub height: u32,
    pub seed: u64,
    pub variation_seed: Option<u64>,
    pub variation_strength: f32,
    /// (LoRA name, weight).
    pub loras: Vec<(String, f32)>,
    pub model: String,
    pub init_image: Option<PathBuf>,
    pub strength: f32,
    pub mask: Option<PathBuf>,
    /// (ControlNet model, conditioning image).
    pub controlnet: Option<(String, PathBuf)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum GenStatus {
    Running { step: u32, total: u32 },
    Done(PathBuf),
    Failed(String),
    Cancelled,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub request: GenerateRequest,
    pub status: GenStatus,
    /// The latest preview image while sampling.
    pub preview: Option<PathBuf>,
}

/// The rows of the parameter list, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Prompt,
    Negative,
    Steps,
    Guidance,
    Scheduler,
    Width,
    Height,
    Seed,
    VariationSeed,
    VariationStrength,
    Model,
    Loras,
    InitImage,
    Strength,
    Mask,
    ControlnetModel,
    ControlnetImage,
}

impl Field {
    pub const ALL: &[Field] = &[
        Field::Prompt,
        Field::Negative,
        Field::Steps,
        Field::Guidance,
        Field::Scheduler,
        Field::Width,
        Field::Height,
        Field::Seed,
        Field::VariationSeed,
        Field::VariationStrength,
        Field::Model,
        Field::Loras,
        Field::InitImage,
        Field::Strength,
        Field::Mask,
        Field::ControlnetModel,
        Field::ControlnetImage,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Field::Prompt => "prompt",
            Field::Negative => "negative",
            Field::Steps => "steps",
            Field::Guidance => "guidance",
            Field::Scheduler => "scheduler",
            Field::Width => "width",
            Field::Height => "height",
            Field::Seed => "seed",
            Field::VariationSeed => "variation seed",
            Field::VariationStrength => "variation strength",
            Field::Model => "model",
            Field::Loras => "loras",
            Field::InitImage => "init image",
            Field::Strength => "strength",
            Field::Mask => "mask",
            Field::ControlnetModel => "controlnet",
            Field::ControlnetImage => "controlnet image",
        }
    }

    pub fn multiline(self) -> bool {
        matches!(self, Field::Prompt | Field::Negative)
    }
}

#[derive(Debug, Clone)]
pub struct GeneratePane {
    pub params: GenerateRequest,
    pub controlnet_model: String,
    pub controlnet_image: Option<PathBuf>,
    pub seed_locked: bool,
    pub field: usize,
    pub history: Vec<Generation>,
    pub history_cursor: usize,
    /// Two history entries shown side by side.
    pub compare: Option<(usize, usize)>,
    next_id: u64,
    rng: u64,
}

impl Default for GeneratePane {
    fn default() -> Self {
        GeneratePane::new(0x5eed_a7e1)
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn path_text(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn opt_path(text: &str) -> Option<PathBuf> {
    let t = text.trim();
    (!t.is_empty()).then(|| PathBuf::from(t))
}

impl GeneratePane {
    /// `entropy` seeds the random seeds (the runtime passes the clock; tests a constant).
    pub fn new(entropy: u64) -> Self {
        let mut rng = entropy;
        let seed = splitmix(&mut rng) % (1 << 32);
        GeneratePane {
            params: GenerateRequest {
                id: 0,
                prompt: String::new(),
                negative: String::new(),
                steps: 25,
                guidance: 7.5,
                scheduler: "euler-a".to_string(),
                width: 512,
                height: 512,
                seed,
                variation_seed: None,
                variation_strength: 0.0,
                loras: Vec::new(),
                model: "sd-1.5".to_string(),
                init_image: None,
                strength: 0.75,
                mask: None,
                controlnet: None,
            },
            controlnet_model: String::new(),
            controlnet_image: None,
            seed_locked: false,
            field: 0,
            history: Vec::new(),
            history_cursor: 0,
            compare: None,
            next_id: 1,
            rng,
        }
    }

    /// Takes the configured defaults; a value the pane would refuse is left as it was.
    pub fn apply_defaults(&mut self, d: &Defaults) {
        let p = &mut self.params;
        if !d.model.trim().is_empty() {
            p.model = d.model.trim().to_string();
        }
        if (1..=500).contains(&d.steps) {
            p.steps = d.steps;
        }
        if d.guidance.is_finite() && d.guidance >= 0.0 {
            p.guidance = d.guidance;
        }
        if schedulers().contains(&d.scheduler.as_str()) {
            p.scheduler = d.scheduler.clone();
        }
        for (v, out) in [(d.width, &mut p.width), (d.height, &mut p.height)] {
            if v > 0 && v % 8 == 0 && v <= 4096 {
                *out = v;
            }
        }
    }

    pub fn current_field(&self) -> Field {
        Field::ALL[self.field.min(Field::ALL.len() - 1)]
    }

    pub fn random_seed(&mut self) -> u64 {
        splitmix(&mut self.rng) % (1 << 32)
    }

    pub fn running(&self) -> Option<u64> {
        self.history
            .iter()
            .rev()
            .find(|g| matches!(g.status, GenStatus::Running { .. }))
            .map(|g| g.request.id)
    }

    /// The request for a new generation: an unlocked seed is re-rolled each time, a locked
    /// one is reused so prompt edits compare fairly. The generation joins the history.
    pub fn start(&mut self) -> GenerateRequest {
        if !self.seed_locked {
            self.params.seed = self.random_seed();
        }
        let mut req = self.params.clone();
        req.id = self.next_id;
        self.next_id += 1;
        req.controlnet = match (self.controlnet_model.trim(), &self.controlnet_image) {
            ("", _) | (_, None) => None,
            (m, Some(img)) => Some((m.to_string(), img.clone())),
        };
        self.history.push(Generation {
            request: req.clone(),
            status: GenStatus::Running {
                step: 0,
                total: req.steps,
            },
            preview: None,
        });
        self.history_cursor = self.history.len() - 1;
        req
    }

    pub fn find_mut(&mut self, id: u64) -> Option<&mut Generation> {
        self.history.iter_mut().find(|g| g.request.id == id)
    }

    /// Copies a past generation's parameters back (its seed too, so it reproduces).
    pub fn restore(&mut self, index: usize) -> bool {
        let Some(g) = self.history.get(index) else {
            return false;
        };
        let req = g.request.clone();
        self.controlnet_model = req
            .controlnet
            .as_ref()
            .map(|c| c.0.clone())
            .unwrap_or_default();
        self.controlnet_image = req.controlnet.as_ref().map(|c| c.1.clone());
        self.params = req;
        true
    }

    pub fn field_text(&self, field: Field) -> String {
        let p = &self.params;
        match field {
            Field::Prompt => p.prompt.clone(),
            Field::Negative => p.negative.clone(),
            Field::Steps => p.steps.to_string(),
            Field::Guidance => format!("{:.1}", p.guidance),
            Field::Scheduler => p.scheduler.clone(),
            Field::Width => p.width.to_string(),
            Field::Height => p.height.to_string(),
            Field::Seed => p.seed.to_string(),
            Field::VariationSeed => p.variation_seed.map(|s| s.to_string()).unwrap_or_default(),
            Field::VariationStrength => format!("{:.2}", p.variation_strength),
            Field::Model => p.model.clone(),
            Field::Loras => p
                .loras
                .iter()
                .map(|(n, w)| format!("{n}:{w}"))
                .collect::<Vec<_>>()
                .join(", "),
            Field::InitImage => path_text(&p.init_image),
            Field::Strength => format!("{:.2}", p.strength),
            Field::Mask => path_text(&p.mask),
            Field::ControlnetModel => self.controlnet_model.clone(),
            Field::ControlnetImage => path_text(&self.controlnet_image),
        }
    }

    /// Sets a field from typed text; the error says what the field accepts.
    pub fn set_field(&mut self, field: Field, text: &str) -> Result<(), String> {
        fn num<T: std::str::FromStr>(field: Field, t: &str) -> Result<T, String> {
            t.trim()
                .parse()
                .map_err(|_| format!("{}: '{t}' is not a valid number", field.label()))
        }
        let p = &mut self.params;
        match field {
            Field::Prompt => p.prompt = text.to_string(),
            Field::Negative => p.negative = text.to_string(),
            Field::Steps => {
                let n: u32 = num(field, text)?;
                if !(1..=500).contains(&n) {
                    return Err("steps: use 1 to 500".into());
                }
                p.steps = n;
            }
            Field::Guidance => p.guidance = num(field, text)?,
            Field::Scheduler => {
                let t = text.trim();
                let names = schedulers();
                if !names.contains(&t) {
                    return Err(format!(
                        "scheduler: unknown '{t}': use one of {}",
                        names.join(", ")
                    ));
                }
                p.scheduler = t.to_string();
            }
            Field::Width | Field::Height => {
                let n: u32 = num(field, text)?;
                if n == 0 || n % 8 != 0 || n > 4096 {
                    return Err(format!("{}: use a multiple of 8 up to 4096", field.label()));
                }
                if field == Field::Width {
                    p.width = n;
                } else {
                    p.height = n;
                }
            }
            Field::Seed => p.seed = num(field, text)?,
            Field::VariationSeed => {
                p.variation_seed = if text.trim().is_empty() {
                    None
                } else {
                    Some(num(field, text)?)
                }
            }
            Field::VariationStrength | Field::Strength => {
                let v: f32 = num(field, text)?;
                if !(0.0..=1.0).contains(&v) {
                    return Err(format!("{}: use 0 to 1", field.label()));
                }
                if field == Field::Strength {
                    p.strength = v;
                } else {
                    p.variation_strength = v;
                }
            }
            Field::Model => p.model = text.trim().to_string(),
            Field::Loras => {
                let mut loras = Vec::new();
                for part in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let (name, weight) = match part.rsplit_once(':') {
                        Some((n, w)) => (n.trim(), num::<f32>(field, w)?),
                        None => (part, 1.0),
                    };
                    loras.push((name.to_string(), weight));
                }
                p.loras = loras;
            }
            Field::InitImage => p.init_image = opt_path(text),
            Field::Mask => p.mask = opt_path(text),
            Field::ControlnetModel => self.controlnet_model = text.trim().to_string(),
            Field::ControlnetImage => self.controlnet_image = opt_path(text),
        }
        Ok(())
    }

    /// `+`/`-` on the field under the cursor.
    pub fn nudge(&mut self, up: bool) {
        let s = if up { 1.0 } else { -1.0 };
        let field = self.current_field();
        let p = &mut self.params;
        match field {
            Field::Steps => p.steps = (p.steps as i64 + s as i64).clamp(1, 500) as u32,
            Field::Guidance => p.guidance = (p.guidance + 0.5 * s).clamp(0.0, 30.0),
            Field::Scheduler => {
                let names = schedulers();
                let i = names.iter().position(|n| *n == p.scheduler).unwrap_or(0) as isize;
                let n = names.len() as isize;
                p.scheduler = names[(i + s as isize).rem_euclid(n) as usize].to_string();
            }
            Field::Width => p.width = (p.width as i64 + 64 * s as i64).clamp(64, 4096) as u32,
            Field::Height => p.height = (p.height as i64 + 64 * s as i64).clamp(64, 4096) as u32,
            Field::Seed => self.seed_step(up),
            Field::VariationSeed => {
                let v = p.variation_seed.unwrap_or(0);
                p.variation_seed = Some(if up {
                    v.wrapping_add(1)
                } else {
                    v.wrapping_sub(1)
                });
            }
            Field::VariationStrength => {
                p.variation_strength = (p.variation_strength + 0.05 * s).clamp(0.0, 1.0)
            }
            Field::Strength => p.strength = (p.strength + 0.05 * s).clamp(0.0, 1.0),
            _ => {}
        }
    }

    pub fn seed_step(&mut self, up: bool) {
        let p = &mut self.params;
        p.seed = if up {
            p.seed.wrapping_add(1)
        } else {
            p.seed.wrapping_sub(1)
        };
    }
}

// The pane's commands, called by the reducer (`super::update`).

pub(super) fn generate_command(state: &mut AppState, cmd: Cmd, effects: &mut Vec<Effect>) {
    let g = &mut state.generate;
    let n = Field::ALL.len();
    match cmd {
        Cmd::Down => g.field = clamp_move(g.field, 1, n),
        Cmd::Up => g.field = clamp_move(g.field, -1, n),
        Cmd::Top => g.field = 0,
        Cmd::Bottom => g.field = n - 1,
        Cmd::Increase => g.nudge(true),
        Cmd::Decrease => g.nudge(false),
        Cmd::EditField | Cmd::Open => {
            let f = g.current_field();
            let text = g.field_text(f);
            open_prompt(state, PromptKind::Field(f), &text);
        }
        Cmd::EditPrompt | Cmd::EditNegative => {
            let f = if cmd == Cmd::EditPrompt {
                Field::Prompt
            } else {
                Field::Negative
            };
            let text = g.field_text(f);
            open_prompt(state, PromptKind::Field(f), &text);
        }
        Cmd::Generate => start_generation(state, effects),
        Cmd::CancelGenerate => match g.running() {
            Some(id) => effects.push(Effect::CancelGenerate(id)),
            None => state.info("no generation is running"),
        },
        Cmd::SeedLock => {
            g.seed_locked = !g.seed_locked;
            let s = if g.seed_locked {
                format!(
                    "seed locked at {}: prompt edits regenerate with it",
                    g.params.seed
                )
            } else {
                "seed unlocked: each generation gets a new seed".to_string()
            };
            state.info(s);
        }
        Cmd::SeedUp => g.seed_step(true),
        Cmd::SeedDown => g.seed_step(false),
        Cmd::SeedRandom => g.params.seed = g.random_seed(),
        Cmd::HistoryNext => g.history_cursor = clamp_move(g.history_cursor, 1, g.history.len()),
        Cmd::HistoryPrev => g.history_cursor = clamp_move(g.history_cursor, -1, g.history.len()),
        Cmd::Restore => {
            let i = g.history_cursor;
            if g.restore(i) {
                state.info(format!("restored generation #{}", i + 1));
            }
        }
        Cmd::Compare => {
            let last = g.history.len().saturating_sub(1);
            if g.compare.take().is_none() {
                if g.history.len() >= 2 {
                    let other = if g.history_cursor == last {
                        last.saturating_sub(1)
                    } else {
                        last
                    };
                    g.compare = Some((g.history_cursor, other));
                } else {
                    state.info("compare needs two generations in the history");
                }
            }
        }
        Cmd::Cancel => g.compare = None,
        _ => {}
    }
}

pub(super) fn start_generation(state: &mut AppState, effects: &mut Vec<Effect>) {
    if state.generate.params.prompt.trim().is_empty() {
        return state.info("write a prompt first (e)");
    }
    if let Some(id) = state.generate.running() {
        // Latest request wins: the running one is cancelled.
        effects.push(Effect::CancelGenerate(id));
    }
    let req = state.generate.start();
    effects.push(Effect::Generate(req));
}
