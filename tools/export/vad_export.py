"""Package Silero VAD's own TorchScript (silero-vad wheel, silero_vad/data/silero_vad.jit).

Calling convention of silero_vad.jit (16 kHz), as its utils_vad.get_speech_timestamps uses it:
  * ``reset_states()`` (no arguments) before each new stream;
  * ``forward(x: Tensor[1, 512] float32, sr: int = 16000) -> Tensor[1, 1]`` speech probability;
    it keeps the LSTM state and the previous 64 samples (context) inside the module, and prepends
    that context itself: the caller passes exactly 512 fresh samples per call, consecutive,
    zero-padding the last short window.
"""
from __future__ import annotations

import importlib.util
import math
import sys
import zipfile
from pathlib import Path

import torch

from .common import ExportError, atomic_copy, staged_folder, load_wav_16k_mono, quiet_warnings, write_manifest, write_parity_reference

SILERO_VERSION = "6.2.3"
SAMPLE_RATE, WINDOW, CONTEXT = 16000, 512, 64
# get_speech_timestamps defaults (silero-vad 6.2.3)
TIMESTAMP_DEFAULTS = {
    "threshold": 0.5,
    "neg-threshold": 0.35,  # max(threshold - 0.15, 0.01)
    "min-speech-duration-ms": 250,
    "min-silence-duration-ms": 100,
    "speech-pad-ms": 30,
    "max-speech-duration-s": math.inf,
    "min-silence-at-max-speech-ms": 98,
    "use-max-poss-sil-at-max-speech": True,
}


def unpack_wheel(wheel: Path, dest: Path) -> Path:
    """Unzip the silero-vad wheel (once) and return the folder holding ``silero_vad/``."""
    if not wheel.is_file():
        raise ExportError(f"{wheel}: file not found")
    marker = dest / "silero_vad" / "data" / "silero_vad.jit"
    if not marker.is_file():
        try:
            with zipfile.ZipFile(wheel) as z:
                z.extractall(dest)
        except zipfile.BadZipFile as e:
            raise ExportError(f"{wheel}: not a valid wheel/zip ({e})") from e
    if not marker.is_file():
        raise ExportError(f"{wheel}: has no silero_vad/data/silero_vad.jit")
    return dest


def import_utils_vad(root: Path):
    """Import silero_vad/utils_vad.py from an unpacked wheel without the package's __init__."""
    p = root / "silero_vad" / "utils_vad.py"
    if not p.is_file():
        raise ExportError(f"{p}: file not found")
    spec = importlib.util.spec_from_file_location("atelier_silero_utils_vad", p)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def speech_probs(model, audio: torch.Tensor) -> torch.Tensor:
    """Exactly the Rust-side loop: reset_states, then forward([1,512], 16000) per window."""
    model.reset_states()
    out = []
    with torch.no_grad():
        for s in range(0, audio.numel(), WINDOW):
            chunk = audio[s:s + WINDOW]
            if chunk.numel() < WINDOW:
                chunk = torch.nn.functional.pad(chunk, (0, WINDOW - chunk.numel()))
            out.append(model(chunk[None], SAMPLE_RATE).reshape(()).item())
    return torch.tensor(out, dtype=torch.float32)


def reference_clip() -> tuple[torch.Tensor, str]:
    """0.5 s of digital silence, three LibriVox clips with 1.0 s and 0.3 s of silence between
    (falls back to a synthetic signal when the pocketsphinx test data is not installed)."""
    d = Path("/usr/share/pocketsphinx/test/data/librivox")
    names = ["sense_and_sensibility_01_austen_64kb-0870.wav", "sense_and_sensibility_01_austen_64kb-0880.wav",
             "sense_and_sensibility_01_austen_64kb-0890.wav"]
    if all((d / n).is_file() for n in names):
        import numpy as np

        z = lambda s: np.zeros(int(s * SAMPLE_RATE), np.float32)  # noqa: E731
        parts = [z(0.5), load_wav_16k_mono(d / names[0]), z(1.0), load_wav_16k_mono(d / names[1]), z(0.3),
                 load_wav_16k_mono(d / names[2]), z(0.7)]
        return torch.from_numpy(np.concatenate(parts)), "0.5s zeros + 0870 + 1.0s zeros + 0880 + 0.3s zeros + 0890 + 0.7s zeros"
    from .whisper_export import synthetic_audio
    import numpy as np

    a = np.concatenate([np.zeros(8000, np.float32), synthetic_audio(2.0), np.zeros(16000, np.float32)])
    return torch.from_numpy(a), "synthetic"


