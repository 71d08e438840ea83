//! Operator progress: a bar with rate and ETA on a terminal, plain periodic lines otherwise.
//!
//! Plain lines say where a long run is; they stop short of the end, because the command prints
//! its summary once it is done (a final progress line would say the same thing again).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use vitrine_indexer::{Progress, Summary};

pub struct Bar {
    bar: Option<ProgressBar>,
    label: String,
    started: Instant,
    every: Duration,
    state: Mutex<Lines>,
}

struct Lines {
    out: Box<dyn Write + Send>,
    total: u64,
    last_line: Instant,
}

const LINE_EVERY: Duration = Duration::from_secs(5);

impl Bar {
    pub fn new(label: &str) -> Self {
        if std::io::stderr().is_terminal() {
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b.set_message(label.to_string());
            let mut bar = Bar::lines(label, Box::new(std::io::sink()), LINE_EVERY);
            bar.bar = Some(b);
            return bar;
        }
        Bar::lines(label, Box::new(std::io::stderr()), LINE_EVERY)
    }

    /// Plain lines into `out`, at most one per `every`.
    fn lines(label: &str, out: Box<dyn Write + Send>, every: Duration) -> Self {
        let now = Instant::now();
        Bar { bar: None, label: label.into(), started: now, every, state: Mutex::new(Lines { out, total: 0, last_line: now }) }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn start(&self, total: u64) {
        let mut st = self.state.lock().expect("lock");
        st.total = total;
        if let Some(b) = &self.bar {
            b.set_length(total);
        } else {
            let _ = writeln!(st.out, "{}: {total} records", self.label);
        }
    }

    fn update(&self, processed: u64, s: &Summary) {
        if let Some(b) = &self.bar {
            b.set_position(processed);
            return;
        }
        let mut st = self.state.lock().expect("lock");
        if processed >= st.total || st.last_line.elapsed() < self.every {
            return;
        }
        st.last_line = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = processed as f64 / secs;
        let eta = if rate > 0.0 { st.total.saturating_sub(processed) as f64 / rate } else { 0.0 };
        let line = format!(
            "{}: {processed}/{} ({rate:.1}/s, eta {eta:.0}s) ingested {} unchanged {} updated {} failed {}",
            self.label, st.total, s.ingested, s.unchanged, s.updated, s.failed
        );
        let _ = writeln!(st.out, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn plain_lines_report_the_way_there_and_leave_the_end_to_the_summary() {
        let out = Shared::default();
        let bar = Bar::lines("indexing", Box::new(out.clone()), Duration::ZERO);
        bar.start(3);
        let s = Summary::default();
        bar.update(1, &s);
        bar.update(2, &s);
        // The indexer reports the end twice (last chunk, then after deletions and the build).
        bar.update(3, &s);
        bar.update(3, &s);
        bar.finish();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], "indexing: 3 records");
        assert!(lines[1].starts_with("indexing: 1/3 ") && lines[2].starts_with("indexing: 2/3 "), "{text}");
        assert!(!text.contains("\u{1b}["), "no colour codes: {text:?}");
    }

    #[test]
    fn plain_lines_are_spaced_out() {
        let out = Shared::default();
        let bar = Bar::lines("x", Box::new(out.clone()), Duration::from_secs(3600));
        bar.start(100);
        for i in 1..100 {
            bar.update(i, &Summary::default());
        }
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "x: 100 records\n");
    }
}
