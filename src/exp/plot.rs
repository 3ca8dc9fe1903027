//! `exp plot METRIC --by KEY`: a PNG of one metric against one swept setting, one line per eval system, the
//! experiments' other varying settings as separate panels (one panel per combination of their values).
//!
//! Plotted: the experiments whose `exp run` command line set KEY. The title names the metric, its level and
//! the setting; the subtitle says how many experiments, what was held fixed and which queries were
//! evaluated; each panel's caption names its values of the other settings; the legend names each line's
//! system. The best point of each panel is labelled with its value.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::{types::RangedCoordf64, Shift};
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

/// Width of the legend beside the panels, in pixels.
const LEGEND_W: u32 = 430;
/// Width of one panel, in pixels.
const PANEL_W: u32 = 820;
/// Height of one panel, in pixels.
const PANEL_H: u32 = 500;
/// Height of the header (title and subtitle), in pixels.
const HEADER_H: u32 = 92;

/// A region of the PNG.
type Area<'b> = DrawingArea<BitMapBackend<'b>, Shift>;
/// One panel's chart: the setting's values against the metric's.
type Chart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draw `metric` against setting `by` into `out` (PNG).
pub fn plot(records: &[Record], metric: &str, by: &str, out: &Path) -> Result<Drawn> {
    let key = by.strip_prefix(super::record::SETTINGS).unwrap_or(by);
    let selected = select(records, by, key)?;
    let owned: Vec<Record> = selected.iter().map(|r| (*r).clone()).collect();
    let cols: Vec<Col> = metric_columns(&owned, metric)?;
    let panels = Panels::of(&selected, key);
    let axis = XAxis::of(&selected, key);
    let ranges = Ranges::of(&selected, &cols, &axis, metric)?;
    let (title, y_desc) = titles(&cols, key);
    let sub = subtitle(&selected, &panels);

    load_font()?;
    let frame = Frame { cols: &cols, axis, ranges, y_desc, out };
    let (grid_rows, grid_cols) = grid(panels.by_values.len());
    let size = (LEGEND_W + PANEL_W * grid_cols as u32, HEADER_H + PANEL_H * grid_rows as u32);
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let root = BitMapBackend::new(out, size).into_drawing_area();
    root.fill(&WHITE).map_err(drawing_failed(out))?;
    let (header, body) = root.split_vertically(HEADER_H);
    draw_header(&header, &title, &sub.join("; "), out)?;
    let (plots, legend) = body.split_horizontally(PANEL_W * grid_cols as u32);
    let mut lines = 0;
    for (area, (values, recs)) in plots.split_evenly((grid_rows, grid_cols)).iter().zip(&panels.by_values) {
        lines += draw_panel(area, &panels.caption(values), recs, &frame)?;
    }
    draw_legend(&legend, &cols, &selected, out)?;
    root.present().map_err(drawing_failed(out))?;
    Ok(Drawn { experiments: selected.len(), panels: panels.by_values.len(), lines })
}

/// The error of a failed drawing call on `out`.
fn drawing_failed<E: std::fmt::Display>(out: &Path) -> impl Fn(E) -> Error + '_ {
    move |e| Error::internal(format!("{}: drawing the plot: {e}", out.display()))
}

/// The experiments whose `exp run` command line set `key` (`by` as given, for the error messages).
fn select<'a>(records: &'a [Record], by: &str, key: &str) -> Result<Vec<&'a Record>> {
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
    Ok(selected)
}

/// The panels: the other settings that vary among the experiments make them (one per combination of their
/// values); the constant params are "fixed".
struct Panels<'a> {
    varying: Vec<&'a str>,
    /// `key = value` of each fixed param.
    fixed: Vec<String>,
    /// Each panel's values of the varying settings → its experiments.
    by_values: BTreeMap<Vec<String>, Vec<&'a Record>>,
}

