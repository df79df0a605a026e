//! SVG charts drawn by our own code on the server: a line of raw readings, a band of rollups
//! (min to max, with the mean as a line) and anomaly episodes as shaded spans. Pure functions
//! from points to an SVG string, so a page needs no script, no CDN and no chart library.
//!
//! Invariants:
//! - A chart draws at most about [`MAX_POINTS`] points whatever the range holds: raw readings
//!   go through [`MinMaxBuckets`], which keeps the lowest and the highest reading of each time
//!   bucket (a one-reading spike stays visible), and rollups through [`band`], which merges
//!   neighbouring windows.
//! - Non-finite values are never drawn: they are skipped, and the line breaks where they were
//!   and wherever the data has a gap, so a dropout looks like one.
//! - Outside text (labels, rule names, messages) is escaped; numbers are formatted here.
//! - Stable hooks for tests and browsers: `svg.chart[data-points]` (the points drawn),
//!   `path.raw`, `path.band`, `path.mean`, `rect.episode.active|cleared[data-event-id]`.

use std::fmt::Write;

use super::html::{self, Esc};
use crate::model::{NS_PER_SEC, Rollup, TimeNs, format_time};

/// Most points one chart draws: 300 buckets of a minimum and a maximum.
pub const MAX_POINTS: usize = 600;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 8.0;
const BOTTOM: f64 = 24.0;

/// One anomaly episode to shade: from its raise to its clear, or to the chart's end while it
/// is active.
#[derive(Clone, Debug, PartialEq)]
pub struct Episode {
    pub id: u64,
    pub from: TimeNs,
    pub to: Option<TimeNs>,
    /// `warning` or `critical`, used as a class.
    pub severity: &'static str,
    /// Shown as the span's tooltip (outside text: escaped here).
    pub label: String,
}

/// One point of a rollup band: the windows of `[start, end)` merged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BandPoint {
    pub start: TimeNs,
    pub end: TimeNs,
    pub min: f64,
    pub mean: f64,
    pub max: f64,
}

/// What to draw, over the time range `[from, to)`.
#[derive(Clone, Copy, Debug)]
pub struct Chart<'a> {
    /// The chart's accessible name (outside text: escaped here).
    pub label: &'a str,
    /// `raw` or `rollup`, written as `data-kind`.
    pub kind: &'static str,
    pub from: TimeNs,
    pub to: TimeNs,
    /// A line, in time order; non-finite values break it.
    pub line: &'a [(TimeNs, f64)],
    /// A min/max band with a mean line, in time order.
    pub band: &'a [BandPoint],
    pub episodes: &'a [Episode],
}

/// Summarises readings streamed in over `[from, to)` as the lowest and the highest reading of
/// each of `n` equal time buckets, so that a chart of any number of readings draws at most
/// `2 n` points and keeps every spike. Readings outside the range and non-finite values are
/// counted and left out.
#[derive(Clone, Debug)]
pub struct MinMaxBuckets {
    from: TimeNs,
    to: TimeNs,
    buckets: Vec<Option<[(TimeNs, f64); 2]>>,
    /// Finite readings inside the range.
    pub readings: u64,
    /// Readings left out: non-finite or outside the range.
    pub skipped: u64,
}

impl MinMaxBuckets {
    pub fn new(from: TimeNs, to: TimeNs, n: usize) -> Self {
        MinMaxBuckets {
            from,
            to: to.max(from + 1),
            buckets: vec![None; n.max(1)],
            readings: 0,
            skipped: 0,
        }
    }

    pub fn push(&mut self, time: TimeNs, value: f64) {
        if !value.is_finite() || time < self.from || time >= self.to {
            self.skipped += 1;
            return;
        }
        self.readings += 1;
        let n = self.buckets.len() as i128;
        let i = (i128::from(time - self.from) * n / i128::from(self.to - self.from)) as usize;
        let last = self.buckets.len() - 1;
        let slot = &mut self.buckets[i.min(last)];
        match slot {
            None => *slot = Some([(time, value); 2]),
            Some([min, max]) => {
                if value < min.1 {
                    *min = (time, value);
                }
                if value > max.1 {
                    *max = (time, value);
                }
            }
        }
    }

