"""CLIP export: HF transformers folders, open_clip checkpoints, openai `clip` .pt, or random weights.

One TorchScript file per model (`model.ts`) with two traced methods:

* ``encode_image(pixels: f32 [B, 3, S, S]) -> f32 [B, D]`` (not normalized)
* ``encode_text(tokens: i64 [B, 77]) -> f32 [B, D]`` (not normalized; open_clip ids, eot = max id)

plus ``bpe_simple_vocab_16e6.txt.gz`` from the open_clip package, and a manifest (family "clip")
with the image size, mean/std, resize mode, context length and logit scale.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from .common import ExportError, atomic_copy, atomic_path, quiet_warnings, staged_folder, write_manifest

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
CONTEXT_LENGTH = 77
BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"


@dataclass
class ClipSource:
    model: object  # an nn.Module with encode_image / encode_text (tensor in, tensor out)
    variant: str
    source: str
    image_size: int
    embed_dim: int
    logit_scale: float
    mean: tuple = OPENAI_MEAN
    std: tuple = OPENAI_STD
    random_init: bool = False
    extra: dict = field(default_factory=dict)


def _wrappers():
    import torch

    class OpenClipWrapper(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, image):
            return self.m.encode_image(image)

        def encode_image(self, image):
            return self.m.encode_image(image)

        def encode_text(self, text):
            return self.m.encode_text(text)

    class HfWrapper(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, image):
            return self.encode_image(image)

        def encode_image(self, image):
            return self.m.get_image_features(pixel_values=image).pooler_output

        def encode_text(self, text):
            return self.m.get_text_features(input_ids=text).pooler_output

    return OpenClipWrapper, HfWrapper


def _half(model):
    """The model in float16, taking float32 pixels and returning float32 embeddings (the
    interface a float32 export has)."""
    import torch

    class Half(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m.half()

        def forward(self, image):
            return self.encode_image(image)

        def encode_image(self, image):
            return self.m.encode_image(image.half()).float()

        def encode_text(self, text):
            return self.m.encode_text(text).float()

    return Half(model).eval()


def _open_clip_source(model, variant: str, source: str, random_init: bool) -> ClipSource:
    OpenClipWrapper, _ = _wrappers()
    visual = model.visual
    size = visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    mean = tuple(float(x) for x in (getattr(visual, "image_mean", None) or OPENAI_MEAN))
    std = tuple(float(x) for x in (getattr(visual, "image_std", None) or OPENAI_STD))
    cfg = getattr(visual, "preprocess_cfg", {}) or {}
    if cfg.get("resize_mode", "shortest") != "shortest" or cfg.get("interpolation", "bicubic") != "bicubic":
        raise ExportError(f"{source}: {variant} preprocesses with {cfg}; only shortest-side bicubic is supported")
    ctx = int(getattr(model, "context_length", CONTEXT_LENGTH) or CONTEXT_LENGTH)
    if ctx != CONTEXT_LENGTH:
        raise ExportError(f"{source}: context length {ctx}; only {CONTEXT_LENGTH} (the CLIP BPE tokenizer) is supported")
    vocab = int(getattr(model, "vocab_size", 49408) or 49408)
    if vocab != 49408:
        raise ExportError(f"{source}: vocab size {vocab}; only the CLIP BPE vocabulary (49408) is supported")
    scale = float(model.logit_scale.exp().item())
    embed_dim = int(model.text_projection.shape[-1]) if hasattr(model, "text_projection") else 0
    return ClipSource(OpenClipWrapper(model).eval(), variant, source, size, embed_dim, scale, mean, std, random_init)


def _hf_source(model, variant: str, source: str, random_init: bool, folder: Path | None) -> ClipSource:
    _, HfWrapper = _wrappers()
    vc, tc = model.config.vision_config, model.config.text_config
    if tc.max_position_embeddings < CONTEXT_LENGTH:
        raise ExportError(f"{source}: text context {tc.max_position_embeddings} < {CONTEXT_LENGTH}")
    if tc.vocab_size != 49408:
        raise ExportError(f"{source}: vocab size {tc.vocab_size}; only the CLIP BPE vocabulary (49408) is supported")
    mean, std, size = OPENAI_MEAN, OPENAI_STD, int(vc.image_size)
    if folder is not None and (folder / "preprocessor_config.json").is_file():
        pp = json.loads((folder / "preprocessor_config.json").read_text())
        mean = tuple(float(x) for x in pp.get("image_mean", mean))
        std = tuple(float(x) for x in pp.get("image_std", std))
        crop = pp.get("crop_size", size)
        crop = crop.get("height", size) if isinstance(crop, dict) else crop
        if int(crop) != size:
            raise ExportError(f"{folder / 'preprocessor_config.json'}: crop size {crop} != the model's image size {size}")
        if pp.get("resample", 3) != 3:
            raise ExportError(f"{folder / 'preprocessor_config.json'}: resample {pp.get('resample')}; only bicubic (3) is supported")
    scale = float(model.logit_scale.exp().item())
    return ClipSource(HfWrapper(model).eval(), variant, source, size, int(model.config.projection_dim), scale,
                      mean, std, random_init)


def load_clip(source: str | None, fmt: str = "auto", arch: str | None = None,
              random_init: str | None = None, seed: int = 0) -> ClipSource:
    """Load a CLIP model from disk, or build one with random weights (``random_init`` = a config)."""
    quiet_warnings()
    import torch

    if random_init:
        torch.manual_seed(seed)
        kind, _, name = random_init.rpartition(":")
        if kind in ("hf", "transformers"):
            from transformers import CLIPConfig, CLIPModel

            path = Path(name)
            if path.is_dir() or path.suffix == ".json":
                cfg = CLIPConfig.from_pretrained(str(path))
            elif name in ("clip-vit-base-patch32", "openai/clip-vit-base-patch32", "ViT-B-32"):
                cfg = CLIPConfig()  # its defaults are openai/clip-vit-base-patch32
            else:
                raise ExportError(f"--random-init {random_init}: give hf:clip-vit-base-patch32 or hf:PATH/config.json")
            cfg.text_config.eos_token_id = 2  # legacy: pool at the argmax id (eot), as open_clip does
            model = CLIPModel(cfg).eval()
            return _hf_source(model, f"hf:{name}", f"random-init {random_init} (seed {seed})", True,
                              path if path.is_dir() else None)
        if kind not in ("", "open_clip", "openclip"):
            raise ExportError(f"--random-init {random_init}: unknown kind '{kind}' (use open_clip:NAME or hf:NAME)")
        import open_clip

        if name not in open_clip.list_models():
            raise ExportError(f"--random-init {random_init}: unknown open_clip config (see open_clip.list_models())")
        model = open_clip.create_model(name, pretrained=None).eval()
        return _open_clip_source(model, name, f"random-init open_clip:{name} (seed {seed})", True)

    if not source:
        raise ExportError("give --source PATH or --random-init CONFIG")
    path = Path(source)
    if not path.exists():
        raise ExportError(f"{path}: not found")
    if fmt == "auto":
        if path.is_dir() and (path / "config.json").is_file():
            fmt = "hf"
        elif path.is_file() and arch:
            fmt = "open_clip"
        elif path.is_file():
            fmt = "openai"
        else:
            raise ExportError(f"{path}: not a transformers folder (no config.json) nor a checkpoint file")
    try:
        if fmt == "hf":
            from transformers import CLIPModel

            model = CLIPModel.from_pretrained(str(path)).eval()
            model.config.text_config.eos_token_id = 2
            return _hf_source(model, f"hf:{path.name}", f"transformers folder {path}", False, path)
        import open_clip

        if fmt == "openai":
            from open_clip.openai import load_openai_model

            model = load_openai_model(str(path), device="cpu").eval()
            variant = arch or _guess_openai_variant(model)
            return _open_clip_source(model, variant, f"openai clip checkpoint {path.name}", False)
        if fmt == "open_clip":
            if not arch:
                raise ExportError(f"{path}: an open_clip checkpoint needs --arch (e.g. ViT-B-32, RN50)")
            model = open_clip.create_model(arch, pretrained=str(path)).eval()
            return _open_clip_source(model, arch, f"open_clip checkpoint {path.name} ({arch})", False)
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: name it
        raise ExportError(f"{path}: cannot be loaded as a {fmt} CLIP model ({type(e).__name__}: {e})") from e
    raise ExportError(f"unknown --format {fmt}")


def _guess_openai_variant(model) -> str:
    v = model.visual
    if hasattr(v, "conv1") and hasattr(v, "transformer"):
        patch = v.conv1.kernel_size[0]
        width = v.conv1.out_channels
        return {768: "ViT-B", 1024: "ViT-L"}.get(width, f"ViT-w{width}") + f"-{patch}"
    return "RN"


def _cosines(a, b):
    import torch

    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)


def example_inputs(size: int, batch: int, seed: int = 1):
    import torch

    g = torch.Generator().manual_seed(seed)
    img = torch.randn(batch, 3, size, size, generator=g)
    txt = torch.zeros(batch, CONTEXT_LENGTH, dtype=torch.long)
    for i in range(batch):
        n = 3 + 5 * i
        txt[i, 0] = 49406
        txt[i, 1:n] = torch.randint(1, 49406, (n - 1,), generator=g)
        txt[i, n] = 49407
    return img, txt


def export_clip(src: ClipSource, models_dir: Path, name: str, device: str = "cpu",
                save_checkpoint: str | None = None, dtype: str = "float32") -> dict:
    import open_clip
    import torch

    quiet_warnings()
    t0 = time.time()
    if dtype == "float16" and device != "cuda":
        raise ExportError("--dtype float16 needs --device cuda (half precision on the CPU is slow and inexact)")
    bpe = Path(open_clip.__file__).parent / BPE_NAME
    if not bpe.is_file():
        raise ExportError(f"{bpe}: the CLIP BPE vocabulary is missing from the open_clip package")
    model = src.model.to(device)
    if dtype == "float16":
        model = _half(model)
    img, txt = example_inputs(src.image_size, 2)
    img, txt = img.to(device), txt.to(device)
    with torch.no_grad():
        traced = torch.jit.trace_module(model, {"encode_image": img, "encode_text": txt}, check_trace=False)
    report = {"name": name, "variant": src.variant}
    with staged_folder(models_dir, name) as stage:
        ts = stage / "model.ts"
        with atomic_path(ts) as tmp:
            torch.jit.save(traced, str(tmp))
        atomic_copy(bpe, stage / BPE_NAME)
        # Verify the saved artefact itself on another batch size against the eager model.
        loaded = torch.jit.load(str(ts), map_location=device)
        img3, txt3 = example_inputs(src.image_size, 3, seed=2)
        img3, txt3 = img3.to(device), txt3.to(device)
        with torch.no_grad():
            ci = _cosines(loaded.encode_image(img3), model.encode_image(img3)).min().item()
            ct = _cosines(loaded.encode_text(txt3), model.encode_text(txt3)).min().item()
        if ci < 0.9999 or ct < 0.9999:
            raise ExportError(f"{ts}: the traced model disagrees with the eager one (cosine image {ci:.6f}, text {ct:.6f})")
        report.update(min_cos_image=round(ci, 7), min_cos_text=round(ct, 7))
        with torch.no_grad():
            embed_dim = int(model.encode_text(txt3[:1]).shape[-1])
        write_manifest(
            stage, "clip", name, src.variant, device, dtype, src.random_init, src.source,
            files={"model": ("model.ts", "torchscript"), "bpe": (BPE_NAME, "asset")},
            dims={"image-size": src.image_size, "context-length": CONTEXT_LENGTH, "embed-dim": embed_dim,
                  "vocab-size": 49408},
            config={"mean": list(src.mean), "std": list(src.std), "resize-mode": "shortest",
                    "interpolation": "bicubic", "logit-scale": src.logit_scale},
        )
    if save_checkpoint:
        inner = src.model.m
        with atomic_path(save_checkpoint) as tmp:
            torch.save({"variant": src.variant, "state_dict": inner.state_dict()}, str(tmp))
    report["total_s"] = round(time.time() - t0, 1)
    return report


def load_checkpoint_model(path: str):
    """The eager open_clip model saved by ``--save-checkpoint`` (for parity references)."""
    import open_clip
    import torch

    ck = torch.load(path, map_location="cpu", weights_only=True)
    model = open_clip.create_model(ck["variant"], pretrained=None)
    model.load_state_dict(ck["state_dict"])
    return model.eval()
