//! The charts of the overview and of a subscription's page: deliveries and failures, and
//! attempt latency, over the last hour, day or week ([`crate::stats`]), drawn here as SVG and
//! inlined in the page (no script), each beside a table of the same numbers.
//!
//! Delivered and failed bars differ by pattern (solid, hatched) as well as colour, and the
//! latency lines by dash and marker (p50 solid with circles, p95 dashed with squares). The SVG
//! scales with its `viewBox`, so a phone shows the whole of it.

use std::fmt::Write;

use axum::http::StatusCode;
use axum::response::Response;

use super::scoped;
use crate::api::stats::{summarize, window_of, SAMPLE_CAP};
use crate::event::rfc3339_millis;
use crate::state::Shared;
use crate::stats::{Bucket, SubscriptionFigures, Summary, Window};
use crate::store::DeliveryFilter;
use crate::ui::{message, store_down, Viewer};

/// The drawing's size in SVG units (it scales to the page's width).
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
/// Room for the y axis's labels, the legend, the x axis's labels.
const LEFT: f64 = 48.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 26.0;
/// The hatching of failed bars, and its colours.
const HATCH: &str = "chart-hatch";
const OK: &str = "#1a6b30";
const BAD: &str = "#a4161a";
const ACCENT: &str = "#0b57d0";

/// One of the window switcher's links.
#[derive(Debug)]
pub struct WindowLink {
    pub label: &'static str,
    pub href: String,
    pub current: bool,
}

/// A row of the buckets' table, as shown.
#[derive(Debug)]
pub struct BucketRow {
    pub start: String,
    pub deliveries: u64,
    pub delivered: u64,
    pub failed: u64,
    pub dead: u64,
    /// "12 / 40" (ms), "—" without attempts.
    pub latency: String,
}

/// A subscription's (or the total's) figures over the window, as shown.
#[derive(Debug)]
pub struct FigureRow {
    pub id: String,
    pub deliveries: u64,
    pub delivered: u64,
    pub dead: u64,
    pub failed: u64,
    pub success: String,
    pub p50: String,
    pub p95: String,
}

/// What `charts.html` shows.
#[derive(Debug)]
pub struct Charts {
    /// "the last 24 hours".
    pub label: &'static str,
    /// "1 hour".
    pub bucket: &'static str,
    pub links: Vec<WindowLink>,
    /// The SVG drawings (our markup: numbers and fixed words only).
    pub activity: String,
    pub latency: String,
    /// The buckets with any figure other than zero (a table of 28 rows of zeros says little).
    pub rows: Vec<BucketRow>,
    pub total: FigureRow,
    /// Each subscription's figures (the overview's table); empty on a subscription's page.
    pub subscriptions: Vec<FigureRow>,
    /// Counted on the newest [`SAMPLE_CAP`] deliveries only: every count is "at least".
    pub sampled: bool,
    /// [`SAMPLE_CAP`] as written: "20,000".
    pub cap: String,
}

/// The charts of the deliveries `viewer` may see (of subscription `only`, if given) in the
/// window `window` names; `page` is the path the switcher's links lead to. A bad window is
/// answered with a 400 page.
pub async fn charts(
    shared: &Shared,
    viewer: &Viewer,
    only: Option<&str>,
    window: Option<&str>,
    page: &str,
) -> Result<Charts, Response> {
    let window =
        window_of(window).map_err(|text| message(StatusCode::BAD_REQUEST, "Bad window", &text))?;
    let filter = DeliveryFilter {
        subscription: only.map(str::to_string),
        ..Default::default()
    };
    let summary = summarize(
        shared,
        scoped(shared, viewer, filter),
        window,
        viewer.now_ms,
    )
    .await
    .map_err(|_| store_down())?;
    Ok(Charts::of(&summary, page, only.is_none()))
}

impl Charts {
    fn of(s: &Summary, page: &str, per_subscription: bool) -> Charts {
        let links = Window::ALL
            .into_iter()
            .map(|w| WindowLink {
                label: w.as_str(),
                href: format!("{page}?window={}#charts", w.as_str()),
                current: w == s.window,
            })
            .collect();
        let rows = s
            .buckets
            .iter()
            .filter(|b| b.deliveries + b.delivered + b.dead + b.attempts > 0)
            .map(|b| BucketRow {
                start: when(s.window, b.start_ms),
                deliveries: b.deliveries,
                delivered: b.delivered,
                failed: b.failed_attempts,
                dead: b.dead,
                latency: match (b.p50_ms, b.p95_ms) {
                    (Some(p50), Some(p95)) => format!("{p50} / {p95}"),
                    _ => "—".to_string(),
                },
            })
            .collect();
        let subscriptions = if per_subscription {
            s.subscriptions
                .iter()
                .map(|(id, f)| figure_row(id, f))
                .collect()
        } else {
            Vec::new()
        };
        Charts {
            label: s.window.label(),
            bucket: match s.window {
                Window::Hour => "5 minutes",
                Window::Day => "1 hour",
                Window::Week => "6 hours",
            },
            links,
            activity: activity_svg(s),
            latency: latency_svg(s),
            rows,
            total: figure_row("All", &s.total),
            subscriptions,
            sampled: s.sampled,
            cap: thousands(SAMPLE_CAP),
        }
    }
}

