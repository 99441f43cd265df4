"""Load Whisper weights from CTranslate2 folders, openai-whisper checkpoints or HF folders
into openai-whisper's ``Whisper`` (strict state-dict load), with alignment heads."""
from __future__ import annotations

import base64
import gzip
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .common import ExportError, atomic_path, quiet_warnings

# openai-whisper's alignment-head dumps, copied here so that variant detection does not
# depend on private names of the installed package (they are identical to whisper._ALIGNMENT_HEADS).
OPENAI_ALIGNMENT_HEADS = {
    "tiny.en": b"ABzY8J1N>@0{>%R00Bk>$p{7v037`oCl~+#00",
    "tiny": b"ABzY8bu8Lr0{>%RKn9Fp%m@SkK7Kt=7ytkO",
    "base.en": b"ABzY8;40c<0{>%RzzG;p*o+Vo09|#PsxSZm00",
    "base": b"ABzY8KQ!870{>%RzyTQH3`Q^yNP!>##QT-<FaQ7m",
    "small.en": b"ABzY8>?_)10{>%RpeA61k&I|OI3I$65C{;;pbCHh0B{qLQ;+}v00",
    "small": b"ABzY8DmU6=0{>%Rpa?J`kvJ6qF(V^F86#Xh7JUGMK}P<N0000",
    "medium.en": b"ABzY8usPae0{>%R7<zz_OvQ{)4kMa0BMw6u5rT}kRKX;$NfYBv00*Hl@qhsU00",
    "medium": b"ABzY8B0Jh+0{>%R7}kK1fFL7w6%<-Pf*t^=N)Qr&0RR9",
    "large-v2": b"ABzY8zd+h!0{>%R7=D0pU<_bnWW*tkYAhobTNnu$jnkEkXqp)j;w1Tzk)UH3X%SZd&fFZ2fC2yj",
    "large-v3": b"ABzY8gWO1E0{>%R7(9S+Kn!D~%ngiGaR?*L!iJG9p-nab0JQ=-{D1-g00",
    "turbo": b"ABzY8j^C+e0{>%RARaKHP%t(lGR*)0g!tONPyhe`",
}

# (n_text_state, n_audio_layer, n_text_layer, n_mels) -> base size name
_SIZES = {
    (384, 4, 4, 80): "tiny",
    (512, 6, 6, 80): "base",
    (768, 12, 12, 80): "small",
    (1024, 24, 24, 80): "medium",
    (1280, 32, 32, 80): "large-v2",  # large-v1 has the same shapes; v2's heads are used
    (1280, 32, 32, 128): "large-v3",
    (1280, 32, 4, 128): "turbo",
}


def is_multilingual(n_vocab: int) -> bool:
    return n_vocab >= 51865


def guess_variant(dims: dict) -> str | None:
    size = _SIZES.get((dims["n_text_state"], dims["n_audio_layer"], dims["n_text_layer"], dims["n_mels"]))
    if size is None:
        return None
    if not is_multilingual(dims["n_vocab"]):
        return size + ".en" if size in ("tiny", "base", "small", "medium") else None
    return size


def decode_openai_heads(dump: bytes, n_layer: int, n_head: int) -> list[list[int]]:
    arr = np.frombuffer(gzip.decompress(base64.b85decode(dump)), dtype=bool).reshape(n_layer, n_head)
    return [[int(l), int(h)] for l, h in zip(*np.nonzero(arr))]


