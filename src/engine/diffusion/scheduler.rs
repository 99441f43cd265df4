//! Noise schedulers with diffusers' numerics (the version pinned in the venv): DDIM, Euler,
//! Euler Ancestral, DPM++ 2M (plain and Karras), DPM++ SDE Karras (with Gaussian noise in
//! place of torchsde's Brownian tree), UniPC, LMS and PNDM (PLMS steps).
//!
//! Tables (betas, cumulative alphas, sigmas) are computed the way diffusers computes them:
//! betas and their cumulative product in float32 through libtorch itself, sigmas and
//! timesteps with numpy's rounding rules. Per-step scalar coefficients are computed in f64;
//! the tensors stay float32 on the sample's device.
use serde::Deserialize;
use tch::{Device, Kind, Tensor};

pub use crate::domain::SchedulerKind;

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("scheduler config: {0}")]
    Config(String),
    #[error("scheduler {kind}: {what} is not supported")]
    Unsupported { kind: &'static str, what: String },
    #[error("scheduler: steps must be between 1 and {max}, got {steps}")]
    Steps { steps: usize, max: usize },
}

/// diffusers' `scheduler_config.json` (any class). Keys it lacks take the defaults of the
/// scheduler class being built, as diffusers' `from_config` does; unknown keys are ignored.
#[derive(Deserialize, Clone, Debug, Default)]
pub struct SchedulerConfig {
    pub num_train_timesteps: Option<usize>,
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub beta_schedule: Option<String>,
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: Option<String>,
    pub timestep_spacing: Option<String>,
    pub steps_offset: Option<i64>,
    pub clip_sample: Option<bool>,
    pub clip_sample_range: Option<f64>,
    pub set_alpha_to_one: Option<bool>,
    pub skip_prk_steps: Option<bool>,
    pub use_karras_sigmas: Option<bool>,
    pub use_exponential_sigmas: Option<bool>,
    pub use_beta_sigmas: Option<bool>,
    pub interpolation_type: Option<String>,
    pub final_sigmas_type: Option<String>,
    pub lower_order_final: Option<bool>,
    pub euler_at_final: Option<bool>,
    pub thresholding: Option<bool>,
    pub rescale_betas_zero_snr: Option<bool>,
    pub timestep_type: Option<String>,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
}

pub trait Scheduler: Send {
    /// diffusers' `scheduler.timesteps`: one entry per UNet call.
    fn timesteps(&self) -> &[f64];
    /// diffusers' `scheduler.order`.
    fn order(&self) -> usize;
    fn init_noise_sigma(&self) -> f64;
    /// img2img: diffusers' `set_begin_index`.
    fn set_begin_index(&mut self, index: usize);
    fn scale_model_input(&self, sample: &Tensor, index: usize) -> Tensor;
    /// `index` into timesteps(); `noise()` returns fresh noise shaped like `sample` (ancestral/SDE samplers call it).
    fn step(
        &mut self,
        model_output: &Tensor,
        index: usize,
        sample: &Tensor,
        noise: &mut dyn FnMut() -> Tensor,
    ) -> Tensor;
    fn add_noise(&self, original: &Tensor, noise: &Tensor, index: usize) -> Tensor;
}

pub fn build(
    kind: SchedulerKind,
    config: &SchedulerConfig,
    steps: usize,
) -> Result<Box<dyn Scheduler>, SchedulerError> {
    let base = Base::new(kind, config)?;
    if steps == 0 || steps > base.n_train {
        return Err(SchedulerError::Steps {
            steps,
            max: base.n_train,
        });
    }
    Ok(match kind {
        SchedulerKind::Ddim => Box::new(Ddim::new(base, config, steps)?),
        SchedulerKind::Pndm => Box::new(Pndm::new(base, config, steps)?),
        SchedulerKind::Euler => Box::new(KSampler::new(base, config, steps, KMethod::Euler)?),
        SchedulerKind::EulerAncestral => {
            Box::new(KSampler::new(base, config, steps, KMethod::EulerAncestral)?)
        }
        SchedulerKind::Lms => Box::new(KSampler::new(base, config, steps, KMethod::Lms)?),
        SchedulerKind::DpmPp2M | SchedulerKind::DpmPp2MKarras => {
            Box::new(Multistep::new(base, config, steps, kind)?)
        }
        SchedulerKind::UniPc => Box::new(Multistep::new(base, config, steps, kind)?),
        SchedulerKind::DpmPpSdeKarras => Box::new(SdeKarras::new(base, config, steps)?),
    })
}

