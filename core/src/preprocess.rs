//! Image decoding and CLIP preprocessing.
//!
//! `decode` turns untrusted bytes into an upright RGB image: it checks byte and pixel limits
//! *before* allocating the pixel buffer (decompression bombs), applies the EXIF orientation, and
//! flattens every colour type to 8-bit RGB. Transparent pixels are composited onto **white**,
//! since catalog photos with alpha are cut-outs meant to sit on a white page.
//!
//! `Preprocessor` then follows a Hugging Face `CLIPImageProcessor` config exactly: resize the
//! shortest edge with PIL-style antialiased bicubic (fast_image_resize's Catmull-Rom convolution,
//! the same a = -0.5 kernel PIL uses), center-crop, rescale and normalize into CHW f32.
//!
//! Threading: both are pure functions of their inputs; run them on a rayon pool.

use std::io::Cursor;

use fast_image_resize as fr;
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::error::{CoreError, ImageErrorKind, Result};
use crate::model::{PreprocessorConfig, SizeSpec};

/// Limits applied to every decoded image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageLimits {
    /// Largest encoded file accepted.
    pub max_bytes: u64,
    /// Largest decoded width × height.
    pub max_pixels: u64,
    /// Largest width or height.
    pub max_side: u32,
}

impl Default for ImageLimits {
    fn default() -> Self {
        // 50 MP covers every phone camera; 64 MiB of encoded bytes covers an uncompressed 16-bit PNG of that size.
        ImageLimits { max_bytes: 64 << 20, max_pixels: 50_000_000, max_side: 20_000 }
    }
}

/// Decode untrusted image bytes into an upright 8-bit RGB image. `input` names the source in errors.
pub fn decode(bytes: &[u8], input: &str, limits: &ImageLimits) -> Result<RgbImage> {
    let mut buf = Vec::new();
    let (w, h) = decode_into(bytes, input, limits, &mut buf)?;
    Ok(RgbImage::from_raw(w, h, buf).expect("decode_into fills w*h*3 bytes"))
}

/// [`decode`] into a reusable buffer, which is resized to exactly `w * h * 3` bytes of RGB; returns
/// `(w, h)`. Reusing the buffer across images skips zeroing and faulting in a fresh allocation of
/// the full image (3 MB for 1 MP), which is a measurable part of a 5 ms budget.
pub fn decode_into(bytes: &[u8], input: &str, limits: &ImageLimits, buf: &mut Vec<u8>) -> Result<(u32, u32)> {
    let err = |kind| CoreError::image(input, kind);
    if bytes.is_empty() {
        return Err(err(ImageErrorKind::Empty));
    }
    if bytes.len() as u64 > limits.max_bytes {
        return Err(err(ImageErrorKind::TooManyBytes { bytes: bytes.len() as u64, limit: limits.max_bytes }));
    }
    // The same magic `image` guesses JPEG by, so both paths below see only complete JPEGs.
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        // Both JPEG decoders fill a truncated scan with grey instead of failing; refuse it here.
        if !jpeg_is_complete(bytes) {
            return Err(err(ImageErrorKind::Decode("truncated: the JPEG has no end-of-image marker after its scan".into())));
        }
        if let Some(dims) = decode_jpeg_into(bytes, input, limits, buf)? {
            return Ok(dims);
        }
    }
    let img = decode_general(bytes, input, limits)?;
    let dims = img.dimensions();
    *buf = img.into_raw();
    Ok(dims)
}

