//! Latency percentile charts as SVG: send -> delivered latency against percentile, the
//! percentile axis stretched towards the tail (50, 90, 99, 99.9, 99.99 equally spaced), both
//! axes logarithmic so runs of very different speeds fit one chart.

use std::{fmt::Write as _, path::Path};

use anyhow::Context;

use crate::run::Report;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 220.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// The percentile axis ends at 99.999%.
const NINES: f64 = 5.0;
const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];

/// Writes the chart of `reports` (label, report) to `path`: SVG, or HTML holding the SVG when
/// the name ends in `.html`.
pub fn write(path: &Path, reports: &[(String, &Report)]) -> anyhow::Result<()> {
    let svg = chart(reports);
    let text = if path.extension().is_some_and(|e| e == "html") {
        format!(
            "<!doctype html>\n<meta charset=\"utf-8\">\n<title>loadgen latency</title>\n{svg}\n"
        )
    } else {
        svg
    };
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The chart as an SVG document.
pub fn chart(reports: &[(String, &Report)]) -> String {
    let points: Vec<Vec<(f64, f64)>> = reports
        .iter()
        .map(|(_, report)| {
            report
                .deliver_latency
                .spectrum
                .iter()
                .filter(|(percentile, _)| *percentile < 100.0)
                .map(|&(percentile, micros)| {
                    let nines = (-(1.0 - percentile / 100.0).log10()).clamp(0.0, NINES);
                    (nines, (micros.max(1) as f64) / 1000.0)
                })
                .collect()
        })
        .collect();
    let all = points.iter().flatten().map(|&(_, ms)| ms);
    let low = all.clone().fold(f64::INFINITY, f64::min);
    let high = all.fold(0.0, f64::max);
    let (low, high) = if low.is_finite() && high > 0.0 {
        (10f64.powf(low.log10().floor()), 10f64.powf(high.log10().ceil().max(low.log10() + 1.0)))
    } else {
        (0.01, 1000.0)
    };
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |nines: f64| LEFT + nines / NINES * plot_w;
    let y = |ms: f64| TOP + plot_h - (ms.log10() - low.log10()) / (high / low).log10() * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(svg, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        svg,
        "<text x=\"{LEFT}\" y=\"22\" font-size=\"15\">send -> delivered latency by percentile</text>"
    );
    for (i, label) in ["0", "90", "99", "99.9", "99.99", "99.999"].iter().enumerate() {
        let px = x(i as f64);
        let _ = writeln!(
            svg,
            "<line x1=\"{px:.1}\" y1=\"{TOP}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            TOP + plot_h,
            TOP + plot_h + 18.0
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">percentile</text>",
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0
    );
    let mut tick = low;
    while tick <= high * 1.0001 {
        let py = y(tick);
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{} ms</text>",
            LEFT + plot_w,
            LEFT - 6.0,
            py + 4.0,
            format_ms(tick)
        );
        tick *= 10.0;
    }
    for (i, ((label, _), line)) in reports.iter().zip(&points).enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> =
            line.iter().map(|&(n, ms)| format!("{:.1},{:.1}", x(n), y(ms))).collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        let ly = TOP + 20.0 * i as f64;
        let _ = writeln!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"14\" height=\"4\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            LEFT + plot_w + 12.0,
            ly + 4.0,
            LEFT + plot_w + 32.0,
            ly + 9.0,
            escape(label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn format_ms(ms: f64) -> String {
    if ms >= 1.0 { format!("{ms:.0}") } else { format!("{ms}") }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Latency;

    fn report(p50: u64, p99: u64) -> Report {
        let spectrum = vec![(0.0, p50 / 2), (50.0, p50), (99.0, p99), (99.9, p99 * 2)];
        Report { deliver_latency: Latency { spectrum, ..Latency::default() }, ..Report::default() }
    }

    #[test]
    fn a_chart_draws_one_labelled_curve_per_report() {
        let (a, b) = (report(1_000, 8_000), report(2_000_000, 3_000_000));
        let svg = chart(&[("hub <durable>".into(), &a), ("nats".into(), &b)]);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("hub &lt;durable&gt;"), "labels are escaped");
        // Both axes span the two runs: from 0.1 ms to 10 s, in decades.
        assert!(svg.contains(">0.1 ms<") && svg.contains(">10000 ms<"), "{svg}");
    }

    #[test]
    fn an_empty_report_still_makes_a_chart() {
        let empty = Report::default();
        let svg = chart(&[("empty".into(), &empty)]);
        assert_eq!(svg.matches("<polyline").count(), 1);
    }
}
