//! PNG files with A1111's `parameters` text chunk: written like A1111 (through PIL: `tEXt` when the
//! text is Latin-1, `iTXt` otherwise), read back from `tEXt`, `zTXt` or `iTXt`.
use std::io::BufReader;
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

fn find_parameters(info: &png::Info) -> Result<Option<String>, png::DecodingError> {
    if let Some(c) = info
        .uncompressed_latin1_text
        .iter()
        .find(|c| c.keyword == PARAMETERS_KEY)
    {
        return Ok(Some(c.text.clone()));
    }
    if let Some(c) = info
        .compressed_latin1_text
        .iter()
        .find(|c| c.keyword == PARAMETERS_KEY)
    {
        return c.get_text().map(Some);
    }
    if let Some(c) = info.utf8_text.iter().find(|c| c.keyword == PARAMETERS_KEY) {
        return c.get_text().map(Some);
    }
    Ok(None)
}

/// The `parameters` text of a PNG (`tEXt`, `zTXt` or `iTXt`, before or after the image data),
/// or None when it has none.
pub fn read_parameters(path: &Path) -> Result<Option<String>, PngMetaError> {
    let decode_err = |e: png::DecodingError| PngMetaError::Decode {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(|source| PngMetaError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut reader = png::Decoder::new(BufReader::new(file))
        .read_info()
        .map_err(decode_err)?;
    if let Some(text) = find_parameters(reader.info()).map_err(decode_err)? {
        return Ok(Some(text));
    }
    // Text chunks may also follow the image data.
    reader.finish().map_err(decode_err)?;
    find_parameters(reader.info()).map_err(decode_err)
}
