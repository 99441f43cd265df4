"""Export resemblyzer's speaker encoder (resemblyzer==0.1.4, resemblyzer/pretrained.pt: a GE2E
3-layer LSTM, Apache-2.0) to TorchScript, family ``speaker``.

Two modules, split where resemblyzer's ``VoiceEncoder.embed_utterance`` itself splits its work:
  * ``speaker_mel.ts`` (scripted): ``forward(wav: Tensor[N] float32) -> Tensor[1 + N // 160, 40]``,
    ``audio.wav_to_mel_spectrogram``: librosa's ``melspectrogram`` with its defaults as resemblyzer
    calls it (n_fft 400, hop 160, periodic Hann window of 400, ``center=True`` with zero padding
    (librosa >= 0.10's ``pad_mode="constant"``), power 2, slaney-scale mel filters with slaney
    norm, 40 bands; the filter bank is librosa's own, stored in the module). No log: the
    encoder takes mel power.
  * ``speaker_encoder.ts`` (traced): ``forward(mels: Tensor[B, 160, 40]) -> Tensor[B, 256]``,
    ``VoiceEncoder.forward``: LSTM, the last layer's final hidden state, Linear, ReLU, L2 norm.

What stays outside (in Rust, ``src/engine/speaker/``): ``compute_partial_slices`` (160-frame
partials at rate 1.3 per second, min_coverage 0.75, zero padding of the tail), the mean of the
partial embeddings and its L2 norm, and ``preprocess_wav``'s volume normalisation (-30 dBFS,
increase only). Its webrtcvad silence trimming is replaced by Silero VAD's speech ranges.

Parity (at export): ``embed_utterance`` rebuilt from the two modules against resemblyzer's own
``VoiceEncoder.embed_utterance`` on ``preprocess_wav`` of real speech (LibriVox clips): cosine
>= ``MIN_COSINE``. Both are float32 with the same LSTM; the only difference is the STFT
(torch's FFT vs numpy's), some 1e-7 relative, so the cosine is 1 - 1e-7 or so; 0.9999 catches any
mistake in framing, padding, window or filters (a shifted frame alone costs more).
The parity reference (``--parity-ref``) holds each preprocessed clip with resemblyzer's embedding,
so the Rust side is checked against resemblyzer too (tests/diarize.rs).
"""
from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import torch

from .common import ExportError, staged_folder, load_wav_16k_mono, quiet_warnings, write_manifest, write_parity_reference

RESEMBLYZER_VERSION = "0.1.4"
EXPORT_VERSION = 1
MIN_COSINE = 0.9999
SAMPLE_RATE, N_FFT, HOP, N_MELS, PARTIAL_FRAMES, EMBED = 16000, 400, 160, 40, 160, 256
# embed_utterance defaults, and preprocess_wav's volume target (resemblyzer 0.1.4)
PARTIALS = {"rate": 1.3, "min-coverage": 0.75, "partial-frames": PARTIAL_FRAMES, "norm-target-dbfs": -30.0}
PARITY_CLIPS = ["sense_and_sensibility_01_austen_64kb-0870.wav", "sense_and_sensibility_01_austen_64kb-0880.wav"]
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


class SpeakerMel(torch.nn.Module):
    """resemblyzer's ``wav_to_mel_spectrogram`` (librosa melspectrogram defaults); see above."""

    def __init__(self, mel_basis: torch.Tensor):
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True, dtype=torch.float64).float())
        self.register_buffer("basis", mel_basis.float())  # [40, 201]

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(wav, 400, 160, 400, self.window, center=True, pad_mode="constant",
                          normalized=False, onesided=True, return_complex=True)
        power = spec.real * spec.real + spec.imag * spec.imag  # [201, T]
        return (self.basis @ power).t().contiguous()  # [T, 40]


class SpeakerEncoder(torch.nn.Module):
    """``VoiceEncoder.forward`` with its weights."""

    def __init__(self, enc):
        super().__init__()
        self.lstm, self.linear, self.relu = enc.lstm, enc.linear, enc.relu

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        raw = self.relu(self.linear(hidden[-1]))
        return raw / torch.norm(raw, dim=1, keepdim=True)


def partial_slices(n_samples: int, rate: float = 1.3, min_coverage: float = 0.75) -> list[int]:
    """Start frames of resemblyzer's ``compute_partial_slices`` (the Rust side ports this too)."""
    import numpy as np

    n_frames = int(np.ceil((n_samples + 1) / HOP))
    step = int(np.round((SAMPLE_RATE / rate) / HOP))
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step))
    last = starts[-1] * HOP
    coverage = (n_samples - last) / (PARTIAL_FRAMES * HOP)
    if coverage < min_coverage and len(starts) > 1:
        starts = starts[:-1]
    return starts


def embed_utterance(mel_mod, enc_mod, wav: torch.Tensor) -> torch.Tensor:
    """``embed_utterance`` from the two modules, as the Rust side runs it."""
    starts = partial_slices(wav.numel())
    need = starts[-1] * HOP + PARTIAL_FRAMES * HOP
    if need >= wav.numel():
        wav = torch.nn.functional.pad(wav, (0, need - wav.numel()))
    with torch.no_grad():
        mel = mel_mod(wav)
        mels = torch.stack([mel[s:s + PARTIAL_FRAMES] for s in starts])
        e = enc_mod(mels).mean(0)
    return e / e.norm()


