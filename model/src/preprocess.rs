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
//!
//! # Memory: bounded per image, by design
//!
//! The resize never produces pixels the crop throws away: the crop box is mapped back into source
//! coordinates and only that region is resized (see `run_rgb`), so a 1×20000 image costs what a
//! 224×224 one does instead of a 224×4,480,000 intermediate (3 GB). For an accepted `w × h` image
//! (`w·h ≤ max_pixels`, each side `≤ max_side`) and an `oh × ow` output, the heap one call of
//! [`Preprocessor::load`] holds at once is at most [`Preprocessor::working_bytes`]`(w, h)`:
//!
//! - decode: `DECODE_BYTES_PER_PIXEL · w·h + DECODER_BYTES_PER_COLUMN · (w + h) + DECODER_STATE_BYTES`.
//!   The decoded RGB is `3·w·h ≤ 3·max_pixels` bytes; on the way, the decoder's native buffer (at most
//!   8 bytes a pixel, 16-bit RGBA) and one converted copy (RGBA8, then RGB8) coexist, which is
//!   `8 + 4 = 12` bytes a pixel, plus the decoders' row buffers and fixed state (inflate window,
//!   Huffman tables).
//! - resize: the decoded `3·w·h` stays alive, plus the crop window `≤ 3·oh·ow`, plus
//!   fast_image_resize's intermediate (the vertical pass over the source columns the window
//!   needs) `≤ 3·w·oh`, plus its weight tables `≤ COEFF_BYTES_PER_PIXEL · (w + h + ow + oh)`.
//! - output: the `4·3·oh·ow`-byte tensor `load` returns (`load_into` writes the caller's).
//!
//! With the defaults (50 MP, 20000 a side, 224×224) the worst case is about 12 · 50 MP = 600 MB,
//! in the decoder, and it scales with what the client sent (the pixel limit is the knob); the
//! resize adds at most `3·20000·224` ≈ 13 MB whatever the aspect ratio. libjpeg-turbo allocates
//! its own state on the C heap (a progressive JPEG keeps its coefficients: `≈ 6·w·h` bytes),
//! outside this count but behind the same dimension check. Each thread keeps its decode buffer
//! and the resizer's intermediate for the next image only while they are under `KEEP_BYTES`.
//! `model/tests/images.rs` checks the bound with a counting allocator.

use std::io::Cursor;

use fast_image_resize as fr;
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::model::{PreprocessorConfig, SizeSpec};
use vitrine_core::error::{CoreError, ImageErrorKind, Result};

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
    reader.limits(l.clone());
    let mut decoder = reader.into_decoder().map_err(|e| classify(e, input, limits))?;
    let (w, h) = decoder.dimensions();
    check_dimensions(w, h, input, limits)?;
    // Now that the size is known, no decoder buffer needs more than the image it describes: this
    // stops a GIF whose first frame claims far more pixels than its screen (the frame buffer is
    // allocated before any pixel is read, checked only against `max_alloc`).
    l.max_alloc = Some(decoder.total_bytes().saturating_add(DECODER_METADATA_BYTES));
    decoder.set_limits(l).map_err(|e| classify(e, input, limits))?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let img = DynamicImage::from_decoder(decoder).map_err(|e| match e {
        // The size passed the checks, so going over the budget means the file contradicts itself.
        image::ImageError::Limits(_) => {
            CoreError::image(input, ImageErrorKind::Decode(format!("needs more memory than its {w}x{h} pixels")))
        }
        other => classify(other, input, limits),
    })?;
    // Flatten first, then orient: both are per-pixel or pixel moves, so the order does not change
    // the result, but rotating 3-byte RGB instead of the native type (up to 8 bytes a pixel for
    // 16-bit RGBA) keeps the rotation's second buffer small.
    let rgb = to_rgb_on_white(img);
    if orientation == image::metadata::Orientation::NoTransforms {
        return Ok(rgb);
    }
    let mut img = DynamicImage::ImageRgb8(rgb);
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
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

