"""Atelier on a GPU: the CUDA checks and the GPU benchmarks of issue #17, in one run.

Run by tools/gpu/run.sh on the GPU machine (see tools/gpu/README.md); `--device cpu --quick`
runs the same steps on a CPU machine, small, to try the script before GPU time is spent.

Steps, in this order, each recorded in OUT/gpu-report.json as soon as it ends (ok, seconds,
figures, or the error); a step that would start after the deadline is recorded as skipped:

  exports     every model this run needs, exported on this machine by its own torch
              (several export processes at once)
  doctor      `atelier --device cuda doctor` (GPU, driver, memory, libtorch)
  whisper     tiny.en (real weights) greedy on the five LibriVox clips: CUDA float32 tokens vs
              the CPU float32 run (identical), CUDA float16 WER vs the CPU's (within 0.5 points),
              batched mode on CUDA
  clip        ViT-B-32 embeddings of images and texts on CUDA float32 / float16 vs the CPU
              float32 run (cosine >= 0.9999 / 0.999)
  sd          SD 1.5 (random weights) on CUDA float16: plain, --offload, --vae-tiling, each
              with its peak device memory
  devices     cuda:N selection: the other GPUs get no process; a GPU that does not exist is
              refused
  bench-*     Whisper (tiny.en, base, large-v3-sized) atelier sequential and batched vs
              openai-whisper; SD 1.5 512x512 and SDXL 1024x1024 (25 steps) vs diffusers;
              CLIP ViT-B/32 and ViT-L/14 images per second vs open_clip
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools" / "bench"))
PY = sys.executable
LIBRIVOX_NAMES = None  # set from the payload

SD_PROMPT = "a watercolor painting of a lighthouse at dusk, soft light, detailed"
SD_NEGATIVE = "blurry, low quality"


class Run:
    """The report, the deadline and the folders of one run."""

    def __init__(self, a):
        self.a = a
        self.t0 = time.time()
        self.deadline = self.t0 + a.budget
        self.out = Path(a.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(a.work)
        self.models = self.work / "models"
        self.tmp = self.work / "tmp"
        for d in (self.models, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        self.report = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "device": a.device,
                       "quick": a.quick, "steps": {}}
        self.state = self.work / "state"

    def left(self) -> float:
        return self.deadline - time.time()

    def save(self) -> None:
        self.report["elapsed_s"] = round(time.time() - self.t0, 1)
        tmp = self.out / "gpu-report.json.tmp"
        tmp.write_text(json.dumps(self.report, indent=1, default=str) + "\n")
        tmp.replace(self.out / "gpu-report.json")

    def step(self, name: str, fn, need_s: float = 0.0):
        if self.left() < need_s:
            self.report["steps"][name] = {"ok": None, "skipped": f"{self.left():.0f} s left, needs ~{need_s:.0f} s"}
            self.save()
            print(f"== {name}: skipped (time)", flush=True)
            return None
        print(f"== {name}", flush=True)
        t = time.time()
        rec: dict = {}
        try:
            res = fn(rec)
            rec.setdefault("ok", True)
            return res
        except Exception as e:  # noqa: BLE001 - every failure is reported, the run goes on
            rec["ok"] = False
            rec["error"] = f"{type(e).__name__}: {e}"
            rec["trace"] = traceback.format_exc()[-3000:]
            print(f"   FAILED: {rec['error']}", flush=True)
            return None
        finally:
            rec["seconds"] = round(time.time() - t, 1)
            self.report["steps"][name] = rec
            self.save()
            print(f"   {json.dumps({k: v for k, v in rec.items() if k != 'trace'}, default=str)[:1500]}", flush=True)

    # ------------------------------------------------------------------ processes

    def env(self, models: Path) -> dict:
        return dict(os.environ, ATELIER_MODELS=str(models), XDG_STATE_HOME=str(self.state / "xdg-state"),
                    XDG_DATA_HOME=str(self.state / "xdg-data"), XDG_CACHE_HOME=str(self.state / "xdg-cache"),
                    ATELIER_CONFIG_DIR=str(self.state / "config"))

    def atelier(self, args: list[str], models: Path, timeout: float | None = None, check: bool = True):
        return timed([self.a.atelier, *args], self.env(models), timeout or max(30.0, self.left()), check)

    def python(self, code: str, args: list[str], timeout: float | None = None):
        return timed([PY, "-c", code, *args], dict(os.environ), timeout or max(30.0, self.left()), True)

    def export(self, args: list[str]) -> float:
        t = time.time()
        p = subprocess.run([PY, "-m", "tools.export", *args], cwd=ROOT, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"tools.export {' '.join(args)} failed:\n{p.stdout[-1500:]}\n{p.stderr[-2500:]}")
        return time.time() - t


def timed(cmd: list[str], env: dict, timeout: float, check: bool = True) -> dict:
    """One process: wall seconds, its output, and the peak GPU memory it held (nvidia-smi, sampled
    every 0.2 s, for its own PID; the whole GPU's used memory where the PID is not listed)."""
    t = time.time()
    p = subprocess.Popen([str(c) for c in cmd], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    peak = 0
    sampler = GpuSampler(p.pid)
    try:
        while True:
            try:
                out, err = p.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                peak = max(peak, sampler.sample())
                if time.time() - t > timeout:
                    p.kill()
                    out, err = p.communicate()
                    raise TimeoutError(f"{cmd[0]} ran past {timeout:.0f} s:\n{err[-1500:]}")
    finally:
        sampler.close()
    wall = time.time() - t
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))[:300]} exited {p.returncode}:\n{out[-800:]}\n{err[-2500:]}")
    return {"wall_s": round(wall, 2), "rc": p.returncode, "stdout": out, "stderr": err,
            "peak_gpu_mib": peak or None}


