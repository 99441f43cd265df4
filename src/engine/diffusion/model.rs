//! An exported Stable Diffusion model folder (family `sd`) or ControlNet folder (family
//! `controlnet`) loaded onto a device: tokenizers, text encoders, UNet, VAE, config.
//!
//! With CPU offload every module lives on the CPU and visits the device only for its stage
//! (TorchScript `CModule::to`), trading transfer time for peak device memory.
use crate::engine::clip::tokenizer::ClipTokenizer;
use crate::engine::store::{InstalledModel, StoreError};
use tch::{CModule, Device, IValue, Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{manifest}: {message}")]
    Manifest { manifest: String, message: String },
    #[error(transparent)]
    Tokenizer(#[from] crate::engine::clip::tokenizer::TokenizerError),
    #[error("{role}: model call failed: {message}")]
    Call { role: String, message: String },
    #[error(
        "{path}: the model was exported for {exported} but runs on {device}: re-import it with `--device {device}`"
    )]
    WrongDevice {
        path: String,
        exported: String,
        device: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Sd15,
    Sd21,
    Sdxl,
}

impl Variant {
    pub fn parse(text: &str) -> Option<Variant> {
        match text {
            "sd15" => Some(Variant::Sd15),
            "sd21" => Some(Variant::Sd21),
            "sdxl" => Some(Variant::Sdxl),
            _ => None,
        }
    }
    pub fn is_xl(self) -> bool {
        self == Variant::Sdxl
    }
}

/// The `[config]` table of an SD manifest, read once.
#[derive(Debug, Clone)]
pub struct SdConfig {
    pub scaling_factor: f64,
    pub in_channels: i64,
    pub v_prediction: bool,
    pub sample_size: i64,
    pub kind: Kind,
    /// The VAE's dtype (fp32 when an fp16 export keeps the VAE upcast, as SDXL's does).
    pub vae_kind: Kind,
    /// Image pixels per latent pixel.
    pub vae_scale: i64,
    pub latent_channels: i64,
    pub force_zeros_for_empty_prompt: bool,
    /// diffusers' scheduler_config.json as a TOML table.
    pub scheduler: toml::Table,
    pub down_residuals: usize,
}

/// Looks a key up as written (`snake_case`) or kebab-cased, at the top of `[config]` or in a
/// sub-table (`sdxl.force_zeros_for_empty_prompt`).
fn lookup<'a>(table: &'a toml::Table, path: &str) -> Option<&'a toml::Value> {
    let mut parts = path.split('.').peekable();
    let mut current = table;
    while let Some(part) = parts.next() {
        let value = current
            .get(part)
            .or_else(|| current.get(&part.replace('_', "-")))?;
        if parts.peek().is_none() {
            return Some(value);
        }
        current = value.as_table()?;
    }
    None
}

fn kind_of(dtype: &str) -> Kind {
    match dtype {
        "float16" | "fp16" | "half" => Kind::Half,
        "bfloat16" | "bf16" => Kind::BFloat16,
        _ => Kind::Float,
    }
}

fn number(v: &toml::Value) -> Option<f64> {
    v.as_float().or_else(|| v.as_integer().map(|i| i as f64))
}

impl SdConfig {
    fn read(model: &InstalledModel) -> Result<SdConfig, ModelError> {
        let cfg = &model.manifest.config;
        let bad = |message: String| ModelError::Manifest {
            manifest: model.manifest_path().display().to_string(),
            message,
        };
        let scaling_factor = lookup(cfg, "scaling_factor")
            .and_then(number)
            .filter(|f| f.is_finite() && *f > 0.0)
            .ok_or_else(|| bad("config.scaling_factor is missing or not positive".into()))?;
        let prediction = lookup(cfg, "prediction_type")
            .and_then(|v| v.as_str())
            .unwrap_or("epsilon");
        let v_prediction = match prediction {
            "epsilon" => false,
            "v_prediction" => true,
            other => {
                return Err(bad(format!(
                    "config.prediction_type '{other}': use epsilon or v_prediction"
                )))
            }
        };
        let dtype = lookup(cfg, "dtype")
            .and_then(|v| v.as_str())
            .unwrap_or(model.manifest.dtype.as_str());
        let kind = kind_of(dtype);
        let vae_kind = lookup(cfg, "vae_dtype")
            .and_then(|v| v.as_str())
            .map_or(kind, kind_of);
        let scheduler = lookup(cfg, "scheduler")
            .and_then(|v| v.as_table())
            .cloned()
            .ok_or_else(|| {
                bad("config.scheduler (diffusers' scheduler_config) is missing".into())
            })?;
        let force_zeros = lookup(cfg, "sdxl.force_zeros_for_empty_prompt")
            .or_else(|| lookup(cfg, "force_zeros_for_empty_prompt"))
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        let down_residuals = model
            .manifest
            .dim("down_residuals")
            .or_else(|| model.manifest.dim("down-residuals"))
            .or_else(|| lookup(cfg, "down_residuals").and_then(|v| v.as_integer()))
            .unwrap_or(0)
            .max(0) as usize;
        Ok(SdConfig {
            scaling_factor,
            in_channels: lookup(cfg, "in_channels")
                .and_then(|v| v.as_integer())
                .unwrap_or(4),
            v_prediction,
            sample_size: lookup(cfg, "sample_size")
                .and_then(|v| v.as_integer())
                .unwrap_or(64),
            kind,
            vae_kind,
            vae_scale: model.manifest.dim("vae_scale_factor").unwrap_or(8).max(1),
            latent_channels: model.manifest.dim("latent_channels").unwrap_or(4).max(1),
            force_zeros_for_empty_prompt: force_zeros,
            scheduler,
            down_residuals,
        })
    }
}

