//! Parity of the schedulers and the noise streams with diffusers / torch.
//!
//! tools/export/refs/sd_scheduler_ref.py runs diffusers' schedulers (the installed version) on a
//! fixed fake model from CPU-generator noise and records every step; these tests run the same
//! loop in Rust. Tolerance: each step's sample must agree to 5e-6 of that step's largest
//! magnitude. Both sides compute in float32 tensors; diffusers evaluates the per-step scalar
//! coefficients as float32 0-d tensors where we use f64 (and UniPC solves its small system in
//! float32), so differences are float32 rounding: ~1e-7 per step, under 1e-6 after 25 steps
//! (measured worst: 7.7e-7, DPM++ 2M Karras img2img). Noise draws must be bit-identical (same
//! libtorch generator).
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use atelier::engine::diffusion::scheduler::{build, SchedulerConfig, SchedulerKind};
use atelier::engine::diffusion::seed::{Noise, Variation};
use serde_json::Value;
use tch::Tensor;

const REL_TOL: f64 = 5e-6;

fn refs() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(common::python())
            .arg(common::root().join("tools/export/refs/sd_scheduler_ref.py"))
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sd_scheduler_ref.py failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .path()
}

fn meta() -> Value {
    serde_json::from_str(&std::fs::read_to_string(refs().join("cases.json")).unwrap()).unwrap()
}

fn load(path: PathBuf) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .collect()
}

fn fake_model(x: &Tensor, t: f64) -> Tensor {
    (x * 0.5).tanh() * (0.8 + 0.2 * (t / 250.0).cos())
}

/// max |a - b| / max(max |b|, 1e-3)
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let diff = (a - b).abs().max().double_value(&[]);
    let scale = b.abs().max().double_value(&[]).max(1e-3);
    diff / scale
}

fn run_case(case: &Value) -> Result<f64, String> {
    let name = case["name"].as_str().unwrap();
    let kind = SchedulerKind::from_name(case["kind"].as_str().unwrap()).unwrap();
    let config: SchedulerConfig = serde_json::from_value(case["config"].clone()).unwrap();
    let steps = case["steps"].as_u64().unwrap() as usize;
    let seed = case["seed"].as_u64().unwrap();
    let batch = case["batch"].as_u64().unwrap();
    let shape: Vec<i64> = serde_json::from_value(case["shape"].clone()).unwrap();
    let begin = case["begin"].as_u64().unwrap() as usize;
    let r = load(refs().join(format!("{name}.safetensors")));

    let mut sched = build(kind, &config, steps).map_err(|e| format!("{name}: {e}"))?;
    let want_ts = Vec::<f64>::try_from(&r["all_timesteps"]).unwrap();
    let ts = sched.timesteps().to_vec();
    if ts.len() != want_ts.len() || ts.iter().zip(&want_ts).any(|(a, b)| (a - b).abs() > 1e-3) {
        return Err(format!("{name}: timesteps {ts:?}, diffusers {want_ts:?}"));
    }
    let want_sigma = r["init_noise_sigma"].double_value(&[0]);
    if (sched.init_noise_sigma() - want_sigma).abs() > 1e-6 * want_sigma {
        return Err(format!(
            "{name}: init_noise_sigma {} vs {want_sigma}",
            sched.init_noise_sigma()
        ));
    }

    let seeds: Vec<u64> = (0..batch).map(|i| seed + i).collect();
    let mut noise = Noise::new(seeds, None);
    let (mut x, first) = if case["strength"].is_null() {
        let n = noise.initial(&shape);
        if !n.equal(&r["noise"]) {
            return Err(format!("{name}: initial noise differs from torch's"));
        }
        (n * sched.init_noise_sigma(), 0)
    } else {
        let n = noise.draw(&shape);
        if !n.equal(&r["noise"]) {
            return Err(format!("{name}: img2img noise differs from torch's"));
        }
        sched.set_begin_index(begin);
        (sched.add_noise(&r["original"], &n, begin), begin)
    };
    let mut worst = rel_err(&x, &r["x_init"]);
    if worst > REL_TOL {
        return Err(format!("{name}: x_init rel err {worst:e}"));
    }
    for (i, index) in (first..ts.len()).enumerate() {
        let inp = sched.scale_model_input(&x, index);
        let mo = fake_model(&inp, ts[index]);
        x = sched.step(&mo, index, &x, &mut || noise.draw(&shape));
        let want = r
            .get(&format!("step_{i}"))
            .ok_or_else(|| format!("{name}: diffusers ran fewer steps than {i}"))?;
        let e = rel_err(&x, want);
        worst = worst.max(e);
        if e > REL_TOL || e.is_nan() {
            return Err(format!(
                "{name}: step {i} (t = {}) rel err {e:e}",
                ts[index]
            ));
        }
    }
    if r.contains_key(&format!("step_{}", ts.len() - first)) {
        return Err(format!("{name}: diffusers ran more steps"));
    }
    Ok(worst)
}