// ---------------------------------------------------------------------------------------------
// Shared tables

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Prediction {
    Epsilon,
    V,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Spacing {
    Linspace,
    Leading,
    Trailing,
}

/// What every scheduler needs: the training schedule and the shared config values.
struct Base {
    kind: SchedulerKind,
    n_train: usize,
    prediction: Prediction,
    steps_offset: i64,
    /// Cumulative alphas in float32, exactly as torch computes them.
    alphas_cumprod: Vec<f32>,
}

fn unsupported(kind: SchedulerKind, what: impl Into<String>) -> SchedulerError {
    SchedulerError::Unsupported {
        kind: kind.name(),
        what: what.into(),
    }
}

impl Base {
    fn new(kind: SchedulerKind, c: &SchedulerConfig) -> Result<Base, SchedulerError> {
        let n_train = c.num_train_timesteps.unwrap_or(1000);
        if n_train < 2 {
            return Err(SchedulerError::Config(format!(
                "num_train_timesteps must be at least 2, got {n_train}"
            )));
        }
        let prediction = match c.prediction_type.as_deref().unwrap_or("epsilon") {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::V,
            other => return Err(unsupported(kind, format!("prediction_type {other:?}"))),
        };
        // Keys a scheduler class does not have are ignored, as diffusers' from_config does.
        use SchedulerKind::*;
        if matches!(kind, Ddim | DpmPp2M | DpmPp2MKarras | UniPc) && c.thresholding == Some(true) {
            return Err(unsupported(kind, "thresholding"));
        }
        if !matches!(kind, Pndm | Lms | DpmPpSdeKarras) && c.rescale_betas_zero_snr == Some(true) {
            return Err(unsupported(kind, "rescale_betas_zero_snr"));
        }
        if kind == Euler && c.timestep_type.as_deref().is_some_and(|t| t != "discrete") {
            return Err(unsupported(kind, "timestep_type other than discrete"));
        }
        let has_sigma_options = matches!(kind, Euler | Lms | DpmPp2M | DpmPp2MKarras | UniPc);
        if has_sigma_options
            && (c.use_exponential_sigmas == Some(true) || c.use_beta_sigmas == Some(true))
        {
            return Err(unsupported(kind, "exponential or beta sigmas"));
        }
        let alphas_cumprod = alphas_cumprod(kind, c, n_train)?;
        Ok(Base {
            kind,
            n_train,
            prediction,
            steps_offset: c.steps_offset.unwrap_or(0),
            alphas_cumprod,
        })
    }

    fn spacing(&self, c: &SchedulerConfig, default: Spacing) -> Result<Spacing, SchedulerError> {
        Ok(match c.timestep_spacing.as_deref() {
            None => default,
            Some("linspace") => Spacing::Linspace,
            Some("leading") => Spacing::Leading,
            Some("trailing") => Spacing::Trailing,
            Some(other) => {
                return Err(unsupported(
                    self.kind,
                    format!("timestep_spacing {other:?}"),
                ))
            }
        })
    }

    /// `((1 - ᾱ) / ᾱ) ** 0.5` in float32, as torch evaluates it.
    fn train_sigmas(&self) -> Vec<f32> {
        self.alphas_cumprod
            .iter()
            .map(|&a| ((1.0f32 - a) / a).sqrt())
            .collect()
    }

    fn ac(&self, t: i64) -> f64 {
        self.alphas_cumprod[t.clamp(0, self.n_train as i64 - 1) as usize] as f64
    }
}

fn alphas_cumprod(
    kind: SchedulerKind,
    c: &SchedulerConfig,
    n: usize,
) -> Result<Vec<f32>, SchedulerError> {
    let opts = (Kind::Float, Device::Cpu);
    let start = c.beta_start.unwrap_or(0.0001);
    let end = c.beta_end.unwrap_or(0.02);
    let betas = if let Some(b) = &c.trained_betas {
        if b.len() != n {
            return Err(SchedulerError::Config(format!(
                "trained_betas has {} values, num_train_timesteps is {n}",
                b.len()
            )));
        }
        let b: Vec<f32> = b.iter().map(|&x| x as f32).collect();
        Tensor::from_slice(&b)
    } else {
        match c.beta_schedule.as_deref().unwrap_or("linear") {
            "linear" => Tensor::linspace(start, end, n as i64, opts),
            "scaled_linear" => Tensor::linspace(start.powf(0.5), end.powf(0.5), n as i64, opts)
                .pow_tensor_scalar(2),
            "squaredcos_cap_v2" => {
                let f = |t: f64| {
                    ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
                        .cos()
                        .powi(2)
                };
                let b: Vec<f32> = (0..n)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                        (1.0 - f(t2) / f(t1)).min(0.999) as f32
                    })
                    .collect();
                Tensor::from_slice(&b)
            }
            other => return Err(unsupported(kind, format!("beta_schedule {other:?}"))),
        }
    };
    let ac = (betas.ones_like() - &betas).cumprod(0, Kind::Float);
    Vec::<f32>::try_from(&ac).map_err(|e| SchedulerError::Config(e.to_string()))
}

// ---------------------------------------------------------------------------------------------
// numpy's arithmetic, reproduced where diffusers relies on it for the timesteps

/// `np.linspace(start, stop, num)` (float64).
fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut y: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(last) = y.last_mut() {
        *last = stop;
    }
    y
}

/// `np.arange(start, stop, step)` for float arguments.
fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil().max(0.0) as usize;
    let delta = (start + step) - start;
    (0..len).map(|i| start + i as f64 * delta).collect()
}

/// `np.interp(x, arange(len(fp)), fp)`.
fn np_interp(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x <= 0.0 {
        return fp[0] as f64;
    }
    if x >= last as f64 {
        return fp[last] as f64;
    }
    let j = x.floor() as usize;
    if x == j as f64 {
        return fp[j] as f64;
    }
    let slope = (fp[j + 1] as f64 - fp[j] as f64) / 1.0;
    slope * (x - j as f64) + fp[j] as f64
}

/// diffusers' `_sigma_to_t`: `log_sigmas` is float32 (np.log of a float32 array), ascending.
fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // argmax of cumsum(dists >= 0): the last position where the count grew, else 0.
    let low_idx = log_sigmas
        .iter()
        .rposition(|&l| log_sigma - l as f64 >= 0.0)
        .unwrap_or(0)
        .min(log_sigmas.len() - 2);
    let low = log_sigmas[low_idx];
    let high = log_sigmas[low_idx + 1];
    let w = ((low as f64 - log_sigma) / (low - high) as f64).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * (low_idx + 1) as f64
}

/// diffusers' `_convert_to_karras` (rho = 7) over `in_sigmas` (descending).
fn karras(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let min_inv = sigma_min.powf(1.0 / rho);
    let max_inv = sigma_max.powf(1.0 / rho);
    np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
        .collect()
}

fn round_f32(v: f64) -> f64 {
    v as f32 as f64
}

