"""Stable Diffusion / ControlNet export to TorchScript (the contract: /docs/models.md, "Stable Diffusion").

Command lines::

    # random-weight test models (tiny configs of the real architectures; --save-source writes the same
    # weights as a diffusers folder, for reference scripts):
    python -m tools.export import-sd --random-init tiny-sd15 --models DIR --name tiny-sd15 --save-source SRC_DIR
    python -m tools.export import-sd --random-init tiny-sd21v|tiny-sdxl|tiny-sd15-inpaint --models DIR --name NAME --save-source SRC_DIR
    python -m tools.export import-controlnet --random-init tiny-sd15|tiny-sdxl --models DIR --name NAME --save-source SRC_DIR
    # full-size random weights (GPU benchmarks), fp16 on CUDA:
    python -m tools.export import-sd --random-init sd15 --models DIR --name sd15-random --device cuda --dtype float16
    # real models from the user's disk (no internet needed):
    python -m tools.export import-sd PATH/TO/diffusers-folder --models DIR --name my-model
    python -m tools.export import-sd PATH/TO/model.safetensors --config sd15|sd21|sdxl|sd15-inpaint|DIFFUSERS_DIR --models DIR --name my-model
    python -m tools.export import-controlnet PATH/TO/controlnet-diffusers-folder --models DIR --name my-cn

Options: ``--device cpu|cuda``, ``--dtype float32|float16`` (float16 needs cuda), ``--attention sdpa|sliced``,
``--force`` (replace an existing model folder), ``--seed`` (of --random-init), ``--json`` (print the report).

A single-file checkpoint (original LDM/SGM layout) is converted with diffusers' own ``from_single_file``.
That loader needs the diffusers configs of the architecture (model_index.json, unet/vae/text encoder
config.json, tokenizer, scheduler); it would fetch them from the Hugging Face Hub, which we never do.
``--config`` gives them: either a diffusers folder of the same architecture (only its config and
tokenizer files are read, the weights come from the checkpoint), or a built-in name (sd15, sd15-inpaint,
sd21, sdxl), whose configs this module writes to a temporary folder.

Modules (all ``torch.jit.trace``d from small wrappers; parameter names are ``<attr>.<diffusers key>``):

* ``text_encoder`` / ``text_encoder_2``: ``forward(ids i64 [B, 77]) -> (hidden [B, 77, D], pooled [B, P])``;
  parameters ``text_encoder.text_model.…`` / ``text_encoder_2.text_model.…`` whatever the transformers version
* ``unet``: ``forward(sample, timestep f32 [B], ehs [B, S, D][, text_embeds, time_ids]) -> noise_pred`` and
  ``forward_control(sample, timestep, ehs[, text_embeds, time_ids], down_0 … down_{N-1}, mid)``
* ``vae_encoder``: ``forward(image [B, 3, H, W] in [-1, 1]) -> (mean, std)``; ``vae_decoder``: ``forward(z) -> image``
* ``controlnet``: ``forward(sample, timestep, ehs, cond [B, 3, H, W] in [0, 1][, text_embeds, time_ids]) -> (down…, mid)``

Tracing: the UNet takes a Python branch (``forward_upsample_size``) when the latent size is not a multiple
of 2**num_upsamplers. We trace at such a size (odd height and width) so that the upsamplers take their
output size from the skip connections, which the trace records as dynamic shapes: that path gives the
same result for every size. Traces use batch 2 and are checked on batch 1 and 3, other sizes and S = 154.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .common import ExportError, atomic_copy, atomic_path, quiet_warnings, staged_folder, write_manifest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the Hub: every config comes from disk
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
CONTEXT = 77
# Largest allowed |traced - eager| relative to the output's scale, per dtype (float32 traced vs eager differ
# only by kernel choice; float16 accumulates rounding).
TOLERANCE = {"float32": 1e-4, "float16": 2e-2}


# --------------------------------------------------------------------------- wrappers


def _wrappers():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class TextEncoder(nn.Module):
        """hidden = last_hidden_state (SD1.5/2.1) or hidden_states[-2] (SDXL); pooled = pooler_output or text_embeds."""

        def __init__(self, attr: str, te, penultimate: bool, projected: bool):
            super().__init__()
            self.attr, self.penultimate, self.projected = attr, penultimate, projected
            # transformers >= 5.6 flattened CLIPTextModel (no `text_model.` level); keep the classic names
            # (`text_encoder.text_model.encoder.layers.0…`) that LoRA files and older exports use.
            self.flat = not hasattr(te, "text_model")
            if self.flat:
                holder = nn.Module()
                holder.text_model = te
                setattr(self, attr, holder)
            else:
                setattr(self, attr, te)

        def forward(self, input_ids):
            m = getattr(self, self.attr)
            m = m.text_model if self.flat else m
            out = m(input_ids, output_hidden_states=self.penultimate, return_dict=True)
            hidden = out.hidden_states[-2] if self.penultimate else out.last_hidden_state
            pooled = out.text_embeds if self.projected else out.pooler_output
            return hidden, pooled

    class UNet(nn.Module):
        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, encoder_hidden_states):
            return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]

        def forward_control(self, sample, timestep, encoder_hidden_states, *residuals):
            return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                             down_block_additional_residuals=tuple(residuals[:-1]),
                             mid_block_additional_residual=residuals[-1], return_dict=False)[0]

    class UNetXL(nn.Module):
        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, encoder_hidden_states, text_embeds, time_ids):
            return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                             added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids}, return_dict=False)[0]

        def forward_control(self, sample, timestep, encoder_hidden_states, text_embeds, time_ids, *residuals):
            return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                             added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids},
                             down_block_additional_residuals=tuple(residuals[:-1]),
                             mid_block_additional_residual=residuals[-1], return_dict=False)[0]

    class VaeEncoder(nn.Module):
        """AutoencoderKL.encode(x).latent_dist -> (mean, std); holds only the encoder half as `vae`."""

        def __init__(self, vae):
            super().__init__()
            self.vae = nn.Module()
            self.vae.encoder = vae.encoder
            self.vae.quant_conv = vae.quant_conv
            self.has_quant = vae.quant_conv is not None

        def forward(self, image):
            h = self.vae.encoder(image)
            if self.has_quant:
                h = self.vae.quant_conv(h)
            mean, logvar = torch.chunk(h, 2, dim=1)
            logvar = torch.clamp(logvar, -30.0, 20.0)  # as diffusers' DiagonalGaussianDistribution
            return mean, torch.exp(0.5 * logvar)

    class VaeDecoder(nn.Module):
        def __init__(self, vae):
            super().__init__()
            self.vae = nn.Module()
            self.vae.decoder = vae.decoder
            self.vae.post_quant_conv = vae.post_quant_conv
            self.has_quant = vae.post_quant_conv is not None

        def forward(self, z):
            if self.has_quant:
                z = self.vae.post_quant_conv(z)
            return self.vae.decoder(z)

    class ControlNet(nn.Module):
        def __init__(self, cn):
            super().__init__()
            self.controlnet = cn

        def forward(self, sample, timestep, encoder_hidden_states, cond):
            down, mid = self.controlnet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                                        controlnet_cond=cond, conditioning_scale=1.0, return_dict=False)
            return tuple(down) + (mid,)

    class ControlNetXL(nn.Module):
        def __init__(self, cn):
            super().__init__()
            self.controlnet = cn

        def forward(self, sample, timestep, encoder_hidden_states, cond, text_embeds, time_ids):
            down, mid = self.controlnet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                                        controlnet_cond=cond, conditioning_scale=1.0,
                                        added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids},
                                        return_dict=False)
            return tuple(down) + (mid,)

    class HeadSlicedAttnProcessor:
        """Attention one head at a time (softmax(QK^T/sqrt(d))V as diffusers' AttnProcessor computes it):
        the [B, S, S] score matrix of one head is the peak, not all heads'. The loop runs over the heads,
        a constant of the layer, so the trace holds for every batch size and image size."""

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *a, **k):
            residual = hidden_states
            if attn.spatial_norm is not None:
                hidden_states = attn.spatial_norm(hidden_states, temb)
            input_ndim = hidden_states.ndim
            if input_ndim == 4:
                batch_size, channel, height, width = hidden_states.shape
                hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
            batch_size = hidden_states.shape[0]
            if attention_mask is not None:
                raise ExportError("sliced attention: attention masks are not supported")
            if attn.group_norm is not None:
                hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
            query = attn.to_q(hidden_states)
            if encoder_hidden_states is None:
                encoder_hidden_states = hidden_states
            elif attn.norm_cross:
                encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
            key = attn.to_k(encoder_hidden_states)
            value = attn.to_v(encoder_hidden_states)
            head_dim = key.shape[-1] // attn.heads
            query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            outs = []
            for h in range(attn.heads):
                q, kk = query[:, h], key[:, h]
                if attn.upcast_attention:
                    q, kk = q.float(), kk.float()
                scores = torch.bmm(q, kk.transpose(-1, -2)) * attn.scale
                if attn.upcast_softmax:
                    scores = scores.float()
                probs = scores.softmax(dim=-1).to(value.dtype)
                outs.append(torch.bmm(probs, value[:, h]))
            hidden_states = torch.stack(outs, dim=2).reshape(batch_size, -1, attn.heads * head_dim)
            hidden_states = hidden_states.to(query.dtype)
            hidden_states = attn.to_out[0](hidden_states)
            hidden_states = attn.to_out[1](hidden_states)
            if input_ndim == 4:
                hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
            if attn.residual_connection:
                hidden_states = hidden_states + residual
            return hidden_states / attn.rescale_output_factor

    _ = F
    return dict(TextEncoder=TextEncoder, UNet=UNet, UNetXL=UNetXL, VaeEncoder=VaeEncoder, VaeDecoder=VaeDecoder,
                ControlNet=ControlNet, ControlNetXL=ControlNetXL, HeadSlicedAttnProcessor=HeadSlicedAttnProcessor)


def set_attention(module, attention: str) -> None:
    """Install the attention implementation on every Attention layer of a UNet/ControlNet/VAE."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    if attention == "sdpa":
        module.set_attn_processor(AttnProcessor2_0())
    elif attention == "sliced":
        module.set_attn_processor(_wrappers()["HeadSlicedAttnProcessor"]())
    else:
        raise ExportError(f"--attention {attention}: use sdpa or sliced")


# --------------------------------------------------------------------------- sources


@dataclass
class SdSource:
    pipe: object  # a diffusers pipeline (unet, vae, text_encoder[, text_encoder_2], tokenizer[s], scheduler)
    variant: str  # sd15 | sd21 | sdxl
    source: str
    random_init: bool = False
    extra: dict = field(default_factory=dict)


def _quiet_libraries() -> None:
    """No progress bars or info chatter from diffusers/transformers (errors still surface as exceptions)."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()


def _variant_of(unet_config, has_te2: bool) -> str:
    if has_te2 or unet_config.get("addition_embed_type") == "text_time":
        return "sdxl"
    return "sd21" if int(unet_config.get("cross_attention_dim") or 768) == 1024 else "sd15"


def _write_builtin_config(name: str, folder: Path) -> Path:
    """A diffusers config-only folder for a built-in architecture (from_single_file's `config=`)."""
    import diffusers
    from transformers import CLIPTextConfig

    from . import sd_configs

    a = sd_configs.arch(name)
    cls = ("StableDiffusionXLPipeline" if a.variant == "sdxl" else
           "StableDiffusionInpaintPipeline" if a.inpaint else "StableDiffusionPipeline")
    index = {"_class_name": cls, "_diffusers_version": diffusers.__version__,
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "scheduler": ["diffusers", sd_configs.SCHEDULERS[a.scheduler][0]]}
    if a.variant == "sdxl":
        index.update(text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
                     tokenizer_2=["transformers", "CLIPTokenizer"], force_zeros_for_empty_prompt=True)
    else:
        index.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))

    def dump(sub, cls_name, cfg):
        (folder / sub).mkdir(exist_ok=True)
        cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}
        (folder / sub / "config.json").write_text(json.dumps({"_class_name": cls_name, **cfg}, indent=2))

    dump("unet", "UNet2DConditionModel", a.unet)
    dump("vae", "AutoencoderKL", a.vae)
    CLIPTextConfig(**a.text_encoder, architectures=["CLIPTextModel"]).save_pretrained(folder / "text_encoder")
    sd_configs.clip_tokenizer(a.pad_token).save_pretrained(folder / "tokenizer")
    if a.text_encoder_2:
        CLIPTextConfig(**a.text_encoder_2, architectures=["CLIPTextModelWithProjection"]).save_pretrained(
            folder / "text_encoder_2")
        sd_configs.clip_tokenizer(a.pad_token_2).save_pretrained(folder / "tokenizer_2")
    sd_configs.scheduler(a.scheduler).save_pretrained(folder / "scheduler")
    return folder