/// One TorchScript module that sits on `home` and runs on `device`.
pub struct Stage {
    pub role: String,
    module: CModule,
    home: Device,
    device: Device,
    kind: Kind,
    on_device: bool,
}

impl Stage {
    fn load(
        model: &InstalledModel,
        role: &str,
        device: Device,
        kind: Kind,
        offload: bool,
    ) -> Result<Stage, ModelError> {
        let home = if offload { Device::Cpu } else { device };
        let module = model.load_module(role, home)?;
        Ok(Stage {
            role: role.to_string(),
            module,
            home,
            device,
            kind,
            on_device: home == device,
        })
    }

    /// Moves the module to the compute device (a no-op without offload).
    pub fn enter(&mut self) {
        if !self.on_device {
            self.module.to(self.device, self.kind, false);
            self.on_device = true;
        }
    }

    /// Moves the module back home (a no-op without offload).
    pub fn leave(&mut self) {
        if self.on_device && self.home != self.device {
            self.module.to(self.home, self.kind, false);
            self.on_device = false;
            if self.device.is_cuda() {
                // Returns the freed blocks so the next stage can use them.
                tch::Cuda::synchronize(self.device_index());
            }
        }
    }

    fn device_index(&self) -> i64 {
        match self.device {
            Device::Cuda(i) => i as i64,
            _ => 0,
        }
    }

    fn err(&self, e: tch::TchError) -> ModelError {
        ModelError::Call {
            role: self.role.clone(),
            message: e.to_string().lines().next().unwrap_or("").to_string(),
        }
    }

    pub fn forward(&mut self, inputs: &[Tensor]) -> Result<Tensor, ModelError> {
        self.enter();
        self.module.forward_ts(inputs).map_err(|e| self.err(e))
    }

    /// A method returning one tensor.
    pub fn method(&mut self, method: &str, inputs: &[Tensor]) -> Result<Tensor, ModelError> {
        self.enter();
        self.module
            .method_ts(method, inputs)
            .map_err(|e| self.err(e))
    }

    /// A method returning a tuple of tensors (or one tensor).
    pub fn call_tuple(
        &mut self,
        method: &str,
        inputs: &[Tensor],
    ) -> Result<Vec<Tensor>, ModelError> {
        self.enter();
        let args: Vec<IValue> = inputs
            .iter()
            .map(|t| IValue::Tensor(t.shallow_clone()))
            .collect();
        let out = if method == "forward" {
            self.module.forward_is(&args)
        } else {
            self.module.method_is(method, &args)
        }
        .map_err(|e| self.err(e))?;
        flatten(out).ok_or_else(|| ModelError::Call {
            role: self.role.clone(),
            message: format!("{method} did not return tensors"),
        })
    }

    pub fn named_parameters(&self) -> Result<Vec<(String, Tensor)>, ModelError> {
        self.module.named_parameters().map_err(|e| self.err(e))
    }
}

fn flatten(value: IValue) -> Option<Vec<Tensor>> {
    match value {
        IValue::Tensor(t) => Some(vec![t]),
        IValue::Tuple(items) | IValue::GenericList(items) => {
            let mut out = Vec::new();
            for item in items {
                out.extend(flatten(item)?);
            }
            Some(out)
        }
        IValue::TensorList(ts) => Some(ts),
        _ => None,
    }
}

/// A tokenizer with its pad token and the text encoder it feeds.
pub struct TextEncoder {
    pub tokenizer: ClipTokenizer,
    pub pad_token: i64,
    pub stage: Stage,
}

