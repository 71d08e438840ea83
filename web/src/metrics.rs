//! Metrics: Prometheus series for scraping, plus a short in-memory window per route for the
//! admin dashboard's charts (percentiles, a histogram and queries per second).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use serde::Serialize;

pub struct Metrics {
    pub registry: Registry,
    pub http: HistogramVec,
    pub inference: HistogramVec,
    pub queue_depth: IntGauge,
    pub index: IntGaugeVec,
    /// Text-query embedding cache: `hits`, `misses`, `entries`, `capacity` (read at scrape time).
    pub text_cache: IntGaugeVec,
    recent: Mutex<HashMap<String, VecDeque<(Instant, f64)>>>,
}

/// The `method` label of a request: the standard methods by name, anything else as `OTHER`, so
/// a client inventing methods cannot create series without bound.
pub fn method_label(m: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// Latency buckets in milliseconds for the dashboard histogram.
const BUCKETS_MS: [f64; 10] = [1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];
const WINDOW: Duration = Duration::from_secs(300);

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RouteHealth {
    pub route: String,
    pub count: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub buckets: Vec<Bucket>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Bucket {
    pub le_ms: Option<f64>,
    pub count: usize,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let secs = vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        let http = HistogramVec::new(
            HistogramOpts::new("vitrine_http_request_duration_seconds", "HTTP request latency by route").buckets(secs.clone()),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let inference = HistogramVec::new(
            HistogramOpts::new("vitrine_inference_seconds", "Model inference time by tower").buckets(secs),
            &["tower"],
        )
        .expect("valid metric");
        let queue_depth =
            IntGauge::new("vitrine_inference_queue_depth", "Requests waiting for or running inference").expect("valid");
        let index =
            IntGaugeVec::new(Opts::new("vitrine_index_size", "Index sizes of the live generation"), &["what"]).expect("valid");
        let text_cache = IntGaugeVec::new(
            Opts::new("vitrine_text_cache", "Text-query embedding cache: hits and misses since start, entries, capacity"),
            &["what"],
        )
        .expect("valid");
        for c in [
            Box::new(http.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(inference.clone()),
            Box::new(queue_depth.clone()),
            Box::new(index.clone()),
            Box::new(text_cache.clone()),
        ] {
            registry.register(c).expect("registered once");
        }
        Metrics { registry, http, inference, queue_depth, index, text_cache, recent: Mutex::new(HashMap::new()) }
    }

    /// The text-embedding cache's counters, read at scrape time (hit rate = hits / (hits + misses)).
    pub fn set_text_cache(&self, c: vitrine_searcher::service::CacheStats) {
        for (k, v) in [("hits", c.hits), ("misses", c.misses), ("entries", c.entries as u64), ("capacity", c.capacity as u64)] {
            self.text_cache.with_label_values(&[k]).set(v as i64);
        }
    }

    pub fn set_queue_depth(&self, depth: usize) {
        self.queue_depth.set(depth as i64);
    }

    /// The live generation's sizes, read at scrape time.
    pub fn set_index(&self, m: &vitrine_store::generation::Manifest) {
        for (k, v) in
            [("products", m.products), ("vectors", m.points()), ("tombstones", m.tombstones()), ("generation", m.generation)]
        {
            self.index.with_label_values(&[k]).set(v as i64);
        }
    }

    pub fn observe(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.http.with_label_values(&[route, method, &status.to_string()]).observe(elapsed.as_secs_f64());
        let now = Instant::now();
        let mut recent = self.recent.lock();
        let q = recent.entry(route.to_string()).or_default();
        q.push_back((now, elapsed.as_secs_f64() * 1000.0));
        while q.front().is_some_and(|(t, _)| now.duration_since(*t) > WINDOW) {
            q.pop_front();
        }
        if q.len() > 50_000 {
            q.pop_front();
        }
    }

    pub fn render(&self) -> String {
        let mut buf = vec![];
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }

    /// Per-route latency over the last five minutes, and queries per second over the last minute.
    pub fn health(&self) -> (Vec<RouteHealth>, Vec<u32>) {
        let now = Instant::now();
        let recent = self.recent.lock();
        let mut qps = vec![0u32; 60];
        let mut routes = vec![];
        for (route, q) in recent.iter() {
            let mut ms: Vec<f64> = q.iter().filter(|(t, _)| now.duration_since(*t) <= WINDOW).map(|(_, m)| *m).collect();
            if route.starts_with("/v1/search") || route.ends_with("/similar") {
                for (t, _) in q.iter() {
                    let age = now.duration_since(*t).as_secs() as usize;
                    if age < 60 {
                        qps[59 - age] += 1;
                    }
                }
            }
            if ms.is_empty() {
                continue;
            }
            ms.sort_by(f64::total_cmp);
            let pct = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
            let mut buckets: Vec<Bucket> = BUCKETS_MS.iter().map(|le| Bucket { le_ms: Some(*le), count: 0 }).collect();
            buckets.push(Bucket { le_ms: None, count: 0 });
            for m in &ms {
                let i = BUCKETS_MS.iter().position(|le| m <= le).unwrap_or(BUCKETS_MS.len());
                buckets[i].count += 1;
            }
            routes.push(RouteHealth {
                route: route.clone(),
                count: ms.len(),
                p50_ms: pct(0.5),
                p95_ms: pct(0.95),
                p99_ms: pct(0.99),
                buckets,
            });
        }
        routes.sort_by(|a, b| a.route.cmp(&b.route));
        (routes, qps)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::Method;

    use super::*;

    #[test]
    fn invented_methods_share_one_label_and_render_as_one_series() {
        for (m, want) in [(Method::GET, "GET"), (Method::PATCH, "PATCH"), (Method::TRACE, "TRACE")] {
            assert_eq!(method_label(&m), want);
        }
        let metrics = Metrics::new();
        for name in ["FOO", "BAR", "X-1", "PROPFIND"] {
            let m = Method::from_bytes(name.as_bytes()).unwrap();
            assert_eq!(method_label(&m), "OTHER");
            metrics.observe("/v1/search", method_label(&m), 405, Duration::from_millis(1));
        }
        let text = metrics.render();
        assert!(text.contains("method=\"OTHER\""), "{text}");
        assert!(!["FOO", "BAR", "X-1", "PROPFIND"].iter().any(|n| text.contains(&format!("method=\"{n}\""))), "{text}");
    }
}
