"""CTranslate2 ``model.bin`` reader and the CT2 WhisperSpec -> openai-whisper converter.

File layout (little-endian), versions 3..6:
  u32 version; str spec_name; u32 revision; u32 n_vars;
  n_vars x { str name; u8 rank; u32 dims[rank]; u8 dtype; u32 nbytes; bytes data };
  (version >= 3) u32 n_aliases; n_aliases x { str alias; str target }
where ``str`` is a u16 byte length followed by the bytes (CT2 writes a trailing NUL, counted
in the length). dtype ids: 0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16. The file must be consumed
exactly.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .common import ExportError

DTYPES = {
    0: ("float32", np.dtype("<f4")),
    1: ("int8", np.dtype("i1")),
    2: ("int16", np.dtype("<i2")),
    3: ("int32", np.dtype("<i4")),
    4: ("float16", np.dtype("<f2")),
    5: ("bfloat16", np.dtype("<u2")),  # raw bits; widened in to_float32()
}


@dataclass
class Ct2Variable:
    name: str
    dtype: str
    shape: tuple[int, ...]
    data: np.ndarray  # raw values (bfloat16 kept as uint16 bits)

    def to_float32(self) -> np.ndarray:
        if self.dtype == "bfloat16":
            return (self.data.astype(np.uint32) << 16).view(np.float32).reshape(self.shape)
        return self.data.astype(np.float32).reshape(self.shape)

    def scalar(self):
        if self.data.size != 1:
            raise ValueError(f"{self.name} is not a scalar (shape {self.shape})")
        return self.data.reshape(()).item()


@dataclass
class Ct2Model:
    path: Path
    version: int
    spec: str
    revision: int
    variables: dict[str, Ct2Variable] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> Ct2Variable:
        seen = set()
        while name in self.aliases and name not in self.variables:
            if name in seen:
                raise ExportError(f"{self.path}: alias loop at {name!r}")
            seen.add(name)
            name = self.aliases[name]
        try:
            return self.variables[name]
        except KeyError:
            raise ExportError(f"{self.path}: variable {name!r} missing ({self.spec})") from None


class _Cursor:
    def __init__(self, data: memoryview, path: Path):
        self.data, self.off, self.path = data, 0, path

    def take(self, n: int, what: str) -> memoryview:
        if self.off + n > len(self.data):
            raise ExportError(
                f"{self.path}: truncated CTranslate2 model.bin: needed {n} bytes for {what} at offset "
                f"{self.off}, but the file is {len(self.data)} bytes long"
            )
        b = self.data[self.off:self.off + n]
        self.off += n
        return b

    def unpack(self, fmt: str, what: str):
        s = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(s, what))

    def string(self, what: str) -> str:
        (n,) = self.unpack("H", what + " length")
        raw = bytes(self.take(n, what))
        if raw.endswith(b"\0"):
            raw = raw[:-1]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ExportError(f"{self.path}: corrupt CTranslate2 model.bin: {what} is not UTF-8 at offset {self.off - n}") from None


def read_model_bin(path: str | Path) -> Ct2Model:
    """Parse a CTranslate2 model.bin exactly; raise ExportError naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: file not found")
    raw = path.read_bytes()
    cur = _Cursor(memoryview(raw), path)
    (version,) = cur.unpack("I", "the format version")
    if not 3 <= version <= 6:
        raise ExportError(f"{path}: not a supported CTranslate2 model.bin (format version {version}, expected 3..6)")
    spec = cur.string("the spec name")
    (revision,) = cur.unpack("I", "the spec revision")
    (count,) = cur.unpack("I", "the variable count")
    model = Ct2Model(path, version, spec, revision)
    for i in range(count):
        name = cur.string(f"the name of variable #{i}")
        (rank,) = cur.unpack("B", f"the rank of {name}")
        shape = tuple(cur.unpack(f"{rank}I", f"the dims of {name}")) if rank else ()
        (dt,) = cur.unpack("B", f"the dtype of {name}")
        if dt not in DTYPES:
            raise ExportError(f"{path}: corrupt CTranslate2 model.bin: variable {name!r} has unknown dtype id {dt}")
        (nbytes,) = cur.unpack("I", f"the byte count of {name}")
        dname, npdt = DTYPES[dt]
        numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if numel * npdt.itemsize != nbytes:
            raise ExportError(
                f"{path}: corrupt CTranslate2 model.bin: variable {name!r} {shape} {dname} "
                f"should take {numel * npdt.itemsize} bytes but says {nbytes}"
            )
        buf = cur.take(nbytes, f"the data of {name}")
        arr = np.frombuffer(buf, dtype=npdt).copy()
        if name in model.variables:
            raise ExportError(f"{path}: corrupt CTranslate2 model.bin: variable {name!r} appears twice")
        model.variables[name] = Ct2Variable(name, dname, shape, arr)
    (n_alias,) = cur.unpack("I", "the alias count")
    for i in range(n_alias):
        a = cur.string(f"alias #{i}")
        t = cur.string(f"the target of alias {a!r}")
        model.aliases[a] = t
    if cur.off != len(raw):
        raise ExportError(f"{path}: corrupt CTranslate2 model.bin: {len(raw) - cur.off} trailing bytes after the aliases")
    return model