/// The integer timesteps of DDIM/PNDM-style `set_timesteps`, descending.
fn spaced_int(spacing: Spacing, n_train: usize, n: usize, offset: i64) -> Vec<i64> {
    match spacing {
        Spacing::Linspace => np_linspace(0.0, (n_train - 1) as f64, n)
            .into_iter()
            .rev()
            .map(|v| v.round_ties_even() as i64)
            .collect(),
        Spacing::Leading => {
            let ratio = (n_train / n) as i64;
            (0..n as i64).rev().map(|i| i * ratio + offset).collect()
        }
        Spacing::Trailing => np_arange(n_train as f64, 0.0, -(n_train as f64 / n as f64))
            .into_iter()
            .map(|v| v.round_ties_even() as i64 - 1)
            .collect(),
    }
}

fn x0_from(
    p: Prediction,
    model_output: &Tensor,
    sample: &Tensor,
    alpha_t: f64,
    sigma_t: f64,
) -> Tensor {
    // x0 from an epsilon or v prediction with sample = alpha_t * x0 + sigma_t * eps.
    match p {
        Prediction::Epsilon => (sample - model_output * sigma_t) / alpha_t,
        Prediction::V => sample * alpha_t - model_output * sigma_t,
    }
}

fn float(t: &Tensor) -> Tensor {
    t.to_kind(Kind::Float)
}

// ---------------------------------------------------------------------------------------------
// DDIM (eta = 0, as diffusers' pipelines run it)

struct Ddim {
    base: Base,
    timesteps: Vec<f64>,
    ts: Vec<i64>,
    n: usize,
    clip: Option<f64>,
    final_alpha_cumprod: f64,
}

impl Ddim {
    fn new(base: Base, c: &SchedulerConfig, n: usize) -> Result<Ddim, SchedulerError> {
        let spacing = base.spacing(c, Spacing::Leading)?;
        let ts = spaced_int(spacing, base.n_train, n, base.steps_offset);
        let clip = c
            .clip_sample
            .unwrap_or(true)
            .then(|| c.clip_sample_range.unwrap_or(1.0));
        let final_alpha_cumprod = if c.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            base.alphas_cumprod[0] as f64
        };
        Ok(Ddim {
            timesteps: ts.iter().map(|&t| t as f64).collect(),
            ts,
            n,
            clip,
            final_alpha_cumprod,
            base,
        })
    }
}

impl Scheduler for Ddim {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }
    fn order(&self) -> usize {
        1
    }
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    fn set_begin_index(&mut self, _index: usize) {}
    fn scale_model_input(&self, sample: &Tensor, _index: usize) -> Tensor {
        float(sample)
    }
    fn step(
        &mut self,
        model_output: &Tensor,
        index: usize,
        sample: &Tensor,
        _noise: &mut dyn FnMut() -> Tensor,
    ) -> Tensor {
        let (mo, sample) = (float(model_output), float(sample));
        let t = self.ts[index];
        let prev_t = t - (self.base.n_train / self.n) as i64;
        let a_t = self.base.ac(t);
        let a_prev = if prev_t >= 0 {
            self.base.ac(prev_t)
        } else {
            self.final_alpha_cumprod
        };
        let b_t = 1.0 - a_t;
        let (mut x0, eps) = match self.base.prediction {
            Prediction::Epsilon => ((&sample - &mo * b_t.sqrt()) / a_t.sqrt(), mo),
            Prediction::V => (
                &sample * a_t.sqrt() - &mo * b_t.sqrt(),
                &mo * a_t.sqrt() + &sample * b_t.sqrt(),
            ),
        };
        if let Some(r) = self.clip {
            x0 = x0.clamp(-r, r);
        }
        x0 * a_prev.sqrt() + eps * (1.0 - a_prev).sqrt()
    }
    fn add_noise(&self, original: &Tensor, noise: &Tensor, index: usize) -> Tensor {
        let a = self.base.ac(self.ts[index]);
        float(original) * a.sqrt() + float(noise) * (1.0 - a).sqrt()
    }
}

// ---------------------------------------------------------------------------------------------
// PNDM with skip_prk_steps (PLMS only), as the SD configs set it

struct Pndm {
    base: Base,
    timesteps: Vec<f64>,
    ts: Vec<i64>,
    n: usize,
    final_alpha_cumprod: f64,
    counter: usize,
    ets: Vec<Tensor>,
    cur_sample: Option<Tensor>,
}

impl Pndm {
    fn new(base: Base, c: &SchedulerConfig, n: usize) -> Result<Pndm, SchedulerError> {
        // A missing skip_prk_steps is taken as true (every SD config sets it, and A1111's
        // PLMS has no Runge-Kutta warm-up); an explicit false asks for steps we do not run.
        if c.skip_prk_steps == Some(false) {
            return Err(unsupported(base.kind, "skip_prk_steps = false"));
        }
        let spacing = base.spacing(c, Spacing::Leading)?;
        // `_timesteps` ascending, then [:-1] + [-2:-1] + [-1:], reversed.
        let mut asc = spaced_int(spacing, base.n_train, n, base.steps_offset);
        asc.reverse();
        let mut plms: Vec<i64> = asc[..asc.len() - 1].to_vec();
        if asc.len() >= 2 {
            plms.push(asc[asc.len() - 2]);
        }
        plms.push(asc[asc.len() - 1]);
        plms.reverse();
        let final_alpha_cumprod = if c.set_alpha_to_one.unwrap_or(false) {
            1.0
        } else {
            base.alphas_cumprod[0] as f64
        };
        Ok(Pndm {
            timesteps: plms.iter().map(|&t| t as f64).collect(),
            ts: plms,
            n,
            final_alpha_cumprod,
            counter: 0,
            ets: Vec::new(),
            cur_sample: None,
            base,
        })
    }

    fn prev_sample(&self, sample: &Tensor, t: i64, prev_t: i64, mo: &Tensor) -> Tensor {
        let a_t = self.base.ac(t);
        let a_prev = if prev_t >= 0 {
            self.base.ac(prev_t)
        } else {
            self.final_alpha_cumprod
        };
        let b_t = 1.0 - a_t;
        let b_prev = 1.0 - a_prev;
        let mo = match self.base.prediction {
            Prediction::Epsilon => mo.shallow_clone(),
            Prediction::V => mo * a_t.sqrt() + sample * b_t.sqrt(),
        };
        let sample_coeff = (a_prev / a_t).sqrt();
        let denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
        sample * sample_coeff - mo * ((a_prev - a_t) / denom)
    }
}