/// Decode peak per pixel: the native buffer (≤ 8 bytes, 16-bit RGBA) beside one converted copy (≤ 4).
const DECODE_BYTES_PER_PIXEL: u64 = 12;
/// Decoder row buffers per pixel of width or height (a 16-bit RGBA row is 8 bytes a pixel; the PNG
/// decoder keeps the current and previous row, plus slack for WebP's and GIF's line state).
const DECODER_BYTES_PER_COLUMN: u64 = 32;
/// Fixed decoder state: inflate windows and tables, Huffman tables, reader structs, plus what
/// `max_alloc` lets a decoder take beyond the pixels ([`DECODER_METADATA_BYTES`]).
const DECODER_STATE_BYTES: u64 = 1 << 20;
/// What a decoder may allocate beyond the pixels it declared (ICC profile, text chunks, a GIF frame
/// larger than its screen): half of [`DECODER_STATE_BYTES`], so the state `max_alloc` does not
/// see (LZW and inflate tables, read buffers) has the other half. With the whole allowance here, a
/// frame wider than its screen plus the GIF decoder's tables went over the bound (issue 10 fuzz).
const DECODER_METADATA_BYTES: u64 = DECODER_STATE_BYTES / 2;
/// fast_image_resize's weight tables per source or output pixel of each axis: an f64 weight, its
/// fixed-point copy and bounds for up to four taps per source pixel when shrinking.
const COEFF_BYTES_PER_PIXEL: u64 = 64;

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

    /// An upper bound on the heap bytes one [`load`](Self::load) of an accepted `w × h` image holds
    /// at once, on a thread whose reused buffers start empty; the formula is in the module doc.
    /// libjpeg-turbo's own allocations (C heap) are not included.
    pub fn working_bytes(&self, w: u32, h: u32) -> u64 {
        let (w, h, oh, ow) = (u64::from(w), u64::from(h), u64::from(self.out_h), u64::from(self.out_w));
        let decode = DECODE_BYTES_PER_PIXEL * w * h + DECODER_BYTES_PER_COLUMN * (w + h) + DECODER_STATE_BYTES;
        let resize = 3 * w * h + 3 * oh * ow + 3 * w * oh + COEFF_BYTES_PER_PIXEL * (w + h + ow + oh);
        let output = 4 * 3 * oh * ow;
        decode.max(resize) + output
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
            s.shrink();
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
    ///
    /// Only the part of the resized image the center crop keeps is ever produced: the crop box is
    /// mapped back into source coordinates and fast_image_resize resizes just that region. Its
    /// convolution weights are computed against the whole source (taps just outside the box are
    /// read, clamped at the image edges), so the result equals resize-then-crop, but the buffer is
    /// at most the output's size whatever the aspect ratio (a 1×20000 image no longer becomes
    /// 224×4,480,000 pixels on the way).
    fn run_rgb(&self, src: &[u8], w: u32, h: u32, out: &mut [f32], resized: &mut Vec<u8>, resizer: &mut fr::Resizer) {
        assert_eq!(out.len(), self.tensor_len(), "output slice has the wrong length");
        let (rw, rh) = self.resize_target(w, h);
        let (oh, ow) = (self.out_h, self.out_w);
        // Center crop offsets as transformers computes them; negative offsets mean padding with black.
        let (top, left) = if self.cfg.do_center_crop {
            ((i64::from(rh) - i64::from(oh)) / 2, (i64::from(rw) - i64::from(ow)) / 2)
        } else {
            (0, 0)
        };
        let (ys, xs) = (visible_span(top, oh, rh), visible_span(left, ow, rw));
        let (win_w, win_h) = (xs.end - xs.start, ys.end - ys.start);
        // The visible window as packed RGB rows: `stride` bytes per row, starting at `base`.
        let (window, stride, base): (&[u8], usize, usize) = if win_w == 0 || win_h == 0 {
            (&[], 0, 0)
        } else if (rw, rh) == (w, h) {
            let stride = w as usize * 3;
            (src, stride, ys.start as usize * stride + xs.start as usize * 3)
        } else {
            let src = fr::images::ImageRef::new(w, h, src, fr::PixelType::U8x3).expect("RGB buffer");
            let mut vec = std::mem::take(resized);
            vec.resize(win_w as usize * win_h as usize * 3, 0);
            let mut dst = fr::images::Image::from_vec_u8(win_w, win_h, vec, fr::PixelType::U8x3).expect("sized for the window");
            let (bx, by) = (source_span(&xs, w, rw), source_span(&ys, h, rh));
            let opts = fr::ResizeOptions::new().resize_alg(self.alg).crop(bx.0, by.0, bx.1, by.1);
            resizer.resize(&src, &mut dst, &opts).expect("same pixel type, crop box inside the source");
            *resized = dst.into_vec();
            (resized.as_slice(), win_w as usize * 3, 0)
        };
        let scale = if self.cfg.do_rescale { self.cfg.rescale_factor } else { 1.0 };
        let (mean, std) = if self.cfg.do_normalize { (self.cfg.image_mean, self.cfg.image_std) } else { ([0.0; 3], [1.0; 3]) };
        // y = x * scale / std - mean / std, one multiply-add per value.
        let mul: [f32; 3] = std::array::from_fn(|c| scale / std[c]);
        let add: [f32; 3] = std::array::from_fn(|c| -mean[c] / std[c]);
        let (oh, ow) = (oh as usize, ow as usize);
        let plane = oh * ow;
        let (r_out, rest) = out.split_at_mut(plane);
        let (g_out, b_out) = rest.split_at_mut(plane);
        if (win_w as usize, win_h as usize) != (ow, oh) {
            // Padding is black, which normalizes to `add`.
            r_out.fill(add[0]);
            g_out.fill(add[1]);
            b_out.fill(add[2]);
        }
        // Where the window lands in the output.
        let (oy, ox) = ((i64::from(ys.start) - top) as usize, (i64::from(xs.start) - left) as usize);
        for wy in 0..win_h as usize {
            let start = base + wy * stride;
            let src_row = &window[start..start + win_w as usize * 3];
            let row = (oy + wy) * ow + ox;
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

/// The part `[start, end)` of `0..len` that a crop of `size` starting at `offset` covers (offsets
/// outside `0..len` are padding).
fn visible_span(offset: i64, size: u32, len: u32) -> std::ops::Range<u32> {
    let start = offset.clamp(0, i64::from(len));
    let end = (offset + i64::from(size)).clamp(start, i64::from(len));
    start as u32..end as u32
}

/// The source region `(start, length)` that the resized pixels `span` (of `resized` in all) come
/// from, for a source of `len` pixels; always inside `0..len`, as fast_image_resize requires.
fn source_span(span: &std::ops::Range<u32>, len: u32, resized: u32) -> (f64, f64) {
    let scale = f64::from(len) / f64::from(resized);
    let start = f64::from(span.start) * scale;
    let end = if span.end == resized { f64::from(len) } else { (f64::from(span.end) * scale).min(f64::from(len)) };
    let mut length = end - start;
    // `start + (end - start)` can round one ulp past `end`; step the length down until it fits.
    while start + length > f64::from(len) {
        length = f64::from_bits(length.to_bits() - 1);
    }
    (start, length)
}

/// Per-thread buffers reused from one image to the next (decoded pixels, the resized crop window,
/// the resizer's own).
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
        // `resized` holds at most one output image; the resizer's intermediate grows with the
        // source width (see the module doc), so a wide upload can leave it large.
        if self.resizer.size_of_internal_buffers() > Self::KEEP_BYTES {
            self.resizer.reset_internal_buffers();
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

    /// CRC-32 (IEEE, reflected), as PNG chunks carry it.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    /// A `w × h` PNG header over a 1×1 image's data: a valid file that lies about its size.
    fn png_claiming(w: u32, h: u32) -> Vec<u8> {
        let mut bytes = png(1, 1);
        bytes[16..20].copy_from_slice(&w.to_be_bytes());
        bytes[20..24].copy_from_slice(&h.to_be_bytes());
        // The IHDR chunk's CRC covers its type and data (bytes 12..29), so the edit stays valid.
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn enormous_declared_dimensions_are_refused_without_allocating() {
        assert_eq!(png_claiming(1, 1), png(1, 1), "the CRC is recomputed correctly");
        // Over the side limit (100000 > 20000), and within it but over the pixel limit.
        for (w, h) in [(100_000, 100_000), (10_000, 10_000)] {
            let k = kind(decode(&png_claiming(w, h), "x.png", &ImageLimits::default()));
            assert!(matches!(k, ImageErrorKind::TooLarge { .. }), "{w}x{h}: {k:?}");
        }
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

    /// A deterministic texture with detail at every scale, so a misplaced tap or a one-pixel shift
    /// changes the output.
    fn texture(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(2_246_822_519)).rotate_left(13);
            image::Rgb([(v >> 24) as u8, (v >> 16) as u8, ((x * 7 + y * 3) % 256) as u8])
        })
    }

    /// What the pipeline did before the windowed resize: resize the whole image, then crop.
    fn resize_whole_then_crop(p: &Preprocessor, img: &RgbImage) -> Vec<f32> {
        let (rw, rh) = p.resize_target(img.width(), img.height());
        let src = fr::images::ImageRef::new(img.width(), img.height(), img.as_raw(), fr::PixelType::U8x3).unwrap();
        let mut dst = fr::images::Image::new(rw, rh, fr::PixelType::U8x3);
        fr::Resizer::new().resize(&src, &mut dst, &fr::ResizeOptions::new().resize_alg(p.alg)).unwrap();
        let whole = RgbImage::from_raw(rw, rh, dst.into_vec()).unwrap();
        // Resizing is idempotent on the target size, so this run only crops and normalizes.
        assert_eq!(p.resize_target(rw, rh), (rw, rh));
        p.run(&whole)
    }

    #[test]
    fn windowed_resize_equals_resize_then_crop() {
        let mut small_crop = PreprocessorConfig::load_default();
        small_crop.size = SizeSpec::ShortestEdge { shortest_edge: 64 };
        small_crop.crop_size = crate::model::CropSpec::HeightWidth { height: 64, width: 48 };
        let mut bilinear = PreprocessorConfig::load_default();
        bilinear.resample = 2;
        // Resized smaller than the crop on one axis and larger on the other: padding and cropping at once.
        let mut padded = PreprocessorConfig::load_default();
        padded.size = SizeSpec::Exact { height: 200, width: 260 };
        let mut no_crop = PreprocessorConfig::load_default();
        no_crop.do_center_crop = false;
        let sizes = [(300, 200), (200, 300), (90, 400), (400, 90), (1, 200), (200, 1), (2, 301), (301, 3), (1, 1)];
        let more = [(224, 224), (225, 224), (224, 225), (1000, 999), (50, 30), (7, 1), (640, 480), (333, 1001)];
        for (name, cfg) in [
            ("default", PreprocessorConfig::load_default()),
            ("small crop", small_crop),
            ("bilinear", bilinear),
            ("padded", padded),
            ("no crop", no_crop),
        ] {
            let p = Preprocessor::new(cfg);
            for &(w, h) in sizes.iter().chain(&more) {
                let img = texture(w, h);
                let (got, want) = (p.run(&img), resize_whole_then_crop(&p, &img));
                let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                // One 8-bit level after normalization by CLIP's smallest std (0.2613) is 0.01501.
                // Resizing only the window rounds a rare pixel up to two levels the other way
                // (measured: 90x400); parity with transformers itself is tests/it/parity.rs.
                assert!(worst <= 0.0301, "{name} {w}x{h}: differs by up to {worst} (one grey level is ~0.015)");
            }
        }
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
