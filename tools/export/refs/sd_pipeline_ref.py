"""Reference outputs for tests/sd_pipeline.rs: diffusers' own pipelines on the same weights.

    python tools/export/refs/sd_pipeline_ref.py CASES.json OUT.safetensors

CASES.json is a list of cases; each runs one diffusers pipeline with the seeds given as
`generator=[torch.Generator("cpu").manual_seed(seed + i) for i in range(batch)]` and
`output_type="latent"`, then decodes with the VAE. OUT holds `<name>.latents` (the final latents)
and `<name>.pixels` (the decoded image in [-1, 1]) for every case.

Case keys: name, kind (txt2img | img2img | inpaint | controlnet | sdxl), src (diffusers folder),
scheduler (our CLI name), prompt, negative, steps, guidance, seed, batch, width, height, and as the
kind needs: strength, init (PNG), mask (PNG), control (PNG), controlnet (diffusers folder),
control_scale, control_start, control_end, lora (a .safetensors file), lora_scale.
"""
from __future__ import annotations

import json
import sys
import warnings

warnings.filterwarnings("ignore")


def scheduler_for(name: str, config):
    import diffusers as d

    table = {
        "ddim": (d.DDIMScheduler, {}),
        "euler": (d.EulerDiscreteScheduler, {}),
        "euler-a": (d.EulerAncestralDiscreteScheduler, {}),
        "dpmpp-2m": (d.DPMSolverMultistepScheduler, {}),
        "dpmpp-2m-karras": (d.DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
        "dpmpp-sde-karras": (d.DPMSolverSDEScheduler, {"use_karras_sigmas": True}),
        "unipc": (d.UniPCMultistepScheduler, {}),
        "lms": (d.LMSDiscreteScheduler, {}),
        "pndm": (d.PNDMScheduler, {}),
    }
    cls, extra = table[name]
    return cls.from_config(config, **extra)


def run(case: dict, cache: dict):
    import torch
    import diffusers as d
    from PIL import Image

    kind = case["kind"]
    key = (kind, case["src"], case.get("controlnet"), case.get("lora"), case.get("lora_scale"))
    pipe = cache.get(key)
    if pipe is None:
        if kind == "txt2img":
            pipe = d.StableDiffusionPipeline.from_pretrained(case["src"], safety_checker=None,
                                                             requires_safety_checker=False)
        elif kind == "img2img":
            pipe = d.StableDiffusionImg2ImgPipeline.from_pretrained(case["src"], safety_checker=None,
                                                                    requires_safety_checker=False)
        elif kind == "inpaint":
            pipe = d.StableDiffusionInpaintPipeline.from_pretrained(case["src"], safety_checker=None,
                                                                    requires_safety_checker=False)
        elif kind == "controlnet":
            cn = d.ControlNetModel.from_pretrained(case["controlnet"])
            pipe = d.StableDiffusionControlNetPipeline.from_pretrained(case["src"], controlnet=cn,
                                                                       safety_checker=None,
                                                                       requires_safety_checker=False)
        elif kind == "sdxl":
            pipe = d.StableDiffusionXLPipeline.from_pretrained(case["src"])
        else:
            raise SystemExit(f"unknown kind {kind}")
        if case.get("lora"):
            pipe.load_lora_weights(case["lora"])
            pipe.fuse_lora(lora_scale=float(case.get("lora_scale", 1.0)))
        pipe.set_progress_bar_config(disable=True)
        pipe.atelier_base_scheduler = dict(pipe.scheduler.config)
        cache[key] = pipe
    base_config = pipe.atelier_base_scheduler
    pipe.scheduler = scheduler_for(case["scheduler"], base_config)
    batch = int(case.get("batch", 1))
    gens = [torch.Generator("cpu").manual_seed(int(case["seed"]) + i) for i in range(batch)]
    args = dict(prompt=[case["prompt"]] * batch, num_inference_steps=int(case["steps"]),
                guidance_scale=float(case["guidance"]), generator=gens, output_type="latent",
                height=int(case["height"]), width=int(case["width"]))
    negative = case.get("negative") or None
    if negative is not None:
        args["negative_prompt"] = [negative] * batch
    if kind in ("img2img", "inpaint"):
        args["image"] = Image.open(case["init"]).convert("RGB")
        args["strength"] = float(case["strength"])
        if kind == "img2img":
            del args["height"], args["width"]
    if kind == "inpaint":
        args["mask_image"] = Image.open(case["mask"]).convert("L")
    if kind == "controlnet":
        args["image"] = Image.open(case["control"]).convert("RGB")
        args["controlnet_conditioning_scale"] = float(case.get("control_scale", 1.0))
        args["control_guidance_start"] = float(case.get("control_start", 0.0))
        args["control_guidance_end"] = float(case.get("control_end", 1.0))
    with torch.no_grad():
        latents = pipe(**args).images
        pixels = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    return latents.float().contiguous(), pixels.float().contiguous()


def main():
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(max(1, torch.get_num_threads()))
    cases = json.load(open(sys.argv[1]))
    out, cache = {}, {}
    for case in cases:
        latents, pixels = run(case, cache)
        out[f"{case['name']}.latents"] = latents
        out[f"{case['name']}.pixels"] = pixels
    save_file(out, sys.argv[2])


if __name__ == "__main__":
    main()
