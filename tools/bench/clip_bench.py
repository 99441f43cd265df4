"""CLIP indexing benchmark: `atelier index` vs open_clip in Python, on the same random ViT-B/32.

    .venv/bin/python tools/bench/clip_bench.py --out /tmp/clip-bench.json

One run measures, on the same N JPEGs (variants of scikit-image's photos: scaled, cropped,
flipped; written once under --cache) and the same weights (one random open_clip ViT-B-32,
exported once with tools/export, its checkpoint kept for Python):

* `atelier index DIR` end to end (a fresh index; decode, preprocess, embed, SQLite), and the same
  command on an empty folder (start-up: process, libtorch, model load);
* open_clip in a plain loop (PIL decode + open_clip's eval transform, batched encode_image);
* the same with a torch DataLoader and worker processes;
* pure model forward at the same batch size on random pixels: open_clip eager and the exported
  TorchScript (model.ts, what atelier runs), timed in-process after one warm-up batch.

Every end-to-end run is its own process timed from outside (wall time), with the same number of
torch threads. Images/s = N / wall time; CPU s (user + sys of the process and its workers) is
the figure to compare on a shared, busy machine. The load average before and after is recorded:
on a shared machine, say so next to the numbers. Each result is printed as soon as it is known.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
MODEL = "clip-bench-vit-b-32"


def make_images(dst: Path, n: int) -> list[Path]:
    """N JPEG variants of the scikit-image photos, written once (reused when complete)."""
    done = dst / ".complete"
    if done.is_file():
        return sorted(dst.glob("*.jpg"))
    import numpy as np
    import skimage
    from PIL import Image, ImageOps

    data = Path(skimage.__file__).parent / "data"
    names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
             "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "brick.png", "grass.png",
             "page.png", "camera.png", "moon.png", "logo.png", "color.png"]
    photos = [ImageOps.exif_transpose(Image.open(data / x)).convert("RGB") for x in names if (data / x).is_file()]
    if not photos:
        raise SystemExit(f"{data}: no scikit-image photos found")
    dst.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        im = photos[i % len(photos)]
        w, h = im.size
        scale = rng.uniform(0.6, 1.6)
        im = im.resize((max(32, int(w * scale)), max(32, int(h * scale))), Image.BICUBIC)
        w, h = im.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        im = im.crop((x0, y0, x0 + cw, y0 + ch))
        if rng.random() < 0.5:
            im = ImageOps.mirror(im)
        im.save(dst / f"img{i:05d}.jpg", quality=90)
    done.write_text("")
    return sorted(dst.glob("*.jpg"))


def export_model(cache: Path) -> tuple[Path, Path]:
    models, ckpt = cache / "models", cache / "ckpt.pt"
    if not (models / MODEL / "manifest.toml").is_file() or not ckpt.is_file():
        subprocess.run([PY, "-m", "tools.export", "import-clip", "--random-init", "ViT-B-32", "--name", MODEL,
                        "--models", str(models), "--save-checkpoint", str(ckpt)], cwd=ROOT, check=True)
    return models, ckpt


CPU_S = {}


def timed(cmd: list[str], env=None) -> tuple[float, subprocess.CompletedProcess]:
    """Wall time of one process; its CPU time (user + sys, children included) goes to CPU_S."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_S["last"] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1)
    if out.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{out.stderr[-3000:]}")
    return wall, out


def report(name: str, r: dict) -> None:
    r["cpu_s"] = CPU_S.get("last")
    print(f"{name}: {r}", flush=True)


PEER = r'''
import json, sys, time
mode, ckpt, listing, batch, workers, threads = sys.argv[1:7]
batch, workers, threads = int(batch), int(workers), int(threads)
import torch
torch.set_num_threads(threads)
sys.path.insert(0, ".")
import open_clip
from PIL import Image, ImageOps
from tools.export.clip_export import load_checkpoint_model
model = load_checkpoint_model(ckpt)
transform = open_clip.image_transform(224, is_train=False)
paths = json.load(open(listing))

def load(p):
    return transform(ImageOps.exif_transpose(Image.open(p)))

class Files(torch.utils.data.Dataset):
    def __len__(self):
        return len(paths)
    def __getitem__(self, i):
        return load(paths[i])

t0 = time.perf_counter()
n = 0
with torch.no_grad():
    if mode == "plain":
        for i in range(0, len(paths), batch):
            x = torch.stack([load(p) for p in paths[i:i + batch]])
            n += torch.nn.functional.normalize(model.encode_image(x), dim=-1).shape[0]
    else:
        loader = torch.utils.data.DataLoader(Files(), batch_size=batch, num_workers=workers)
        for x in loader:
            n += torch.nn.functional.normalize(model.encode_image(x), dim=-1).shape[0]
print(json.dumps({"images": n, "loop_s": time.perf_counter() - t0}))
'''

