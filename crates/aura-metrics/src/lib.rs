//! Aura's metrics: a small registry of counters and histograms, rendered in the Prometheus
//! text exposition format (version 0.0.4) for the node's `GET /metrics`.
//!
//! Why its own registry rather than the `prometheus-client` or `metrics` crates: Aura
//! needs a dozen fixed families, labels with bounded values, and one text renderer. Both
//! crates would do; each pulls in more than the ~300 lines here (the `metrics` facade also
//! wants an exporter crate with its own dependency tree), and every crate that is observed
//! (store, engine, host, cells, node) links this one, so it stays std-only.
//!
//! Every family Aura exports is declared once, below ([`FAMILIES`]), with its help text and
//! label names: docs/metrics.md is written from that list, and a family is rendered (with
//! its `# HELP` and `# TYPE` lines) even before its first sample. Observation happens at
//! the IO edges (the store's writer, the engine's commits, the host's receipts, cell
//! starts, the HTTP layer); the pure core (ledger, kernel, policy) knows nothing of it.
//!
//! The registry is process-wide ([`global`]), as Prometheus's client libraries' default
//! registries are: one node per process. A family holds at most [`MAX_SERIES`] label sets;
//! samples for more are dropped and counted in `aura_metrics_dropped_samples_total`, so a
//! bug that puts an unbounded value into a label cannot grow the node's memory.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

/// What kind of metric a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A metric family: its name, help text, kind and label names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
}

/// Upper bounds (seconds) of the latency histograms' buckets, from 0.5 ms to a minute.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// The most label sets one family keeps.
pub const MAX_SERIES: usize = 1000;

/// Missions by state, counted when scraped from the engine's missions.
pub const MISSIONS: Family = Family {
    name: "aura_missions",
    help: "Missions the node knows, by state.",
    kind: Kind::Gauge,
    labels: &["state"],
};
/// Recorded mission transitions, by the state entered.
pub const MISSION_TRANSITIONS: Family = Family {
    name: "aura_mission_transitions_total",
    help: "Mission state transitions recorded in the ledger, by the state entered.",
    kind: Kind::Counter,
    labels: &["state"],
};
/// How long a kernel step took, from taking its work to committing its record.
pub const STEP_SECONDS: Family = Family {
    name: "aura_kernel_step_seconds",
    help: "Duration of an agent's mission work: a start (workspace and token) or a step (a reasoner turn and its decisions, or the permitted calls and their effects).",
    kind: Kind::Histogram,
    labels: &["work"],
};
/// Recorded policy decisions, by effect.
pub const POLICY_DECISIONS: Family = Family {
    name: "aura_policy_decisions_total",
    help: "Policy decisions recorded in the ledger (declarations and tool calls), by effect.",
    kind: Kind::Counter,
    labels: &["effect"],
};
/// Recorded tool effects, by tool and outcome.
pub const TOOL_CALLS: Family = Family {
    name: "aura_tool_calls_total",
    help: "Tool call effects recorded in the ledger, by tool and outcome (ok or the error kind).",
    kind: Kind::Counter,
    labels: &["tool", "outcome"],
};
/// Receipts written, by model.
pub const MODEL_RECEIPTS: Family = Family {
    name: "aura_model_receipts_total",
    help: "Signed model receipts recorded in the ledger, by model.",
    kind: Kind::Counter,
    labels: &["model"],
};
/// Tokens metered by receipts, by model and kind.
pub const MODEL_TOKENS: Family = Family {
    name: "aura_model_tokens_total",
    help: "Tokens counted by recorded receipts, by model and kind (prompt or completion).",
    kind: Kind::Counter,
    labels: &["model", "kind"],
};
/// How long a model request took, from opening the model to recording its receipt.
pub const MODEL_REQUEST_SECONDS: Family = Family {
    name: "aura_model_request_seconds",
    help: "Duration of model requests that ended in a receipt, by model.",
    kind: Kind::Histogram,
    labels: &["model"],
};
/// Prompt tokens of completed text generations, by where their state came from: reused
/// from the model's prompt cache or computed (prefilled).
pub const MODEL_PROMPT_CACHE_TOKENS: Family = Family {
    name: "aura_model_prompt_cache_tokens_total",
    help: "Prompt tokens of recorded generations, by model and source (cached: reused from the prompt cache; computed: prefilled).",
    kind: Kind::Counter,
    labels: &["model", "source"],
};
/// Completed text generations by whether their prompt began with a cached prefix.
pub const MODEL_PROMPT_CACHE_LOOKUPS: Family = Family {
    name: "aura_model_prompt_cache_lookups_total",
    help: "Recorded generations by model and whether the prompt cache held a prefix of their prompt (hit) or not (miss).",
    kind: Kind::Counter,
    labels: &["model", "outcome"],
};
/// Cells started.
pub const CELL_STARTS: Family = Family {
    name: "aura_cell_starts_total",
    help: "Cells started: one-shot cells for a command, and executables in long-lived cells.",
    kind: Kind::Counter,
    labels: &["kind"],
};
/// How long a store commit took (one group-commit transaction, fsync included).
pub const STORE_COMMIT_SECONDS: Family = Family {
    name: "aura_store_commit_seconds",
    help: "Duration of ledger commits (one transaction and its fsync), by outcome.",
    kind: Kind::Histogram,
    labels: &["outcome"],
};
/// HTTP requests answered, by route template, method and status.
pub const HTTP_REQUESTS: Family = Family {
    name: "aura_http_requests_total",
    help: "HTTP requests answered, by route template (never the raw path), method and status.",
    kind: Kind::Counter,
    labels: &["route", "method", "status"],
};
/// How long HTTP requests took to answer (to the response head), by route template.
pub const HTTP_SECONDS: Family = Family {
    name: "aura_http_request_seconds",
    help: "Time to answer HTTP requests (to the response head), by route template.",
    kind: Kind::Histogram,
    labels: &["route"],
};
/// Samples dropped because a family had too many label sets.
pub const DROPPED: Family = Family {
    name: "aura_metrics_dropped_samples_total",
    help: "Samples dropped because their family already had the most label sets it keeps, or they had the wrong labels.",
    kind: Kind::Counter,
    labels: &["family"],
};

