//! Fusing LoRAs into a module's parameters in place (`param += w · scale · up @ down`), several
//! at once, and unfusing them exactly: the original value of every patched parameter is kept
//! (on the CPU) and copied back.
pub use super::lora_keys::{load_lora, LoraError, LoraPatch};
use tch::{Device, Kind, Tensor};

/// What `fuse` changed; `unfuse` restores it bit for bit.
#[derive(Debug)]
pub struct FusedLoras {
    originals: Vec<(String, Tensor)>,
}

impl FusedLoras {
    /// The number of parameters the fused LoRAs changed.
    pub fn len(&self) -> usize {
        self.originals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.originals.is_empty()
    }

    /// Puts back the original values of every patched parameter.
    pub fn unfuse(self, params: &[(String, Tensor)]) -> Result<(), LoraError> {
        tch::no_grad(|| {
            for (name, original) in &self.originals {
                let mut param = find(params, name)?.shallow_clone();
                param.f_copy_(original).map_err(|e| torch_err(name, e))?;
            }
            Ok(())
        })
    }
}

fn torch_err(target: &str, e: tch::TchError) -> LoraError {
    LoraError::Torch {
        target: target.to_string(),
        message: e.to_string(),
    }
}

fn find<'a>(params: &'a [(String, Tensor)], name: &str) -> Result<&'a Tensor, LoraError> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .ok_or_else(|| LoraError::MissingTarget(name.to_string()))
}

/// `scale · up @ down` in float32 on `device`, shaped like the parameter.
fn delta(patch: &LoraPatch, param: &Tensor, device: Device) -> Result<Tensor, LoraError> {
    let shape_err = || LoraError::Shape {
        target: patch.target.clone(),
        up: patch.up.size(),
        down: patch.down.size(),
        param: param.size(),
    };
    let up = patch.up.to_device(device).to_kind(Kind::Float);
    let down = patch.down.to_device(device).to_kind(Kind::Float);
    if up.dim() < 2 || down.dim() < 2 || up.size()[1] != down.size()[0] {
        return Err(shape_err());
    }
    let (out, inner) = (up.size()[0], down.size()[1..].iter().product::<i64>());
    if out * inner != param.numel() as i64 || param.size().first() != Some(&out) {
        return Err(shape_err());
    }
    let d = up
        .f_flatten(1, -1)
        .and_then(|u| u.f_matmul(&down.f_flatten(1, -1)?))
        .and_then(|m| m.f_reshape(param.size()))
        .map_err(|e| torch_err(&patch.target, e))?;
    Ok(d * patch.scale)
}

/// Fuses one LoRA at `weight` (A1111's `<lora:name:weight>`).
pub fn fuse(
    params: &[(String, Tensor)],
    patches: &[LoraPatch],
    weight: f64,
) -> Result<FusedLoras, LoraError> {
    fuse_many(params, &[(patches, weight)])
}

/// Fuses several LoRAs, each at its weight. Every patch is checked before any parameter
/// changes, so on error the model is untouched.
pub fn fuse_many(
    params: &[(String, Tensor)],
    loras: &[(&[LoraPatch], f64)],
) -> Result<FusedLoras, LoraError> {
    tch::no_grad(|| {
        let mut planned: Vec<(&Tensor, &str, Tensor)> = Vec::new();
        for (patches, weight) in loras {
            for patch in patches.iter() {
                let param = find(params, &patch.target)?;
                let d = delta(patch, param, param.device())? * *weight;
                planned.push((param, &patch.target, d));
            }
        }
        let mut originals: Vec<(String, Tensor)> = Vec::new();
        for (param, name, d) in planned {
            if !originals.iter().any(|(n, _)| n == name) {
                originals.push((name.to_string(), param.to_device(Device::Cpu).copy()));
            }
            let mut p = param.shallow_clone();
            let kind = p.kind();
            if kind == Kind::Float {
                let _ = p.f_add_(&d).map_err(|e| torch_err(name, e))?;
            } else {
                // Half/bfloat16 weights: add in float32, round once.
                let sum = p.to_kind(Kind::Float) + d;
                p.f_copy_(&sum.to_kind(kind))
                    .map_err(|e| torch_err(name, e))?;
            }
        }
        Ok(FusedLoras { originals })
    })
}
