//! DDIM (eta = 0, as diffusers' pipelines run it)
use tch::Tensor;

use super::tables::{float, spaced_int, Base, Prediction, Spacing};
use super::{Scheduler, SchedulerConfig, SchedulerError};

pub(super) struct Ddim {
    base: Base,
    timesteps: Vec<f64>,
    ts: Vec<i64>,
    n: usize,
    clip: Option<f64>,
    final_alpha_cumprod: f64,
}

impl Ddim {
    pub(super) fn new(base: Base, c: &SchedulerConfig, n: usize) -> Result<Ddim, SchedulerError> {
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
