//! A small Prometheus registry written for this server: request counts by route
//! and status, latency histograms, and the model worker's batches (size, requests,
//! tokens, time), rendered in the text exposition format (version 0.0.4).
//!
//! Hand-written because the set is small and fixed: a label set is a route known at
//! compile time (never a client-chosen path, so a scan of random URLs cannot grow
//! memory) and a status code. Gauges (queue depth, requests in flight, readiness)
//! are read from the live objects when scraped, so they cannot drift.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use dartboard_api::BatchEvent;

/// Latency buckets in seconds: from a cached-size single text to a full client batch
/// behind a queue.
const SECONDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Texts (or requests) per batch.
const COUNTS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// Tokens per batch or per request.
const TOKENS: &[f64] = &[16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0];

/// The routes requests are counted under; anything else is `other`.
pub const ROUTES: &[&str] = &["/v1/embeddings", "/embed", "/rerank", "/health", "/info", "/metrics"];

/// The route label for a matched path.
pub fn route_label(matched: Option<&str>) -> &'static str {
    matched.and_then(|m| ROUTES.iter().find(|r| **r == m).copied()).unwrap_or("other")
}

#[derive(Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last one is `+Inf`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, value: f64) {
        let bucket = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.counts[bucket] += 1;
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[self.bounds.len()];
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

struct Batches {
    texts: Histogram,
    requests: Histogram,
    tokens: Histogram,
    seconds: Histogram,
}

/// Everything the server counts.
pub struct Metrics {
    /// (route, status) → requests answered.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// route → latency.
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    /// Tokens per embedding request, as embedded.
    request_tokens: Mutex<Histogram>,
    batches: Mutex<Batches>,
}

