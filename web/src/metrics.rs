//! Metrics: Prometheus series for scraping, plus a short in-memory window per route for the
//! admin dashboard's charts (percentiles, a histogram and queries per second).
//!
//! Every response is counted by status code and, for errors, by the API error code
//! (`vitrine_http_errors_total{code}`; codes are the fixed set of `error.rs`, so labels are
//! bounded). Searches also record where their time went per stage (model towers and channels:
//! `vitrine_search_stage_seconds{stage}`). The dashboard's health view reads the same window,
//! with search routes first and images, thumbnails and UI assets folded into one line, so a page
//! full of thumbnails never crowds search out.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use serde::Serialize;
use vitrine_model::batch::BatchStats;

pub struct Metrics {
    pub registry: Registry,
    pub http: HistogramVec,
    pub inference: HistogramVec,
    pub queue_depth: IntGauge,
    pub index: IntGaugeVec,
    /// Text-query embedding cache: `hits`, `misses`, `entries`, `capacity` (read at scrape time).
    pub text_cache: IntGaugeVec,
    pub query_batches: IntGaugeVec,
    /// Error responses by API error code.
    pub errors: IntCounterVec,
    /// Search time per stage (model towers, channels, fusion).
    pub stages: HistogramVec,
    recent: Mutex<HashMap<String, VecDeque<Sample>>>,
    recent_errors: Mutex<VecDeque<(Instant, &'static str)>>,
    recent_stages: Mutex<HashMap<&'static str, VecDeque<(Instant, f64)>>>,
}

/// One response in the window: when, how long (ms), its status.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    ms: f64,
    status: u16,
}

/// At most this many samples are kept per series of the window.
const WINDOW_CAP: usize = 50_000;

/// Which group a route belongs to on the dashboard: search first, then writes and operations,
/// and every image, thumbnail and UI asset route in one line.
pub fn route_group(route: &str) -> &'static str {
    if route.starts_with("/v1/search") || route.ends_with("/similar") {
        "search"
    } else if route.starts_with("/v1/images")
        || route.starts_with("/v1/thumbs")
        || route.starts_with("/ui/")
        || route == "/"
        || route == "/admin"
    {
        "assets"
    } else {
        "api"
    }
}

