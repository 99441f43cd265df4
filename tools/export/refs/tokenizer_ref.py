"""Reference outputs of openai-whisper's tokenizer, for tests/whisper_tokenizer.rs.

Usage: python tokenizer_ref.py REQUEST.json OUT.json

REQUEST holds {"texts": [...], "split_texts": [...], "sot_cases": [[language|null, task], ...]}.
OUT holds, per configuration (encoding and num_languages), what openai's Tokenizer gives.
"""

import copy
import json
import os
import sys

import whisper.tokenizer
from whisper.tokenizer import LANGUAGES, TO_LANGUAGE_CODE, get_tokenizer

CONFIGS = [("gpt2", False, 99), ("multilingual", True, 99), ("multilingual", True, 100)]
SPECIAL_IDS = [
    "eot", "sot", "sot_prev", "sot_lm", "no_speech", "no_timestamps",
    "timestamp_begin", "translate", "transcribe",
]


def reference(multilingual, num_languages, request):
    tok = get_tokenizer(multilingual, num_languages=num_languages)
    enc = tok.encoding
    out = {name: getattr(tok, name) for name in SPECIAL_IDS}
    out["n_vocab"] = enc.n_vocab
    out["special_tokens"] = dict(sorted(tok.special_tokens.items(), key=lambda kv: kv[1]))
    # openai returns these in set-iteration order; compare them sorted by id.
    pairs = sorted(zip(tok.all_language_tokens, tok.all_language_codes))
    out["all_language_tokens"] = [t for t, _ in pairs]
    out["all_language_codes"] = [c for _, c in pairs]
    out["language_tokens"] = {code: tok.special_tokens.get(f"<|{code}|>") for code in LANGUAGES}
    out["non_speech_tokens"] = list(tok.non_speech_tokens)

    cases = []
    for text in request["texts"]:
        ids = enc.encode_ordinary(text)
        cases.append({
            "text": text,
            "ids": ids,
            "decode": tok.decode(ids),
            # Every prefix: cuts inside multi-byte characters test U+FFFD replacement.
            "prefix_decodes": [tok.decode(ids[:k]) for k in range(1, len(ids))],
        })
    out["cases"] = cases

    # Special and timestamp tokens mixed into text.
    ts = tok.timestamp_begin
    hello = enc.encode_ordinary(" Hello world.")
    mixed = [tok.sot, ts, *hello, ts + 57, tok.eot, ts + 1500, tok.no_timestamps, *hello]
    out["mixed"] = {
        "ids": mixed,
        "decode": tok.decode(mixed),
        "decode_with_timestamps": tok.decode_with_timestamps(mixed),
    }

    sots = []
    for language, task in request["sot_cases"]:
        try:
            seq = list(get_tokenizer(
                multilingual, num_languages=num_languages, language=language, task=task
            ).sot_sequence)
        except (ValueError, KeyError):
            seq = None
        sots.append({"language": language, "task": task, "sot_sequence": seq})
    out["sot_sequences"] = sots

    splits = []
    for text in request["split_texts"]:
        ids = enc.encode_ordinary(text)
        for with_ts in (False, True):
            tokens = [ts, *ids, ts + 100, tok.eot] if with_ts else ids
            for language in (["en", "ja", "zh", "yue"] if multilingual else [None]):
                # split_to_word_tokens only reads .language (yue is not among 99 languages).
                t = copy.copy(tok)
                t.language = language
                words, word_tokens = t.split_to_word_tokens(tokens)
                splits.append({"tokens": tokens, "language": language,
                               "words": words, "word_tokens": word_tokens})
    out["splits"] = splits
    return out


def main():
    request_path, out_path = sys.argv[1], sys.argv[2]
    with open(request_path, encoding="utf-8") as f:
        request = json.load(f)
    result = {
        "assets": os.path.join(os.path.dirname(whisper.tokenizer.__file__), "assets"),
        "languages": list(LANGUAGES.items()),
        "to_language_code": TO_LANGUAGE_CODE,
        "configs": [
            {"name": name, "multilingual": ml, "num_languages": n,
             **reference(ml, n, request)}
            for name, ml, n in CONFIGS
        ],
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
