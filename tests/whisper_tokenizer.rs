//! Parity of the Whisper tokenizer with openai-whisper's, on both encodings (gpt2 for
//! English-only models, multilingual with 99 and 100 languages). The reference comes from
//! tools/export/refs/tokenizer_ref.py run in the venv during this test; exact equality.
mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use atelier::engine::whisper::tokenizer::{
    to_language_code, Task, Tokenizer, LANGUAGES, LANGUAGE_ALIASES,
};
use serde_json::{json, Value};

const TEXTS: &[&str] = &[
    "Hello, world!",
    " The quick brown fox jumps over the lazy dog.",
    "I'm sure it's what they'd've wanted, isn't it? We'll see; you're right.",
    "Numbers: 0 7 42 3.14159 1,000,000 1234567890123 -17 +3e-5 2024-06-25 12:30pm",
    "Punctuation!!! ??? ... --- (parens) [brackets] {braces} <angle> \"quotes\" 'single' `tick`",
    "  leading and trailing spaces   ",
    "whitespace    runs\t\ttabs\n\nnewlines\r\nwindows\u{a0}nbsp\u{3000}ideographic",
    "\n",
    "   ",
    "emoji 😀🎉👍🏽 👨‍👩‍👧‍👦 🇯🇵 ♪♫ ♪♪♪ ★",
    "Über die Brücke gehen Mädchen und Jungen; Straße, Größe, Äpfel.",
    "Ça va très bien, merci ! L'été dernier, nous étions à Noël… « citation »",
    "我们今天去公园散步，天气非常好。你好，世界！",
    "日本語のテキストです。東京は大きな都市で、カタカナもひらがなもあります。",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "नमस्ते दुनिया, आप कैसे हैं?",
    "안녕하세요 세계, 오늘 날씨가 좋네요.",
    "ภาษาไทยไม่มีช่องว่างระหว่างคำ",
    "Ελληνικά κείμενα και עברית טקסט",
    "combining: e\u{301} a\u{308} n\u{303} zero\u{200b}width",
    "<|endoftext|> is plain text here <|0.00|>",
    "",
];

const SPLIT_TEXTS: &[&str] = &[
    " Hello there, my friend. It's 5 o'clock - time for tea!",
    " And so, my fellow Americans: ask not what your country can do for you.",
    "こんにちは、世界。今日はいい天気ですね！",
    "我们今天去公园散步。",
    // Punctuation runs, newlines and symbols decide where words join.
    "Wait... what?! He said--no, she said (twice).\nOK: yes; 'quoted' \"double\" 100% #1 @home\n\n",
];

fn sot_cases() -> Vec<(Option<&'static str>, Option<&'static str>)> {
    vec![
        (Some("en"), Some("transcribe")),
        (Some("ja"), Some("translate")),
        (Some("German"), Some("transcribe")),
        (Some("Mandarin"), Some("translate")),
        (Some("yue"), Some("transcribe")),
        (Some("haw"), Some("translate")),
        (Some("klingon"), Some("transcribe")),
        (None, None),
        (None, Some("translate")),
    ]
}

struct Reference {
    assets: PathBuf,
    value: Value,
}

fn reference() -> &'static Reference {
    static REF: OnceLock<Reference> = OnceLock::new();
    REF.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let request = dir.path().join("request.json");
        let out = dir.path().join("out.json");
        let cases: Vec<Value> = sot_cases()
            .into_iter()
            .map(|(l, t)| json!([l, t]))
            .collect();
        let body = json!({"texts": TEXTS, "split_texts": SPLIT_TEXTS, "sot_cases": cases});
        std::fs::write(&request, body.to_string()).unwrap();
        common::run_python(
            "tools/export/refs/tokenizer_ref.py",
            &[request.as_os_str(), out.as_os_str()],
        );
        let value: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        let assets = PathBuf::from(value["assets"].as_str().unwrap());
        Reference { assets, value }
    })
}

