"""Reference runs of diffusers' schedulers, for tests/sd_schedulers.rs.

Usage: python sd_scheduler_ref.py OUT_DIR

Every case runs a diffusers scheduler (the installed version) the way its pipelines do, on a
fixed smooth fake "model" (the test computes the same function in Rust):

    model_output = tanh(0.5 * scale_model_input(x, t)) * (0.8 + 0.2 * cos(t / 250))

from initial noise drawn with one CPU torch.Generator per batch item (seeds s, s + 1), as
diffusers' randn_tensor with a list of generators. txt2img: latents = noise * init_noise_sigma.
img2img: diffusers' get_timesteps (t_start = steps - min(int(steps * strength), steps),
set_begin_index(t_start * order)) and add_noise of a fixed "original". Ancestral noise comes
from the same generators. Writes OUT_DIR/cases.json (the case list, with each scheduler config)
and OUT_DIR/<case>.safetensors (timesteps, init_noise_sigma, noise, original, x_init, step_<i>).

Also OUT_DIR/noise.safetensors: torch draws in sequence from CPU generators (the Noise API's
reference) and A1111's variation-seed slerp (modules/processing.py: slerp, ImageRNG.first).
"""
import importlib.machinery
import json
import math
import os
import sys
import types

import torch

# DPMSolverSDEScheduler imports torchsde for its Brownian-tree noise sampler. Atelier draws that
# noise from the CPU generators instead (see docs/diffusion.md), so the reference replaces the
# sampler and needs only the module's name to import.
if "torchsde" not in sys.modules:
    try:
        import torchsde  # noqa: F401
    except ImportError:
        fake = types.ModuleType("torchsde")
        fake.__spec__ = importlib.machinery.ModuleSpec("torchsde", None)
        sys.modules["torchsde"] = fake
from diffusers.schedulers.scheduling_dpmsolver_sde import DPMSolverSDEScheduler  # noqa: E402
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from safetensors.torch import save_file

