//! DPM++ SDE (Karras sigmas): diffusers' DPMSolverSDEScheduler, two model calls per step.
//! Noise source: diffusers (and A1111) sample a torchsde Brownian tree; here every stochastic
//! sub-step takes a fresh standard normal draw from `noise()` (the item's CPU generator stream),
//! so the sampler is the same in distribution but images differ from theirs for a seed.
use tch::Tensor;

use super::tables::{
    float, karras, np_arange, np_interp, np_linspace, round_f32, sigma_to_t, Base, Prediction,
    Spacing,
};
use super::{Scheduler, SchedulerConfig, SchedulerError};

pub(super) struct SdeKarras {
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
    pub(super) fn new(
        base: Base,
        c: &SchedulerConfig,
        n: usize,
    ) -> Result<SdeKarras, SchedulerError> {
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
