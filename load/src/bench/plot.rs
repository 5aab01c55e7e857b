//! The two plots: throughput and relay CPU per GiB against the number of
//! circuits (the sweep runs and the many-circuits run), oxit beside C tor.
//! Text is drawn with Debian's DejaVu Sans (fonts-dejavu-core; bench/run.sh
//! installs it when missing).

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::Value;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn register_font() -> Result<(), String> {
    let bytes = std::fs::read(FONT)
        .map_err(|e| format!("{FONT}: {e} (apt-get install fonts-dejavu-core)"))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("{FONT}: not a usable font"))
}

/// (circuits, value) per relay, sorted by circuits.
fn series(results: &[Value], key: &str) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut out: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in results {
        if r.get("failed").is_some() {
            continue;
        }
        let run = r["run"].as_str().unwrap_or_default();
        if !(run.starts_with("sweep-") || run == "circuits") {
            continue;
        }
        let (Some(relay), Some(x), Some(y)) =
            (r["relay"].as_str(), r["circuits"].as_f64(), r[key].as_f64())
        else {
            continue;
        };
        match out.iter_mut().find(|(n, _)| n == relay) {
            Some((_, pts)) => pts.push((x.max(1.0), y)),
            None => out.push((relay.to_owned(), vec![(x.max(1.0), y)])),
        }
    }
    for (_, pts) in &mut out {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

fn one(
    results: &[Value],
    key: &str,
    title: &str,
    ylabel: &str,
    path: &Path,
) -> Result<PathBuf, String> {
    let data = series(results, key);
    if data.is_empty() {
        return Err(format!("{}: no sweep results to plot", path.display()));
    }
    let xmax = data
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .fold(1.0, f64::max)
        * 2.0;
    let ymax = data
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .fold(0.0, f64::max)
        * 1.15;
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| format!("{}: {e}", path.display());
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((0.7f64..xmax).log_scale(), 0f64..ymax.max(1e-6))
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("circuits (log scale)")
        .y_desc(ylabel)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    let colours = [
        RGBColor(0, 114, 178),
        RGBColor(86, 180, 233),
        RGBColor(213, 94, 0),
    ];
    for (i, (name, pts)) in data.iter().enumerate() {
        let colour = colours[i % colours.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(3)))
            .map_err(e)?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3))
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, colour.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(path.to_owned())
}

pub fn draw(results: &[Value], out: &Path) -> Vec<Result<PathBuf, String>> {
    if let Err(e) = register_font() {
        return vec![Err(e)];
    }
    vec![
        one(
            results,
            "gbit_s",
            "Exit throughput against circuits (relay on one core)",
            "Gbit/s",
            &out.join("throughput.png"),
        ),
        one(
            results,
            "relay_cpu_s_per_gib",
            "Relay CPU per GiB against circuits (lower is better)",
            "CPU seconds per GiB",
            &out.join("cpu_per_gib.png"),
        ),
    ]
}