/// What is read live when `/metrics` is scraped.
pub struct Gauges {
    /// Requests waiting for the embedding model's worker.
    pub embed_queue: usize,
    /// Requests waiting for the reranker's worker, if one is loaded.
    pub rerank_queue: Option<usize>,
    /// Requests holding an admission slot.
    pub in_flight: usize,
    /// `--max-concurrent-requests`.
    pub max_concurrent: usize,
    /// Whether the models are loaded.
    pub ready: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a metrics lock leaves at worst one observation half
    // counted; serving goes on.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(BTreeMap::new()),
            request_tokens: Mutex::new(Histogram::new(TOKENS)),
            batches: Mutex::new(Batches {
                texts: Histogram::new(COUNTS),
                requests: Histogram::new(COUNTS),
                tokens: Histogram::new(TOKENS),
                seconds: Histogram::new(SECONDS),
            }),
        }
    }

    /// One answered request.
    pub fn observe_request(&self, route: &'static str, status: u16, elapsed: Duration) {
        *lock(&self.requests).entry((route, status)).or_insert(0) += 1;
        lock(&self.latency).entry(route).or_insert_with(|| Histogram::new(SECONDS)).observe(elapsed.as_secs_f64());
    }

    /// Tokens one embedding request used.
    pub fn observe_request_tokens(&self, tokens: usize) {
        lock(&self.request_tokens).observe(tokens as f64);
    }

    /// One batch of the embedding model's worker.
    pub fn observe_batch(&self, event: &BatchEvent) {
        let mut b = lock(&self.batches);
        b.texts.observe(event.texts as f64);
        b.requests.observe(event.requests as f64);
        b.tokens.observe(event.tokens as f64);
        b.seconds.observe(event.elapsed.as_secs_f64());
    }

    /// The exposition text.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(8192);
        let help = |out: &mut String, name: &str, kind: &str, text: &str| {
            let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} {kind}");
        };

        help(&mut out, "dartboard_http_requests_total", "counter", "HTTP requests answered, by route and status.");
        for ((route, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(out, "dartboard_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        help(
            &mut out,
            "dartboard_http_request_duration_seconds",
            "histogram",
            "Time from request to response, by route.",
        );
        for (route, h) in lock(&self.latency).iter() {
            h.render(&mut out, "dartboard_http_request_duration_seconds", &format!("route=\"{route}\""));
        }
        help(&mut out, "dartboard_request_tokens", "histogram", "Tokens per embedding request, as embedded.");
        lock(&self.request_tokens).render(&mut out, "dartboard_request_tokens", "");

        let b = lock(&self.batches);
        help(
            &mut out,
            "dartboard_batch_size",
            "histogram",
            "Texts per batch the embedding worker ran (one or more forward passes of at most --batch-size texts).",
        );
        b.texts.render(&mut out, "dartboard_batch_size", "");
        help(&mut out, "dartboard_batch_requests", "histogram", "Requests joined into one batch.");
        b.requests.render(&mut out, "dartboard_batch_requests", "");
        help(&mut out, "dartboard_batch_tokens", "histogram", "Tokens per batch (padding excluded).");
        b.tokens.render(&mut out, "dartboard_batch_tokens", "");
        help(&mut out, "dartboard_batch_duration_seconds", "histogram", "Model time of one batch.");
        b.seconds.render(&mut out, "dartboard_batch_duration_seconds", "");
        drop(b);

        help(&mut out, "dartboard_queue_depth", "gauge", "Requests waiting for a model's worker.");
        let _ = writeln!(out, "dartboard_queue_depth{{model=\"embedding\"}} {}", gauges.embed_queue);
        if let Some(rerank) = gauges.rerank_queue {
            let _ = writeln!(out, "dartboard_queue_depth{{model=\"reranker\"}} {rerank}");
        }
        help(&mut out, "dartboard_requests_in_flight", "gauge", "Requests being handled now.");
        let _ = writeln!(out, "dartboard_requests_in_flight {}", gauges.in_flight);
        help(&mut out, "dartboard_max_concurrent_requests", "gauge", "The --max-concurrent-requests limit.");
        let _ = writeln!(out, "dartboard_max_concurrent_requests {}", gauges.max_concurrent);
        help(&mut out, "dartboard_ready", "gauge", "1 once the models are loaded.");
        let _ = writeln!(out, "dartboard_ready {}", u8::from(gauges.ready));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauges() -> Gauges {
        Gauges { embed_queue: 2, rerank_queue: None, in_flight: 1, max_concurrent: 4, ready: true }
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let m = Metrics::new();
        for texts in [1, 3, 3, 600] {
            m.observe_batch(&BatchEvent { requests: 1, texts, tokens: 10 * texts, elapsed: Duration::from_millis(20) });
        }
        let text = m.render(&gauges());
        assert!(text.contains("dartboard_batch_size_bucket{le=\"1\"} 1\n"), "{text}");
        assert!(text.contains("dartboard_batch_size_bucket{le=\"2\"} 1\n"), "{text}");
        assert!(text.contains("dartboard_batch_size_bucket{le=\"4\"} 3\n"), "{text}");
        assert!(text.contains("dartboard_batch_size_bucket{le=\"512\"} 3\n"), "{text}");
        assert!(text.contains("dartboard_batch_size_bucket{le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("dartboard_batch_size_sum 607\n"), "{text}");
        assert!(text.contains("dartboard_batch_size_count 4\n"), "{text}");
        assert!(text.contains("dartboard_queue_depth{model=\"embedding\"} 2\n"), "{text}");
    }

    #[test]
    fn requests_by_route_and_status() {
        let m = Metrics::new();
        m.observe_request("/embed", 200, Duration::from_millis(3));
        m.observe_request("/embed", 200, Duration::from_millis(30));
        m.observe_request("/embed", 429, Duration::from_micros(100));
        let text = m.render(&gauges());
        assert!(text.contains("dartboard_http_requests_total{route=\"/embed\",status=\"200\"} 2\n"), "{text}");
        assert!(text.contains("dartboard_http_requests_total{route=\"/embed\",status=\"429\"} 1\n"), "{text}");
        assert!(
            text.contains("dartboard_http_request_duration_seconds_bucket{route=\"/embed\",le=\"0.005\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("dartboard_http_request_duration_seconds_count{route=\"/embed\"} 3\n"), "{text}");
        // Every sample line is `name{labels} value` or `name value`, and each family has HELP and TYPE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn unknown_paths_share_one_label() {
        assert_eq!(route_label(Some("/embed")), "/embed");
        assert_eq!(route_label(Some("/whatever")), "other");
        assert_eq!(route_label(None), "other");
    }
}