def load_sd(source: str | None, config: str | None = None, random_init: str | None = None, seed: int = 0,
            save_source: str | None = None) -> SdSource:
    """A diffusers SD pipeline from a diffusers folder, a single-file checkpoint (with ``config``),
    or random weights (``random_init`` = a name of sd_configs.ARCHS)."""
    quiet_warnings()
    _quiet_libraries()
    import diffusers

    from . import sd_configs

    if random_init:
        pipe = sd_configs.build_pipeline(random_init, seed)
        src = SdSource(pipe, sd_configs.arch(random_init).variant, f"random-init {random_init} (seed {seed})", True)
    else:
        if not source:
            raise ExportError("give a SOURCE (diffusers folder or .safetensors/.ckpt file) or --random-init CONFIG")
        path = Path(source)
        if not path.exists():
            raise ExportError(f"{path}: not found")
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise ExportError(f"{path}: not a diffusers pipeline folder (no model_index.json)")
            try:
                pipe = diffusers.DiffusionPipeline.from_pretrained(str(path), local_files_only=True,
                                                                   safety_checker=None, requires_safety_checker=False)
            except Exception as e:  # noqa: BLE001 - name the folder and the cause
                raise ExportError(f"{path}: cannot be loaded as a diffusers pipeline ({type(e).__name__}: {e})") from e
            kind = f"diffusers folder {path.name}"
        else:
            if path.suffix.lower() not in (".safetensors", ".ckpt", ".pt", ".pth", ".bin"):
                raise ExportError(f"{path}: not a .safetensors/.ckpt checkpoint nor a diffusers folder")
            if not config:
                raise ExportError(
                    f"{path}: a single-file checkpoint needs --config: a built-in architecture "
                    f"({', '.join(n for n in sd_configs.ARCHS if not n.startswith('tiny-'))}) or a diffusers folder "
                    "of the same architecture (its config and tokenizer files are read, not its weights)")
            with tempfile.TemporaryDirectory(prefix="atelier-sdcfg-") as tmp:
                cfg_dir = Path(config)
                if not cfg_dir.is_dir():
                    if config not in sd_configs.ARCHS:
                        raise ExportError(f"--config {config}: neither a diffusers folder nor a built-in "
                                          f"architecture ({', '.join(sd_configs.ARCHS)})")
                    cfg_dir = _write_builtin_config(config, Path(tmp) / config)
                if not (cfg_dir / "model_index.json").is_file():
                    raise ExportError(f"{cfg_dir}: not a diffusers pipeline folder (no model_index.json)")
                cls_name = json.loads((cfg_dir / "model_index.json").read_text()).get("_class_name", "")
                cls = getattr(diffusers, cls_name, None)
                if cls is None or not hasattr(cls, "from_single_file"):
                    raise ExportError(f"{cfg_dir / 'model_index.json'}: pipeline class {cls_name!r} cannot load single files")
                try:
                    pipe = cls.from_single_file(str(path), config=str(cfg_dir), local_files_only=True,
                                                safety_checker=None, requires_safety_checker=False)
                except Exception as e:  # noqa: BLE001
                    raise ExportError(f"{path}: cannot be converted with the {cls_name} configs of {config} "
                                      f"({type(e).__name__}: {e})") from e
            kind = f"single-file checkpoint {path.name} (config {config})"
        if getattr(pipe, "unet", None) is None or getattr(pipe, "vae", None) is None:
            raise ExportError(f"{path}: the pipeline has no UNet or VAE (not a Stable Diffusion model)")
        has_te2 = getattr(pipe, "text_encoder_2", None) is not None
        src = SdSource(pipe, _variant_of(pipe.unet.config, has_te2), kind, False)
    if save_source:
        with atomic_dir(save_source) as tmp:
            src.pipe.save_pretrained(str(tmp), safe_serialization=True)
    return src