class GpuSampler:
    """Per-process GPU memory through NVML (pynvml / nvidia-ml-py), if present."""

    def __init__(self, pid: int):
        self.pid, self.nvml = pid, None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception:  # noqa: BLE001 - no NVML: no memory figure
            self.nvml = None

    def sample(self) -> int:
        if self.nvml is None:
            return 0
        best = 0
        for h in self.handles:
            try:
                for proc in self.nvml.nvmlDeviceGetComputeRunningProcesses(h):
                    if proc.pid == self.pid and proc.usedGpuMemory:
                        best = max(best, proc.usedGpuMemory >> 20)
            except Exception:  # noqa: BLE001
                pass
        return best

    def per_gpu_pids(self) -> dict:
        if self.nvml is None:
            return {}
        out = {}
        for i, h in enumerate(self.handles):
            try:
                out[i] = [p.pid for p in self.nvml.nvmlDeviceGetComputeRunningProcesses(h)]
            except Exception:  # noqa: BLE001
                out[i] = None
        return out

    def close(self):
        if self.nvml is not None:
            try:
                self.nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass


# ---------------------------------------------------------------------- inputs


# the long-form file, the LibriVox references and WER are the CPU benchmark's own
from whisper_bench import long_form, read_refs, wer  # noqa: E402


def photos(dest: Path, n: int) -> list[Path]:
    """n JPEG photos: scikit-image's test photos, each also mirrored and cropped to vary them."""
    from PIL import Image, ImageOps
    import skimage

    data = Path(skimage.__file__).parent / "data"
    names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg",
             "retina.jpg", "immunohistochemistry.png"]
    base = [Image.open(data / x).convert("RGB") for x in names if (data / x).is_file()]
    if not base:
        raise RuntimeError(f"no test photos in {data}")
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        im = base[i % len(base)]
        k = i // len(base)
        if k % 2:
            im = ImageOps.mirror(im)
        w, h = im.size
        c = (k * 7) % 40
        im = im.crop((c, c, w - c, h - c))
        p = dest / f"photo{i:04d}.jpg"
        im.save(p, quality=90)
        out.append(p)
    return out


# ---------------------------------------------------------------------- steps


