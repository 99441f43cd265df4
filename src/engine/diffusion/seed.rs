//! Seeds and noise: one torch CPU generator stream per batch item, drawing exactly what
//! diffusers draws with `generator=[torch.Generator("cpu").manual_seed(s) for s in seeds]`
//! (and what A1111 draws with "RNG: CPU"), plus A1111's variation seeds (slerp).
//!
//! tch has no Generator object, only the global CPU generator (`tch::manual_seed`). A stream
//! is therefore replayed: re-seed, then redraw what the stream already gave. torch's CPU
//! normal sampler consumes its generator in blocks of 16 values, so a stream whose draws all
//! have a multiple of 16 values can be replayed with one draw of the total, and can pre-draw
//! ahead; other sizes replay the recorded draws one by one.
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

use tch::{Device, Kind, Tensor};

/// The global CPU generator is shared by every thread; streams take turns on it.
static GLOBAL_RNG: Mutex<()> = Mutex::new(());

/// `seed < 0`: a random seed in A1111's range (0..2^32-1); otherwise the seed itself.
pub fn resolve_seed(seed: i64) -> u64 {
    if seed >= 0 {
        return seed as u64;
    }
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.finish() % 4_294_967_294
}

/// A1111's variation ("subseed"): noise of `seeds[i]` (0 past the end, as A1111) is slerped
/// into item i's initial noise with weight `strength`.
#[derive(Clone, Debug)]
pub struct Variation {
    pub seeds: Vec<u64>,
    pub strength: f64,
}

/// One generator stream.
struct Stream {
    seed: u64,
    /// Sizes of the draws handed out so far, in order.
    consumed: Vec<i64>,
    /// Values generated past the consumed ones (only while every draw is a multiple of 16).
    ahead: Option<Tensor>,
    /// Total values generated (consumed + ahead) when the stream is block-aligned.
    generated: i64,
}

fn aligned(n: i64) -> bool {
    n >= 16 && n % 16 == 0
}

impl Stream {
    fn new(seed: u64) -> Stream {
        Stream {
            seed,
            consumed: Vec::new(),
            ahead: None,
            generated: 0,
        }
    }

    fn all_aligned(&self) -> bool {
        self.consumed.iter().all(|&n| aligned(n))
    }

    /// The next `n` values of this stream (1-D, float32, CPU).
    fn next(&mut self, n: i64) -> Tensor {
        let opts = (Kind::Float, Device::Cpu);
        let out = if aligned(n) && self.all_aligned() {
            let have = self.ahead.as_ref().map_or(0, |t| t.size()[0]);
            if have < n {
                // Re-seed, skip what was generated, and generate at least as much again so
                // that replays stay linear in the total drawn.
                let more = (n - have).max(self.generated);
                let _guard = GLOBAL_RNG.lock().unwrap_or_else(|e| e.into_inner());
                tch::manual_seed(self.seed as i64);
                if self.generated > 0 {
                    let _ = Tensor::randn([self.generated], opts);
                }
                let fresh = Tensor::randn([more], opts);
                self.generated += more;
                self.ahead = Some(match self.ahead.take() {
                    Some(a) => Tensor::cat(&[a, fresh], 0),
                    None => fresh,
                });
            }
            let ahead = self
                .ahead
                .take()
                .unwrap_or_else(|| Tensor::zeros([0], opts));
            let total = ahead.size()[0];
            let out = ahead.narrow(0, 0, n);
            if total > n {
                self.ahead = Some(ahead.narrow(0, n, total - n));
            }
            out
        } else {
            let _guard = GLOBAL_RNG.lock().unwrap_or_else(|e| e.into_inner());
            tch::manual_seed(self.seed as i64);
            for &m in &self.consumed {
                let _ = Tensor::randn([m], opts);
            }
            self.ahead = None;
            Tensor::randn([n], opts)
        };
        self.consumed.push(n);
        out
    }
}

/// Noise for a batch: item i draws from its own stream seeded `seeds[i]`.
pub struct Noise {
    streams: Vec<Stream>,
    variation: Option<Variation>,
}

