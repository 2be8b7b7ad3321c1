//! Rendering a [`Report`] into a folder: `report.json`, one CSV per table, one SVG per figure and
//! an `index.md` that ties them together. Every file goes through [`write_atomic`].
//!
//! Non-finite numbers: JSON has no NaN or infinity, so `report.json` holds `null` for every NaN
//! or infinite value (scalars, table cells, figure points); CSV cells hold `NaN`, `inf` or
//! `-inf` (what pandas and R read back); figures leave such points out (a line breaks there).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::output::write_atomic;
use crate::report::{Figure, Report, SeriesStyle, Table, Values};

/// Width and height of rendered figures, in SVG pixels.
const FIGURE_SIZE: (u32, u32) = (800, 500);

/// Renders `report` into `dir` (created if needed) after [`Report::validate`]; returns the files
/// written, `index.md` last.
pub fn render_report(report: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    report.validate()?;
    let mut files = Vec::new();
    let mut write = |name: String, bytes: &[u8]| -> Result<()> {
        let path = dir.join(name);
        write_atomic(&path, bytes)?;
        files.push(path);
        Ok(())
    };
    write("report.json".into(), report_json(report)?.as_bytes())?;
    for table in &report.tables {
        write(format!("{}.csv", table.name), table_csv(table).as_bytes())?;
    }
    for figure in &report.figures {
        write(
            format!("{}.svg", figure.name),
            figure_svg(figure)?.as_bytes(),
        )?;
    }
    write("index.md".into(), report_markdown(report).as_bytes())?;
    Ok(files)
}

/// The report as pretty-printed JSON (fields in declaration order; NaN and infinities as `null`).
pub fn report_json(report: &Report) -> Result<String> {
    let mut json = serde_json::to_string_pretty(report).map_err(|e| {
        Error::analysis(
            &report.analysis,
            format!("cannot serialise the report: {e}"),
        )
    })?;
    json.push('\n');
    Ok(json)
}

