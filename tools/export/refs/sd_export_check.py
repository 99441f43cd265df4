"""Reference outputs of the eager diffusers/transformers modules for tests/sd_export.rs.

    sd_export_check.py refs SOURCE MODEL_DIR OUT_DIR
        SOURCE: the diffusers folder written by `import-sd/import-controlnet --save-source`; MODEL_DIR: the
        exported folder (its manifest says sd or controlnet). Writes OUT_DIR/ref.safetensors (inputs and
        outputs) and OUT_DIR/cases.json: [{"role", "method", "inputs": [names], "outputs": [names]}].
        The outputs come from diffusers' own API, the way its pipelines call the modules, never from
        tools/export/sd_export.py's wrappers.

    sd_export_check.py single-file SOURCE OUT.safetensors
        Writes an SD 1.x diffusers folder as one original-layout (LDM) checkpoint:
        model.diffusion_model.*, first_stage_model.*, cond_stage_model.transformer.*.
"""
from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402


def _save(out_dir: Path, tensors: dict, cases: list):
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(out_dir / "ref.safetensors"))
    (out_dir / "cases.json").write_text(json.dumps(cases, indent=1))


class Cases:
    def __init__(self):
        self.tensors, self.cases = {}, []

    def add(self, role, method, inputs, outputs):
        i = len(self.cases)
        names_in, names_out = [], []
        for j, t in enumerate(inputs):
            self.tensors[f"c{i}.in{j}"] = t.clone()  # cases may share inputs; safetensors wants distinct storage
            names_in.append(f"c{i}.in{j}")
        for j, t in enumerate(outputs):
            self.tensors[f"c{i}.out{j}"] = t.clone()
            names_out.append(f"c{i}.out{j}")
        self.cases.append({"role": role, "method": method, "inputs": names_in, "outputs": names_out})


def _time_ids(b, h, w):
    return torch.tensor([[h * 8.0, w * 8.0, 0.0, 0.0, h * 8.0, w * 8.0]]).repeat(b, 1)