/// Every family Aura exports, in the order `/metrics` shows them.
pub const FAMILIES: &[Family] = &[
    MISSIONS,
    MISSION_TRANSITIONS,
    STEP_SECONDS,
    POLICY_DECISIONS,
    TOOL_CALLS,
    MODEL_RECEIPTS,
    MODEL_TOKENS,
    MODEL_REQUEST_SECONDS,
    MODEL_PROMPT_CACHE_TOKENS,
    MODEL_PROMPT_CACHE_LOOKUPS,
    CELL_STARTS,
    STORE_COMMIT_SECONDS,
    HTTP_REQUESTS,
    HTTP_SECONDS,
    DROPPED,
];

/// One histogram series: bucket counts (not cumulative), the sum and the count.
#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug, Clone)]
enum Series {
    Value(f64),
    Histogram(Histogram),
}

/// A set of metric series, rendered in the Prometheus text format.
#[derive(Debug, Default)]
pub struct Registry {
    series: Mutex<BTreeMap<&'static str, BTreeMap<Vec<String>, Series>>>,
}

/// The process's registry, which every observed crate writes to.
pub fn global() -> &'static Registry {
    static GLOBAL: OnceLock<Registry> = OnceLock::new();
    GLOBAL.get_or_init(Registry::default)
}

impl Registry {
    /// Adds `by` to a counter (or a gauge).
    pub fn add(&self, family: &Family, labels: &[&str], by: f64) {
        self.update(family, labels, |s| {
            if let Series::Value(v) = s {
                *v += by;
            }
        });
    }

    /// Adds one to a counter.
    pub fn inc(&self, family: &Family, labels: &[&str]) {
        self.add(family, labels, 1.0);
    }

