//! A1111 infotext and PNG `parameters` chunk, checked against a port of A1111's own parser
//! (tools/export/refs/sd_infotext_ref.py) and against PIL. Exact string comparisons: both sides
//! are text, so there is no tolerance.
mod common;

use atelier::engine::diffusion::infotext::{GenerationParams, InfotextError};
use atelier::output::png_meta::{read_parameters, write_png_with_parameters};
use serde_json::{json, Value};
use std::path::Path;

/// Real-looking A1111 infotexts, each exactly as A1111 writes it (so a round trip is lossless).
const A1111_SAMPLES: &[&str] = &[
    "girl with an artist's beret, determined, blue eyes, desert scene, computer monitors, heavy makeup, by Alphonse Mucha and Charlie Bowater, ((eyeshadow)), (coquettish), detailed, intricate\nNegative prompt: ugly, fat, obese, chubby, (((deformed))), [blurry], bad anatomy, disfigured, poorly drawn face, mutation, mutated, (extra_limb), (ugly), (poorly drawn hands), messy drawing\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b",
    "masterpiece, best quality, 1girl, <lora:add_detail:0.6>, <lora:epi_noiseoffset2:1>, (detailed eyes:1.2), [smile]\nNegative prompt: (worst quality, low quality:1.4), EasyNegative\nSteps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3412207871, Size: 512x768, Model hash: 7f96a1a9ca, Model: anything-v5-PrtRE, Denoising strength: 0.45, Clip skip: 2, ENSD: 31337, Hires upscale: 2, Hires steps: 15, Hires upscaler: R-ESRGAN 4x+ Anime6B, Lora hashes: \"add_detail: 7c6bad76eb54, epi_noiseoffset2: d1131f7207d6\", TI hashes: \"EasyNegative: c74b4e810b03\", Version: v1.10.1",
    "a castle on a hill\nat sunset, 夕焼け, ✨ золотой час\n\nNegative prompt: lowres\nbad hands, text\nSteps: 30, Sampler: Euler, Schedule type: Automatic, CFG scale: 7.5, Seed: 42, Size: 1024x1024, Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Variation seed: 123, Variation seed strength: 0.3, RNG: CPU, Version: v1.9.4",
    "portrait photo\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model: \"my, model: v2\", Style: \"say \\\"hi\\\": now\", ADetailer prompt: \"face, smile\", ADetailer model: face_yolov8n.pt, Seed resize from: 256x256",
    "a dog\nSteps: 50, Sampler: DDIM, CFG scale: 11, Seed: 0, Size: 768x512, Denoising strength: 0.75, Mask blur: 4, Conditional mask weight: 1.0",
];

/// A1111 output that our writer does not reproduce byte for byte but must parse like A1111.
const PARSE_ONLY: &[&str] = &[
    // An empty value (A1111 skips it), a repeated key (the later value wins, first position),
    // a bad JSON quote kept raw, CRLF line ends and surrounding blank lines.
    "\n  cat\r\nNegative prompt:   dog  \r\nSteps: 10, Sampler: LMS, Empty: , CFG scale: 7, Seed: 5, Size: 64x32, Steps: 12, Odd: \"a\\qb\", Model hash: abc\n\n",
];

fn ref_run(request: Value) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let req = dir.path().join("req.json");
    let out = dir.path().join("out.json");
    std::fs::write(&req, request.to_string()).unwrap();
    common::run_python(
        "tools/export/refs/sd_infotext_ref.py",
        &[req.as_os_str(), out.as_os_str()],
    );
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