def sd_refs(source: Path, manifest: dict, out: Path):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(source), local_files_only=True, safety_checker=None)
    sdxl = manifest["variant"] == "sdxl"
    g = torch.Generator().manual_seed(1234)
    c = Cases()
    prompts = ["a photo of an astronaut riding a horse on the moon", ""]
    with torch.no_grad():
        # text encoders: ids from the pipeline's own tokenizers (their pad tokens)
        encs = [("text_encoder", pipe.text_encoder, pipe.tokenizer)]
        if sdxl:
            encs.append(("text_encoder_2", pipe.text_encoder_2, pipe.tokenizer_2))
        hiddens = []
        for role, te, tok in encs:
            ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids
            o = te(ids, output_hidden_states=True)
            hidden = o.hidden_states[-2] if sdxl else o.last_hidden_state
            pooled = o.text_embeds if role == "text_encoder_2" else o.pooler_output
            c.add(role, "forward", [ids], [hidden, pooled])
            hiddens.append((hidden, pooled))
        # the contract's hidden is what the pipeline feeds the UNet: check against encode_prompt
        if sdxl:
            pe, _, pooled, _ = pipe.encode_prompt(prompts, device="cpu", num_images_per_prompt=1,
                                                  do_classifier_free_guidance=False)
            assert torch.equal(pe, torch.cat([hiddens[0][0], hiddens[1][0]], dim=-1))
            assert torch.equal(pooled, hiddens[1][1])
        else:
            pe, _ = pipe.encode_prompt(prompts, device="cpu", num_images_per_prompt=1,
                                       do_classifier_free_guidance=False)
            assert torch.equal(pe, hiddens[0][0])

        unet = pipe.unet
        f = 2 ** unet.num_upsamplers
        cfg = unet.config
        te_dim = hiddens[-1][1].shape[-1]
        # (batch, h, w, seq): a multiple of the UNet's downscale, one that is not (the upsample-size
        # path), a long prompt (S = 2 x 77)
        for b, h, w, s in ((2, 2 * f, 3 * f, 77), (1, f + 1, 2 * f + 3, 154), (3, 3 * f + 1, f, 77)):
            x = [torch.randn(b, cfg.in_channels, h, w, generator=g), torch.rand(b, generator=g) * 999.0,
                 torch.randn(b, s, cfg.cross_attention_dim, generator=g)]
            kw = {}
            if sdxl:
                x += [torch.randn(b, te_dim, generator=g), _time_ids(b, h, w)]
                kw["added_cond_kwargs"] = {"text_embeds": x[3], "time_ids": x[4]}
            y = unet(x[0], x[1], encoder_hidden_states=x[2], **kw).sample
            c.add("unet", "forward", x, [y])
            # forward_control: residuals shaped as a ControlNet gives them
            res, hh, ww = [torch.randn(b, cfg.block_out_channels[0], h, w, generator=g)], h, w
            for i, blk in enumerate(unet.down_blocks):
                for _ in blk.resnets:
                    res.append(torch.randn(b, cfg.block_out_channels[i], hh, ww, generator=g))
                if blk.downsamplers:
                    hh, ww = (hh + 1) // 2, (ww + 1) // 2
                    res.append(torch.randn(b, cfg.block_out_channels[i], hh, ww, generator=g))
            mid = torch.randn(b, cfg.block_out_channels[-1], hh, ww, generator=g)
            y = unet(x[0], x[1], encoder_hidden_states=x[2], down_block_additional_residuals=tuple(res),
                     mid_block_additional_residual=mid, **kw).sample
            c.add("unet", "forward_control", x + res + [mid], [y])

        vae = pipe.vae
        sf = 2 ** (len(vae.config.block_out_channels) - 1)
        for b, h, w in ((1, 8, 8), (2, 5, 7)):
            img = torch.rand(b, 3, h * sf, w * sf, generator=g) * 2 - 1
            dist = vae.encode(img).latent_dist
            c.add("vae_encoder", "forward", [img], [dist.mean, dist.std])
            z = torch.randn(b, vae.config.latent_channels, h, w, generator=g)
            c.add("vae_decoder", "forward", [z], [vae.decode(z).sample])
    _save(out, c.tensors, c.cases)


def controlnet_refs(source: Path, manifest: dict, out: Path):
    from diffusers import ControlNetModel

    cn = ControlNetModel.from_pretrained(str(source), local_files_only=True).eval()
    sdxl = manifest["variant"] == "sdxl"
    cfg = cn.config
    down = 2 ** (len(cfg.conditioning_embedding_out_channels) - 1)
    g = torch.Generator().manual_seed(99)
    c = Cases()
    with torch.no_grad():
        for b, h, w, s in ((2, 4, 6, 77), (1, 5, 3, 154)):
            x = [torch.randn(b, cfg.in_channels, h, w, generator=g), torch.rand(b, generator=g) * 999.0,
                 torch.randn(b, s, cfg.cross_attention_dim, generator=g),
                 torch.rand(b, 3, h * down, w * down, generator=g)]
            kw = {}
            if sdxl:
                emb = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
                x += [torch.randn(b, emb, generator=g), _time_ids(b, h, w)]
                kw["added_cond_kwargs"] = {"text_embeds": x[4], "time_ids": x[5]}
            o = cn(x[0], x[1], encoder_hidden_states=x[2], controlnet_cond=x[3], conditioning_scale=1.0, **kw)
            c.add("controlnet", "forward", x, list(o.down_block_res_samples) + [o.mid_block_res_sample])
    _save(out, c.tensors, c.cases)


# --------------------------------------------------------------------------- diffusers -> LDM layout

_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
           ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]