    /// The kept readings in time order: per bucket its minimum and maximum, once when they
    /// are the same reading.
    pub fn points(&self) -> Vec<(TimeNs, f64)> {
        let mut out = Vec::with_capacity(self.buckets.len() * 2);
        for [min, max] in self.buckets.iter().flatten() {
            let (a, b) = if min.0 <= max.0 {
                (*min, *max)
            } else {
                (*max, *min)
            };
            out.push(a);
            if b != a {
                out.push(b);
            }
        }
        out
    }
}

/// Rollups (in start order) as band points over `[from, to)`, merged into at most
/// `max_points` time buckets when there are more. Windows without a finite value are left out.
pub fn band(rollups: &[Rollup], from: TimeNs, to: TimeNs, max_points: usize) -> Vec<BandPoint> {
    let usable = rollups.iter().filter(|r| {
        r.stats.count > 0 && r.stats.min.is_finite() && r.stats.max.is_finite() && r.start < to
    });
    let points = usable.map(|r| {
        (
            BandPoint {
                start: r.start,
                end: r.start.saturating_add(r.length_ns),
                min: r.stats.min,
                mean: r.stats.mean(),
                max: r.stats.max,
            },
            r.stats.count as f64,
        )
    });
    let max_points = max_points.max(1);
    if rollups.len() <= max_points {
        return points.map(|(p, _)| p).collect();
    }
    let span = i128::from((to - from).max(1));
    let bucket = |t: TimeNs| (i128::from(t.max(from) - from) * max_points as i128 / span) as usize;
    let mut out: Vec<(usize, BandPoint, f64)> = Vec::with_capacity(max_points);
    for (p, weight) in points {
        let b = bucket(p.start);
        match out.last_mut() {
            Some((last, merged, total)) if *last == b => {
                merged.end = merged.end.max(p.end);
                merged.min = merged.min.min(p.min);
                merged.max = merged.max.max(p.max);
                merged.mean = (merged.mean * *total + p.mean * weight) / (*total + weight);
                *total += weight;
            }
            _ => out.push((b, p, weight)),
        }
    }
    out.into_iter().map(|(_, p, _)| p).collect()
}

/// Splits points (in time order) into runs to draw as connected lines: a non-finite value
/// ends a run, and so does a step in time longer than `max_step`.
pub fn runs(points: &[(TimeNs, f64)], max_step: i64) -> Vec<Vec<(TimeNs, f64)>> {
    let mut out: Vec<Vec<(TimeNs, f64)>> = Vec::new();
    let mut current: Vec<(TimeNs, f64)> = Vec::new();
    for &(t, v) in points {
        if !v.is_finite() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        if current.last().is_some_and(|&(last, _)| t - last > max_step) {
            out.push(std::mem::take(&mut current));
        }
        current.push((t, v));
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The longest step between two points that is still drawn as connected: three times the
/// median step, and never less than `min_step`. Regular data stays one line; a dropout of a
/// few readings shows as a gap.
pub fn max_step(times: impl Iterator<Item = TimeNs>, min_step: i64) -> i64 {
    let times: Vec<TimeNs> = times.collect();
    let mut steps: Vec<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    if steps.is_empty() {
        return min_step;
    }
    let mid = steps.len() / 2;
    let median = *steps.select_nth_unstable(mid).1;
    median.saturating_mul(3).max(min_step)
}

/// "Nice" ticks covering `[lo, hi]`: a step of 1, 2, 2.5 or 5 times a power of ten giving
/// about `target` intervals, and the range widened to whole steps.
pub fn value_ticks(lo: f64, hi: f64, target: usize) -> (f64, f64, f64) {
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        // A flat series: a band around it, so it is drawn mid-height with labels.
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.05 };
        (lo - pad, lo + pad)
    };
    let raw = (hi - lo) / target.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    ((lo / step).floor() * step, (hi / step).ceil() * step, step)
}

