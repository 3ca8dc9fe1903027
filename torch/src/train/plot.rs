//! `training_curves.png`: train and validation loss per epoch — total, contrastive and late interaction,
//! one panel each — with the best epoch marked. Training points are the mean of the epoch's step losses
//! (measured with dropout, before each update); validation points are measured after the epoch (epoch 0 is
//! the untrained model).

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use super::LogRow;
use coltrast::error::{Error, Result};

/// The font every label uses (Debian's fonts-dejavu-core, installed by `make setup`).
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// plotters panics at the first text without a registered font: register DejaVu Sans once, or say what is
/// missing.
fn register_font() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let bytes = std::fs::read(FONT)
            .map_err(|e| format!("{FONT}: {e}; the training curves need DejaVu Sans (apt-get install fonts-dejavu-core, or `make setup`)"))?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{FONT}: not a usable TrueType font"))
    })
    .clone()
    .map_err(Error::Usage)
}

type Metric = fn(&LogRow) -> f64;

/// Per-epoch `(epoch, value)` of one split: training rows averaged per epoch, validation rows as they are.
fn per_epoch(log: &[LogRow], split: &str, metric: Metric) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    let mut epochs: Vec<u64> = log.iter().filter(|r| r.split == split).map(|r| r.epoch).collect();
    epochs.dedup();
    for e in epochs {
        let vals: Vec<f64> = log.iter().filter(|r| r.split == split && r.epoch == e).map(metric).collect();
        out.push((e as f64, vals.iter().sum::<f64>() / vals.len() as f64));
    }
    out
}

/// Draws the three panels into `path` (PNG, 1500×460).
pub fn training_curves(path: &Path, log: &[LogRow], best_epoch: Option<u64>) -> Result<()> {
    register_font()?;
    let err = |e: String| Error::internal(format!("{}: drawing the training curves: {e}", path.display()));
    let root = BitMapBackend::new(path, (1500, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let last_epoch = log.iter().map(|r| r.epoch).max().unwrap_or(1).max(1) as f64;
    let panels: [(&str, Metric); 3] = [
        ("total loss", |r| r.loss),
        ("contrastive (InfoNCE)", |r| r.loss_contrastive),
        ("late interaction (MaxSim BCE)", |r| r.loss_late),
    ];
    let areas = root.split_evenly((1, 3));
    for (area, (title, metric)) in areas.iter().zip(panels) {
        let train = per_epoch(log, "train", metric);
        let val = per_epoch(log, "val", metric);
        let all: Vec<f64> = train.iter().chain(&val).map(|p| p.1).filter(|v| v.is_finite()).collect();
        let (lo, hi) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
        let (lo, hi) = if all.is_empty() { (0.0, 1.0) } else { (lo, hi) };
        let pad = ((hi - lo) * 0.08).max(1e-3);
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 22))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.3..last_epoch + 0.3, (lo - pad)..(hi + pad))
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("loss")
            .x_labels((last_epoch as usize + 1).min(21))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.3}"))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        let blue = RGBColor(31, 119, 180);
        let red = RGBColor(214, 39, 40);
        chart
            .draw_series(LineSeries::new(train.clone(), blue.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label("train (mean over steps)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2)));
        chart.draw_series(train.iter().map(|p| Circle::new(*p, 3, blue.filled()))).map_err(|e| err(e.to_string()))?;
        if !val.is_empty() {
            chart
                .draw_series(LineSeries::new(val.clone(), red.stroke_width(2)))
                .map_err(|e| err(e.to_string()))?
                .label("validation")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red.stroke_width(2)));
            chart.draw_series(val.iter().map(|p| Circle::new(*p, 3, red.filled()))).map_err(|e| err(e.to_string()))?;
        }
        if let Some(best) = best_epoch {
            let x = best as f64;
            let grey = RGBColor(90, 90, 90);
            chart
                .draw_series(DashedLineSeries::new(vec![(x, lo - pad), (x, hi + pad)], 6, 4, grey.stroke_width(1)))
                .map_err(|e| err(e.to_string()))?
                .label(format!("best epoch ({best})"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(1)));
            if let Some(p) = val.iter().find(|p| p.0 == x) {
                chart
                    .draw_series(std::iter::once(TriangleMarker::new(*p, 8, BLACK.filled())))
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}