/// One test per scheduler so a failure names it; all share one reference run.
fn check_kind(kind: &str) {
    let meta = meta();
    let cases: Vec<&Value> = meta["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == kind)
        .collect();
    assert!(cases.len() >= 8, "{kind}: too few reference cases");
    let mut failures = Vec::new();
    for case in cases {
        match run_case(case) {
            Ok(worst) => eprintln!("{}: worst rel err {worst:.2e}", case["name"]),
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn ddim_matches_diffusers() {
    check_kind("ddim");
}

#[test]
fn euler_matches_diffusers() {
    check_kind("euler");
}

#[test]
fn euler_ancestral_matches_diffusers() {
    check_kind("euler-a");
}

#[test]
fn dpmpp_2m_matches_diffusers() {
    check_kind("dpmpp-2m");
}

#[test]
fn dpmpp_2m_karras_matches_diffusers() {
    check_kind("dpmpp-2m-karras");
}

#[test]
fn unipc_matches_diffusers() {
    check_kind("unipc");
}

#[test]
fn lms_matches_diffusers() {
    check_kind("lms");
}

#[test]
fn pndm_matches_diffusers() {
    check_kind("pndm");
}

/// diffusers' DPMSolverSDEScheduler with its Brownian-tree noise sampler replaced by the
/// same per-item Gaussian draws (our documented noise source).
#[test]
fn dpmpp_sde_karras_matches_diffusers() {
    check_kind("dpmpp-sde-karras");
}

#[test]
fn noise_streams_match_torch_generators() {
    let meta = meta();
    let r = load(refs().join("noise.safetensors"));
    let seeds: Vec<u64> = serde_json::from_value(meta["noise"]["seeds"].clone()).unwrap();
    let shapes: Vec<Vec<i64>> = serde_json::from_value(meta["noise"]["shapes"].clone()).unwrap();
    let mut noise = Noise::new(seeds, None);
    for (k, shape) in shapes.iter().enumerate() {
        let got = noise.draw(shape);
        assert!(
            got.equal(&r[&format!("draw_{k}")]),
            "draw {k} of shape {shape:?}"
        );
    }
}

#[test]
fn variation_seeds_match_a1111_slerp() {
    let meta = meta();
    let r = load(refs().join("noise.safetensors"));
    let v = &meta["noise"]["variation"];
    let seeds: Vec<u64> = serde_json::from_value(v["seeds"].clone()).unwrap();
    let subseeds: Vec<u64> = serde_json::from_value(v["subseeds"].clone()).unwrap();
    let shape: Vec<i64> = serde_json::from_value(v["shape"].clone()).unwrap();
    let strength = v["strength"].as_f64().unwrap();
    let mut noise = Noise::new(
        seeds,
        Some(Variation {
            seeds: subseeds,
            strength,
        }),
    );
    let got = noise.initial(&shape);
    // Same float32 ops in the same order: only libm differences in acos/sin.
    let e = rel_err(&got, &r["variation"]);
    assert!(e < 1e-5, "variation noise rel err {e:e}");
}

#[test]
fn bad_configs_are_refused_with_the_key() {
    let cfg: SchedulerConfig =
        serde_json::from_str(r#"{"prediction_type": "sample", "unknown_key": 3}"#).unwrap();
    let err = build(SchedulerKind::Euler, &cfg, 20)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("prediction_type"), "{err}");
    let cfg: SchedulerConfig = serde_json::from_str(r#"{"beta_schedule": "cubic"}"#).unwrap();
    let err = build(SchedulerKind::Ddim, &cfg, 20).err().expect("refused");
    assert!(err.to_string().contains("beta_schedule"), "{err}");
    // A key the chosen class does not have is ignored, as diffusers' from_config does.
    let cfg: SchedulerConfig = serde_json::from_str(r#"{"use_karras_sigmas": true}"#).unwrap();
    assert!(build(SchedulerKind::EulerAncestral, &cfg, 20).is_ok());
    let err = build(SchedulerKind::Ddim, &SchedulerConfig::default(), 0)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("steps"), "{err}");
}
