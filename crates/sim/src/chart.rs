//! The memory chart: each store's cache memory over the run against the capacity and
//! the derived thresholds, as a small self-contained SVG.

use std::fmt::Write as _;

use crate::Report;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 300.0;
const MARGIN: f64 = 40.0;
const COLOURS: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];

/// The SVG text of `report`'s memory over time. The vertical scale fits the highest of
/// the peak and the evict threshold, so both stay visible; the capacity is drawn when it
/// fits.
pub fn memory_svg(report: &Report) -> String {
    let samples = &report.memory_over_time;
    let thresholds = [
        ("stop-load", report.capacity / 10 * 8),
        ("evict", report.capacity / 10 * 9),
        ("capacity", report.capacity),
    ];
    let top = (report.peak_memory.max(1) as f64 * 1.2).max(1.0);
    let x = |i: usize| MARGIN + (WIDTH - 2.0 * MARGIN) * i as f64 / samples.len().max(2) as f64;
    let y = |v: u64| HEIGHT - MARGIN - (HEIGHT - 2.0 * MARGIN) * (v as f64 / top).min(1.05);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{MARGIN}" y="20">ime-sim seed {} ({}): cache memory per store, peak {} bytes</text>"#,
        report.seed, report.scenario, report.peak_memory
    );
    let axis = HEIGHT - MARGIN;
    let _ = writeln!(
        svg,
        r##"<line x1="{MARGIN}" y1="{axis}" x2="{}" y2="{axis}" stroke="#000"/>"##,
        WIDTH - MARGIN
    );
    for (name, bytes) in thresholds {
        if (bytes as f64) <= top {
            let at = y(bytes);
            let _ = writeln!(
                svg,
                r##"<line x1="{MARGIN}" y1="{at:.1}" x2="{}" y2="{at:.1}" stroke="#999" stroke-dasharray="4"/><text x="{}" y="{at:.1}">{name}</text>"##,
                WIDTH - MARGIN,
                WIDTH - MARGIN + 2.0
            );
        }
    }
    let stores = samples.first().map_or(0, Vec::len);
    for store in 0..stores {
        let points: Vec<String> = samples
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{:.1},{:.1}", x(i), y(s.get(store).copied().unwrap_or(0))))
            .collect();
        let colour = COLOURS[store % COLOURS.len()];
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" points="{}"/><text x="{}" y="{}" fill="{colour}">store {}</text>"#,
            points.join(" "),
            MARGIN + 80.0 * store as f64,
            HEIGHT - 10.0,
            store + 1
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_has_a_line_per_store_and_the_thresholds_in_range() {
        let report = Report {
            capacity: 1000,
            peak_memory: 950,
            memory_over_time: vec![vec![0, 10], vec![500, 950], vec![300, 20]],
            ..Report::default()
        };
        let svg = memory_svg(&report);
        assert_eq!(svg.matches("<polyline").count(), 2);
        for name in ["stop-load", "evict", "capacity"] {
            assert!(svg.contains(&format!(">{name}</text>")), "{name}");
        }
        let small = Report {
            capacity: 1 << 30,
            peak_memory: 100,
            ..report
        };
        assert!(
            !memory_svg(&small).contains(">capacity</text>"),
            "off the scale"
        );
    }
}