def load_controlnet(source: str | None, random_init: str | None = None, seed: int = 0,
                    save_source: str | None = None):
    """(ControlNetModel, variant, source description, random_init)."""
    quiet_warnings()
    _quiet_libraries()
    from . import sd_configs

    if random_init:
        cn = sd_configs.build_controlnet(random_init, seed)
        desc, rnd = f"random-init controlnet {random_init} (seed {seed})", True
    else:
        if not source:
            raise ExportError("give a SOURCE (ControlNet diffusers folder) or --random-init CONFIG")
        path = Path(source)
        if not (path / "config.json").is_file():
            raise ExportError(f"{path}: not a diffusers ControlNet folder (no config.json)")
        from diffusers import ControlNetModel

        try:
            cn = ControlNetModel.from_pretrained(str(path), local_files_only=True).eval()
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"{path}: cannot be loaded as a diffusers ControlNet ({type(e).__name__}: {e})") from e
        desc, rnd = f"diffusers ControlNet folder {path.name}", False
    variant = _variant_of(cn.config, False)
    if save_source:
        with atomic_dir(save_source) as tmp:
            cn.save_pretrained(str(tmp), safe_serialization=True)
    return cn, variant, desc, rnd


class atomic_dir:
    """Write a folder next to ``path`` and swap it in on success (a half-written source never appears)."""

    def __init__(self, path):
        self.path = Path(path)

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        return self.tmp

    def __exit__(self, et, ev, tb):
        import shutil

        if et is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.tmp, self.path)
        return False