/// The table as CSV: a header of `name` or `name [unit]`, then one line per row; fields quoted as
/// RFC 4180 says (when they hold a comma, a quote or a line break; quotes doubled). Floats are
/// written in their shortest round-trip form.
pub fn table_csv(table: &Table) -> String {
    let mut out = String::new();
    let header: Vec<String> = table
        .columns
        .iter()
        .map(|c| match &c.unit {
            Some(unit) => csv_field(&format!("{} [{unit}]", c.name)),
            None => csv_field(&c.name),
        })
        .collect();
    out.push_str(&header.join(","));
    out.push('\n');
    for row in 0..table.n_rows() {
        let cells: Vec<String> = table
            .columns
            .iter()
            .map(|c| match &c.values {
                Values::Float(v) => format!("{:?}", v[row]),
                Values::Int(v) => v[row].to_string(),
                Values::Text(v) => csv_field(&v[row]),
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// One CSV field, quoted when needed.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// The figure as an SVG document (plotters' SVG backend; text is SVG `<text>`, so no fonts are
/// needed to render it).
pub fn figure_svg(figure: &Figure) -> Result<String> {
    let mut svg = String::new();
    draw(figure, &mut svg)
        .map_err(|e| Error::Numeric(format!("figure `{}`: cannot draw it: {e}", figure.name)))?;
    Ok(svg)
}

fn draw(figure: &Figure, svg: &mut String) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(svg, FIGURE_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let finite = |s: &crate::report::Series| -> Vec<(f64, f64)> {
        s.x.iter()
            .zip(&s.y)
            .map(|(&x, &y)| (x, y))
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect()
    };
    let all: Vec<(f64, f64)> = figure.series.iter().flat_map(finite).collect();
    let x_range = axis_range(all.iter().map(|p| p.0), 0.02);
    let y_range = axis_range(all.iter().map(|p| p.1), 0.05);
    let mut chart = ChartBuilder::on(&root)
        .caption(&figure.title, ("sans-serif", 26))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d(x_range, y_range)?;
    chart
        .configure_mesh()
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .x_desc(&figure.x_label)
        .y_desc(&figure.y_label)
        .draw()?;
    for (i, series) in figure.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let line = color.stroke_width(2);
        // A line breaks at non-finite points: draw each finite run as its own line.
        let runs = series
            .x
            .iter()
            .zip(&series.y)
            .map(|(&x, &y)| (x, y))
            .collect::<Vec<_>>();
        let runs: Vec<Vec<(f64, f64)>> = runs
            .split(|(x, y)| !(x.is_finite() && y.is_finite()))
            .filter(|r| !r.is_empty())
            .map(<[_]>::to_vec)
            .collect();
        let point = |p: (f64, f64)| Circle::new(p, 3, color.filled());
        let anno = match series.style {
            SeriesStyle::Line => {
                chart.draw_series(runs.into_iter().flat_map(|r| LineSeries::new(r, line)))?
            }
            SeriesStyle::Points => chart.draw_series(finite(series).into_iter().map(point))?,
            SeriesStyle::LinePoints => chart.draw_series(
                runs.into_iter()
                    .flat_map(|r| LineSeries::new(r, line).point_size(3)),
            )?,
        };
        if !series.label.is_empty() {
            anno.label(&series.label)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], line));
        }
    }
    if figure.series.iter().any(|s| !s.label.is_empty()) {
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// A plotting range covering `values` with `pad` (a fraction of the span) on each side; a
/// unit range around a single value, and `0..1` when there is nothing to show.
fn axis_range(values: impl Iterator<Item = f64>, pad: f64) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo > hi {
        return 0.0..1.0;
    }
    if lo == hi {
        let half = if lo == 0.0 { 0.5 } else { lo.abs() * 0.05 };
        return lo - half..hi + half;
    }
    let margin = (hi - lo) * pad;
    lo - margin..hi + margin
}

/// The report's `index.md`: summary, scalars as a table, links to every CSV and SVG.
pub fn report_markdown(report: &Report) -> String {
    let mut md = format!("# {}\n\n", report.analysis);
    if !report.summary.trim().is_empty() {
        let _ = write!(md, "{}\n\n", report.summary.trim());
    }
    md.push_str("All values: [report.json](report.json)\n");
    if !report.scalars.is_empty() {
        md.push_str(
            "\n## Scalars\n\n| name | value | unit | description |\n| --- | ---: | --- | --- |\n",
        );
        for s in &report.scalars {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                md_cell(&s.name),
                significant(s.value),
                md_cell(s.unit.as_deref().unwrap_or("")),
                md_cell(&s.description)
            );
        }
    }
    if !report.tables.is_empty() {
        md.push_str("\n## Tables\n\n");
        for t in &report.tables {
            let columns: Vec<String> = t
                .columns
                .iter()
                .map(|c| match &c.unit {
                    Some(unit) => format!("`{}` [{unit}]", c.name),
                    None => format!("`{}`", c.name),
                })
                .collect();
            let _ = writeln!(
                md,
                "- [{0}.csv]({0}.csv): {1} rows; columns {2}",
                t.name,
                t.n_rows(),
                columns.join(", ")
            );
        }
    }
    if !report.figures.is_empty() {
        md.push_str("\n## Figures\n");
        for f in &report.figures {
            let _ = write!(
                md,
                "\n### {}\n\n![{}]({}.svg)\n",
                md_cell(&f.title),
                md_cell(&f.title),
                f.name
            );
        }
    }
    md
}

