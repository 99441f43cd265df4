//! Hostile text inputs, generated here: prompt files, manifests and PNG metadata that must be
//! refused with a one-line error naming the file and the problem (never a panic, never an
//! allocation sized by the file's claims).
use atelier::engine::diffusion::prompt::PromptFile;
use atelier::engine::store::{self, InstalledModel};
use atelier::output::png_meta::{read_parameters, read_parameters_counted};
use std::io::Write;
use std::path::{Path, PathBuf};

fn one_line(err: &str) {
    assert!(!err.contains('\n'), "not one line: {err}");
}

const PARAMS: &str = "Sampler: Euler a, CFG scale: 7, Seed: 1";

// ---------------------------------------------------------------- prompt files

#[test]
fn hostile_prompt_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let deep = format!("{}cat{}", "(".repeat(40), ")".repeat(40));
    let long_prompt = "cat ".repeat(9000);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("huge_size.txt", format!("a cat\nSteps: 20, {PARAMS}, Size: 999999x999999").into_bytes(), "Size: 999999x999999` is out of range, the limit is 1 to 8192"),
        ("huge_steps.txt", format!("a cat\nSteps: 10000000, {PARAMS}, Size: 512x512").into_bytes(), "Steps: 10000000` is out of range, the limit is 1 to 1000"),
        ("zero_steps.txt", format!("a cat\nSteps: 0, {PARAMS}, Size: 512x512").into_bytes(), "Steps: 0` is out of range"),
        ("odd_size.txt", format!("a cat\nSteps: 20, {PARAMS}, Size: 513x512").into_bytes(), "multiples of 8"),
        ("huge_batch.txt", format!("a cat\nSteps: 20, {PARAMS}, Size: 512x512, Batch size: 100000").into_bytes(), "Batch size: 100000` is out of range, the limit is 1 to 64"),
        ("nan_cfg.txt", b"a cat\nSteps: 20, Sampler: Euler, CFG scale: NaN, Seed: 1, Size: 512x512".to_vec(), "CFG scale: NaN` is out of range"),
        ("huge_cfg.txt", b"a cat\nSteps: 20, Sampler: Euler, CFG scale: 1e300, Seed: 1, Size: 512x512".to_vec(), "CFG scale: 1e300` is out of range, the limit is 0 to 100"),
        ("big_file.txt", vec![b'a'; 300 * 1024], "larger than the limit of 262144 bytes"),
        ("long_prompt.txt", long_prompt.into_bytes(), "characters long, the limit is 32768"),
        ("deep.txt", deep.into_bytes(), "nests brackets 40 deep, the limit is 32"),
        ("lora_escape.txt", b"a cat <lora:../../etc/x:1>".to_vec(), "<lora:../../etc/x:"),
        ("lora_abs.txt", b"a cat\nNegative prompt: <lora:/etc/passwd:1>\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512".to_vec(), "in the negative prompt"),
        ("binary.txt", vec![0xff, 0xfe, 0x00, 0x80], "not UTF-8"),
        ("empty.txt", b"  \n\t ".to_vec(), "the prompt file is empty"),
    ];
    for (name, bytes, want) in &cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = PromptFile::read(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&path.display().to_string()),
            "{name}: {err}"
        );
        assert!(err.contains(want), "{name}: {err}");
        one_line(&err);
    }
    // Good files still read: a plain prompt and an infotext.
    let plain = dir.path().join("plain.txt");
    std::fs::write(&plain, "a cat, (fluffy:1.2) <lora:ink:0.5>").unwrap();
    let p = PromptFile::read(&plain).unwrap();
    assert!(p.params.is_none());
    let info = dir.path().join("info.txt");
    std::fs::write(&info, format!("a cat\nSteps: 20, {PARAMS}, Size: 512x768")).unwrap();
    let p = PromptFile::read(&info).unwrap().params.unwrap();
    assert_eq!((p.width, p.height, p.steps), (512, 768, 20));
}

#[test]
fn prompt_loras_resolve_only_inside_the_lora_folder() {
    use atelier::engine::diffusion::inputs::resolve_lora;
    let root = tempfile::tempdir().unwrap();
    let loras = root.path().join("lora");
    std::fs::create_dir(&loras).unwrap();
    let outside = root.path().join("secret.safetensors");
    std::fs::write(&outside, b"x").unwrap();
    std::os::unix::fs::symlink(&outside, loras.join("link.safetensors")).unwrap();
    std::fs::write(loras.join("ink.safetensors"), b"x").unwrap();
    for name in ["../secret", "/etc/passwd", "..", "a/b"] {
        let err = resolve_lora(name, &loras).unwrap_err();
        assert!(err.contains(&format!("LoRA '{name}'")), "{err}");
        one_line(&err);
    }
    let err = resolve_lora("link", &loras).unwrap_err();
    assert!(err.contains("outside the LoRA folder"), "{err}");
    assert_eq!(
        resolve_lora("ink", &loras).unwrap(),
        loras.join("ink.safetensors")
    );
}

