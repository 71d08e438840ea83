//! The `vitrine embed` commands, run as a user would.

use std::process::Command;

use crate::common::{fixture, read_json, tiny_model_dir, vitrine_bin};

fn lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn embed_text_prints_normalized_json_lines_with_ids() {
    let out = Command::new(vitrine_bin())
        .args(["embed", "text", "a photo of a cat", "red leather handbag", "--ids", "--device", "cpu", "--model"])
        .arg(tiny_model_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows = lines(&out);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["input"], "a photo of a cat");
    let reference = read_json(&fixture("clip/reference.json"));
    let want = reference["texts"].as_array().unwrap().iter().find(|t| t["text"] == "a photo of a cat").unwrap();
    assert_eq!(rows[0]["ids"], want["ids"]);
    let v: Vec<f64> = rows[1]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "L2-normalized, got norm {norm}");
}

#[test]
fn embed_image_reports_bad_files_and_embeds_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.jpg");
    std::fs::write(&bad, b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    let good = fixture("clip/images/coffee.jpg");
    let out = Command::new(vitrine_bin())
        .args(["embed", "image", "--device", "cpu", "--model"])
        .arg(tiny_model_dir())
        .arg(&good)
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a failed input makes the exit status non-zero");
    let rows = lines(&out);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["input"], good.display().to_string());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.jpg"), "the error names the input: {err}");
}

#[test]
fn missing_model_directory_is_a_clear_error() {
    let out = Command::new(vitrine_bin()).args(["embed", "text", "x", "--model", "/nonexistent/model"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/model") && err.contains("vitrine model fetch"), "{err}");
}
