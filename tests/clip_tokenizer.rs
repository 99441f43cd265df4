//! Tokenizer parity with `open_clip.tokenize` (ids must be identical).
mod common;

use atelier::engine::clip::ClipTokenizer;

fn corpus() -> Vec<String> {
    let long = "a photo of a very large and extremely detailed cathedral at sunset ".repeat(12);
    let mut texts: Vec<String> = [
        "a photo of a cat.",
        "A Photo Of A DOG!!",
        "",
        "   leading and trailing   ",
        "tabs\tand\nnew\r\nlines\u{2028}and\u{a0}nbsp\u{3000}ideographic",
        "it's what they've said: we'll, I'd, you're, I'm",
        "numbers 1234567 and 3.14159, 2nd 10th",
        "café naïve résumé façade Ångström",
        "日本語のテキスト、中文文本，한국어 텍스트",
        "emoji 🐱🐶🎉 and ZWJ 👩‍👩‍👧",
        "Ελληνικά ΣΟΦΙΑ and Русский текст",
        "“curly quotes” and ‘single’ ones",
        "ﬁne ﬂour, ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ！",
        "&amp; &lt;b&gt;bold&lt;/b&gt; &quot;quoted&quot; &#39;x&#39; &#x41;",
        "<start_of_text> special <end_of_text> tokens",
        "punctuation!!! ??? ... --- *** ### @@@",
        "mixed123abc 4x4 a1b2c3",
        "control\u{1}chars\u{7f}here\u{feff}",
        "hyphen-ated under_score slash/path back\\slash",
        "supercalifragilisticexpialidocious antidisestablishmentarianism",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        // Mojibake: UTF-8 read as Windows-1252, once and twice; mixed with correct text.
        "cafÃ© au lait, Ã¼ber, naÃ¯ve rÃ©sumÃ©",
        "donâ€™t stop â€œquotedâ€\u{9d} text â€” dash",
        "Â£5 and Â©2020",
        "the Ã¢â‚¬Å“double mojibakeÃ¢â‚¬Â\u{9d}",
        "ðŸ˜€ emoji mojibake",
        "Ð¿Ñ€Ð¸Ð²ÐµÑ‚ Ð¼Ð¸Ñ€",
        "naïve cafÃ© mixed with correct ï",
        "É» Ë† legit-looking pairs",
        // C1 controls read as Windows-1252; terminal escapes; decomposed accents (NFC).
        "c1 \u{85} \u{96} \u{93}quoted\u{94} controls",
        "\u{1b}[31mred terminal\u{1b}[0m text",
        "cafe\u{301} decomposed e\u{308}",
        // HTML entities: HTML5 names, no semicolon, repeated escaping, numeric edge cases,
        // all-caps names, and a `<` (ftfy then leaves entities to html.unescape).
        "&eacute;t&eacute; &hellip; &mdash; &euro; &checkmark; &Jscr;",
        "&nbsp;x&copy y&amp z &notit; &times4",
        "&amp;amp;amp;amp; triple",
        "&#128; &#x80; &#0; &#xD800; &#1114112; &#39;&#34;&#x27; &#0065; &#x; &#;",
        "P&EACUTE;REZ BUNDESSTRA&SZLIG;E &NTILDE; &nTILDE; &AMP; &LT;",
        "<b>&amp;lt;tag&amp;gt;</b> &eacute;",
        "first line &eacute;\nsecond <i> &amp;amp;",
        // Ligatures (ſt stays), width forms, quotes.
        "ﬅ ﬆ ǆ ŉ ｶﾀｶﾅ ＄１００ ｟ʼquoteʼ",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    texts.push(long);
    texts.push("word ".repeat(76));
    texts.push("word ".repeat(75));
    texts.push("x".repeat(300));
    texts
}

#[test]
fn ids_match_open_clip() {
    let dir = tempfile::tempdir().unwrap();
    let texts = corpus();
    let req = dir.path().join("texts.json");
    let out = dir.path().join("ids.json");
    std::fs::write(&req, serde_json::to_string(&texts).unwrap()).unwrap();
    common::run_python(
        "tools/export/refs/clip_tokenize_ref.py",
        &[req.as_os_str(), out.as_os_str()],
    );
    let expected: Vec<Vec<i64>> =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let bpe = std::process::Command::new(common::python())
        .args(["-c", "import open_clip, os; print(os.path.join(os.path.dirname(open_clip.__file__), 'bpe_simple_vocab_16e6.txt.gz'))"])
        .output()
        .unwrap();
    let bpe = String::from_utf8(bpe.stdout).unwrap();
    let tok = ClipTokenizer::load(std::path::Path::new(bpe.trim())).unwrap();
    let mut bad = Vec::new();
    for (text, want) in texts.iter().zip(&expected) {
        let got = tok.tokenize(text).to_vec();
        if &got != want {
            bad.push(format!(
                "{text:?}\n  ours:     {got:?}\n  open_clip: {want:?}"
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} differ:\n{}",
        bad.len(),
        texts.len(),
        bad.join("\n")
    );
}

fn open_clip_tokenizer() -> ClipTokenizer {
    let bpe = std::process::Command::new(common::python())
        .args(["-c", "import open_clip, os; print(os.path.join(os.path.dirname(open_clip.__file__), 'bpe_simple_vocab_16e6.txt.gz'))"])
        .output()
        .unwrap();
    let bpe = String::from_utf8(bpe.stdout).unwrap();
    ClipTokenizer::load(std::path::Path::new(bpe.trim())).unwrap()
}

/// Long single words (a prompt file can hold one word of 32k letters): every id of the
/// untruncated encoding, as SD's 75-token chunks use them, equals open_clip's own BPE.
#[test]
fn long_words_match_open_clip_in_full() {
    // A small LCG, so the words are the same on every run and on both sides.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut letters = |n: usize, alphabet: &[u8]| -> String {
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                alphabet[(state >> 33) as usize % alphabet.len()] as char
            })
            .collect()
    };
    let texts = vec![
        "x".repeat(3000),
        "ab".repeat(1500),
        letters(2000, b"abcdefghijklmnopqrstuvwxyz"),
        letters(2000, b"etaoinshr"),
        letters(500, "éàüß".as_bytes())
            .chars()
            .filter(|c| c.is_alphabetic())
            .collect(),
        format!("{} {}", letters(800, b"aeiou"), letters(800, b"qwrtpsdfg")),
        "lorem ipsum dolor sit amet ".repeat(40),
    ];
    let dir = tempfile::tempdir().unwrap();
    let req = dir.path().join("texts.json");
    let out = dir.path().join("ids.json");
    std::fs::write(&req, serde_json::to_string(&texts).unwrap()).unwrap();
    common::run_python(
        "tools/export/refs/clip_tokenize_ref.py",
        &[
            req.as_os_str(),
            out.as_os_str(),
            std::ffi::OsStr::new("--full"),
        ],
    );
    let expected: Vec<Vec<i64>> =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let tok = open_clip_tokenizer();
    for (text, want) in texts.iter().zip(&expected) {
        let got = tok.encode(text);
        assert_eq!(&got, want, "{}…: ids differ from open_clip's", &text[..20]);
    }
}

