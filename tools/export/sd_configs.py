"""Stable Diffusion architectures for ``--random-init``: tiny configs of the real architectures (tests,
seconds on 2 CPU cores) and the real full-size configs (``sd15``, ``sd21``, ``sdxl``: GPU benchmarks).

Every model built here has random weights (seeded with ``torch.manual_seed``, so a name and a seed
always give the same weights) and is marked ``random-init`` in the manifest.

* ``tiny-sd15``: UNet2DConditionModel (block_out_channels (32, 64), 2 layers per block, one
  CrossAttn down/up block, cross_attention_dim 32), CLIPTextModel (hidden 32, 3 layers, the real
  49408-token vocabulary so the real BPE tokenizer works), a 4-level AutoencoderKL (latents are 1/8
  of the image, as in SD), PNDM scheduler config of SD 1.5.
* ``tiny-sd21v``: as tiny-sd15 with v-prediction, per-block attention_head_dim, linear projections,
  gelu text encoder, OpenCLIP's pad token 0, the DDIM scheduler config of SD 2.1.
* ``tiny-sdxl``: two text encoders (CLIPTextModel + CLIPTextModelWithProjection), text_time added
  conditioning, transformer_layers_per_block (1, 2), Euler scheduler config of SDXL base.
* ``tiny-sd15-inpaint``: tiny-sd15 with a 9-channel UNet.

ControlNets: ``build_controlnet(name)`` for ``tiny-sd15``, ``tiny-sdxl``, ``sd15``, ``sd21``, ``sdxl``:
the ControlNetModel diffusers makes from that UNet (``ControlNetModel.from_unet``), with the zero
convolutions re-randomised so that random residuals are not all zero.
"""
from __future__ import annotations

import gzip
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .common import ExportError

BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"

# Scheduler configs as the real repositories' scheduler/scheduler_config.json say.
_SCHED_COMMON = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
}
SCHEDULERS = {
    "sd15": ("PNDMScheduler", {**_SCHED_COMMON, "prediction_type": "epsilon"}),
    "sd21": ("DDIMScheduler", {**_SCHED_COMMON, "prediction_type": "v_prediction"}),
    "sdxl": ("EulerDiscreteScheduler", {**_SCHED_COMMON, "prediction_type": "epsilon", "interpolation_type": "linear",
                                        "timestep_spacing": "leading", "use_karras_sigmas": False,
                                        "sample_max_value": 1.0}),
}


@dataclass(frozen=True)
class SdArch:
    name: str
    variant: str  # sd15 | sd21 | sdxl
    unet: dict
    vae: dict
    text_encoder: dict
    text_encoder_2: dict | None  # SDXL: CLIPTextModelWithProjection
    pad_token: str  # tokenizer's pad token ("<|endoftext|>" = 49407, "!" = 0)
    pad_token_2: str | None
    scheduler: str  # key of SCHEDULERS
    inpaint: bool = False


_TINY_TEXT = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=3,
                  vocab_size=49408, max_position_embeddings=77, bos_token_id=0, eos_token_id=2, pad_token_id=1,
                  layer_norm_eps=1e-5, projection_dim=32)
_TINY_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
                 block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64, scaling_factor=0.18215)
_TINY_UNET15 = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=2,
                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                    attention_head_dim=8, norm_num_groups=32)

_FULL_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
                 block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512, scaling_factor=0.18215)
_CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
               vocab_size=49408, max_position_embeddings=77, bos_token_id=0, eos_token_id=2, pad_token_id=1,
               hidden_act="quick_gelu", projection_dim=768)
_UNET15 = dict(sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
               layers_per_block=2, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
               up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768,
               attention_head_dim=8, norm_num_groups=32)