/// Time ticks for `[from, to)`: a step from 10 s to a day giving at most six intervals,
/// aligned to whole steps of UTC.
pub fn time_ticks(from: TimeNs, to: TimeNs) -> Vec<TimeNs> {
    const STEPS_SECS: [i64; 15] = [
        10, 15, 30, 60, 120, 300, 600, 900, 1_800, 3_600, 7_200, 10_800, 21_600, 43_200, 86_400,
    ];
    let span = (to - from).max(1);
    let step = STEPS_SECS
        .iter()
        .map(|s| s * NS_PER_SEC)
        .find(|s| span / s <= 6)
        .unwrap_or(86_400 * NS_PER_SEC);
    let first = from.div_euclid(step) * step + if from.rem_euclid(step) == 0 { 0 } else { step };
    (0..)
        .map(|i| first + i * step)
        .take_while(|t| *t < to)
        .collect()
}

/// A time tick's label in UTC: `HH:MM`, `HH:MM:SS` when not on a whole minute, and the date
/// (`MM-DD`) at midnight.
pub fn time_label(t: TimeNs) -> String {
    let full = format_time(t.div_euclid(NS_PER_SEC) * NS_PER_SEC);
    // `YYYY-MM-DDTHH:MM:SSZ`
    match (full.get(5..10), full.get(11..16), full.get(11..19)) {
        (Some(date), Some("00:00"), _) if t.rem_euclid(60 * NS_PER_SEC) == 0 => date.to_string(),
        (_, Some(hm), Some(hms)) => {
            if t.rem_euclid(60 * NS_PER_SEC) == 0 {
                hm.to_string()
            } else {
                hms.to_string()
            }
        }
        _ => full,
    }
}

/// Maps times and values to SVG coordinates.
struct Scale {
    from: TimeNs,
    span: f64,
    lo: f64,
    range: f64,
}

impl Scale {
    fn x(&self, t: TimeNs) -> f64 {
        let f = ((t - self.from) as f64 / self.span).clamp(0.0, 1.0);
        LEFT + f * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, v: f64) -> f64 {
        let f = ((v - self.lo) / self.range).clamp(0.0, 1.0);
        TOP + (1.0 - f) * (HEIGHT - TOP - BOTTOM)
    }
}