impl Scheduler for Pndm {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }
    fn order(&self) -> usize {
        1
    }
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    // diffusers' PNDMScheduler has no begin index: its step counter starts at 0 whatever
    // the first timestep is.
    fn set_begin_index(&mut self, _index: usize) {}
    fn scale_model_input(&self, sample: &Tensor, _index: usize) -> Tensor {
        float(sample)
    }
    fn step(
        &mut self,
        model_output: &Tensor,
        index: usize,
        sample: &Tensor,
        _noise: &mut dyn FnMut() -> Tensor,
    ) -> Tensor {
        let (mo, mut sample) = (float(model_output), float(sample));
        let ratio = (self.base.n_train / self.n) as i64;
        let mut t = self.ts[index];
        let mut prev_t = t - ratio;
        if self.counter != 1 {
            if self.ets.len() > 3 {
                self.ets.drain(..self.ets.len() - 3);
            }
            self.ets.push(mo.shallow_clone());
        } else {
            prev_t = t;
            t += ratio;
        }
        let e = &self.ets;
        let k = e.len();
        let mo = if k == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.shallow_clone());
            mo
        } else if k == 1 && self.counter == 1 {
            if let Some(cur) = self.cur_sample.take() {
                sample = cur;
            }
            (mo + &e[k - 1]) / 2.0
        } else if k == 2 {
            (&e[k - 1] * 3.0 - &e[k - 2]) / 2.0
        } else if k == 3 {
            (&e[k - 1] * 23.0 - &e[k - 2] * 16.0 + &e[k - 3] * 5.0) / 12.0
        } else {
            (&e[k - 1] * 55.0 - &e[k - 2] * 59.0 + &e[k - 3] * 37.0 - &e[k - 4] * 9.0)
                * (1.0 / 24.0)
        };
        let out = self.prev_sample(&sample, t, prev_t, &mo);
        self.counter += 1;
        out
    }
    fn add_noise(&self, original: &Tensor, noise: &Tensor, index: usize) -> Tensor {
        let a = self.base.ac(self.ts[index]);
        float(original) * a.sqrt() + float(noise) * (1.0 - a).sqrt()
    }
}

// ---------------------------------------------------------------------------------------------
// Sigma-space samplers: Euler, Euler Ancestral, LMS

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum KMethod {
    Euler,
    EulerAncestral,
    Lms,
}

struct KSampler {
    base: Base,
    method: KMethod,
    timesteps: Vec<f64>,
    /// float32 values, one more than timesteps (the final 0).
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
    derivatives: Vec<Tensor>,
}

impl KSampler {
    fn new(
        base: Base,
        c: &SchedulerConfig,
        n: usize,
        method: KMethod,
    ) -> Result<KSampler, SchedulerError> {
        let spacing = base.spacing(c, Spacing::Linspace)?;
        // EulerAncestralDiscreteScheduler has no use_karras_sigmas (diffusers ignores it).
        let karras_cfg = method != KMethod::EulerAncestral && c.use_karras_sigmas.unwrap_or(false);
        if method == KMethod::Euler
            && c.interpolation_type
                .as_deref()
                .is_some_and(|i| i != "linear")
        {
            return Err(unsupported(
                base.kind,
                "interpolation_type other than linear",
            ));
        }
        let n_train = base.n_train;
        // float32 timesteps, as numpy computes them.
        let mut timesteps: Vec<f64> = match spacing {
            Spacing::Linspace => np_linspace(0.0, (n_train - 1) as f64, n)
                .into_iter()
                .rev()
                .map(round_f32)
                .collect(),
            Spacing::Leading => {
                let ratio = (n_train / n) as f64;
                (0..n)
                    .rev()
                    .map(|i| round_f32(i as f64 * ratio) + base.steps_offset as f64)
                    .map(round_f32)
                    .collect()
            }
            Spacing::Trailing => np_arange(n_train as f64, 0.0, -(n_train as f64 / n as f64))
                .into_iter()
                .map(|v| round_f32(v.round_ties_even()) - 1.0)
                .map(round_f32)
                .collect(),
        };
        let train = base.train_sigmas();
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| np_interp(t, &train)).collect();
        if karras_cfg {
            let log_sigmas: Vec<f32> = train.iter().map(|s| s.ln()).collect();
            let (mut min, mut max) = (sigmas[sigmas.len() - 1], sigmas[0]);
            // LMS's own _convert_to_karras ignores the config's sigma_min/max.
            if method == KMethod::Euler {
                min = c.sigma_min.unwrap_or(min);
                max = c.sigma_max.unwrap_or(max);
            }
            sigmas = karras(min, max, n);
            timesteps = sigmas
                .iter()
                .map(|&s| round_f32(sigma_to_t(s, &log_sigmas)))
                .collect();
        }
        // Only EulerDiscreteScheduler has final_sigmas_type.
        let final_type = match method {
            KMethod::Euler => c.final_sigmas_type.as_deref().unwrap_or("zero"),
            _ => "zero",
        };
        let final_sigma = match final_type {
            "sigma_min" => {
                let a = base.alphas_cumprod[0];
                ((1.0 - a) / a).sqrt() as f64
            }
            "zero" => 0.0,
            other => {
                return Err(unsupported(
                    base.kind,
                    format!("final_sigmas_type {other:?}"),
                ))
            }
        };
        sigmas.push(final_sigma);
        let sigmas: Vec<f64> = sigmas.into_iter().map(round_f32).collect();
        let max = sigmas.iter().cloned().fold(f64::MIN, f64::max) as f32;
        let init_noise_sigma = match spacing {
            Spacing::Linspace | Spacing::Trailing => max as f64,
            Spacing::Leading => (max * max + 1.0).sqrt() as f64,
        };
        Ok(KSampler {
            base,
            method,
            timesteps,
            sigmas,
            init_noise_sigma,
            derivatives: Vec::new(),
        })
    }

    fn pred_original(&self, mo: &Tensor, sample: &Tensor, sigma: f64) -> Tensor {
        match self.base.prediction {
            Prediction::Epsilon => sample - mo * sigma,
            Prediction::V => {
                mo * (-sigma / (sigma * sigma + 1.0).sqrt()) + sample / (sigma * sigma + 1.0)
            }
        }
    }

    /// ∫ over [σ_t, σ_{t+1}] of the Lagrange basis polynomial `current` on σ_t, σ_{t-1}, …
    /// (diffusers integrates it numerically with scipy; 4-point Gauss-Legendre is exact here).
    fn lms_coefficient(&self, order: usize, t: usize, current: usize) -> f64 {
        let s = &self.sigmas;
        let basis = |tau: f64| {
            (0..order)
                .filter(|&k| k != current)
                .map(|k| (tau - s[t - k]) / (s[t - current] - s[t - k]))
                .product::<f64>()
        };
        const X: [f64; 4] = [
            -0.861_136_311_594_052_6,
            -0.339_981_043_584_856_3,
            0.339_981_043_584_856_3,
            0.861_136_311_594_052_6,
        ];
        const W: [f64; 4] = [
            0.347_854_845_137_453_9,
            0.652_145_154_862_546_1,
            0.652_145_154_862_546_1,
            0.347_854_845_137_453_9,
        ];
        let (a, b) = (s[t], s[t + 1]);
        let (half, mid) = ((b - a) / 2.0, (a + b) / 2.0);
        X.iter()
            .zip(W)
            .map(|(&x, w)| w * basis(mid + half * x))
            .sum::<f64>()
            * half
    }
}