# --------------------------------------------------------------------------- WhisperSpec -> openai


def _count_layers(m: Ct2Model, prefix: str) -> int:
    n = 0
    while any(k.startswith(f"{prefix}/layer_{n}/") for k in m.variables):
        n += 1
    return n


def ct2_whisper_to_openai(m: Ct2Model, config: dict | None = None):
    """Return (state_dict, dims_dict) for openai-whisper's ``Whisper`` (all float32)."""
    import torch

    if m.spec != "WhisperSpec":
        raise ExportError(f"{m.path}: spec {m.spec!r} is not a Whisper model (expected WhisperSpec)")
    used: set[str] = set()

    def f32(name: str) -> torch.Tensor:
        v = m.get(name)
        used.add(v.name)
        if v.dtype not in ("float32", "float16", "bfloat16"):
            raise ExportError(f"{m.path}: variable {name!r} is {v.dtype}; quantized (int8) models are not supported")
        return torch.from_numpy(np.ascontiguousarray(v.to_float32()))

    sd: dict[str, torch.Tensor] = {}

    def linear(dst: str, src: str, bias: bool = True):
        sd[f"{dst}.weight"] = f32(f"{src}/weight")
        if bias:
            sd[f"{dst}.bias"] = f32(f"{src}/bias")

    def ln(dst: str, src: str):
        sd[f"{dst}.weight"] = f32(f"{src}/gamma")
        sd[f"{dst}.bias"] = f32(f"{src}/beta")

    def split_linear(dsts: list[str | None], src: str, zero_bias_for: set[int]):
        w, b = f32(f"{src}/weight"), f32(f"{src}/bias")
        n = len(dsts)
        if w.shape[0] % n:
            raise ExportError(f"{m.path}: {src}/weight has {w.shape[0]} rows, not divisible into {n} projections")
        ws, bs = w.chunk(n, 0), b.chunk(n, 0)
        for i, dst in enumerate(dsts):
            sd[f"{dst}.weight"] = ws[i].contiguous()
            if i in zero_bias_for:
                if bs[i].abs().max().item() != 0.0:
                    raise ExportError(f"{m.path}: {src}/bias: the key part is not zero; cannot map to openai's bias-free key")
            else:
                sd[f"{dst}.bias"] = bs[i].contiguous()

    n_enc = _count_layers(m, "encoder")
    n_dec = _count_layers(m, "decoder")
    if n_enc == 0 or n_dec == 0:
        raise ExportError(f"{m.path}: no encoder/decoder layers found")

    linear("encoder.conv1", "encoder/conv1")
    linear("encoder.conv2", "encoder/conv2")
    sd["encoder.positional_embedding"] = f32("encoder/position_encodings/encodings")
    for i in range(n_enc):
        s, d = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        split_linear([f"{d}.attn.query", f"{d}.attn.key", f"{d}.attn.value"], f"{s}/self_attention/linear_0", {1})
        linear(f"{d}.attn.out", f"{s}/self_attention/linear_1")
        ln(f"{d}.attn_ln", f"{s}/self_attention/layer_norm")
        linear(f"{d}.mlp.0", f"{s}/ffn/linear_0")
        linear(f"{d}.mlp.2", f"{s}/ffn/linear_1")
        ln(f"{d}.mlp_ln", f"{s}/ffn/layer_norm")
    ln("encoder.ln_post", "encoder/layer_norm")

    sd["decoder.token_embedding.weight"] = f32("decoder/embeddings/weight")
    sd["decoder.positional_embedding"] = f32("decoder/position_encodings/encodings")
    for i in range(n_dec):
        s, d = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        split_linear([f"{d}.attn.query", f"{d}.attn.key", f"{d}.attn.value"], f"{s}/self_attention/linear_0", {1})
        linear(f"{d}.attn.out", f"{s}/self_attention/linear_1")
        ln(f"{d}.attn_ln", f"{s}/self_attention/layer_norm")
        linear(f"{d}.cross_attn.query", f"{s}/attention/linear_0")
        split_linear([f"{d}.cross_attn.key", f"{d}.cross_attn.value"], f"{s}/attention/linear_1", {0})
        linear(f"{d}.cross_attn.out", f"{s}/attention/linear_2")
        ln(f"{d}.cross_attn_ln", f"{s}/attention/layer_norm")
        linear(f"{d}.mlp.0", f"{s}/ffn/linear_0")
        linear(f"{d}.mlp.2", f"{s}/ffn/linear_1")
        ln(f"{d}.mlp_ln", f"{s}/ffn/layer_norm")
    ln("decoder.ln", "decoder/layer_norm")

    # The output projection must be the (tied) token embedding, as in openai's model.
    if "decoder/projection/weight" in m.variables:
        p = f32("decoder/projection/weight")
        if not torch.equal(p, sd["decoder.token_embedding.weight"]):
            raise ExportError(f"{m.path}: decoder/projection differs from decoder/embeddings; openai's Whisper ties them")
    elif m.aliases.get("decoder/projection/weight", "decoder/embeddings/weight") != "decoder/embeddings/weight":
        raise ExportError(f"{m.path}: decoder/projection aliases {m.aliases['decoder/projection/weight']!r}")

    # Every tensor must be accounted for; scalars are spec attributes.
    def scalar_attr(name, default=None):
        v = m.variables.get(name)
        return default if v is None else v.scalar()

    leftovers = [k for k, v in m.variables.items() if k not in used and len(v.shape) > 0]
    if leftovers:
        raise ExportError(f"{m.path}: unexpected CT2 variables not mapped to openai names: {leftovers[:8]}")
    for flag, want in (("decoder/scale_embeddings", 0), ("decoder/start_from_zero_embedding", 0), ("decoder/alibi", 0)):
        got = scalar_attr(flag, want)
        if int(got) != want:
            raise ExportError(f"{m.path}: {flag} = {got}; this is not a plain openai Whisper layout")

    n_audio_state = sd["encoder.conv1.weight"].shape[0]
    n_text_state = sd["decoder.token_embedding.weight"].shape[1]
    dims = dict(
        n_mels=int(sd["encoder.conv1.weight"].shape[1]),
        n_audio_ctx=int(sd["encoder.positional_embedding"].shape[0]),
        n_audio_state=int(n_audio_state),
        n_audio_head=int(scalar_attr("encoder/num_heads", n_audio_state // 64)),
        n_audio_layer=n_enc,
        n_vocab=int(sd["decoder.token_embedding.weight"].shape[0]),
        n_text_ctx=int(sd["decoder.positional_embedding"].shape[0]),
        n_text_state=int(n_text_state),
        n_text_head=int(scalar_attr("decoder/num_heads", n_text_state // 64)),
        n_text_layer=n_dec,
    )
    return sd, dims


def read_ct2_config(folder: Path) -> dict:
    p = folder / "config.json"
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ExportError(f"{p}: not valid JSON ({e})") from e