/// JPEG through libjpeg-turbo (the decoder PIL uses, built from source and linked statically by
/// the `turbojpeg` crate): about 25% faster than zune-jpeg behind `image` on a 1 MP photo, and
/// its fancy upsampling and colour conversion are PIL's own, so decoded pixels match the Python
/// reference. Handles YCbCr, RGB and grayscale JPEGs, which is nearly all of them; returns `None`
/// for CMYK/YCCK and for anything libjpeg-turbo fails or warns on, which take the general path.
fn decode_jpeg_into(bytes: &[u8], input: &str, limits: &ImageLimits, buf: &mut Vec<u8>) -> Result<Option<(u32, u32)>> {
    let err = |kind| CoreError::image(input, kind);
    TURBO.with(|cell| {
        let mut slot = cell.borrow_mut();
        let dec = match slot.as_mut() {
            Some(d) => d,
            None => slot.insert(turbojpeg::Decompressor::new().map_err(|e| err(ImageErrorKind::Decode(e.to_string())))?),
        };
        // Anything libjpeg-turbo will not take goes to the general path, which then decides:
        // this keeps one verdict for bad input, and tolerates what libjpeg only warns about
        // (TurboJPEG reports warnings such as "extraneous bytes before marker" as failures).
        let Ok(header) = dec.read_header(bytes) else { return Ok(None) };
        if !matches!(header.colorspace, turbojpeg::Colorspace::YCbCr | turbojpeg::Colorspace::RGB | turbojpeg::Colorspace::Gray) {
            return Ok(None);
        }
        let (w, h) = (u32::try_from(header.width), u32::try_from(header.height));
        let (Ok(w), Ok(h)) = (w, h) else { return Err(err(too_large(0, 0, limits))) };
        check_dimensions(w, h, input, limits)?;
        // Every byte is overwritten, so only a grown buffer needs zeroing.
        buf.resize(header.width * header.height * 3, 0);
        let image = turbojpeg::Image {
            pixels: &mut buf[..],
            width: header.width,
            pitch: header.width * 3,
            height: header.height,
            format: turbojpeg::PixelFormat::RGB,
        };
        if dec.decompress(bytes, image).is_err() {
            return Ok(None);
        }
        let orientation = jpeg_orientation(bytes);
        if orientation == image::metadata::Orientation::NoTransforms {
            return Ok(Some((w, h)));
        }
        let mut img = DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, std::mem::take(buf)).expect("w*h*3 bytes"));
        img.apply_orientation(orientation);
        let rgb = img.into_rgb8();
        let dims = rgb.dimensions();
        *buf = rgb.into_raw();
        Ok(Some(dims))
    })
}

thread_local! {
    /// One libjpeg-turbo handle per thread, created on first use.
    static TURBO: std::cell::RefCell<Option<turbojpeg::Decompressor>> = const { std::cell::RefCell::new(None) };
}

/// The EXIF orientation of a JPEG: walks the marker segments before the first scan to the APP1
/// `Exif` one and reads it with `image`'s parser. Anything malformed reads as upright.
fn jpeg_orientation(b: &[u8]) -> image::metadata::Orientation {
    let upright = image::metadata::Orientation::NoTransforms;
    let mut i = 2; // after SOI
    while i + 4 <= b.len() && b[i] == 0xFF {
        let marker = b[i + 1];
        if marker == 0xFF {
            i += 1; // fill byte
            continue;
        }
        if marker == 0xDA || marker == 0xD9 {
            break; // start of scan or end of image: no more metadata
        }
        let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
        let (start, end) = (i + 4, i + 2 + len);
        if len < 2 || end > b.len() {
            break;
        }
        if marker == 0xE1 && b[start..end].starts_with(b"Exif\0\0") {
            return image::metadata::Orientation::from_exif_chunk(&b[start + 6..end]).unwrap_or(upright);
        }
        i = end;
    }
    upright
}

/// Every format but the JPEG fast path, through `image`.
fn decode_general(bytes: &[u8], input: &str, limits: &ImageLimits) -> Result<RgbImage> {
    let err = |kind| CoreError::image(input, kind);
    let mut reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| err(ImageErrorKind::Read(e.to_string())))?;
    if reader.format().is_none() {
        return Err(err(ImageErrorKind::UnknownFormat));
    }
    // The into_decoder path does not enforce max_alloc (PITFALLS.md), so the side limits are what
    // stop a bomb before allocation; the pixel-count check below covers wide-and-tall images.
    let mut l = image::Limits::default();
    l.max_image_width = Some(limits.max_side);
    l.max_image_height = Some(limits.max_side);
    l.max_alloc = Some(limits.max_pixels.saturating_mul(8));
    reader.limits(l);
    let mut decoder = reader.into_decoder().map_err(|e| classify(e, input, limits))?;
    let (w, h) = decoder.dimensions();
    check_dimensions(w, h, input, limits)?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| classify(e, input, limits))?;
    img.apply_orientation(orientation);
    Ok(to_rgb_on_white(img))
}

