"""Python references for tests/clip_model.rs, on the checkpoint `import-clip --save-checkpoint` wrote.

  embed CKPT REQ.json OUT.json      REQ: {"images": [...], "texts": [...]} -> normalized embeddings
                                    (open_clip's eval transform after exif_transpose; open_clip.tokenize)
  zeroshot CKPT REQ.json OUT.json   REQ: {"images": [...], "label_set": FILE.toml | null,
                                    "labels": [...], "templates": NAME, "top_k": 5}
                                    -> per image [[label, score], ...] best first. The label set and the
                                    template table are read from config/labels/ with tomllib here.
  search DB MODEL REQ.json OUT.json REQ: {"query": [floats], "top": N} -> brute force [[path, score], ...]
  bare-state-dict CKPT OUT.pt       the checkpoint's weights as a bare state dict, the layout of openai
                                    `clip` .pt state dicts and open_clip checkpoints
  safetensors-state-dict CKPT OUT   the checkpoint's weights as a .safetensors file (open_clip's own layout)
  jit-archive CKPT OUT.pt           the checkpoint's model traced into a TorchScript archive, the layout
                                    of openai's own `clip` .pt files
  make-hf DIR                       a random transformers CLIPModel (ViT-B/32 layout, narrow and shallow
                                    so the test stays fast) saved as a transformers folder, with a
                                    preprocessor_config.json as the Hub's openai/clip-vit-base-patch32 has
  embed-hf DIR REQ.json OUT.json    as embed, with the transformers model: get_image_features on open_clip's
                                    eval transform (mean/std from the folder's preprocessor_config.json),
                                    get_text_features on open_clip.tokenize ids
"""
import json
import sqlite3
import sys
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]


def model_and_transform(ckpt):
    import open_clip
    import torch

    sys.path.insert(0, str(ROOT))
    from tools.export.clip_export import load_checkpoint_model

    model = load_checkpoint_model(ckpt)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    return model, open_clip.image_transform(size, is_train=False), open_clip.tokenize, torch


def embed_images(model, transform, torch, paths):
    from PIL import Image, ImageOps

    x = torch.stack([transform(ImageOps.exif_transpose(Image.open(p))) for p in paths])
    with torch.no_grad():
        return torch.nn.functional.normalize(model.encode_image(x), dim=-1)


def embed_texts(model, tokenize, torch, texts):
    with torch.no_grad():
        out = [model.encode_text(tokenize(texts[i:i + 64])) for i in range(0, len(texts), 64)]
        return torch.nn.functional.normalize(torch.cat(out), dim=-1)


def make_hf(folder):
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77),
        vision_config=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                           image_size=224, patch_size=32),
        projection_dim=64)
    model = CLIPModel(cfg).eval()
    with torch.no_grad():  # HF's init leaves small weights; spread them so the embeddings differ per input
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.08)
    model.save_pretrained(folder)
    CLIPImageProcessor(do_resize=True, size={"shortest_edge": 224}, resample=3, do_center_crop=True,
                       crop_size={"height": 224, "width": 224}, do_normalize=True,
                       image_mean=[0.48145466, 0.4578275, 0.40821073],
                       image_std=[0.26862954, 0.26130258, 0.27577711]).save_pretrained(folder)


def embed_hf(folder, r):
    import open_clip
    import torch
    from PIL import Image, ImageOps
    from transformers import CLIPImageProcessor, CLIPModel

    model = CLIPModel.from_pretrained(folder).eval()
    proc = CLIPImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        img = torch.zeros(0)
        if r["images"]:
            # open_clip's eval transform, as for the other references: atelier preprocesses every
            # model that way. (transformers' CLIPImageProcessor differs by design: it floors the
            # crop offset, e.g. 1 px left of torchvision's on a 640x427 photo.)
            transform = open_clip.image_transform(proc.crop_size["height"], is_train=False,
                                                  mean=proc.image_mean, std=proc.image_std)
            px = torch.stack([transform(ImageOps.exif_transpose(Image.open(p))) for p in r["images"]])
            feats = model.get_image_features(pixel_values=px)
            feats = getattr(feats, "pooler_output", feats)  # transformers 5 wraps the projection
            img = torch.nn.functional.normalize(feats, dim=-1)
        txt = torch.zeros(0)
        if r["texts"]:
            ids = open_clip.tokenize(r["texts"])
            # the text tower pools at the end-of-text token: the largest id (transformers' legacy eos rule)
            feats = model.get_text_features(input_ids=ids)
            txt = torch.nn.functional.normalize(getattr(feats, "pooler_output", feats), dim=-1)
    return {"images": img.tolist(), "texts": txt.tolist()}