/// Text safe inside a Markdown table cell.
pub(crate) fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// `value` rounded to 6 significant digits, in its shortest form (`0.123457`, `1e-7`, `NaN`).
fn significant(value: f64) -> String {
    if !value.is_finite() {
        return format!("{value:?}");
    }
    let rounded: f64 = format!("{value:.5e}").parse().unwrap_or(value);
    format!("{rounded:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;
    use crate::report::{Column, Series};

    fn sample() -> Report {
        let mut r = Report::new("demo");
        r.summary = "PR falls with depth.".into();
        r.scalar(
            "slope",
            -0.123456789,
            Some("log10/layer"),
            "fitted slope | per layer",
        );
        r.scalar("r", f64::NAN, None, "");
        r.tables.push(Table {
            name: "per_layer".into(),
            columns: vec![
                Column::int("layer", vec![0, 1, 2]),
                Column::float("pr", Some("ratio"), vec![0.5, 1e-7, f64::INFINITY]),
                Column::text(
                    "note",
                    vec!["plain".into(), "a, \"quoted\"".into(), "two\nlines".into()],
                ),
            ],
        });
        r.figures.push(Figure {
            name: "log_pr".into(),
            title: "log10 PR <by> layer & fit".into(),
            x_label: "layer".into(),
            y_label: "log10 PR".into(),
            series: vec![
                Series {
                    label: "measured".into(),
                    style: SeriesStyle::LinePoints,
                    x: vec![0.0, 1.0, 2.0, 3.0],
                    y: vec![-0.1, -0.4, f64::NAN, -0.9],
                },
                Series {
                    label: "fit".into(),
                    style: SeriesStyle::Line,
                    x: vec![0.0, 3.0],
                    y: vec![-0.1, -0.9],
                },
            ],
        });
        r
    }

    #[test]
    fn renders_json_csv_svg_and_index() {
        let dir = tempfile::tempdir().unwrap();
        let files = render_report(&sample(), dir.path()).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["report.json", "per_layer.csv", "log_pr.svg", "index.md"]
        );

        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
                .unwrap();
        assert_eq!(json["scalars"][0]["value"], -0.123456789);
        assert!(json["scalars"][1]["value"].is_null(), "NaN → null");
        assert!(
            json["tables"][0]["columns"][1]["values"]["data"][2].is_null(),
            "inf → null"
        );

        let csv_path = dir.path().join("per_layer.csv");
        let records = Dataset::read_records(&csv_path).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0]["layer"], "0");
        assert_eq!(records[1]["pr [ratio]"], "1e-7");
        assert_eq!(records[2]["pr [ratio]"], "inf");
        assert_eq!(records[1]["note"], "a, \"quoted\"");
        assert_eq!(records[2]["note"], "two\nlines");

        let svg = std::fs::read_to_string(dir.path().join("log_pr.svg")).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(
            svg.contains("log10 PR &lt;by&gt; layer &amp; fit"),
            "title is escaped text"
        );
        assert!(
            svg.contains("\nmeasured\n") && svg.contains("\nfit\n"),
            "legend labels"
        );
        assert!(svg.contains("<polyline"), "lines are drawn");
        if let Ok(path) = std::env::var("STRATA_KEEP_SVG") {
            std::fs::write(path, &svg).unwrap();
        }

        let md = std::fs::read_to_string(dir.path().join("index.md")).unwrap();
        assert!(md.starts_with("# demo\n\nPR falls with depth.\n"));
        assert!(md.contains("| slope | -0.123457 | log10/layer | fitted slope \\| per layer |"));
        assert!(md.contains("| r | NaN |  |  |"));
        assert!(md.contains(
            "- [per_layer.csv](per_layer.csv): 3 rows; columns `layer`, `pr` [ratio], `note`"
        ));
        assert!(md.contains("![log10 PR <by> layer & fit](log_pr.svg)"));
    }

    #[test]
    fn json_is_deterministic() {
        assert_eq!(
            report_json(&sample()).unwrap(),
            report_json(&sample()).unwrap()
        );
    }

    #[test]
    fn invalid_reports_are_rejected_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = sample();
        r.tables[0].columns[0] = Column::int("layer", vec![0, 1]);
        let err = render_report(&r, dir.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            "analysis `demo`: table `per_layer`: column `pr` has 3 values, but column `layer` has 2"
        );
        let mut r = sample();
        r.figures[0].name = "../escape".into();
        assert!(
            render_report(&r, dir.path())
                .unwrap_err()
                .to_string()
                .contains("not file-name safe")
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn degenerate_figures_still_render() {
        let figure = Figure {
            name: "empty".into(),
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            series: vec![Series {
                label: String::new(),
                style: SeriesStyle::Points,
                x: vec![1.0, 2.0],
                y: vec![f64::NAN, 3.0],
            }],
        };
        assert!(figure_svg(&figure).unwrap().contains("<circle"));
        assert_eq!(axis_range([2.0].into_iter(), 0.05), 1.9..2.1);
        assert_eq!(axis_range(std::iter::empty(), 0.05), 0.0..1.0);
    }

    #[test]
    fn significant_digits() {
        assert_eq!(significant(-0.123456789), "-0.123457");
        assert_eq!(significant(1e-7), "1e-7");
        assert_eq!(significant(12.0), "12.0");
        assert_eq!(significant(f64::NEG_INFINITY), "-inf");
    }
}
