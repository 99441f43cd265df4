"""Reference transcripts from openai-whisper for tests/whisper_e2e.rs.

  transcribe_ref.py --model CKPT.pt --out REF.json [--task translate] FILE...
      openai `transcribe(fp16=False, temperature=0.0)` (greedy) of each file, with its
      language detection when the model is multilingual;
      with --beam-size N, beam search (openai's BeamSearchDecoder, patience 1).
  transcribe_ref.py --wer --ours DIR --out WER.json FILE...
      WER of our JSON outputs (DIR/STEM.json) and of the reference transcripts in
      pocketsphinx-testdata's `transcription` file, with openai's EnglishTextNormalizer.
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")


def edit_distance(a: list[str], b: list[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def references(files: list[str]) -> dict[str, str]:
    table = {}
    for f in files:
        trans = Path(f).parent / "transcription"
        for line in trans.read_text().splitlines():
            text, _, ident = line.rpartition("(")
            table[ident.rstrip(")").strip()] = text.replace("<s>", "").replace("</s>", "").strip()
    return {f: table[Path(f).stem] for f in files}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--out", required=True)
    ap.add_argument("--wer", action="store_true")
    ap.add_argument("--ours")
    ap.add_argument("--beam-size", type=int)
    ap.add_argument("--task", default="transcribe", choices=["transcribe", "translate"])
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    if a.wer:
        from whisper.normalizers import EnglishTextNormalizer

        norm = EnglishTextNormalizer()
        refs = references(a.files)
        errors = words = 0
        per_file = {}
        for f in a.files:
            ours = json.loads((Path(a.ours) / (Path(f).stem + ".json")).read_text())["text"]
            r, h = norm(refs[f]).split(), norm(ours).split()
            e = edit_distance(r, h)
            per_file[f] = {"errors": e, "words": len(r)}
            errors += e
            words += len(r)
        Path(a.out).write_text(json.dumps({"wer": errors / max(words, 1), "per_file": per_file}))
        return
    import torch
    import whisper

    torch.set_num_threads(2)
    model = whisper.load_model(a.model, device="cpu")
    out = {}
    for f in a.files:
        r = whisper.transcribe(model, f, fp16=False, temperature=0.0, verbose=None, beam_size=a.beam_size,
                               task=a.task)
        out[f] = {
            "text": r["text"],
            "language": r["language"],
            "segments": [{"start": s["start"], "end": s["end"], "text": s["text"], "tokens": s["tokens"]} for s in r["segments"]],
        }
    Path(a.out).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