impl<'a> Panels<'a> {
    /// Splits `selected` (which all set `key`) into panels by the other settings that vary.
    fn of(selected: &[&'a Record], key: &str) -> Panels<'a> {
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
        let mut by_values: BTreeMap<Vec<String>, Vec<&Record>> = BTreeMap::new();
        for r in selected {
            let id: Vec<String> =
                varying.iter().map(|k| r.setting(k).map(|c| c.to_string()).unwrap_or_default()).collect();
            by_values.entry(id).or_default().push(r);
        }
        Panels { varying, fixed, by_values }
    }

    /// A panel's caption: its values of the varying settings (empty with one panel).
    fn caption(&self, values: &[String]) -> String {
        self.varying.iter().zip(values).map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ")
    }
}

/// The x axis: the setting's values, numeric when they all are, else categories in sorted order.
struct XAxis<'k> {
    key: &'k str,
    numeric: bool,
    categories: Vec<String>,
}

impl<'k> XAxis<'k> {
    /// The axis of setting `key` over `selected`.
    fn of(selected: &[&Record], key: &'k str) -> XAxis<'k> {
        let numeric = selected.iter().all(|r| r.setting(key).and_then(Cell::as_f64).is_some());
        let categories: Vec<String> = selected
            .iter()
            .map(|r| r.setting(key).map(|c| c.to_string()).unwrap_or_default())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        XAxis { key, numeric, categories }
    }

    /// Where an experiment sits on the axis: its value, or its category's index.
    fn x_of(&self, r: &Record) -> Option<f64> {
        let c = r.setting(self.key)?;
        if self.numeric {
            c.as_f64()
        } else {
            self.categories.iter().position(|v| *v == c.to_string()).map(|i| i as f64)
        }
    }

    /// A tick's label: the value, tidied, or the category at a whole position (else none).
    fn tick(&self, x: f64) -> String {
        if self.numeric {
            tidy(x)
        } else {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                self.categories.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        }
    }
}

/// The ranges of both axes: the values seen, padded on each side.
struct Ranges {
    x: Range<f64>,
    y: Range<f64>,
    /// The y padding (the best point's label sits a third of it above the point).
    y_pad: f64,
}

impl Ranges {
    /// The ranges of `axis` and of the columns' finite values over `selected` (an error when there are none).
    fn of(selected: &[&Record], cols: &[Col], axis: &XAxis, metric: &str) -> Result<Ranges> {
        let xs: Vec<f64> = selected.iter().filter_map(|r| axis.x_of(r)).collect();
        let (x_lo, x_hi) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(*x), b.max(*x)));
        let x_pad = if axis.numeric { ((x_hi - x_lo) * 0.06).max(1e-3) } else { 0.5 };
        let ys: Vec<f64> = selected
            .iter()
            .flat_map(|r| cols.iter().filter_map(|c| r.number(&c.key)))
            .filter(|y| y.is_finite())
            .collect();
        if ys.is_empty() {
            return Err(Error::Usage(format!("{metric}: no values recorded for these experiments")));
        }
        let (y_lo, y_hi) = ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(*y), b.max(*y)));
        let y_pad = ((y_hi - y_lo) * 0.12).max(0.01);
        Ok(Ranges { x: (x_lo - x_pad)..(x_hi + x_pad), y: (y_lo - y_pad)..(y_hi + y_pad), y_pad })
    }
}

/// The title and the y axis description, from the metric's first column.
fn titles(cols: &[Col], key: &str) -> (String, String) {
    let first = &cols[0];
    match metric_parts(&first.key) {
        Some((_, level, m)) => {
            let lines = if cols.len() > 1 { ", one line per eval system" } else { "" };
            (
                format!("{} ({level} level) against {key}{lines}", pretty_metric(m)),
                format!("{} ({level} level, higher is better)", pretty_metric(m)),
            )
        }
        None => (format!("{} against {key}", first.label), first.label.clone()),
    }
}

