//! Hostile images, generated: PNG headers that lie, truncated and corrupt data, decoder bombs,
//! with the one-line error each must get. Shared by tests/hostile_media.rs (the library's
//! `load_image`) and tests/clip_model.rs (`atelier tag`, with its peak memory).

pub fn png(w: u32, h: u32, color: u8, idat: Option<Vec<u8>>) -> Vec<u8> {
    let chunk = |t: &[u8], data: &[u8]| {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        let mut body = t.to_vec();
        body.extend_from_slice(data);
        c.extend_from_slice(&body);
        c.extend_from_slice(&crc32(&body).to_be_bytes());
        c
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, color, 0, 0, 0]);
    let bpp = if color == 2 { 3 } else { 1 };
    let raw: Vec<u8> = (0..h.min(16_384))
        .flat_map(|_| {
            std::iter::once(0).chain(std::iter::repeat_n(0x80, (w as usize * bpp).min(1 << 16)))
        })
        .collect();
    let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
    b.extend(chunk(b"IHDR", &ihdr));
    b.extend(chunk(b"IDAT", &idat.unwrap_or_else(|| zlib(&raw))));
    b.extend(chunk(b"IEND", b""));
    b
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn zlib(raw: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(raw).unwrap();
    e.finish().unwrap()
}

/// Valid long thin images, tagged at crop cost: (name, width, height).
pub const LONG_THIN: [(&str, u32, u32); 2] = [("wide.png", 16_384, 1), ("tall.png", 1, 16_384)];

/// (file name, bytes, a part of the expected error) for each hostile image.
pub fn cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut jpeg_dims = vec![
        0xff, 0xd8, 0xff, 0xc0, 0, 11, 8, 0xff, 0xff, 0xff, 0xff, 1, 1, 0x11, 0,
    ];
    jpeg_dims.extend_from_slice(&[0xff, 0xda, 0, 8, 1, 1, 0, 0, 0x3f, 0, 0, 0xff, 0xd9]);
    let gif_bomb = {
        let mut g = b"GIF89a".to_vec();
        g.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0]);
        g.extend_from_slice(&[
            0x2c, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 2, 2, 0x4c, 0x01, 0, 0x3b,
        ]);
        g
    };
    vec![
        (
            "huge.png",
            png(100_000, 100_000, 0, Some(zlib(&[0; 64]))),
            "image too large",
        ),
        (
            "side.png",
            png(16_385, 16, 0, Some(zlib(&[0; 64]))),
            "image too large",
        ),
        (
            "truncated.png",
            png(64, 64, 2, None)[..60].to_vec(),
            "corrupt or truncated image",
        ),
        (
            "idat.png",
            png(64, 64, 2, Some(b"garbage, not zlib".to_vec())),
            "corrupt or truncated image",
        ),
        ("dims.jpg", jpeg_dims, "dims.jpg:"),
        ("empty.png", Vec::new(), "empty file"),
        ("bomb.gif", gif_bomb, "bomb.gif:"),
        ("zero.png", png(0, 0, 2, Some(zlib(&[]))), "zero.png:"),
        (
            "text.png",
            b"hello, not an image".to_vec(),
            "not a supported image",
        ),
    ]
}
