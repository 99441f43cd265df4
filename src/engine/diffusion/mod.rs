//! Stable Diffusion (1.5, 2.1, SDXL) on TorchScript modules exported by tools/export.
//!
//! Pure pieces (no model needed): `scheduler`, `seed`, `prompt`, `infotext`, `lora_keys`.
//! Model pieces: `model` (loading the exported modules), `pipeline` (txt2img, img2img,
//! inpaint, ControlNet, SDXL), `lora` (fusing into module parameters), `vae_tiling`,
//! `preview` (latent-to-RGB approximation), `inputs` (LoRA files, init/mask/control images,
//! infotext and file names shared by the CLI, the queue and the TUI).
pub mod infotext;
pub mod inputs;
pub mod lora;
pub mod lora_keys;
pub mod model;
pub mod pipeline;
pub mod preview;
pub mod prompt;
pub mod request;
pub mod scheduler;
pub mod seed;
pub mod vae_tiling;
