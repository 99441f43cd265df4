//! Live previews: latents to RGB through a linear 4→3 approximation of the VAE decoder
//! (the widely used per-family factors, as in ComfyUI's `latent_formats.py`), 1/8 size.
use tch::{Device, Kind, Tensor};

/// SD 1.x/2.x latent → RGB factors (rows: latent channels; columns: R, G, B).
const SD15_FACTORS: [[f32; 3]; 4] = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
];
const SD15_BIAS: [f32; 3] = [0.0, 0.0, 0.0];

const SDXL_FACTORS: [[f32; 3]; 4] = [
    [0.3651, 0.4232, 0.4341],
    [-0.2533, -0.0042, 0.1068],
    [0.1076, 0.1111, -0.0362],
    [-0.3165, -0.2492, -0.2188],
];
const SDXL_BIAS: [f32; 3] = [0.1084, -0.0175, -0.0011];

/// One preview image per batch item, `w/8 × h/8` pixels.
pub fn latents_to_rgb(latents: &Tensor, xl: bool) -> Vec<image::RgbImage> {
    let (factors, bias) = if xl {
        (SDXL_FACTORS, SDXL_BIAS)
    } else {
        (SD15_FACTORS, SD15_BIAS)
    };
    let flat: Vec<f32> = factors.iter().flatten().copied().collect();
    let m = Tensor::from_slice(&flat).view([4, 3]);
    let b = Tensor::from_slice(&bias).view([1, 1, 1, 3]);
    let lat = latents.to_device(Device::Cpu).to_kind(Kind::Float);
    let Ok((n, _, h, w)) = lat.size4() else {
        return Vec::new();
    };
    let rgb = lat.permute([0, 2, 3, 1]).matmul(&m) + b;
    let bytes = ((rgb + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0;
    let bytes = bytes.round().to_kind(Kind::Uint8).contiguous();
    let Ok(data) = Vec::<u8>::try_from(&bytes.view([-1])) else {
        return Vec::new();
    };
    let per = (h * w * 3) as usize;
    (0..n as usize)
        .filter_map(|i| {
            image::RgbImage::from_raw(w as u32, h as u32, data[i * per..(i + 1) * per].to_vec())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latent_of_one_channel_maps_to_its_factor_row() {
        // Channel 0 at 1.0, others 0: RGB = row 0 → ((f + 1) / 2) · 255.
        let lat = Tensor::zeros([1, 4, 2, 3], (Kind::Float, Device::Cpu));
        let _ = lat.narrow(1, 0, 1).fill_(1.0);
        let img = &latents_to_rgb(&lat, false)[0];
        assert_eq!(img.dimensions(), (3, 2));
        let expect: Vec<u8> = SD15_FACTORS[0]
            .iter()
            .map(|f| (((f + 1.0) / 2.0) * 255.0).round() as u8)
            .collect();
        assert_eq!(img.get_pixel(1, 1).0.to_vec(), expect);
    }
}
