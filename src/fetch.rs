//! `vitrine model fetch`: download a CLIP or SigLIP ONNX export from a Hugging Face-compatible hub.
//!
//! Files are streamed to `NAME.part` and renamed into place only when complete, so an interrupted
//! fetch never leaves a half-written model that looks whole. The endpoint is configurable
//! (`--endpoint`, or `HF_ENDPOINT` as the Hugging Face tools use), which is also how the tests
//! point it at a local server.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use vitrine_model::model::{Variant, PREPROCESSOR_FILE, TOKENIZER_FILE, TOWERS};

/// A known model: where its files are in a hub repository.
pub struct KnownModel {
    pub name: &'static str,
    pub repo: &'static str,
    pub about: &'static str,
}

pub const KNOWN: &[KnownModel] = &[
    KnownModel { name: "clip-vit-b32", repo: "Xenova/clip-vit-base-patch32", about: "OpenAI CLIP ViT-B/32, 512 dims (default)" },
    KnownModel { name: "clip-vit-b16", repo: "Xenova/clip-vit-base-patch16", about: "OpenAI CLIP ViT-B/16, 512 dims" },
    KnownModel { name: "clip-vit-l14", repo: "Xenova/clip-vit-large-patch14", about: "OpenAI CLIP ViT-L/14, 768 dims" },
    // SigLIP exports of transformers.js (SiglipVisionModel / SiglipTextModel: pooler_output). The
    // repositories' file lists were not checked from here (no network): see docs/MODELS.md.
    KnownModel { name: "siglip-b16-224", repo: "Xenova/siglip-base-patch16-224", about: "Google SigLIP B/16 224 px, 768 dims" },
    KnownModel { name: "siglip-b16-256", repo: "Xenova/siglip-base-patch16-256", about: "Google SigLIP B/16 256 px, 768 dims" },
    KnownModel { name: "siglip-l16-384", repo: "Xenova/siglip-large-patch16-384", about: "Google SigLIP L/16 384 px, 1024 dims" },
    KnownModel {
        name: "siglip2-b16-224",
        repo: "onnx-community/siglip2-base-patch16-224-ONNX",
        about: "Google SigLIP 2 B/16 224 px (fixed resolution), 768 dims",
    },
];

/// (file in the model directory, path in the hub repository) for the fp32 model and the towers of
/// each of `variants`: the hub's exports keep every ONNX file under `onnx/`, named as the model
/// directory names them (`onnx/vision_model_quantized.onnx`).
pub fn files(variants: &[Variant]) -> Vec<(String, String)> {
    let mut towers: Vec<Variant> = vec![Variant::Fp32];
    for v in variants {
        if !towers.contains(v) {
            towers.push(*v);
        }
    }
    let mut out: Vec<(String, String)> = towers
        .iter()
        .flat_map(|v| TOWERS.iter().map(move |t| v.onnx_file(t)))
        .map(|f| (f.clone(), format!("onnx/{f}")))
        .collect();
    out.extend([TOKENIZER_FILE, PREPROCESSOR_FILE].map(|f| (f.to_string(), f.to_string())));
    out
}

/// Files fetched when the repository has them (a 404 skips them): `config.json` names the model
/// family (`model_type` `siglip` needs it), `tokenizer_config.json` a SigLIP text length and padding.
const OPTIONAL_FILES: [&str; 2] = ["config.json", "tokenizer_config.json"];

pub struct FetchOptions {
    pub name: String,
    pub endpoint: String,
    pub revision: String,
    pub dest_root: PathBuf,
    pub force: bool,
    /// Variants to fetch beside the fp32 files.
    pub variants: Vec<Variant>,
}

/// Resolve a name to a hub repository: a known short name, or `owner/repo` as is.
pub fn resolve(name: &str) -> Result<(&str, String)> {
    if let Some(k) = KNOWN.iter().find(|k| k.name == name) {
        return Ok((k.name, k.repo.to_string()));
    }
    if name.split('/').count() == 2 && !name.starts_with('/') {
        return Ok((name.rsplit('/').next().unwrap_or(name), name.to_string()));
    }
    let names: Vec<_> = KNOWN.iter().map(|k| k.name).collect();
    bail!("unknown model {name:?}: use one of {} or a hub repository as owner/name", names.join(", "))
}