impl Noise {
    /// `seeds`: one per batch item (batch seeds are seed+i, chosen by the caller).
    pub fn new(seeds: Vec<u64>, variation: Option<Variation>) -> Noise {
        Noise {
            streams: seeds.into_iter().map(Stream::new).collect(),
            variation,
        }
    }

    pub fn seeds(&self) -> Vec<u64> {
        self.streams.iter().map(|s| s.seed).collect()
    }

    /// Next draw from every item's stream, cat'ed to [B, ...shape] on the CPU (float32):
    /// exactly what diffusers' `randn_tensor(shape, generator=[CPU generators])` draws.
    pub fn draw(&mut self, shape_per_item: &[i64]) -> Tensor {
        let n: i64 = shape_per_item.iter().product();
        let mut shape = vec![1];
        shape.extend_from_slice(shape_per_item);
        let items: Vec<Tensor> = self
            .streams
            .iter_mut()
            .map(|s| s.next(n).reshape(&shape))
            .collect();
        Tensor::cat(&items, 0)
    }

    /// The initial latents: like `draw()`, slerped with the variation seeds' noise when set
    /// (A1111's `ImageRNG.first`).
    pub fn initial(&mut self, shape_per_item: &[i64]) -> Tensor {
        let x = self.draw(shape_per_item);
        let Some(v) = self.variation.as_ref().filter(|v| v.strength != 0.0) else {
            return x;
        };
        let n: i64 = shape_per_item.iter().product();
        let items: Vec<Tensor> = (0..self.streams.len())
            .map(|i| {
                let sub_seed = v.seeds.get(i).copied().unwrap_or(0);
                let sub = Stream::new(sub_seed).next(n).reshape(shape_per_item);
                slerp(v.strength, &x.get(i as i64), &sub).unsqueeze(0)
            })
            .collect();
        Tensor::cat(&items, 0)
    }
}

/// A1111's `slerp(val, low, high)` on one item's [C, H, W] noise: norms along dim 1, and
/// its (inverted) linear fallback when the two are nearly parallel.
pub fn slerp(val: f64, low: &Tensor, high: &Tensor) -> Tensor {
    let dim: &[i64] = &[1];
    let low_norm = low / low.norm_scalaropt_dim(2, dim, true);
    let high_norm = high / high.norm_scalaropt_dim(2, dim, true);
    let dot = (low_norm * high_norm).sum_dim_intlist(dim, false, Kind::Float);
    if dot.mean(Kind::Float).double_value(&[]) > 0.9995 {
        return low * val + high * (1.0 - val);
    }
    let omega = dot.acos();
    let so = omega.sin();
    let a = ((&omega * (1.0 - val)).sin() / &so).unsqueeze(1);
    let b = ((&omega * val).sin() / &so).unsqueeze(1);
    a * low + b * high
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_seed_keeps_given_and_picks_in_range() {
        assert_eq!(resolve_seed(42), 42);
        assert!(resolve_seed(-1) < 4_294_967_294);
    }

    #[test]
    fn pre_drawn_and_replayed_streams_agree() {
        // Aligned sizes take the pre-draw path, an odd size forces a replay.
        let mut a = Noise::new(vec![7], None);
        let first = a.draw(&[4, 8, 8]);
        let second = a.draw(&[4, 8, 8]);
        let odd = a.draw(&[3, 5]);
        let after = a.draw(&[4, 8, 8]);
        let mut b = Noise::new(vec![7], None);
        let all = b.draw(&[4 * 8 * 8 * 2]);
        assert!(first
            .reshape([-1])
            .equal(&all.reshape([-1]).narrow(0, 0, 256)));
        assert!(second
            .reshape([-1])
            .equal(&all.reshape([-1]).narrow(0, 256, 256)));
        assert_eq!(odd.size(), vec![1, 3, 5]);
        assert_eq!(after.size(), vec![1, 4, 8, 8]);
    }
}