def exports(run: Run, rec: dict) -> None:
    """Every model, exported here by this machine's torch (a trace keeps its device and dtype)."""
    a, dev = run.a, run.a.device
    gpu_dtype = "float16" if dev == "cuda" else "float32"
    p = Path(a.payload)
    tiny = p / "ct2" / "tiny.en"
    base = p / "ct2" / "base"
    jobs = {
        "whisper-tiny.en cpu/float32": ["import-whisper", "--source", str(tiny), "--name", "whisper-tiny.en",
                                        "--models", str(run.models / "cpu"), "--device", "cpu", "--no-verify"],
        f"whisper-tiny.en {dev}/float32": ["import-whisper", "--source", str(tiny), "--name", "whisper-tiny.en",
                                           "--models", str(run.models / f"{dev}-float32"), "--device", dev,
                                           "--no-verify", "--save-converted", str(run.work / "tiny.en.pt")],
        "clip ViT-B-32 cpu/float32": ["import-clip", "--random-init", "ViT-B-32", "--seed", "0", "--name", "clip-b32",
                                      "--models", str(run.models / "cpu")],
        f"clip ViT-B-32 {dev}/float32": ["import-clip", "--random-init", "ViT-B-32", "--seed", "0", "--name",
                                         "clip-b32", "--models", str(run.models / f"{dev}-float32"), "--device", dev,
                                         "--save-checkpoint", str(run.work / "clip-b32.pt")],
        "sd15 random": ["import-sd", "--random-init", "tiny-sd15" if a.quick else "sd15", "--seed", "0", "--name", "sd15",
                        "--models", str(run.models / f"{dev}-{gpu_dtype}"), "--device", dev, "--dtype", gpu_dtype,
                        "--no-verify", "--save-source", str(run.work / "sd15-src")],
    }
    if dev == "cuda":
        jobs["whisper-tiny.en cuda/float16"] = ["import-whisper", "--source", str(tiny), "--name", "whisper-tiny.en",
                                                "--models", str(run.models / "cuda-float16"), "--device", "cuda",
                                                "--dtype", "float16", "--no-verify"]
        jobs["clip ViT-B-32 cuda/float16"] = ["import-clip", "--random-init", "ViT-B-32", "--seed", "0", "--name",
                                              "clip-b32", "--models", str(run.models / "cuda-float16"), "--device",
                                              "cuda", "--dtype", "float16"]
    if not a.quick:
        base_src = str(base) if (base / "model.bin").is_file() else "random:base"
        rec["base_weights"] = "real (CT2)" if base_src != "random:base" else "random (base not carried)"
        jobs["whisper-base bench"] = ["import-whisper", "--source", base_src, "--name", "whisper-base",
                                      "--models", str(run.models / f"{dev}-{gpu_dtype}"), "--device", dev,
                                      "--dtype", gpu_dtype, "--no-verify", "--save-converted",
                                      str(run.work / "base.pt")]
        jobs["whisper-large-v3 bench"] = ["import-whisper", "--source", "random:large-v3", "--name",
                                          "whisper-large-v3", "--models", str(run.models / f"{dev}-{gpu_dtype}"),
                                          "--device", dev, "--dtype", gpu_dtype, "--no-verify", "--save-converted",
                                          str(run.work / "large-v3.pt")]
        jobs["clip ViT-L-14 bench"] = ["import-clip", "--random-init", "ViT-L-14", "--seed", "0", "--name", "clip-l14",
                                       "--models", str(run.models / f"{dev}-{gpu_dtype}"), "--device", dev,
                                       "--dtype", gpu_dtype, "--save-checkpoint", str(run.work / "clip-l14.pt")]
        jobs["sdxl random"] = ["import-sd", "--random-init", "sdxl", "--seed", "0", "--name", "sdxl",
                               "--models", str(run.models / f"{dev}-{gpu_dtype}"), "--device", dev, "--dtype",
                               gpu_dtype, "--no-verify", "--save-source", str(run.work / "sdxl-src")]
    if dev == "cuda" or not a.quick:
        jobs["whisper-tiny.en bench"] = ["import-whisper", "--source", str(tiny), "--name", "whisper-tiny.en",
                                         "--models", str(run.models / f"{dev}-{gpu_dtype}-bench"), "--device", dev,
                                         "--dtype", gpu_dtype, "--no-verify"]
    times, errors = {}, {}
    with cf.ThreadPoolExecutor(max_workers=a.export_jobs) as pool:
        futs = {pool.submit(run.export, args): name for name, args in jobs.items()}
        for f in cf.as_completed(futs):
            name = futs[f]
            try:
                times[name] = round(f.result(), 1)
                print(f"   exported {name} in {times[name]} s", flush=True)
            except Exception as e:  # noqa: BLE001
                errors[name] = str(e)[-2000:]
                print(f"   export {name} FAILED", flush=True)
    rec["export_s"] = times
    if errors:
        rec["errors"] = errors
        rec["ok"] = False