pub struct SdModel {
    pub name: String,
    pub variant: Variant,
    pub config: SdConfig,
    pub device: Device,
    pub offload: bool,
    pub encoders: Vec<TextEncoder>,
    pub unet: Stage,
    pub vae_encoder: Option<Stage>,
    pub vae_decoder: Stage,
    /// The model folder's sha256 short hash for infotext (`Model hash`), from the UNet file.
    pub hash: String,
}

fn check_device(model: &InstalledModel, device: Device) -> Result<(), ModelError> {
    let exported = model.manifest.device.as_str();
    let cuda_export = exported.starts_with("cuda");
    if cuda_export != device.is_cuda() && !exported.is_empty() {
        return Err(ModelError::WrongDevice {
            path: model.manifest_path().display().to_string(),
            exported: exported.to_string(),
            device: if device.is_cuda() { "cuda" } else { "cpu" }.to_string(),
        });
    }
    Ok(())
}

impl SdModel {
    pub fn load(model: &InstalledModel, device: Device, offload: bool) -> Result<Self, ModelError> {
        let bad = |message: String| ModelError::Manifest {
            manifest: model.manifest_path().display().to_string(),
            message,
        };
        if model.manifest.family != "sd" {
            return Err(bad(format!(
                "family '{}' is not an SD model",
                model.manifest.family
            )));
        }
        let variant = Variant::parse(&model.manifest.variant).ok_or_else(|| {
            bad(format!(
                "variant '{}': use sd15, sd21 or sdxl",
                model.manifest.variant
            ))
        })?;
        check_device(model, device)?;
        let config = SdConfig::read(model)?;
        let kind = config.kind;
        let cfg = &model.manifest.config;
        let mut encoders = Vec::new();
        let roles: &[(&str, &str, &str)] = if variant.is_xl() {
            &[
                ("tokenizer", "text_encoder", "pad_token"),
                ("tokenizer_2", "text_encoder_2", "pad_token_2"),
            ]
        } else {
            &[("tokenizer", "text_encoder", "pad_token")]
        };
        for (i, (tok, enc, pad)) in roles.iter().enumerate() {
            let default_pad = if i == 0 && variant != Variant::Sd21 {
                crate::engine::clip::tokenizer::EOT
            } else {
                0
            };
            let pad_token = lookup(cfg, pad)
                .and_then(|v| v.as_integer())
                .unwrap_or(default_pad);
            encoders.push(TextEncoder {
                tokenizer: ClipTokenizer::load(&model.file(tok)?)?,
                pad_token,
                stage: Stage::load(model, enc, device, kind, offload)?,
            });
        }
        let unet = Stage::load(model, "unet", device, kind, offload)?;
        let vae_encoder = if model.manifest.files.contains_key("vae_encoder") {
            Some(Stage::load(
                model,
                "vae_encoder",
                device,
                config.vae_kind,
                offload,
            )?)
        } else {
            None
        };
        let vae_decoder = Stage::load(model, "vae_decoder", device, config.vae_kind, offload)?;
        let hash = model
            .manifest
            .files
            .get("unet")
            .map(|f| f.sha256.chars().take(10).collect())
            .unwrap_or_default();
        Ok(SdModel {
            name: model.name().to_string(),
            variant,
            config,
            device,
            offload,
            encoders,
            unet,
            vae_encoder,
            vae_decoder,
            hash,
        })
    }

    pub fn is_inpaint(&self) -> bool {
        self.config.in_channels == 9
    }

    /// Every module that LoRA can patch, by the attribute its parameters start with.
    pub fn stages_mut(&mut self) -> Vec<&mut Stage> {
        let mut out: Vec<&mut Stage> = self.encoders.iter_mut().map(|e| &mut e.stage).collect();
        out.push(&mut self.unet);
        out
    }
}

pub struct ControlNet {
    pub name: String,
    pub stage: Stage,
    pub variant: Variant,
}

impl ControlNet {
    pub fn load(model: &InstalledModel, device: Device, offload: bool) -> Result<Self, ModelError> {
        let bad = |message: String| ModelError::Manifest {
            manifest: model.manifest_path().display().to_string(),
            message,
        };
        if model.manifest.family != "controlnet" {
            return Err(bad(format!(
                "family '{}' is not a ControlNet",
                model.manifest.family
            )));
        }
        let variant = Variant::parse(&model.manifest.variant).ok_or_else(|| {
            bad(format!(
                "variant '{}': use sd15, sd21 or sdxl",
                model.manifest.variant
            ))
        })?;
        check_device(model, device)?;
        let kind = kind_of(
            lookup(&model.manifest.config, "dtype")
                .and_then(|v| v.as_str())
                .unwrap_or(model.manifest.dtype.as_str()),
        );
        Ok(ControlNet {
            name: model.name().to_string(),
            stage: Stage::load(model, "controlnet", device, kind, offload)?,
            variant,
        })
    }
}