def export_vad(wheel: Path, unpack_dir: Path, models_dir: Path, name: str = "vad-silero",
               parity_ref: Path | None = None, source: str | None = None, log=print) -> dict:
    quiet_warnings()
    root = unpack_wheel(Path(wheel), Path(unpack_dir))
    jit = root / "silero_vad" / "data" / "silero_vad.jit"
    with staged_folder(models_dir, name) as folder:
        return _export_into(jit, root, folder, name, parity_ref, source, log)


def _export_into(jit: Path, root: Path, folder: Path, name: str, parity_ref, source, log) -> dict:
    atomic_copy(jit, folder / "silero_vad.jit")
    try:
        model = torch.jit.load(str(folder / "silero_vad.jit"), map_location="cpu").eval()
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"{jit}: not a loadable TorchScript archive ({e})") from e
    for meth in ("forward", "reset_states"):
        if not hasattr(model, meth):
            raise ExportError(f"{jit}: has no method {meth!r}; not the expected silero-vad 6 model")

    res: dict = {"name": name}
    utils = import_utils_vad(root)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as silero_vad.load_silero_vad does: 512-sample calls are faster single-threaded
    try:
        res.update(_reference(model, utils, jit, parity_ref, log))
    finally:
        torch.set_num_threads(threads)

    write_manifest(
        folder, "vad", name, "silero-vad-6", "cpu", "float32", False,
        source or f"silero-vad=={SILERO_VERSION} (silero_vad/data/silero_vad.jit)",
        files={"vad": ("silero_vad.jit", "torchscript")},
        dims={"sample_rate": SAMPLE_RATE, "window": WINDOW, "context": CONTEXT},
        config=dict(TIMESTAMP_DEFAULTS),
    )
    return res


def _reference(model, utils, jit, parity_ref, log) -> dict:
    res: dict = {}
    audio, desc = reference_clip()
    probs = speech_probs(model, audio)
    ts = utils.get_speech_timestamps(audio, model, sampling_rate=SAMPLE_RATE)  # reference defaults
    ts_probs = utils.get_speech_timestamps_from_probs(probs.tolist(), sampling_rate=SAMPLE_RATE,
                                                      audio_length_samples=audio.numel())
    if ts != ts_probs:
        raise ExportError(f"{jit}: the per-window loop does not reproduce get_speech_timestamps ({ts} != {ts_probs})")
    # the module keeps state: a second pass after reset_states must give the same numbers
    again = speech_probs(model, audio)
    res["repeat_max_abs_diff"] = float((again - probs).abs().max())
    res["windows"] = probs.numel()
    res["timestamps"] = [(d["start"], d["end"]) for d in ts]
    log(f"  vad: {probs.numel()} windows of {desc}; speech = {[(round(a / 16000, 2), round(b / 16000, 2)) for a, b in res['timestamps']]} s")
    if parity_ref:
        write_parity_reference(parity_ref, {
            "audio": audio,
            "probs": probs,
            "timestamps": torch.tensor(res["timestamps"], dtype=torch.long).reshape(-1, 2),
        }, metadata={"audio": desc, "window": str(WINDOW), "sample_rate": str(SAMPLE_RATE),
                     "timestamps": "get_speech_timestamps defaults, in samples [start, end)"})
        res["parity_ref"] = str(parity_ref)
    return res

