//! LoRA fusion against diffusers' own `load_lora_weights` + `fuse_lora(lora_scale=0.7)` on tiny
//! random models (tools/export/refs/sd_lora_ref.py; needs `peft`, diffusers' LoRA backend).
//! Fused weights must match within 1e-5 (absolute, on weights of magnitude ≲ 1): both sides add
//! the same float32 low-rank product, but PEFT computes 3×3 convolution deltas with conv2d and
//! sums in a different order, a difference of a few float32 ulps. Unfusing must restore the
//! original weights exactly.
mod common;

use atelier::engine::diffusion::lora::{fuse, fuse_many, load_lora, LoraError};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::Tensor;

const SCALE: f64 = 0.7;
const TOL: f64 = 1e-5;

fn reference() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        common::run_python(
            "tools/export/refs/sd_lora_ref.py",
            &[dir.path().as_os_str()],
        );
        dir
    })
    .path()
}

fn read(name: &str) -> Vec<(String, Tensor)> {
    Tensor::read_safetensors(reference().join(name)).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn get<'a>(params: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    &params.iter().find(|(n, _)| n == name).unwrap().1
}

fn check_format(lora: &str, fused_ref: &str) {
    let originals = read("original.safetensors");
    let params: Vec<(String, Tensor)> = originals
        .iter()
        .map(|(n, t)| (n.clone(), t.copy()))
        .collect();
    let names: HashSet<String> = params.iter().map(|(n, _)| n.clone()).collect();
    let patches = load_lora(&reference().join(lora), &names).unwrap();
    assert_eq!(
        patches.len(),
        99,
        "{lora}: every LoRA module maps to a parameter"
    );
    assert!(
        patches
            .iter()
            .any(|p| p.down.dim() == 4 && p.down.size()[2] == 3),
        "3x3 conv"
    );
    assert!(
        patches
            .iter()
            .any(|p| p.down.dim() == 4 && p.down.size()[2] == 1),
        "1x1 conv"
    );
    assert!(patches
        .iter()
        .any(|p| p.target.starts_with("text_encoder.")));

    let fused = fuse(&params, &patches, SCALE).unwrap();
    assert_eq!(fused.len(), 99);
    let want = read(fused_ref);
    let mut changed = 0;
    for (name, w) in &want {
        let ours = get(&params, name);
        let d = max_diff(ours, w);
        assert!(d <= TOL, "{lora}: {name} differs from diffusers by {d}");
        if !w.equal(get(&originals, name)) {
            changed += 1;
        }
    }
    assert_eq!(changed, 99, "diffusers changed the same parameters");

    fused.unfuse(&params).unwrap();
    for (name, t) in &originals {
        assert!(
            get(&params, name).equal(t),
            "{lora}: unfuse restores {name} exactly"
        );
    }
}

#[test]
fn peft_format_matches_diffusers() {
    check_format("lora_peft.safetensors", "fused_peft.safetensors");
}

#[test]
fn kohya_format_matches_diffusers() {
    check_format("lora_kohya.safetensors", "fused_kohya.safetensors");
}

#[test]
fn two_loras_fuse_together_and_unfuse_exactly() {
    let originals = read("original.safetensors");
    let params: Vec<(String, Tensor)> = originals
        .iter()
        .map(|(n, t)| (n.clone(), t.copy()))
        .collect();
    let names: HashSet<String> = params.iter().map(|(n, _)| n.clone()).collect();
    let a = load_lora(&reference().join("lora_peft.safetensors"), &names).unwrap();
    let b = load_lora(&reference().join("lora_kohya.safetensors"), &names).unwrap();
    let fused = fuse_many(&params, &[(&a, SCALE), (&b, SCALE)]).unwrap();
    // Each LoRA's delta at 0.7 is diffusers' fused - original; the two add up.
    let (fa, fb) = (
        read("fused_peft.safetensors"),
        read("fused_kohya.safetensors"),
    );
    for (name, orig) in &originals {
        let want = get(&fa, name) + get(&fb, name) - orig;
        let d = max_diff(get(&params, name), &want);
        assert!(d <= 2.0 * TOL, "{name}: {d}");
    }
    fused.unfuse(&params).unwrap();
    for (name, t) in &originals {
        assert!(get(&params, name).equal(t), "{name}");
    }
}

fn write(dir: &Path, name: &str, tensors: &[(&str, Tensor)]) -> PathBuf {
    let path = dir.join(name);
    Tensor::write_safetensors(tensors, &path).unwrap();
    path
}