fn figure_row(id: &str, f: &SubscriptionFigures) -> FigureRow {
    FigureRow {
        id: id.to_string(),
        deliveries: f.deliveries,
        delivered: f.delivered,
        dead: f.dead,
        failed: f.failed_attempts,
        success: f
            .success_percent
            .map_or_else(|| "—".to_string(), |p| format!("{p:.1}%")),
        p50: ms(f.p50_ms),
        p95: ms(f.p95_ms),
    }
}

/// `n` with a comma between each group of three digits.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(v: Option<u64>) -> String {
    v.map_or_else(|| "—".to_string(), |v| format!("{v} ms"))
}

/// A bucket's start as its label, UTC: `10:35` within a day, `01-12 06:00` over a week.
fn when(window: Window, start_ms: u64) -> String {
    let t = rfc3339_millis(start_ms);
    let (from, to) = match window {
        Window::Hour | Window::Day => (11, 16),
        Window::Week => (5, 16),
    };
    t.get(from..to).unwrap_or(&t).replace('T', " ")
}

/// The smallest of 1, 2, 5 × 10ⁿ at or above `v` (at least 1): the y axis's top.
fn nice_top(v: f64) -> f64 {
    let mut step = 1.0;
    loop {
        for m in [1.0, 2.0, 5.0] {
            if v <= m * step {
                return m * step;
            }
        }
        step *= 10.0;
    }
}

/// A tick's label: whole numbers without decimals.
fn tick(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The plot's geometry: where bucket `i` starts and what height a value has.
struct Plot {
    n: f64,
    top: f64,
}

impl Plot {
    fn bucket_width(&self) -> f64 {
        (WIDTH - LEFT - RIGHT) / self.n
    }

    fn x(&self, i: usize) -> f64 {
        LEFT + i as f64 * self.bucket_width()
    }

    fn y(&self, v: f64) -> f64 {
        HEIGHT - BOTTOM - v / self.top * (HEIGHT - TOP - BOTTOM)
    }
}

/// The opening of chart `id` whose highest value is `most`, and its plot: its accessible name
/// ("`what` per hour`detail`, the last 24 hours"), the y axis (three ticks) and the x axis's
/// labels (about six).
fn open(s: &Summary, id: &str, what: &str, detail: &str, most: u64) -> (String, Plot) {
    let plot = Plot {
        n: s.buckets.len().max(1) as f64,
        top: nice_top(most as f64),
    };
    let title = format!(
        "{what} per {}{detail}, {}",
        bucket_word(s.window),
        s.window.label()
    );
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-labelledby=\"{id}-title\" \
         class=\"chart\" id=\"{id}\"><title id=\"{id}-title\">{title}</title>"
    );
    for v in [0.0, plot.top / 2.0, plot.top] {
        let y = plot.y(v);
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#d0d7de\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 4.0,
            y + 4.0,
            tick(v)
        );
    }
    let every = s.buckets.len().div_ceil(6).max(1);
    for (i, b) in s.buckets.iter().enumerate().step_by(every) {
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"start\">{}</text>",
            plot.x(i),
            HEIGHT - 8.0,
            when(s.window, b.start_ms)
        );
    }
    (out, plot)
}

/// Deliveries delivered (solid bars) and failed attempts (hatched bars) per bucket.
fn activity_svg(s: &Summary) -> String {
    let most = s
        .buckets
        .iter()
        .map(|b| b.delivered.max(b.failed_attempts))
        .max()
        .unwrap_or(0);
    let (mut out, plot) = open(
        s,
        "activity",
        "Delivered deliveries and failed attempts",
        "",
        most,
    );
    let _ = write!(
        out,
        "<defs><pattern id=\"{HATCH}\" patternUnits=\"userSpaceOnUse\" width=\"6\" height=\"6\" \
         patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"#fdecea\"/>\
         <line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"{BAD}\" stroke-width=\"3\"/></pattern></defs>"
    );
    let bar = plot.bucket_width() * 0.4;
    for (i, b) in s.buckets.iter().enumerate() {
        let x = plot.x(i) + plot.bucket_width() * 0.1;
        for (offset, value, fill) in [
            (0.0, b.delivered, OK.to_string()),
            (bar, b.failed_attempts, format!("url(#{HATCH})")),
        ] {
            if value == 0 {
                continue;
            }
            let y = plot.y(value as f64);
            let _ = write!(
                out,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"{fill}\" stroke=\"{}\"/>",
                x + offset,
                plot.y(0.0) - y,
                if offset == 0.0 { OK } else { BAD }
            );
        }
    }
    legend(
        &mut out,
        &[
            (
                "<rect width=\"12\" height=\"12\" fill=\"#1a6b30\"/>",
                "Delivered",
            ),
            (
                "<rect width=\"12\" height=\"12\" fill=\"url(#chart-hatch)\" stroke=\"#a4161a\"/>",
                "Failed attempts (hatched)",
            ),
        ],
    );
    out.push_str("</svg>");
    out
}

