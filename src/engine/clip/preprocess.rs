//! Image preprocessing identical to open_clip's transform (torchvision on PIL):
//! EXIF orientation, `Resize(size, BICUBIC)` on the shorter side, `CenterCrop(size)`, RGB,
//! `ToTensor`, `Normalize(mean, std)`.
//!
//! Pillow details reproduced: bicubic (a = -0.5) with antialiasing in Pillow's own fixed-point
//! arithmetic (fast_image_resize's `CatmullRom` is the same kernel but rounds differently: up to
//! 7 levels off on scikit-image's photos); RGBA/LA are resized premultiplied and un-premultiplied
//! before the alpha is dropped; palette images are resized with nearest neighbour.
use image::{DynamicImage, ImageDecoder, ImageReader};
use std::io::Cursor;
use std::path::Path;

/// Decoding limits against decompression bombs, checked from the header before the pixels
/// are allocated: a side, the decoder's allocations, and the file itself (read whole).
pub const MAX_SIDE: u32 = 16_384;
pub const MAX_ALLOC: u64 = 256 << 20;
pub const MAX_FILE: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: cannot read: {message}")]
    Read { path: String, message: String },
    #[error("{path}: empty file")]
    Empty { path: String },
    #[error("{path}: not a supported image (jpeg, png, gif, webp, bmp, tiff, …)")]
    Unsupported { path: String },
    #[error("{path}: image too large ({message}; limits: {MAX_SIDE} px a side, {} MiB)", MAX_ALLOC >> 20)]
    TooLarge { path: String, message: String },
    #[error("{path}: corrupt or truncated image: {message}")]
    Corrupt { path: String, message: String },
}

/// What the model needs to know to preprocess: from the manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessConfig {
    pub size: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        PreprocessConfig {
            size: 224,
            mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            std: [0.268_629_54, 0.261_302_6, 0.275_777_1],
        }
    }
}

/// A decoded image, oriented, in the Pillow mode open_clip would resize it in.
pub enum Decoded {
    Rgb(image::RgbImage),
    /// Straight (not premultiplied) alpha, as decoded.
    Rgba(image::RgbaImage),
    /// Palette images: Pillow resizes them with NEAREST.
    Palette(image::RgbImage),
}

fn is_palette(bytes: &[u8]) -> bool {
    let png = bytes.len() > 25 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes[25] == 3;
    png || bytes.starts_with(b"GIF8")
}

/// The decoder fills a truncated scan with grey instead of failing (Pillow refuses such files).
/// Entropy-coded data never holds 0xFFD9, so a complete file has one after its last
/// start-of-scan; a thumbnail's own markers come before that and trailers after it.
fn jpeg_complete(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xff, 0xda]);
    let last_eoi = bytes.windows(2).rposition(|w| w == [0xff, 0xd9]);
    matches!((last_sos, last_eoi), (Some(s), Some(e)) if e > s)
}

