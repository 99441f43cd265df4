//! PNG files with A1111's `parameters` text chunk: written like A1111 (through PIL: `tEXt` when the
//! text is Latin-1, `iTXt` otherwise), read back from `tEXt`, `zTXt` or `iTXt`.
use std::io::{BufReader, Read};
use std::path::Path;

/// The chunk keyword A1111 (and ComfyUI readers of A1111 images) use.
pub const PARAMETERS_KEY: &str = "parameters";

#[derive(Debug, thiserror::Error)]
pub enum PngMetaError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: cannot encode the PNG: {message}")]
    Encode { path: String, message: String },
    #[error("{path}: not a readable PNG: {message}")]
    Decode { path: String, message: String },
}

fn is_latin1(text: &str) -> bool {
    text.chars().all(|c| (c as u32) <= 0xff)
}

/// Encodes `image` as an 8-bit RGB PNG with `parameters` in a `tEXt` chunk (an `iTXt` chunk
/// when the text is not Latin-1), then writes it atomically (temp file in the same folder,
/// fsync, rename).
pub fn write_png_with_parameters(
    path: &Path,
    image: &image::RgbImage,
    parameters: &str,
) -> Result<(), PngMetaError> {
    let bytes =
        encode_png_with_parameters(image, parameters).map_err(|e| PngMetaError::Encode {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
    crate::output::atomic::write_atomic(path, &bytes).map_err(|source| PngMetaError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// The PNG bytes [`write_png_with_parameters`] writes, for callers with their own atomic
/// write (the job queue's exactly-once outputs).
pub fn encode_png_with_parameters(
    image: &image::RgbImage,
    parameters: &str,
) -> Result<Vec<u8>, png::EncodingError> {
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, image.width(), image.height());
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        if is_latin1(parameters) {
            encoder.add_text_chunk(PARAMETERS_KEY.into(), parameters.into())
        } else {
            encoder.add_itxt_chunk(PARAMETERS_KEY.into(), parameters.into())
        }?;
        let mut writer = encoder.write_header()?;
        writer.write_image_data(image.as_raw())?;
        writer.finish()?;
    }
    Ok(bytes)
}

/// The largest `parameters` chunk read, stored or inflated (an A1111 infotext is a few KiB).
pub const MAX_TEXT_BYTES: usize = 1 << 20;
/// The most chunks walked in one file (a real PNG has a few hundred at most).
pub const MAX_CHUNKS: usize = 100_000;
/// A chunk this size or larger is not PNG (the format's own limit is 2^31 − 1).
const MAX_CHUNK_LEN: u32 = 1 << 31;

fn decode(path: &Path, message: impl Into<String>) -> PngMetaError {
    PngMetaError::Decode {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Inflates at most `MAX_TEXT_BYTES` (a zlib bomb stops there and is an error).
fn inflate_bounded(path: &Path, data: &[u8]) -> Result<Vec<u8>, PngMetaError> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .take(MAX_TEXT_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| decode(path, format!("the parameters chunk does not inflate: {e}")))?;
    if out.len() > MAX_TEXT_BYTES {
        return Err(decode(
            path,
            format!("the parameters chunk inflates past the limit of {MAX_TEXT_BYTES} bytes"),
        ));
    }
    Ok(out)
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// The text of a `tEXt`/`zTXt`/`iTXt` chunk's data after its keyword and NUL.
fn chunk_text(path: &Path, kind: &[u8; 4], rest: &[u8]) -> Result<String, PngMetaError> {
    let bad = |what: &str| decode(path, format!("malformed parameters chunk: {what}"));
    match kind {
        b"tEXt" => Ok(latin1(rest)),
        b"zTXt" => {
            let (&method, data) = rest.split_first().ok_or_else(|| bad("no method"))?;
            if method != 0 {
                return Err(bad("unknown compression method"));
            }
            Ok(latin1(&inflate_bounded(path, data)?))
        }
        _ => {
            // iTXt: flag, method, language tag NUL, translated keyword NUL, text.
            let [flag, method, tail @ ..] = rest else {
                return Err(bad("too short"));
            };
            let lang_end = tail
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| bad("no language tag"))?;
            let tail = &tail[lang_end + 1..];
            let tr_end = tail
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| bad("no translated keyword"))?;
            let data = &tail[tr_end + 1..];
            let bytes = match (flag, method) {
                (0, _) => data.to_vec(),
                (1, 0) => inflate_bounded(path, data)?,
                _ => return Err(bad("unknown compression")),
            };
            String::from_utf8(bytes).map_err(|_| bad("iTXt text is not UTF-8"))
        }
    }
}

/// The `parameters` text of a PNG (`tEXt`, `zTXt` or `iTXt`, before or after the image data),
/// or None when it has none. Only chunk headers are read, plus the first `parameters` chunk
/// (at most [`MAX_TEXT_BYTES`], checked against its CRC, inflated to at most
/// [`MAX_TEXT_BYTES`]); other chunks are skipped unread, and a walk stops after
/// [`MAX_CHUNKS`]: the work and memory are bounded whatever the file claims.
pub fn read_parameters(path: &Path) -> Result<Option<String>, PngMetaError> {
    Ok(read_parameters_counted(path)?.0)
}

/// [`read_parameters`] and the number of chunks it walked.
pub fn read_parameters_counted(path: &Path) -> Result<(Option<String>, usize), PngMetaError> {
    let io = |source| PngMetaError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut r = BufReader::new(file);
    let mut signature = [0u8; 8];
    if r.read_exact(&mut signature).is_err() || signature != *b"\x89PNG\r\n\x1a\n" {
        return Err(decode(path, "no PNG signature"));
    }
    let mut pos = 8u64;
    for walked in 1..=MAX_CHUNKS {
        let mut header = [0u8; 8];
        match r.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(decode(path, "truncated: no IEND chunk"));
            }
            Err(e) => return Err(io(e)),
        }
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let kind = [header[4], header[5], header[6], header[7]];
        if len >= MAX_CHUNK_LEN || pos + 12 + u64::from(len) > file_len {
            return Err(decode(
                path,
                format!(
                    "a {} chunk claims {len} bytes, past the end of the file",
                    latin1(&kind)
                ),
            ));
        }
        pos += 12 + u64::from(len);
        if &kind == b"IEND" {
            return Ok((None, walked));
        }
        let is_text = matches!(&kind, b"tEXt" | b"zTXt" | b"iTXt");
        if is_text && len as usize > PARAMETERS_KEY.len() {
            let mut keyword = [0u8; PARAMETERS_KEY.len() + 1];
            r.read_exact(&mut keyword).map_err(io)?;
            if keyword[..PARAMETERS_KEY.len()] == *PARAMETERS_KEY.as_bytes()
                && keyword[PARAMETERS_KEY.len()] == 0
            {
                let rest_len = len as usize - keyword.len();
                if rest_len > MAX_TEXT_BYTES {
                    return Err(decode(
                        path,
                        format!(
                            "the parameters chunk is {len} bytes, the limit is {MAX_TEXT_BYTES}"
                        ),
                    ));
                }
                let mut rest = vec![0u8; rest_len];
                r.read_exact(&mut rest).map_err(io)?;
                let mut crc = [0u8; 4];
                r.read_exact(&mut crc).map_err(io)?;
                let mut hasher = crc32fast::Hasher::new();
                hasher.update(&kind);
                hasher.update(&keyword);
                hasher.update(&rest);
                if hasher.finalize() != u32::from_be_bytes(crc) {
                    return Err(decode(path, "the parameters chunk fails its CRC (corrupt)"));
                }
                return Ok((Some(chunk_text(path, &kind, &rest)?), walked));
            }
            r.seek_relative(i64::from(len) - keyword.len() as i64 + 4)
                .map_err(io)?;
        } else {
            r.seek_relative(i64::from(len) + 4).map_err(io)?;
        }
    }
    Err(decode(
        path,
        format!("more than {MAX_CHUNKS} chunks before IEND (the limit)"),
    ))
}