def _unet_to_ldm(sd: dict, layers: int) -> dict:
    import re

    direct = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
              "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
              "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}
    up_has_attn = {int(m.group(1)) for k in sd for m in [re.match(r"up_blocks\.(\d+)\.attentions\.", k)] if m}
    out = {}
    for k, v in sd.items():
        mod, _, leaf = k.rpartition(".")
        if mod in direct:
            out[f"{direct[mod]}.{leaf}"] = v
            continue
        m = re.match(r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.*)", k)
        if m:
            kind, b, part, j, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
            if kind == "down":
                base = 1 + b * (layers + 1)
                if part == "resnets":
                    for a, o in _RESNET:
                        rest = re.sub(rf"^{a}\.", f"{o}.", rest)
                    out[f"input_blocks.{base + j}.0.{rest}"] = v
                elif part == "attentions":
                    out[f"input_blocks.{base + j}.1.{rest}"] = v
                else:
                    out[f"input_blocks.{base + layers}.0.op.{rest.removeprefix('conv.')}"] = v
            else:
                base = b * (layers + 1)
                if part == "resnets":
                    for a, o in _RESNET:
                        rest = re.sub(rf"^{a}\.", f"{o}.", rest)
                    out[f"output_blocks.{base + j}.0.{rest}"] = v
                elif part == "attentions":
                    out[f"output_blocks.{base + j}.1.{rest}"] = v
                else:
                    out[f"output_blocks.{base + layers}.{2 if b in up_has_attn else 1}.{rest}"] = v
            continue
        m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", k)
        if m:
            part, j, rest = m.group(1), int(m.group(2)), m.group(3)
            if part == "resnets":
                for a, o in _RESNET:
                    rest = re.sub(rf"^{a}\.", f"{o}.", rest)
                out[f"middle_block.{2 * j}.{rest}"] = v
            else:
                out[f"middle_block.1.{rest}"] = v
            continue
        raise SystemExit(f"unet key {k}: no LDM name")
    return out


def _vae_to_ldm(sd: dict, n_blocks: int) -> dict:
    import re

    out = {}
    for k, v in sd.items():
        k2 = k.replace("conv_norm_out", "norm_out")
        m = re.match(r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)", k2)
        if m:
            side, kind, i, part, j, rest = m.groups()
            i = int(i) if kind == "down" else n_blocks - 1 - int(i)
            rest = rest.replace("conv_shortcut", "nin_shortcut")
            if part == "resnets":
                out[f"{side}.{kind}.{i}.block.{j}.{rest}"] = v
            else:
                out[f"{side}.{kind}.{i}.{'downsample' if kind == 'down' else 'upsample'}.{rest}"] = v
            continue
        m = re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", k2)
        if m:
            out[f"{m.group(1)}.mid.block_{int(m.group(2)) + 1}.{m.group(3).replace('conv_shortcut', 'nin_shortcut')}"] = v
            continue
        m = re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", k2)
        if m:
            rest = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
            mod, _, leaf = m.group(2).rpartition(".")
            if v.dim() == 2:
                v = v[:, :, None, None]  # linear -> 1x1 conv, as the original checkpoints store it
            out[f"{m.group(1)}.mid.attn_1.{rest[mod]}.{leaf}"] = v
            continue
        out[k2] = v
    return out


def single_file(source: Path, out: Path):
    from diffusers import DiffusionPipeline
    from safetensors.torch import save_file

    pipe = DiffusionPipeline.from_pretrained(str(source), local_files_only=True, safety_checker=None)
    ck = {}
    for k, v in _unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config.layers_per_block).items():
        ck[f"model.diffusion_model.{k}"] = v
    for k, v in _vae_to_ldm(pipe.vae.state_dict(), len(pipe.vae.config.block_out_channels)).items():
        ck[f"first_stage_model.{k}"] = v
    for k, v in pipe.text_encoder.state_dict().items():
        # original checkpoints hold the pre-5.6 transformers names (text_model.…)
        ck[f"cond_stage_model.transformer.{k if k.startswith('text_model.') else 'text_model.' + k}"] = v
    save_file({k: v.contiguous() for k, v in ck.items()}, str(out))


def main(argv):
    if len(argv) == 4 and argv[0] == "refs":
        source, model, out = Path(argv[1]), Path(argv[2]), Path(argv[3])
        import tomllib

        manifest = tomllib.loads((model / "manifest.toml").read_text())
        (controlnet_refs if manifest["family"] == "controlnet" else sd_refs)(source, manifest, out)
    elif len(argv) == 3 and argv[0] == "single-file":
        single_file(Path(argv[1]), Path(argv[2]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