/// Reads and decodes `path` with size limits, applying its EXIF orientation.
pub fn decode_file(path: &Path) -> Result<Decoded, ImageError> {
    let name = path.display().to_string();
    let read_err = |e: std::io::Error| ImageError::Read {
        path: name.clone(),
        message: e.to_string(),
    };
    let len = std::fs::metadata(path).map_err(read_err)?.len();
    if len > MAX_FILE {
        return Err(ImageError::TooLarge {
            path: name,
            message: format!("the file is {} MiB", len >> 20),
        });
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    decode_bytes(&bytes, &name)
}

pub fn decode_bytes(bytes: &[u8], name: &str) -> Result<Decoded, ImageError> {
    let path = name.to_string();
    if bytes.is_empty() {
        return Err(ImageError::Empty { path });
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
    if reader.format().is_none() {
        return Err(ImageError::Unsupported { path });
    }
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_complete(bytes) {
        return Err(ImageError::Corrupt {
            path,
            message: "truncated JPEG (the scan has no end-of-image marker)".into(),
        });
    }
    reader.limits(limits);
    let classify = |e: image::ImageError| match e {
        image::ImageError::Limits(l) => ImageError::TooLarge {
            path: path.clone(),
            message: l.to_string(),
        },
        image::ImageError::Unsupported(u) => ImageError::Corrupt {
            path: path.clone(),
            message: u.to_string(),
        },
        other => ImageError::Corrupt {
            path: path.clone(),
            message: other.to_string(),
        },
    };
    let mut decoder = reader.into_decoder().map_err(classify)?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(ImageError::Corrupt {
            path,
            message: format!("the header gives a size of {w}×{h} pixels"),
        });
    }
    let mut img = DynamicImage::from_decoder(decoder).map_err(classify)?;
    img.apply_orientation(orientation);
    let palette = is_palette(bytes);
    // `into_*` keeps the buffer when it already has that layout (no second copy).
    Ok(match img {
        _ if palette => Decoded::Palette(img.into_rgb8()),
        DynamicImage::ImageRgba8(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageRgba16(_)
        | DynamicImage::ImageLumaA16(_)
        | DynamicImage::ImageRgba32F(_) => Decoded::Rgba(img.into_rgba8()),
        _ => Decoded::Rgb(img.into_rgb8()),
    })
}

/// torchvision's `Resize(int)`: the shorter side becomes `size`, the other `int(size * long / short)`.
pub fn resized_size(w: u32, h: u32, size: u32) -> (u32, u32) {
    if w <= h {
        let long = (size as f64 * h as f64 / w as f64) as u32;
        (size, long)
    } else {
        let long = (size as f64 * w as f64 / h as f64) as u32;
        (long, size)
    }
}

/// Python's `round` (half to even) of `x / 2`, as torchvision's center crop computes offsets.
fn crop_offset(extent: u32, size: u32) -> u32 {
    let diff = extent.saturating_sub(size);
    // diff / 2 is either an integer or exactly .5: round half to even.
    let half = diff / 2;
    if diff % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// Pillow's fixed-point precision for 8-bit resampling (Resample.c).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's bicubic kernel (a = -0.5), support 2.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`: per output pixel, the first input
/// index, the tap count, and fixed-point weights (antialiased: the kernel widens when shrinking).
/// Only the outputs in `range` are computed: each output's weights depend on its own index
/// alone, so a window gives the same bytes as the whole row (the crop costs `size`, not the
/// resized length).
fn coefficients(
    in_size: u32,
    out_size: u32,
    range: std::ops::Range<usize>,
) -> (usize, Vec<(usize, usize)>, Vec<i32>) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(range.len());
    let mut kk = vec![0i32; range.len() * ksize];
    let mut w = vec![0f64; ksize];
    for (xx, out_index) in range.enumerate() {
        let center = (out_index as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C casts truncate toward zero before the clamp.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin).min(ksize);
        let mut ww = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(n) {
            *wx = bicubic((x as f64 + xmin as f64 - center + 0.5) * ss);
            ww += *wx;
        }
        for x in 0..n {
            let k = if ww != 0.0 { w[x] / ww } else { w[x] };
            let f = k * (1u32 << PRECISION_BITS) as f64;
            kk[xx * ksize + x] = if k < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
            };
        }
        bounds.push((xmin, n));
    }
    (ksize, bounds, kk)
}

fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The part `cols` × `rows` of Pillow's `Image.resize((nw, nh), BICUBIC)` on 8-bit
/// interleaved pixels: horizontal pass over the rows the vertical pass needs, then the
/// vertical pass, each rounding to 8 bits, as Pillow does, but only for the kept window.
pub fn pillow_bicubic(
    buf: &[u8],
    (w, h, ch): (u32, u32, usize),
    (nw, nh): (u32, u32),
    cols: std::ops::Range<usize>,
    rows: std::ops::Range<usize>,
) -> Vec<u8> {
    let half = 1i32 << (PRECISION_BITS - 1);
    // The input rows the horizontal pass works on: those the vertical taps reach, or the
    // wanted rows themselves when there is no vertical pass.
    let vertical = (nh != h).then(|| coefficients(h, nh, rows.clone()));
    let (row0, n_rows) = match &vertical {
        Some((_, bv, _)) => {
            let first = bv.first().map_or(0, |b| b.0);
            let last = bv.last().map_or(0, |b| b.0 + b.1);
            (first, last - first)
        }
        None => (rows.start, rows.len()),
    };
    // After the horizontal pass: `n_rows` rows of `sw` pixels from input row `row0`.
    let (src, sw) = if nw != w {
        let (kh, bh, ch_k) = coefficients(w, nw, cols.clone());
        let sw = cols.len();
        let mut tmp = vec![0u8; n_rows * sw * ch];
        for y in 0..n_rows {
            let line = &buf[(row0 + y) * w as usize * ch..];
            for (xx, &(xmin, n)) in bh.iter().enumerate() {
                let k = &ch_k[xx * kh..xx * kh + n];
                for c in 0..ch {
                    let mut ss = half;
                    for (x, kx) in k.iter().enumerate() {
                        ss += line[(xmin + x) * ch + c] as i32 * kx;
                    }
                    tmp[(y * sw + xx) * ch + c] = clip8(ss);
                }
            }
        }
        (tmp, sw)
    } else {
        let sw = cols.len();
        (window(buf, w as usize, ch, cols, row0..row0 + n_rows), sw)
    };
    let Some((kv, bv, cv_k)) = vertical else {
        return src;
    };
    let mut out = vec![0u8; bv.len() * sw * ch];
    for (yy, &(ymin, n)) in bv.iter().enumerate() {
        let k = &cv_k[yy * kv..yy * kv + n];
        let ymin = ymin - row0;
        for i in 0..sw * ch {
            let mut ss = half;
            for (y, ky) in k.iter().enumerate() {
                ss += src[(ymin + y) * sw * ch + i] as i32 * ky;
            }
            out[yy * sw * ch + i] = clip8(ss);
        }
    }
    out
}

/// Copies the window `cols` × `rows` out of interleaved pixels `width` wide.
fn window(
    buf: &[u8],
    width: usize,
    ch: usize,
    cols: std::ops::Range<usize>,
    rows: std::ops::Range<usize>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(cols.len() * rows.len() * ch);
    for y in rows {
        out.extend_from_slice(&buf[(y * width + cols.start) * ch..(y * width + cols.end) * ch]);
    }
    out
}

/// The part `cols` × `rows` of Pillow's NEAREST resize (an affine transform sampling pixel
/// centres), RGB.
fn resize_nearest(
    buf: &[u8],
    (w, h): (u32, u32),
    (nw, nh): (u32, u32),
    cols: std::ops::Range<usize>,
    rows: std::ops::Range<usize>,
) -> Vec<u8> {
    let (sx, sy) = (w as f64 / nw as f64, h as f64 / nh as f64);
    let mut out = Vec::with_capacity(cols.len() * rows.len() * 3);
    for y in rows {
        let yin = ((sy * (y as f64 + 0.5)) as u32).min(h - 1);
        // Pillow steps `xo += sx` from `sx / 2`; the same sum, started at column `cols.start`.
        let mut xo = sx * 0.5;
        for _ in 0..cols.start {
            xo += sx;
        }
        for _ in cols.clone() {
            let xin = (xo as u32).min(w - 1);
            let i = ((yin * w + xin) * 3) as usize;
            out.extend_from_slice(&buf[i..i + 3]);
            xo += sx;
        }
    }
    out
}

/// MULDIV255 of Pillow: round(a * b / 255).
fn muldiv255(a: u8, b: u8) -> u8 {
    let t = a as u32 * b as u32 + 128;
    (((t >> 8) + t) >> 8) as u8
}

/// torchvision's centre-crop window of the resized image, as (columns, rows).
fn crop_window(nw: u32, nh: u32, size: u32) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    let (left, top) = (
        crop_offset(nw, size) as usize,
        crop_offset(nh, size) as usize,
    );
    (
        left..left + size.min(nw) as usize,
        top..top + size.min(nh) as usize,
    )
}