def doctor(run: Run, rec: dict) -> None:
    r = run.atelier(["--device", run.a.device, "doctor"], run.models / f"{run.a.device}-float32", check=False)
    rec["rc"] = r["rc"]
    rec["output"] = r["stdout"]
    rec["ok"] = r["rc"] == 0 or run.a.device == "cpu"


def transcripts(run: Run, models: Path, device: str, clips: list[Path], extra: list[str], tag: str) -> dict:
    out = run.tmp / f"tr-{tag}"
    shutil.rmtree(out, ignore_errors=True)
    r = run.atelier(["--device", device, "transcribe", *map(str, clips), "--model", "whisper-tiny.en",
                     "-f", "json", "-o", str(out), "--verbose", "False", *extra], models)
    res = {}
    for c in clips:
        j = json.loads((out / f"{c.stem}.json").read_text())
        res[c.stem] = {"text": j["text"], "tokens": [t for s in j["segments"] for t in s["tokens"]]}
    return {"wall_s": r["wall_s"], "clips": res, "peak_gpu_mib": r["peak_gpu_mib"]}


def whisper_checks(run: Run, rec: dict) -> None:
    dev = run.a.device
    lv = Path(run.a.payload) / "librivox"
    clips = sorted(lv.glob("*.wav"))
    refs = read_refs(lv)
    greedy = ["--no-vad"]
    cpu = transcripts(run, run.models / "cpu", "cpu", clips, greedy, "cpu")
    g32 = transcripts(run, run.models / f"{dev}-float32", dev, clips, greedy, "gpu32")

    def total_wer(tr):
        ref = " ".join(refs[c.stem] for c in clips)
        return wer(ref, " ".join(tr["clips"][c.stem]["text"] for c in clips))

    same = {c.stem: cpu["clips"][c.stem]["tokens"] == g32["clips"][c.stem]["tokens"] for c in clips}
    rec["float32_tokens_identical"] = same
    rec["wer_cpu_float32"] = round(100 * total_wer(cpu), 2)
    rec["wer_gpu_float32"] = round(100 * total_wer(g32), 2)
    ok = all(same.values())
    if not ok:
        # cuDNN's TF32 convolutions are the usual suspect: try again with cuDNN off.
        os.environ["ATELIER_CUDNN"] = "0"
        try:
            g32b = transcripts(run, run.models / f"{dev}-float32", dev, clips, greedy, "gpu32-nocudnn")
        finally:
            os.environ.pop("ATELIER_CUDNN", None)
        rec["float32_tokens_identical_cudnn_off"] = {
            c.stem: cpu["clips"][c.stem]["tokens"] == g32b["clips"][c.stem]["tokens"] for c in clips}
    if dev == "cuda":
        g16 = transcripts(run, run.models / "cuda-float16", dev, clips, greedy, "gpu16")
        rec["wer_gpu_float16"] = round(100 * total_wer(g16), 2)
        rec["float16_wer_diff_points"] = round(rec["wer_gpu_float16"] - rec["wer_cpu_float32"], 2)
        ok = ok and abs(rec["float16_wer_diff_points"]) <= 0.5
        gb = transcripts(run, run.models / "cuda-float16", dev, clips, ["--batch-size", "8"], "gpu16-batched")
        rec["wer_gpu_float16_batched"] = round(100 * total_wer(gb), 2)
        rec["peak_gpu_mib_float16"] = g16["peak_gpu_mib"]
    rec["ok"] = ok


