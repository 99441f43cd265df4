"""Reference for tests/sd_infotext.rs: AUTOMATIC1111's infotext parsing and PIL's PNG text chunks.

Usage: python sd_infotext_ref.py REQUEST.json OUT.json

REQUEST: {"parse": [infotext, ...], "read_png": [path, ...],
          "write_png": [{"path", "text", "how": "text" | "ztxt" | "itxt"}, ...]}
OUT:     {"parse": [[[key, value], ...], ...], "read_png": [{"parameters", "chunks"}, ...]}

`parse_generation_parameters` is ported from A1111's modules/infotext_utils.py (v1.10), which
cannot be imported without the web UI: the regexes, `unquote`, line handling, the `WxH` split
into `-1`/`-2` keys and the skip of values that fail to parse are A1111's. The parts that depend
on the UI's settings and state are left out: prompt styles extraction, the defaults it fills for
missing keys (`Clip skip: 1`, `RNG: GPU`, hires/inpaint defaults), old hires-fix back-compat and
`infotext_skip_pasting`. A dict's order is kept by returning its items as a list.
"""

import json
import re
import struct
import sys
import zlib

from PIL import Image, PngImagePlugin

# A1111 modules/infotext_utils.py
re_param_code = r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)'
re_param = re.compile(re_param_code)
re_imagesize = re.compile(r"^(\d+)x(\d+)$")


def unquote(text):
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text

    try:
        return json.loads(text)
    except Exception:
        return text


def parse_generation_parameters(x: str):
    res = {}

    prompt = ""
    negative_prompt = ""

    done_with_prompt = False

    *lines, lastline = x.strip().split("\n")
    if len(re_param.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ''

    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative_prompt += ("" if negative_prompt == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line

    res["Prompt"] = prompt
    res["Negative prompt"] = negative_prompt

    for k, v in re_param.findall(lastline):
        try:
            if v[0] == '"' and v[-1] == '"':
                v = unquote(v)

            m = re_imagesize.match(v)
            if m is not None:
                res[f"{k}-1"] = m.group(1)
                res[f"{k}-2"] = m.group(2)
            else:
                res[k] = v
        except Exception:
            print(f"Error parsing \"{k}: {v}\"", file=sys.stderr)

    return res


def chunk_types(path):
    """The chunk types of a PNG file, in order (read with the PNG spec, not PIL)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, types = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8].decode("ascii")
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(data[pos + 4:pos + 8 + length]) == crc, f"{path}: bad CRC in {kind}"
        types.append(kind)
        pos += 12 + length
        del body
    return types


def write_png(path, text, how):
    im = Image.new("RGB", (5, 3), (10, 200, 30))
    info = PngImagePlugin.PngInfo()
    if how == "text":
        info.add_text("parameters", text)  # what A1111's images.save_image does
    elif how == "ztxt":
        info.add_text("parameters", text, zip=True)
    elif how == "itxt":
        info.add_itxt("parameters", text, zip=True)
    else:
        raise ValueError(how)
    im.save(path, pnginfo=info)


def main():
    request_path, out_path = sys.argv[1], sys.argv[2]
    with open(request_path, encoding="utf-8") as f:
        request = json.load(f)
    out = {"parse": [], "read_png": []}
    for text in request.get("parse", []):
        out["parse"].append(list(parse_generation_parameters(text).items()))
    for path in request.get("read_png", []):
        with Image.open(path) as im:
            im.load()
            out["read_png"].append({"parameters": im.info.get("parameters"), "chunks": chunk_types(path),
                                    "size": list(im.size), "pixel": list(im.getpixel((0, 0)))})
    for item in request.get("write_png", []):
        write_png(item["path"], item["text"], item["how"])
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
