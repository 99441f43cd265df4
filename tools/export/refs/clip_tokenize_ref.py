"""Reference ids of open_clip.tokenize, for tests/clip_tokenizer.rs.

Usage: python clip_tokenize_ref.py TEXTS.json OUT.json   (OUT: [[77 ids], ...] in the same order)
"""
import json
import sys

import open_clip

texts = json.load(open(sys.argv[1], encoding="utf-8"))
ids = open_clip.tokenize(texts).tolist()
json.dump(ids, open(sys.argv[2], "w"))