/// The stages a search reports, in the order the dashboard shows them.
pub const STAGES: [&str; 7] = ["vision model", "text model", "filter", "vector channels", "keyword channel", "fusion", "hydrate"];

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
    /// `search`, `api` or `assets` (images, thumbnails and UI assets, folded into one line).
    pub group: String,
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
        let query_batches = IntGaugeVec::new(
            Opts::new(
                "vitrine_query_batch",
                "Query micro-batching by tower: model calls and queries since start (mean batch = queries / calls)",
            ),
            &["tower", "what"],
        )
        .expect("valid");
        let errors = IntCounterVec::new(Opts::new("vitrine_http_errors_total", "Error responses by API error code"), &["code"])
            .expect("valid metric");
        let stages = HistogramVec::new(
            HistogramOpts::new("vitrine_search_stage_seconds", "Search time per stage (model towers and channels)")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]),
            &["stage"],
        )
        .expect("valid metric");
        for c in [
            Box::new(http.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(inference.clone()),
            Box::new(queue_depth.clone()),
            Box::new(index.clone()),
            Box::new(text_cache.clone()),
            Box::new(query_batches.clone()),
            Box::new(errors.clone()),
            Box::new(stages.clone()),
        ] {
            registry.register(c).expect("registered once");
        }
        Metrics {
            registry,
            http,
            inference,
            queue_depth,
            index,
            text_cache,
            query_batches,
            errors,
            stages,
            recent: Mutex::new(HashMap::new()),
            recent_errors: Mutex::new(VecDeque::new()),
            recent_stages: Mutex::new(HashMap::new()),
        }
    }

    /// The text-embedding cache's counters, read at scrape time (hit rate = hits / (hits + misses)).
    pub fn set_text_cache(&self, c: vitrine_searcher::service::CacheStats) {
        for (k, v) in [("hits", c.hits), ("misses", c.misses), ("entries", c.entries as u64), ("capacity", c.capacity as u64)] {
            self.text_cache.with_label_values(&[k]).set(v as i64);
        }
    }

    /// The query batchers' counters (text, vision), read at scrape time.
    pub fn set_query_batches(&self, (text, vision): (BatchStats, BatchStats)) {
        for (tower, s) in [("text", text), ("vision", vision)] {
            self.query_batches.with_label_values(&[tower, "calls"]).set(s.calls as i64);
            self.query_batches.with_label_values(&[tower, "queries"]).set(s.inputs as i64);
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
        q.push_back(Sample { at: now, ms: elapsed.as_secs_f64() * 1000.0, status });
        while q.front().is_some_and(|s| now.duration_since(s.at) > WINDOW) {
            q.pop_front();
        }
        if q.len() > WINDOW_CAP {
            q.pop_front();
        }
    }

    /// Count an error response by its API error code (one of the fixed codes of `error.rs`).
    pub fn observe_error(&self, code: &'static str) {
        self.errors.with_label_values(&[code]).inc();
        let now = Instant::now();
        let mut q = self.recent_errors.lock();
        q.push_back((now, code));
        while q.front().is_some_and(|(t, _)| now.duration_since(*t) > WINDOW) || q.len() > WINDOW_CAP {
            q.pop_front();
        }
    }

    /// Record where one search's time went: the model towers that ran and the searcher's stages.
    pub fn observe_search(&self, vision_ms: Option<f64>, text_ms: Option<f64>, t: &vitrine_searcher::Timings) {
        let stages = [
            ("vision model", vision_ms),
            ("text model", text_ms),
            ("filter", Some(t.filter_ms)),
            ("vector channels", Some(t.vector_ms)),
            ("keyword channel", Some(t.keyword_ms)),
            ("fusion", Some(t.fuse_ms)),
            ("hydrate", Some(t.hydrate_ms)),
        ];
        let now = Instant::now();
        let mut recent = self.recent_stages.lock();
        for (stage, ms) in stages {
            let Some(ms) = ms else { continue };
            self.stages.with_label_values(&[stage]).observe(ms / 1000.0);
            let q = recent.entry(stage).or_default();
            q.push_back((now, ms));
            while q.front().is_some_and(|(at, _)| now.duration_since(*at) > WINDOW) || q.len() > WINDOW_CAP {
                q.pop_front();
            }
        }
    }

    /// Responses over the last five minutes by route group and status code, and errors by code.
    pub fn status_counts(&self) -> (Vec<StatusCount>, Vec<ErrorCount>) {
        let now = Instant::now();
        let mut by: std::collections::BTreeMap<(usize, u16), usize> = Default::default();
        for (route, q) in self.recent.lock().iter() {
            let g = GROUPS.iter().position(|g| *g == route_group(route)).unwrap_or(GROUPS.len());
            for s in q.iter().filter(|s| now.duration_since(s.at) <= WINDOW) {
                *by.entry((g, s.status)).or_default() += 1;
            }
        }
        let status = by
            .into_iter()
            .map(|((g, status), count)| StatusCount {
                group: GROUPS.get(g).copied().unwrap_or("api").to_string(),
                class: format!("{}xx", status / 100),
                status,
                count,
            })
            .collect();
        let mut errs: std::collections::BTreeMap<&'static str, usize> = Default::default();
        for (_, code) in self.recent_errors.lock().iter().filter(|(t, _)| now.duration_since(*t) <= WINDOW) {
            *errs.entry(code).or_default() += 1;
        }
        let mut errors: Vec<ErrorCount> =
            errs.into_iter().map(|(code, count)| ErrorCount { code: code.to_string(), count }).collect();
        errors.sort_by(|a, b| b.count.cmp(&a.count).then(a.code.cmp(&b.code)));
        (status, errors)
    }

    /// Latency per search stage over the last five minutes, in [`STAGES`] order.
    pub fn stage_latency(&self) -> Vec<StageLatency> {
        let now = Instant::now();
        let recent = self.recent_stages.lock();
        STAGES
            .iter()
            .filter_map(|stage| {
                let q = recent.get(stage)?;
                let mut ms: Vec<f64> = q.iter().filter(|(t, _)| now.duration_since(*t) <= WINDOW).map(|(_, m)| *m).collect();
                if ms.is_empty() {
                    return None;
                }
                ms.sort_by(f64::total_cmp);
                let pct = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
                Some(StageLatency {
                    stage: stage.to_string(),
                    count: ms.len(),
                    p50_ms: pct(0.5),
                    p95_ms: pct(0.95),
                    p99_ms: pct(0.99),
                })
            })
            .collect()
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
        let mut assets: Vec<f64> = vec![];
        for (route, q) in recent.iter() {
            let mut ms: Vec<f64> = q.iter().filter(|s| now.duration_since(s.at) <= WINDOW).map(|s| s.ms).collect();
            if route_group(route) == "assets" {
                assets.extend(ms);
                continue;
            }
            if route_group(route) == "search" {
                for s in q.iter() {
                    let age = now.duration_since(s.at).as_secs() as usize;
                    if age < 60 {
                        qps[59 - age] += 1;
                    }
                }
            }
            if let Some(r) = route_health(route.clone(), route_group(route), &mut ms) {
                routes.push(r);
            }
        }
        if let Some(r) = route_health("images, thumbnails and UI assets".into(), "assets", &mut assets) {
            routes.push(r);
        }
        // Search first, then the rest of the API, then assets; busiest first within a group.
        let rank = |g: &str| GROUPS.iter().position(|x| *x == g).unwrap_or(GROUPS.len());
        routes.sort_by(|a, b| rank(&a.group).cmp(&rank(&b.group)).then(b.count.cmp(&a.count)).then(a.route.cmp(&b.route)));
        (routes, qps)
    }
}

