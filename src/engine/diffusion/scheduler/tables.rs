//! Shared tables: the training schedule every scheduler starts from (betas, cumulative
//! alphas) and numpy's arithmetic, reproduced where diffusers relies on it for the timesteps.
use tch::{Device, Kind, Tensor};

use super::{SchedulerConfig, SchedulerError, SchedulerKind};

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Prediction {
    Epsilon,
    V,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Spacing {
    Linspace,
    Leading,
    Trailing,
}

/// What every scheduler needs: the training schedule and the shared config values.
pub(super) struct Base {
    pub(super) kind: SchedulerKind,
    pub(super) n_train: usize,
    pub(super) prediction: Prediction,
    pub(super) steps_offset: i64,
    /// Cumulative alphas in float32, exactly as torch computes them.
    pub(super) alphas_cumprod: Vec<f32>,
}

pub(super) fn unsupported(kind: SchedulerKind, what: impl Into<String>) -> SchedulerError {
    SchedulerError::Unsupported {
        kind: kind.name(),
        what: what.into(),
    }
}

impl Base {
    pub(super) fn new(kind: SchedulerKind, c: &SchedulerConfig) -> Result<Base, SchedulerError> {
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

    pub(super) fn spacing(
        &self,
        c: &SchedulerConfig,
        default: Spacing,
    ) -> Result<Spacing, SchedulerError> {
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
    pub(super) fn train_sigmas(&self) -> Vec<f32> {
        self.alphas_cumprod
            .iter()
            .map(|&a| ((1.0f32 - a) / a).sqrt())
            .collect()
    }

    pub(super) fn ac(&self, t: i64) -> f64 {
        self.alphas_cumprod[t.clamp(0, self.n_train as i64 - 1) as usize] as f64
    }
}

pub(super) fn alphas_cumprod(
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
pub(super) fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
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
pub(super) fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil().max(0.0) as usize;
    let delta = (start + step) - start;
    (0..len).map(|i| start + i as f64 * delta).collect()
}

/// `np.interp(x, arange(len(fp)), fp)`.
pub(super) fn np_interp(x: f64, fp: &[f32]) -> f64 {
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
pub(super) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
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
pub(super) fn karras(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let min_inv = sigma_min.powf(1.0 / rho);
    let max_inv = sigma_max.powf(1.0 / rho);
    np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
        .collect()
}

pub(super) fn round_f32(v: f64) -> f64 {
    v as f32 as f64
}

/// The integer timesteps of DDIM/PNDM-style `set_timesteps`, descending.
pub(super) fn spaced_int(spacing: Spacing, n_train: usize, n: usize, offset: i64) -> Vec<i64> {
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

pub(super) fn x0_from(
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

pub(super) fn float(t: &Tensor) -> Tensor {
    t.to_kind(Kind::Float)
}

pub(super) fn weighted_sum(weights: &[f64], tensors: &[Tensor]) -> Tensor {
    let mut acc = &tensors[0] * weights[0];
    for (w, t) in weights.iter().zip(tensors).skip(1) {
        acc += t * *w;
    }
    acc
}
