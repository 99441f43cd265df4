"""Shared helpers: hashing, atomic writes, manifest.toml, tracing, parity references."""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import math
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

MANIFEST_FORMAT = 1
FAMILIES = ("whisper", "clip", "sd", "controlnet", "vad", "speaker")
KINDS = ("torchscript", "asset")


class ExportError(RuntimeError):
    """A user-facing failure (missing/corrupt source, bad option); printed without a traceback."""


def quiet_warnings() -> None:
    """Silence the deprecation and tracer chatter of torch 2.13 / transformers / whisper."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    try:
        import torch.jit

        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    except Exception:  # pragma: no cover - torch missing
        pass


# --------------------------------------------------------------------------- files


def sha256_file(path: os.PathLike | str, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(bufsize)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: os.PathLike | str):
    """Yield a temporary path in the same folder; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: os.PathLike | str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: os.PathLike | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_copy(src: os.PathLike | str, dst: os.PathLike | str) -> None:
    src = Path(src)
    if not src.is_file():
        raise ExportError(f"{src}: file not found")
    with atomic_path(dst) as tmp:
        with open(src, "rb") as fi, open(tmp, "wb") as fo:
            while True:
                b = fi.read(1 << 20)
                if not b:
                    break
                fo.write(b)
            fo.flush()
            os.fsync(fo.fileno())


@contextlib.contextmanager
def staged_folder(models_dir: os.PathLike | str, name: str):
    """Yield ``models_dir/.name.partial``; on success swap it in as ``models_dir/name``.
    A failed export leaves any previous ``name`` folder untouched."""
    import shutil

    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    final, stage, old = models_dir / name, models_dir / f".{name}.partial", models_dir / f".{name}.old"
    for p in (stage, old):
        if p.exists():
            shutil.rmtree(p)
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if final.exists():
        os.replace(final, old)
    os.replace(stage, final)
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- TOML

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(k: str) -> str:
    return k if _BARE_KEY.match(k) else _toml_str(k)