/// The subtitle's parts: how many experiments, what was fixed, what makes the panels and (when all agree)
/// which queries were evaluated.
fn subtitle(selected: &[&Record], panels: &Panels) -> Vec<String> {
    let mut sub = vec![format!("{} experiments", selected.len())];
    if !panels.fixed.is_empty() {
        sub.push(format!("fixed: {}", panels.fixed.join(", ")));
    }
    if !panels.varying.is_empty() {
        sub.push(format!("one panel per {}", panels.varying.join(" × ")));
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
    sub
}

/// The panel grid for `n` panels: (rows, columns), at most three columns.
fn grid(n: usize) -> (usize, usize) {
    let cols = match n {
        1 => 1,
        2..=4 => 2,
        _ => 3,
    };
    (n.div_ceil(cols), cols)
}

/// What every panel shares: the columns, the axes, the y axis description and the file drawn (for errors).
struct Frame<'a> {
    cols: &'a [Col],
    axis: XAxis<'a>,
    ranges: Ranges,
    y_desc: String,
    out: &'a Path,
}

/// Writes the title and the subtitle into the header.
fn draw_header(header: &Area, title: &str, sub: &str, out: &Path) -> Result<()> {
    header.draw_text(title, &("sans-serif", 26).into_font().color(&BLACK), (24, 14)).map_err(drawing_failed(out))?;
    header
        .draw_text(sub, &("sans-serif", 17).into_font().color(&RGBColor(70, 70, 70)), (24, 54))
        .map_err(drawing_failed(out))
}

/// Draws one panel (caption, axes, one line per column with values, the best point's label) and returns how
/// many lines it drew.
fn draw_panel(area: &Area, caption: &str, recs: &[&Record], frame: &Frame) -> Result<usize> {
    let mut builder = ChartBuilder::on(area);
    builder.margin(18).x_label_area_size(50).y_label_area_size(70);
    if !caption.is_empty() {
        builder.caption(caption, ("sans-serif", 19));
    }
    let mut chart = builder
        .build_cartesian_2d(frame.ranges.x.clone(), frame.ranges.y.clone())
        .map_err(drawing_failed(frame.out))?;
    draw_mesh(&mut chart, frame)?;
    let mut lines = 0;
    let mut best: Option<(f64, f64)> = None;
    for (i, c) in frame.cols.iter().enumerate() {
        let pts = points(recs, c, &frame.axis);
        if pts.is_empty() {
            continue;
        }
        lines += 1;
        draw_line(&mut chart, &pts, style_of(&c.group, i), frame.out)?;
        if c.group != crate::artifacts::eval::BASELINE {
            best = highest(best, &pts);
        }
    }
    if let Some(b) = best {
        draw_best(&mut chart, b, frame)?;
    }
    Ok(lines)
}

/// Draws a panel's axes: the setting's ticks (values or categories) and the metric's.
fn draw_mesh(chart: &mut Chart, frame: &Frame) -> Result<()> {
    let axis = &frame.axis;
    chart
        .configure_mesh()
        .x_desc(axis.key)
        .y_desc(&frame.y_desc)
        .x_labels(if axis.numeric { 10 } else { axis.categories.len() })
        .x_label_formatter(&|x| axis.tick(*x))
        .y_label_formatter(&|y| format!("{y:.3}"))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(drawing_failed(frame.out))
}

/// A column's points in one panel, sorted by x (experiments without a finite value left out).
fn points(recs: &[&Record], c: &Col, axis: &XAxis) -> Vec<(f64, f64)> {
    let mut pts: Vec<(f64, f64)> =
        recs.iter().filter_map(|r| Some((axis.x_of(r)?, r.number(&c.key)?))).filter(|p| p.1.is_finite()).collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts
}

/// The highest of `best` and `pts` (the earliest of equal ones).
fn highest(best: Option<(f64, f64)>, pts: &[(f64, f64)]) -> Option<(f64, f64)> {
    pts.iter().fold(best, |b, p| if b.is_none_or(|b| p.1 > b.1) { Some(*p) } else { b })
}