pub fn fetch(opts: &FetchOptions) -> Result<PathBuf> {
    let (short, repo) = resolve(&opts.name)?;
    let dest = opts.dest_root.join(short);
    std::fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(15))
        .timeout_read(Duration::from_secs(60))
        .user_agent(concat!("vitrine/", env!("CARGO_PKG_VERSION")))
        .build();
    let endpoint = opts.endpoint.trim_end_matches('/');
    for (local, remote) in files(&opts.variants) {
        let target = dest.join(local);
        if target.is_file() && !opts.force {
            eprintln!("{}: already present", target.display());
            continue;
        }
        let url = format!("{endpoint}/{repo}/resolve/{}/{remote}", opts.revision);
        download(&agent, &url, &target).with_context(|| format!("downloading {url}"))?;
    }
    for file in OPTIONAL_FILES {
        let target = dest.join(file);
        if target.is_file() && !opts.force {
            continue;
        }
        let url = format!("{endpoint}/{repo}/resolve/{}/{file}", opts.revision);
        match download(&agent, &url, &target) {
            Ok(()) => {}
            Err(e) if e.downcast_ref::<ureq::Error>().is_some_and(|e| matches!(e, ureq::Error::Status(404, _))) => {}
            Err(e) => return Err(e.context(format!("downloading {url}"))),
        }
    }
    let meta = serde_json::json!({ "name": short, "source": format!("{endpoint}/{repo}@{}", opts.revision) });
    std::fs::write(dest.join("vitrine-model.json"), serde_json::to_vec_pretty(&meta)?)?;
    // Prove the directory meets the contract before saying it is done.
    vitrine_model::ModelDir::open(&dest)?;
    Ok(dest)
}

fn download(agent: &ureq::Agent, url: &str, target: &Path) -> Result<()> {
    let mut last_err = None;
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(500 << attempt));
        }
        match try_download(agent, url, target) {
            Ok(()) => return Ok(()),
            // 4xx will not change on retry.
            Err(e) if e.downcast_ref::<ureq::Error>().is_some_and(|e| matches!(e, ureq::Error::Status(c, _) if *c < 500)) => {
                return Err(e)
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.expect("at least one attempt"))
}

fn try_download(agent: &ureq::Agent, url: &str, target: &Path) -> Result<()> {
    let resp = agent.get(url).call()?;
    let total: Option<u64> = resp.header("content-length").and_then(|v| v.parse().ok());
    let part = target.with_extension("part");
    let mut file = std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?;
    let bar = indicatif::ProgressBar::with_draw_target(total, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template"),
    );
    bar.set_message(target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    let mut reader = resp.into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut written = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n])?;
        written += n as u64;
        bar.set_position(written);
    }
    bar.finish_and_clear();
    if let Some(t) = total {
        if t != written {
            bail!("connection closed after {written} of {t} bytes");
        }
    }
    file.sync_all()?;
    std::fs::rename(&part, target)?;
    eprintln!("{}: {written} bytes", target.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_map_to_their_hub_repositories() {
        for (short, repo) in [
            ("clip-vit-b32", "Xenova/clip-vit-base-patch32"),
            ("siglip-b16-224", "Xenova/siglip-base-patch16-224"),
            ("siglip-b16-256", "Xenova/siglip-base-patch16-256"),
            ("siglip-l16-384", "Xenova/siglip-large-patch16-384"),
            ("siglip2-b16-224", "onnx-community/siglip2-base-patch16-224-ONNX"),
        ] {
            assert_eq!(resolve(short).unwrap(), (short, repo.to_string()), "{short}");
        }
        // A repository given in full lands in a folder named after its last part.
        assert_eq!(
            resolve("Xenova/siglip-base-patch16-224").unwrap(),
            ("siglip-base-patch16-224", "Xenova/siglip-base-patch16-224".into())
        );
        let err = resolve("siglip").unwrap_err().to_string();
        assert!(err.contains("siglip-b16-224") && err.contains("clip-vit-b32"), "{err}");
        let names: std::collections::HashSet<_> = KNOWN.iter().map(|k| k.name).collect();
        assert_eq!(names.len(), KNOWN.len(), "short names are unique");
    }

    #[test]
    fn variants_map_to_the_hubs_onnx_files() {
        let names = |v: &[Variant]| files(v).into_iter().map(|(l, r)| format!("{l}={r}")).collect::<Vec<_>>();
        let base = [
            "vision_model.onnx=onnx/vision_model.onnx",
            "text_model.onnx=onnx/text_model.onnx",
            "tokenizer.json=tokenizer.json",
            "preprocessor_config.json=preprocessor_config.json",
        ];
        assert_eq!(names(&[]), base);
        assert_eq!(names(&[Variant::Fp32]), base, "fp32 is always fetched, once");
        let q = names(&[Variant::Quantized, Variant::Fp16, Variant::Quantized]);
        for want in [
            "vision_model_quantized.onnx=onnx/vision_model_quantized.onnx",
            "text_model_quantized.onnx=onnx/text_model_quantized.onnx",
            "vision_model_fp16.onnx=onnx/vision_model_fp16.onnx",
            "text_model_fp16.onnx=onnx/text_model_fp16.onnx",
        ] {
            assert!(q.contains(&want.to_string()), "{want} in {q:?}");
        }
        assert_eq!(q.len(), 8);
        // What the model directory will look for is what gets fetched.
        for v in Variant::ALL {
            for t in TOWERS {
                assert!(files(&[v]).iter().any(|(l, _)| *l == v.onnx_file(t)));
            }
        }
    }
}