def main():
    mode = sys.argv[1]
    if mode == "bare-state-dict":
        import torch

        ck = torch.load(sys.argv[2], map_location="cpu", weights_only=True)
        torch.save(ck["state_dict"], sys.argv[3])
        return
    if mode == "safetensors-state-dict":
        # open_clip's own `open_clip_model.safetensors` layout: the state dict as safetensors.
        import torch
        from safetensors.torch import save_file

        ck = torch.load(sys.argv[2], map_location="cpu", weights_only=True)
        save_file({k: v.contiguous() for k, v in ck["state_dict"].items()}, sys.argv[3])
        return
    if mode == "jit-archive":
        # The layout of openai's own `clip` .pt files: a TorchScript archive of the model
        # (traced, as openai's JIT files are), its state dict in the openai CLIP layout.
        model, _, tokenize, torch = model_and_transform(sys.argv[2])
        size = model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        # openai's model holds its causal mask as a plain attribute (a constant of the trace),
        # open_clip's as a buffer: made openai's, so the state dict is openai's.
        if "attn_mask" in model._buffers:
            mask = model._buffers.pop("attn_mask")
            model.attn_mask = mask
        with torch.no_grad():
            traced = torch.jit.trace_module(
                model.eval(),
                {"encode_image": (torch.zeros(1, 3, size, size),), "encode_text": (tokenize(["a"]),)},
                check_trace=False,
            )
        torch.jit.save(traced, sys.argv[3])
        return
    if mode == "make-hf":
        make_hf(sys.argv[2])
        return
    if mode == "embed-hf":
        folder, req, out = sys.argv[2:5]
        json.dump(embed_hf(folder, json.load(open(req))), open(out, "w"))
        return
    if mode == "search":
        db, model_name, req, out = sys.argv[2:6]
        r = json.load(open(req))
        con = sqlite3.connect(db)
        rows = con.execute("SELECT path, embedding FROM embeddings WHERE model = ? ORDER BY path", (model_name,)).fetchall()
        mat = np.stack([np.frombuffer(b, dtype="<f4") for _, b in rows]).astype(np.float64)
        scores = mat @ np.asarray(r["query"], dtype=np.float64)
        order = np.argsort(-scores, kind="stable")[: r["top"]]
        json.dump([[rows[i][0], float(scores[i])] for i in order], open(out, "w"))
        return
    ckpt, req, out = sys.argv[2:5]
    r = json.load(open(req))
    model, transform, tokenize, torch = model_and_transform(ckpt)
    if mode == "embed":
        img = embed_images(model, transform, torch, r["images"]) if r["images"] else torch.zeros(0)
        txt = embed_texts(model, tokenize, torch, r["texts"]) if r["texts"] else torch.zeros(0)
        json.dump({"images": img.tolist(), "texts": txt.tolist()}, open(out, "w"))
    elif mode == "zeroshot":
        table = tomllib.load(open(ROOT / "config/labels/templates.toml", "rb"))["templates"]
        if r.get("label_set"):
            ls = tomllib.load(open(r["label_set"], "rb"))
            tpl = ls["templates"] if isinstance(ls["templates"], list) else table[ls["templates"]]
            labels = ls["labels"]
        else:
            tpl = table[r["templates"]]
            labels = [{"name": n} for n in r["labels"]]
        weights = []
        for lab in labels:
            texts = list(lab.get("prompts", []))
            if "prompt" in lab:
                texts.append(lab["prompt"])
            if not texts:
                texts = [lab["name"]]
            e = embed_texts(model, tokenize, torch, [t.replace("{}", x) for x in texts for t in tpl])
            m = e.mean(dim=0)
            weights.append(m / m.norm())
        w = torch.stack(weights)
        img = embed_images(model, transform, torch, r["images"])
        scale = model.logit_scale.exp().item()
        probs = (scale * img.double() @ w.double().T).softmax(dim=-1)
        res = []
        for p in probs:
            order = torch.argsort(p, descending=True, stable=True)[: r["top_k"]]
            res.append([[labels[i]["name"], p[i].item()] for i in order.tolist()])
        json.dump(res, open(out, "w"))


if __name__ == "__main__":
    main()