/// The BPE's work (heap pops) is linear in the word's length up to the heap's log factor:
/// at most the initial pairs plus two new pairs per merge, on any text, long words included
/// (openai's loop rescans every pair after each merge: quadratic).
#[test]
fn bpe_work_is_linear_in_the_text() {
    use proptest::prelude::*;
    let tok = open_clip_tokenizer();
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 128,
        ..Default::default()
    });
    let text = proptest::collection::vec(
        prop_oneof![
            "[a-z]{1,64}",
            "[a-z]{256,4096}",
            "[0-9 !?.,]{1,16}",
            any::<String>(),
            Just("<start_of_text>".to_string()),
            Just("&amp;".to_string()),
        ],
        0..16,
    )
    .prop_map(|parts| parts.concat());
    runner
        .run(&text, |text| {
            let (ids, work) = tok.encode_counted(&text, true);
            // Cleaning never lengthens a text by more than its entities expand (×4 bytes per
            // char at most); each byte is one symbol, each pop one symbol pair.
            let symbols = 4 * text.len() + 16;
            prop_assert!(work <= 3 * symbols, "{work} pops for {} bytes", text.len());
            prop_assert!(ids.len() <= symbols);
            Ok(())
        })
        .unwrap();
    // A 32k-letter word (the prompt limit): linear work, where the quadratic loop would do
    // about 10⁹ pair lookups.
    let word = "ab".repeat(16 * 1024);
    let (_, work) = tok.encode_counted(&word, true);
    assert!(work <= 3 * word.len(), "{work}");
}