def unpack_wheel(wheel: Path, dest: Path) -> Path:
    if not wheel.is_file():
        raise ExportError(f"{wheel}: file not found")
    marker = dest / "resemblyzer" / "pretrained.pt"
    if not marker.is_file():
        try:
            with zipfile.ZipFile(wheel) as z:
                z.extractall(dest)
        except zipfile.BadZipFile as e:
            raise ExportError(f"{wheel}: not a valid wheel/zip ({e})") from e
    if not marker.is_file():
        raise ExportError(f"{wheel}: has no resemblyzer/pretrained.pt; not the resemblyzer wheel")
    return dest


def import_resemblyzer(root: Path):
    sys.path.insert(0, str(root))
    try:
        from resemblyzer import VoiceEncoder, preprocess_wav
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"{root}: cannot import resemblyzer ({e}); its librosa and webrtcvad come from "
                          f"tools/export/requirements.txt") from e
    finally:
        sys.path.remove(str(root))
    return VoiceEncoder, preprocess_wav


def parity_audio() -> list[tuple[str, "object"]]:
    if not all((LIBRIVOX / n).is_file() for n in PARITY_CLIPS):
        raise ExportError(f"{LIBRIVOX}: the LibriVox clips of the parity check are missing "
                          f"(apt install pocketsphinx-testdata)")
    return [(n, load_wav_16k_mono(LIBRIVOX / n)) for n in PARITY_CLIPS]


def export_speaker(wheel: Path, unpack_dir: Path, models_dir: Path, name: str = "speaker-resemblyzer",
                   parity_ref: Path | None = None, source: str | None = None, log=print) -> dict:
    quiet_warnings()
    root = unpack_wheel(Path(wheel), Path(unpack_dir))
    VoiceEncoder, preprocess_wav = import_resemblyzer(root)
    import librosa
    import numpy as np

    try:
        ref = VoiceEncoder("cpu", verbose=False, weights_fpath=root / "resemblyzer" / "pretrained.pt").eval()
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"{wheel}: resemblyzer/pretrained.pt does not load ({e})") from e
    basis = torch.from_numpy(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS))
    mel_mod = torch.jit.script(SpeakerMel(basis).eval())
    with torch.no_grad():
        enc_mod = torch.jit.trace(SpeakerEncoder(ref).eval(), torch.rand(3, PARTIAL_FRAMES, N_MELS))

    res: dict = {"name": name}
    cosines, ref_tensors = [], {}
    for i, (clip, raw) in enumerate(parity_audio()):
        wav = preprocess_wav(raw)
        want = ref.embed_utterance(wav)
        # the librosa mel itself, frame for frame (relative, so it does not depend on the level)
        m_ref = torch.from_numpy(librosa.feature.melspectrogram(y=wav, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP,
                                                                n_mels=N_MELS).astype(np.float32).T)
        with torch.no_grad():
            m_ours = mel_mod(torch.from_numpy(wav))
        if m_ours.shape != m_ref.shape:
            raise ExportError(f"{wheel}: mel frames {tuple(m_ours.shape)} != librosa's {tuple(m_ref.shape)}")
        mel_rel = float((m_ours - m_ref).abs().max() / m_ref.abs().max())
        got = embed_utterance(mel_mod, enc_mod, torch.from_numpy(wav))
        cos = float(torch.dot(got, torch.from_numpy(want)) / (got.norm() * np.linalg.norm(want)))
        cosines.append(cos)
        log(f"  speaker: {clip}: {len(wav) / SAMPLE_RATE:.2f} s after preprocess_wav, mel rel diff {mel_rel:.2e}, "
            f"embedding cosine vs resemblyzer {cos:.7f}")
        ref_tensors[f"wav{i}"] = torch.from_numpy(wav.astype(np.float32))
        ref_tensors[f"embed{i}"] = torch.from_numpy(want.astype(np.float32))
    res["min_cosine"] = min(cosines)
    if not min(cosines) >= MIN_COSINE:
        raise ExportError(f"{wheel}: the exported encoder's embedding is {min(cosines):.6f} cosine from "
                          f"resemblyzer's own, under {MIN_COSINE}")

    with staged_folder(models_dir, name) as folder:
        mel_mod.save(str(folder / "speaker_mel.ts"))
        enc_mod.save(str(folder / "speaker_encoder.ts"))
        write_manifest(
            folder, "speaker", name, "resemblyzer-ge2e", "cpu", "float32", False,
            source or f"resemblyzer=={RESEMBLYZER_VERSION} (resemblyzer/pretrained.pt)",
            files={"mel": ("speaker_mel.ts", "torchscript"), "encoder": ("speaker_encoder.ts", "torchscript")},
            dims={"sample_rate": SAMPLE_RATE, "hop": HOP, "n_mels": N_MELS, "embedding": EMBED},
            config={**PARTIALS, "export-version": EXPORT_VERSION},
        )
    if parity_ref:
        write_parity_reference(parity_ref, ref_tensors, metadata={
            "clips": ",".join(PARITY_CLIPS), "wavN": "resemblyzer preprocess_wav of clip N",
            "embedN": "VoiceEncoder.embed_utterance(wavN)"})
        res["parity_ref"] = str(parity_ref)
    return res