/// Route groups in the order the dashboard shows them.
const GROUPS: [&str; 3] = ["search", "api", "assets"];

fn route_health(route: String, group: &str, ms: &mut [f64]) -> Option<RouteHealth> {
    if ms.is_empty() {
        return None;
    }
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    let mut buckets: Vec<Bucket> = BUCKETS_MS.iter().map(|le| Bucket { le_ms: Some(*le), count: 0 }).collect();
    buckets.push(Bucket { le_ms: None, count: 0 });
    for m in ms.iter() {
        let i = BUCKETS_MS.iter().position(|le| m <= le).unwrap_or(BUCKETS_MS.len());
        buckets[i].count += 1;
    }
    Some(RouteHealth {
        route,
        group: group.to_string(),
        count: ms.len(),
        p50_ms: pct(0.5),
        p95_ms: pct(0.95),
        p99_ms: pct(0.99),
        buckets,
    })
}

/// Responses of one route group with one status code.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusCount {
    /// `search`, `api` or `assets`.
    pub group: String,
    /// `2xx`, `4xx`, `5xx`…
    pub class: String,
    pub status: u16,
    pub count: usize,
}

/// Error responses with one API error code.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorCount {
    pub code: String,
    pub count: usize,
}

/// Latency of one search stage.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StageLatency {
    pub stage: String,
    pub count: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
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

    #[test]
    fn statuses_and_error_codes_are_counted_and_search_comes_before_assets() {
        let m = Metrics::new();
        let ms = Duration::from_millis(3);
        for _ in 0..50 {
            m.observe("/v1/thumbs/{id}/{n}", "GET", 200, ms);
        }
        m.observe("/ui/{path:.*}", "GET", 200, ms);
        m.observe("/v1/search/text", "POST", 200, ms);
        m.observe("/v1/search/text", "POST", 400, ms);
        m.observe_error("invalid_query");
        m.observe("/v1/search/image", "POST", 503, ms);
        m.observe_error("overloaded");
        m.observe_error("overloaded");
        m.observe("/v1/jobs", "GET", 200, ms);
        let (routes, _) = m.health();
        let names: Vec<&str> = routes.iter().map(|r| r.route.as_str()).collect();
        assert_eq!(names, vec!["/v1/search/text", "/v1/search/image", "/v1/jobs", "images, thumbnails and UI assets"]);
        assert_eq!(routes[3].count, 51);
        let (status, errors) = m.status_counts();
        let get = |g: &str, s: u16| status.iter().find(|c| c.group == g && c.status == s).map(|c| c.count);
        assert_eq!((get("search", 200), get("search", 400), get("search", 503)), (Some(1), Some(1), Some(1)));
        assert_eq!((get("assets", 200), get("api", 200)), (Some(51), Some(1)));
        assert_eq!(status.iter().find(|c| c.status == 503).unwrap().class, "5xx");
        let errs: Vec<(&str, usize)> = errors.iter().map(|e| (e.code.as_str(), e.count)).collect();
        assert_eq!(errs, vec![("overloaded", 2), ("invalid_query", 1)]);
        let text = m.render();
        assert!(text.contains("vitrine_http_errors_total{code=\"overloaded\"} 2"), "{text}");
    }

    #[test]
    fn search_stages_are_recorded_in_order() {
        let m = Metrics::new();
        let t = vitrine_searcher::Timings {
            search_ms: 9.0,
            filter_ms: 0.5,
            vector_ms: 4.0,
            keyword_ms: 2.0,
            fuse_ms: 0.1,
            hydrate_ms: 1.0,
        };
        m.observe_search(None, Some(12.0), &t);
        m.observe_search(Some(30.0), None, &t);
        let stages: Vec<(String, usize)> = m.stage_latency().into_iter().map(|s| (s.stage, s.count)).collect();
        let want: Vec<(String, usize)> =
            STAGES.iter().map(|s| (s.to_string(), if s.ends_with("model") { 1 } else { 2 })).collect();
        assert_eq!(stages, want);
        assert!(m.render().contains("vitrine_search_stage_seconds_count{stage=\"text model\"} 1"));
    }
}
