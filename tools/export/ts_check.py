"""A Python mirror of the Rust pipeline that uses ONLY an exported folder (manifest + .ts files):
mel.ts -> global normalisation -> encoder.ts -> cross_kv.ts -> greedy decoder_step.ts loop.
Used to prove an export transcribes; not used at inference."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from .common import ExportError, load_wav_16k_mono, quiet_warnings, read_manifest, verify_folder
from .whisper_export import N_FRAMES, rust_style_log_mel


def greedy_transcribe(folder: str | Path, wav: str | Path, max_tokens: int = 120) -> dict:
    quiet_warnings()
    import whisper.tokenizer as wt

    folder = Path(folder)
    problems = verify_folder(folder)
    if problems:
        raise ExportError("; ".join(problems))
    man = read_manifest(folder)
    if man["family"] != "whisper":
        raise ExportError(f"{folder}: family {man['family']!r} is not whisper")
    dev = torch.device(man["device"])
    f = man["files"]
    load = lambda role: torch.jit.load(str(folder / f[role]["path"]), map_location=dev).eval()  # noqa: E731
    mel_ts, enc_ts, ckv_ts, step_ts = (load(r) for r in ("mel", "encoder", "cross_kv", "decoder_step"))
    dims, cfg = man["dims"], man["config"]
    tok = wt.get_tokenizer(cfg["multilingual"], num_languages=cfg["num-languages"],
                           language="en" if cfg["multilingual"] else None,
                           task="transcribe" if cfg["multilingual"] else None)
    audio = torch.from_numpy(load_wav_16k_mono(wav))
    t0 = time.time()
    with torch.no_grad():
        mel = rust_style_log_mel(mel_ts, audio)[:, :N_FRAMES]
        mel = torch.nn.functional.pad(mel, (0, N_FRAMES - mel.shape[1]))
        feats = enc_ts(mel[None].to(dev))
        ckv = ckv_ts(feats)
        L, D = dims["n_text_layer"], dims["n_text_state"]
        cache = torch.zeros(L, 2, 1, dims["n_text_ctx"], D, device=dev, dtype=ckv.dtype)
        seq = list(tok.sot_sequence_including_notimestamps)
        out: list[int] = []
        pos = 0
        t1 = time.time()
        for i in range(len(seq) + max_tokens):
            cur = seq[i] if i < len(seq) else out[-1]
            logits, align = step_ts(torch.tensor([[cur]], device=dev), torch.tensor([pos], device=dev), ckv, cache,
                                    torch.zeros(pos, device=dev))
            pos += 1
            if i >= len(seq) - 1:
                lg = logits[0, -1].float()
                lg[tok.no_timestamps:] = -float("inf")  # text tokens or EOT only (no timestamps)
                if not out:
                    lg[tok.eot] = -float("inf")
                    lg[tok.encode(" ")[0]] = -float("inf")
                nxt = int(lg.argmax())
                if nxt == tok.eot:
                    break
                out.append(nxt)
        t2 = time.time()
    return {"text": tok.decode(out).strip(), "tokens": out, "encode_s": round(t1 - t0, 3),
            "decode_s": round(t2 - t1, 3), "steps": pos, "align_qk_shape": tuple(align.shape)}
