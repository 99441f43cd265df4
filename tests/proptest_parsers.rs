//! Property tests of the text parsers: no panic on arbitrary input, and work linear in the
//! input, checked by the parsers' own work counters (never by timing).
use atelier::engine::diffusion::infotext::GenerationParams;
use atelier::engine::diffusion::prompt::{
    attention_depth, extract_loras, parse_attention_counted, MAX_ATTENTION_DEPTH,
};
use atelier::output::png_meta::read_parameters_counted;
use proptest::prelude::*;

/// Text built from the characters the prompt and infotext grammars care about.
fn prompt_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("(".to_string()),
            Just(")".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just(":1.2)".to_string()),
            Just("\\(".to_string()),
            Just(" BREAK ".to_string()),
            Just("<lora:x:0.5>".to_string()),
            Just(", ".to_string()),
            Just("\nSteps: 20, Size: 8x8, Seed: 1, CFG scale: 7, Sampler: Euler".to_string()),
            "[a-z]{1,8}",
            any::<String>(),
        ],
        0..64,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn attention_parse_is_linear(text in prompt_text()) {
        let (runs, work) = parse_attention_counted(&text);
        prop_assert!(!runs.is_empty());
        // Each byte yields at most a couple of runs, each multiplied at most once per open
        // bracket it is in (2 × the depth cap), plus its push.
        let bound = (2 * MAX_ATTENTION_DEPTH + 1) * (2 * text.len() + 1);
        prop_assert!(work <= bound, "{work} > {bound}");
        let _ = attention_depth(&text);
        let _ = extract_loras(&text);
    }

    #[test]
    fn infotext_parse_never_panics(text in prompt_text()) {
        if let Ok(p) = GenerationParams::parse(&text) {
            prop_assert!(p.steps >= 1 && p.steps <= 1000);
            prop_assert!(p.width <= 8192 && p.height <= 8192);
        }
    }

    #[test]
    fn png_text_walk_is_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..512), head in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.png");
        let mut data = if head { b"\x89PNG\r\n\x1a\n".to_vec() } else { Vec::new() };
        data.extend(&bytes);
        std::fs::write(&path, &data).unwrap();
        // Every chunk takes at least 12 bytes, so the walk visits at most len/12 + 1.
        if let Ok((_, walked)) = read_parameters_counted(&path) {
            prop_assert!(walked <= data.len() / 12 + 1);
        }
    }
}

#[test]
fn deep_nesting_costs_linear_work() {
    // A1111's own parse is quadratic here (each ')' re-weights every run inside it).
    for n in [1_000usize, 2_000, 4_000] {
        let text = "(a".repeat(n) + &")".repeat(n);
        let (_, work) = parse_attention_counted(&text);
        assert!(work <= (MAX_ATTENTION_DEPTH + 1) * (n + 1), "{n}: {work}");
    }
}
