//! Preprocessing parity with open_clip's eval transform (PIL + torchvision) on scikit-image's
//! photos: odd sizes, grayscale, RGBA, LA, palette, EXIF-rotated, JPEG.
//!
//! Tolerances: PNG inputs decode to the same pixels in both, and the resize/crop/normalize steps
//! replicate Pillow's integer arithmetic, so they must agree to 1e-6 (f32 rounding only).
//! JPEG inputs are decoded by different libraries (zune-jpeg vs libjpeg-turbo), whose IDCT and
//! chroma upsampling differ by a few levels: we allow 12/255 of the normalized range
//! (≈ 0.18) per value and a mean abs difference below 0.01.
mod common;

use atelier::engine::clip::preprocess::{load_image, PreprocessConfig};
use std::path::PathBuf;

#[test]
fn preprocessing_matches_open_clip() {
    let dir = tempfile::tempdir().unwrap();
    common::run_python(
        "tools/export/refs/clip_preprocess_ref.py",
        &[dir.path().as_os_str()],
    );
    let refs = tch::Tensor::read_safetensors(dir.path().join("ref.safetensors")).unwrap();
    assert!(refs.len() >= 16);
    let cfg = PreprocessConfig::default();
    let mut report = Vec::new();
    for (name, expected) in &refs {
        let path: PathBuf = dir.path().join("images").join(name);
        let ours = load_image(&path, &cfg).unwrap_or_else(|e| panic!("{e}"));
        let ours = tch::Tensor::from_slice(&ours).view([3, 224, 224]);
        assert_eq!(expected.size(), vec![3, 224, 224], "{name}");
        let diff = (&ours - expected).abs();
        let max = diff.max().double_value(&[]);
        let mean = diff.mean(tch::Kind::Double).double_value(&[]);
        let ok = if name.ends_with(".png") {
            max <= 1e-6
        } else {
            max <= 12.0 / 255.0 / 0.26 && mean < 0.01
        };
        report.push((
            ok,
            format!("{name}: max abs diff {max:.3e}, mean {mean:.3e}"),
        ));
    }
    let text: Vec<&str> = report.iter().map(|(_, r)| r.as_str()).collect();
    eprintln!("{}", text.join("\n"));
    assert!(
        report.iter().all(|(ok, _)| *ok),
        "over tolerance:\n{}",
        text.join("\n")
    );
}
