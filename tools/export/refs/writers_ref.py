"""Reference outputs of openai-whisper's writers (whisper/utils.py), for tests/writers.rs.

Usage: python writers_ref.py REQUEST.json OUT_DIR

REQUEST holds {"cases": [{"name", "result_path", "options", "audio_path"}], "names": [...]};
each result_path is a transcript JSON file (its key order is kept, as openai's dicts keep it).
Each case is written with get_writer("all", OUT_DIR/name) as openai's CLI calls it
(writer(result, audio_path, **options)). OUT_DIR/splitext.json holds
os.path.splitext(basename)[0] for each of "names".
"""

import json
import os
import sys

from whisper.utils import get_writer


def main():
    request_path, out_dir = sys.argv[1], sys.argv[2]
    with open(request_path, encoding="utf-8") as f:
        request = json.load(f)
    for case in request["cases"]:
        case_dir = os.path.join(out_dir, case["name"])
        os.makedirs(case_dir, exist_ok=True)
        writer = get_writer("all", case_dir)
        with open(case["result_path"], encoding="utf-8") as f:
            result = json.load(f)
        writer(result, case["audio_path"], **case["options"])
    stems = [os.path.splitext(os.path.basename(n))[0] for n in request["names"]]
    with open(os.path.join(out_dir, "splitext.json"), "w", encoding="utf-8") as f:
        json.dump(stems, f)


if __name__ == "__main__":
    main()