/// `Resize(size)` then `CenterCrop(size)` as RGB, the same bytes as Pillow's, computed for the
/// crop window only: `size × size` work and memory however long the resized side would be.
pub fn resize_crop_rgb(img: Decoded, size: u32) -> Vec<u8> {
    match img {
        Decoded::Rgb(rgb) => {
            let (w, h) = rgb.dimensions();
            let (nw, nh) = resized_size(w, h, size);
            let (cols, rows) = crop_window(nw, nh, size);
            pillow_bicubic(rgb.as_raw(), (w, h, 3), (nw, nh), cols, rows)
        }
        Decoded::Palette(rgb) => {
            let (w, h) = rgb.dimensions();
            let (nw, nh) = resized_size(w, h, size);
            let (cols, rows) = crop_window(nw, nh, size);
            if (w, h) == (nw, nh) {
                return window(rgb.as_raw(), w as usize, 3, cols, rows);
            }
            resize_nearest(rgb.as_raw(), (w, h), (nw, nh), cols, rows)
        }
        Decoded::Rgba(rgba) => {
            let (w, h) = rgba.dimensions();
            let (nw, nh) = resized_size(w, h, size);
            let (cols, rows) = crop_window(nw, nh, size);
            let drop_alpha = |p: &[u8]| [p[0], p[1], p[2]];
            if (w, h) == (nw, nh) {
                let win = window(rgba.as_raw(), w as usize, 4, cols, rows);
                return win.chunks_exact(4).flat_map(drop_alpha).collect();
            }
            let mut raw = rgba.into_raw();
            for p in raw.chunks_exact_mut(4) {
                let a = p[3];
                for c in &mut p[..3] {
                    *c = muldiv255(*c, a);
                }
            }
            let out = pillow_bicubic(&raw, (w, h, 4), (nw, nh), cols, rows);
            out.chunks_exact(4)
                .flat_map(|p| {
                    let a = p[3] as u32;
                    if a == 0 || a == 255 {
                        [p[0], p[1], p[2]]
                    } else {
                        let un = |c: u8| ((255 * c as u32) / a).min(255) as u8;
                        [un(p[0]), un(p[1]), un(p[2])]
                    }
                })
                .collect()
        }
    }
}