def clip_checks(run: Run, rec: dict) -> None:
    dev = run.a.device
    imgs = photos(run.tmp / "clip-check", 8)
    texts = ["a photo of a cat", "an astronaut", "a cup of coffee", "a rocket on the launch pad"]

    def embed(models: Path, device: str):
        args = ["--device", device, "embed", *map(str, imgs), "--model", "clip-b32"]
        for t in texts:
            args += ["--text", t]
        r = run.atelier(args, models)
        j = json.loads(r["stdout"].strip().splitlines()[-1])
        return (np.array([x["embedding"] for x in j["images"]], dtype=np.float64),
                np.array([x["embedding"] for x in j["texts"]], dtype=np.float64))

    def cos(x, y):
        return float(((x * y).sum(-1) / (np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1))).min())

    ci, ct = embed(run.models / "cpu", "cpu")
    gi, gt = embed(run.models / f"{dev}-float32", dev)
    rec["float32_min_cosine"] = {"images": cos(ci, gi), "texts": cos(ct, gt)}
    ok = min(rec["float32_min_cosine"].values()) >= 0.9999
    if dev == "cuda":
        hi, ht = embed(run.models / "cuda-float16", dev)
        rec["float16_min_cosine"] = {"images": cos(ci, hi), "texts": cos(ct, ht)}
        ok = ok and min(rec["float16_min_cosine"].values()) >= 0.999
    rec["ok"] = ok


def sd_checks(run: Run, rec: dict) -> None:
    dev = run.a.device
    dtype = "float16" if dev == "cuda" else "float32"
    size, steps = (64, 2) if run.a.quick else (512, 10)
    models = run.models / f"{dev}-{dtype}"
    for label, flags in (("plain", []), ("offload", ["--offload"]), ("vae-tiling", ["--vae-tiling"])):
        out = run.tmp / f"sd-{label}"
        r = run.atelier(["--device", dev, "generate", SD_PROMPT, "--model", "sd15", "--steps", str(steps),
                         "-W", str(size), "-H", str(size), "--seed", "1", "--out", str(out), *flags], models)
        m = re.search(r"peak memory ([0-9]+) MiB", r["stderr"])
        rec[label] = {"wall_s": r["wall_s"], "reported_peak_mib": int(m.group(1)) if m else None,
                      "sampled_peak_gpu_mib": r["peak_gpu_mib"], "png": sorted(p.name for p in out.glob("*.png"))}