# scheduler_config.json of the model repositories.
SD15 = {  # runwayml/stable-diffusion-v1-5
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
SD21V = {  # stabilityai/stable-diffusion-2-1 (768, v-prediction)
    "_class_name": "DDIMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
SDXL = {  # stabilityai/stable-diffusion-xl-base-1.0
    "_class_name": "EulerDiscreteScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}
CONFIGS = {
    "sd15": SD15,
    "sd21v": SD21V,
    "sdxl": SDXL,
    "sd15-linspace": dict(SD15, timestep_spacing="linspace"),
    "sd15-trailing": dict(SD15, timestep_spacing="trailing"),
    "sd21v-trailing": dict(SD21V, timestep_spacing="trailing"),
}

# CLI name -> (class, from_config overrides), as the pipeline maps --sampler.
KINDS = {
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler-a": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp-2m": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False},
    ),
    "dpmpp-2m-karras": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "dpmpp-sde-karras": (DPMSolverSDEScheduler, {"use_karras_sigmas": True}),
    "unipc": (UniPCMultistepScheduler, {}),
    "lms": (LMSDiscreteScheduler, {}),
    "pndm": (PNDMScheduler, {}),
}

SHAPE = (4, 8, 8)  # per batch item
BATCH = 2


def fake_model(x, t):
    return torch.tanh(x * 0.5) * (0.8 + 0.2 * math.cos(float(t) / 250.0))


def generators(seed):
    return [torch.Generator("cpu").manual_seed(seed + i) for i in range(BATCH)]


def randn(gens):
    # diffusers.utils.torch_utils.randn_tensor with a list of generators.
    return torch.cat([torch.randn((1, *SHAPE), generator=g) for g in gens], 0)


def original(seed):
    g = torch.Generator("cpu").manual_seed(seed)
    return torch.randn((BATCH, *SHAPE), generator=g) * 0.5


def run_case(kind, config, steps, strength, seed):
    cls, overrides = KINDS[kind]
    sched = cls.from_config(config, **overrides)
    sched.set_timesteps(steps)
    gens = generators(seed)
    out = {}
    timesteps = sched.timesteps
    out["all_timesteps"] = timesteps.to(torch.float64)
    if strength is None:
        noise = randn(gens)
        latents = noise * sched.init_noise_sigma
        begin = 0
    else:
        init = min(int(steps * strength), steps)
        t_start = max(steps - init, 0)
        begin = t_start * sched.order
        timesteps = timesteps[begin:]
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(begin)
        orig = original(seed + 100)
        out["original"] = orig
        noise = randn(gens)
        latents = sched.add_noise(orig, noise, timesteps[:1].repeat(BATCH))
    out["noise"] = noise
    out["x_init"] = latents
    out["init_noise_sigma"] = torch.tensor([float(sched.init_noise_sigma)], dtype=torch.float64)
    if kind == "dpmpp-sde-karras":
        # Gaussian noise from the item generators in place of the Brownian tree.
        sched.noise_sampler = lambda sigma, sigma_next: randn(gens)
    for i, t in enumerate(timesteps):
        inp = sched.scale_model_input(latents, t)
        mo = fake_model(inp, t)
        kwargs = {"generator": gens} if kind == "euler-a" else {}
        latents = sched.step(mo, t, latents, **kwargs).prev_sample
        out[f"step_{i}"] = latents
    return out, begin


def slerp(val, low, high):
    # A1111 modules/processing.py (v1.10), verbatim.
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)

    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)

    omega = torch.acos(dot)
    so = torch.sin(omega)
    res = (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high
    return res


NOISE_SEEDS = [123, 4294967295]
NOISE_SHAPES = [[4, 8, 8], [3, 5], [4, 8, 8], [17], [2, 16], [4, 8, 8]]
VARIATION = {"seeds": [5, 6], "subseeds": [9], "strength": 0.3, "shape": [4, 8, 8]}


def noise_refs():
    out = {}
    gens = [torch.Generator("cpu").manual_seed(s) for s in NOISE_SEEDS]
    for k, shape in enumerate(NOISE_SHAPES):
        out[f"draw_{k}"] = torch.cat([torch.randn((1, *shape), generator=g) for g in gens], 0)
    # A1111 ImageRNG.first with subseeds: subseed 0 past the end of the list.
    xs = []
    for i, seed in enumerate(VARIATION["seeds"]):
        sub = VARIATION["subseeds"][i] if i < len(VARIATION["subseeds"]) else 0
        subnoise = torch.randn(VARIATION["shape"], generator=torch.Generator("cpu").manual_seed(sub))
        noise = torch.randn(VARIATION["shape"], generator=torch.Generator("cpu").manual_seed(seed))
        xs.append(slerp(VARIATION["strength"], noise, subnoise))
    out["variation"] = torch.stack(xs)
    return out


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    cases = []
    plan = []
    for kind in KINDS:
        for cfg, steps in [("sd15", 20), ("sd21v", 12), ("sdxl", 25)]:
            plan.append((kind, cfg, steps, None))
        plan.append((kind, "sd15-linspace", 9, None))
        plan.append((kind, "sd15-trailing", 16, None))
        plan.append((kind, "sd21v-trailing", 7, None))
        plan.append((kind, "sd15", 15, 0.6))
        plan.append((kind, "sd21v", 10, 0.35))
    for n, (kind, cfg, steps, strength) in enumerate(plan):
        name = f"{kind}_{cfg}_{steps}" + ("" if strength is None else f"_img2img{strength}")
        seed = 1000 + n
        out, begin = run_case(kind, CONFIGS[cfg], steps, strength, seed)
        save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(out_dir, name + ".safetensors"))
        cases.append(
            {
                "name": name,
                "kind": kind,
                "config": CONFIGS[cfg],
                "steps": steps,
                "strength": strength,
                "begin": begin,
                "seed": seed,
                "batch": BATCH,
                "shape": list(SHAPE),
            }
        )
    save_file(noise_refs(), os.path.join(out_dir, "noise.safetensors"))
    meta = {
        "cases": cases,
        "noise": {"seeds": NOISE_SEEDS, "shapes": NOISE_SHAPES, "variation": VARIATION},
    }
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