impl Scheduler for KSampler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }
    fn order(&self) -> usize {
        1
    }
    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }
    fn set_begin_index(&mut self, _index: usize) {
        self.derivatives.clear();
    }
    fn scale_model_input(&self, sample: &Tensor, index: usize) -> Tensor {
        let sigma = self.sigmas[index] as f32;
        float(sample) / ((sigma * sigma + 1.0).sqrt() as f64)
    }
    fn step(
        &mut self,
        model_output: &Tensor,
        index: usize,
        sample: &Tensor,
        noise: &mut dyn FnMut() -> Tensor,
    ) -> Tensor {
        let (mo, sample) = (float(model_output), float(sample));
        let sigma = self.sigmas[index];
        let sigma_next = self.sigmas[index + 1];
        let x0 = self.pred_original(&mo, &sample, sigma);
        let derivative = (&sample - x0) / sigma;
        match self.method {
            KMethod::Euler => {
                let dt = round_f32(sigma_next - sigma);
                &sample + derivative * dt
            }
            KMethod::EulerAncestral => {
                let (from, to) = (sigma, sigma_next);
                let up = (to * to * (from * from - to * to) / (from * from)).sqrt();
                let down = (to * to - up * up).max(0.0).sqrt();
                let prev = &sample + derivative * (down - sigma);
                let n = float(&noise()).to_device(sample.device());
                prev + n * up
            }
            KMethod::Lms => {
                self.derivatives.push(derivative);
                if self.derivatives.len() > 4 {
                    let _ = self.derivatives.remove(0);
                }
                let order = (index + 1).min(4);
                let coefficients: Vec<f64> = (0..order)
                    .map(|current| self.lms_coefficient(order, index, current))
                    .collect();
                let terms: Vec<Tensor> = coefficients
                    .iter()
                    .zip(self.derivatives.iter().rev())
                    .map(|(c, d)| d * *c)
                    .collect();
                let ones = vec![1.0; terms.len()];
                sample + weighted_sum(&ones, &terms)
            }
        }
    }
    fn add_noise(&self, original: &Tensor, noise: &Tensor, index: usize) -> Tensor {
        float(original) + float(noise) * self.sigmas[index]
    }
}

// ---------------------------------------------------------------------------------------------
// Multistep solvers in λ = log(α/σ): DPM-Solver++ (2M) and UniPC (bh2, predict x0)

struct Multistep {
    base: Base,
    kind: SchedulerKind,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    solver_order: usize,
    lower_order_final: bool,
    euler_at_final: bool,
    final_zero: bool,
    lower_order_nums: usize,
    /// Converted (x0) model outputs, newest last; at most `solver_order`.
    outputs: Vec<Tensor>,
    /// UniPC: the sample the last predictor started from, and the predictor's order.
    last_sample: Option<Tensor>,
    this_order: usize,
}

