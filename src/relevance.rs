//! `vitrine eval` and `vitrine tune`: judged-query evaluation and tuning through the service's own
//! query path (`vitrine_web::query_service`, the read side `serve` builds). The metrics and the
//! search over settings live in `vitrine_searcher::{eval, tune}`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use vitrine_model::{Embedder, ModelSlot};
use vitrine_searcher::eval::{self, EvalReport, ImageSource};
use vitrine_searcher::service::QueryService;
use vitrine_searcher::tune::{self, TuneOptions};
use vitrine_searcher::Fusion;
use vitrine_web::config::ServeConfig;

/// How long `tune` waits for another writer before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(30);

fn open(config: &ServeConfig, queries: &Path) -> Result<(Arc<QueryService>, Vec<eval::JudgedQuery>)> {
    // The judged file first: a typo there should not cost a model load.
    let judged = eval::read_judged(queries).with_context(|| format!("reading judged queries {}", queries.display()))?;
    if judged.is_empty() {
        bail!("{} holds no judged queries; one JSON object per line, see docs/RELEVANCE.md", queries.display());
    }
    let slot = ModelSlot::default();
    let service = vitrine_web::query_service(config, slot)?;
    if !service.searcher().has_index() {
        bail!("{} holds no index yet; build one with `vitrine index CATALOG --data {0}`", config.data.display());
    }
    let model: Arc<dyn Embedder> = Arc::new(crate::load_model_for(&config.model, &config.data, service.searcher().engine())?);
    service.set_model(model)?;
    Ok((service, judged))
}

fn folder_of(queries: &Path) -> PathBuf {
    queries.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// `vitrine eval`.
pub fn eval(config: &ServeConfig, queries: &Path, k: usize, fusions: &[String], json: bool) -> Result<()> {
    let settings: Vec<Option<Fusion>> = if fusions.is_empty() {
        vec![None]
    } else {
        fusions
            .iter()
            .map(|f| {
                let fusion: Fusion = serde_json::from_str(f).map_err(|e| anyhow!("--fusion {f}: {e}"))?;
                fusion.validate().map_err(|e| anyhow!("--fusion {f}: {e}"))?;
                Ok(Some(fusion))
            })
            .collect::<Result<_>>()?
    };
    vitrine_searcher::validate_paging(k, 0).map_err(|e| anyhow!("--k: {e}"))?;
    let (service, judged) = open(config, queries)?;
    let folder = folder_of(queries);
    let images = ImageSource::Folder(&folder);
    let mut runs = vec![];
    for f in settings {
        runs.push(eval::run(&service, &|| service.admit(), &judged, &images, k, f)?);
    }
    if json {
        let mut first = serde_json::to_value(&runs[0])?;
        if runs.len() > 1 {
            first["compare"] = serde_json::to_value(&runs)?;
        }
        println!("{first}");
    } else {
        let labelled: Vec<(String, &EvalReport)> = runs
            .iter()
            .map(|r| (r.fusion.map_or("service defaults".into(), |f| serde_json::to_string(&f).unwrap_or_default()), r))
            .collect();
        print_table(&labelled);
    }
    Ok(())
}

fn print_table(runs: &[(String, &EvalReport)]) {
    println!("{} queries, k = {}", runs[0].1.queries, runs[0].1.k);
    println!(
        "{:<34} {:>9} {:>9} {:>10} {:>7} {:>8} {:>6} {:>8} {:>8}",
        "setting / channel", "recall@1", "recall@5", "recall@10", "mrr", "ndcg@10", "fpr", "p50 ms", "p99 ms"
    );
    for (name, r) in runs {
        let row = |label: &str, m: &eval::Metrics, extra: String| {
            println!(
                "{label:<34} {:>9.3} {:>9.3} {:>10.3} {:>7.3} {:>8.3} {extra}",
                m.recall_1, m.recall_5, m.recall_10, m.mrr, m.ndcg_10
            );
        };
        let short: String = name.chars().take(34).collect();
        row(&short, &r.fused, format!("{:>6.3} {:>8.1} {:>8.1}", r.false_positive_rate, r.latency_ms.p50, r.latency_ms.p99));
        row("  image channel", &r.channels.image, String::new());
        row("  text channel", &r.channels.text, String::new());
        row("  keyword channel", &r.channels.keyword, String::new());
    }
}

/// `vitrine tune`.
pub fn tune(config: &ServeConfig, queries: &Path, k: usize, dry_run: bool, json: bool) -> Result<()> {
    vitrine_searcher::validate_paging(k, 0).map_err(|e| anyhow!("--k: {e}"))?;
    let (service, judged) = open(config, queries)?;
    let folder = folder_of(queries);
    let (settings, report) = tune::tune(
        &service,
        &|| service.admit(),
        &judged,
        &ImageSource::Folder(&folder),
        TuneOptions { k, ..TuneOptions::default() },
    )?;
    if !dry_run {
        let _lock = vitrine_store::lock::WriteLock::acquire(&config.data, "vitrine tune", LOCK_WAIT)?.ok_or_else(|| {
            anyhow!(
                "another process kept {} busy for {LOCK_WAIT:?}; run `vitrine tune` again when it is done",
                config.data.display()
            )
        })?;
        settings.save(&config.data)?;
    }
    if json {
        println!("{}", serde_json::json!({"settings": settings, "report": report, "saved": !dry_run}));
    } else {
        println!("tuned on {} train queries; held out {}", report.train_queries, report.test_queries);
        for (kind, (b, a)) in &report.train_objective {
            println!("  {kind:<10} train objective {b:.3} -> {a:.3}");
        }
        println!("held-out, current defaults vs tuned:");
        print_table(&[("current defaults".into(), &report.before), ("tuned".into(), &report.after)]);
        println!("{}", serde_json::to_string_pretty(&settings)?);
        if dry_run {
            println!("not saved (--dry-run)");
        } else {
            println!(
                "saved to {}; the service uses them as defaults from its next refresh",
                config.data.join(vitrine_searcher::relevance::RELEVANCE_FILE).display()
            );
        }
    }
    Ok(())
}