/// Attempt latency per bucket: p50 (solid line, circles) and p95 (dashed line, squares).
fn latency_svg(s: &Summary) -> String {
    let most = s.buckets.iter().filter_map(|b| b.p95_ms).max().unwrap_or(0);
    let (mut out, plot) = open(
        s,
        "latency",
        "Attempt latency in milliseconds",
        " (median and 95th percentile)",
        most,
    );
    let center = |i: usize| plot.x(i) + plot.bucket_width() / 2.0;
    for (pick, dash, square) in [
        (
            Box::new(|b: &Bucket| b.p50_ms) as Box<dyn Fn(&Bucket) -> Option<u64>>,
            "",
            false,
        ),
        (
            Box::new(|b: &Bucket| b.p95_ms),
            " stroke-dasharray=\"6 4\"",
            true,
        ),
    ] {
        // A line through neighbouring buckets that have attempts; a gap where one has none.
        let mut run: Vec<(f64, f64)> = Vec::new();
        let points: Vec<Option<(f64, f64)>> = s
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| pick(b).map(|v| (center(i), plot.y(v as f64))))
            .chain(std::iter::once(None))
            .collect();
        for p in points {
            match p {
                Some(p) => run.push(p),
                None => {
                    polyline(&mut out, &run, dash);
                    run.clear();
                }
            }
        }
        for (i, b) in s.buckets.iter().enumerate() {
            if let Some(v) = pick(b) {
                marker(&mut out, center(i), plot.y(v as f64), square);
            }
        }
    }
    legend(
        &mut out,
        &[
            (
                "<line x1=\"0\" y1=\"6\" x2=\"12\" y2=\"6\" stroke=\"#0b57d0\" stroke-width=\"2\"/><circle cx=\"6\" cy=\"6\" r=\"3\" fill=\"#0b57d0\"/>",
                "p50 (solid, circles)",
            ),
            (
                "<line x1=\"0\" y1=\"6\" x2=\"12\" y2=\"6\" stroke=\"#0b57d0\" stroke-width=\"2\" stroke-dasharray=\"3 2\"/><rect x=\"3\" y=\"3\" width=\"6\" height=\"6\" fill=\"#0b57d0\"/>",
                "p95 (dashed, squares)",
            ),
        ],
    );
    out.push_str("</svg>");
    out
}

fn polyline(out: &mut String, run: &[(f64, f64)], dash: &str) {
    if run.len() < 2 {
        return;
    }
    let points: Vec<String> = run.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = write!(
        out,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"{ACCENT}\" stroke-width=\"2\"{dash}/>",
        points.join(" ")
    );
}

fn marker(out: &mut String, x: f64, y: f64, square: bool) {
    let _ = if square {
        write!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"7\" height=\"7\" fill=\"{ACCENT}\"/>",
            x - 3.5,
            y - 3.5
        )
    } else {
        write!(
            out,
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\" fill=\"{ACCENT}\"/>"
        )
    };
}

/// The legend across the top: each swatch (12 × 12 units) and its words.
fn legend(out: &mut String, items: &[(&str, &str)]) {
    let mut x = LEFT;
    for (swatch, words) in items {
        let _ = write!(
            out,
            "<g transform=\"translate({x:.1} 6)\">{swatch}<text x=\"18\" y=\"11\">{words}</text></g>"
        );
        // About 6.5 units a character at the legend's size.
        x += 30.0 + words.len() as f64 * 6.5;
    }
}