/// Each reference configuration with our tokenizer for it.
fn configs() -> Vec<(Tokenizer, &'static Value)> {
    let r = reference();
    let configs = r.value["configs"].as_array().unwrap();
    assert_eq!(
        configs.len(),
        3,
        "gpt2/99, multilingual/99, multilingual/100"
    );
    for c in configs {
        assert_eq!(c["cases"].as_array().unwrap().len(), TEXTS.len());
        assert!(c["splits"].as_array().unwrap().len() >= SPLIT_TEXTS.len() * 2);
        assert_eq!(
            c["sot_sequences"].as_array().unwrap().len(),
            sot_cases().len()
        );
    }
    r.value["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let multilingual = c["multilingual"].as_bool().unwrap();
            let n = c["num_languages"].as_u64().unwrap() as usize;
            (Tokenizer::load(&r.assets, multilingual, n).unwrap(), c)
        })
        .collect()
}

fn label(c: &Value) -> String {
    format!("{}/{}", c["name"], c["num_languages"])
}

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn encode_and_decode_match_openai() {
    for (tok, c) in configs() {
        for case in c["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let want = ids(&case["ids"]);
            let got = tok.encode(text);
            assert_eq!(got, want, "{}: encode {text:?}", label(c));
            assert_eq!(tok.decode(&got), case["decode"].as_str().unwrap());
            for (k, prefix) in case["prefix_decodes"]
                .as_array()
                .unwrap()
                .iter()
                .enumerate()
            {
                assert_eq!(
                    tok.decode(&got[..k + 1]),
                    prefix.as_str().unwrap(),
                    "{}: decode of the first {} tokens of {text:?}",
                    label(c),
                    k + 1
                );
            }
        }
        let mixed = &c["mixed"];
        let tokens = ids(&mixed["ids"]);
        assert_eq!(tok.decode(&tokens), mixed["decode"].as_str().unwrap());
        assert_eq!(
            tok.decode_with_timestamps(&tokens),
            mixed["decode_with_timestamps"].as_str().unwrap()
        );
    }
}

#[test]
fn special_token_ids_match_openai() {
    for (tok, c) in configs() {
        let l = label(c);
        let specials = [
            ("eot", tok.eot()),
            ("sot", tok.sot()),
            ("sot_prev", tok.sot_prev()),
            ("sot_lm", tok.sot_lm()),
            ("no_speech", tok.no_speech()),
            ("no_timestamps", tok.no_timestamps()),
            ("timestamp_begin", tok.timestamp_begin()),
            ("translate", tok.translate()),
            ("transcribe", tok.transcribe()),
        ];
        for (name, got) in specials {
            assert_eq!(u64::from(got), c[name].as_u64().unwrap(), "{l}: {name}");
        }
        assert_eq!(
            u64::from(tok.n_vocab()),
            c["n_vocab"].as_u64().unwrap(),
            "{l}"
        );
        let table = c["special_tokens"].as_object().unwrap();
        assert_eq!(table.len(), (tok.n_vocab() - tok.eot()) as usize, "{l}");
        for (text, id) in table {
            assert_eq!(
                tok.special_token(text).map(u64::from),
                id.as_u64(),
                "{l}: {text}"
            );
            assert_eq!(
                tok.decode_with_timestamps(&[id.as_u64().unwrap() as u32]),
                *text
            );
        }
        for (code, id) in c["language_tokens"].as_object().unwrap() {
            assert_eq!(
                tok.language_token(code).map(u64::from),
                id.as_u64(),
                "{l}: {code}"
            );
        }
        assert_eq!(
            tok.all_language_tokens(),
            ids(&c["all_language_tokens"]),
            "{l}"
        );
        let codes: Vec<String> = serde_json::from_value(c["all_language_codes"].clone()).unwrap();
        assert_eq!(tok.all_language_codes(), codes, "{l}");
    }
}