    /// Records one observation of a histogram (seconds for the latency families).
    pub fn observe(&self, family: &Family, labels: &[&str], value: f64) {
        if !value.is_finite() {
            return;
        }
        self.update(family, labels, |s| {
            if let Series::Histogram(h) = s {
                if let Some(i) = SECONDS_BUCKETS.iter().position(|b| value <= *b) {
                    h.buckets[i] += 1;
                }
                h.sum += value;
                h.count += 1;
            }
        });
    }

    /// The current value of a counter or gauge series (0 when it has none).
    pub fn value(&self, family: &Family, labels: &[&str]) -> f64 {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        match series.get(family.name).and_then(|f| f.get(&owned(labels))) {
            Some(Series::Value(v)) => *v,
            _ => 0.0,
        }
    }

    /// The number of observations of a histogram series.
    pub fn count(&self, family: &Family, labels: &[&str]) -> u64 {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        match series.get(family.name).and_then(|f| f.get(&owned(labels))) {
            Some(Series::Histogram(h)) => h.count,
            _ => 0,
        }
    }

    fn update(&self, family: &Family, labels: &[&str], apply: impl FnOnce(&mut Series)) {
        // A sample with the wrong number of labels is a bug at the call site; it is dropped
        // (and counted) rather than rendered as a malformed line.
        if labels.len() != family.labels.len() {
            if family.name != DROPPED.name {
                self.inc(&DROPPED, &[family.name]);
            }
            return;
        }
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let f = series.entry(family.name).or_default();
        let key = owned(labels);
        if !f.contains_key(&key) && f.len() >= MAX_SERIES {
            drop(series);
            if family.name != DROPPED.name {
                self.inc(&DROPPED, &[family.name]);
            }
            return;
        }
        let entry = f.entry(key).or_insert_with(|| match family.kind {
            Kind::Histogram => Series::Histogram(Histogram {
                buckets: vec![0; SECONDS_BUCKETS.len()],
                ..Histogram::default()
            }),
            Kind::Counter | Kind::Gauge => Series::Value(0.0),
        });
        apply(entry);
    }

    /// Renders every family of [`FAMILIES`] in the Prometheus text format. `gauges` gives
    /// the values of gauge families computed at scrape time (such as missions by state):
    /// `(family, labels, value)`; they replace whatever the registry holds for the family.
    pub fn render(&self, gauges: &[(&Family, Vec<String>, f64)]) -> String {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for family in FAMILIES {
            let _ = writeln!(out, "# HELP {} {}", family.name, escape_help(family.help));
            let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.as_str());
            let scraped: Vec<_> = gauges.iter().filter(|g| g.0.name == family.name).collect();
            if !scraped.is_empty() {
                for (_, labels, value) in scraped {
                    let _ = writeln!(
                        out,
                        "{}{} {}",
                        family.name,
                        label_set(family.labels, labels, None),
                        number(*value)
                    );
                }
                continue;
            }
            let Some(f) = series.get(family.name) else {
                continue;
            };
            for (labels, s) in f {
                match s {
                    Series::Value(v) => {
                        let _ = writeln!(
                            out,
                            "{}{} {}",
                            family.name,
                            label_set(family.labels, labels, None),
                            number(*v)
                        );
                    }
                    Series::Histogram(h) => render_histogram(&mut out, family, labels, h),
                }
            }
        }
        out
    }
}

fn render_histogram(out: &mut String, family: &Family, labels: &[String], h: &Histogram) {
    let mut cumulative = 0;
    for (bound, n) in SECONDS_BUCKETS.iter().zip(&h.buckets) {
        cumulative += n;
        let le = number(*bound);
        let _ = writeln!(
            out,
            "{}_bucket{} {cumulative}",
            family.name,
            label_set(family.labels, labels, Some(&le))
        );
    }
    let _ = writeln!(
        out,
        "{}_bucket{} {}",
        family.name,
        label_set(family.labels, labels, Some("+Inf")),
        h.count
    );
    let plain = label_set(family.labels, labels, None);
    let _ = writeln!(out, "{}_sum{plain} {}", family.name, number(h.sum));
    let _ = writeln!(out, "{}_count{plain} {}", family.name, h.count);
}

