//! A raster RGB image with the few primitives figures need, and PNG output.

use std::io::Write;
use std::path::Path;

use crate::PlotError;

/// An sRGB colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    pub const WHITE: Rgb = Rgb(255, 255, 255);
    pub const BLACK: Rgb = Rgb(0, 0, 0);
    pub const GREY: Rgb = Rgb(150, 150, 150);
    pub const LIGHT_GREY: Rgb = Rgb(225, 225, 225);

    /// `self` mixed with `other`: `t` = 0 gives `self`, 1 gives `other`.
    pub fn mix(self, other: Rgb, t: f32) -> Rgb {
        let t = t.clamp(0.0, 1.0);
        let m = |a: u8, b: u8| (a as f32 + (b as f32 - a as f32) * t).round() as u8;
        Rgb(m(self.0, other.0), m(self.1, other.1), m(self.2, other.2))
    }
}

/// Glyph cell of the bitmap font, in pixels at scale 1.
pub const GLYPH: usize = 8;

/// Row-major RGB pixels; drawing outside the image is clipped, never an error.
#[derive(Clone, Debug)]
pub struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<Rgb>,
}

impl Canvas {
    pub fn new(width: usize, height: usize, background: Rgb) -> Self {
        Self {
            width,
            height,
            pixels: vec![background; width * height],
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn pixel(&self, x: usize, y: usize) -> Option<Rgb> {
        (x < self.width && y < self.height).then(|| self.pixels[y * self.width + x])
    }

    pub fn set(&mut self, x: i64, y: i64, color: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            self.pixels[y as usize * self.width + x as usize] = color;
        }
    }

    pub fn fill_rect(&mut self, x: i64, y: i64, w: i64, h: i64, color: Rgb) {
        for yy in y.max(0)..(y + h).min(self.height as i64) {
            for xx in x.max(0)..(x + w).min(self.width as i64) {
                self.pixels[yy as usize * self.width + xx as usize] = color;
            }
        }
    }

    /// A one-pixel rectangle outline.
    pub fn stroke_rect(&mut self, x: i64, y: i64, w: i64, h: i64, color: Rgb) {
        self.line(x, y, x + w - 1, y, color);
        self.line(x, y + h - 1, x + w - 1, y + h - 1, color);
        self.line(x, y, x, y + h - 1, color);
        self.line(x + w - 1, y, x + w - 1, y + h - 1, color);
    }

    /// A one-pixel line (Bresenham).
    pub fn line(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, color: Rgb) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = ((x1 - x0).signum(), (y1 - y0).signum());
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, color);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// A filled disc of radius `r` pixels centred on (cx, cy).
    pub fn disc(&mut self, cx: i64, cy: i64, r: i64, color: Rgb) {
        for dy in -r..=r {
            for dx in -r..=r {
                if dx * dx + dy * dy <= r * r + r {
                    self.set(cx + dx, cy + dy, color);
                }
            }
        }
    }

    /// Width in pixels of `text` drawn at `scale`.
    pub fn text_width(text: &str, scale: usize) -> i64 {
        (text.chars().count() * GLYPH * scale) as i64
    }

    /// Draws ASCII `text` with its top-left corner at (x, y); other characters print as '?'.
    pub fn text(&mut self, x: i64, y: i64, text: &str, color: Rgb, scale: usize) {
        self.glyphs(text, color, scale, |i, gx, gy| (x + i + gx, y + gy));
    }

    /// Draws `text` turned 90° anticlockwise (reading bottom to top), its baseline start at the
    /// bottom-left corner (x, y): for vertical axis titles.
    pub fn text_up(&mut self, x: i64, y: i64, text: &str, color: Rgb, scale: usize) {
        self.glyphs(text, color, scale, |i, gx, gy| (x + gy, y - i - gx));
    }

    fn glyphs(
        &mut self,
        text: &str,
        color: Rgb,
        scale: usize,
        place: impl Fn(i64, i64, i64) -> (i64, i64),
    ) {
        let step = (GLYPH * scale) as i64;
        for (i, c) in text.chars().enumerate() {
            let code = if c.is_ascii() {
                c as usize
            } else {
                '?' as usize
            };
            let rows = font8x8::legacy::BASIC_LEGACY[code];
            for (row, bits) in rows.iter().enumerate() {
                for col in 0..GLYPH {
                    if bits & (1 << col) == 0 {
                        continue;
                    }
                    for sy in 0..scale {
                        for sx in 0..scale {
                            let gx = (col * scale + sx) as i64;
                            let gy = (row * scale + sy) as i64;
                            let (px, py) = place(i as i64 * step, gx, gy);
                            self.set(px, py, color);
                        }
                    }
                }
            }
        }
    }

    /// The image as PNG bytes (8-bit RGB).
    pub fn to_png(&self) -> Result<Vec<u8>, PlotError> {
        let mut out = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header()?;
            let data: Vec<u8> = self.pixels.iter().flat_map(|p| [p.0, p.1, p.2]).collect();
            writer.write_image_data(&data)?;
            writer.finish()?;
        }
        Ok(out)
    }

    /// Writes the PNG to `path` (through a temporary file, so a reader never sees half an image).
    pub fn save(&self, path: &Path) -> Result<(), PlotError> {
        let bytes = self.to_png()?;
        let io = |error| PlotError::Io {
            path: path.display().to_string(),
            error,
        };
        let tmp = path.with_extension("png.partial");
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glyphs_are_drawn_left_to_right_top_to_bottom() {
        let mut c = Canvas::new(16, 8, Rgb::WHITE);
        c.text(0, 0, "L", Rgb::BLACK, 1);
        // 'L': a stem on the left running down to a full bottom bar.
        let ink = |x, y| c.pixel(x, y) == Some(Rgb::BLACK);
        assert!(
            (0..6).all(|y| ink(1, y) || ink(2, y)),
            "no stem on the left"
        );
        assert!(!ink(6, 2), "stem on the right");
        assert!((1..7).all(|x| ink(x, 6)), "no bottom bar");
        assert!(
            (8..16).all(|x| (0..8).all(|y| !ink(x, y))),
            "ink past one glyph"
        );
    }

    #[test]
    fn rotated_text_reads_upwards() {
        let mut c = Canvas::new(8, 16, Rgb::WHITE);
        c.text_up(0, 15, "L", Rgb::BLACK, 1);
        // The stem becomes a bottom row, the bar a column on the right.
        let ink = |x, y| c.pixel(x, y) == Some(Rgb::BLACK);
        assert!((10..15).any(|y| ink(6, y)));
        assert!((0..5).any(|x| ink(x, 14) || ink(x, 13)));
    }

    #[test]
    fn png_round_trips_size_and_pixels() {
        let mut c = Canvas::new(7, 5, Rgb::WHITE);
        c.fill_rect(2, 1, 3, 2, Rgb(10, 20, 30));
        c.fill_rect(-5, -5, 6, 6, Rgb::BLACK); // clipped, not a panic
        let bytes = c.to_png().unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (7, 5));
        let at = |x: usize, y: usize| &buf[(y * 7 + x) * 3..(y * 7 + x) * 3 + 3];
        assert_eq!(at(3, 2), &[10, 20, 30]);
        assert_eq!(at(0, 0), &[0, 0, 0]);
        assert_eq!(at(6, 4), &[255, 255, 255]);
    }

    #[test]
    fn saving_to_a_missing_directory_names_the_path() {
        let c = Canvas::new(2, 2, Rgb::WHITE);
        let err = c
            .save(Path::new("/nonexistent-dir/figure.png"))
            .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent-dir/figure.png"),
            "{err}"
        );
    }
}