def _toml_str(s: str) -> str:
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\u{o:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        r = repr(v)
        return r if ("." in r or "e" in r or "n" in r) else r + ".0"
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_toml_key(str(k))} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if hasattr(v, "item"):  # numpy / torch scalars
        return _toml_value(v.item())
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _toml_table(header: str, items: Mapping[str, Any]) -> str:
    lines = [f"[{header}]"]
    for k, v in items.items():
        lines.append(f"{_toml_key(str(k))} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def torch_version() -> str:
    import torch

    return torch.__version__.split("+")[0]


# Options of the export commands that a re-import for another runtime replaces.
_RUNTIME_OPTS = ("--device", "--dtype")


def import_command() -> str:
    """The command that makes this model folder again, less --device/--dtype (atelier adds
    them when it refuses a model exported for another runtime). ``atelier models import``
    passes its own command line in ATELIER_IMPORT_COMMAND; otherwise it is this export tool's."""
    import shlex
    import sys

    given = os.environ.get("ATELIER_IMPORT_COMMAND")
    if given:
        return given
    argv, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a in _RUNTIME_OPTS:
            skip = True
            continue
        if a.split("=", 1)[0] in _RUNTIME_OPTS:
            continue
        argv.append(a)
    return f"cd {shlex.quote(os.getcwd())} && {shlex.quote(sys.executable)} -m tools.export {shlex.join(argv)}"


def write_manifest(
    folder: os.PathLike | str,
    family: str,
    name: str,
    variant: str,
    device: str,
    dtype: str,
    random_init: bool,
    source: str,
    files: Mapping[str, tuple[str, str]],
    dims: Mapping[str, int] | None = None,
    config: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``folder/manifest.toml`` (docs/models.md format 1), hashing every listed file."""
    folder = Path(folder)
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, not {device!r}")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be float32 or float16, not {dtype!r}")
    head = {
        "format": MANIFEST_FORMAT,
        "family": family,
        "name": name,
        "variant": variant,
        "device": device,
        "dtype": dtype,
        "random-init": bool(random_init),
        "source": source,
        "exported-with": f"torch {torch_version()}",
        "created": utc_now(),
        "import-command": import_command(),
    }
    # The hub repo the weights came from (`atelier models import` passes it): the model then
    # answers to that name (src/engine/store/names.rs).
    if os.environ.get("ATELIER_SOURCE_REPO"):
        head["source-repo"] = os.environ["ATELIER_SOURCE_REPO"]
    parts = ["".join(f"{k} = {_toml_value(v)}\n" for k, v in head.items())]
    for role, (fname, kind) in files.items():
        if kind not in KINDS:
            raise ValueError(f"file kind must be one of {KINDS}, not {kind!r}")
        p = folder / fname
        if not p.is_file():
            raise ExportError(f"{p}: listed in the manifest as role {role!r} but missing")
        parts.append(_toml_table(f"files.{_toml_key(role)}", {"path": fname, "sha256": sha256_file(p), "kind": kind}))
    if dims:
        for k, v in dims.items():
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"dims.{k} must be an integer, got {v!r}")
        parts.append(_toml_table("dims", dims))
    if config:
        parts.append(_toml_table("config", config))
    text = "\n".join(parts)
    out = folder / "manifest.toml"
    atomic_write_text(out, text)
    return out


def read_manifest(folder: os.PathLike | str) -> dict:
    import tomllib

    p = Path(folder) / "manifest.toml"
    with open(p, "rb") as f:
        return tomllib.load(f)


def verify_folder(folder: os.PathLike | str, load_torchscript: bool = False) -> list[str]:
    """Return a list of problems with a model folder ([] when it verifies)."""
    folder = Path(folder)
    problems: list[str] = []
    try:
        m = read_manifest(folder)
    except FileNotFoundError:
        return [f"{folder / 'manifest.toml'}: missing"]
    except Exception as e:  # noqa: BLE001
        return [f"{folder / 'manifest.toml'}: unreadable ({e})"]
    if m.get("format") != MANIFEST_FORMAT:
        problems.append(f"{folder / 'manifest.toml'}: format {m.get('format')!r} != {MANIFEST_FORMAT}")
    for role, spec in (m.get("files") or {}).items():
        p = folder / spec.get("path", "")
        if not p.is_file():
            problems.append(f"{p}: missing (role {role})")
            continue
        if sha256_file(p) != spec.get("sha256"):
            problems.append(f"{p}: sha256 mismatch (role {role})")
            continue
        if load_torchscript and spec.get("kind") == "torchscript":
            import torch

            try:
                torch.jit.load(str(p), map_location="cpu" if m.get("device") == "cpu" else None)
            except Exception as e:  # noqa: BLE001
                problems.append(f"{p}: cannot be loaded as TorchScript ({e})")
    return problems


# --------------------------------------------------------------------------- tracing / references


def trace_and_save(module, example_inputs, path: os.PathLike | str, check_inputs: Iterable | None = None,
                   check_tolerance: float = 1e-5):
    """Trace ``module`` with ``example_inputs`` (a tuple), save atomically, and return the module
    loaded back from ``path`` (so callers verify the artefact itself, not the in-memory trace)."""
    import torch

    quiet_warnings()
    module = module.eval()
    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    with torch.no_grad():
        kwargs = {}
        if check_inputs is not None:
            kwargs["check_inputs"] = [ci if isinstance(ci, tuple) else (ci,) for ci in check_inputs]
            kwargs["check_tolerance"] = check_tolerance
        else:
            kwargs["check_trace"] = False
        traced = torch.jit.trace(module, example_inputs, **kwargs)
    with atomic_path(path) as tmp:
        torch.jit.save(traced, str(tmp))
    return torch.jit.load(str(path), map_location=None)


def write_parity_reference(path: os.PathLike | str, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> Path:
    """Save named tensors (made contiguous, on the CPU) as a safetensors file for Rust tests."""
    import torch
    from safetensors.torch import save_file

    clean = {}
    for k, t in tensors.items():
        if not torch.is_tensor(t):
            t = torch.as_tensor(t)
        clean[k] = t.detach().to("cpu").contiguous().clone()
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata=dict(metadata) if metadata else None)
    return Path(path)


def load_wav_16k_mono(path: os.PathLike | str):
    """Read a 16-bit PCM (or float) mono/stereo WAV at 16 kHz as float32 numpy in [-1, 1]."""
    import wave

    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: file not found")
    try:
        with wave.open(str(path), "rb") as w:
            sr, ch, width, n = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
            raw = w.readframes(n)
    except wave.Error as e:
        raise ExportError(f"{path}: not a PCM WAV file ({e})") from e
    if width == 2:
        a = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 4:
        a = np.frombuffer(raw, "<i4").astype(np.float32) / 2147483648.0
    elif width == 1:
        a = (np.frombuffer(raw, "u1").astype(np.float32) - 128.0) / 128.0
    else:
        raise ExportError(f"{path}: unsupported sample width {width}")
    if ch > 1:
        a = a.reshape(-1, ch).mean(axis=1)
    if sr != 16000:
        raise ExportError(f"{path}: sample rate {sr} Hz, expected 16000 Hz")
    return np.ascontiguousarray(a, dtype=np.float32)
