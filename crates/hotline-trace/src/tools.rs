//! What the tests and the operator's tooling do with images: draw the
//! watermark as the web app does (for the synthetic tests), transform a
//! screenshot as a leak would (crop, scale, JPEG), and measure PSNR.

use image::{DynamicImage, ImageFormat, RgbaImage};

use crate::payload::{tile_cells, Payload, ALPHA, TILE};

/// Draws the watermark over `img` as the browser composites the web app's
/// overlay: black at alpha ALPHA/255 over every dark cell, cells of
/// `cell_px` pixels, the tile's origin at (`ox`, `oy`) (modulo the tile).
pub fn draw(img: &mut RgbaImage, p: &Payload, cell_px: u32, ox: u32, oy: u32) {
    let cells = tile_cells(p);
    let tile = cell_px * TILE as u32;
    let keep = 255 - u32::from(ALPHA);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let cx = ((x + tile - ox % tile) % tile) / cell_px;
        let cy = ((y + tile - oy % tile) % tile) / cell_px;
        if cells[cy as usize][cx as usize] {
            for c in 0..3 {
                px.0[c] = ((u32::from(px.0[c]) * keep + 127) / 255) as u8;
            }
        }
    }
}

/// A leak's transformations, applied in this order: crop, scale, JPEG.
#[derive(Clone, Debug, Default)]
pub struct Transform {
    /// x, y, width, height in the input's pixels.
    pub crop: Option<(u32, u32, u32, u32)>,
    /// Resize factor (Catmull-Rom, as image viewers and browsers do).
    pub scale: Option<f64>,
    /// JPEG quality 1..=100; PNG when `None`.
    pub jpeg: Option<u8>,
}

/// Applies `t` and encodes the result (PNG or JPEG).
pub fn transform(img: &DynamicImage, t: &Transform) -> Result<Vec<u8>, image::ImageError> {
    let mut img = img.clone();
    if let Some((x, y, w, h)) = t.crop {
        img = img.crop_imm(x, y, w, h);
    }
    if let Some(f) = t.scale {
        let w = ((img.width() as f64 * f).round() as u32).max(1);
        let h = ((img.height() as f64 * f).round() as u32).max(1);
        img = img.resize_exact(w, h, image::imageops::FilterType::CatmullRom);
    }
    let mut out = std::io::Cursor::new(Vec::new());
    match t.jpeg {
        Some(q) => {
            let rgb = DynamicImage::ImageRgb8(img.to_rgb8());
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q);
            rgb.write_with_encoder(enc)?;
        }
        None => img.write_to(&mut out, ImageFormat::Png)?,
    }
    Ok(out.into_inner())
}

/// PSNR in dB of `b` against `a` over the RGB channels (same size);
/// infinite when they are equal.
pub fn psnr(a: &DynamicImage, b: &DynamicImage) -> Option<f64> {
    let (a, b) = (a.to_rgb8(), b.to_rgb8());
    if a.dimensions() != b.dimensions() {
        return None;
    }
    let se: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    let mse = se / a.as_raw().len() as f64;
    Some(if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    })
}