def default_alignment_heads(dims: dict, variant: str | None) -> tuple[list[list[int]], str]:
    """openai's table for a known size, else its default: every head of the last half of layers."""
    if variant in OPENAI_ALIGNMENT_HEADS:
        return decode_openai_heads(OPENAI_ALIGNMENT_HEADS[variant], dims["n_text_layer"], dims["n_text_head"]), f"openai table ({variant})"
    L, H = dims["n_text_layer"], dims["n_text_head"]
    return [[l, h] for l in range(L // 2, L) for h in range(H)], "openai default (last half of the decoder layers)"


def validate_heads(heads, dims: dict, where: str) -> list[list[int]]:
    out = []
    for item in heads:
        if not (isinstance(item, (list, tuple)) and len(item) == 2):
            raise ExportError(f"{where}: alignment head {item!r} is not a [layer, head] pair")
        l, h = int(item[0]), int(item[1])
        if not (0 <= l < dims["n_text_layer"] and 0 <= h < dims["n_text_head"]):
            raise ExportError(f"{where}: alignment head [{l}, {h}] is outside {dims['n_text_layer']} layers x {dims['n_text_head']} heads")
        out.append([l, h])
    if not out:
        raise ExportError(f"{where}: empty alignment-heads list")
    return out


@dataclass
class WhisperSource:
    model: object  # whisper.model.Whisper (float32, cpu, eval)
    dims: dict
    alignment_heads: list[list[int]]
    heads_origin: str
    variant: str
    source: str  # human description for the manifest
    random_init: bool = False

    def save_openai_checkpoint(self, path: str | Path) -> Path:
        """Write the openai checkpoint format ({"dims", "model_state_dict"}) loadable by
        ``whisper.load_model(path)``; the extra "alignment_heads" key is ignored by openai."""
        import torch

        ckpt = {
            "dims": dict(self.dims),
            "model_state_dict": {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()},
            "alignment_heads": [list(x) for x in self.alignment_heads],
        }
        with atomic_path(path) as tmp:
            torch.save(ckpt, str(tmp))
        return Path(path)


def build_model(sd: dict, dims: dict, heads: list[list[int]], where: str):
    import torch
    import whisper.model as wm

    model = wm.Whisper(wm.ModelDimensions(**dims))
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ExportError(f"{where}: weights do not match openai-whisper's Whisper layout: {e}") from e
    mask = torch.zeros(dims["n_text_layer"], dims["n_text_head"], dtype=torch.bool)
    for l, h in heads:
        mask[l, h] = True
    model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    return model.float().eval()


def _finish(sd, dims, heads, heads_origin, where, source, variant=None) -> WhisperSource:
    variant = variant or guess_variant(dims) or f"custom-{dims['n_text_state']}x{dims['n_text_layer']}"
    if heads is None:
        heads, heads_origin = default_alignment_heads(dims, variant)
    heads = validate_heads(heads, dims, where)
    model = build_model(sd, dims, heads, where)
    return WhisperSource(model, dims, heads, heads_origin, variant, source)


# --------------------------------------------------------------------------- CTranslate2


def load_ct2(folder: str | Path, source: str | None = None, model_bin: str | Path | None = None) -> WhisperSource:
    from . import ct2

    folder = Path(folder)
    if folder.is_file():
        folder, model_bin = folder.parent, folder
    mb = Path(model_bin) if model_bin else folder / "model.bin"
    m = ct2.read_model_bin(mb)
    sd, dims = ct2.ct2_whisper_to_openai(m)
    cfg = ct2.read_ct2_config(folder)
    heads, origin = None, ""
    if "alignment_heads" in cfg:
        heads, origin = cfg["alignment_heads"], f"{folder / 'config.json'}"
    return _finish(sd, dims, heads, origin, str(mb), source or f"{mb} (CTranslate2 model.bin)")


# --------------------------------------------------------------------------- openai .pt


def load_openai(path: str | Path, source: str | None = None) -> WhisperSource:
    import torch

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: file not found")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"{path}: not a readable openai-whisper checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or "dims" not in ckpt or "model_state_dict" not in ckpt:
        raise ExportError(f"{path}: not an openai-whisper checkpoint (expected a dict with 'dims' and 'model_state_dict')")
    dims = {k: int(v) for k, v in dict(ckpt["dims"]).items()}
    sd = {k: v.float() for k, v in ckpt["model_state_dict"].items()}
    heads, origin = None, ""
    if ckpt.get("alignment_heads"):
        heads, origin = ckpt["alignment_heads"], f"{path} (alignment_heads key)"
    return _finish(sd, dims, heads, origin, str(path), source or f"{path.name} (openai-whisper checkpoint)")


# --------------------------------------------------------------------------- Hugging Face


def _hf_name(k: str) -> str | None:
    """Map a WhisperForConditionalGeneration key to openai's name (None: drop)."""
    if k.startswith("model."):
        k = k[len("model."):]
    if k in ("proj_out.weight",):
        return None
    rep = [
        ("encoder.embed_positions.weight", "encoder.positional_embedding"),
        ("decoder.embed_positions.weight", "decoder.positional_embedding"),
        ("decoder.embed_tokens.weight", "decoder.token_embedding.weight"),
        ("encoder.layer_norm.", "encoder.ln_post."),
        ("decoder.layer_norm.", "decoder.ln."),
    ]
    for a, b in rep:
        if k.startswith(a):
            return b + k[len(a):]
    k = k.replace(".layers.", ".blocks.")
    sub = [
        (".self_attn_layer_norm.", ".attn_ln."),
        (".encoder_attn_layer_norm.", ".cross_attn_ln."),
        (".final_layer_norm.", ".mlp_ln."),
        (".self_attn.", ".attn."),
        (".encoder_attn.", ".cross_attn."),
        (".q_proj.", ".query."),
        (".k_proj.", ".key."),
        (".v_proj.", ".value."),
        (".out_proj.", ".out."),
        (".fc1.", ".mlp.0."),
        (".fc2.", ".mlp.2."),
    ]
    for a, b in sub:
        k = k.replace(a, b)
    return k


def _read_hf_weights(folder: Path) -> dict:
    import torch

    st_index = folder / "model.safetensors.index.json"
    files: list[Path]
    if (folder / "model.safetensors").is_file():
        files = [folder / "model.safetensors"]
    elif st_index.is_file():
        idx = json.loads(st_index.read_text())
        files = [folder / f for f in sorted(set(idx["weight_map"].values()))]
    elif (folder / "pytorch_model.bin").is_file():
        try:
            return torch.load(str(folder / "pytorch_model.bin"), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"{folder / 'pytorch_model.bin'}: unreadable ({e})") from e
    else:
        raise ExportError(f"{folder}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")
    from safetensors.torch import load_file

    sd = {}
    for f in files:
        if not f.is_file():
            raise ExportError(f"{f}: file not found (listed by {st_index})")
        try:
            sd.update(load_file(str(f)))
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"{f}: not a readable safetensors file ({e})") from e
    return sd


def load_hf(folder: str | Path, source: str | None = None) -> WhisperSource:
    folder = Path(folder)
    cfg_p = folder / "config.json"
    if not cfg_p.is_file():
        raise ExportError(f"{cfg_p}: file not found")
    cfg = json.loads(cfg_p.read_text())
    if cfg.get("model_type") != "whisper":
        raise ExportError(f"{cfg_p}: model_type is {cfg.get('model_type')!r}, not 'whisper'")
    raw = _read_hf_weights(folder)
    sd = {}
    for k, v in raw.items():
        n = _hf_name(k)
        if n is not None:
            sd[n] = v.float()
    if "proj_out.weight" in raw and "decoder.token_embedding.weight" in sd:
        import torch

        if not torch.equal(raw["proj_out.weight"].float(), sd["decoder.token_embedding.weight"]):
            raise ExportError(f"{folder}: proj_out.weight is not tied to embed_tokens; openai's Whisper ties them")
    dims = dict(
        n_mels=int(cfg["num_mel_bins"]),
        n_audio_ctx=int(cfg["max_source_positions"]),
        n_audio_state=int(cfg["d_model"]),
        n_audio_head=int(cfg["encoder_attention_heads"]),
        n_audio_layer=int(cfg["encoder_layers"]),
        n_vocab=int(cfg["vocab_size"]),
        n_text_ctx=int(cfg["max_target_positions"]),
        n_text_state=int(cfg["d_model"]),
        n_text_head=int(cfg["decoder_attention_heads"]),
        n_text_layer=int(cfg["decoder_layers"]),
    )
    heads, origin = None, ""
    gen = folder / "generation_config.json"
    if gen.is_file():
        g = json.loads(gen.read_text())
        if g.get("alignment_heads"):
            heads, origin = g["alignment_heads"], str(gen)
    return _finish(sd, dims, heads, origin, str(folder), source or f"{folder.name} (Hugging Face transformers folder)")


# --------------------------------------------------------------------------- dispatch


def detect_format(path: str | Path) -> str:
    p = Path(path)
    if p.is_file():
        if p.name == "model.bin" or p.name.endswith(".bin") and p.parent.joinpath("config.json").is_file() and _looks_ct2(p):
            return "ct2"
        if p.suffix in (".pt", ".pth"):
            return "openai"
        raise ExportError(f"{p}: cannot tell the format (expected a CT2 model.bin, an openai .pt, or a folder)")
    if p.is_dir():
        if (p / "model.bin").is_file():
            return "ct2"
        cfg = p / "config.json"
        if cfg.is_file():
            try:
                if json.loads(cfg.read_text()).get("model_type") == "whisper":
                    return "hf"
            except json.JSONDecodeError:
                pass
        pts = sorted(p.glob("*.pt"))
        if len(pts) == 1:
            return "openai"
        raise ExportError(f"{p}: no model.bin (CTranslate2), *.pt (openai) or config.json with model_type whisper (HF)")
    raise ExportError(f"{p}: not found")


def _looks_ct2(p: Path) -> bool:
    with open(p, "rb") as f:
        head = f.read(32)
    return b"WhisperSpec" in head


# dims of openai's published sizes, for random-init test models
VARIANT_DIMS = {
    "tiny": (384, 6, 4, 4, 80), "base": (512, 8, 6, 6, 80), "small": (768, 12, 12, 12, 80),
    "medium": (1024, 16, 24, 24, 80), "large-v2": (1280, 20, 32, 32, 80), "large-v3": (1280, 20, 32, 32, 128),
    "turbo": (1280, 20, 32, 4, 128),
}


def random_whisper(variant: str, seed: int = 0) -> WhisperSource:
    """openai's architecture for ``variant`` (e.g. tiny.en, base) with seeded random weights:
    for tests of the export path without real weights (manifest random-init = true)."""
    import torch

    size = variant[:-3] if variant.endswith(".en") else variant
    if size not in VARIANT_DIMS:
        raise ExportError(f"random:{variant}: unknown variant (known: {', '.join(sorted(VARIANT_DIMS))}, with .en for English-only)")
    D, H, le, ld, mels = VARIANT_DIMS[size]
    dims = dict(n_mels=mels, n_audio_ctx=1500, n_audio_state=D, n_audio_head=H, n_audio_layer=le,
                n_vocab=51864 if variant.endswith(".en") else (51866 if mels == 128 else 51865),
                n_text_ctx=448, n_text_state=D, n_text_head=H, n_text_layer=ld)
    import whisper.model as wm

    g = torch.Generator().manual_seed(seed)
    m = wm.Whisper(wm.ModelDimensions(**dims))
    sd = {}
    for k, v in m.state_dict().items():
        if k == "encoder.positional_embedding":
            sd[k] = v.clone()  # sinusoids, as openai builds them
        elif k.endswith("ln.weight") or k.endswith("_ln.weight") or k.endswith("ln_post.weight"):
            sd[k] = 1.0 + 0.05 * torch.randn(v.shape, generator=g)
        else:
            sd[k] = 0.02 * torch.randn(v.shape, generator=g) * (3.0 if v.dim() < 2 else 1.0)
    src = _finish(sd, dims, None, "", f"random:{variant}", f"random init ({variant} shapes, seed {seed})", variant=variant)
    src.random_init = True
    return src


def load_whisper(path: str | Path, fmt: str = "auto", source: str | None = None) -> WhisperSource:
    quiet_warnings()
    if str(path).startswith("random:"):
        return random_whisper(str(path)[len("random:"):])
    p = Path(path)
    if fmt == "auto":
        fmt = detect_format(p)
    if fmt == "ct2":
        return load_ct2(p, source)
    if fmt == "openai":
        if p.is_dir():
            p = sorted(p.glob("*.pt"))[0]
        return load_openai(p, source)
    if fmt == "hf":
        return load_hf(p, source)
    raise ExportError(f"unknown format {fmt!r} (auto, ct2, openai, hf)")


def dims_as_dict(dims) -> dict:
    return asdict(dims) if hasattr(dims, "__dataclass_fields__") else dict(dims)