FORWARD = r'''
import json, sys, time
ckpt, ts, batch, n, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
import torch
torch.set_num_threads(threads)
sys.path.insert(0, ".")
from tools.export.clip_export import load_checkpoint_model
eager = load_checkpoint_model(ckpt)
script = torch.jit.load(ts)
x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
out = {}
with torch.no_grad():
    for name, f in (("eager", eager.encode_image), ("torchscript", script.encode_image)):
        f(x)
        steps = max(1, n // batch)
        t0 = time.perf_counter()
        for _ in range(steps):
            f(x)
        out[name] = steps * batch / (time.perf_counter() - t0)
print(json.dumps(out))
'''


SEARCH_PEER = r'''
import sqlite3, sys, time, json
import numpy as np
t0 = time.perf_counter()
db = sqlite3.connect(sys.argv[1])
rows = db.execute("SELECT path, embedding FROM embeddings ORDER BY path").fetchall()
paths = [r[0] for r in rows]
m = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1)
t1 = time.perf_counter()
q = m[0] / np.linalg.norm(m[0])
scores = m @ q
top = np.argpartition(-scores, 10)[:10]
top = top[np.argsort(-scores[top])]
t2 = time.perf_counter()
print(json.dumps({"load_s": t1 - t0, "rank_s": t2 - t1, "n": len(rows)}))
'''


