"""Package Silero VAD's own TorchScript (silero-vad wheel, silero_vad/data/silero_vad.jit).

Calling convention of silero_vad.jit (16 kHz), as its utils_vad.get_speech_timestamps uses it:
  * ``reset_states()`` (no arguments) before each new stream;
  * ``forward(x: Tensor[1, 512] float32, sr: int = 16000) -> Tensor[1, 1]`` speech probability;
    it keeps the LSTM state and the previous 64 samples (context) inside the module, and prepends
    that context itself: the caller passes exactly 512 fresh samples per call, consecutive,
    zero-padding the last short window.

Next to it we write ``silero_vad_batched.ts``, the same network with the per-window work
batched (``SileroBatched`` below): Silero's STFT and convolutional encoder look at one window
(64 context + 512 samples) at a time and keep no state, so every window of a stretch of audio
goes through them in one call, and only the LSTM runs step by step (one ``nn.LSTM`` call over
the sequence, holding the LSTMCell's weights). Calling convention:
  * ``forward(windows: Tensor[N, 576] float32, state: Tensor[2, 1, 128]) ->
    (probs: Tensor[N], state: Tensor[2, 1, 128])``; row i is the 64 samples before window i
    (zeros before the first) followed by its 512 samples; the state starts at zeros and is
    passed from call to call.
The export checks it against the exact answer: the same network in float64 (``exact_probs``).
Both Silero's per-window loop and the batched module are float32 and round differently (the
batched module sums in another order, and the LSTM carries each rounding on); the batched module
passes when it is as close to the float64 answer as Silero's own float32 loop is, within a factor
``BATCHED_FACTOR``. The bound so comes from what the reference itself varies by on the machine at
hand (4.2e-6 on an AMD EPYC), not from one machine's run; a real fault (a lost context carry, a
wrong state) is off by 1e-2 or more.
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
# 2: adds silero_vad_batched.ts
EXPORT_VERSION = 2
# The batched module's distance from the float64 answer may be this many times the per-window
# loop's, and at least BATCHED_FLOOR (a few float32 steps at 1.0, for a loop that happens to be
# exact on a short clip).
BATCHED_FACTOR = 4.0
BATCHED_FLOOR = 2.0 ** -20
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


class SileroBatched(torch.nn.Module):
    """Silero VAD 6 (16 kHz) over many windows per call; see the module docstring."""

    def __init__(self, inner):
        super().__init__()
        self.stft = inner.stft
        self.encoder = inner.encoder
        self.head = inner.decoder.decoder
        cell = inner.decoder.rnn
        self.lstm = torch.nn.LSTM(cell.weight_hh.shape[1], cell.weight_hh.shape[1])
        with torch.no_grad():
            self.lstm.weight_ih_l0.copy_(cell.weight_ih)
            self.lstm.weight_hh_l0.copy_(cell.weight_hh)
            self.lstm.bias_ih_l0.copy_(cell.bias_ih)
            self.lstm.bias_hh_l0.copy_(cell.bias_hh)

    def forward(self, windows: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.encoder(self.stft(windows))  # [N, 128, 1]
        x = x.squeeze(-1).unsqueeze(1)  # [N, 1, 128]: a sequence of N steps, batch 1
        h, (hn, cn) = self.lstm(x, (state[0:1], state[1:2]))
        y = self.head(h.squeeze(1).unsqueeze(-1))  # [N, 1, 1]
        return y.reshape(-1), torch.stack([hn[0], cn[0]])


class _Exact(torch.nn.Module):
    """SileroBatched's network with its STFT in Python, so that all of it runs in float64
    (Silero's scripted STFT casts its output to float32)."""

    def __init__(self, inner):
        super().__init__()
        b = SileroBatched(inner)
        self.register_buffer("basis", inner.stft.forward_basis_buffer.detach().clone())
        self.cut = int(inner.stft.filter_length) // 2 + 1
        self.hop = int(inner.stft.hop_length)
        self.encoder, self.head, self.lstm = b.encoder, b.head, b.lstm

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.pad(windows, (0, CONTEXT), mode="reflect").unsqueeze(1)
        f = torch.nn.functional.conv1d(x, self.basis, None, self.hop)
        mag = (f[:, :self.cut] ** 2 + f[:, self.cut:] ** 2).sqrt()
        x = self.encoder(mag).squeeze(-1).unsqueeze(1)
        h, _ = self.lstm(x)
        return self.head(h.squeeze(1).unsqueeze(-1)).reshape(-1)


def exact_probs(jit: Path, audio: torch.Tensor) -> torch.Tensor:
    """The speech probabilities of every window in float64: the exact answer both float32
    computations are compared with. Loads its own copy of the model (``.double()`` converts
    modules in place)."""
    inner = torch.jit.load(str(jit), map_location="cpu").eval()._model
    exact = _Exact(inner).double().eval()
    with torch.no_grad():
        return exact(batched_windows(audio.double()))


def batched_windows(audio: torch.Tensor) -> torch.Tensor:
    """[N, 576] rows: 64 samples of context, then each 512-sample window (last zero-padded)."""
    n = (audio.numel() + WINDOW - 1) // WINDOW
    a = torch.nn.functional.pad(audio, (CONTEXT, n * WINDOW - audio.numel()))
    return a.unfold(0, WINDOW + CONTEXT, WINDOW)


def batched_probs(batched, audio: torch.Tensor, chunk: int = 1000) -> torch.Tensor:
    windows = batched_windows(audio)
    state = torch.zeros(2, 1, 128)
    out = []
    with torch.no_grad():
        for s in range(0, windows.shape[0], chunk):
            p, state = batched(windows[s:s + chunk], state)
            out.append(p)
    return torch.cat(out)


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

    try:
        batched = torch.jit.script(SileroBatched(model._model).eval())
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"{jit}: cannot build the batched VAD module ({e})") from e
    batched.save(str(folder / "silero_vad_batched.ts"))

    res: dict = {"name": name}
    utils = import_utils_vad(root)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as silero_vad.load_silero_vad does: 512-sample calls are faster single-threaded
    try:
        res.update(_reference(model, utils, jit, parity_ref, log))
        audio, _ = reference_clip()
        fast = batched_probs(batched, audio, chunk=97)
        loop = speech_probs(model, audio)
        exact = exact_probs(folder / "silero_vad.jit", audio)
        diff = float((fast - loop).abs().max())
        e_loop = float((loop.double() - exact).abs().max())
        e_fast = float((fast.double() - exact).abs().max())
        bound = BATCHED_FACTOR * max(e_loop, BATCHED_FLOOR)
        res.update(batched_max_abs_diff=diff, loop_vs_float64=e_loop, batched_vs_float64=e_fast,
                   batched_bound=bound)
        log(f"  vad: batched module vs per-window loop: max abs diff {diff:.2e}; from float64: "
            f"loop {e_loop:.2e}, batched {e_fast:.2e} (bound {bound:.2e})")
        if not e_fast <= bound:
            raise ExportError(f"{jit}: the batched VAD is {e_fast:.3g} from the float64 answer, more than "
                              f"{BATCHED_FACTOR:g} times Silero's own float32 loop ({e_loop:.3g})")
    finally:
        torch.set_num_threads(threads)

    write_manifest(
        folder, "vad", name, "silero-vad-6", "cpu", "float32", False,
        source or f"silero-vad=={SILERO_VERSION} (silero_vad/data/silero_vad.jit)",
        files={"vad": ("silero_vad.jit", "torchscript"), "vad-batched": ("silero_vad_batched.ts", "torchscript")},
        dims={"sample_rate": SAMPLE_RATE, "window": WINDOW, "context": CONTEXT},
        config={**TIMESTAMP_DEFAULTS, "export-version": EXPORT_VERSION},
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