fn a1111_parse(texts: &[String]) -> Vec<Vec<(String, String)>> {
    let out = ref_run(json!({ "parse": texts }));
    out["parse"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d.as_array()
                .unwrap()
                .iter()
                .map(|kv| {
                    (
                        kv[0].as_str().unwrap().to_string(),
                        kv[1].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .collect()
}

/// Our parse in the shape of A1111's dict: Prompt, Negative prompt, then the pairs with
/// `WxH` values split into `-1`/`-2` keys as A1111's `re_imagesize` does.
fn as_a1111_dict(p: &GenerationParams) -> Vec<(String, String)> {
    let size = regex::Regex::new(r"^(\d+)x(\d+)$").unwrap();
    let mut d = vec![
        ("Prompt".to_string(), p.prompt.clone()),
        ("Negative prompt".to_string(), p.negative_prompt.clone()),
    ];
    for (k, v) in p.pairs() {
        match size.captures(&v) {
            Some(c) => {
                d.push((format!("{k}-1"), c[1].to_string()));
                d.push((format!("{k}-2"), c[2].to_string()));
            }
            None => d.push((k, v)),
        }
    }
    d
}

#[test]
fn a1111_strings_parse_like_a1111_and_round_trip() {
    let texts: Vec<String> = A1111_SAMPLES
        .iter()
        .chain(PARSE_ONLY)
        .map(|s| s.to_string())
        .collect();
    let want = a1111_parse(&texts);
    for (text, want) in texts.iter().zip(&want) {
        let ours = GenerationParams::parse(text).unwrap();
        assert_eq!(&as_a1111_dict(&ours), want, "{text}");
    }
    for text in A1111_SAMPLES {
        let ours = GenerationParams::parse(text).unwrap();
        assert_eq!(&ours.to_infotext(), text);
    }
    // Typed fields of the LoRA sample.
    let p = GenerationParams::parse(A1111_SAMPLES[1]).unwrap();
    assert_eq!(p.steps, 28);
    assert_eq!(p.sampler, "DPM++ 2M");
    assert_eq!(p.schedule_type.as_deref(), Some("Karras"));
    assert_eq!(p.cfg_scale, 6.5);
    assert_eq!(p.seed, 3412207871);
    assert_eq!((p.width, p.height), (512, 768));
    assert_eq!(p.denoising_strength, Some(0.45));
    assert_eq!(
        p.lora_hashes,
        vec![
            ("add_detail".to_string(), "7c6bad76eb54".to_string()),
            ("epi_noiseoffset2".to_string(), "d1131f7207d6".to_string())
        ]
    );
    assert_eq!(p.version.as_deref(), Some("v1.10.1"));
    assert!(p
        .extra
        .contains(&("Clip skip".to_string(), "2".to_string())));
    let p = GenerationParams::parse(A1111_SAMPLES[2]).unwrap();
    assert_eq!(
        p.prompt,
        "a castle on a hill\nat sunset, 夕焼け, ✨ золотой час\n"
    );
    assert_eq!(p.negative_prompt, "lowres\nbad hands, text");
    assert_eq!(
        (p.variation_seed, p.variation_strength),
        (Some(123), Some(0.3))
    );
    assert_eq!(p.rng.as_deref(), Some("CPU"));
    // Numbers are typed: `7.0` is read as 7 and written back in the shortest form.
    let p =
        GenerationParams::parse("a\nSteps: 1, Sampler: Euler, CFG scale: 7.0, Seed: 1, Size: 8x8")
            .unwrap();
    assert_eq!(p.cfg_scale, 7.0);
    assert!(p
        .to_infotext()
        .ends_with("CFG scale: 7, Seed: 1, Size: 8x8"));
}

fn our_params() -> GenerationParams {
    GenerationParams {
        prompt: "a \"quoted\" cat: (fluffy:1.2), <lora:cat_style:0.8>\nsecond line, 猫".into(),
        negative_prompt: "blurry, lowres".into(),
        steps: 25,
        sampler: "DPM++ 2M".into(),
        schedule_type: Some("Karras".into()),
        cfg_scale: 7.5,
        seed: 4294967294,
        width: 768,
        height: 512,
        model_hash: Some("6ce0161689".into()),
        model: Some("model: v2, final".into()),
        denoising_strength: Some(0.6),
        variation_seed: Some(7),
        variation_strength: Some(0.25),
        rng: Some("CPU".into()),
        lora_hashes: vec![
            ("cat_style".into(), "0123456789ab".into()),
            ("odd, na:me".into(), "ba9876543210".into()),
        ],
        version: Some("atelier 0.1.0".into()),
        extra: vec![
            ("Clip skip".into(), "2".into()),
            ("Note".into(), "say \"hi\"".into()),
            ("Quoted".into(), "\"whole\"".into()),
            ("Lead".into(), " space".into()),
            ("Blank".into(), "".into()),
        ],
        order: vec![],
    }
}

#[test]
fn our_infotext_parses_in_a1111() {
    let text = our_params().to_infotext();
    let got = a1111_parse(std::slice::from_ref(&text)).remove(0);
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    let want = vec![
        s(
            "Prompt",
            "a \"quoted\" cat: (fluffy:1.2), <lora:cat_style:0.8>\nsecond line, 猫",
        ),
        s("Negative prompt", "blurry, lowres"),
        s("Steps", "25"),
        s("Sampler", "DPM++ 2M"),
        s("Schedule type", "Karras"),
        s("CFG scale", "7.5"),
        s("Seed", "4294967294"),
        s("Size-1", "768"),
        s("Size-2", "512"),
        s("Model hash", "6ce0161689"),
        s("Model", "model: v2, final"),
        s("Variation seed", "7"),
        s("Variation seed strength", "0.25"),
        s("Denoising strength", "0.6"),
        s("RNG", "CPU"),
        // A1111 strips `:` and `,` from LoRA names in this list.
        s(
            "Lora hashes",
            "cat_style: 0123456789ab, odd name: ba9876543210",
        ),
        s("Clip skip", "2"),
        s("Note", "say \"hi\""),
        s("Quoted", "\"whole\""),
        s("Lead", " space"),
        s("Blank", ""),
        s("Version", "atelier 0.1.0"),
    ];
    assert_eq!(got, want, "{text}");
    // And our parser reads our text back to the same values.
    let mut back = GenerationParams::parse(&text).unwrap();
    assert_eq!(back.lora_hashes[1].0, "odd name");
    back.lora_hashes[1].0 = "odd, na:me".into();
    back.order.clear();
    assert_eq!(back, our_params());
}

#[test]
fn png_parameters_read_by_pil_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let image = image::RgbImage::from_fn(6, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 60, 7]));
    let latin1 = GenerationParams::parse(A1111_SAMPLES[1])
        .unwrap()
        .to_infotext();
    let unicode = GenerationParams::parse(A1111_SAMPLES[2])
        .unwrap()
        .to_infotext();
    let latin1_extra = format!("{latin1}\ncafé crème");
    let cases = [
        ("latin1.png", latin1.as_str(), "tEXt"),
        ("latin1_accents.png", latin1_extra.as_str(), "tEXt"),
        ("unicode.png", unicode.as_str(), "iTXt"),
    ];
    for (name, text, _) in &cases {
        write_png_with_parameters(&dir.path().join(name), &image, text).unwrap();
    }
    // Atomic write: no temporary file is left behind.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["latin1.png", "latin1_accents.png", "unicode.png"]);

    // PIL writes tEXt (as A1111), zTXt and compressed iTXt; we read them.
    let pil: Vec<(String, &str, &str)> = vec![
        ("pil_text.png".into(), latin1.as_str(), "text"),
        ("pil_ztxt.png".into(), latin1.as_str(), "ztxt"),
        ("pil_itxt.png".into(), unicode.as_str(), "itxt"),
        ("pil_text_unicode.png".into(), unicode.as_str(), "text"),
    ];
    let out = ref_run(json!({
        "read_png": cases.iter().map(|(n, _, _)| dir.path().join(n)).collect::<Vec<_>>(),
        "write_png": pil.iter().map(|(n, t, how)| json!({"path": dir.path().join(n), "text": t, "how": how})).collect::<Vec<_>>(),
    }));
    for ((name, text, chunk), got) in cases.iter().zip(out["read_png"].as_array().unwrap()) {
        assert_eq!(got["parameters"].as_str(), Some(*text), "{name}");
        let chunks: Vec<&str> = got["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert!(chunks.contains(chunk), "{name}: {chunks:?}");
        assert_eq!(got["size"], json!([6, 4]));
        assert_eq!(got["pixel"], json!([0, 0, 7]));
        assert_eq!(
            read_parameters(&dir.path().join(name)).unwrap().as_deref(),
            Some(*text)
        );
    }
    for (name, text, _) in &pil {
        assert_eq!(
            read_parameters(&dir.path().join(name)).unwrap().as_deref(),
            Some(*text),
            "{name}"
        );
    }
}

#[test]
fn png_without_parameters_and_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.png");
    image::RgbImage::new(2, 2).save(&plain).unwrap();
    assert_eq!(read_parameters(&plain).unwrap(), None);
    let bad = dir.path().join("bad.png");
    std::fs::write(&bad, b"not a png").unwrap();
    let err = read_parameters(&bad).unwrap_err().to_string();
    assert!(err.contains("bad.png"), "{err}");
    let err = read_parameters(Path::new("/nonexistent/x.png"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/x.png"), "{err}");
    assert_eq!(
        GenerationParams::parse("a\nSteps: x, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 8x8"),
        Err(InfotextError::Invalid {
            key: "Steps".into(),
            value: "x".into()
        })
    );
}