def search_bench(a, tmp: Path, env: dict, result: dict) -> None:
    """`atelier search` on the real index, then on the same index grown to --search-n rows with
    random unit vectors; the difference is the cost of the brute-force scan. Peer: numpy
    reading the same SQLite table and ranking by cosine, in one process."""
    import shutil
    import sqlite3

    import numpy as np

    big = tmp / "big.sqlite"
    shutil.copy(tmp / "idx.sqlite", big)
    db = sqlite3.connect(big)
    n0, = db.execute("SELECT COUNT(*) FROM embeddings").fetchone()
    model, size, mtime, dim = db.execute("SELECT model, size, mtime_ns, dim FROM embeddings LIMIT 1").fetchone()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(max(0, a.search_n - n0)):
        v = rng.standard_normal(dim).astype("<f4")
        v /= np.linalg.norm(v)
        rows.append((f"/bench/synthetic/{i:07d}.jpg", model, size, mtime, f"{i:064x}", dim, v.tobytes()))
    db.executemany("INSERT INTO embeddings (path, model, size, mtime_ns, hash, dim, embedding) VALUES (?,?,?,?,?,?,?)",
                   rows)
    db.commit()
    n, = db.execute("SELECT COUNT(*) FROM embeddings").fetchone()
    db.close()
    search = [str(a.atelier), "search", "--model", MODEL, "--threads", str(a.threads), "--top", "10",
              "a photo of a cat"]
    res = {"rows": n}
    for label, idx in ((f"atelier search, {n0} rows", tmp / "idx.sqlite"), (f"atelier search, {n} rows", big)):
        timed(search + ["--index", str(idx)], env)  # warm the page cache
        wall, _ = timed(search + ["--index", str(idx)], env)  # (timed exits on failure)
        res[label] = {"wall_s": round(wall, 3)}
        report(label, res[label])
    wall, out = timed([PY, "-c", SEARCH_PEER, str(big)])
    r = json.loads(out.stdout.strip().splitlines()[-1])
    res[f"numpy, {n} rows (SQLite read + cosine top-10)"] = {"wall_s": round(wall, 3),
                                                          "read_s": round(r["load_s"], 3), "rank_s": round(r["rank_s"], 4)}
    report("numpy search", res[f"numpy, {n} rows (SQLite read + cosine top-10)"])
    result["search"] = res


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="images (default 1000)")
    ap.add_argument("--batch", type=int, default=16, help="images per model call (default 16, atelier's default)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="DataLoader workers")
    ap.add_argument("--forward-images", type=int, default=256, help="images per pure-forward timing")
    ap.add_argument("--cache", type=Path, help="images and model, kept between runs "
                    "(default: $XDG_CACHE_HOME/atelier/bench-clip)")
    ap.add_argument("--atelier", type=Path, default=ROOT / "target/release/atelier")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    ap.add_argument("--search-n", type=int, default=100_000,
                    help="rows of the search benchmark's index (the real embeddings plus random ones)")
    ap.add_argument("--only-search", action="store_true", help="skip the indexing runs (needs nothing but the model)")
    a = ap.parse_args()
    if not a.atelier.is_file():
        raise SystemExit(f"{a.atelier}: build it first (cargo build --release)")

    if a.cache is None:
        a.cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "atelier" / "bench-clip"
    images = make_images(a.cache / f"images-{a.n}", a.n)
    models, ckpt = export_model(a.cache)
    result = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "load_before": load_average()},
              "n": len(images), "batch": a.batch, "threads": a.threads, "workers": a.workers, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, ATELIER_MODELS=str(models), XDG_STATE_HOME=str(tmp / "state"),
                   XDG_DATA_HOME=str(tmp / "data"), XDG_CACHE_HOME=str(tmp / "cache"),
                   ATELIER_CONFIG_DIR=str(tmp / "config"))
        (tmp / "empty").mkdir()
        base = [str(a.atelier), "index", "--model", MODEL, "--batch-size", str(a.batch), "--threads", str(a.threads)]
        wall, _ = timed(base + ["--index", str(tmp / "empty.sqlite"), str(tmp / "empty")], env)
        result["runs"]["atelier start-up (empty folder)"] = {"wall_s": round(wall, 2)}
        report("atelier start-up", result["runs"]["atelier start-up (empty folder)"])
        if a.only_search:
            images = images[:64]
        wall, out = timed(base + ["--index", str(tmp / "idx.sqlite"), str(images[0].parent)], env)
        summary = next((l for l in out.stderr.splitlines() if l.startswith("indexed ")), out.stderr[-300:])
        result["runs"]["atelier index"] = {"wall_s": round(wall, 2), "images_per_s": round(len(images) / wall, 2),
                                           "summary": summary}
        report("atelier index", result["runs"]["atelier index"])
        search_bench(a, tmp, env, result)
        if a.only_search:
            print(json.dumps(result["search"], indent=1))
            return
        listing = tmp / "paths.json"
        listing.write_text(json.dumps([str(p) for p in images]))
        for mode, label in (("plain", "open_clip plain loop"), ("loader", f"open_clip DataLoader ({a.workers} workers)")):
            wall, out = timed([PY, "-c", PEER, mode, str(ckpt), str(listing), str(a.batch), str(a.workers),
                               str(a.threads)])
            r = json.loads(out.stdout.strip().splitlines()[-1])
            result["runs"][label] = {"wall_s": round(wall, 2), "images_per_s": round(len(images) / wall, 2),
                                     "loop_images_per_s": round(r["images"] / r["loop_s"], 2)}
            report(label, result["runs"][label])
        _, out = timed([PY, "-c", FORWARD, str(ckpt), str(models / MODEL / "model.ts"), str(a.batch),
                        str(a.forward_images), str(a.threads)])
        fwd = json.loads(out.stdout.strip().splitlines()[-1])
        result["forward_images_per_s"] = {k: round(v, 2) for k, v in fwd.items()}
    result["machine"]["load_after"] = load_average()

    print(f"{len(images)} JPEGs, batch {a.batch}, {a.threads} torch threads, {cpu_name()} ({os.cpu_count()} cores), "
          f"load average before {result['machine']['load_before']}, after {result['machine']['load_after']}")
    print("| run | wall s | CPU s | images/s |")
    print("|---|---:|---:|---:|")
    for name, r in result["runs"].items():
        print(f"| {name} | {r['wall_s']} | {r['cpu_s']} | {r.get('images_per_s', '')} |")
    for name, v in result["forward_images_per_s"].items():
        print(f"| pure forward, {name} (batch {a.batch}) | | | {v} |")
    if a.out:
        a.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
