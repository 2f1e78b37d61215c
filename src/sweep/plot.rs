//! `plot.svg`: perplexity (log scale) against effective bits, one line-and-points series per
//! method/granularity/symmetry/LoRC (`Columns::series`), the way ZeroQuant-V2 (arXiv 2303.08302)
//! compares configs: at equal effective bits (architecture guide, principle 9).

use crate::sweep::report::Row;
use crate::{Error, Result};
use plotters::prelude::*;

/// Plot size in pixels.
pub const SIZE: (u32, u32) = (960, 640);

/// The series in first-appearance order, each with its finite points sorted by effective bits.
pub fn series(rows: &[Row]) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut out: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in rows {
        if !(r.ppl.is_finite() && r.ppl > 0.0 && r.eff_bits.is_finite()) {
            continue;
        }
        let name = &r.columns.series;
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, pts)) => pts.push((r.eff_bits, r.ppl)),
            None => out.push((name.clone(), vec![(r.eff_bits, r.ppl)])),
        }
    }
    for (_, pts) in &mut out {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::config("plot", e)
}

/// The SVG text of the plot; `title` goes on top.
pub fn svg(rows: &[Row], title: &str) -> Result<String> {
    let ser = series(rows);
    let pts = ser.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if ser.is_empty() {
        (x0, x1, y0, y1) = (0.0, 8.0, 1.0, 10.0);
    }
    // Margins: a quarter bit each side; ×/÷ 1.3 in perplexity (the axis is logarithmic).
    let (x0, x1) = (x0 - 0.25, x1 + 0.25);
    let (y0, y1) = (y0 / 1.3, y1 * 1.3);
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("effective bits per weight (block linears)")
            .y_desc("perplexity (log scale)")
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .y_label_formatter(&|y| {
                if *y >= 1e5 {
                    format!("{y:.0e}")
                } else {
                    format!("{y:.0}")
                }
            })
            .draw()
            .map_err(plot_err)?;
        for (i, (name, p)) in ser.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(p.iter().copied(), color.stroke_width(2)))
                .map_err(plot_err)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(
                    p.iter()
                        .map(|&(x, y)| Circle::new((x, y), 4, color.filled())),
                )
                .map_err(plot_err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(text)
}
