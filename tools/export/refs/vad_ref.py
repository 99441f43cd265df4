"""Reference Silero VAD output for tests/vad.rs, from silero-vad's own code.

Usage:
  python vad_ref.py MODEL_DIR SILERO_ROOT WAV OUT.json

MODEL_DIR holds silero_vad.jit (the file the silero-vad 6.2.3 wheel ships; the manifest
records its sha256). SILERO_ROOT is the unpacked wheel (the folder holding silero_vad/), whose
utils_vad.py is imported as is. WAV is 16 kHz mono 16-bit PCM.

OUT holds {"probs": the speech probability of every 512-sample window, as the model's own
audio_forward computes it (reset_states, then one forward call per window, the last one
zero-padded), "timestamps": [[start, end], ...] from utils_vad.get_speech_timestamps(audio,
model, sampling_rate=16000) with its defaults, in samples, "exact": the same probabilities in
float64 (tools/export/vad_export.exact_probs: the network with every step in float64), the
answer both float32 computations are measured against}.
"""

import importlib.util
import json
import sys
import wave
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tools.export.vad_export import exact_probs  # noqa: E402


def main() -> None:
    model_dir, silero_root, wav, out = map(Path, sys.argv[1:5])
    spec = importlib.util.spec_from_file_location("silero_utils_vad", silero_root / "silero_vad" / "utils_vad.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    torch.set_num_threads(1)
    model = torch.jit.load(str(model_dir / "silero_vad.jit"), map_location="cpu").eval()
    with wave.open(str(wav)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    audio = torch.from_numpy(pcm.astype(np.float32) / 32768.0)
    probs = model.audio_forward(audio[None], 16000)[0]
    ts = utils.get_speech_timestamps(audio, model, sampling_rate=16000)
    out.write_text(json.dumps({
        "probs": probs.tolist(),
        "timestamps": [[d["start"], d["end"]] for d in ts],
        "exact": exact_probs(model_dir / "silero_vad.jit", audio).tolist(),
    }))


if __name__ == "__main__":
    main()
