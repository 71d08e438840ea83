//! Parity with the reference pipeline: transformers' CLIPImageProcessor + onnxruntime in Python
//! (scripts/make_clip_fixture.py wrote tests/fixtures/clip/reference.json).

use vitrine_core::pipeline::{embed_images, ImageSource};
use vitrine_core::{Embedder, ImageLimits};

use crate::common::{cosine, fixture, read_json, tiny_model};

#[test]
fn image_embeddings_match_the_python_reference() {
    let reference = read_json(&fixture("clip/reference.json"));
    let images = reference["images"].as_array().unwrap();
    assert!(images.len() >= 10, "reference covers every image kind");
    let inputs: Vec<_> = images
        .iter()
        .map(|r| {
            let file = r["file"].as_str().unwrap().to_string();
            (file.clone(), ImageSource::Path(fixture(&format!("clip/images/{file}"))))
        })
        .collect();
    let mut failures = vec![];
    let mut seen = 0;
    embed_images(tiny_model(), inputs, 4, &ImageLimits::default(), |file, got| {
        seen += 1;
        let want: Vec<f64> = images.iter().find(|r| r["file"] == file.as_str()).unwrap()["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let got = got.unwrap_or_else(|e| panic!("{file}: {e}"));
        let c = cosine(&got, &want);
        eprintln!("{file}: cosine {c:.6}");
        if c < 0.999 {
            failures.push(format!("{file}: cosine {c:.6} < 0.999"));
        }
    });
    assert_eq!(seen, images.len());
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn preprocessed_pixels_match_the_reference_statistics() {
    let reference = read_json(&fixture("clip/reference.json"));
    let model = tiny_model();
    for r in reference["images"].as_array().unwrap() {
        let file = r["file"].as_str().unwrap();
        let bytes = std::fs::read(fixture(&format!("clip/images/{file}"))).unwrap();
        let t = model.preprocessor().load(&bytes, file, &ImageLimits::default()).unwrap();
        let plane = t.len() / 3;
        for c in 0..3 {
            let ch = &t[c * plane..(c + 1) * plane];
            let mean = ch.iter().map(|v| f64::from(*v)).sum::<f64>() / plane as f64;
            let want = r["pixel_stats"]["mean"][c].as_f64().unwrap();
            // One grey level is 1/255/std ≈ 0.015 in normalized units.
            assert!((mean - want).abs() < 0.02, "{file} channel {c}: mean {mean:.4} vs {want:.4}");
        }
    }
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