ARCHS = {
    "tiny-sd15": SdArch("tiny-sd15", "sd15", _TINY_UNET15, _TINY_VAE, {**_TINY_TEXT, "hidden_act": "quick_gelu"},
                        None, "<|endoftext|>", None, "sd15"),
    "tiny-sd15-inpaint": SdArch("tiny-sd15-inpaint", "sd15", {**_TINY_UNET15, "in_channels": 9}, _TINY_VAE,
                                {**_TINY_TEXT, "hidden_act": "quick_gelu"}, None, "<|endoftext|>", None, "sd15",
                                inpaint=True),
    "tiny-sd21v": SdArch("tiny-sd21v", "sd21", {**_TINY_UNET15, "attention_head_dim": (2, 4),
                                                "use_linear_projection": True},
                         _TINY_VAE, {**_TINY_TEXT, "hidden_act": "gelu"}, None, "!", None, "sd21"),
    "tiny-sdxl": SdArch(
        "tiny-sdxl", "sdxl",
        dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=2,
             down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
             up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
             use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
             transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=32 + 6 * 8,
             cross_attention_dim=64, norm_num_groups=32),
        {**_TINY_VAE, "scaling_factor": 0.13025, "force_upcast": True},
        {**_TINY_TEXT, "hidden_act": "quick_gelu"}, {**_TINY_TEXT, "hidden_act": "gelu"},
        "<|endoftext|>", "!", "sdxl"),
    "sd15": SdArch("sd15", "sd15", _UNET15, _FULL_VAE, _CLIP_L, None, "<|endoftext|>", None, "sd15"),
    "sd15-inpaint": SdArch("sd15-inpaint", "sd15", {**_UNET15, "in_channels": 9}, _FULL_VAE, _CLIP_L, None,
                           "<|endoftext|>", None, "sd15", inpaint=True),
    "sd21": SdArch("sd21", "sd21", {**_UNET15, "sample_size": 96, "cross_attention_dim": 1024,
                                    "attention_head_dim": (5, 10, 20, 20), "use_linear_projection": True,
                                    "upcast_attention": True},
                   {**_FULL_VAE, "sample_size": 768},
                   dict(_CLIP_L, hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                        num_hidden_layers=23, hidden_act="gelu", projection_dim=512),
                   None, "!", None, "sd21"),
    "sdxl": SdArch(
        "sdxl", "sdxl",
        dict(sample_size=128, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280), layers_per_block=2,
             down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
             up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
             attention_head_dim=(5, 10, 20), use_linear_projection=True, addition_embed_type="text_time",
             addition_time_embed_dim=256, transformer_layers_per_block=(1, 2, 10),
             projection_class_embeddings_input_dim=2816, cross_attention_dim=2048, norm_num_groups=32),
        {**_FULL_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True},
        _CLIP_L,
        dict(_CLIP_L, hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
             hidden_act="gelu", projection_dim=1280),
        "<|endoftext|>", "!", "sdxl"),
}
CONTROLNET_ARCHS = ("tiny-sd15", "tiny-sdxl", "sd15", "sd21", "sdxl")


def arch(name: str) -> SdArch:
    if name not in ARCHS:
        raise ExportError(f"--random-init {name}: unknown config (known: {', '.join(ARCHS)})")
    return ARCHS[name]


def bpe_path() -> Path:
    """The CLIP BPE merges file the CLIP exporter ships too (open_clip's copy)."""
    import open_clip

    p = Path(open_clip.__file__).parent / BPE_NAME
    if not p.is_file():
        raise ExportError(f"{p}: the CLIP BPE vocabulary is missing from the open_clip package")
    return p


def _bytes_to_unicode() -> list[str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def clip_tokenizer(pad_token: str):
    """A transformers CLIPTokenizer made from the CLIP BPE file (vocab.json and merges.txt are derived from
    it exactly as openai/clip-vit-large-patch14's are), max length 77."""
    from transformers import CLIPTokenizer

    merges = gzip.open(bpe_path()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = _bytes_to_unicode()
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as d:
        Path(d, "vocab.json").write_text(json.dumps({v: i for i, v in enumerate(vocab)}))
        Path(d, "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
        return CLIPTokenizer.from_pretrained(d, pad_token=pad_token, model_max_length=77)


def scheduler(key: str):
    import diffusers

    cls, cfg = SCHEDULERS[key]
    return getattr(diffusers, cls).from_config(cfg)


def build_pipeline(name: str, seed: int = 0, dtype=None):
    """A diffusers pipeline of architecture ``name`` with random weights (seeded)."""
    import torch
    from diffusers import (AutoencoderKL, StableDiffusionInpaintPipeline, StableDiffusionPipeline,
                           StableDiffusionXLPipeline, UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    a = arch(name)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**a.unet)
    vae = AutoencoderKL(**a.vae)
    te = CLIPTextModel(CLIPTextConfig(**a.text_encoder))
    parts = dict(unet=unet.eval(), vae=vae.eval(), text_encoder=te.eval(), tokenizer=clip_tokenizer(a.pad_token),
                 scheduler=scheduler(a.scheduler))
    if a.variant == "sdxl":
        parts["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig(**a.text_encoder_2)).eval()
        parts["tokenizer_2"] = clip_tokenizer(a.pad_token_2)
        pipe = StableDiffusionXLPipeline(**parts, force_zeros_for_empty_prompt=True)
    elif a.inpaint:
        pipe = StableDiffusionInpaintPipeline(**parts, safety_checker=None, feature_extractor=None,
                                              requires_safety_checker=False)
    else:
        pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    if dtype is not None:
        pipe = pipe.to(dtype=dtype)
    return pipe


def build_controlnet(name: str, seed: int = 0):
    """A ControlNetModel for architecture ``name``'s UNet, random weights (zero convs re-randomised)."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    if name not in CONTROLNET_ARCHS:
        raise ExportError(f"--random-init {name}: unknown ControlNet config (known: {', '.join(CONTROLNET_ARCHS)})")
    a = arch(name)
    torch.manual_seed(seed + 1000)
    unet = UNet2DConditionModel(**a.unet)
    small = name.startswith("tiny-")
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 16, 32, 32) if small
                                   else (16, 32, 96, 256))
    g = torch.Generator().manual_seed(seed + 2000)
    with torch.no_grad():
        zero = list(cn.controlnet_down_blocks) + [cn.controlnet_mid_block, cn.controlnet_cond_embedding.conv_out]
        for m in zero:
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.05)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.05)
    return cn.eval()