fn owned(labels: &[&str]) -> Vec<String> {
    labels.iter().map(|l| (*l).to_owned()).collect()
}

/// `{a="x",b="y"}` (with `le` last for histogram buckets), or nothing without labels.
fn label_set(names: &[&str], values: &[String], le: Option<&str>) -> String {
    let mut pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape_value(v)))
        .collect();
    if let Some(le) = le {
        pairs.push(format!("le=\"{le}\""));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

/// A label value as the text format wants it: backslash, double quote and line feed
/// escaped.
fn escape_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Help text escapes backslash and line feed only.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value: integers without a fraction, others as Rust prints them (which the
/// format's float grammar accepts).
fn number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_histograms_and_scraped_gauges_render_in_the_text_format() {
        let r = Registry::default();
        r.inc(&TOOL_CALLS, &["fs.read", "ok"]);
        r.inc(&TOOL_CALLS, &["fs.read", "ok"]);
        r.inc(&TOOL_CALLS, &["fs.write", "not_found"]);
        r.observe(&STORE_COMMIT_SECONDS, &["ok"], 0.003);
        r.observe(&STORE_COMMIT_SECONDS, &["ok"], 2.0);
        let text = r.render(&[(&MISSIONS, vec!["running".into()], 3.0)]);
        assert!(
            text.contains("# TYPE aura_tool_calls_total counter\n"),
            "{text}"
        );
        assert!(text.contains("aura_tool_calls_total{tool=\"fs.read\",outcome=\"ok\"} 2\n"));
        assert!(
            text.contains("aura_tool_calls_total{tool=\"fs.write\",outcome=\"not_found\"} 1\n")
        );
        assert!(text.contains("aura_missions{state=\"running\"} 3\n"));
        assert!(
            text.contains("aura_store_commit_seconds_bucket{outcome=\"ok\",le=\"0.0025\"} 0\n")
        );
        assert!(text.contains("aura_store_commit_seconds_bucket{outcome=\"ok\",le=\"0.005\"} 1\n"));
        assert!(text.contains("aura_store_commit_seconds_bucket{outcome=\"ok\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("aura_store_commit_seconds_count{outcome=\"ok\"} 2\n"));
        assert!(text.contains("aura_store_commit_seconds_sum{outcome=\"ok\"} 2.003\n"));
        // Every family is announced, sampled or not.
        for f in FAMILIES {
            assert!(text.contains(&format!("# TYPE {} ", f.name)), "{}", f.name);
        }
        assert_eq!(r.value(&TOOL_CALLS, &["fs.read", "ok"]), 2.0);
        assert_eq!(r.count(&STORE_COMMIT_SECONDS, &["ok"]), 2);
    }

    #[test]
    fn label_values_are_escaped() {
        let r = Registry::default();
        r.inc(&TOOL_CALLS, &["a\"b\\c\nd", "ok"]);
        let text = r.render(&[]);
        assert!(
            text.contains(r#"aura_tool_calls_total{tool="a\"b\\c\nd",outcome="ok"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn a_family_keeps_a_bounded_number_of_label_sets() {
        let r = Registry::default();
        for i in 0..MAX_SERIES + 5 {
            r.inc(&HTTP_REQUESTS, &[&format!("/r{i}"), "GET", "200"]);
        }
        let text = r.render(&[]);
        let lines = text
            .lines()
            .filter(|l| l.starts_with("aura_http_requests_total{"))
            .count();
        assert_eq!(lines, MAX_SERIES);
        assert_eq!(r.value(&DROPPED, &["aura_http_requests_total"]), 5.0);
    }

    #[test]
    fn a_sample_with_the_wrong_number_of_labels_is_not_rendered() {
        let r = Registry::default();
        r.inc(&TOOL_CALLS, &["only-one"]);
        assert!(!r.render(&[]).contains("only-one"));
        assert_eq!(r.value(&DROPPED, &["aura_tool_calls_total"]), 1.0);
    }
}