/// A complete JPEG has an end-of-image marker (FF D9) after its last start-of-scan (FF DA).
/// Entropy-coded data never holds either marker (a data 0xFF is stuffed as FF 00), so the last
/// occurrences are the real markers.
fn jpeg_is_complete(b: &[u8]) -> bool {
    let last = |m: &[u8]| memchr::memmem::rfind(b, m);
    matches!((last(&[0xFF, 0xDA]), last(&[0xFF, 0xD9])), (Some(sos), Some(eoi)) if eoi > sos)
}

/// Refuse empty images and images over the pixel or side limits, from their header, before any
/// pixel buffer is allocated.
fn check_dimensions(w: u32, h: u32, input: &str, limits: &ImageLimits) -> Result<()> {
    if w == 0 || h == 0 {
        return Err(CoreError::image(input, ImageErrorKind::Decode("image has zero width or height".into())));
    }
    if u64::from(w) * u64::from(h) > limits.max_pixels || w > limits.max_side || h > limits.max_side {
        return Err(CoreError::image(input, too_large(w, h, limits)));
    }
    Ok(())
}

fn too_large(width: u32, height: u32, limits: &ImageLimits) -> ImageErrorKind {
    ImageErrorKind::TooLarge { width, height, limit_pixels: limits.max_pixels, limit_side: limits.max_side }
}

fn classify(e: image::ImageError, input: &str, limits: &ImageLimits) -> CoreError {
    use image::error::{ImageError as E, LimitErrorKind};
    let kind = match e {
        E::Limits(ref l) if matches!(l.kind(), LimitErrorKind::DimensionError | LimitErrorKind::InsufficientMemory) => {
            too_large(0, 0, limits)
        }
        E::Unsupported(_) => ImageErrorKind::UnknownFormat,
        E::IoError(e) => ImageErrorKind::Decode(format!("truncated or unreadable: {e}")),
        other => ImageErrorKind::Decode(other.to_string()),
    };
    CoreError::image(input, kind)
}

/// Flatten any colour type to RGB8; alpha is composited onto white as `255 - (255 - c) * a / 255`.
fn to_rgb_on_white(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return match img {
            DynamicImage::ImageRgb8(rgb) => rgb,
            other => other.to_rgb8(),
        };
    }
    let rgba = img.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = Vec::with_capacity(w as usize * h as usize * 3);
    for p in rgba.pixels() {
        let a = f32::from(p[3]) / 255.0;
        for c in &p.0[..3] {
            out.push((255.0 - (255.0 - f32::from(*c)) * a).round() as u8);
        }
    }
    RgbImage::from_raw(w, h, out).expect("buffer has w*h*3 bytes")
}

/// CLIP preprocessing as configured by a `preprocessor_config.json`.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    cfg: PreprocessorConfig,
    out_h: u32,
    out_w: u32,
    alg: fr::ResizeAlg,
}

