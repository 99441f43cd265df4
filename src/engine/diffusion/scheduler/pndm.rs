//! PNDM with skip_prk_steps (PLMS only), as the SD configs set it
use tch::Tensor;

use super::tables::{float, spaced_int, unsupported, Base, Prediction, Spacing};
use super::{Scheduler, SchedulerConfig, SchedulerError};

pub(super) struct Pndm {
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
    pub(super) fn new(base: Base, c: &SchedulerConfig, n: usize) -> Result<Pndm, SchedulerError> {
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