# --------------------------------------------------------------------------- example inputs


def _ids(batch: int, g, pad: int):
    import torch

    ids = torch.full((batch, CONTEXT), pad, dtype=torch.long)
    for i in range(batch):
        n = 4 + 7 * i
        ids[i, 0] = 49406
        ids[i, 1:n] = torch.randint(1, 49406, (n - 1,), generator=g)
        ids[i, n] = 49407
    return ids


def _time_ids(batch: int, h: int, w: int, device, dtype):
    import torch

    row = torch.tensor([h * 8.0, w * 8.0, 0.0, 0.0, h * 8.0, w * 8.0])
    return row.repeat(batch, 1).to(device, dtype)


def unet_inputs(unet, batch: int, h: int, w: int, seq: int, device, dtype, seed: int, sdxl: bool,
                text_embeds_dim: int = 0):
    """Random (sample, timestep, ehs[, text_embeds, time_ids]) for a UNet."""
    import torch

    g = torch.Generator().manual_seed(seed)
    c = unet.config
    x = [torch.randn(batch, c.in_channels, h, w, generator=g),
         torch.rand(batch, generator=g) * 999.0,
         torch.randn(batch, seq, c.cross_attention_dim, generator=g)]
    if sdxl:
        x.append(torch.randn(batch, text_embeds_dim, generator=g))
    x = [t.to(device, dtype) for t in x]
    if sdxl:
        x.append(_time_ids(batch, h, w, device, dtype))
    return tuple(x)


