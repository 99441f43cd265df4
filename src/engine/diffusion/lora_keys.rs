//! Reading LoRA `.safetensors` files and naming the model parameter each LoRA pair patches.
//!
//! Formats: Kohya / A1111 (`lora_unet_<module path with _>`, `lora_te_`, SDXL `lora_te1_` /
//! `lora_te2_`, `.lora_down.weight` / `.lora_up.weight` / `.alpha`), including the SGM/LDM block
//! names (`input_blocks_4_1_…`, `middle_block_…`, `output_blocks_…`) that kohya-ss uses for SDXL,
//! mapped the way diffusers' `_maybe_map_sgm_blocks_to_diffusers` + `_convert_unet_lora_key`
//! map them; and diffusers / PEFT (`unet.<module>.lora_A.weight` / `lora_B`, older
//! `lora.down` / `lora.up`, `text_encoder.` / `text_encoder_2.`, optional `.alpha`).
//! Targets are names in the exported modules: `<attr>.<diffusers or transformers key>`.
use std::collections::{HashMap, HashSet};
use std::path::Path;
use tch::Tensor;

#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    #[error("{path}: cannot read the LoRA file: {message}")]
    Read { path: String, message: String },
    #[error("{path}: unknown LoRA key format: `{key}` (supported: Kohya lora_down/lora_up/alpha, diffusers/PEFT lora_A/lora_B or lora.down/lora.up)")]
    UnknownKey { path: String, key: String },
    #[error("{path}: `{module}` has a {has} weight but no {missing} weight")]
    Unpaired {
        path: String,
        module: String,
        has: &'static str,
        missing: &'static str,
    },
    #[error("{path}: the LoRA targets nothing in this model (first module: `{first}`); is it for another model family?")]
    NothingTargeted { path: String, first: String },
    #[error("{path}: `{module}` matches several model parameters ({candidates})")]
    Ambiguous {
        path: String,
        module: String,
        candidates: String,
    },
    #[error("LoRA for `{target}`: up {up:?} × down {down:?} does not fit the parameter's shape {param:?}")]
    Shape {
        target: String,
        up: Vec<i64>,
        down: Vec<i64>,
        param: Vec<i64>,
    },
    #[error("LoRA target `{0}` is not a parameter of the model")]
    MissingTarget(String),
    #[error("LoRA fusion failed on `{target}`: {message}")]
    Torch { target: String, message: String },
}

/// One low-rank update: `param += weight * scale * up @ down` (flattened for convolutions).
#[derive(Debug)]
pub struct LoraPatch {
    /// The parameter name in the module, e.g. `unet.down_blocks.0.attentions.0.proj_in.weight`.
    pub target: String,
    /// `[out, rank]` or `[out, rank, 1, 1]`.
    pub up: Tensor,
    /// `[rank, in]` or `[rank, in, kh, kw]`.
    pub down: Tensor,
    /// `alpha / rank` (1 when the file has no alpha).
    pub scale: f64,
}

/// The module prefixes of the exported wrappers and their Kohya spellings.
const KOHYA_PREFIXES: [(&str, &str); 4] = [
    ("lora_unet_", "unet"),
    ("lora_te1_", "text_encoder"),
    ("lora_te2_", "text_encoder_2"),
    ("lora_te_", "text_encoder"),
];
const DIFFUSERS_PREFIXES: [&str; 3] = ["unet.", "text_encoder.", "text_encoder_2."];

/// Suffixes of the down (A) and up (B) matrices, per format.
const DOWN_SUFFIXES: [&str; 4] = [
    ".lora_down.weight",
    ".lora_A.weight",
    ".lora.down.weight",
    ".lora_linear_layer.down.weight",
];
const UP_SUFFIXES: [&str; 4] = [
    ".lora_up.weight",
    ".lora_B.weight",
    ".lora.up.weight",
    ".lora_linear_layer.up.weight",
];

