//! The run's chart: each store's cache memory over the run against the capacity and the
//! thresholds derived from it, and below it the MVCC versions the reads served from
//! memory touched against what the same reads touch on disk, drawn with plotters as SVG.

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::Report;

/// The SVG text of `report`'s memory over time. The vertical scale fits the peak with
/// room to spare; a threshold above the scale is named in the caption instead of drawn,
/// so a small run stays readable.
///
/// # Errors
/// A drawing error from plotters (none is expected when drawing into a string).
pub fn memory_svg(report: &Report) -> Result<String> {
    let samples = &report.memory_over_time;
    let steps = samples.len().max(2) as u64;
    let top = (report.peak_memory.max(1) as f64 * 1.25).ceil() as u64;
    let (shown, above): (Vec<_>, Vec<_>) = report.thresholds.iter().partition(|(_, b)| *b <= top);
    let mut caption = format!(
        "ime-sim seed {} ({}): cache memory per store",
        report.seed, report.scenario
    );
    if !above.is_empty() {
        let names: Vec<String> = above
            .iter()
            .map(|(name, bytes)| format!("{name} {bytes}"))
            .collect();
        caption.push_str(&format!(" (above the scale: {})", names.join(", ")));
    }
    let mut svg = String::new();
    {
        let canvas = SVGBackend::with_string(&mut svg, (900, 620)).into_drawing_area();
        canvas.fill(&WHITE).map_err(draw)?;
        let (root, lower) = canvas.split_vertically(360);
        versions_panel(&lower, report)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 15))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(80)
            .build_cartesian_2d(0..steps, 0..top)
            .map_err(draw)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("bytes")
            .draw()
            .map_err(draw)?;
        let stores = samples.first().map_or(0, Vec::len);
        for store in 0..stores {
            let colour = Palette99::pick(store).to_rgba();
            let line = samples
                .iter()
                .enumerate()
                .map(|(i, s)| (i as u64, s.get(store).copied().unwrap_or(0)));
            chart
                .draw_series(LineSeries::new(line, colour.stroke_width(2)))
                .map_err(draw)?
                .label(format!("store {}", store + 1))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour));
        }
        for (i, (name, bytes)) in shown.into_iter().enumerate() {
            let colour = BLACK.mix(0.35 + 0.2 * i as f64);
            chart
                .draw_series(LineSeries::new([(0, *bytes), (steps, *bytes)], colour))
                .map_err(draw)?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(draw)?;
        canvas.present().map_err(draw)?;
    }
    Ok(svg)
}

/// The lower panel: cumulative MVCC versions touched by the reads served from memory, in
/// memory and (the same reads) on disk.
fn versions_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    report: &Report,
) -> Result<()> {
    let samples = &report.mvcc_over_time;
    let steps = samples.len().max(2) as u64;
    let top = samples.last().map_or(1, |s| s.0.max(s.1)).max(1);
    let (memory, disk) = report.mvcc_versions;
    let caption = format!(
        "MVCC versions touched by reads served from memory: {memory} in memory, {disk} for the same reads on disk"
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 13))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(80)
        .build_cartesian_2d(0..steps, 0..top + top / 10)
        .map_err(draw)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("versions (cumulative)")
        .draw()
        .map_err(draw)?;
    for (name, colour, pick) in [
        ("on disk (same reads)", RED.to_rgba(), 1),
        ("in memory", BLUE.to_rgba(), 0),
    ] {
        let line = samples
            .iter()
            .enumerate()
            .map(move |(i, s)| (i as u64, if pick == 0 { s.0 } else { s.1 }));
        chart
            .draw_series(LineSeries::new(line, colour.stroke_width(2)))
            .map_err(draw)?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw)?;
    Ok(())
}

fn draw(err: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing the memory chart: {err}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(capacity: u64, peak: u64) -> Report {
        Report {
            seed: 7,
            thresholds: vec![
                ("stop-load".to_owned(), capacity / 10 * 8),
                ("evict".to_owned(), capacity / 10 * 9),
                ("capacity".to_owned(), capacity),
            ],
            peak_memory: peak,
            memory_over_time: vec![vec![0, 10], vec![500, peak], vec![300, 20]],
            ..Report::default()
        }
    }

    /// Whether `svg` has a text element reading exactly `text` (a legend entry).
    fn has_label(svg: &str, text: &str) -> bool {
        svg.contains(&format!(">\n{text}\n</text>"))
    }

    #[test]
    fn the_chart_has_a_line_per_store_and_the_thresholds_in_range() {
        let full = memory_svg(&report(1000, 950)).unwrap();
        assert!(full.starts_with("<svg"), "{full}");
        for name in ["store 1", "store 2", "stop-load", "evict", "capacity"] {
            assert!(has_label(&full, name), "{name} missing from the legend");
        }
        assert!(full.contains("ime-sim seed 7"));
        assert!(!full.contains("above the scale"));
        // The same run with thresholds off the scale draws fewer lines: theirs are gone.
        let small = memory_svg(&report(1 << 30, 950)).unwrap();
        assert!(full.matches("<polyline").count() > small.matches("<polyline").count());
    }

    #[test]
    fn thresholds_above_the_scale_are_named_not_drawn() {
        let svg = memory_svg(&report(1 << 30, 100)).unwrap();
        assert!(has_label(&svg, "store 2"));
        for name in ["stop-load", "evict", "capacity"] {
            assert!(!has_label(&svg, name), "{name} drawn off the scale");
        }
        assert!(svg.contains(
            "above the scale: stop-load 858993456, evict 966367638, capacity 1073741824"
        ));
    }

    #[test]
    fn the_lower_panel_shows_versions_in_memory_against_the_same_reads_on_disk() {
        let mut run = report(1000, 950);
        run.mvcc_versions = (120, 3400);
        run.mvcc_over_time = vec![(0, 0), (40, 1000), (120, 3400)];
        let svg = memory_svg(&run).unwrap();
        for name in ["in memory", "on disk (same reads)"] {
            assert!(
                has_label(&svg, name),
                "{name} missing from the lower legend"
            );
        }
        assert!(svg.contains("120 in memory, 3400 for the same reads on disk"));
    }
}
