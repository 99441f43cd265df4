"""Reference ids of open_clip.tokenize, for tests/clip_tokenizer.rs.

Usage: python clip_tokenize_ref.py TEXTS.json OUT.json [--full]
OUT: [[77 ids], ...] in the same order; with --full, every BPE id of each text (open_clip's
SimpleTokenizer.encode, no sot/eot, no truncation), as SD's 75-token chunks use them.
"""
import json
import sys

import open_clip

texts = json.load(open(sys.argv[1], encoding="utf-8"))
if "--full" in sys.argv[3:]:
    from open_clip.tokenizer import _tokenizer

    ids = [_tokenizer.encode(t) for t in texts]
else:
    ids = open_clip.tokenize(texts).tolist()
json.dump(ids, open(sys.argv[2], "w"))