// ---------------------------------------------------------------- manifests

const MANIFEST_HEAD: &str = "format = 1\nfamily = \"whisper\"\nname = \"w\"\nvariant = \"tiny\"\ndevice = \"cpu\"\ndtype = \"float32\"\n";

fn model_dir(root: &Path, name: &str, body: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("manifest.toml"), format!("{MANIFEST_HEAD}{body}")).unwrap();
    dir
}

#[test]
fn hostile_manifests_are_refused_by_file_and_key() {
    let root = tempfile::tempdir().unwrap();
    let files = "[files.m]\npath = \"m.ts\"\nsha256 = \"00\"\nkind = \"torchscript\"\n";
    let cases = [
        (
            "ctx",
            format!("{files}[dims]\nn_audio_ctx = 100000000\n"),
            "dims.n_audio_ctx = 100000000 is out of range, the limit is 1 to 3000",
        ),
        (
            "ctx0",
            format!("{files}[dims]\nn_audio_ctx = 0\n"),
            "dims.n_audio_ctx = 0 is out of range",
        ),
        (
            "mels",
            format!("{files}[dims]\nn_mels = 9999999\n"),
            "dims.n_mels = 9999999",
        ),
        (
            "vocab",
            format!("{files}[dims]\nn_vocab = 99999999999\n"),
            "dims.n_vocab = 99999999999",
        ),
        (
            "negative",
            format!("{files}[dims]\nn_text_state = -4\n"),
            "dims.n_text_state = -4",
        ),
        (
            "image",
            format!("{files}[dims]\nimage-size = 1000000\n"),
            "dims.image-size = 1000000",
        ),
        (
            "other",
            format!("{files}[dims]\ncross_attention_dim = 9223372036854775807\n"),
            "dims.cross_attention_dim",
        ),
        (
            "sample",
            format!("{files}[dims]\nvae_scale_factor = 8\n[config]\nsample_size = 100000\n"),
            "config.sample_size = 100000",
        ),
        (
            "escape",
            "[files.m]\npath = \"../../etc/passwd\"\nsha256 = \"00\"\nkind = \"asset\"\n"
                .to_string(),
            "path must stay inside the model folder",
        ),
        ("family", "".to_string(), "cannot read the manifest"),
    ];
    for (name, body, want) in &cases {
        let dir = model_dir(root.path(), name, body);
        let err = InstalledModel::open(&dir).unwrap_err().to_string();
        let manifest = dir.join("manifest.toml").display().to_string();
        assert!(err.starts_with(&manifest), "{name}: {err}");
        assert!(err.contains(want), "{name}: {err}");
        one_line(&err);
    }
}

#[test]
fn model_names_are_single_components() {
    let root = tempfile::tempdir().unwrap();
    for name in ["../models", "/etc", "a/b/c", "./x", "../x/y", "..", ".", ""] {
        let err = store::find(root.path(), name, "whisper")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&format!("model name '{name}'")), "{err}");
        one_line(&err);
    }
    // `org/name` is a hub repo name (#13): a key matched against the manifests' recorded
    // repos, never a path into the store.
    let err = store::find(root.path(), "a/b", "whisper")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("model 'a/b' is not installed"), "{err}");
}

#[test]
fn torchscript_outside_the_folder_or_with_a_wrong_hash_is_not_loaded() {
    let root = tempfile::tempdir().unwrap();
    let outside = root.path().join("evil.ts");
    std::fs::write(&outside, b"not torchscript").unwrap();
    let sha = store::sha256_file(&outside).unwrap();
    let body = format!("[files.m]\npath = \"m.ts\"\nsha256 = \"{sha}\"\nkind = \"torchscript\"\n");
    let dir = model_dir(root.path(), "linked", &body);
    std::os::unix::fs::symlink(&outside, dir.join("m.ts")).unwrap();
    let model = InstalledModel::open(&dir).unwrap();
    let err = model
        .load_module("m", tch::Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside the model folder"), "{err}");

    let dir = model_dir(root.path(), "wrong", &body.replace(&sha, &"0".repeat(64)));
    std::fs::write(dir.join("m.ts"), b"not torchscript").unwrap();
    let model = InstalledModel::open(&dir).unwrap();
    let err = model
        .load_module("m", tch::Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sha256 mismatch"), "{err}");
    one_line(&err);
}

#[test]
fn a_verified_file_is_hashed_once_per_version() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.bin");
    std::fs::write(&f, b"hello").unwrap();
    let sha = store::sha256_file(&f).unwrap();
    let before = store::verify_hash_count();
    store::verified(&f, &sha).unwrap();
    store::verified(&f, &sha).unwrap();
    assert_eq!(store::verify_hash_count() - before, 1);
    // A rewritten file (another size) is hashed again, and its new hash checked.
    std::fs::write(&f, b"hello, world").unwrap();
    assert!(store::verified(&f, &sha).is_err());
    assert_eq!(store::verify_hash_count() - before, 2);
}

// ---------------------------------------------------------------- PNG metadata

fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut h = crc32fast::Hasher::new();
    h.update(kind);
    h.update(data);
    out.extend_from_slice(&h.finalize().to_be_bytes());
    out
}

