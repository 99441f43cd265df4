//! Tiled VAE decoding for images whose full decode does not fit in device memory: the latent is
//! cut into overlapping tiles, each tile is decoded alone, and the overlaps are blended with
//! linear ramps (a weighted average), so the seams do not show.
use tch::{Kind, Tensor};

/// Tile size and overlap in latent pixels (×8 in the image).
#[derive(Debug, Clone, Copy)]
pub struct TileConfig {
    pub tile: i64,
    pub overlap: i64,
}

impl Default for TileConfig {
    fn default() -> Self {
        TileConfig {
            tile: 64,
            overlap: 16,
        }
    }
}

/// Tile starts along one axis: stride `tile - overlap`, the last tile flush with the end.
pub fn tile_starts(len: i64, tile: i64, overlap: i64) -> Vec<i64> {
    if len <= tile {
        return vec![0];
    }
    let stride = (tile - overlap).max(1);
    let mut starts: Vec<i64> = (0..)
        .map(|i| i * stride)
        .take_while(|&s| s + tile < len)
        .collect();
    starts.push(len - tile);
    starts.dedup();
    starts
}

/// A weight ramp along one axis of a decoded tile: rising over `ramp` pixels at an edge that
/// borders another tile, flat (1) elsewhere.
fn ramp(len: i64, ramp: i64, rise_start: bool, fall_end: bool) -> Vec<f32> {
    (0..len)
        .map(|p| {
            let mut w: f32 = 1.0;
            if rise_start {
                w = w.min((p as f32 + 0.5) / ramp as f32);
            }
            if fall_end {
                w = w.min(((len - p) as f32 - 0.5) / ramp as f32);
            }
            w.clamp(1e-3, 1.0)
        })
        .collect()
}

/// Decodes `z` `[B, 4, h, w]` tile by tile with `decode` (latent tile → `[B, 3, 8h', 8w']`).
pub fn decode_tiled<E>(
    z: Tensor,
    decode: &mut dyn FnMut(&Tensor) -> Result<Tensor, E>,
    cfg: TileConfig,
) -> Result<Tensor, E> {
    let size = z.size();
    let (h, w) = (size[2], size[3]);
    let tile = cfg.tile.max(8);
    let overlap = cfg.overlap.clamp(0, tile / 2);
    if h <= tile && w <= tile {
        return decode(&z);
    }
    let ys = tile_starts(h, tile, overlap);
    let xs = tile_starts(w, tile, overlap);
    let mut out: Option<(Tensor, Tensor)> = None;
    for &y in &ys {
        for &x in &xs {
            let th = tile.min(h);
            let tw = tile.min(w);
            let piece = decode(&z.narrow(2, y, th).narrow(3, x, tw))?.to_kind(Kind::Float);
            let psize = piece.size();
            let (ph, pw) = (psize[2], psize[3]);
            let scale = ph / th;
            let device = piece.device();
            let wy = ramp(ph, overlap * scale, y > 0, y + th < h);
            let wx = ramp(pw, overlap * scale, x > 0, x + tw < w);
            let weight = Tensor::from_slice(&wy)
                .view([1, 1, ph, 1])
                .to_device(device)
                * Tensor::from_slice(&wx)
                    .view([1, 1, 1, pw])
                    .to_device(device);
            let (acc, wsum) = out.get_or_insert_with(|| {
                (
                    Tensor::zeros(
                        [psize[0], psize[1], h * scale, w * scale],
                        (Kind::Float, device),
                    ),
                    Tensor::zeros([1, 1, h * scale, w * scale], (Kind::Float, device)),
                )
            });
            let mut a = acc.narrow(2, y * scale, ph).narrow(3, x * scale, pw);
            let _ = a.g_add_(&(&piece * &weight));
            let mut s = wsum.narrow(2, y * scale, ph).narrow(3, x * scale, pw);
            let _ = s.g_add_(&weight);
        }
    }
    match out {
        Some((acc, wsum)) => Ok(acc / wsum),
        None => decode(&z),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_axis_with_the_overlap() {
        assert_eq!(tile_starts(64, 64, 16), vec![0]);
        assert_eq!(tile_starts(100, 64, 16), vec![0, 36]);
        assert_eq!(tile_starts(160, 64, 16), vec![0, 48, 96]);
    }

    #[test]
    fn a_pointwise_decoder_is_reproduced_exactly_by_tiles() {
        // A decoder with no spatial context (8× nearest upsampling of 3 channels) has no seams:
        // the weighted average of identical overlaps is the same value.
        let z = Tensor::randn([1, 4, 80, 150], (Kind::Float, tch::Device::Cpu));
        let mut dec = |t: &Tensor| -> Result<Tensor, ()> {
            let s = t.size();
            Ok(t.narrow(1, 0, 3)
                .upsample_nearest2d([s[2] * 8, s[3] * 8], None, None))
        };
        let full = dec(&z).unwrap();
        let tiled = decode_tiled(z, &mut dec, TileConfig::default()).unwrap();
        let diff = (full - tiled).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "max difference {diff}");
    }
}
