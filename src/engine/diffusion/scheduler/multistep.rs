//! Multistep solvers in λ = log(α/σ): DPM-Solver++ (2M) and UniPC (bh2, predict x0)
use tch::Tensor;

use super::tables::{
    float, karras, np_arange, np_interp, np_linspace, round_f32, sigma_to_t, unsupported,
    weighted_sum, x0_from, Base, Spacing,
};
use super::{Scheduler, SchedulerConfig, SchedulerError, SchedulerKind};

pub(super) struct Multistep {
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
    pub(super) fn new(
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
pub(super) fn solve(a: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
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