/// The chart as an `<svg class="chart">` element, scaling to its container's width.
pub fn svg(chart: &Chart<'_>) -> String {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    let mut drawn = 0usize;
    for &(_, v) in chart.line.iter().filter(|p| p.1.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
        drawn += 1;
    }
    for p in chart.band {
        lo = lo.min(p.min);
        hi = hi.max(p.max);
        drawn += 1;
    }
    let mut out = String::with_capacity(2_048 + drawn * 24);
    let _ = write!(
        out,
        "<svg class=\"chart\" data-kind=\"{}\" data-points=\"{drawn}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         role=\"img\" aria-label=\"{}\"><title>{}</title>",
        chart.kind,
        Esc(chart.label),
        Esc(chart.label),
    );
    let (lo, hi, step) = if drawn == 0 {
        (0.0, 1.0, 0.5)
    } else {
        value_ticks(lo, hi, 4)
    };
    let scale = Scale {
        from: chart.from,
        span: (chart.to - chart.from).max(1) as f64,
        lo,
        range: hi - lo,
    };
    let (plot_top, plot_bottom) = (TOP, HEIGHT - BOTTOM);

    for e in chart.episodes {
        let end = e.to.unwrap_or(chart.to);
        if end < chart.from || e.from >= chart.to {
            continue;
        }
        let (x0, x1) = (scale.x(e.from), scale.x(end));
        let _ = write!(
            out,
            "<rect class=\"episode {} {}\" data-event-id=\"{}\" x=\"{x0:.1}\" y=\"{plot_top:.1}\" \
             width=\"{:.1}\" height=\"{:.1}\"><title>{}</title></rect>",
            e.severity,
            if e.to.is_some() { "cleared" } else { "active" },
            e.id,
            (x1 - x0).max(1.5),
            plot_bottom - plot_top,
            Esc(&e.label),
        );
    }

    out.push_str("<g class=\"axes\">");
    if drawn > 0 {
        let ticks = ((hi - lo) / step).round() as usize;
        for i in 0..=ticks {
            let v = lo + step * i as f64;
            let y = scale.y(v);
            let _ = write!(
                out,
                "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
                 <text class=\"y\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                WIDTH - RIGHT,
                LEFT - 4.0,
                y + 4.0,
                html::value(v),
            );
        }
    } else {
        let _ = write!(
            out,
            "<text class=\"empty\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">No data in this range</text>",
            (LEFT + WIDTH - RIGHT) / 2.0,
            (plot_top + plot_bottom) / 2.0,
        );
    }
    for t in time_ticks(chart.from, chart.to) {
        let x = scale.x(t);
        let _ = write!(
            out,
            "<line class=\"t\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{plot_top}\" y2=\"{plot_bottom}\"/>\
             <text class=\"x\" x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            HEIGHT - 6.0,
            time_label(t),
        );
    }
    out.push_str("</g>");

    if !chart.band.is_empty() {
        let max_gap = max_step(chart.band.iter().map(|p| p.start), 1);
        let mut band_d = String::new();
        let mut mean_d = String::new();
        for run in band_runs(chart.band, max_gap) {
            // Upper edge left to right, lower edge back, as one closed shape per run.
            for (i, p) in run.iter().enumerate() {
                let cmd = if i == 0 { 'M' } else { 'L' };
                let _ = write!(band_d, "{cmd}{:.1} {:.1}", scale.x(p.start), scale.y(p.max));
                let _ = write!(
                    mean_d,
                    "{cmd}{:.1} {:.1}",
                    scale.x(p.start),
                    scale.y(p.mean)
                );
            }
            let last = run[run.len() - 1];
            let _ = write!(band_d, "L{:.1} {:.1}", scale.x(last.end), scale.y(last.max));
            let _ = write!(band_d, "L{:.1} {:.1}", scale.x(last.end), scale.y(last.min));
            let _ = write!(
                mean_d,
                "L{:.1} {:.1}",
                scale.x(last.end),
                scale.y(last.mean)
            );
            for p in run.iter().rev() {
                let _ = write!(band_d, "L{:.1} {:.1}", scale.x(p.start), scale.y(p.min));
            }
            band_d.push('Z');
        }
        let _ = write!(
            out,
            "<path class=\"band\" d=\"{band_d}\"/><path class=\"mean\" d=\"{mean_d}\"/>"
        );
    }

    if chart.line.iter().any(|p| p.1.is_finite()) {
        let min_step = (chart.to - chart.from) / 100;
        let finite = chart.line.iter().filter(|p| p.1.is_finite()).map(|p| p.0);
        let mut d = String::new();
        let mut dots = String::new();
        for run in runs(chart.line, max_step(finite, min_step.max(1))) {
            if let [(t, v)] = run[..] {
                let _ = write!(
                    dots,
                    "<circle class=\"dot\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\"/>",
                    scale.x(t),
                    scale.y(v)
                );
            }
            for (i, (t, v)) in run.iter().enumerate() {
                let cmd = if i == 0 { 'M' } else { 'L' };
                let _ = write!(d, "{cmd}{:.1} {:.1}", scale.x(*t), scale.y(*v));
            }
        }
        let _ = write!(out, "<path class=\"raw\" d=\"{d}\"/>{dots}");
    }

    let _ = write!(
        out,
        "<rect class=\"frame\" x=\"{LEFT}\" y=\"{plot_top}\" width=\"{}\" height=\"{}\"/></svg>",
        WIDTH - LEFT - RIGHT,
        plot_bottom - plot_top,
    );
    out
}

/// Band points split where a window is missing (a start further than `max_gap` after the
/// previous start).
fn band_runs(points: &[BandPoint], max_gap: i64) -> Vec<&[BandPoint]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..points.len() {
        if points[i].start - points[i - 1].start > max_gap {
            out.push(&points[start..i]);
            start = i;
        }
    }
    if start < points.len() {
        out.push(&points[start..]);
    }
    out
}

#[cfg(test)]
mod tests;
