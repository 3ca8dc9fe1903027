//! `exp plot METRIC --by KEY`: a PNG of one metric against one swept setting, one line per eval system, the
//! experiments' other varying settings as separate panels (one panel per combination of their values).
//!
//! Plotted: the experiments whose `exp run` command line set KEY. The title names the metric, its level and
//! the setting; the subtitle says how many experiments, what was held fixed and which queries were
//! evaluated; each panel's caption names its values of the other settings; the legend names each line's
//! system. The best point of each panel is labelled with its value.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use super::record::{Cell, Record};
use super::view::{metric_columns, metric_parts, pretty_metric, Col};
use crate::error::{Error, Result};

/// The font of every label (Debian's fonts-dejavu-core, which `make setup` installs).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn load_font() -> Result<()> {
    static FONT_STATE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    FONT_STATE
        .get_or_init(|| {
            let bytes = std::fs::read(FONT).map_err(|e| {
                format!("{FONT}: {e}; plots need DejaVu Sans (apt-get install fonts-dejavu-core, or `make setup`)")
            })?;
            plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
                .map_err(|_| format!("{FONT}: not a usable TrueType font"))
        })
        .clone()
        .map_err(Error::Usage)
}

/// A line's colour and dash: the same per system in every plot (the baseline grey and dashed).
fn style_of(group: &str, i: usize) -> (RGBColor, bool) {
    match group {
        "base-whole" => (RGBColor(110, 110, 110), true),
        "base" => (RGBColor(120, 170, 220), false),
        "base+hybrid" => (RGBColor(31, 90, 180), false),
        "coltrast" => (RGBColor(255, 140, 0), false),
        "coltrast+rerank" => (RGBColor(214, 39, 40), false),
        "coltrast+hybrid" => (RGBColor(44, 160, 44), false),
        _ => {
            const MORE: [RGBColor; 4] =
                [RGBColor(148, 103, 189), RGBColor(140, 86, 75), RGBColor(227, 119, 194), RGBColor(23, 190, 207)];
            (MORE[i % MORE.len()], false)
        }
    }
}

/// What was drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Drawn {
    pub experiments: usize,
    pub panels: usize,
    pub lines: usize,
}

