"""Reference for tests/sd_lora.rs: diffusers' own LoRA loading and fusion on tiny random models.

Usage: python sd_lora_ref.py OUT_DIR

Builds a tiny random UNet2DConditionModel and CLIPTextModel (configs like diffusers' own tests),
a random LoRA on attention, projection, feed-forward, 3x3 and 1x1 convolution and text-encoder
layers, and writes:
  original.safetensors       the model parameters before fusion, named `unet.<key>` / `text_encoder.<key>`
  lora_peft.safetensors      the LoRA in diffusers/PEFT format (`unet.<module>.lora_A.weight`, …)
  lora_kohya.safetensors     the same LoRA in Kohya format (`lora_unet_<module>.lora_down.weight`,
                             `.lora_up.weight`, `.alpha`), written from the PEFT names
  fused_peft.safetensors     parameters after diffusers' load_lora_weights(peft) + fuse_lora(lora_scale=0.7)
  fused_kohya.safetensors    the same for the Kohya file (diffusers converts Kohya names itself)
Needs `peft` (diffusers' LoRA backend).

python sd_lora_ref.py --sgm NAMES.json OUT.json: maps Kohya SGM module names (SDXL's
`input_blocks_4_1_…`, without `lora_unet_`) with diffusers' `_maybe_map_sgm_blocks_to_diffusers`
(layers_per_block 2) and `_convert_non_diffusers_lora_to_diffusers`; OUT lists, per name, the
diffusers module path it targets, with diffusers' intermediate attention-processor spelling
(`attn1.processor.to_q_lora`) written as the module path (`attn1.to_q`).

python sd_lora_ref.py --for-pipeline SRC_DIR OUT_DIR: a random LoRA (as above) for the diffusers
pipeline folder SRC_DIR (tests/sd_pipeline.rs's tiny SD 1.5), written as OUT_DIR/style_peft.safetensors
and OUT_DIR/style_kohya.safetensors; tools/export/refs/sd_pipeline_ref.py then loads it into the
pipeline with diffusers' load_lora_weights + fuse_lora.
"""

import sys

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

RANK = 4
ALPHA = 2.0  # Kohya alpha: scale alpha / rank = 0.5
SCALE = 0.7
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                "conv1", "conv_shortcut", "time_emb_proj")
TE_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def build():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, norm_num_groups=32,
    )
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4)
    te = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=2, hidden_size=32, intermediate_size=37,
                                      layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=5,
                                      pad_token_id=1, vocab_size=1000))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=None, unet=unet, scheduler=DDIMScheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return pipe


def targets(model, names):
    out = []
    for name, module in model.named_modules():
        if any(name == t or name.endswith("." + t) for t in names) and isinstance(
                module, (torch.nn.Linear, torch.nn.Conv2d)):
            out.append((name, module))
    return out


def random_lora(pipe):
    g = torch.Generator().manual_seed(1)
    peft, kohya = {}, {}
    for prefix, kprefix, model, names in (("unet", "lora_unet_", pipe.unet, UNET_TARGETS),
                                          ("text_encoder", "lora_te_", pipe.text_encoder, TE_TARGETS)):
        for name, module in targets(model, names):
            w = module.weight
            if w.dim() == 4:
                down = torch.randn(RANK, w.shape[1], w.shape[2], w.shape[3], generator=g) * 0.1
                up = torch.randn(w.shape[0], RANK, 1, 1, generator=g) * 0.1
            else:
                down = torch.randn(RANK, w.shape[1], generator=g) * 0.1
                up = torch.randn(w.shape[0], RANK, generator=g) * 0.1
            peft[f"{prefix}.{name}.lora_A.weight"] = down
            peft[f"{prefix}.{name}.lora_B.weight"] = up
            # Kohya names the CLIP text model from its `text_model` (older transformers layout).
            kname = name if prefix == "unet" or name.startswith("text_model.") else "text_model." + name
            k = kprefix + kname.replace(".", "_")
            kohya[f"{k}.lora_down.weight"] = down
            kohya[f"{k}.lora_up.weight"] = up
            kohya[f"{k}.alpha"] = torch.tensor(ALPHA)
    return peft, kohya


def params(pipe):
    d = {f"unet.{k}": v for k, v in pipe.unet.state_dict().items()}
    d.update({f"text_encoder.{k}": v for k, v in pipe.text_encoder.state_dict().items()})
    return {k: v.detach().clone().contiguous() for k, v in d.items()}


def fused(lora):
    pipe = build()
    pipe.load_lora_weights({k: v.clone() for k, v in lora.items()})
    pipe.fuse_lora(lora_scale=SCALE)
    pipe.unload_lora_weights()  # keeps the fused weights, drops the LoRA layers
    return params(pipe)


def sgm(names_path, out_path):
    import json
    from types import SimpleNamespace

    from diffusers.loaders.lora_conversion_utils import (
        _convert_non_diffusers_lora_to_diffusers,
        _maybe_map_sgm_blocks_to_diffusers,
    )

    with open(names_path) as f:
        names = json.load(f)
    out = []
    for n in names:
        sd = {f"lora_unet_{n}.lora_down.weight": torch.zeros(1), f"lora_unet_{n}.lora_up.weight": torch.zeros(1)}
        sd = _maybe_map_sgm_blocks_to_diffusers(sd, SimpleNamespace(layers_per_block=2))
        converted, _ = _convert_non_diffusers_lora_to_diffusers(sd)
        (key,) = [k for k in converted if k.endswith(".down.weight")]
        path = key[len("unet."):-len(".down.weight")]
        path = path[:-len(".lora")] if path.endswith(".lora") else path
        for proj in ("to_q", "to_k", "to_v"):
            path = path.replace(f"processor.{proj}_lora", proj)
        path = path.replace("processor.to_out_lora", "to_out.0")
        out.append(path)
    with open(out_path, "w") as f:
        json.dump(out, f)


def for_pipeline(src, out):
    pipe = StableDiffusionPipeline.from_pretrained(src, safety_checker=None, requires_safety_checker=False)
    peft, kohya = random_lora(pipe)
    save_file(peft, f"{out}/style_peft.safetensors")
    save_file(kohya, f"{out}/style_kohya.safetensors")


def main():
    try:
        import peft  # noqa: F401  (diffusers' LoRA backend)
    except ImportError:
        sys.exit("sd_lora_ref.py needs the `peft` package in the venv (pip install peft): "
                 "diffusers loads and fuses LoRAs through it")
    if sys.argv[1] == "--sgm":
        return sgm(sys.argv[2], sys.argv[3])
    if sys.argv[1] == "--for-pipeline":
        return for_pipeline(sys.argv[2], sys.argv[3])
    out = sys.argv[1]
    pipe = build()
    original = params(pipe)
    peft, kohya = random_lora(pipe)
    save_file(original, f"{out}/original.safetensors")
    save_file(peft, f"{out}/lora_peft.safetensors")
    save_file(kohya, f"{out}/lora_kohya.safetensors")
    for name, lora in (("peft", peft), ("kohya", kohya)):
        f = fused(lora)
        assert f.keys() == original.keys(), sorted(set(f) ^ set(original))[:5]
        changed = sum(not torch.equal(f[k], original[k]) for k in f)
        assert changed >= len(lora) // 3, f"{name}: diffusers changed only {changed} tensors"
        save_file(f, f"{out}/fused_{name}.safetensors")


if __name__ == "__main__":
    main()