def device_checks(run: Run, rec: dict) -> None:
    if run.a.device != "cuda":
        rec["ok"] = None
        rec["note"] = "CPU run: nothing to select"
        return
    sampler = GpuSampler(0)
    n = len(sampler.per_gpu_pids())
    rec["gpus"] = n
    lv = sorted((Path(run.a.payload) / "librivox").glob("*.wav"))[:1]
    models = run.models / "cuda-float16"
    env = run.env(models)
    pick = n - 1
    p = subprocess.Popen([run.a.atelier, "--device", f"cuda:{pick}", "transcribe", str(lv[0]), "--model",
                          "whisper-tiny.en", "-f", "txt", "-o", str(run.tmp / "devsel"), "--verbose", "False"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict[int, bool] = {}
    while p.poll() is None:
        for i, pids in sampler.per_gpu_pids().items():
            if pids and p.pid in pids:
                seen[i] = True
        time.sleep(0.1)
    _, err = p.communicate()
    sampler.close()
    rec[f"cuda:{pick}"] = {"rc": p.returncode, "gpus_with_the_process": sorted(seen), "stderr": err[-500:]}
    bad = run.atelier(["--device", f"cuda:{n}", "transcribe", str(lv[0]), "--model", "whisper-tiny.en", "-o",
                       str(run.tmp / "devsel")], models, check=False)
    rec[f"cuda:{n} (absent)"] = {"rc": bad["rc"], "stderr": bad["stderr"].strip()[-300:]}
    rec["ok"] = p.returncode == 0 and sorted(seen) in ([pick], []) and bad["rc"] == 2


# ---------------------------------------------------------------------- benchmarks

OPENAI = r'''
import json, sys, time, warnings
warnings.filterwarnings("ignore")
t0 = time.perf_counter()
import torch, whisper
ckpt, audio, beam, device, fixed = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
m = whisper.load_model(ckpt, device=device)
t1 = time.perf_counter()
opts = dict(fp16=device == "cuda", verbose=None, beam_size=beam or None, best_of=5 if beam else None)
if fixed:  # random weights: the same work whatever the tokens (no fallback, no conditioning)
    opts.update(temperature=0.0, condition_on_previous_text=False)
r = whisper.transcribe(m, audio, **opts)
if device == "cuda":
    torch.cuda.synchronize()
t2 = time.perf_counter()
print(json.dumps({"text": r["text"], "tokens": sum(len(s["tokens"]) for s in r["segments"]), "load_s": t1 - t0,
                  "transcribe_s": t2 - t1,
                  "peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None}))
'''


def bench_whisper(run: Run, rec: dict) -> None:
    dev = run.a.device
    dtype = "float16" if dev == "cuda" else "float32"
    lv = Path(run.a.payload) / "librivox"
    audio = run.tmp / "long.wav"
    seconds, reference = long_form(audio, lv, 1 if run.a.quick else 2)
    rec["audio_s"] = round(seconds, 1)
    rows = []
    names = ["whisper-tiny.en"] if run.a.quick else ["whisper-tiny.en", "whisper-base", "whisper-large-v3"]
    ckpts = {"whisper-tiny.en": run.work / "tiny.en.pt", "whisper-base": run.work / "base.pt",
             "whisper-large-v3": run.work / "large-v3.pt"}
    for name in names:
        models = run.models / f"{dev}-{dtype}{'-bench' if name == 'whisper-tiny.en' else ''}"
        if not (models / name / "manifest.toml").is_file():
            rows.append({"model": name, "error": f"not exported in {models}"})
            continue
        random_w = "random-init = true" in (models / name / "manifest.toml").read_text()
        fixed = ["--temperature_increment_on_fallback", "0", "--condition_on_previous_text", "False"] if random_w else []
        runs = [("atelier sequential, VAD (default)", ["--beam-size", "5"]),
                ("atelier sequential --no-vad", ["--beam-size", "5", "--no-vad"]),
                ("atelier batched (batch 8)", ["--beam-size", "5", "--batch-size", "8"])]
        for label, extra in runs:
            if run.left() < 60:
                rows.append({"model": name, "engine": label, "skipped": "time"})
                continue
            out = run.tmp / "bench-out"
            r = run.atelier(["--device", dev, "transcribe", str(audio), "--model", name, "-f", "json", "-o", str(out),
                             "--verbose", "False", *extra, *fixed], models)
            j = json.loads((out / "long.json").read_text())
            rows.append({"model": name, "engine": label, "wall_s": r["wall_s"], "rtf": round(r["wall_s"] / seconds, 4),
                         "peak_gpu_mib": r["peak_gpu_mib"], "wer": None if random_w else round(100 * wer(reference, j["text"]), 2),
                         "tokens": sum(len(s["tokens"]) for s in j["segments"]), "random_weights": random_w})
            print(f"   {rows[-1]}", flush=True)
        if ckpts[name].is_file() and run.left() > 90:
            r = run.python(OPENAI, [str(ckpts[name]), str(audio), "5", dev, "1" if random_w else "0"])
            j = json.loads(r["stdout"].strip().splitlines()[-1])
            rows.append({"model": name, "engine": "openai-whisper", "wall_s": r["wall_s"],
                         "rtf": round(r["wall_s"] / seconds, 4), "peak_gpu_mib": r["peak_gpu_mib"],
                         "peak_allocated_mib": j["peak_allocated_mib"], "load_s": round(j["load_s"], 2),
                         "wer": None if random_w else round(100 * wer(reference, j["text"]), 2), "tokens": j["tokens"],
                         "random_weights": random_w})
            print(f"   {rows[-1]}", flush=True)
    rec["rows"] = rows


DIFFUSERS = r'''
import json, sys, time, warnings
warnings.filterwarnings("ignore")
t0 = time.perf_counter()
import torch, diffusers
src, prompt, negative, seed, steps, size, out, device = sys.argv[1:9]
dt = torch.float16 if device == "cuda" else torch.float32
pipe = diffusers.AutoPipelineForText2Image.from_pretrained(src, torch_dtype=dt, local_files_only=True).to(device)
pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)  # atelier's --scheduler euler
pipe.set_progress_bar_config(disable=True)
if device == "cuda":
    torch.cuda.synchronize()
t1 = time.perf_counter()
img = pipe(prompt, negative_prompt=negative, num_inference_steps=int(steps), width=int(size), height=int(size),
           generator=torch.Generator("cpu").manual_seed(int(seed))).images[0]
if device == "cuda":
    torch.cuda.synchronize()
t2 = time.perf_counter()
img.save(out)
print(json.dumps({"load_s": t1 - t0, "generate_s": t2 - t1,
                  "peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None}))
'''


def bench_sd(run: Run, rec: dict) -> None:
    dev = run.a.device
    dtype = "float16" if dev == "cuda" else "float32"
    models = run.models / f"{dev}-{dtype}"
    steps = 2 if run.a.quick else 25
    cases = [("sd15", 64 if run.a.quick else 512)] + ([] if run.a.quick else [("sdxl", 1024)])
    rows = []
    for name, size in cases:
        if not (models / name / "manifest.toml").is_file():
            rows.append({"model": name, "error": "not exported"})
            continue
        if run.left() < 90:
            rows.append({"model": name, "skipped": "time"})
            continue
        out = run.tmp / f"bench-sd-{name}"
        r = run.atelier(["--device", dev, "generate", SD_PROMPT, "-n", SD_NEGATIVE, "--model", name, "--steps",
                         str(steps), "-W", str(size), "-H", str(size), "--seed", "42", "--scheduler", "euler",
                         "--out", str(out)], models)
        m = re.search(r"steps in ([0-9.]+) s \(([0-9.]+) s/step\)", r["stderr"])
        pm = re.search(r"peak memory ([0-9]+) MiB", r["stderr"])
        rows.append({"model": name, "size": size, "steps": steps, "engine": "atelier", "wall_s": r["wall_s"],
                     "denoise_s": float(m.group(1)) if m else None, "s_per_step": float(m.group(2)) if m else None,
                     "reported_peak_mib": int(pm.group(1)) if pm else None, "peak_gpu_mib": r["peak_gpu_mib"]})
        print(f"   {rows[-1]}", flush=True)
        src = run.work / f"{name}-src"
        if src.is_dir() and run.left() > 60:
            png = run.tmp / f"diffusers-{name}.png"
            r = run.python(DIFFUSERS, [str(src), SD_PROMPT, SD_NEGATIVE, "42", str(steps), str(size), str(png), dev])
            j = json.loads(r["stdout"].strip().splitlines()[-1])
            rows.append({"model": name, "size": size, "steps": steps, "engine": "diffusers", "wall_s": r["wall_s"],
                         "load_s": round(j["load_s"], 2), "generate_s": round(j["generate_s"], 2),
                         "peak_allocated_mib": j["peak_allocated_mib"], "peak_gpu_mib": r["peak_gpu_mib"]})
            print(f"   {rows[-1]}", flush=True)
    rec["rows"] = rows


OPEN_CLIP = r'''
import json, sys, time, warnings
warnings.filterwarnings("ignore")
t0 = time.perf_counter()
import torch, open_clip
from PIL import Image
arch, ckpt, device, listing = sys.argv[1:5]
paths = open(listing).read().split()
model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None)
model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])
model = model.eval().to(device)
if device == "cuda":
    model = model.half()
t1 = time.perf_counter()
n = 0
with torch.no_grad():
    for i in range(0, len(paths), 64):
        x = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths[i:i + 64]]).to(device)
        e = model.encode_image(x.half() if device == "cuda" else x)
        n += e.shape[0]
    if device == "cuda":
        torch.cuda.synchronize()
t2 = time.perf_counter()
print(json.dumps({"images": n, "load_s": t1 - t0, "embed_s": t2 - t1}))
'''


def bench_clip(run: Run, rec: dict) -> None:
    dev = run.a.device
    dtype = "float16" if dev == "cuda" else "float32"
    n = 32 if run.a.quick else 512
    imgs = photos(run.tmp / "clip-bench", n)
    listing = run.tmp / "clip-bench.txt"
    listing.write_text("\n".join(map(str, imgs)))
    rows = []
    cases = [("clip-b32", "ViT-B-32", run.models / f"{dev}-float32" if run.a.quick else run.models / f"{dev}-{dtype}")]
    if dev == "cuda":
        cases = [("clip-b32", "ViT-B-32", run.models / "cuda-float16")]
    if not run.a.quick:
        cases.append(("clip-l14", "ViT-L-14", run.models / f"{dev}-{dtype}"))
    ckpts = {"clip-b32": run.work / "clip-b32.pt", "clip-l14": run.work / "clip-l14.pt"}
    for name, arch, models in cases:
        if not (models / name / "manifest.toml").is_file() or run.left() < 60:
            rows.append({"model": arch, "skipped": "not exported or no time"})
            continue
        r = run.atelier(["--device", dev, "embed", *map(str, imgs), "--model", name], models)
        rows.append({"model": arch, "engine": "atelier embed", "images": n, "wall_s": r["wall_s"],
                     "images_per_s": round(n / r["wall_s"], 1), "peak_gpu_mib": r["peak_gpu_mib"]})
        print(f"   {rows[-1]}", flush=True)
        if ckpts[name].is_file():
            r = run.python(OPEN_CLIP, [arch, str(ckpts[name]), dev, str(listing)])
            j = json.loads(r["stdout"].strip().splitlines()[-1])
            rows.append({"model": arch, "engine": "open_clip", "images": n, "wall_s": r["wall_s"],
                         "images_per_s": round(n / r["wall_s"], 1), "load_s": round(j["load_s"], 2),
                         "embed_images_per_s": round(n / j["embed_s"], 1), "peak_gpu_mib": r["peak_gpu_mib"]})
            print(f"   {rows[-1]}", flush=True)
    rec["rows"] = rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--atelier", required=True, help="the atelier binary")
    ap.add_argument("--payload", required=True, help="the unpacked payload (ct2/, librivox/)")
    ap.add_argument("--work", required=True, help="scratch folder (models, outputs)")
    ap.add_argument("--out", required=True, help="where gpu-report.json goes")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--budget", type=float, default=560.0, help="seconds; steps that would start later are skipped")
    ap.add_argument("--quick", action="store_true", help="small sizes (a CPU try of the script)")
    ap.add_argument("--export-jobs", type=int, default=4, help="export processes at once")
    ap.add_argument("--only", nargs="*", help="run only these steps")
    a = ap.parse_args()
    run = Run(a)
    try:
        import torch

        run.report["python_torch"] = torch.__version__
        if a.device == "cuda" and torch.cuda.is_available():
            run.report["gpu"] = torch.cuda.get_device_name(0)
            run.report["gpu_count"] = torch.cuda.device_count()
    except Exception as e:  # noqa: BLE001
        run.report["python_torch"] = f"unavailable: {e}"
    run.save()
    steps = [("exports", exports, 0), ("doctor", doctor, 5), ("whisper", whisper_checks, 30), ("clip", clip_checks, 20),
             ("sd", sd_checks, 40), ("devices", device_checks, 15), ("bench-whisper", bench_whisper, 90),
             ("bench-sd", bench_sd, 90), ("bench-clip", bench_clip, 40)]
    for name, fn, need in steps:
        if a.only and name not in a.only:
            continue
        run.step(name, lambda rec, fn=fn: fn(run, rec), need)
    checks = [n for n in ("whisper", "clip", "sd", "devices") if n in run.report["steps"]]
    run.report["checks_ok"] = all(run.report["steps"][n].get("ok") in (True, None) for n in checks)
    run.save()
    print(f"report: {run.out / 'gpu-report.json'} ({run.report['elapsed_s']} s)")
    return 0 if run.report["checks_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