impl Preprocessor {
    pub fn new(cfg: PreprocessorConfig) -> Self {
        let (out_h, out_w) = cfg.output_size();
        // PIL resample codes: 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming.
        let alg = match cfg.resample {
            0 => fr::ResizeAlg::Nearest,
            1 => fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3),
            2 => fr::ResizeAlg::Convolution(fr::FilterType::Bilinear),
            4 => fr::ResizeAlg::Convolution(fr::FilterType::Box),
            5 => fr::ResizeAlg::Convolution(fr::FilterType::Hamming),
            _ => fr::ResizeAlg::Convolution(fr::FilterType::CatmullRom),
        };
        Preprocessor { cfg, out_h, out_w, alg }
    }

    /// (height, width) of one preprocessed image.
    pub fn output_size(&self) -> (u32, u32) {
        (self.out_h, self.out_w)
    }

    /// Number of f32 values in one preprocessed image (3 × H × W).
    pub fn tensor_len(&self) -> usize {
        3 * self.out_h as usize * self.out_w as usize
    }

    /// The size the whole image is resized to before cropping, as transformers computes it.
    fn resize_target(&self, w: u32, h: u32) -> (u32, u32) {
        if !self.cfg.do_resize {
            return (w, h);
        }
        match self.cfg.size {
            SizeSpec::Exact { height, width } => (width, height),
            SizeSpec::ShortestEdge { shortest_edge: s } | SizeSpec::Bare(s) => {
                let (short, long) = if w <= h { (w, h) } else { (h, w) };
                let new_long = ((u64::from(s) * u64::from(long)) / u64::from(short)).max(1) as u32;
                if w <= h {
                    (s, new_long)
                } else {
                    (new_long, s)
                }
            }
        }
    }

    /// Preprocess into `out` (length [`tensor_len`](Self::tensor_len)), CHW, normalized.
    pub fn run_into(&self, img: &RgbImage, out: &mut [f32]) {
        let (w, h) = img.dimensions();
        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            self.run_rgb(img.as_raw(), w, h, out, &mut s.resized, &mut s.resizer);
        });
    }

    /// Decode and preprocess into `out` in one step, reusing this thread's buffers: the fast path
    /// the embedding pipeline takes.
    pub fn load_into(&self, bytes: &[u8], input: &str, limits: &ImageLimits, out: &mut [f32]) -> Result<()> {
        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            let result = decode_into(bytes, input, limits, &mut s.decoded)
                .map(|(w, h)| self.run_rgb(&s.decoded, w, h, out, &mut s.resized, &mut s.resizer));
            s.shrink();
            result
        })
    }

    /// The resize, crop and normalize of packed RGB `src` (`w × h`).
    fn run_rgb(&self, src: &[u8], w: u32, h: u32, out: &mut [f32], resized: &mut Vec<u8>, resizer: &mut fr::Resizer) {
        assert_eq!(out.len(), self.tensor_len(), "output slice has the wrong length");
        let (rw, rh) = self.resize_target(w, h);
        let (buf, bw, bh): (&[u8], u32, u32) = if (rw, rh) == (w, h) {
            (src, w, h)
        } else {
            let src = fr::images::ImageRef::new(w, h, src, fr::PixelType::U8x3).expect("RGB buffer");
            let len = rw as usize * rh as usize * 3;
            let mut vec = std::mem::take(resized);
            vec.resize(len, 0);
            let mut dst = fr::images::Image::from_vec_u8(rw, rh, vec, fr::PixelType::U8x3).expect("sized for rw*rh");
            let opts = fr::ResizeOptions::new().resize_alg(self.alg);
            resizer.resize(&src, &mut dst, &opts).expect("same pixel type");
            *resized = dst.into_vec();
            (resized.as_slice(), rw, rh)
        };
        let (oh, ow) = (self.out_h as usize, self.out_w as usize);
        // Center crop offsets as transformers computes them; negative offsets mean padding with black.
        let (top, left) =
            if self.cfg.do_center_crop { ((bh as i64 - oh as i64) / 2, (bw as i64 - ow as i64) / 2) } else { (0, 0) };
        let scale = if self.cfg.do_rescale { self.cfg.rescale_factor } else { 1.0 };
        let (mean, std) = if self.cfg.do_normalize { (self.cfg.image_mean, self.cfg.image_std) } else { ([0.0; 3], [1.0; 3]) };
        // y = x * scale / std - mean / std, one multiply-add per value.
        let mul: [f32; 3] = std::array::from_fn(|c| scale / std[c]);
        let add: [f32; 3] = std::array::from_fn(|c| -mean[c] / std[c]);
        let plane = oh * ow;
        let (r_out, rest) = out.split_at_mut(plane);
        let (g_out, b_out) = rest.split_at_mut(plane);
        for y in 0..oh {
            let sy = y as i64 + top;
            let row = y * ow;
            if sy < 0 || sy >= bh as i64 || left < 0 || left + ow as i64 > bw as i64 {
                for x in 0..ow {
                    let sx = x as i64 + left;
                    let px = if sy >= 0 && sy < bh as i64 && sx >= 0 && sx < bw as i64 {
                        let i = (sy as usize * bw as usize + sx as usize) * 3;
                        [buf[i], buf[i + 1], buf[i + 2]]
                    } else {
                        [0, 0, 0]
                    };
                    r_out[row + x] = f32::from(px[0]) * mul[0] + add[0];
                    g_out[row + x] = f32::from(px[1]) * mul[1] + add[1];
                    b_out[row + x] = f32::from(px[2]) * mul[2] + add[2];
                }
                continue;
            }
            let start = (sy as usize * bw as usize + left as usize) * 3;
            let src_row = &buf[start..start + ow * 3];
            for (x, px) in src_row.chunks_exact(3).enumerate() {
                r_out[row + x] = f32::from(px[0]) * mul[0] + add[0];
                g_out[row + x] = f32::from(px[1]) * mul[1] + add[1];
                b_out[row + x] = f32::from(px[2]) * mul[2] + add[2];
            }
        }
    }

    pub fn run(&self, img: &RgbImage) -> Vec<f32> {
        let mut out = vec![0.0; self.tensor_len()];
        self.run_into(img, &mut out);
        out
    }

    /// Decode and preprocess in one step.
    pub fn load(&self, bytes: &[u8], input: &str, limits: &ImageLimits) -> Result<Vec<f32>> {
        let mut out = vec![0.0; self.tensor_len()];
        self.load_into(bytes, input, limits, &mut out)?;
        Ok(out)
    }
}