#[test]
fn sot_sequences_match_openai() {
    for (tok, c) in configs() {
        for (case, (language, task)) in c["sot_sequences"]
            .as_array()
            .unwrap()
            .iter()
            .zip(sot_cases())
        {
            let task = match task {
                Some("translate") => Task::Translate,
                _ => Task::Transcribe,
            };
            let want: Option<Vec<u32>> =
                serde_json::from_value(case["sot_sequence"].clone()).unwrap();
            let got = tok.sot_sequence(language, task);
            assert_eq!(
                got.as_ref().ok(),
                want.as_ref(),
                "{}: {language:?} {task:?}: {got:?}",
                label(c)
            );
        }
    }
}

#[test]
fn non_speech_tokens_match_openai() {
    for (tok, c) in configs() {
        assert_eq!(
            tok.non_speech_tokens(),
            ids(&c["non_speech_tokens"]),
            "{}",
            label(c)
        );
    }
}

#[test]
fn word_splits_match_openai() {
    for (tok, c) in configs() {
        for case in c["splits"].as_array().unwrap() {
            let tokens = ids(&case["tokens"]);
            let language = case["language"].as_str();
            let (words, word_tokens) = tok.split_to_word_tokens(&tokens, language);
            let want_words: Vec<String> = serde_json::from_value(case["words"].clone()).unwrap();
            let want_tokens: Vec<Vec<u32>> =
                serde_json::from_value(case["word_tokens"].clone()).unwrap();
            assert_eq!(words, want_words, "{}: {language:?} {tokens:?}", label(c));
            assert_eq!(word_tokens, want_tokens, "{}: {language:?}", label(c));
        }
    }
}

#[test]
fn language_table_matches_openai() {
    let r = &reference().value;
    let want: Vec<(String, String)> = serde_json::from_value(r["languages"].clone()).unwrap();
    let got: Vec<(String, String)> = LANGUAGES
        .iter()
        .map(|(c, n)| (c.to_string(), n.to_string()))
        .collect();
    assert_eq!(got, want);
    let aliases = r["to_language_code"].as_object().unwrap();
    assert_eq!(aliases.len(), LANGUAGES.len() + LANGUAGE_ALIASES.len());
    for (name, code) in aliases {
        assert_eq!(to_language_code(name), code.as_str(), "{name}");
    }
}

#[test]
fn load_takes_a_rank_file_or_a_folder_and_names_missing_files() {
    let assets = &reference().assets;
    let from_file = Tokenizer::load(&assets.join("gpt2.tiktoken"), false, 99).unwrap();
    let from_dir = Tokenizer::load(assets, false, 99).unwrap();
    assert_eq!(
        from_file.encode("Hello world"),
        from_dir.encode("Hello world")
    );
    let dir = tempfile::tempdir().unwrap();
    let err = Tokenizer::load(dir.path(), true, 99).unwrap_err();
    assert!(
        err.to_string().contains(
            &dir.path()
                .join("multilingual.tiktoken")
                .display()
                .to_string()
        ),
        "{err}"
    );
}

/// Arbitrary text, long single words included (tiktoken-rs merges pieces over its size
/// threshold on a heap, so one 32k-letter word is not quadratic): no panic, at most one token
/// per byte, and decoding gives the text back exactly.
#[test]
fn arbitrary_text_round_trips() {
    use proptest::prelude::*;
    let configs = configs();
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 96,
        ..Default::default()
    });
    let text = proptest::collection::vec(
        prop_oneof![
            "[a-zA-Z]{1,32}",
            "[a-z]{512,4096}",
            "[0-9 !?.,'\\n]{1,16}",
            any::<String>(),
            Just("<|endoftext|>".to_string()),
            Just("<|0.00|>".to_string()),
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat());
    runner
        .run(&text, |text| {
            for (tok, c) in &configs {
                let ids = tok.encode(&text);
                prop_assert!(ids.len() <= text.len(), "{}: {} ids", label(c), ids.len());
                prop_assert_eq!(tok.decode(&ids), text.clone());
            }
            Ok(())
        })
        .unwrap();
    let word = "ab".repeat(16 * 1024);
    for (tok, c) in &configs {
        let ids = tok.encode(&word);
        assert!(ids.len() <= word.len() / 2, "{}: {}", label(c), ids.len());
        assert_eq!(tok.decode(&ids), word);
    }
}
