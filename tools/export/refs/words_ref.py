"""Reference outputs of openai-whisper's word timestamps (whisper/timing.py and the word parts
of whisper/transcribe.py), for tests/whisper_words.rs.

Usage:
  python words_ref.py cases REQUEST.json OUT.json
      REQUEST holds {"median_filter": [{"x": nested lists, "width": w}],
                     "dtw": [matrix (list of rows)],
                     "merge": [{"words": [[word, [tokens]]...], "prepended": s, "appended": s}]}.
      OUT holds openai's result for each: median_filter(torch.float32), dtw_cpu(float64) as
      [text_indices, time_indices], merge_punctuations' words and tokens.
  python words_ref.py transcribe REQUEST.json OUT.json
      REQUEST holds {"checkpoint": .pt, "manifest": manifest.toml,
                     "cases": [{"name", "audio", "options": {transcribe kwargs}}]}.
      The model is loaded on the CPU with the alignment heads of our manifest's [config]
      alignment-heads (openai would otherwise use the last half of the decoder layers).
      OUT holds {name: transcribe(model, audio, fp16=False, **options)}.
"""

import json
import sys
import tomllib

import numpy as np
import torch


def cases(request):
    from whisper.timing import WordTiming, dtw_cpu, median_filter, merge_punctuations

    out = {"median_filter": [], "dtw": [], "merge": []}
    for case in request["median_filter"]:
        x = torch.tensor(case["x"], dtype=torch.float32)
        y = median_filter(x, case["width"])
        out["median_filter"].append(y.tolist())
    for matrix in request["dtw"]:
        x = np.array(matrix, dtype=np.float64)
        text_indices, time_indices = dtw_cpu(x)
        out["dtw"].append([text_indices.tolist(), time_indices.tolist()])
    for case in request["merge"]:
        alignment = [WordTiming(w, list(t), 0.0, 0.0, 0.0) for w, t in case["words"]]
        merge_punctuations(alignment, case["prepended"], case["appended"])
        out["merge"].append([[t.word, t.tokens] for t in alignment])
    return out


def transcribe(request):
    import whisper

    model = whisper.load_model(request["checkpoint"], device="cpu")
    with open(request["manifest"], "rb") as f:
        manifest = tomllib.load(f)
    heads = manifest["config"]["alignment-heads"]
    mask = torch.zeros(model.dims.n_text_layer, model.dims.n_text_head, dtype=torch.bool)
    for layer, head in heads:
        mask[layer, head] = True
    model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)

    out = {}
    for case in request["cases"]:
        out[case["name"]] = whisper.transcribe(
            model, case["audio"], fp16=False, verbose=None, **case["options"]
        )
    return out


def main():
    mode, request_path, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(request_path, encoding="utf-8") as f:
        request = json.load(f)
    out = {"cases": cases, "transcribe": transcribe}[mode](request)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