def residual_shapes(unet, batch: int, h: int, w: int) -> list[tuple]:
    """The shapes of the down residuals and the mid residual a ControlNet gives for this UNet."""
    shapes = [(batch, unet.config.block_out_channels[0], h, w)]
    hh, ww = h, w
    for i, blk in enumerate(unet.down_blocks):
        ch = unet.config.block_out_channels[i]
        for _ in blk.resnets:
            shapes.append((batch, ch, hh, ww))
        if blk.downsamplers:
            hh, ww = (hh + 1) // 2, (ww + 1) // 2
            shapes.append((batch, ch, hh, ww))
    shapes.append((batch, unet.config.block_out_channels[-1], hh, ww))
    return shapes


def _rand_like_shapes(shapes, g, device, dtype):
    import torch

    return tuple(torch.randn(s, generator=g).to(device, dtype) * 0.5 for s in shapes)


# --------------------------------------------------------------------------- export


def _max_diff(a, b) -> float:
    import torch

    if isinstance(a, (tuple, list)):
        return max(_max_diff(x, y) for x, y in zip(a, b))
    return float((a.double() - b.double()).abs().max().item()) if torch.is_tensor(a) else abs(a - b)


def _scale(t) -> float:
    if isinstance(t, (tuple, list)):
        return max(_scale(x) for x in t)
    return max(float(t.double().abs().max().item()), 1.0)


def _save_trace(traced, path: Path):
    import torch

    with atomic_path(path) as tmp:
        torch.jit.save(traced, str(tmp))
    return torch.jit.load(str(path), map_location=None)


def _check(report: dict, key: str, loaded, eager, inputs, dtype: str, file: Path, method: str = "forward"):
    """Run the saved TorchScript and the eager module on ``inputs``; record and bound the max abs diff."""
    import torch

    with torch.no_grad():
        got = getattr(loaded, method)(*inputs)
        want = getattr(eager, method)(*inputs)
    d = _max_diff(got, want)
    rel = d / _scale(want)
    report.setdefault("max_abs_diff", {})[key] = d
    if not rel <= TOLERANCE[dtype]:
        raise ExportError(f"{file}: the traced module disagrees with diffusers on {key}: max abs diff {d:.3g} "
                          f"(relative {rel:.3g} > {TOLERANCE[dtype]})")
    return d


def _check_vs_sdpa(report: dict, key: str, loaded, eager, module, attention: str, inputs, dtype: str, file: Path,
                   method: str = "forward"):
    """With --attention sliced: the saved trace against the eager module with diffusers' AttnProcessor2_0."""
    if attention == "sdpa":
        return
    set_attention(module, "sdpa")
    try:
        _check(report, key + "_vs_sdpa", loaded, eager, inputs, dtype, file, method)
    finally:
        set_attention(module, attention)