fn bucket_word(window: Window) -> &'static str {
    match window {
        Window::Hour => "5 minutes",
        Window::Day => "hour",
        Window::Week => "6 hours",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Fate, Sample, Tally, Timing};

    /// 2026-01-12T10:30:00Z.
    const NOW: u64 = 1_768_213_800_000;

    fn summary() -> Summary {
        let mut tally = Tally::new(Window::Hour, NOW);
        let ok = [Timing {
            started_ms: NOW,
            duration_ms: 40,
            success: true,
        }];
        let failed = [Timing {
            started_ms: NOW - 20 * 60_000,
            duration_ms: 900,
            success: false,
        }];
        for (attempts, fate) in [(&ok[..], Fate::Delivered), (&failed[..], Fate::Dead)] {
            tally.add(&Sample {
                subscription: "orders",
                created_ms: attempts[0].started_ms,
                finished_ms: Some(attempts[0].started_ms + 1),
                fate,
                attempts,
            });
        }
        tally.finish(false)
    }

    #[derive(askama::Template)]
    #[template(path = "charts.html")]
    struct Only {
        charts: Charts,
    }

    #[test]
    fn a_sampled_window_says_its_counts_are_lower_bounds() {
        let mut sampled = summary();
        let whole = askama::Template::render(&Only {
            charts: Charts::of(&sampled, "/ui", true),
        })
        .expect("render");
        assert!(!whole.contains("Counted on the newest"), "{whole}");
        assert!(whole.contains("<dt>Deliveries</dt><dd>2</dd>"), "{whole}");
        sampled.sampled = true;
        let page = askama::Template::render(&Only {
            charts: Charts::of(&sampled, "/ui", true),
        })
        .expect("render");
        assert!(page.contains("Counted on the newest 20,000 deliveries of this window only"));
        assert!(page.contains("<dt>Deliveries</dt><dd>2+</dd>"), "{page}");
        assert!(
            page.contains("<td data-label=\"Deliveries\">2+</td>"),
            "{page}"
        );
        assert_eq!(
            (thousands(999), thousands(1_000), thousands(1_234_567)),
            ("999".into(), "1,000".into(), "1,234,567".into())
        );
    }

    #[test]
    fn tops_are_round() {
        assert_eq!(nice_top(0.0), 1.0);
        assert_eq!(nice_top(3.0), 5.0);
        assert_eq!(nice_top(20.0), 20.0);
        assert_eq!(nice_top(901.0), 1000.0);
        assert_eq!(tick(2.5), "2.5");
        assert_eq!(tick(10.0), "10");
    }

    #[test]
    fn bars_tell_delivered_from_failed_by_their_pattern() {
        let svg = activity_svg(&summary());
        assert!(svg.starts_with("<svg viewBox=\"0 0 640 220\" role=\"img\""));
        assert!(svg.contains("<title id=\"activity-title\">Delivered deliveries and failed attempts per 5 minutes, the last hour</title>"));
        // One solid bar, one hatched, each the full height of an axis topped at 1.
        assert_eq!(svg.matches("fill=\"#1a6b30\" stroke").count(), 1);
        assert_eq!(
            svg.matches("fill=\"url(#chart-hatch)\" stroke=\"#a4161a\"/>")
                .count(),
            2
        );
        assert!(svg.contains(&format!("height=\"{:.1}\"", HEIGHT - TOP - BOTTOM)));
        assert!(svg.contains(">10:05</text>"), "{svg}");
        assert!(svg.ends_with("</svg>"));
    }

    #[test]
    fn latency_points_sit_on_their_values_and_skip_empty_buckets() {
        let svg = latency_svg(&summary());
        // Two buckets with attempts, far apart: markers, no line between them.
        assert!(!svg.contains("<polyline"), "{svg}");
        assert_eq!(svg.matches("<circle cx").count(), 2 + 1);
        // 900 ms on an axis topped at 1000.
        let plot = Plot {
            n: 12.0,
            top: 1000.0,
        };
        assert!(svg.contains(&format!("cy=\"{:.1}\"", plot.y(900.0))));
        assert!(svg.contains(">1000</text>"));
    }

    #[test]
    fn the_tables_rows_carry_the_same_numbers() {
        let charts = Charts::of(&summary(), "/ui", true);
        // The two buckets with something in them, of twelve.
        assert_eq!(charts.rows.len(), 2);
        let (failed, last) = (&charts.rows[0], &charts.rows[1]);
        assert_eq!(
            (failed.start.as_str(), failed.failed, failed.dead),
            ("10:10", 1, 1)
        );
        assert_eq!(failed.latency, "900 / 900");
        assert_eq!(
            (last.start.as_str(), last.deliveries, last.delivered),
            ("10:30", 1, 1)
        );
        assert_eq!(last.latency, "40 / 40");
        assert_eq!(charts.total.success, "50.0%");
        assert_eq!(charts.subscriptions[0].id, "orders");
        assert_eq!(charts.links[0].href, "/ui?window=hour#charts");
        assert!(charts.links[0].current);
    }
}