#[derive(Default)]
struct Module {
    down: Option<Tensor>,
    up: Option<Tensor>,
    alpha: Option<f64>,
}

/// An index from flattened (`.` → `_`) parameter paths to parameter names, per attribute:
/// `("unet", "down_blocks_0_attentions_0_proj_in")` → `unet.down_blocks.0.attentions.0.proj_in.weight`.
struct FlatIndex(HashMap<(String, String), Vec<String>>);

impl FlatIndex {
    fn new(param_names: &HashSet<String>) -> FlatIndex {
        let mut map: HashMap<(String, String), Vec<String>> = HashMap::new();
        for name in param_names {
            let Some(stem) = name.strip_suffix(".weight") else {
                continue;
            };
            let Some((attr, rest)) = stem.split_once('.') else {
                continue;
            };
            map.entry((attr.to_string(), rest.replace('.', "_")))
                .or_default()
                .push(name.clone());
        }
        for v in map.values_mut() {
            v.sort();
        }
        FlatIndex(map)
    }

    fn get(&self, attr: &str, flat: &str) -> Option<&Vec<String>> {
        self.0.get(&(attr.to_string(), flat.to_string()))
    }
}

/// kohya-ss' SGM/LDM UNet names (SDXL; layers_per_block = 2 in SD1.x, SD2.x and SDXL) to the
/// flattened diffusers path, as diffusers maps them. None when `flat` is not an SGM name.
pub fn sgm_to_diffusers(flat: &str) -> Option<String> {
    const LPB: usize = 2;
    let fixed = [
        ("input_blocks_0_0_", "conv_in_"),
        ("out_2_", "conv_out_"),
        ("time_embed_0_", "time_embedding_linear_1_"),
        ("time_embed_2_", "time_embedding_linear_2_"),
        ("label_emb_0_0_", "add_embedding_linear_1_"),
        ("label_emb_0_2_", "add_embedding_linear_2_"),
    ];
    let with_sep = format!("{flat}_");
    for (sgm, diffusers) in fixed {
        if let Some(rest) = with_sep.strip_prefix(sgm) {
            return Some(
                format!("{diffusers}{rest}")
                    .trim_end_matches('_')
                    .to_string(),
            );
        }
    }
    let resnet_part = |rest: &str| -> String {
        let mut r = rest.to_string();
        for (from, to) in [
            ("in_layers_2", "conv1"),
            ("out_layers_3", "conv2"),
            ("emb_layers_1", "time_emb_proj"),
            ("skip_connection", "conv_shortcut"),
        ] {
            if r == from {
                r = to.to_string();
            }
        }
        r
    };
    let nums = |s: &str| -> Option<(usize, usize, String)> {
        let mut it = s.splitn(3, '_');
        let i = it.next()?.parse().ok()?;
        let j = it.next()?.parse().ok()?;
        Some((i, j, it.next().unwrap_or_default().to_string()))
    };
    if let Some(s) = flat.strip_prefix("input_blocks_") {
        let (i, j, rest) = nums(s)?;
        let (block, layer) = ((i.checked_sub(1)?) / (LPB + 1), (i - 1) % (LPB + 1));
        if rest == "op" {
            return Some(format!("down_blocks_{block}_downsamplers_0_conv"));
        }
        return Some(match j {
            0 => format!("down_blocks_{block}_resnets_{layer}_{}", resnet_part(&rest)),
            1 => format!("down_blocks_{block}_attentions_{layer}_{rest}"),
            _ => return None,
        });
    }
    if let Some(s) = flat.strip_prefix("middle_block_") {
        let (i, rest) = s.split_once('_')?;
        return Some(match i {
            "0" => format!("mid_block_resnets_0_{}", resnet_part(rest)),
            "1" => format!("mid_block_attentions_0_{rest}"),
            "2" => format!("mid_block_resnets_1_{}", resnet_part(rest)),
            _ => return None,
        });
    }
    if let Some(s) = flat.strip_prefix("output_blocks_") {
        let (i, j, rest) = nums(s)?;
        let (block, layer) = (i / (LPB + 1), i % (LPB + 1));
        if rest == "conv" && j >= 1 {
            return Some(format!("up_blocks_{block}_upsamplers_0_conv"));
        }
        return Some(match j {
            0 => format!("up_blocks_{block}_resnets_{layer}_{}", resnet_part(&rest)),
            1 => format!("up_blocks_{block}_attentions_{layer}_{rest}"),
            _ => return None,
        });
    }
    None
}

