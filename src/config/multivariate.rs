//! `kind = "multivariate"` rules: one model over several fields of one machine (see
//! `pipeline::detect::mewma`). `match` is a glob on the sensor id (the machine), not on
//! `sensor/field`. The defaults are those scored on SKAB (README, `edgewatch backtest`).

use serde::Deserialize;

use super::load::Problem;

/// A multivariate rule's settings.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultivariateRule {
    /// The fields the model reads, in a fixed order; a row is every field at one time.
    pub fields: Vec<String>,
    /// Fields that enter as their change since the previous row (temperatures that drift
    /// with ambient and load).
    #[serde(default)]
    pub rate_fields: Vec<String>,
    /// Rows learned before the model decides anything.
    #[serde(default = "d::warmup_rows")]
    pub warmup_rows: u32,
    /// Smoothing span in rows.
    #[serde(default = "d::span_rows")]
    pub span_rows: f64,
    /// Shrinkage of the learned covariance toward its diagonal.
    #[serde(default = "d::shrink")]
    pub shrink: f64,
    /// Warm-up rows skipped before the smoothed variance is measured.
    #[serde(default = "d::skip_rows")]
    pub skip_rows: u32,
    /// Cap of a field's variance inflation by autocorrelation.
    #[serde(default = "d::max_inflation")]
    pub max_inflation: f64,
    /// Smallest change that matters, relative to a level field's warm-up mean (0.004: 0.4 %).
    #[serde(default = "d::floor")]
    pub floor: f64,
    /// Raise above this T²; the baseline stops following drift at or above it.
    #[serde(default = "d::raise")]
    pub raise: f64,
    /// Clear below this T² (after `holdoff_secs`).
    #[serde(default = "d::clear")]
    pub clear: f64,
    /// Span in rows over which the baseline follows slow drift while T² stays below `raise`.
    #[serde(default = "d::track_span_rows")]
    pub track_span_rows: f64,
}

mod d {
    pub fn warmup_rows() -> u32 {
        400
    }
    pub fn span_rows() -> f64 {
        20.0
    }
    pub fn shrink() -> f64 {
        0.1
    }
    pub fn skip_rows() -> u32 {
        100
    }
    pub fn max_inflation() -> f64 {
        100.0
    }
    pub fn floor() -> f64 {
        0.004
    }
    pub fn raise() -> f64 {
        24.0
    }
    pub fn clear() -> f64 {
        12.0
    }
    pub fn track_span_rows() -> f64 {
        300.0
    }
}

/// Semantic checks, each problem under `path.KEY`.
pub(super) fn validate(path: &str, r: &MultivariateRule, p: &mut Vec<Problem>) {
    let mut problem =
        |key: &str, reason: String| p.push(Problem::new(format!("{path}.{key}"), reason));
    if r.fields.is_empty() {
        problem("fields", "must name at least one field".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for f in &r.fields {
        if f.is_empty() {
            problem("fields", "a field name is empty".into());
        } else if !seen.insert(f.as_str()) {
            problem("fields", format!("`{f}` is listed twice"));
        }
    }
    for f in &r.rate_fields {
        if !r.fields.contains(f) {
            problem("rate_fields", format!("`{f}` is not one of `fields`"));
        }
    }
    if r.warmup_rows < 10 {
        problem("warmup_rows", "must be at least 10".into());
    }
    if r.skip_rows >= r.warmup_rows {
        problem("skip_rows", "must be less than `warmup_rows`".into());
    }
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !(r.span_rows.is_finite() && r.span_rows >= 1.0) {
        problem("span_rows", "must be 1 or more".into());
    }
    if !(r.track_span_rows.is_finite() && r.track_span_rows >= 1.0) {
        problem("track_span_rows", "must be 1 or more".into());
    }
    if !(0.0..1.0).contains(&r.shrink) {
        problem("shrink", "must be at least 0 and less than 1".into());
    }
    if !(r.max_inflation.is_finite() && r.max_inflation >= 1.0) {
        problem("max_inflation", "must be 1 or more".into());
    }
    if !(r.floor.is_finite() && r.floor >= 0.0) {
        problem("floor", "must be 0 or more".into());
    }
    if !positive(r.raise) {
        problem("raise", "must be greater than 0".into());
    }
    if !(r.clear.is_finite() && r.clear > 0.0 && r.clear <= r.raise) {
        problem("clear", "must be greater than 0 and at most `raise`".into());
    }
}