/// (α_t, σ_t) of a sigma in the variance-exploding parametrisation.
fn alpha_sigma(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

fn lambda(sigma: f64) -> f64 {
    let (a, s) = alpha_sigma(sigma);
    a.ln() - s.ln()
}

impl Multistep {
    fn new(
        base: Base,
        c: &SchedulerConfig,
        n: usize,
        kind: SchedulerKind,
    ) -> Result<Multistep, SchedulerError> {
        let spacing = base.spacing(c, Spacing::Linspace)?;
        let karras_on = match kind {
            SchedulerKind::DpmPp2M => false,
            SchedulerKind::DpmPp2MKarras => true,
            _ => c.use_karras_sigmas.unwrap_or(false),
        };
        let final_zero = match c.final_sigmas_type.as_deref().unwrap_or("zero") {
            "zero" => true,
            "sigma_min" => false,
            other => return Err(unsupported(kind, format!("final_sigmas_type {other:?}"))),
        };
        let n_train = base.n_train;
        // lambda_min_clipped defaults to -inf, so the last timestep is num_train_timesteps.
        let last = n_train as f64;
        let mut ts: Vec<i64> = match spacing {
            Spacing::Linspace => {
                let mut v: Vec<i64> = np_linspace(0.0, last - 1.0, n + 1)
                    .into_iter()
                    .map(|x| x.round_ties_even() as i64)
                    .collect();
                v.reverse();
                v.pop();
                v
            }
            Spacing::Leading => {
                let ratio = n_train as i64 / (n as i64 + 1);
                (1..=n as i64)
                    .rev()
                    .map(|i| i * ratio + base.steps_offset)
                    .collect()
            }
            Spacing::Trailing => np_arange(last, 0.0, -(n_train as f64 / n as f64))
                .into_iter()
                .map(|v| v.round_ties_even() as i64 - 1)
                .collect(),
        };
        let train = base.train_sigmas();
        let mut sigmas: Vec<f64>;
        if karras_on {
            let log_sigmas: Vec<f32> = train.iter().map(|s| s.ln()).collect();
            // in_sigmas = flipped training sigmas: min = train[0], max = train[last]. Only
            // UniPC has sigma_min/sigma_max config keys.
            let (mut min, mut max) = (train[0] as f64, train[train.len() - 1] as f64);
            if kind == SchedulerKind::UniPc {
                min = c.sigma_min.unwrap_or(min);
                max = c.sigma_max.unwrap_or(max);
            }
            sigmas = karras(min, max, n);
            ts = sigmas
                .iter()
                .map(|&s| sigma_to_t(s, &log_sigmas).round_ties_even() as i64)
                .collect();
        } else {
            sigmas = ts.iter().map(|&t| np_interp(t as f64, &train)).collect();
        }
        let last_sigma = if final_zero {
            0.0
        } else if karras_on && kind == SchedulerKind::UniPc {
            sigmas[sigmas.len() - 1]
        } else {
            let a = base.alphas_cumprod[0];
            ((1.0 - a) / a).sqrt() as f64
        };
        sigmas.push(last_sigma);
        let sigmas = sigmas.into_iter().map(round_f32).collect();
        Ok(Multistep {
            kind,
            timesteps: ts.iter().map(|&t| t as f64).collect(),
            sigmas,
            solver_order: 2,
            lower_order_final: c.lower_order_final.unwrap_or(true),
            euler_at_final: c.euler_at_final.unwrap_or(false),
            final_zero,
            lower_order_nums: 0,
            outputs: Vec::new(),
            last_sample: None,
            this_order: 1,
            base,
        })
    }

    fn push_output(&mut self, x0: Tensor) {
        self.outputs.push(x0);
        if self.outputs.len() > self.solver_order {
            let _ = self.outputs.remove(0);
        }
    }

    fn dpm_step(&mut self, x0: Tensor, index: usize, sample: &Tensor) -> Tensor {
        let len = self.timesteps.len();
        let lower_order_final = index == len - 1
            && (self.euler_at_final || (self.lower_order_final && len < 15) || self.final_zero);
        self.push_output(x0);
        let (s_t, s_s0) = (self.sigmas[index + 1], self.sigmas[index]);
        let (alpha_t, sigma_t) = alpha_sigma(s_t);
        let (_, sigma_s0) = alpha_sigma(s_s0);
        let h = lambda(s_t) - lambda(s_s0);
        let m0 = &self.outputs[self.outputs.len() - 1];
        let out = if self.lower_order_nums < 1 || lower_order_final || self.outputs.len() < 2 {
            sample * (sigma_t / sigma_s0) - m0 * (alpha_t * ((-h).exp() - 1.0))
        } else {
            let m1 = &self.outputs[self.outputs.len() - 2];
            let h0 = lambda(s_s0) - lambda(self.sigmas[index - 1]);
            let r0 = h0 / h;
            let d1 = (m0 - m1) * (1.0 / r0);
            sample * (sigma_t / sigma_s0)
                - m0 * (alpha_t * ((-h).exp() - 1.0))
                - d1 * (0.5 * (alpha_t * ((-h).exp() - 1.0)))
        };
        if self.lower_order_nums < self.solver_order {
            self.lower_order_nums += 1;
        }
        out
    }

    /// UniPC's B(h) coefficients: rows `rks^(i-1)` and `b_i`, for `order` terms (bh2, x0).
    fn unipc_system(h: f64, rks: &[f64], order: usize) -> (Vec<Vec<f64>>, Vec<f64>, f64, f64) {
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1.0;
        let b_h = hh.exp_m1();
        let mut r = Vec::new();
        let mut b = Vec::new();
        for i in 1..=order {
            r.push(rks.iter().map(|rk| rk.powi(i as i32 - 1)).collect());
            b.push(h_phi_k * factorial / b_h);
            factorial *= (i + 1) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }
        (r, b, h_phi_1, b_h)
    }

    /// UniPC predictor (`multistep_uni_p_bh_update`).
    fn unipc_predict(&self, index: usize, sample: &Tensor, order: usize) -> Tensor {
        let m0 = &self.outputs[self.outputs.len() - 1];
        let (s_t, s_s0) = (self.sigmas[index + 1], self.sigmas[index]);
        let (alpha_t, sigma_t) = alpha_sigma(s_t);
        let (_, sigma_s0) = alpha_sigma(s_s0);
        let lambda_s0 = lambda(s_s0);
        let h = lambda(s_t) - lambda_s0;
        let mut rks = Vec::new();
        let mut d1s = Vec::new();
        for i in 1..order {
            let mi = &self.outputs[self.outputs.len() - 1 - i];
            let rk = (lambda(self.sigmas[index - i]) - lambda_s0) / h;
            rks.push(rk);
            d1s.push((mi - m0) / rk);
        }
        rks.push(1.0);
        let (r, b, h_phi_1, b_h) = Self::unipc_system(h, &rks, order);
        let x_t_ = sample * (sigma_t / sigma_s0) - m0 * (alpha_t * h_phi_1);
        if d1s.is_empty() {
            return x_t_;
        }
        let rhos: Vec<f64> = if order == 2 {
            vec![0.5]
        } else {
            solve(&sub_matrix(&r, order - 1), &b[..order - 1])
        };
        let pred_res = weighted_sum(&rhos, &d1s);
        x_t_ - pred_res * (alpha_t * b_h)
    }

    /// UniPC corrector (`multistep_uni_c_bh_update`) of `this_sample` given its model output.
    fn unipc_correct(
        &self,
        index: usize,
        model_t: &Tensor,
        last_sample: &Tensor,
        order: usize,
    ) -> Tensor {
        let m0 = &self.outputs[self.outputs.len() - 1];
        let (s_t, s_s0) = (self.sigmas[index], self.sigmas[index - 1]);
        let (alpha_t, sigma_t) = alpha_sigma(s_t);
        let (_, sigma_s0) = alpha_sigma(s_s0);
        let lambda_s0 = lambda(s_s0);
        let h = lambda(s_t) - lambda_s0;
        let mut rks = Vec::new();
        let mut d1s = Vec::new();
        for i in 1..order {
            let mi = &self.outputs[self.outputs.len() - 1 - i];
            let rk = (lambda(self.sigmas[index - (i + 1)]) - lambda_s0) / h;
            rks.push(rk);
            d1s.push((mi - m0) / rk);
        }
        rks.push(1.0);
        let (r, b, h_phi_1, b_h) = Self::unipc_system(h, &rks, order);
        let rhos_c: Vec<f64> = if order == 1 { vec![0.5] } else { solve(&r, &b) };
        let x_t_ = last_sample * (sigma_t / sigma_s0) - m0 * (alpha_t * h_phi_1);
        let d1_t = model_t - m0;
        let last = rhos_c[rhos_c.len() - 1];
        let res = if d1s.is_empty() {
            d1_t * last
        } else {
            weighted_sum(&rhos_c[..rhos_c.len() - 1], &d1s) + d1_t * last
        };
        x_t_ - res * (alpha_t * b_h)
    }

    fn unipc_step(&mut self, x0: Tensor, index: usize, sample: &Tensor) -> Tensor {
        let mut sample = sample.shallow_clone();
        if index > 0 {
            if let Some(last) = self.last_sample.take() {
                sample = self.unipc_correct(index, &x0, &last, self.this_order);
            }
        }
        self.push_output(x0);
        let this_order = if self.lower_order_final {
            self.solver_order.min(self.timesteps.len() - index)
        } else {
            self.solver_order
        };
        self.this_order = this_order.min(self.lower_order_nums + 1).max(1);
        self.last_sample = Some(sample.shallow_clone());
        let out = self.unipc_predict(index, &sample, self.this_order);
        if self.lower_order_nums < self.solver_order {
            self.lower_order_nums += 1;
        }
        out
    }
}

fn sub_matrix(r: &[Vec<f64>], n: usize) -> Vec<Vec<f64>> {
    r[..n].iter().map(|row| row[..n].to_vec()).collect()
}

/// Gaussian elimination with partial pivoting on a tiny system.
fn solve(a: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let mut m: Vec<Vec<f64>> = a
        .iter()
        .zip(b)
        .map(|(row, &bi)| {
            let mut r = row[..n].to_vec();
            r.push(bi);
            r
        })
        .collect();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))
            .unwrap_or(col);
        m.swap(col, pivot);
        let (top, bottom) = m.split_at_mut(col + 1);
        let pivot_row = &top[col];
        for row in bottom.iter_mut() {
            let f = row[col] / pivot_row[col];
            for (x, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
        }
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| m[i][k] * x[k]).sum();
        x[i] = (m[i][n] - s) / m[i][i];
    }
    x
}

