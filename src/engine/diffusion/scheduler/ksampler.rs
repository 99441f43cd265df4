//! Sigma-space samplers: Euler, Euler Ancestral, LMS
use tch::Tensor;

use super::tables::{
    float, karras, np_arange, np_interp, np_linspace, round_f32, sigma_to_t, unsupported,
    weighted_sum, Base, Prediction, Spacing,
};
use super::{Scheduler, SchedulerConfig, SchedulerError};

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum KMethod {
    Euler,
    EulerAncestral,
    Lms,
}

pub(super) struct KSampler {
    base: Base,
    method: KMethod,
    timesteps: Vec<f64>,
    /// float32 values, one more than timesteps (the final 0).
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
    derivatives: Vec<Tensor>,
}

impl KSampler {
    pub(super) fn new(
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
