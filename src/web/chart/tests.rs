//! Unit tests of the chart: scaling, empty data, single point, NaN, flat series, ticks,
//! downsampling and episodes.

use super::*;
use crate::model::{Quality, SeriesKey, Stats, parse_time};

const S: i64 = NS_PER_SEC;

fn t0() -> TimeNs {
    parse_time("2025-01-15T10:00:00Z").unwrap()
}

fn chart<'a>(line: &'a [(TimeNs, f64)], band: &'a [BandPoint]) -> Chart<'a> {
    Chart {
        label: "p-101 temperature",
        kind: "raw",
        from: t0(),
        to: t0() + 3_600 * S,
        line,
        band,
        episodes: &[],
    }
}

/// The coordinates of a path's `d` attribute, in order.
fn coords(svg: &str, class: &str) -> Vec<(f64, f64)> {
    let start = svg
        .find(&format!("<path class=\"{class}\" d=\""))
        .unwrap_or_else(|| panic!("no path.{class} in {svg}"));
    let d = &svg[start..];
    let d = &d[d.find("d=\"").unwrap() + 3..];
    let d = &d[..d.find('"').unwrap()];
    d.split(['M', 'L', 'Z'])
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (x, y) = pair.split_once(' ').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect()
}

#[test]
fn a_line_spans_the_plot_from_lowest_at_the_bottom_to_highest_at_the_top() {
    let line = [
        (t0(), 10.0),
        (t0() + 1_800 * S, 20.0),
        (t0() + 3_600 * S, 30.0),
    ];
    let svg = svg(&chart(&line, &[]));
    assert!(svg.starts_with("<svg class=\"chart\" data-kind=\"raw\" data-points=\"3\""));
    let points = coords(&svg, "raw");
    // Ticks of 5 from 10 to 30: the lowest value sits on the bottom edge, the highest on
    // the top edge; time maps linearly onto the width.
    assert_eq!(
        points,
        vec![
            (LEFT, HEIGHT - BOTTOM),
            ((LEFT + WIDTH - RIGHT) / 2.0, (TOP + HEIGHT - BOTTOM) / 2.0),
            (WIDTH - RIGHT, TOP)
        ]
    );
    for label in [">10<", ">15<", ">20<", ">25<", ">30<"] {
        assert!(svg.contains(label), "{label} missing from {svg}");
    }
}

#[test]
fn an_empty_chart_says_so_and_draws_no_path() {
    let svg = svg(&chart(&[], &[]));
    assert!(svg.contains("data-points=\"0\""));
    assert!(svg.contains("No data in this range"));
    assert!(!svg.contains("<path"));
    assert!(svg.ends_with("</svg>"));
}

#[test]
fn a_single_point_is_drawn_as_a_dot() {
    let line = [(t0() + 60 * S, 5.0)];
    let svg = svg(&chart(&line, &[]));
    assert!(svg.contains("data-points=\"1\""));
    assert!(svg.contains("<circle class=\"dot\""), "{svg}");
    assert_eq!(coords(&svg, "raw").len(), 1);
}

#[test]
fn non_finite_values_are_skipped_and_break_the_line() {
    let line = [
        (t0(), 1.0),
        (t0() + S, 2.0),
        (t0() + 2 * S, f64::NAN),
        (t0() + 3 * S, f64::INFINITY),
        (t0() + 4 * S, 3.0),
        (t0() + 5 * S, 4.0),
    ];
    let svg = svg(&chart(&line, &[]));
    assert!(svg.contains("data-points=\"4\""));
    assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    let path = &svg[svg.find("class=\"raw\"").unwrap()..];
    assert_eq!(path[..path.find("/>").unwrap()].matches('M').count(), 2);
}

#[test]
fn a_flat_series_is_drawn_mid_height_with_labels_around_its_value() {
    let line = [(t0(), 42.0), (t0() + 60 * S, 42.0), (t0() + 120 * S, 42.0)];
    let svg = svg(&chart(&line, &[]));
    let ys: Vec<f64> = coords(&svg, "raw").iter().map(|p| p.1).collect();
    assert_eq!(ys, vec![(TOP + HEIGHT - BOTTOM) / 2.0; 3]);
    assert!(svg.contains(">42<"), "{svg}");
    assert_eq!(value_ticks(0.0, 0.0, 4), (-1.0, 1.0, 0.5));
}

#[test]
fn time_ticks_fall_on_whole_steps_and_are_labelled_in_utc() {
    let hour = time_ticks(t0() + 7 * 60 * S, t0() + 3_600 * S + 7 * 60 * S);
    let labels: Vec<String> = hour.iter().map(|t| time_label(*t)).collect();
    assert_eq!(
        labels,
        ["10:10", "10:20", "10:30", "10:40", "10:50", "11:00"]
    );

    let day = time_ticks(t0(), t0() + 86_400 * S);
    let labels: Vec<String> = day.iter().map(|t| time_label(*t)).collect();
    assert_eq!(labels, ["12:00", "18:00", "01-16", "06:00"]);
    assert_eq!(time_label(t0() + 30 * S), "10:00:30");
}