fn tidy(x: f64) -> String {
    let s = format!("{:.4}", x);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// Draw `metric` against setting `by` into `out` (PNG).
pub fn plot(records: &[Record], metric: &str, by: &str, out: &Path) -> Result<Drawn> {
    let key = by.strip_prefix(super::record::SETTINGS).unwrap_or(by);
    if !records.iter().any(|r| r.setting(key).is_some()) {
        return Err(Error::Usage(format!(
            "--by {by}: not a setting of the recorded experiments (e.g. chunk.similarity_threshold)"
        )));
    }
    let selected: Vec<&Record> = records.iter().filter(|r| r.params().iter().any(|p| p == key)).collect();
    if selected.is_empty() {
        let swept = super::view::swept_keys(records);
        return Err(Error::Usage(format!(
            "--by {key}: no recorded experiment set it on its `exp run` command line (keys set: {})",
            if swept.is_empty() { "none".into() } else { swept.join(", ") }
        )));
    }
    let owned: Vec<Record> = selected.iter().map(|r| (*r).clone()).collect();
    let cols: Vec<Col> = metric_columns(&owned, metric)?;

    // The other settings that vary among these experiments make the panels; constant params are "fixed".
    let all_keys: BTreeSet<&str> = selected.iter().flat_map(|r| r.settings().into_keys()).collect();
    let varying: Vec<&str> = all_keys
        .iter()
        .copied()
        .filter(|k| *k != key)
        .filter(|k| selected.iter().map(|r| r.setting(k).map(|c| c.to_string())).collect::<BTreeSet<_>>().len() > 1)
        .collect();
    let fixed: Vec<String> = selected[0]
        .params()
        .into_iter()
        .filter(|k| k != key && !varying.contains(&k.as_str()))
        .map(|k| format!("{k} = {}", selected[0].setting(&k).map(|c| c.to_string()).unwrap_or_default()))
        .collect();
    let mut panels: BTreeMap<Vec<String>, Vec<&Record>> = BTreeMap::new();
    for r in &selected {
        let id: Vec<String> = varying.iter().map(|k| r.setting(k).map(|c| c.to_string()).unwrap_or_default()).collect();
        panels.entry(id).or_default().push(r);
    }

    // x: the setting's values, numeric when they all are, else categories in sorted order.
    let numeric = selected.iter().all(|r| r.setting(key).and_then(Cell::as_f64).is_some());
    let categories: Vec<String> = selected
        .iter()
        .map(|r| r.setting(key).map(|c| c.to_string()).unwrap_or_default())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let x_of = |r: &Record| -> Option<f64> {
        let c = r.setting(key)?;
        if numeric {
            c.as_f64()
        } else {
            categories.iter().position(|v| *v == c.to_string()).map(|i| i as f64)
        }
    };
    let xs: Vec<f64> = selected.iter().filter_map(|r| x_of(r)).collect();
    let (x_lo, x_hi) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(*x), b.max(*x)));
    let x_pad = if numeric { ((x_hi - x_lo) * 0.06).max(1e-3) } else { 0.5 };
    let ys: Vec<f64> =
        selected.iter().flat_map(|r| cols.iter().filter_map(|c| r.number(&c.key))).filter(|y| y.is_finite()).collect();
    if ys.is_empty() {
        return Err(Error::Usage(format!("{metric}: no values recorded for these experiments")));
    }
    let (y_lo, y_hi) = ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(*y), b.max(*y)));
    let y_pad = ((y_hi - y_lo) * 0.12).max(0.01);

    // Titles
    let first = &cols[0];
    let (title, y_desc) = match metric_parts(&first.key) {
        Some((_, level, m)) => {
            let lines = if cols.len() > 1 { ", one line per eval system" } else { "" };
            (
                format!("{} ({level} level) against {key}{lines}", pretty_metric(m)),
                format!("{} ({level} level, higher is better)", pretty_metric(m)),
            )
        }
        None => (format!("{} against {key}", first.label), first.label.clone()),
    };
    let mut sub = vec![format!("{} experiments", selected.len())];
    if !fixed.is_empty() {
        sub.push(format!("fixed: {}", fixed.join(", ")));
    }
    if !varying.is_empty() {
        sub.push(format!("one panel per {}", varying.join(" × ")));
    }
    let eval_split: BTreeSet<String> =
        selected.iter().filter_map(|r| r.get("stat.eval.split").map(|c| c.to_string())).collect();
    let eval_n: BTreeSet<String> =
        selected.iter().filter_map(|r| r.get("stat.eval.queries").map(|c| c.to_string())).collect();
    if let (1, 1) = (eval_split.len(), eval_n.len()) {
        sub.push(format!(
            "evaluated on {} held-out {} queries",
            eval_n.iter().next().cloned().unwrap_or_default(),
            eval_split.iter().next().cloned().unwrap_or_default()
        ));
    }

    load_font()?;
    let err = |e: String| Error::internal(format!("{}: drawing the plot: {e}", out.display()));
    let n_panels = panels.len();
    let grid_cols = match n_panels {
        1 => 1,
        2..=4 => 2,
        _ => 3,
    };
    let grid_rows = n_panels.div_ceil(grid_cols);
    let legend_w = 430u32;
    let (panel_w, panel_h, header_h) = (820u32, 500u32, 92u32);
    let size = (legend_w + panel_w * grid_cols as u32, header_h + panel_h * grid_rows as u32);
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let root = BitMapBackend::new(out, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let (header, body) = root.split_vertically(header_h);
    header
        .draw_text(&title, &("sans-serif", 26).into_font().color(&BLACK), (24, 14))
        .map_err(|e| err(e.to_string()))?;
    header
        .draw_text(&sub.join("; "), &("sans-serif", 17).into_font().color(&RGBColor(70, 70, 70)), (24, 54))
        .map_err(|e| err(e.to_string()))?;
    let (plots, legend) = body.split_horizontally(panel_w * grid_cols as u32);
    let areas = plots.split_evenly((grid_rows, grid_cols));
    let mut lines = 0;
    for (area, (values, recs)) in areas.iter().zip(&panels) {
        let caption: String =
            varying.iter().zip(values).map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ");
        let mut builder = ChartBuilder::on(area);
        builder.margin(18).x_label_area_size(50).y_label_area_size(70);
        if !caption.is_empty() {
            builder.caption(&caption, ("sans-serif", 19));
        }
        let mut chart = builder
            .build_cartesian_2d((x_lo - x_pad)..(x_hi + x_pad), (y_lo - y_pad)..(y_hi + y_pad))
            .map_err(|e| err(e.to_string()))?;
        let cats = categories.clone();
        let x_fmt = move |x: &f64| -> String {
            if numeric {
                tidy(*x)
            } else {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    cats.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            }
        };
        chart
            .configure_mesh()
            .x_desc(key)
            .y_desc(&y_desc)
            .x_labels(if numeric { 10 } else { categories.len() })
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&|y| format!("{y:.3}"))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 17))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        let mut best: Option<(f64, f64)> = None;
        for (i, c) in cols.iter().enumerate() {
            let mut pts: Vec<(f64, f64)> =
                recs.iter().filter_map(|r| Some((x_of(r)?, r.number(&c.key)?))).filter(|p| p.1.is_finite()).collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            if pts.is_empty() {
                continue;
            }
            lines += 1;
            let (color, dashed) = style_of(&c.group, i);
            let stroke = color.stroke_width(if dashed { 2 } else { 3 });
            if dashed {
                chart.draw_series(DashedLineSeries::new(pts.clone(), 8, 5, stroke)).map_err(|e| err(e.to_string()))?;
            } else {
                chart.draw_series(LineSeries::new(pts.clone(), stroke)).map_err(|e| err(e.to_string()))?;
            }
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))
                .map_err(|e| err(e.to_string()))?;
            if c.group != crate::artifacts::eval::BASELINE {
                for p in &pts {
                    if best.is_none_or(|b| p.1 > b.1) {
                        best = Some(*p);
                    }
                }
            }
        }
        if let Some(b) = best {
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("best {:.3}", b.1),
                    (b.0, b.1 + y_pad * 0.35),
                    ("sans-serif", 15).into_font().color(&BLACK),
                )))
                .map_err(|e| err(e.to_string()))?;
        }
    }
    // The legend, beside the panels.
    let font = ("sans-serif", 17).into_font().color(&BLACK);
    legend
        .draw_text("eval system", &("sans-serif", 18).into_font().color(&BLACK), (16, 40))
        .map_err(|e| err(e.to_string()))?;
    // A line hidden under another (the same value at every point) says so in the legend.
    let series = |c: &Col| -> Vec<Option<String>> {
        selected.iter().map(|r| r.number(&c.key).map(|v| format!("{v:.4}"))).collect()
    };
    let hidden_under = |i: usize| -> Option<String> {
        let own = series(&cols[i]);
        cols.iter().skip(i + 1).find(|o| series(o) == own).map(|o| {
            if o.group.is_empty() {
                o.label.clone()
            } else {
                o.group.clone()
            }
        })
    };
    for (i, c) in cols.iter().enumerate() {
        let y = 76 + 30 * i as i32;
        let (color, dashed) = style_of(&c.group, i);
        let name = if c.group.is_empty() { c.label.clone() } else { c.group.clone() };
        let mut label = if dashed { format!("{name} (baseline)") } else { name };
        if let Some(top) = hidden_under(i) {
            label = format!("{label}, under {top}");
        }
        if dashed {
            legend
                .draw(&PathElement::new(vec![(16, y), (26, y)], color.stroke_width(2)))
                .map_err(|e| err(e.to_string()))?;
            legend
                .draw(&PathElement::new(vec![(32, y), (42, y)], color.stroke_width(2)))
                .map_err(|e| err(e.to_string()))?;
        } else {
            legend
                .draw(&PathElement::new(vec![(16, y), (42, y)], color.stroke_width(3)))
                .map_err(|e| err(e.to_string()))?;
        }
        legend.draw(&Circle::new((29, y), 4, color.filled())).map_err(|e| err(e.to_string()))?;
        legend.draw_text(&label, &font, (52, y - 9)).map_err(|e| err(e.to_string()))?;
    }
    let note_y = 76 + 30 * cols.len() as i32 + 14;
    legend
        .draw_text(
            "one point per experiment",
            &("sans-serif", 14).into_font().color(&RGBColor(90, 90, 90)),
            (16, note_y),
        )
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(Drawn { experiments: selected.len(), panels: n_panels, lines })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exp::record::{ID, NAME, PARAMS};

    fn rec(t: f64, neg: i64, v: f64) -> Record {
        let mut r = Record::default();
        r.set(ID, Cell::Str(format!("{t}-{neg}")));
        r.set(NAME, Cell::Str(format!("t={t},n={neg}")));
        r.set(PARAMS, Cell::StrList(vec!["chunk.similarity_threshold".into(), "mine.num_negatives".into()]));
        r.set("settings.chunk.similarity_threshold", Cell::Float(t));
        r.set("settings.mine.num_negatives", Cell::Int(neg));
        r.set("settings.train.epochs", Cell::Int(10));
        r.set("metric.base-whole/document/ndcg@10", Cell::Float(0.7));
        r.set("metric.coltrast/document/ndcg@10", Cell::Float(v));
        r.set("metric.base/document/ndcg@10", Cell::Float(v - 0.02));
        r
    }

    /// Width and height from a PNG's IHDR chunk.
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        (be(16), be(20))
    }

    #[test]
    fn one_line_per_system_and_one_panel_per_other_setting() {
        if !Path::new(FONT).is_file() {
            eprintln!("skipped: {FONT} missing");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("p.png");
        let recs = vec![rec(0.5, 1, 0.8), rec(0.7, 1, 0.85), rec(0.5, 3, 0.82), rec(0.7, 3, 0.81)];
        let d = plot(&recs, "ndcg@10", "chunk.similarity_threshold", &out).unwrap();
        assert_eq!(d, Drawn { experiments: 4, panels: 2, lines: 6 });
        let (w, h) = png_size(&std::fs::read(&out).unwrap());
        assert_eq!((w, h), (430 + 2 * 820, 92 + 500));
        // one system only
        let d = plot(&recs, "coltrast/ndcg@10", "mine.num_negatives", &out).unwrap();
        assert_eq!(d, Drawn { experiments: 4, panels: 2, lines: 2 });
        let err = plot(&recs, "ndcg@10", "train.epochs", &out).unwrap_err().to_string();
        assert!(err.contains("no recorded experiment set it"), "{err}");
        let err = plot(&recs, "ndcg@10", "chunk.nope", &out).unwrap_err().to_string();
        assert!(err.contains("not a setting"), "{err}");
    }
}