def check_options(models_dir, name: str, device: str, dtype: str, force: bool) -> None:
    """The option errors, before anything is loaded."""
    import torch

    if dtype == "float16" and device != "cuda":
        raise ExportError("--dtype float16 needs --device cuda (half precision on the CPU is slow and inexact)")
    if device == "cuda" and not torch.cuda.is_available():
        raise ExportError("--device cuda: no CUDA device is available")
    if (Path(models_dir) / name).exists() and not force:
        raise ExportError(f"{Path(models_dir) / name}: exists (pass --force to replace it)")


def _trace_size(unet) -> tuple[int, int]:
    """A latent size that is not a multiple of 2**num_upsamplers (forces the dynamic upsample-size path)."""
    f = 2 ** unet.num_upsamplers
    return f + 1 if f > 1 else 3, f + 3 if f > 1 else 5


def export_sd(src: SdSource, models_dir: Path, name: str, device: str = "cpu", dtype: str = "float32",
              attention: str = "sdpa", force: bool = False, verify: bool = True) -> dict:
    import torch

    from . import sd_configs

    quiet_warnings()
    check_options(models_dir, name, device, dtype, force)
    t0 = time.time()
    W = _wrappers()
    tdtype = getattr(torch, dtype)
    pipe = src.pipe
    sdxl = src.variant == "sdxl"
    unet, vae, te = pipe.unet, pipe.vae, pipe.text_encoder
    te2 = getattr(pipe, "text_encoder_2", None) if sdxl else None
    for m in (unet, vae, te, te2):
        if m is not None:
            m.eval().requires_grad_(False)
    set_attention(unet, attention)
    set_attention(vae, attention)
    # SDXL's pipeline decodes in float32 when the VAE says force_upcast (its VAE overflows in float16);
    # the SD 1.5/2.1 pipelines ignore the flag.
    force_upcast = sdxl and bool(getattr(vae.config, "force_upcast", False))
    vae_dtype = "float32" if (dtype == "float16" and force_upcast) else dtype
    unet.to(device, tdtype)
    te.to(device, tdtype)
    if te2 is not None:
        te2.to(device, tdtype)
    vae.to(device, getattr(torch, vae_dtype))
    sched_cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(pipe.scheduler.config).items()
                 if v is not None and not k.startswith("_use_default")}
    sched_cfg["_class_name"] = type(pipe.scheduler).__name__
    prediction = sched_cfg.get("prediction_type", "epsilon")
    tok, tok2 = pipe.tokenizer, getattr(pipe, "tokenizer_2", None) if sdxl else None
    for t in (tok, tok2):
        if t is not None and len(t) != 49408:
            raise ExportError(f"{src.source}: tokenizer has {len(t)} tokens; only the CLIP BPE vocabulary (49408) is supported")

    report = {"name": name, "variant": src.variant, "device": device, "dtype": dtype, "attention": attention}
    files: dict[str, tuple[str, str]] = {}
    th, tw = _trace_size(unet)
    with staged_folder(models_dir, name) as stage:
        # text encoders
        encs = [("text_encoder", te, False)] + ([("text_encoder_2", te2, True)] if te2 is not None else [])
        pads = {"text_encoder": tok.pad_token_id, "text_encoder_2": tok2.pad_token_id if tok2 is not None else 0}
        dims = {}
        for role, enc, projected in encs:
            wrap = W["TextEncoder"](role, enc, penultimate=sdxl, projected=projected).eval()
            g = torch.Generator().manual_seed(11)
            with torch.no_grad():
                traced = torch.jit.trace(wrap, (_ids(2, g, pads[role]).to(device),), check_trace=False)
            f = stage / f"{role}.ts"
            loaded = _save_trace(traced, f)
            files[role] = (f.name, "torchscript")
            if verify:
                for b in (1, 3):
                    _check(report, f"{role}_b{b}", loaded, wrap, (_ids(b, g, pads[role]).to(device),), dtype, f)
            with torch.no_grad():
                hid, pooled = wrap(_ids(1, g, pads[role]).to(device))
            suffix = "" if role == "text_encoder" else "_2"
            dims[f"text_hidden{suffix}"] = int(hid.shape[-1])
            dims[f"text_pooled{suffix}"] = int(pooled.shape[-1])
        t_text = time.time()

        # UNet: forward and forward_control
        text_embeds_dim = dims.get("text_pooled_2", 0)
        wrap = (W["UNetXL"] if sdxl else W["UNet"])(unet).eval()
        ex = unet_inputs(unet, 2, th, tw, CONTEXT, device, tdtype, 21, sdxl, text_embeds_dim)
        g = torch.Generator().manual_seed(22)
        res = _rand_like_shapes(residual_shapes(unet, 2, th, tw), g, device, tdtype)
        with torch.no_grad():
            traced = torch.jit.trace_module(wrap, {"forward": ex, "forward_control": ex + res}, check_trace=False)
        f = stage / "unet.ts"
        loaded = _save_trace(traced, f)
        files["unet"] = (f.name, "torchscript")
        n_res = len(res) - 1
        if verify:
            f8 = 2 ** unet.num_upsamplers
            cases = [(1, f8 * 2, f8 * 2, 2 * CONTEXT), (3, f8 * 3, f8 * 2, CONTEXT), (2, f8 + 1, f8 * 2 + 3, CONTEXT)]
            for i, (b, h, w, s) in enumerate(cases):
                x = unet_inputs(unet, b, h, w, s, device, tdtype, 30 + i, sdxl, text_embeds_dim)
                _check(report, f"unet_b{b}_{h}x{w}_s{s}", loaded, wrap, x, dtype, f)
                r = _rand_like_shapes(residual_shapes(unet, b, h, w), g, device, tdtype)
                _check(report, f"unet_control_b{b}_{h}x{w}_s{s}", loaded, wrap, x + r, dtype, f, "forward_control")
                if i == 0:
                    _check_vs_sdpa(report, f"unet_b{b}_{h}x{w}_s{s}", loaded, wrap, unet, attention, x, dtype, f)
        t_unet = time.time()

        # VAE
        vdt = getattr(torch, vae_dtype)
        venc, vdec = W["VaeEncoder"](vae).eval(), W["VaeDecoder"](vae).eval()
        g = torch.Generator().manual_seed(41)
        scale = 2 ** (len(vae.config.block_out_channels) - 1)
        lat = vae.config.latent_channels
        img = (torch.rand(2, 3, th * scale, tw * scale, generator=g) * 2 - 1).to(device, vdt)
        z = torch.randn(2, lat, th, tw, generator=g).to(device, vdt)
        with torch.no_grad():
            tenc = torch.jit.trace(venc, (img,), check_trace=False)
            tdec = torch.jit.trace(vdec, (z,), check_trace=False)
        fe, fd = stage / "vae_encoder.ts", stage / "vae_decoder.ts"
        lenc, ldec = _save_trace(tenc, fe), _save_trace(tdec, fd)
        files["vae_encoder"], files["vae_decoder"] = (fe.name, "torchscript"), (fd.name, "torchscript")
        if verify:
            for b, h, w in ((1, 8, 8), (3, 5, 7)):
                im = (torch.rand(b, 3, h * scale, w * scale, generator=g) * 2 - 1).to(device, vdt)
                zz = torch.randn(b, lat, h, w, generator=g).to(device, vdt)
                _check(report, f"vae_decoder_b{b}_{h}x{w}", ldec, vdec, (zz,), vae_dtype, fd)
                _check(report, f"vae_encoder_b{b}_{h}x{w}", lenc, venc, (im,), vae_dtype, fe)
                _check_vs_sdpa(report, f"vae_decoder_b{b}_{h}x{w}", ldec, vdec, vae, attention, (zz,), vae_dtype, fd)
                # and against diffusers' own AutoencoderKL API, not only our wrapper
                with torch.no_grad():
                    dist = vae.encode(im).latent_dist
                    m, s = lenc(im)
                    dec = vae.decode(zz).sample
                    d = max(_max_diff(m, dist.mean), _max_diff(s, dist.std), _max_diff(ldec(zz), dec))
                report["max_abs_diff"][f"vae_vs_autoencoderkl_b{b}"] = d
                if d > TOLERANCE[vae_dtype] * max(_scale(dec), _scale(dist.mean)):
                    raise ExportError(f"{fe}: disagrees with AutoencoderKL.encode/decode (max abs diff {d:.3g})")
        t_vae = time.time()

        # tokenizer(s): the CLIP BPE merges file
        bpe = sd_configs.bpe_path()
        atomic_copy(bpe, stage / BPE_NAME)
        files["tokenizer"] = (BPE_NAME, "asset")
        if sdxl:
            files["tokenizer_2"] = (BPE_NAME, "asset")

        dims.update(down_residuals=n_res, latent_channels=int(lat), vae_scale_factor=int(scale),
                    cross_attention_dim=int(unet.config.cross_attention_dim),
                    unet_downscale=int(2 ** unet.num_upsamplers))
        if sdxl:
            dims["addition_time_embed_dim"] = int(unet.config.addition_time_embed_dim)
        config = {
            "random_init": bool(src.random_init),
            "scaling_factor": float(vae.config.scaling_factor),
            "in_channels": int(unet.config.in_channels),
            "prediction_type": str(prediction),
            "sample_size": int(unet.config.sample_size or 64),
            "dtype": dtype,
            "vae_dtype": vae_dtype,
            "device": device,
            "attention": attention,
            "pad_token": int(tok.pad_token_id),
        }
        if sdxl:
            config["pad_token_2"] = int(tok2.pad_token_id)
            config["force_zeros_for_empty_prompt"] = bool(pipe.config.get("force_zeros_for_empty_prompt", True))
            config["requires_aesthetics_score"] = bool(pipe.config.get("requires_aesthetics_score", False))
        config["force_upcast"] = force_upcast
        config["scheduler"] = sched_cfg
        write_manifest(stage, "sd", name, src.variant, device, dtype, src.random_init, src.source,
                       files=files, dims=dims, config=config)
    report.update(text_s=round(t_text - t0, 1), unet_s=round(t_unet - t_text, 1), vae_s=round(t_vae - t_unet, 1),
                  total_s=round(time.time() - t0, 1), down_residuals=n_res, trace_latent=[th, tw])
    return report