#[test]
fn min_max_buckets_keep_spikes_and_bound_the_points() {
    let from = t0();
    let to = t0() + 3_600 * S;
    let mut b = MinMaxBuckets::new(from, to, 300);
    for i in 0..36_000 {
        let t = from + i * S / 10;
        let v = if i == 12_345 { 1_000.0 } else { (i % 7) as f64 };
        b.push(t, v);
    }
    b.push(from + S, f64::NAN);
    b.push(to, 1.0);
    b.push(from - 1, 1.0);
    assert_eq!((b.readings, b.skipped), (36_000, 3));
    let points = b.points();
    assert!(points.len() <= MAX_POINTS, "{}", points.len());
    assert!(points.windows(2).all(|w| w[0].0 <= w[1].0), "time order");
    assert!(
        points.contains(&(from + 12_345 * S / 10, 1_000.0)),
        "spike kept"
    );
    assert_eq!(points.iter().map(|p| p.1).fold(f64::MAX, f64::min), 0.0);
}

#[test]
fn band_merges_windows_beyond_the_cap_weighting_the_mean_by_count() {
    let rollup = |i: i64, values: &[f64]| {
        let start = t0() + i * 60 * S;
        let mut stats = Stats::of(start, values[0], Quality::GOOD);
        for v in &values[1..] {
            stats.push(start + S, *v, Quality::GOOD);
        }
        Rollup {
            series: SeriesKey::new("s", "f"),
            start,
            length_ns: 60 * S,
            stats,
        }
    };
    let rollups = [
        rollup(0, &[1.0, 3.0]),
        rollup(1, &[10.0]),
        rollup(2, &[5.0]),
        rollup(3, &[7.0]),
    ];
    let to = t0() + 240 * S;
    assert_eq!(band(&rollups, t0(), to, 10).len(), 4);
    let merged = band(&rollups, t0(), to, 2);
    assert_eq!(merged.len(), 2);
    assert_eq!(
        merged[0],
        BandPoint {
            start: t0(),
            end: t0() + 120 * S,
            min: 1.0,
            mean: 14.0 / 3.0,
            max: 10.0
        }
    );
    assert_eq!(
        (merged[1].min, merged[1].mean, merged[1].max),
        (5.0, 6.0, 7.0)
    );

    let svg = svg(&Chart {
        kind: "rollup",
        ..chart(&[], &merged)
    });
    assert!(svg.contains("data-points=\"2\""));
    assert_eq!(coords(&svg, "band").len(), 2 * 2 + 2);
    assert_eq!(coords(&svg, "mean").len(), 3);
}

#[test]
fn episodes_are_shaded_from_raise_to_clear_or_to_the_end_while_active() {
    let line = [(t0(), 1.0), (t0() + 3_599 * S, 2.0)];
    let episodes = [
        Episode {
            id: 7,
            from: t0() + 900 * S,
            to: Some(t0() + 1_800 * S),
            severity: "critical",
            label: "<b>limit</b>".into(),
        },
        Episode {
            id: 8,
            from: t0() + 2_700 * S,
            to: None,
            severity: "warning",
            label: "zscore".into(),
        },
        Episode {
            id: 9,
            from: t0() - 7_200 * S,
            to: Some(t0() - 3_600 * S),
            severity: "warning",
            label: "long ago".into(),
        },
    ];
    let svg = svg(&Chart {
        episodes: &episodes,
        ..chart(&line, &[])
    });
    let plot = WIDTH - LEFT - RIGHT;
    let cleared = format!(
        "<rect class=\"episode critical cleared\" data-event-id=\"7\" x=\"{:.1}\" y=\"{TOP:.1}\" width=\"{:.1}\"",
        LEFT + plot / 4.0,
        plot / 4.0
    );
    assert!(svg.contains(&cleared), "{svg}");
    let active = format!(
        "<rect class=\"episode warning active\" data-event-id=\"8\" x=\"{:.1}\" y=\"{TOP:.1}\" width=\"{:.1}\"",
        LEFT + plot * 0.75,
        plot / 4.0
    );
    assert!(svg.contains(&active), "{svg}");
    assert!(!svg.contains("data-event-id=\"9\""), "outside the range");
    assert!(svg.contains("<title>&lt;b&gt;limit&lt;/b&gt;</title>"));
}

#[test]
fn gaps_longer_than_three_median_steps_break_the_line() {
    let points: Vec<(TimeNs, f64)> = [0, 10, 20, 30, 100, 110]
        .iter()
        .map(|s| (t0() + s * S, 1.0))
        .collect();
    let step = max_step(points.iter().map(|p| p.0), S);
    assert_eq!(step, 30 * S);
    let lens: Vec<usize> = runs(&points, step).iter().map(Vec::len).collect();
    assert_eq!(lens, [4, 2]);
}
