//! Operator progress: a bar with rate and ETA on a terminal, plain periodic lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::Mutex;

use vitrine_indexer::{Progress, Summary};

pub struct Bar {
    bar: Option<ProgressBar>,
    label: String,
    started: Instant,
    last_line: Mutex<Instant>,
    total: Mutex<u64>,
}

const LINE_EVERY: Duration = Duration::from_secs(5);

impl Bar {
    pub fn new(label: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b.set_message(label.to_string());
            b
        });
        Bar { bar, label: label.into(), started: Instant::now(), last_line: Mutex::new(Instant::now()), total: Mutex::new(0) }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn start(&self, total: u64) {
        *self.total.lock().expect("lock") = total;
        if let Some(b) = &self.bar {
            b.set_length(total);
        } else {
            eprintln!("{}: {total} records", self.label);
        }
    }

    fn update(&self, processed: u64, s: &Summary) {
        if let Some(b) = &self.bar {
            b.set_position(processed);
            return;
        }
        let mut last = self.last_line.lock().expect("lock");
        let total = *self.total.lock().expect("lock");
        if last.elapsed() < LINE_EVERY && processed < total {
            return;
        }
        *last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = processed as f64 / secs;
        let eta = if rate > 0.0 { total.saturating_sub(processed) as f64 / rate } else { 0.0 };
        eprintln!(
            "{}: {processed}/{total} ({rate:.1}/s, eta {eta:.0}s) ingested {} unchanged {} updated {} failed {}",
            self.label, s.ingested, s.unchanged, s.updated, s.failed
        );
    }
}