/// Per-thread buffers reused from one image to the next (decoded pixels, the resized image, the
/// resizer's own).
struct Scratch {
    decoded: Vec<u8>,
    resized: Vec<u8>,
    resizer: fr::Resizer,
}

impl Scratch {
    /// Buffers above this are freed after use, so one huge upload does not stay pinned per thread.
    const KEEP_BYTES: usize = 16 << 20;

    fn shrink(&mut self) {
        if self.decoded.capacity() > Self::KEEP_BYTES {
            self.decoded = Vec::new();
        }
        if self.resized.capacity() > Self::KEEP_BYTES {
            self.resized = Vec::new();
        }
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> =
        std::cell::RefCell::new(Scratch { decoded: Vec::new(), resized: Vec::new(), resizer: fr::Resizer::new() });
}

/// A JPEG thumbnail whose longer side is at most `max_side` (for the UI; never upscaled).
pub fn thumbnail_jpeg(img: &RgbImage, max_side: u32) -> Vec<u8> {
    let (w, h) = img.dimensions();
    let scale = (f64::from(max_side) / f64::from(w.max(h))).min(1.0);
    let (tw, th) = (((f64::from(w) * scale).round() as u32).max(1), ((f64::from(h) * scale).round() as u32).max(1));
    let mut out = Vec::new();
    let encode = |buf: &[u8], out: &mut Vec<u8>| {
        let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(out, 82);
        image::ImageEncoder::write_image(enc, buf, tw, th, image::ExtendedColorType::Rgb8).expect("in-memory JPEG encoding");
    };
    if (tw, th) == (w, h) {
        encode(img.as_raw(), &mut out);
    } else {
        let src = fr::images::ImageRef::new(w, h, img.as_raw(), fr::PixelType::U8x3).expect("RGB buffer");
        let mut dst = fr::images::Image::new(tw, th, fr::PixelType::U8x3);
        let opts = fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear));
        fr::Resizer::new().resize(&src, &mut dst, &opts).expect("same pixel type");
        encode(dst.buffer(), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 7]));
        let mut out = Vec::new();
        DynamicImage::ImageRgb8(img).write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    fn kind(r: Result<RgbImage>) -> ImageErrorKind {
        match r.unwrap_err() {
            CoreError::Image { input, kind } => {
                assert_eq!(input, "x.png");
                kind
            }
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn empty_input_is_a_typed_error() {
        assert_eq!(kind(decode(&[], "x.png", &ImageLimits::default())), ImageErrorKind::Empty);
    }

    #[test]
    fn not_an_image_is_a_typed_error() {
        assert_eq!(kind(decode(b"hello, this is text", "x.png", &ImageLimits::default())), ImageErrorKind::UnknownFormat);
    }

    #[test]
    fn truncated_png_is_a_typed_error() {
        let bytes = png(64, 64);
        let k = kind(decode(&bytes[..bytes.len() / 2], "x.png", &ImageLimits::default()));
        assert!(matches!(k, ImageErrorKind::Decode(_)), "{k:?}");
    }

    #[test]
    fn truncated_jpeg_is_a_typed_error() {
        let mut jpeg = Vec::new();
        DynamicImage::ImageRgb8(RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 9])))
            .write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        assert!(decode(&jpeg, "x.png", &ImageLimits::default()).is_ok());
        let k = kind(decode(&jpeg[..jpeg.len() * 2 / 3], "x.png", &ImageLimits::default()));
        assert!(matches!(k, ImageErrorKind::Decode(ref m) if m.contains("truncated")), "{k:?}");
    }

    fn jpeg_of(img: &RgbImage) -> Vec<u8> {
        let mut jpeg = Vec::new();
        DynamicImage::ImageRgb8(img.clone()).write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
        jpeg
    }

    /// Insert an APP1 Exif segment (little-endian TIFF, one IFD entry: Orientation) after SOI.
    fn with_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = b"II*\0\x08\0\0\0".to_vec();
        tiff.extend_from_slice(&1u16.to_le_bytes());
        tiff.extend_from_slice(&0x0112u16.to_le_bytes());
        tiff.extend_from_slice(&3u16.to_le_bytes());
        tiff.extend_from_slice(&1u32.to_le_bytes());
        tiff.extend_from_slice(&orientation.to_le_bytes());
        tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        let payload = [b"Exif\0\0".as_slice(), &tiff].concat();
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn jpeg_fast_path_matches_the_general_decoder() {
        // A smooth gradient, so both decoders' upsampling agree to a level or two.
        let src = RgbImage::from_fn(96, 64, |x, y| image::Rgb([(x * 2) as u8, (y * 3) as u8, (200 - x) as u8]));
        let jpeg = jpeg_of(&src);
        let fast = decode(&jpeg, "x.jpg", &ImageLimits::default()).unwrap();
        let general = decode_general(&jpeg, "x.jpg", &ImageLimits::default()).unwrap();
        assert_eq!(fast.dimensions(), general.dimensions());
        let diff: f64 = fast.as_raw().iter().zip(general.as_raw()).map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs()).sum();
        let mean = diff / fast.as_raw().len() as f64;
        assert!(mean < 1.5, "mean absolute difference {mean}");
    }

    #[test]
    fn jpegs_libjpeg_only_warns_about_still_decode() {
        // Stray bytes before the end-of-image marker: libjpeg warns ("extraneous bytes before
        // marker 0xd9"), which TurboJPEG reports as a failure; the general path accepts it.
        let src = RgbImage::from_fn(48, 32, |x, y| image::Rgb([(x * 5) as u8, (y * 7) as u8, 90]));
        let jpeg = jpeg_of(&src);
        let eoi = jpeg.len() - 2;
        let damaged = [&jpeg[..eoi], &[0x12, 0x34, 0x56], &jpeg[eoi..]].concat();
        let mut pixels = vec![0u8; 48 * 32 * 3];
        let out = turbojpeg::Image {
            pixels: &mut pixels[..],
            width: 48,
            pitch: 48 * 3,
            height: 32,
            format: turbojpeg::PixelFormat::RGB,
        };
        assert!(turbojpeg::Decompressor::new().unwrap().decompress(&damaged, out).is_err(), "the premise: TurboJPEG fails it");
        let img = decode(&damaged, "x.jpg", &ImageLimits::default()).unwrap();
        assert_eq!(img.dimensions(), (48, 32));
        let clean = decode(&jpeg, "x.jpg", &ImageLimits::default()).unwrap();
        let diff = img.as_raw().iter().zip(clean.as_raw()).map(|(a, b)| a.abs_diff(*b) as u32).max().unwrap();
        assert!(diff <= 8, "same picture (max difference {diff})");
    }

    #[test]
    fn jpeg_exif_orientation_is_applied() {
        // Left half red, right half blue; orientation 6 means "rotate 90° clockwise to display".
        let src = RgbImage::from_fn(64, 32, |x, _| if x < 32 { image::Rgb([250, 0, 0]) } else { image::Rgb([0, 0, 250]) });
        let jpeg = with_orientation(&jpeg_of(&src), 6);
        assert_eq!(jpeg_orientation(&jpeg), image::metadata::Orientation::Rotate90);
        let img = decode(&jpeg, "x.jpg", &ImageLimits::default()).unwrap();
        assert_eq!(img.dimensions(), (32, 64));
        // After a clockwise turn the left half (red) is on top.
        assert!(
            img.get_pixel(16, 8)[0] > 200 && img.get_pixel(16, 56)[2] > 200,
            "{:?} {:?}",
            img.get_pixel(16, 8),
            img.get_pixel(16, 56)
        );
        assert_eq!(jpeg_orientation(&jpeg_of(&src)), image::metadata::Orientation::NoTransforms);
    }

    #[test]
    fn reused_buffers_give_the_same_tensor() {
        let p = Preprocessor::new(PreprocessorConfig::load_default());
        let a = jpeg_of(&RgbImage::from_fn(300, 200, |x, y| image::Rgb([x as u8, y as u8, 40])));
        let b = jpeg_of(&RgbImage::from_fn(120, 500, |x, y| image::Rgb([40, x as u8, y as u8])));
        let first = p.load(&a, "a.jpg", &ImageLimits::default()).unwrap();
        let _ = p.load(&b, "b.jpg", &ImageLimits::default()).unwrap();
        assert_eq!(first, p.load(&a, "a.jpg", &ImageLimits::default()).unwrap());
        assert_eq!(first, p.run(&decode(&a, "a.jpg", &ImageLimits::default()).unwrap()));
    }

    #[test]
    fn byte_limit_is_enforced() {
        let limits = ImageLimits { max_bytes: 100, ..Default::default() };
        assert!(matches!(kind(decode(&png(64, 64), "x.png", &limits)), ImageErrorKind::TooManyBytes { .. }));
    }

    #[test]
    fn pixel_limit_is_checked_before_decoding() {
        let limits = ImageLimits { max_pixels: 1000, ..Default::default() };
        assert!(matches!(kind(decode(&png(64, 64), "x.png", &limits)), ImageErrorKind::TooLarge { .. }));
    }

    #[test]
    fn enormous_declared_dimensions_are_refused_without_allocating() {
        // A PNG header that claims 100000 x 100000 pixels, followed by almost nothing.
        let mut bytes = png(1, 1);
        bytes[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let k = kind(decode(&bytes, "x.png", &ImageLimits::default()));
        assert!(matches!(k, ImageErrorKind::TooLarge { .. } | ImageErrorKind::Decode(_)), "{k:?}");
    }

    #[test]
    fn alpha_is_composited_onto_white() {
        let img =
            image::RgbaImage::from_fn(
                2,
                1,
                |x, _| if x == 0 { image::Rgba([0, 0, 0, 0]) } else { image::Rgba([0, 100, 200, 255]) },
            );
        let rgb = to_rgb_on_white(DynamicImage::ImageRgba8(img));
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(rgb.get_pixel(1, 0).0, [0, 100, 200]);
    }

    #[test]
    fn resize_target_matches_transformers() {
        let p = Preprocessor::new(PreprocessorConfig::load_default());
        assert_eq!(p.resize_target(640, 480), (298, 224));
        assert_eq!(p.resize_target(90, 400), (224, 995));
        assert_eq!(p.resize_target(224, 224), (224, 224));
    }

    #[test]
    fn other_sizes_and_stats_just_work() {
        let mut cfg = PreprocessorConfig::load_default();
        cfg.size = SizeSpec::ShortestEdge { shortest_edge: 64 };
        cfg.crop_size = crate::model::CropSpec::HeightWidth { height: 64, width: 48 };
        cfg.image_mean = [0.5; 3];
        cfg.image_std = [0.5; 3];
        let p = Preprocessor::new(cfg);
        let white = RgbImage::from_pixel(300, 200, image::Rgb([255, 255, 255]));
        let t = p.run(&white);
        assert_eq!(t.len(), 3 * 64 * 48);
        assert!(t.iter().all(|v| (v - 1.0).abs() < 1e-5), "white maps to (1 - 0.5) / 0.5 = 1");
    }
}
