"""Python references for tests/clip_model.rs, on the checkpoint `import-clip --save-checkpoint` wrote.

  embed CKPT REQ.json OUT.json      REQ: {"images": [...], "texts": [...]} -> normalized embeddings
                                    (open_clip's eval transform after exif_transpose; open_clip.tokenize)
  zeroshot CKPT REQ.json OUT.json   REQ: {"images": [...], "label_set": FILE.toml | null,
                                    "labels": [...], "templates": NAME, "top_k": 5}
                                    -> per image [[label, score], ...] best first. The label set and the
                                    template table are read from config/labels/ with tomllib here.
  search DB MODEL REQ.json OUT.json REQ: {"query": [floats], "top": N} -> brute force [[path, score], ...]
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


def main():
    mode = sys.argv[1]
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