fn weighted_sum(weights: &[f64], tensors: &[Tensor]) -> Tensor {
    let mut acc = &tensors[0] * weights[0];
    for (w, t) in weights.iter().zip(tensors).skip(1) {
        acc += t * *w;
    }
    acc
}

impl Scheduler for Multistep {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }
    fn order(&self) -> usize {
        1
    }
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    fn set_begin_index(&mut self, _index: usize) {
        self.outputs.clear();
        self.lower_order_nums = 0;
        self.last_sample = None;
    }
    fn scale_model_input(&self, sample: &Tensor, _index: usize) -> Tensor {
        float(sample)
    }
    fn step(
        &mut self,
        model_output: &Tensor,
        index: usize,
        sample: &Tensor,
        _noise: &mut dyn FnMut() -> Tensor,
    ) -> Tensor {
        let (mo, sample) = (float(model_output), float(sample));
        let (alpha, sigma) = alpha_sigma(self.sigmas[index]);
        let x0 = x0_from(self.base.prediction, &mo, &sample, alpha, sigma);
        if self.kind == SchedulerKind::UniPc {
            self.unipc_step(x0, index, &sample)
        } else {
            self.dpm_step(x0, index, &sample)
        }
    }
    fn add_noise(&self, original: &Tensor, noise: &Tensor, index: usize) -> Tensor {
        let (alpha, sigma) = alpha_sigma(self.sigmas[index]);
        float(original) * alpha + float(noise) * sigma
    }
}

// ---------------------------------------------------------------------------------------------
// DPM++ SDE (Karras sigmas): diffusers' DPMSolverSDEScheduler, two model calls per step.
// Noise source: diffusers (and A1111) sample a torchsde Brownian tree; here every stochastic
// sub-step takes a fresh standard normal draw from `noise()` (the item's CPU generator stream),
// so the sampler is the same in distribution but images differ from theirs for a seed.

struct SdeKarras {
    base: Base,
    /// [t0, s0, t1, s1, …, t_{n-1}]: s_i the midpoint timestep between t_i and t_{i+1}.
    timesteps: Vec<f64>,
    /// float32 values: [σ0, σ1, σ1, σ2, σ2, …, σ_{n-1}, σ_{n-1}, 0].
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
    /// The first-order sub-step's input sample while the second sub-step is pending.
    first: Option<Tensor>,
    mid_point_sigma: f64,
}

