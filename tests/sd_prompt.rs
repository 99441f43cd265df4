//! A1111 prompt parsing and chunking against a port of A1111's own code
//! (tools/export/refs/sd_prompt_ref.py) and open_clip's tokenizer.
//! Token ids and texts must match exactly; weights within 1e-12 relative (both sides multiply
//! the same f64s in the same order; the slack only covers JSON float parsing), chunk weights
//! exactly as f32.
mod common;

use atelier::engine::clip::tokenizer::ClipTokenizer;
use atelier::engine::diffusion::prompt::{chunk, extract_loras, parse_attention};
use serde_json::{json, Value};

fn corpus() -> Vec<String> {
    let long_commas = (0..40)
        .map(|i| format!("tag{i} detail"))
        .collect::<Vec<_>>()
        .join(", ");
    let long_words = (0..200)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut v: Vec<String> = [
        "normal text",
        "an (important) word",
        "(unbalanced",
        "\\(literal\\]",
        "(unnecessary)(parens)",
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        "masterpiece, best quality, 1girl, <lora:add_detail:0.6>, <lyco:style_v2:0.8:0.5>, (detailed eyes:1.2), [smile]",
        "<lora:no_weight> cat <hypernet:anime:1> dog",
        "(worst quality, low quality:1.4), EasyNegative, (bad hands: 1.3 )",
        "a cat BREAK a dog BREAK",
        "(a cat BREAK a dog)",
        "BREAK only",
        "[[nested] (mixed:0.7)] end]",
        "escaped \\\\ backslash and \\ lone",
        "colon: not a weight (x:y) (z:-0.5)",
        "夕焼けの城, ✨ золотой час, café",
        "",
        "   ",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(long_commas.clone());
    v.push(format!("({long_commas}:1.1), BREAK {long_words}"));
    v.push(long_words);
    v
}

fn tokenizer() -> ClipTokenizer {
    let bpe = std::process::Command::new(common::python())
        .args(["-c", "import open_clip, os; print(os.path.join(os.path.dirname(open_clip.__file__), 'bpe_simple_vocab_16e6.txt.gz'))"])
        .output()
        .unwrap();
    let bpe = String::from_utf8(bpe.stdout).unwrap();
    ClipTokenizer::load(std::path::Path::new(bpe.trim())).unwrap()
}

fn reference(prompts: &[String], plain: &[String]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let req = dir.path().join("req.json");
    let out = dir.path().join("out.json");
    std::fs::write(
        &req,
        json!({"prompts": prompts, "plain": plain}).to_string(),
    )
    .unwrap();
    common::run_python(
        "tools/export/refs/sd_prompt_ref.py",
        &[req.as_os_str(), out.as_os_str()],
    );
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<Vec<i64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn parse_and_chunk_like_a1111() {
    let prompts = corpus();
    let want = reference(&prompts, &[]);
    let tok = tokenizer();
    let mut multi_chunk = 0;
    for (i, prompt) in prompts.iter().enumerate() {
        // <lora:…> extraction
        let parsed = extract_loras(prompt);
        let (want_text, want_loras) = (&want["loras"][i][0], &want["loras"][i][1]);
        assert_eq!(parsed.text, want_text.as_str().unwrap(), "{prompt}");
        let want_loras: Vec<(String, f64)> = want_loras
            .as_array()
            .unwrap()
            .iter()
            .map(|l| (l[0].as_str().unwrap().to_string(), l[1].as_f64().unwrap()))
            .collect();
        assert_eq!(parsed.loras, want_loras, "{prompt}");

        // attention
        let ours = parse_attention(&parsed.text);
        let theirs = want["attention"][i].as_array().unwrap();
        assert_eq!(ours.len(), theirs.len(), "{prompt}: {ours:?}");
        for ((text, w), t) in ours.iter().zip(theirs) {
            assert_eq!(text, t[0].as_str().unwrap(), "{prompt}");
            let tw = t[1].as_f64().unwrap();
            assert!(
                (w - tw).abs() <= 1e-12 * tw.abs().max(1.0),
                "{prompt}: {w} vs {tw}"
            );
        }

        // chunks, for both pad tokens
        let weights: Vec<Vec<f32>> = want["chunks"][i]["weights"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                c.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect();
        for pad in [49407i64, 0] {
            let enc = chunk(&tok, &parsed.text, pad);
            let got: Vec<Vec<i64>> = enc.ids.iter().map(|c| c.to_vec()).collect();
            assert_eq!(
                got,
                ids(&want["chunks"][i]["ids"][pad.to_string()]),
                "{prompt} (pad {pad})"
            );
            let got_w: Vec<Vec<f32>> = enc.weights.iter().map(|c| c.to_vec()).collect();
            assert_eq!(got_w, weights, "{prompt}");
            if enc.ids.len() > 1 {
                multi_chunk += 1;
            }
        }
    }
    assert!(multi_chunk >= 6, "the corpus must exercise several chunks");
}

#[test]
fn plain_prompts_match_open_clip() {
    let plain: Vec<String> = [
        "a photo of a cat",
        "A Photo Of A DOG, on the beach!",
        "夕焼けの城 café",
        "",
        &(0..75).map(|_| "cat").collect::<Vec<_>>().join(" "),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let want = reference(&[], &plain);
    let want = ids(&want["open_clip"]);
    let tok = tokenizer();
    for (text, want) in plain.iter().zip(want) {
        // open_clip pads with 0 (SD2.1 / SDXL's second tokenizer).
        let enc = chunk(&tok, text, 0);
        assert_eq!(enc.ids.len(), 1, "{text}");
        assert_eq!(enc.ids[0].to_vec(), want, "{text}");
        assert!(enc.weights[0].iter().all(|&w| w == 1.0));
    }
}