/// ToTensor + Normalize of the `size × size` crop: CHW f32.
pub fn normalize(rgb: &[u8], cfg: &PreprocessConfig) -> Vec<f32> {
    let plane = (cfg.size * cfg.size) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in rgb.chunks_exact(3).take(plane).enumerate() {
        for c in 0..3 {
            let v = px[c] as f32 / 255.0;
            out[c * plane + i] = (v - cfg.mean[c]) / cfg.std[c];
        }
    }
    out
}

/// The whole reference transform on a decoded image.
pub fn preprocess(img: Decoded, cfg: &PreprocessConfig) -> Result<Vec<f32>, String> {
    Ok(normalize(&resize_crop_rgb(img, cfg.size), cfg))
}

#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{path}: cannot resize: {message}")]
    Resize { path: String, message: String },
}

/// Decode + preprocess one file.
pub fn load_image(path: &Path, cfg: &PreprocessConfig) -> Result<Vec<f32>, PreprocessError> {
    let img = decode_file(path)?;
    preprocess(img, cfg).map_err(|message| PreprocessError::Resize {
        path: path.display().to_string(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_offsets() {
        assert_eq!(resized_size(512, 384, 224), (298, 224));
        assert_eq!(resized_size(100, 301, 224), (224, 674));
        assert_eq!(crop_offset(225, 224), 0); // round(0.5) = 0
        assert_eq!(crop_offset(227, 224), 2); // round(1.5) = 2
        assert_eq!(crop_offset(298, 224), 37);
    }
}
