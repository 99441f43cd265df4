"""Stable Diffusion benchmark: `atelier generate` vs diffusers' StableDiffusionPipeline, same weights.

    cargo build --release
    .venv/bin/python tools/bench/sd_bench.py --out /tmp/bench-sd.json        # --size 256 --steps 20

One random-weight model of the real SD 1.5 architecture (tools/export/sd_configs.py `sd15`: the
full-size UNet, CLIP ViT-L/14 text encoder and VAE) is made once under
$XDG_CACHE_HOME/atelier/bench-sd (--cache): its weights are rounded to float16 and kept as a
diffusers folder (float16 on disk like the published SD 1.5 checkpoints, 2.1 GB instead of 4.3),
and exported from that folder with `python -m tools.export import-sd` (float32 TorchScript, what
atelier runs on the CPU). Both engines therefore compute in float32 on bit-identical weights.
The making needs about 7 GB of disk, once (8.5 minutes on the 2-core machine under load).
The default size is 256x256 at 20 steps: at SD 1.5's native 512x512 one run takes several
minutes on 2 CPU cores (--size 512 where the time is there).

Then, for each scheduler (DPM++ 2M Karras = DPMSolverMultistepScheduler with Karras sigmas, and
Euler a = EulerAncestralDiscreteScheduler), each engine runs the same prompt, negative prompt,
seed, steps, guidance and size as its own process timed by /usr/bin/time (wall, user + sys CPU
seconds, peak RSS), with 2 torch threads (--threads). Reported per run:

* wall, CPU seconds and peak RSS of the whole process (start-up, load, text encoding, denoising,
  VAE decode, PNG);
* seconds per denoising step (atelier: its own summary line, the denoising loop over the steps;
  diffusers: first UNet call to the end of the last step, taken with a forward pre-hook and
  `callback_on_step_end` in the same process);
* start-up + model load: a separate process of each engine making one 64x64 image in 1 step
  (the load dominates it), after every model file was read once (warm page cache for both);
  for diffusers also its import and `from_pretrained` seconds alone;
* the largest and mean absolute difference between the two engines' PNGs (0-255): same weights
  and seeds should give near-identical images.

--device cuda runs both engines on the GPU in float16 (the same float16 weights, exported for
CUDA into models-cuda/), with the seeds still drawn on the CPU generator; peak device memory is
then reported for both, measured alike (total - free from the CUDA runtime, sampled after every
step and at the end). --only picks engines (atelier, diffusers) and/or schedulers
(dpmpp-2m-karras, euler-a). Each
result is printed as soon as it is known; the load average before and after is recorded: on a
shared, busy machine compare CPU seconds rather than wall time, and say so next to the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from clip_bench import cpu_name, load_average  # same folder: the machine description both benchmarks print

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
MODEL = "sd15-bench"
ENGINES = ("atelier", "diffusers")
SCHEDULERS = ("dpmpp-2m-karras", "euler-a")
PROMPT = "a watercolor painting of a lighthouse at dusk, soft light, detailed"
NEGATIVE = "blurry, low quality"
SEED = 42
GUIDANCE = 7.5
NEED_DISK = 7 * 10**9

MAKE_SOURCE = r'''
import sys
import torch
sys.path.insert(0, ".")
from tools.export import sd_configs
pipe = sd_configs.build_pipeline("sd15", seed=0, dtype=torch.float16)
pipe.save_pretrained(sys.argv[1], safe_serialization=True)
'''

PEER = r'''
import json, sys, time
t_start = time.perf_counter()
src, scheduler, prompt, negative, seed, steps, guidance, size, threads, out, device = sys.argv[1:12]
import warnings
warnings.filterwarnings("ignore")
import torch
torch.set_num_threads(int(threads))
import diffusers
sys.path.insert(0, ".")
from tools.export.refs.sd_pipeline_ref import scheduler_for
cuda = device == "cuda"
t_import = time.perf_counter()
pipe = diffusers.StableDiffusionPipeline.from_pretrained(src, torch_dtype=torch.float16 if cuda else torch.float32,
                                                         safety_checker=None, requires_safety_checker=False,
                                                         local_files_only=True).to(device)
pipe.scheduler = scheduler_for(scheduler, pipe.scheduler.config)
pipe.set_progress_bar_config(disable=True)
if cuda:
    torch.cuda.synchronize()
t_loaded = time.perf_counter()
marks = {"peak_device": 0}
def sample():
    if cuda:
        torch.cuda.synchronize()
        free, total = torch.cuda.mem_get_info()
        marks["peak_device"] = max(marks["peak_device"], total - free)
    return time.perf_counter()
def first_unet_call(module, args):
    if "first_unet" not in marks:
        marks["first_unet"] = sample()  # returns None: the inputs stay as they are
pipe.unet.register_forward_pre_hook(first_unet_call)
def on_step(p, i, t, kw):
    marks["last_step"] = sample()
    return kw
with torch.no_grad():
    image = pipe(prompt, negative_prompt=negative, num_inference_steps=int(steps), guidance_scale=float(guidance),
                 width=int(size), height=int(size), generator=torch.Generator("cpu").manual_seed(int(seed)),
                 callback_on_step_end=on_step).images[0]
sample()
image.save(out)
print(json.dumps({"import_s": t_import - t_start, "load_s": t_loaded - t_import,
                  "s_per_step": (marks["last_step"] - marks["first_unet"]) / int(steps),
                  "peak_device_mib": round(marks["peak_device"] / 2**20) if cuda else None}))
'''


def make_model(cache: Path, device: str) -> tuple[Path, Path]:
    """The diffusers folder (float16 weights) and the models folder with atelier's export, made once."""
    src, models = cache / "src-fp16", cache / ("models" if device == "cpu" else "models-cuda")
    if (models / MODEL / "manifest.toml").is_file() and (src / "model_index.json").is_file():
        return src, models
    cache.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache).free
    if free < NEED_DISK:
        raise SystemExit(f"{cache}: {free / 1e9:.1f} GB free; making the SD 1.5-sized model needs about "
                         f"{NEED_DISK / 1e9:.0f} GB (use --cache on a larger disk)")
    if not (src / "model_index.json").is_file():
        print(f"making the random SD 1.5 weights (float16) in {src} ...", flush=True)
        tmp = cache / "src-fp16.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run([PY, "-c", MAKE_SOURCE, str(tmp)], cwd=ROOT, check=True)
        tmp.rename(src)
    print(f"exporting it for atelier into {models / MODEL} ...", flush=True)
    dtype = "float32" if device == "cpu" else "float16"
    subprocess.run([PY, "-m", "tools.export", "import-sd", str(src), "--models", str(models), "--name", MODEL,
                    "--device", device, "--dtype", dtype, "--no-verify", "--force"], cwd=ROOT, check=True)
    # Exported from a folder, the manifest does not know the weights are random: say so, so that
    # atelier warns like for any --random-init model.
    manifest = models / MODEL / "manifest.toml"
    text = manifest.read_text()
    marked = re.sub(r"(?m)^random-init = false$", "random-init = true", text)
    if marked != text:
        manifest.write_text(marked)
    return src, models


