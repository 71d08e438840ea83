//! Batched image embedding that overlaps decoding with inference.
//!
//! A producer thread cuts the inputs into batches and decodes + preprocesses each batch on a
//! rayon pool ([`decode_threads`]: on a GPU every core but one, the one that feeds the device;
//! on the CPU all of them, shared by turns with the model's own threads), straight into one
//! contiguous tensor; a bounded channel (two batches deep) hands
//! the tensors to the caller's thread, which runs the model. While the model works on batch i,
//! batch i+1 is being decoded, so end-to-end throughput approaches model-only throughput.
//! Failures are per image: a bad file yields an `Err` for that input and the batch goes on.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;

use crate::embed::Embedder;
use crate::preprocess::ImageLimits;
use crate::runtime::Device;
use vitrine_core::error::{CoreError, ImageErrorKind, Result};

/// Where an image's bytes come from.
#[derive(Debug, Clone)]
pub enum ImageSource {
    Path(PathBuf),
    Bytes { name: String, bytes: Arc<[u8]> },
}

impl ImageSource {
    pub fn name(&self) -> String {
        match self {
            ImageSource::Path(p) => p.display().to_string(),
            ImageSource::Bytes { name, .. } => name.clone(),
        }
    }

    fn read(&self, limits: &ImageLimits) -> Result<Arc<[u8]>> {
        match self {
            ImageSource::Bytes { bytes, .. } => Ok(bytes.clone()),
            ImageSource::Path(p) => {
                let name = p.display().to_string();
                let meta = std::fs::metadata(p).map_err(|e| CoreError::image(&name, ImageErrorKind::Read(e.to_string())))?;
                if meta.len() > limits.max_bytes {
                    return Err(CoreError::image(
                        name,
                        ImageErrorKind::TooManyBytes { bytes: meta.len(), limit: limits.max_bytes },
                    ));
                }
                std::fs::read(p).map(Arc::from).map_err(|e| CoreError::image(name, ImageErrorKind::Read(e.to_string())))
            }
        }
    }
}

/// The threads that decode for a model on `device`, of `cores`: on CUDA all but one, which runs
/// the model (it mostly waits on the device, and a decode thread on its core would delay every
/// launch); on the CPU all of them (the model's intra-op threads use the same cores while a batch
/// runs, the decoders while it does not).
pub fn decode_threads(device: Device, cores: usize) -> usize {
    match device {
        Device::Cuda => cores.saturating_sub(1).max(1),
        Device::Cpu | Device::Auto => cores.max(1),
    }
}

/// The pool a model on `device` decodes on: None for the global rayon pool, else one made once.
fn decode_pool(device: Device) -> Option<&'static rayon::ThreadPool> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads = decode_threads(device, cores);
    if threads == rayon::current_num_threads() {
        return None;
    }
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| rayon::ThreadPoolBuilder::new().num_threads(threads).thread_name(|i| format!("decode-{i}")).build().ok())
        .as_ref()
}

/// Embed `inputs` in batches of `batch`, calling `sink(tag, result)` for every input in order.
pub fn embed_images<T, F>(embedder: &dyn Embedder, inputs: Vec<(T, ImageSource)>, batch: usize, limits: &ImageLimits, mut sink: F)
where
    T: Send,
    F: FnMut(T, Result<Vec<f32>>),
{
    let batch = batch.max(1);
    let pre = embedder.preprocessor();
    let len = pre.tensor_len();
    type Prepared<T> = (Vec<T>, Vec<f32>, Vec<Result<()>>);
    let (tx, rx) = crossbeam_channel::bounded::<Prepared<T>>(2);
    let pool = decode_pool(embedder.device());
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut it = inputs.into_iter().peekable();
            while it.peek().is_some() {
                let (tags, sources): (Vec<T>, Vec<ImageSource>) = it.by_ref().take(batch).unzip();
                let mut pixels = vec![0.0f32; sources.len() * len];
                let mut decode = || -> Vec<Result<()>> {
                    sources
                        .par_iter()
                        .zip(pixels.par_chunks_mut(len))
                        .map(|(src, out)| {
                            let bytes = src.read(limits)?;
                            pre.load_into(&bytes, &src.name(), limits, out)
                        })
                        .collect()
                };
                let results = match pool {
                    Some(p) => p.install(decode),
                    None => decode(),
                };
                if tx.send((tags, pixels, results)).is_err() {
                    return;
                }
            }
        });
        for (tags, pixels, results) in rx {
            // Compact the good images so the model never sees a failed slot.
            let ok: Vec<usize> = results.iter().enumerate().filter(|(_, r)| r.is_ok()).map(|(i, _)| i).collect();
            let embedded = if ok.len() == results.len() {
                embedder.embed_pixels(&pixels, ok.len())
            } else {
                let mut packed = Vec::with_capacity(ok.len() * len);
                for &i in &ok {
                    packed.extend_from_slice(&pixels[i * len..(i + 1) * len]);
                }
                embedder.embed_pixels(&packed, ok.len())
            };
            let mut vectors = match embedded {
                Ok(v) => v.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => ok.iter().map(|_| Err(CoreError::Inference { message: e.to_string() })).collect(),
            }
            .into_iter();
            for (tag, r) in tags.into_iter().zip(results) {
                match r {
                    Ok(()) => sink(tag, vectors.next().expect("one vector per good image")),
                    Err(e) => sink(tag, Err(e)),
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::FakeEmbedder;

    #[test]
    fn bad_inputs_fail_alone_and_order_is_kept() {
        let mut png = Vec::new();
        image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(40, 30, image::Rgb([200, 10, 10])))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let good = ImageSource::Bytes { name: "good".into(), bytes: png.into() };
        let bad = ImageSource::Bytes { name: "bad".into(), bytes: Arc::from(&b"nope"[..]) };
        let inputs = vec![(0, good.clone()), (1, bad), (2, good), (3, ImageSource::Path("/nonexistent.jpg".into()))];
        let mut seen = vec![];
        embed_images(&FakeEmbedder::new(16), inputs, 3, &ImageLimits::default(), |t, r| seen.push((t, r.is_ok())));
        assert_eq!(seen, vec![(0, true), (1, false), (2, true), (3, false)]);
    }

    #[test]
    fn a_gpu_leaves_one_core_to_feed_it_and_a_cpu_decodes_on_all() {
        assert_eq!(decode_threads(Device::Cuda, 16), 15);
        assert_eq!(decode_threads(Device::Cuda, 1), 1, "never zero");
        assert_eq!(decode_threads(Device::Cpu, 16), 16);
        assert_eq!(decode_threads(Device::Cpu, 2), 2);
    }
}
