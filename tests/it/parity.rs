//! Parity with the reference pipeline: transformers' CLIPImageProcessor + onnxruntime in Python
//! (scripts/make_clip_fixture.py wrote tests/fixtures/clip/reference.json).

use vitrine_model::pipeline::embed_images;
use vitrine_model::{Embedder, ImageLimits};

use crate::common::{cosine, fixture, read_json, reference_images, tiny_model};

/// The least cosine each image embedding must reach against the reference. The pipeline measured
/// at least 0.99999 on every fixture (see the eprintln lines), so 0.9999 leaves room for decoder
/// differences of a grey level while catching any geometric mistake.
const MIN_IMAGE_COSINE: f64 = 0.9999;

#[test]
fn image_embeddings_match_the_python_reference() {
    let reference = read_json(&fixture("clip/reference.json"));
    let images = reference["images"].as_array().unwrap();
    assert!(images.len() >= 10, "reference covers every image kind");
    let (inputs, wants) = reference_images(&reference);
    let mut failures = vec![];
    let mut seen = 0;
    embed_images(tiny_model(), inputs, 4, &ImageLimits::default(), |file, got| {
        seen += 1;
        let want = &wants[file.as_str()];
        let got = got.unwrap_or_else(|e| panic!("{file}: {e}"));
        let c = cosine(&got, want);
        eprintln!("{file}: cosine {c:.7}");
        if c < MIN_IMAGE_COSINE {
            failures.push(format!("{file}: cosine {c:.7} < {MIN_IMAGE_COSINE}"));
        }
    });
    assert_eq!(seen, images.len());
    assert!(failures.is_empty(), "{failures:#?}");
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// One grey level in normalized units is 1/255/std ≈ 0.015; the tolerances below are in those.
const LEVEL: f64 = 1.0 / 255.0 / 0.2613;

/// The reference stores, per image, each channel's mean and (population) std over the 224×224
/// tensor and the first 16 values of the red channel's top row. Means and stds alone do not see
/// flips, rotations or shifts; the top-left corner row does.
#[test]
fn preprocessed_pixels_match_the_reference() {
    let reference = read_json(&fixture("clip/reference.json"));
    let model = tiny_model();
    let mut failures = vec![];
    for r in reference["images"].as_array().unwrap() {
        let file = r["file"].as_str().unwrap();
        let bytes = std::fs::read(fixture(&format!("clip/images/{file}"))).unwrap();
        let t = model.preprocessor().load(&bytes, file, &ImageLimits::default()).unwrap();
        let plane = t.len() / 3;
        let (want_mean, want_std) = (floats(&r["pixel_stats"]["mean"]), floats(&r["pixel_stats"]["std"]));
        let (mut worst_mean, mut worst_std) = (0f64, 0f64);
        for c in 0..3 {
            let ch = &t[c * plane..(c + 1) * plane];
            let mean = ch.iter().map(|v| f64::from(*v)).sum::<f64>() / plane as f64;
            let std = (ch.iter().map(|v| (f64::from(*v) - mean).powi(2)).sum::<f64>() / plane as f64).sqrt();
            worst_mean = worst_mean.max((mean - want_mean[c]).abs());
            worst_std = worst_std.max((std - want_std[c]).abs());
        }
        let corner = floats(&r["pixel_corner"]);
        let worst_corner = corner.iter().zip(&t).map(|(want, got)| (want - f64::from(*got)).abs()).fold(0f64, f64::max);
        eprintln!(
            "{file}: worst channel mean {:.3}, std {:.3}, corner pixel {:.2} grey levels",
            worst_mean / LEVEL,
            worst_std / LEVEL,
            worst_corner / LEVEL
        );
        if worst_mean > 0.5 * LEVEL || worst_std > 0.5 * LEVEL || worst_corner > 3.0 * LEVEL {
            failures.push(format!(
                "{file}: mean off by {:.3}, std by {:.3}, corner by {:.2} grey levels",
                worst_mean / LEVEL,
                worst_std / LEVEL,
                worst_corner / LEVEL
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn text_ids_and_embeddings_match_the_python_reference() {
    let reference = read_json(&fixture("clip/reference.json"));
    let texts = reference["texts"].as_array().unwrap();
    let model = tiny_model();
    let strings: Vec<&str> = texts.iter().map(|t| t["text"].as_str().unwrap()).collect();
    // Embed as one padded batch: padding must not change any embedding.
    let got = model.embed_texts(&strings).unwrap();
    let mut failures = vec![];
    for (t, v) in texts.iter().zip(&got) {
        let text = t["text"].as_str().unwrap();
        let want_ids: Vec<u32> = t["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let ids = model.token_ids(text).unwrap();
        if ids != want_ids {
            failures.push(format!("{text:?}: ids {ids:?} != {want_ids:?}"));
        }
        let want: Vec<f64> = t["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let c = cosine(v, &want);
        if c < 0.9999 {
            failures.push(format!("{text:?}: cosine {c:.6} < 0.9999"));
        }
    }
    assert!(texts.len() >= 30);
    assert!(failures.is_empty(), "{failures:#?}");
}