def warm_page_cache(*folders: Path) -> None:
    """Read every model file once, so that neither engine's load time pays for a cold disk."""
    for folder in folders:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                with f.open("rb") as fh:
                    while fh.read(1 << 24):
                        pass


def timed(cmd: list[str], env=None) -> tuple[dict, subprocess.CompletedProcess]:
    """One process under /usr/bin/time: wall s, user + sys CPU s, peak RSS MiB."""
    if not Path("/usr/bin/time").is_file():
        raise SystemExit("/usr/bin/time is missing (apt install time)")
    out = subprocess.run(["/usr/bin/time", "-f", "TIME %e %U %S %M", *cmd], capture_output=True, text=True,
                         env=env, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{out.stderr[-3000:]}")
    line = [x for x in out.stderr.splitlines() if x.startswith("TIME ")][-1]
    wall, user, sys_s, rss = line.split()[1:]
    return {"wall_s": float(wall), "cpu_s": round(float(user) + float(sys_s), 1),
            "peak_rss_mib": round(int(rss) / 1024)}, out


def atelier_run(a, env, scheduler: str, size: int, steps: int, out: Path) -> tuple[dict, Path]:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [str(a.atelier), "generate", PROMPT, "--negative", NEGATIVE, "--seed", str(SEED), "--steps", str(steps),
           "--guidance", str(GUIDANCE), "--scheduler", scheduler, "--width", str(size), "--height", str(size),
           "--model", MODEL, "--device", a.device, "--threads", str(a.threads), "--out", str(out)]
    r, proc = timed(cmd, env)
    png = Path(proc.stdout.strip().splitlines()[-1])
    # "1 image(s), seed 42, 20 steps in 93.1 s (4.12 s/step), peak memory 2730 MiB"
    m = re.search(r"steps in ([0-9.]+) s \(([0-9.]+) s/step\)", proc.stderr)
    if m:
        r["s_per_step"] = float(m.group(2))
    m = re.search(r"peak memory ([0-9]+) MiB", proc.stderr)
    if m and a.device == "cuda":
        r["peak_device_mib"] = int(m.group(1))
    return r, png


def diffusers_run(a, src: Path, scheduler: str, size: int, steps: int, png: Path) -> tuple[dict, Path]:
    r, proc = timed([PY, "-c", PEER, str(src), scheduler, PROMPT, NEGATIVE, str(SEED), str(steps), str(GUIDANCE),
                     str(size), str(a.threads), str(png), a.device])
    inner = json.loads(proc.stdout.strip().splitlines()[-1])
    if inner["peak_device_mib"] is not None:
        r["peak_device_mib"] = inner["peak_device_mib"]
    r["s_per_step"] = round(inner["s_per_step"], 3)
    r["import_s"] = round(inner["import_s"], 2)
    r["from_pretrained_s"] = round(inner["load_s"], 2)
    return r, png


def png_diff(a: Path, b: Path) -> dict:
    import numpy as np
    from PIL import Image

    x = np.asarray(Image.open(a).convert("RGB"), dtype=np.int16)
    y = np.asarray(Image.open(b).convert("RGB"), dtype=np.int16)
    d = np.abs(x - y)
    # The image's own spread, to show the comparison is not between two flat images.
    return {"max": int(d.max()), "mean": round(float(d.mean()), 3), "pixels_over_2": int((d.max(axis=2) > 2).sum()),
            "image_std": round(float(x.std()), 1)}


def report(result: dict, key: str, r: dict) -> None:
    result["runs"][key] = r
    print(f"{key}: {json.dumps(r)}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256,
                    help="image width = height in pixels (default 256: at 512 one run takes several minutes on 2 cores)")
    ap.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each engine (default 2)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: both engines on the GPU in float16 (default cpu, float32)")
    ap.add_argument("--only", nargs="+", default=[], metavar="NAME",
                    help=f"run only these engines and/or schedulers ({', '.join(ENGINES + SCHEDULERS)})")
    ap.add_argument("--cache", type=Path, help="the model, kept between runs "
                    "(default: $XDG_CACHE_HOME/atelier/bench-sd)")
    ap.add_argument("--atelier", type=Path, default=ROOT / "target/release/atelier")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    a = ap.parse_args()
    unknown = [x for x in a.only if x not in ENGINES + SCHEDULERS]
    if unknown:
        raise SystemExit(f"--only {' '.join(unknown)}: unknown (known: {', '.join(ENGINES + SCHEDULERS)})")
    engines = [e for e in ENGINES if e in a.only] or list(ENGINES)
    schedulers = [s for s in SCHEDULERS if s in a.only] or list(SCHEDULERS)
    if a.size % 8 or a.size < 64:
        raise SystemExit(f"--size {a.size}: must be a multiple of 8, at least 64")
    if "atelier" in engines and not a.atelier.is_file():
        raise SystemExit(f"{a.atelier}: build it first (cargo build --release)")
    if a.cache is None:
        a.cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "atelier" / "bench-sd"

    src, models = make_model(a.cache, a.device)
    warm_page_cache(src, models / MODEL)
    result = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "load_before": load_average()},
              "model": "random-weight SD 1.5 (sd_configs sd15, float16-rounded weights, "
                       + ("float32 compute on the CPU)" if a.device == "cpu" else "float16 on CUDA)"),
              "device": a.device,
              "size": a.size, "steps": a.steps, "guidance": GUIDANCE, "seed": SEED, "threads": a.threads,
              "prompt": PROMPT, "negative": NEGATIVE, "runs": {}, "png_diff": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, ATELIER_MODELS=str(models), XDG_STATE_HOME=str(tmp / "state"),
                   XDG_DATA_HOME=str(tmp / "data"), XDG_CACHE_HOME=str(tmp / "cache"),
                   ATELIER_CONFIG_DIR=str(tmp / "config"))
        # Start-up + load: one 64x64 image in one step (its compute is small next to the load).
        for engine in engines:
            if engine == "atelier":
                r, _ = atelier_run(a, env, schedulers[0], 64, 1, tmp / "startup")
            else:
                r, _ = diffusers_run(a, src, schedulers[0], 64, 1, tmp / "startup.png")
                r = {k: v for k, v in r.items() if k != "s_per_step"}
            r.pop("s_per_step", None)
            report(result, f"{engine} start-up + load (1 step, 64x64)", r)
        for scheduler in schedulers:
            pngs = {}
            for engine in engines:
                if engine == "atelier":
                    r, pngs[engine] = atelier_run(a, env, scheduler, a.size, a.steps, tmp / f"atelier-{scheduler}")
                else:
                    r, pngs[engine] = diffusers_run(a, src, scheduler, a.size, a.steps, tmp / f"diffusers-{scheduler}.png")
                report(result, f"{engine} {scheduler}", r)
            if len(pngs) == 2:
                d = png_diff(pngs["atelier"], pngs["diffusers"])
                result["png_diff"][scheduler] = d
                print(f"PNG difference atelier vs diffusers, {scheduler}: {json.dumps(d)}", flush=True)
    result["machine"]["load_after"] = load_average()

    print(f"\nrandom SD 1.5 on {a.device}, {a.size}x{a.size}, {a.steps} steps, guidance {GUIDANCE}, "
          f"{a.threads} torch threads, "
          f"{cpu_name()} ({os.cpu_count()} cores), load average before {result['machine']['load_before']}, "
          f"after {result['machine']['load_after']}")
    print("| run | wall s | CPU s | s/step | peak RSS MiB | peak device MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in result["runs"].items():
        print(f"| {name} | {r['wall_s']} | {r['cpu_s']} | {r.get('s_per_step', '')} | {r['peak_rss_mib']} "
              f"| {r.get('peak_device_mib', '')} |")
    for scheduler, d in result["png_diff"].items():
        print(f"PNG |atelier - diffusers| ({scheduler}): max {d['max']}, mean {d['mean']} (0-255)")
    if a.out:
        a.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
