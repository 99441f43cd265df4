//! Noise schedulers with diffusers' numerics (the version pinned in the venv): DDIM, Euler,
//! Euler Ancestral, DPM++ 2M (plain and Karras), DPM++ SDE Karras (with Gaussian noise in
//! place of torchsde's Brownian tree), UniPC, LMS and PNDM (PLMS steps).
//!
//! Tables (betas, cumulative alphas, sigmas) are computed the way diffusers computes them:
//! betas and their cumulative product in float32 through libtorch itself, sigmas and
//! timesteps with numpy's rounding rules. Per-step scalar coefficients are computed in f64;
//! the tensors stay float32 on the sample's device.
//!
//! One file per family: `ddim`, `pndm`, `ksampler` (Euler, Euler Ancestral, LMS), `multistep`
//! (DPM++ 2M plain and Karras, UniPC), `sde` (DPM++ SDE Karras); `tables` holds the shared
//! training schedule and numpy helpers.
mod ddim;
mod ksampler;
mod multistep;
mod pndm;
mod sde;
mod tables;

use ddim::Ddim;
use ksampler::{KMethod, KSampler};
use multistep::Multistep;
use pndm::Pndm;
use sde::SdeKarras;
use serde::Deserialize;
use tables::Base;
use tch::Tensor;

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

#[cfg(test)]
mod tests {
    use super::multistep::solve;
    use super::tables::{np_arange, np_linspace};

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