/// Draws one column's line (solid, or dashed for the baseline) and a dot at each point.
fn draw_line(chart: &mut Chart, pts: &[(f64, f64)], (color, dashed): (RGBColor, bool), out: &Path) -> Result<()> {
    let stroke = color.stroke_width(if dashed { 2 } else { 3 });
    if dashed {
        chart.draw_series(DashedLineSeries::new(pts.to_vec(), 8, 5, stroke)).map_err(drawing_failed(out))?;
    } else {
        chart.draw_series(LineSeries::new(pts.to_vec(), stroke)).map_err(drawing_failed(out))?;
    }
    chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled()))).map_err(drawing_failed(out))?;
    Ok(())
}

/// Labels a panel's best point with its value, just above it.
fn draw_best(chart: &mut Chart, best: (f64, f64), frame: &Frame) -> Result<()> {
    chart
        .draw_series(std::iter::once(Text::new(
            format!("best {:.3}", best.1),
            (best.0, best.1 + frame.ranges.y_pad * 0.35),
            ("sans-serif", 15).into_font().color(&BLACK),
        )))
        .map_err(drawing_failed(frame.out))?;
    Ok(())
}

/// Draws the legend beside the panels: a heading, one entry per column (line, dot, name), and a note.
fn draw_legend(legend: &Area, cols: &[Col], selected: &[&Record], out: &Path) -> Result<()> {
    let font = ("sans-serif", 17).into_font().color(&BLACK);
    legend
        .draw_text("eval system", &("sans-serif", 18).into_font().color(&BLACK), (16, 40))
        .map_err(drawing_failed(out))?;
    for (i, c) in cols.iter().enumerate() {
        let y = 76 + 30 * i as i32;
        let (color, dashed) = style_of(&c.group, i);
        draw_legend_sample(legend, y, color, dashed, out)?;
        legend.draw_text(&legend_label(cols, i, selected), &font, (52, y - 9)).map_err(drawing_failed(out))?;
    }
    let note_y = 76 + 30 * cols.len() as i32 + 14;
    legend
        .draw_text(
            "one point per experiment",
            &("sans-serif", 14).into_font().color(&RGBColor(90, 90, 90)),
            (16, note_y),
        )
        .map_err(drawing_failed(out))
}

/// Draws a legend entry's sample at height `y`: its line (dashed: two short strokes) and its dot.
fn draw_legend_sample(legend: &Area, y: i32, color: RGBColor, dashed: bool, out: &Path) -> Result<()> {
    if dashed {
        legend.draw(&PathElement::new(vec![(16, y), (26, y)], color.stroke_width(2))).map_err(drawing_failed(out))?;
        legend.draw(&PathElement::new(vec![(32, y), (42, y)], color.stroke_width(2))).map_err(drawing_failed(out))?;
    } else {
        legend.draw(&PathElement::new(vec![(16, y), (42, y)], color.stroke_width(3))).map_err(drawing_failed(out))?;
    }
    legend.draw(&Circle::new((29, y), 4, color.filled())).map_err(drawing_failed(out))
}

/// A column's name: its eval system, else its label.
fn column_name(c: &Col) -> String {
    if c.group.is_empty() {
        c.label.clone()
    } else {
        c.group.clone()
    }
}

/// Column `i`'s legend text: its name, "(baseline)" for the dashed line, and the line that hides it, if any.
fn legend_label(cols: &[Col], i: usize, selected: &[&Record]) -> String {
    let (_, dashed) = style_of(&cols[i].group, i);
    let name = column_name(&cols[i]);
    let label = if dashed { format!("{name} (baseline)") } else { name };
    match hidden_under(cols, i, selected) {
        Some(top) => format!("{label}, under {top}"),
        None => label,
    }
}

/// The name of a later column that hides column `i`'s line (the same value in every experiment), if any.
fn hidden_under(cols: &[Col], i: usize, selected: &[&Record]) -> Option<String> {
    let series = |c: &Col| -> Vec<Option<String>> {
        selected.iter().map(|r| r.number(&c.key).map(|v| format!("{v:.4}"))).collect()
    };
    let own = series(&cols[i]);
    cols.iter().skip(i + 1).find(|o| series(o) == own).map(column_name)
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