#[test]
fn bad_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let names: HashSet<String> = ["unet.down_blocks.0.resnets.0.conv1.weight".to_string()].into();
    let z = || Tensor::zeros([4, 4], (tch::Kind::Float, tch::Device::Cpu));

    let p = write(
        dir.path(),
        "loha.safetensors",
        &[("lora_unet_down_blocks_0_resnets_0_conv1.hada_w1_a", z())],
    );
    let e = load_lora(&p, &names).unwrap_err();
    assert!(matches!(e, LoraError::UnknownKey { .. }), "{e}");
    assert!(
        e.to_string().contains("loha.safetensors") && e.to_string().contains("hada_w1_a"),
        "{e}"
    );

    let p = write(
        dir.path(),
        "other.safetensors",
        &[
            ("unet.mid_block.attentions.0.proj_in.lora_A.weight", z()),
            ("unet.mid_block.attentions.0.proj_in.lora_B.weight", z()),
        ],
    );
    let e = load_lora(&p, &names).unwrap_err();
    assert!(matches!(e, LoraError::NothingTargeted { .. }), "{e}");
    assert!(e.to_string().contains("other.safetensors"), "{e}");

    let p = write(
        dir.path(),
        "half.safetensors",
        &[(
            "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight",
            z(),
        )],
    );
    let e = load_lora(&p, &names).unwrap_err();
    assert!(matches!(e, LoraError::Unpaired { .. }), "{e}");

    let p = dir.path().join("missing.safetensors");
    let e = load_lora(&p, &names).unwrap_err();
    assert!(e.to_string().contains("missing.safetensors"), "{e}");

    // A shape mismatch fails before any parameter changes.
    let params = vec![(
        "unet.down_blocks.0.resnets.0.conv1.weight".to_string(),
        Tensor::ones([8, 4, 3, 3], (tch::Kind::Float, tch::Device::Cpu)),
    )];
    let p = write(
        dir.path(),
        "shape.safetensors",
        &[
            (
                "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight",
                Tensor::ones([2, 5, 3, 3], (tch::Kind::Float, tch::Device::Cpu)),
            ),
            (
                "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight",
                Tensor::ones([8, 2, 1, 1], (tch::Kind::Float, tch::Device::Cpu)),
            ),
        ],
    );
    let patches = load_lora(&p, &names).unwrap();
    let e = fuse(&params, &patches, 1.0).unwrap_err();
    assert!(matches!(e, LoraError::Shape { .. }), "{e}");
    assert!(params[0].1.equal(&Tensor::ones(
        [8, 4, 3, 3],
        (tch::Kind::Float, tch::Device::Cpu)
    )));
}

/// Every SGM block name of SDXL's UNet (layers_per_block 2, attention in input blocks 4, 5,
/// 7, 8 and output blocks 0–5) maps to the module diffusers maps it to.
#[test]
fn sgm_names_map_like_diffusers() {
    use atelier::engine::diffusion::lora_keys::sgm_to_diffusers;
    let resnet = [
        "in_layers_2",
        "out_layers_3",
        "emb_layers_1",
        "skip_connection",
    ];
    let attn = [
        "proj_in",
        "proj_out",
        "transformer_blocks_0_attn1_to_q",
        "transformer_blocks_1_attn2_to_k",
        "transformer_blocks_0_attn2_to_v",
        "transformer_blocks_9_attn1_to_out_0",
        "transformer_blocks_0_ff_net_0_proj",
        "transformer_blocks_0_ff_net_2",
    ];
    let mut names: Vec<String> = vec![
        "input_blocks_0_0".into(),
        "input_blocks_3_0_op".into(),
        "input_blocks_6_0_op".into(),
        "output_blocks_2_2_conv".into(),
        "output_blocks_5_2_conv".into(),
        "time_embed_0".into(),
        "time_embed_2".into(),
        "label_emb_0_0".into(),
        "label_emb_0_2".into(),
        "out_2".into(),
    ];
    for i in [1, 2, 4, 5, 7, 8] {
        names.extend(resnet.iter().map(|r| format!("input_blocks_{i}_0_{r}")));
    }
    for i in [4, 5, 7, 8] {
        names.extend(attn.iter().map(|a| format!("input_blocks_{i}_1_{a}")));
    }
    for i in 0..9 {
        names.extend(resnet.iter().map(|r| format!("output_blocks_{i}_0_{r}")));
    }
    for i in 0..6 {
        names.extend(attn.iter().map(|a| format!("output_blocks_{i}_1_{a}")));
    }
    for (i, r) in [(0, "in_layers_2"), (2, "out_layers_3"), (2, "emb_layers_1")] {
        names.push(format!("middle_block_{i}_{r}"));
    }
    names.extend(attn.iter().map(|a| format!("middle_block_1_{a}")));

    let dir = tempfile::tempdir().unwrap();
    let (req, out) = (dir.path().join("names.json"), dir.path().join("out.json"));
    std::fs::write(&req, serde_json::to_string(&names).unwrap()).unwrap();
    common::run_python(
        "tools/export/refs/sd_lora_ref.py",
        &["--sgm".as_ref(), req.as_os_str(), out.as_os_str()],
    );
    let want: Vec<String> = serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    for (name, want) in names.iter().zip(want) {
        assert_eq!(
            sgm_to_diffusers(name),
            Some(want.replace('.', "_")),
            "{name}"
        );
    }
}
