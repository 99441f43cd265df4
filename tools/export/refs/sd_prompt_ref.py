"""Reference for tests/sd_prompt.rs: AUTOMATIC1111's prompt parsing and 75-token chunking.

Usage: python sd_prompt_ref.py REQUEST.json OUT.json

REQUEST: {"prompts": [text, ...], "plain": [text, ...]}
OUT: {"loras": [[text_without_tags, [[name, weight], ...]], ...],
      "attention": [[[text, weight], ...], ...],
      "chunks": [{"ids": {"49407": [[77 ids], ...], "0": [...]}, "weights": [[77], ...]}, ...],
      "open_clip": [[77 ids], ...]}          # open_clip.tokenize of each "plain" text

Ported from A1111 v1.10 (it cannot be imported without the web UI): `re_attention`, `re_break`
and `parse_prompt_attention` from modules/prompt_parser.py; `re_extra_net` and `parse_prompt`
from modules/extra_networks.py (with extra_networks_lora's weight: the first positional argument
after the name, default 1.0); `tokenize_line`/`next_chunk` and `process_tokens`' padding from
modules/sd_hijack_clip.py with the defaults `comma_padding_backtrack = 20` and emphasis on, no
textual-inversion embeddings. A1111 tokenizes each run with the Hugging Face CLIPTokenizer
(truncation off, no special tokens); open_clip's SimpleTokenizer.encode is the same BPE.
"""

import json
import re
import sys

import open_clip
from open_clip.tokenizer import SimpleTokenizer

# modules/prompt_parser.py
re_attention = re.compile(r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""", re.X)

re_break = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text):
    res = []
    round_brackets = []
    square_brackets = []

    round_bracket_multiplier = 1.1
    square_bracket_multiplier = 1 / 1.1

    def multiply_range(start_position, multiplier):
        for p in range(start_position, len(res)):
            res[p][1] *= multiplier

    for m in re_attention.finditer(text):
        text = m.group(0)
        weight = m.group(1)

        if text.startswith('\\'):
            res.append([text[1:], 1.0])
        elif text == '(':
            round_brackets.append(len(res))
        elif text == '[':
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            multiply_range(round_brackets.pop(), float(weight))
        elif text == ')' and round_brackets:
            multiply_range(round_brackets.pop(), round_bracket_multiplier)
        elif text == ']' and square_brackets:
            multiply_range(square_brackets.pop(), square_bracket_multiplier)
        else:
            parts = re.split(re_break, text)
            for i, part in enumerate(parts):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])

    for pos in round_brackets:
        multiply_range(pos, round_bracket_multiplier)

    for pos in square_brackets:
        multiply_range(pos, square_bracket_multiplier)

    if len(res) == 0:
        res = [["", 1.0]]

    # merge runs of identical weights
    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1

    return res


# modules/extra_networks.py
re_extra_net = re.compile(r"<(\w+):([^>]+)>")


def parse_prompt(prompt):
    loras = []

    def found(m):
        name = m.group(1)
        args = m.group(2)
        items = args.split(":")
        if name in ("lora", "lyco"):
            positional = [x for x in items if "=" not in x]
            loras.append([positional[0], float(positional[1]) if len(positional) > 1 else 1.0])
        return ""

    prompt = re.sub(re_extra_net, found, prompt)
    return prompt, loras


# modules/sd_hijack_clip.py
class PromptChunk:
    def __init__(self):
        self.tokens = []
        self.multipliers = []


def tokenize_line(tokenizer, line, comma_padding_backtrack=20, chunk_length=75):
    id_start = tokenizer.encoder["<start_of_text>"]
    id_end = tokenizer.encoder["<end_of_text>"]
    comma_token = tokenizer.encoder[",</w>"]

    parsed = parse_prompt_attention(line)
    tokenized = [tokenizer.encode(text) for text, _ in parsed]

    chunks = []
    chunk = PromptChunk()
    token_count = 0
    last_comma = -1

    def next_chunk(is_last=False):
        nonlocal token_count
        nonlocal last_comma
        nonlocal chunk

        if is_last:
            token_count += len(chunk.tokens)
        else:
            token_count += chunk_length

        to_add = chunk_length - len(chunk.tokens)
        if to_add > 0:
            chunk.tokens += [id_end] * to_add
            chunk.multipliers += [1.0] * to_add

        chunk.tokens = [id_start] + chunk.tokens + [id_end]
        chunk.multipliers = [1.0] + chunk.multipliers + [1.0]

        last_comma = -1
        chunks.append(chunk)
        chunk = PromptChunk()

    for tokens, (text, weight) in zip(tokenized, parsed):
        if text == 'BREAK' and weight == -1:
            next_chunk()
            continue

        position = 0
        while position < len(tokens):
            token = tokens[position]

            if token == comma_token:
                last_comma = len(chunk.tokens)

            elif comma_padding_backtrack != 0 and len(chunk.tokens) == chunk_length and last_comma != -1 and len(chunk.tokens) - last_comma <= comma_padding_backtrack:
                break_location = last_comma + 1

                reloc_tokens = chunk.tokens[break_location:]
                reloc_mults = chunk.multipliers[break_location:]

                chunk.tokens = chunk.tokens[:break_location]
                chunk.multipliers = chunk.multipliers[:break_location]

                next_chunk()
                chunk.tokens = reloc_tokens
                chunk.multipliers = reloc_mults

            if len(chunk.tokens) == chunk_length:
                next_chunk()

            chunk.tokens.append(token)
            chunk.multipliers.append(weight)
            position += 1

    if chunk.tokens or not chunks:
        next_chunk(is_last=True)

    return chunks, token_count


def pad_after_eos(tokens, id_end, id_pad):
    """process_tokens: SD2's pad id after the first end token."""
    tokens = list(tokens)
    if id_end != id_pad:
        index = tokens.index(id_end)
        tokens[index + 1:] = [id_pad] * (len(tokens) - index - 1)
    return tokens


def main():
    request_path, out_path = sys.argv[1], sys.argv[2]
    with open(request_path, encoding="utf-8") as f:
        request = json.load(f)
    tokenizer = SimpleTokenizer()
    id_end = tokenizer.encoder["<end_of_text>"]
    out = {"loras": [], "attention": [], "chunks": [], "open_clip": []}
    for prompt in request["prompts"]:
        text, loras = parse_prompt(prompt)
        out["loras"].append([text, loras])
        out["attention"].append(parse_prompt_attention(text))
        chunks, _ = tokenize_line(tokenizer, text)
        out["chunks"].append({
            "ids": {str(pad): [pad_after_eos(c.tokens, id_end, pad) for c in chunks] for pad in (id_end, 0)},
            "weights": [c.multipliers for c in chunks],
        })
    for text in request["plain"]:
        out["open_clip"].append(open_clip.tokenize([text])[0].tolist())
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