/// The parameter a Kohya module name patches, if any.
fn kohya_target(module: &str, index: &FlatIndex, path: &str) -> Result<Option<String>, LoraError> {
    let Some((attr, flat)) = KOHYA_PREFIXES
        .iter()
        .find_map(|(p, attr)| module.strip_prefix(p).map(|rest| (*attr, rest)))
    else {
        return Ok(None);
    };
    let mut candidates = vec![flat.to_string()];
    if attr == "unet" {
        if let Some(mapped) = sgm_to_diffusers(flat) {
            candidates.insert(0, mapped);
        }
    } else if let Some(rest) = flat.strip_prefix("text_model_") {
        // Newer transformers CLIPTextModel state dicts have no `text_model.` level.
        candidates.push(rest.to_string());
    } else {
        candidates.push(format!("text_model_{flat}"));
    }
    for c in candidates {
        if let Some(names) = index.get(attr, &c) {
            if names.len() > 1 {
                return Err(LoraError::Ambiguous {
                    path: path.to_string(),
                    module: module.to_string(),
                    candidates: names.join(", "),
                });
            }
            return Ok(names.first().cloned());
        }
    }
    Ok(None)
}

/// The parameter a diffusers/PEFT module name patches, if any.
fn diffusers_target(module: &str, param_names: &HashSet<String>) -> Option<String> {
    let prefix = DIFFUSERS_PREFIXES.iter().find(|p| module.starts_with(*p))?;
    let rest = &module[prefix.len()..];
    let mut candidates = vec![format!("{module}.weight")];
    if let Some(r) = rest.strip_prefix("text_model.") {
        candidates.push(format!("{prefix}{r}.weight"));
    } else if *prefix != "unet." {
        candidates.push(format!("{prefix}text_model.{rest}.weight"));
    }
    candidates.into_iter().find(|c| param_names.contains(c))
}

fn is_lora_module(module: &str) -> bool {
    KOHYA_PREFIXES.iter().any(|(p, _)| module.starts_with(p))
        || DIFFUSERS_PREFIXES.iter().any(|p| module.starts_with(p))
}