impl SdeKarras {
    fn new(base: Base, c: &SchedulerConfig, n: usize) -> Result<SdeKarras, SchedulerError> {
        let spacing = base.spacing(c, Spacing::Linspace)?;
        let n_train = base.n_train;
        let ts: Vec<f64> = match spacing {
            Spacing::Linspace => np_linspace(0.0, (n_train - 1) as f64, n)
                .into_iter()
                .rev()
                .collect(),
            Spacing::Leading => {
                let ratio = (n_train / n) as f64;
                (0..n)
                    .rev()
                    .map(|i| i as f64 * ratio + base.steps_offset as f64)
                    .collect()
            }
            Spacing::Trailing => np_arange(n_train as f64, 0.0, -(n_train as f64 / n as f64))
                .into_iter()
                .map(|v| v.round_ties_even() - 1.0)
                .collect(),
        };
        let train = base.train_sigmas();
        let log_sigmas: Vec<f32> = train.iter().map(|s| s.ln()).collect();
        let interp: Vec<f64> = ts.iter().map(|&t| np_interp(t, &train)).collect();
        let karras_sigmas = karras(interp[interp.len() - 1], interp[0], n);
        let main_ts: Vec<f64> = karras_sigmas
            .iter()
            .map(|&s| sigma_to_t(s, &log_sigmas))
            .collect();
        let second: Vec<f64> = karras_sigmas
            .windows(2)
            .map(|w| {
                let (t0, t1) = (-w[0].ln(), -w[1].ln());
                sigma_to_t((-(t0 + (t1 - t0) * 0.5)).exp(), &log_sigmas)
            })
            .collect();
        let mut timesteps = vec![main_ts[0]];
        for (s, t) in second.iter().zip(&main_ts[1..]) {
            timesteps.push(*s);
            timesteps.push(*t);
        }
        let f: Vec<f64> = karras_sigmas.into_iter().map(round_f32).collect();
        let mut sigmas = vec![f[0]];
        for &s in &f[1..] {
            sigmas.push(s);
            sigmas.push(s);
        }
        sigmas.push(0.0);
        let max = sigmas.iter().cloned().fold(f64::MIN, f64::max) as f32;
        let init_noise_sigma = match spacing {
            Spacing::Linspace | Spacing::Trailing => max as f64,
            Spacing::Leading => (max * max + 1.0).sqrt() as f64,
        };
        Ok(SdeKarras {
            base,
            timesteps,
            sigmas,
            init_noise_sigma,
            first: None,
            mid_point_sigma: 0.0,
        })
    }
}

impl Scheduler for SdeKarras {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }
    fn order(&self) -> usize {
        2
    }
    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }
    fn set_begin_index(&mut self, _index: usize) {
        self.first = None;
    }
    fn scale_model_input(&self, sample: &Tensor, index: usize) -> Tensor {
        let sigma = if self.first.is_none() {
            self.sigmas[index]
        } else {
            self.mid_point_sigma
        } as f32;
        float(sample) / ((sigma * sigma + 1.0).sqrt() as f64)
    }
    fn step(
        &mut self,
        model_output: &Tensor,
        index: usize,
        sample: &Tensor,
        noise: &mut dyn FnMut() -> Tensor,
    ) -> Tensor {
        let (mo, mut sample) = (float(model_output), float(sample));
        let first_order = self.first.is_none();
        let (sigma, sigma_next) = if first_order {
            (self.sigmas[index], self.sigmas[index + 1])
        } else {
            (self.sigmas[index - 1], self.sigmas[index])
        };
        let sigma_fn = |t: f64| (-t).exp();
        let t_fn = |s: f64| -s.ln();
        let (t, mut t_next) = (t_fn(sigma), t_fn(sigma_next));
        let t_proposed = t + (t_next - t) * 0.5;
        let sigma_input = if first_order {
            sigma
        } else {
            sigma_fn(t_proposed)
        };
        let x0 = match self.base.prediction {
            Prediction::Epsilon => &sample - &mo * sigma_input,
            Prediction::V => {
                let s2 = sigma_input * sigma_input + 1.0;
                &mo * (-sigma_input / s2.sqrt()) + &sample / s2
            }
        };
        if sigma_next == 0.0 {
            let derivative = (&sample - x0) / sigma;
            return &sample + derivative * (sigma_next - sigma);
        }
        if first_order {
            t_next = t_proposed;
        } else if let Some(first) = self.first.take() {
            sample = first;
        }
        let (from, to) = (sigma_fn(t), sigma_fn(t_next));
        let up = to.min((to * to * (from * from - to * to) / (from * from)).sqrt());
        let down = (to * to - up * up).sqrt();
        let ancestral_t = t_fn(down);
        let prev =
            &sample * (sigma_fn(ancestral_t) / sigma_fn(t)) - x0 * (t - ancestral_t).exp_m1();
        let n = float(&noise()).to_device(prev.device());
        let prev = prev + n * up;
        if first_order {
            self.first = Some(sample);
            self.mid_point_sigma = sigma_fn(t_next);
        }
        prev
    }
    fn add_noise(&self, original: &Tensor, noise: &Tensor, index: usize) -> Tensor {
        float(original) + float(noise) * self.sigmas[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_helpers() {
        assert_eq!(np_linspace(0.0, 1.0, 1), vec![0.0]);
        assert_eq!(np_linspace(0.0, 999.0, 3), vec![0.0, 499.5, 999.0]);
        assert_eq!(
            np_arange(1000.0, 0.0, -250.0),
            vec![1000.0, 750.0, 500.0, 250.0]
        );
        let x = solve(&[vec![2.0, 1.0], vec![1.0, 3.0]], &[3.0, 5.0]);
        assert!((x[0] - 0.8).abs() < 1e-12 && (x[1] - 1.4).abs() < 1e-12);
    }
}