fn png(chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let ihdr = [0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0];
    out.extend(chunk(b"IHDR", &ihdr));
    for c in chunks {
        out.extend_from_slice(c);
    }
    out.extend(chunk(b"IEND", &[]));
    out
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn hostile_png_metadata_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = zlib(&vec![b'a'; 64 << 20]);
    let mut ztxt_bomb = b"parameters\0\0".to_vec();
    ztxt_bomb.extend_from_slice(&bomb);
    let mut itxt_bomb = b"parameters\0\x01\0\0\0".to_vec();
    itxt_bomb.extend_from_slice(&bomb);
    let mut big = b"parameters\0".to_vec();
    big.extend(vec![b'a'; 2 << 20]);
    let mut bad_crc = chunk(b"tEXt", b"parameters\0a cat");
    let n = bad_crc.len();
    bad_crc[n - 1] ^= 1;
    let mut lying = (0x7fff_fff0u32).to_be_bytes().to_vec();
    lying.extend_from_slice(b"tEXt");
    let many: Vec<Vec<u8>> = (0..100_001).map(|_| chunk(b"tIME", &[0; 7])).collect();
    let mut truncated = png(&[chunk(b"tEXt", b"other\0a cat")]);
    truncated.truncate(truncated.len() - 12);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "ztxt_bomb.png",
            png(&[chunk(b"zTXt", &ztxt_bomb)]),
            "inflates past the limit of 1048576 bytes",
        ),
        (
            "itxt_bomb.png",
            png(&[chunk(b"iTXt", &itxt_bomb)]),
            "inflates past the limit of 1048576 bytes",
        ),
        (
            "big_text.png",
            png(&[chunk(b"tEXt", &big)]),
            "the limit is 1048576",
        ),
        ("bad_crc.png", png(&[bad_crc]), "fails its CRC"),
        (
            "lying_length.png",
            png(&[lying]),
            "claims 2147483632 bytes, past the end of the file",
        ),
        ("many_chunks.png", png(&many), "more than 100000 chunks"),
        ("truncated.png", truncated, "no IEND"),
        ("not_png.png", b"GIF89a....".to_vec(), "no PNG signature"),
        (
            "bad_zlib.png",
            png(&[chunk(b"zTXt", b"parameters\0\0not zlib")]),
            "does not inflate",
        ),
        (
            "bad_itxt.png",
            png(&[chunk(b"iTXt", b"parameters\0\x01\0")]),
            "malformed parameters chunk",
        ),
    ];
    for (name, bytes, want) in &cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = read_parameters(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&path.display().to_string()),
            "{name}: {err}"
        );
        assert!(err.contains(want), "{name}: {err}");
        one_line(&err);
    }
    // The parameters chunk after 1000 other chunks and after the image data is still found,
    // and a PNG without one is None.
    let mut chunks: Vec<Vec<u8>> = (0..1000).map(|_| chunk(b"tEXt", b"other\0x")).collect();
    chunks.push(chunk(b"IDAT", &zlib(&[0, 0, 0, 0])));
    chunks.push(chunk(
        b"zTXt",
        &[b"parameters\0\0".as_slice(), &zlib(b"a cat")].concat(),
    ));
    let good = dir.path().join("good.png");
    std::fs::write(&good, png(&chunks)).unwrap();
    let (text, walked) = read_parameters_counted(&good).unwrap();
    assert_eq!(text.as_deref(), Some("a cat"));
    assert_eq!(walked, 1003);
    let none = dir.path().join("none.png");
    std::fs::write(&none, png(&[])).unwrap();
    assert_eq!(read_parameters(&none).unwrap(), None);
}
