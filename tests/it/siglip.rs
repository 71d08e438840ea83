//! SigLIP and SigLIP 2 (fixed resolution): parity with transformers + onnxruntime on the tiny
//! random models (scripts/make_siglip_fixture.py wrote models/tiny-siglip*/ and
//! tests/fixtures/siglip*/reference.json), hostile model files, and an index built with SigLIP.

use std::path::{Path, PathBuf};

use vitrine_model::model::ModelFamily;
use vitrine_model::pipeline::embed_images;
use vitrine_model::{ClipOnnx, Device, Embedder, ImageLimits, RuntimeOptions};
use vitrine_searcher::{SearchQuery, Searcher};

use crate::common::*;

fn opts() -> RuntimeOptions {
    RuntimeOptions { device: Device::Cpu, intra_threads: 2, ..Default::default() }
}

fn model_dir(kind: &str) -> PathBuf {
    root().join(format!("models/tiny-{kind}"))
}

fn load(kind: &str) -> ClipOnnx {
    ClipOnnx::open(&model_dir(kind), &opts()).unwrap_or_else(|e| panic!("tiny {kind} loads: {e}"))
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// Ids exact (padded to the model's length, on its side, with its pad token) and text cosine ≥ 0.9999.
fn check_texts(kind: &str, model: &ClipOnnx) {
    let reference = read_json(&fixture(&format!("{kind}/reference.json")));
    let texts = reference["texts"].as_array().unwrap();
    assert!(texts.len() >= 30);
    let strings: Vec<&str> = texts.iter().map(|t| t["text"].as_str().unwrap()).collect();
    let got = model.embed_texts(&strings).unwrap();
    let mut failures = vec![];
    let mut worst = 1f64;
    for (t, v) in texts.iter().zip(&got) {
        let text = t["text"].as_str().unwrap();
        let want_ids: Vec<i64> = t["ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        let batch = model.tokenizer().batch(&[text]).unwrap();
        if batch.input_ids != want_ids {
            failures.push(format!("{text:?}: ids {:?} != {want_ids:?}", batch.input_ids));
        }
        let c = cosine(v, &floats(&t["embedding"]));
        worst = worst.min(c);
        if c < 0.9999 {
            failures.push(format!("{text:?}: cosine {c:.6} < 0.9999"));
        }
    }
    eprintln!("{kind}: {} texts, worst cosine {worst:.7}", texts.len());
    assert!(failures.is_empty(), "{kind}: {failures:#?}");
}

/// Every fixture image through the embedding pipeline: cosine ≥ 0.9999 against the reference.
fn check_images(kind: &str, model: &ClipOnnx) {
    let reference = read_json(&fixture(&format!("{kind}/reference.json")));
    let images = reference["images"].as_array().unwrap();
    assert!(images.len() >= 10);
    let (inputs, wants) = reference_images(&reference);
    let mut failures = vec![];
    let mut seen = 0;
    embed_images(model, inputs, 4, &ImageLimits::default(), |file, got| {
        seen += 1;
        let c = cosine(&got.unwrap_or_else(|e| panic!("{file}: {e}")), &wants[file.as_str()]);
        eprintln!("{kind} {file}: cosine {c:.7}");
        if c < 0.9999 {
            failures.push(format!("{file}: cosine {c:.7} < 0.9999"));
        }
    });
    assert_eq!(seen, images.len());
    // The tensors themselves: each channel's mean within half a grey level, and the red channel's
    // first 16 top-row values within three (a wrong filter or a crop moves these well past that).
    let level = 1.0 / 255.0 / 0.5;
    for r in images {
        let file = r["file"].as_str().unwrap();
        let bytes = std::fs::read(fixture(&format!("clip/images/{file}"))).unwrap();
        let t = model.preprocessor().load(&bytes, file, &ImageLimits::default()).unwrap();
        let plane = t.len() / 3;
        let means = floats(&r["pixel_stats"]["mean"]);
        for (c, want) in means.iter().enumerate() {
            let got = t[c * plane..(c + 1) * plane].iter().map(|v| f64::from(*v)).sum::<f64>() / plane as f64;
            if (got - want).abs() > 0.5 * level {
                failures.push(format!("{file}: channel {c} mean {got:.5} != {want:.5}"));
            }
        }
        let corner = floats(&r["pixel_corner"]);
        let worst = corner.iter().zip(&t).map(|(w, g)| (w - f64::from(*g)).abs()).fold(0f64, f64::max);
        if worst > 3.0 * level {
            failures.push(format!("{file}: top-left row off by {:.2} grey levels", worst / level));
        }
    }
    assert!(failures.is_empty(), "{kind}: {failures:#?}");
}

#[test]
fn siglip_matches_transformers() {
    let m = load("siglip");
    assert_eq!(m.family(), ModelFamily::Siglip);
    assert_eq!(m.preprocessor().output_size(), (192, 192), "size from preprocessor_config.json, no crop");
    assert_eq!(m.tokenizer().max_len(), 64);
    // SentencePiece SigLIP: lower-cased, ASCII punctuation removed, padded on the right with </s> (1).
    let b = m.tokenizer().batch(&["Red, LEATHER!"]).unwrap();
    assert_eq!(b.input_ids, m.tokenizer().batch(&["red leather"]).unwrap().input_ids);
    assert_eq!((b.len, *b.input_ids.last().unwrap()), (64, 1));
    check_texts("siglip", &m);
    check_images("siglip", &m);
}

#[test]
fn siglip2_matches_transformers() {
    let m = load("siglip2");
    assert_eq!(m.family(), ModelFamily::Siglip2);
    assert_eq!(m.preprocessor().output_size(), (224, 224));
    // Gemma tokenizer: lower-cased (punctuation kept), padded on the left as tokenizer_config.json says.
    let b = m.tokenizer().batch(&["Hello, World!"]).unwrap();
    assert_eq!(b.input_ids, m.tokenizer().batch(&["hello, world!"]).unwrap().input_ids);
    assert_ne!(b.input_ids, m.tokenizer().batch(&["hello world"]).unwrap().input_ids);
    assert_eq!(b.input_ids[0], 0, "left padding with <pad>");
    check_texts("siglip2", &m);
    check_images("siglip2", &m);
}

/// A copy of the tiny SigLIP with one file rewritten.
fn siglip_with(dir: &Path, file: &str, contents: &str) -> PathBuf {
    let p = dir.join(format!("m-{}", dir.read_dir().unwrap().count()));
    copy_dir(&model_dir("siglip"), &p);
    std::fs::write(p.join(file), contents).unwrap();
    p
}

/// The tiny SigLIP's tokenizer.json with a fixed-length padding block.
fn fixed_padding(len: u64) -> String {
    let mut t = read_json(&model_dir("siglip").join("tokenizer.json"));
    t["padding"] = serde_json::json!({"strategy": {"Fixed": len}, "direction": "Right", "pad_to_multiple_of": null,
        "pad_id": 1, "pad_type_id": 0, "pad_token": "</s>"});
    t.to_string()
}

#[test]
fn hostile_siglip_files_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let pre = std::fs::read_to_string(model_dir("siglip").join("preprocessor_config.json")).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        ("tokenizer_config.json", r#"{"model_max_length": 0}"#.into(), "out of range"),
        ("tokenizer_config.json", r#"{"model_max_length": -5}"#.into(), "out of range"),
        ("tokenizer_config.json", r#"{"model_max_length": 100000}"#.into(), "out of range"),
        ("tokenizer_config.json", r#"{"model_max_length": 65}"#.into(), "out of range"),
        ("tokenizer_config.json", r#"{"padding_side": "middle"}"#.into(), "padding_side"),
        ("tokenizer_config.json", r#"{"pad_token": "<nope>"}"#.into(), "not in tokenizer.json"),
        ("tokenizer_config.json", r#"{"do_lower_case": "yes"}"#.into(), "do_lower_case"),
        ("tokenizer_config.json", " ".repeat((16 << 20) + 1), "more than this file may hold"),
        ("preprocessor_config.json", pre.replace("\"resample\": 2", "\"resample\": 9"), "not a PIL filter"),
        ("preprocessor_config.json", pre.replace("\"height\": 192", "\"height\": 0"), "out of range"),
        ("preprocessor_config.json", pre.replace("\"height\": 192", "\"height\": 100000"), "out of range"),
        ("preprocessor_config.json", pre.replace("SiglipImageProcessor", "Siglip2ImageProcessor"), "NaFlex"),
        ("config.json", "{".into(), "not valid JSON"),
        ("config.json", r#"{"model_type": "siglip", "text_config": {"max_position_embeddings": -1}}"#.into(), "positive"),
        ("tokenizer.json", fixed_padding(1_000_000_000), "out of range"),
    ];
    for (file, contents, want) in cases {
        let p = siglip_with(dir.path(), file, &contents);
        let err = match ClipOnnx::open(&p, &opts()) {
            Ok(_) => panic!("{file} {:.80}: loaded", contents),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(want), "{file} {:.80}: {err}", contents);
    }
    // A fixed padding in tokenizer.json is the length (here shorter than the position embeddings).
    let p = siglip_with(dir.path(), "tokenizer.json", &fixed_padding(16));
    let m = ClipOnnx::open(&p, &opts()).unwrap();
    assert_eq!(m.tokenizer().batch(&["red leather handbag"]).unwrap().len, 16);
    // Without padding_side, a Gemma tokenizer pads on the left as transformers' class does, a
    // SentencePiece SigLIP one on the right.
    let p2 = dir.path().join("siglip2-no-side");
    copy_dir(&model_dir("siglip2"), &p2);
    let tc = std::fs::read_to_string(p2.join("tokenizer_config.json")).unwrap().replace("\"padding_side\": \"left\",", "");
    assert!(!tc.contains("padding_side"));
    std::fs::write(p2.join("tokenizer_config.json"), &tc).unwrap();
    assert_eq!(ClipOnnx::open(&p2, &opts()).unwrap().tokenizer().batch(&["x"]).unwrap().input_ids[0], 0, "left");
    std::fs::write(p2.join("tokenizer_config.json"), tc.replace("GemmaTokenizer", "SiglipTokenizer")).unwrap();
    assert_ne!(ClipOnnx::open(&p2, &opts()).unwrap().tokenizer().batch(&["x"]).unwrap().input_ids[0], 0, "right");
    // transformers' "no limit" sentinel is not a length: config.json's position count (64) is used.
    let p = siglip_with(dir.path(), "tokenizer_config.json", r#"{"model_max_length": 1000000000000000019884624838656}"#);
    assert_eq!(ClipOnnx::open(&p, &opts()).unwrap().tokenizer().max_len(), 64);
    // Without config.json the directory is a CLIP one, and CLIP's contract (attention_mask) refuses it.
    let p = siglip_with(dir.path(), "vitrine-model.json", "{}");
    std::fs::remove_file(p.join("config.json")).unwrap();
    let err = ClipOnnx::open(&p, &opts()).err().expect("refused").to_string();
    assert!(err.contains("attention_mask"), "{err}");
}

/// Embed → index → search with the tiny SigLIP: the demo catalog indexes, the index records the
/// SigLIP model, and each product's own photo finds that product first.
#[test]
fn an_index_built_with_siglip_searches_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let model = model_dir("siglip");
    let cat = root().join("demo/catalog.jsonl");
    let out = index_json(&cat, &data, &["--model", model.to_str().unwrap(), "--device", "cpu"]);
    assert!(out["ingested"].as_u64().unwrap() >= 30, "{out}");
    assert_eq!(out["failed"], 0, "{out}");
    let s = Searcher::open(&data, 64).unwrap();
    let g = s.snapshot().unwrap();
    assert_eq!(g.manifest.model.name, "tiny-siglip-random");
    assert_eq!(g.manifest.model.dim, 48);
    let m = load("siglip");
    assert_eq!(g.manifest.model.content_hash, m.model_id().content_hash);
    let mut checked = 0;
    for line in std::fs::read_to_string(&cat).unwrap().lines().take(8) {
        let p: serde_json::Value = serde_json::from_str(line).unwrap();
        let bytes = std::fs::read(root().join("demo").join(p["image"].as_str().unwrap())).unwrap();
        let px = m.preprocessor().load(&bytes, "q", &ImageLimits::default()).unwrap();
        let v = m.embed_pixels(&px, 1).unwrap().remove(0);
        let q = SearchQuery { image_vector: Some(v), k: 3, ..Default::default() };
        let hits = s.search(&q).unwrap().hits;
        assert_eq!(hits.first().map(|h| h.id.as_str()), p["id"].as_str(), "{line}");
        checked += 1;
    }
    assert_eq!(checked, 8);
    // A text query runs through the SigLIP text tower against the same index.
    let t = m.embed_texts(&["astronaut portrait poster"]).unwrap().remove(0);
    let hits = s.search(&SearchQuery { text_vector: Some(t), k: 5, ..Default::default() }).unwrap().hits;
    assert!(!hits.is_empty());
}

/// `vitrine model fetch` from a hub that serves the tiny SigLIP as the transformers.js exports lay
/// it out: the optional config files come along, so the fetched folder is a SigLIP model.
#[test]
fn a_fetched_siglip_is_recognised_and_embeds() {
    let endpoint = http_server(|path| match path.strip_prefix("/acme/tiny-siglip/resolve/main/") {
        Some(f) => match std::fs::read(model_dir("siglip").join(f.trim_start_matches("onnx/"))) {
            Ok(bytes) => Reply::Ok(bytes),
            Err(_) => Reply::Status(404),
        },
        None => Reply::Status(404),
    });
    let dest = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(vitrine_bin())
        .args(["model", "fetch", "acme/tiny-siglip", "--endpoint", &endpoint, "--dir"])
        .arg(dest.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fetched = dest.path().join("tiny-siglip");
    for f in ["config.json", "tokenizer_config.json"] {
        assert_eq!(std::fs::read(fetched.join(f)).unwrap(), std::fs::read(model_dir("siglip").join(f)).unwrap(), "{f}");
    }
    let m = ClipOnnx::open(&fetched, &opts()).unwrap();
    assert_eq!(m.family(), ModelFamily::Siglip);
    let want = load("siglip").embed_texts(&["red leather handbag"]).unwrap();
    assert_eq!(m.embed_texts(&["red leather handbag"]).unwrap(), want);
}
