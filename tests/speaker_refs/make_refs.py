"""Writes the reference layouts of a diarized transcript (run: python make_refs.py).

whisperx.json: openai-whisper's result dict (``transcribe()``: text, segments, language; each
segment id, seek, start, end, text, tokens, temperature, avg_logprob, compression_ratio,
no_speech_prob, words; each word word, start, end, probability) after whisperX's
``assign_word_speakers``, which sets ``seg["speaker"]`` and ``word["speaker"]`` on the existing
dicts (so the key comes last), written by ``WriteJSON`` (``json.dump(result, file)``).

talk.rttm: the same speaker turns in NIST RTTM as pyannote.core's ``Annotation.write_rttm`` writes
them: ``SPEAKER {uri} 1 {start:.3f} {duration:.3f} <NA> <NA> {label} <NA> <NA>``.

tests/writers.rs builds the same transcript and compares atelier's writers with these bytes.
"""
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def word(w, start, end, p):
    return {"word": w, "start": start, "end": end, "probability": p}


def segment(i, seek, start, end, text, tokens, words):
    return {"id": i, "seek": seek, "start": start, "end": end, "text": text, "tokens": tokens,
            "temperature": 0.0, "avg_logprob": -0.25, "compression_ratio": 1.1, "no_speech_prob": 0.01,
            "words": words}


segments = [
    segment(0, 0, 0.0, 1.2, " Hello there.", [50364, 2425, 456, 13],
            [word(" Hello", 0.0, 0.6, 0.91), word(" there.", 0.6, 1.2, 0.88)]),
    segment(1, 0, 3.0, 4.46, " Hi, Bob.", [],
            [word(" Hi,", 3.0, 3.5, 0.75), word(" Bob.", 3.62, 4.46, 0.5)]),
    segment(2, 500, 5.2, 5.9, " Bye.", [50364, 7014, 13],
            [word(" Bye.", 5.2, 5.9, 0.99)]),
]
speakers = ["SPEAKER_00", "SPEAKER_01", "SPEAKER_00"]
result = {"text": "".join(s["text"] for s in segments), "segments": segments, "language": "en"}
# assign_word_speakers: the speaker set on each segment and each of its words
for seg, spk in zip(segments, speakers):
    seg["speaker"] = spk
    for w in seg["words"]:
        w["speaker"] = spk
with open(HERE / "whisperx.json", "w", encoding="utf-8") as f:
    json.dump(result, f)

turns = [(0.0, 1.2, "SPEAKER_00"), (3.0, 4.46, "SPEAKER_01"), (5.2, 5.9, "SPEAKER_00")]
with open(HERE / "talk.rttm", "w", encoding="utf-8") as f:
    for start, end, label in turns:
        f.write(f"SPEAKER talk 1 {start:.3f} {end - start:.3f} <NA> <NA> {label} <NA> <NA>\n")