def export_controlnet(cn, variant: str, desc: str, random_init: bool, models_dir: Path, name: str,
                      device: str = "cpu", dtype: str = "float32", attention: str = "sdpa", force: bool = False,
                      verify: bool = True) -> dict:
    import torch

    quiet_warnings()
    check_options(models_dir, name, device, dtype, force)
    t0 = time.time()
    W = _wrappers()
    tdtype = getattr(torch, dtype)
    sdxl = variant == "sdxl"
    cn.eval().requires_grad_(False)
    set_attention(cn, attention)
    cn.to(device, tdtype)
    wrap = (W["ControlNetXL"] if sdxl else W["ControlNet"])(cn).eval()
    emb_dim = int(cn.config.projection_class_embeddings_input_dim or 0) - 6 * int(cn.config.addition_time_embed_dim or 0)
    down_factor = 2 ** (len(cn.config.conditioning_embedding_out_channels) - 1)

    def inputs(b, h, w, s, seed):
        g = torch.Generator().manual_seed(seed)
        x = [torch.randn(b, cn.config.in_channels, h, w, generator=g), torch.rand(b, generator=g) * 999.0,
             torch.randn(b, s, cn.config.cross_attention_dim, generator=g),
             torch.rand(b, 3, h * down_factor, w * down_factor, generator=g)]
        if sdxl:
            x.append(torch.randn(b, emb_dim, generator=g))
        x = [t.to(device, tdtype) for t in x]
        if sdxl:
            x.append(_time_ids(b, h, w, device, tdtype))
        return tuple(x)

    report = {"name": name, "variant": variant, "device": device, "dtype": dtype, "attention": attention}
    with staged_folder(models_dir, name) as stage:
        ex = inputs(2, 9, 11, CONTEXT, 51)
        with torch.no_grad():
            traced = torch.jit.trace(wrap, ex, check_trace=False)
            n_out = len(wrap(*ex))
        f = stage / "controlnet.ts"
        loaded = _save_trace(traced, f)
        if verify:
            for i, (b, h, w, s) in enumerate(((1, 8, 8, 2 * CONTEXT), (3, 6, 10, CONTEXT))):
                x = inputs(b, h, w, s, 60 + i)
                _check(report, f"controlnet_b{b}_{h}x{w}_s{s}", loaded, wrap, x, dtype, f)
                _check_vs_sdpa(report, f"controlnet_b{b}_{h}x{w}_s{s}", loaded, wrap, cn, attention, x, dtype, f)
        dims = {"down_residuals": n_out - 1, "cross_attention_dim": int(cn.config.cross_attention_dim),
                "conditioning_downscale": int(down_factor)}
        config = {"random_init": bool(random_init), "in_channels": int(cn.config.in_channels), "dtype": dtype,
                  "device": device, "attention": attention,
                  "block_out_channels": [int(c) for c in cn.config.block_out_channels]}
        write_manifest(stage, "controlnet", name, variant, device, dtype, random_init, desc,
                       files={"controlnet": (f.name, "torchscript")}, dims=dims, config=config)
    report.update(total_s=round(time.time() - t0, 1), down_residuals=n_out - 1)
    return report
