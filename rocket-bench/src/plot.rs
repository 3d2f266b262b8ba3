//! SVG plots of the report, with plotters' SVG backend: the text is SVG text drawn by the
//! viewer's fonts, so no font is compiled in and no font parser (nor system library) is
//! needed.

use std::path::Path;

use plotters::prelude::*;

/// One line of a plot: a name and its points.
#[derive(Debug, Clone)]
pub struct Series {
    /// The legend.
    pub name: String,
    /// `(x, y)` points.
    pub points: Vec<(f64, f64)>,
}

const FONT: &str = "sans-serif";

fn color(i: usize) -> RGBColor {
    [
        RGBColor(214, 39, 40),  // rocket: red
        RGBColor(31, 119, 180), // peer: blue
        RGBColor(44, 160, 44),  // ceiling: green
        RGBColor(148, 103, 189),
    ][i % 4]
}

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("plot: {e:?}")
}

/// Deliveries/s (left) and deliveries per server CPU-second (right) against subscribers.
pub fn fanout(path: &Path, rate: &[Series], per_cpu: &[Series], title: &str) -> Result<(), String> {
    let root = SVGBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, (FONT, 26).into_font()).map_err(err)?;
    let panels = root.split_evenly((1, 2));
    for (panel, (series, y_label)) in panels.iter().zip([
        (rate, "deliveries received per second"),
        (per_cpu, "deliveries per server CPU-second"),
    ]) {
        let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
        let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
        let x_max = xs.fold(1.0f64, f64::max) * 1.3;
        let x_min = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .fold(f64::MAX, f64::min)
            .min(x_max / 2.0)
            / 1.3;
        // Headroom above the lines for the legend.
        let y_max = ys.fold(1.0f64, f64::max) * 1.45;
        let mut chart = ChartBuilder::on(panel)
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(90)
            .build_cartesian_2d((x_min.max(1.0)..x_max).log_scale(), 0.0..y_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("subscribers (log scale)")
            .y_desc(y_label)
            .label_style((FONT, 16).into_font())
            .axis_desc_style((FONT, 18).into_font())
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| {
                if *y >= 1e6 {
                    format!("{:.1}M", y / 1e6)
                } else {
                    format!("{:.0}k", y / 1e3)
                }
            })
            .draw()
            .map_err(err)?;
        for (i, s) in series.iter().enumerate() {
            let c = color(i);
            chart
                .draw_series(LineSeries::new(s.points.clone(), c.stroke_width(3)))
                .map_err(err)?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3))
                });
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 5, c.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 18).into_font())
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}

/// Percentile `p` (0..=100) on the "nines" axis: 0 → 0, 90 → 1, 99 → 2, 99.9 → 3 …
pub fn nines(p: f64) -> f64 {
    let rest = (100.0 - p).max(0.0005) / 100.0;
    -rest.log10()
}

/// Latency (ms, log scale) against percentile, one line per series; series points are
/// `(percentile, ms)`.
pub fn latency(path: &Path, series: &[Series], title: &str) -> Result<(), String> {
    let root = SVGBackend::new(path, (1100, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let ys = series
        .iter()
        .flat_map(|s| s.points.iter().filter(|p| p.0 > 0.0).map(|p| p.1));
    let y_max = ys.clone().fold(0.1f64, f64::max) * 2.0;
    let y_min = ys.fold(f64::MAX, f64::min).clamp(0.01, 1.0) / 2.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 24).into_font())
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..5.5f64, (y_min..y_max).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("publish -> receive latency, ms (log scale)")
        .label_style((FONT, 16).into_font())
        .axis_desc_style((FONT, 18).into_font())
        .x_labels(12)
        .x_label_formatter(&|x| {
            let labels = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"];
            let i = x.round();
            if (x - i).abs() < 0.01 && (0.0..=5.0).contains(&i) {
                labels[i as usize].to_owned()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| {
            if *y >= 1.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.2}")
            }
        })
        .draw()
        .map_err(err)?;
    for (i, s) in series.iter().enumerate() {
        let c = color(i);
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            // The minimum and the maximum do not sit on the nines axis.
            .filter(|p| p.0 > 0.0 && p.0 < 100.0)
            .map(|&(p, ms)| (nines(p), ms.max(y_min)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(3)))
            .map_err(err)?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 18).into_font())
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Server RSS (MiB) against time (minutes), one line per series; series points are
/// `(minutes, MiB)`. The y axis starts at 0, so a slope shows at its true size.
pub fn rss_over_time(path: &Path, series: &[Series], title: &str) -> Result<(), String> {
    let root = SVGBackend::new(path, (1100, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    // Headroom above the lines for the legend.
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.4;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 24).into_font())
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("minutes since the measurement began")
        .y_desc("server RSS, MiB")
        .label_style((FONT, 16).into_font())
        .axis_desc_style((FONT, 18).into_font())
        // Short runs get ticks between whole minutes.
        .x_label_formatter(&|x| {
            if x.fract() == 0.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.1}")
            }
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(err)?;
    for (i, s) in series.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(s.points.clone(), c.stroke_width(2)))
            .map_err(err)?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 18).into_font())
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis() {
        assert!(nines(0.0).abs() < 1e-9);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-6);
        assert!(nines(100.0) > 5.0);
    }

    #[test]
    fn draws_every_plot() {
        let dir = std::env::temp_dir().join(format!("rocket-bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = vec![Series {
            name: "rocket".into(),
            points: vec![(100.0, 1e5), (1000.0, 4e5)],
        }];
        fanout(&dir.join("f.svg"), &s, &s, "fan-out").unwrap();
        let l = vec![Series {
            name: "rocket".into(),
            points: vec![(50.0, 0.3), (99.0, 1.0), (99.9, 2.0), (100.0, 3.0)],
        }];
        latency(&dir.join("l.svg"), &l, "latency").unwrap();
        let r = vec![Series {
            name: "rocket".into(),
            points: vec![(0.0, 30.0), (1.0, 31.0), (2.0, 30.5)],
        }];
        rss_over_time(&dir.join("r.svg"), &r, "RSS").unwrap();
        for file in ["f.svg", "l.svg", "r.svg"] {
            let svg = std::fs::read_to_string(dir.join(file)).unwrap();
            assert!(svg.starts_with("<svg"), "{file}: {svg:.80}");
            assert!(svg.contains("rocket"), "{file}: the legend is drawn");
            assert!(svg.contains("<polyline"), "{file}: the line is drawn");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