/// Reads a LoRA file and maps its pairs onto `param_names` (the module's parameter names).
/// Also returns the LoRA modules that match no parameter (A1111 skips them too).
pub fn load_lora_with_unmatched(
    path: &Path,
    param_names: &HashSet<String>,
) -> Result<(Vec<LoraPatch>, Vec<String>), LoraError> {
    let p = path.display().to_string();
    let tensors = Tensor::read_safetensors(path).map_err(|e| LoraError::Read {
        path: p.clone(),
        message: e.to_string(),
    })?;
    // Modules in file order (safetensors files are sorted by key).
    let mut modules: Vec<(String, Module)> = Vec::new();
    let mut slot = |name: &str| -> usize {
        match modules.iter().position(|(m, _)| m == name) {
            Some(i) => i,
            None => {
                modules.push((name.to_string(), Module::default()));
                modules.len() - 1
            }
        }
    };
    let mut slots: Vec<(usize, &'static str, Tensor)> = Vec::new();
    let mut alphas: Vec<(usize, f64)> = Vec::new();
    for (key, tensor) in tensors {
        let unknown = || LoraError::UnknownKey {
            path: p.clone(),
            key: key.clone(),
        };
        if let Some(module) = key.strip_suffix(".alpha") {
            if !is_lora_module(module) {
                return Err(unknown());
            }
            let alpha = tensor
                .to_kind(tch::Kind::Double)
                .f_double_value(&[])
                .map_err(|_| unknown())?;
            alphas.push((slot(module), alpha));
            continue;
        }
        let found = DOWN_SUFFIXES
            .iter()
            .map(|s| (s, "down"))
            .chain(UP_SUFFIXES.iter().map(|s| (s, "up")))
            .find_map(|(s, which)| key.strip_suffix(*s).map(|m| (m.to_string(), which)));
        match found {
            Some((module, which)) if is_lora_module(&module) => {
                slots.push((slot(&module), which, tensor));
            }
            _ => return Err(unknown()),
        }
    }
    for (i, which, t) in slots {
        let m = &mut modules[i].1;
        if which == "down" {
            m.down = Some(t);
        } else {
            m.up = Some(t);
        }
    }
    for (i, a) in alphas {
        modules[i].1.alpha = Some(a);
    }

    let index = FlatIndex::new(param_names);
    let mut patches = Vec::new();
    let mut unmatched = Vec::new();
    let first = modules.first().map(|(m, _)| m.clone()).unwrap_or_default();
    for (name, m) in modules {
        let (down, up) = match (m.down, m.up) {
            (Some(d), Some(u)) => (d, u),
            (d, _) => {
                let (has, missing) = if d.is_some() {
                    ("down", "up")
                } else {
                    ("up", "down")
                };
                return Err(LoraError::Unpaired {
                    path: p.clone(),
                    module: name,
                    has,
                    missing,
                });
            }
        };
        let target = match kohya_target(&name, &index, &p)? {
            Some(t) => Some(t),
            None => diffusers_target(&name, param_names),
        };
        let Some(target) = target else {
            unmatched.push(name);
            continue;
        };
        let rank = down.size().first().copied().unwrap_or(1).max(1) as f64;
        let scale = m.alpha.map_or(1.0, |a| a / rank);
        patches.push(LoraPatch {
            target,
            up,
            down,
            scale,
        });
    }
    if patches.is_empty() {
        return Err(LoraError::NothingTargeted { path: p, first });
    }
    Ok((patches, unmatched))
}

/// Reads a LoRA file and maps every pair to a parameter in `param_names`; pairs that match
/// nothing are skipped (an error when none match).
pub fn load_lora(path: &Path, param_names: &HashSet<String>) -> Result<Vec<LoraPatch>, LoraError> {
    load_lora_with_unmatched(path, param_names).map(|(patches, _)| patches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgm_names() {
        let cases = [
            (
                "input_blocks_4_1_transformer_blocks_0_attn1_to_q",
                "down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q",
            ),
            (
                "input_blocks_8_0_in_layers_2",
                "down_blocks_2_resnets_1_conv1",
            ),
            ("input_blocks_3_0_op", "down_blocks_0_downsamplers_0_conv"),
            ("middle_block_1_proj_in", "mid_block_attentions_0_proj_in"),
            (
                "middle_block_2_emb_layers_1",
                "mid_block_resnets_1_time_emb_proj",
            ),
            (
                "output_blocks_5_1_proj_out",
                "up_blocks_1_attentions_2_proj_out",
            ),
            ("output_blocks_2_2_conv", "up_blocks_0_upsamplers_0_conv"),
            (
                "output_blocks_0_0_skip_connection",
                "up_blocks_0_resnets_0_conv_shortcut",
            ),
            ("time_embed_0", "time_embedding_linear_1"),
            ("input_blocks_0_0", "conv_in"),
        ];
        for (sgm, want) in cases {
            assert_eq!(sgm_to_diffusers(sgm).as_deref(), Some(want), "{sgm}");
        }
        assert_eq!(sgm_to_diffusers("down_blocks_0_attentions_0_proj_in"), None);
    }
}
