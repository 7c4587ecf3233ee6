//! Grouped bar charts as plain SVG, no dependencies.

#![allow(dead_code)]

use std::fmt::Write as _;

/// One series of bars: one value per category.
pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

impl Series {
    pub fn new(name: &str, values: Vec<f64>) -> Series {
        Series {
            name: name.into(),
            values,
        }
    }
}

const COLOURS: [&str; 6] = [
    "#3b6ea5", "#c8553d", "#6a994e", "#8e6c8a", "#d4a017", "#4d908e",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A round upper bound for the axis, and its tick step.
fn axis(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 0.25);
    }
    let magnitude = 10f64.powf(max.log10().floor());
    for step in [0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0] {
        let step = step * magnitude;
        let top = (max / step).ceil() * step;
        if top / step <= 6.0 {
            return (top, step);
        }
    }
    (max, max / 4.0)
}

fn label(value: f64) -> String {
    if value >= 100.0 || value == value.trunc() {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// A grouped bar chart: for each category, one bar per series, each bar
/// labelled with its value; `unit` names the y axis.
pub fn grouped_bars(title: &str, unit: &str, categories: &[String], series: &[Series]) -> String {
    let (width, height) = (720.0, 360.0);
    let (left, right, top, bottom) = (70.0, 20.0, 50.0, 70.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0, f64::max);
    let (y_top, step) = axis(max);
    let y = |v: f64| top + plot_h - v / y_top * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    // Axis and grid.
    let mut tick = 0.0;
    while tick <= y_top + step / 2.0 {
        let ty = y(tick);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{ty:.1}" x2="{}" y2="{ty:.1}" stroke="#ddd"/>"##,
            width - right
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 6.0,
            ty + 4.0,
            label(tick)
        );
        tick += step;
    }
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"#,
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        escape(unit)
    );
    let _ = writeln!(
        svg,
        r##"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#333"/>"##,
        top + plot_h,
        width - right,
        top + plot_h
    );
    // Bars.
    let groups = categories.len().max(1) as f64;
    let group_w = plot_w / groups;
    let bar_w = (group_w * 0.8) / series.len().max(1) as f64;
    for (c, category) in categories.iter().enumerate() {
        let gx = left + group_w * c as f64 + group_w * 0.1;
        for (s, serie) in series.iter().enumerate() {
            let value = serie.values.get(c).copied().unwrap_or(0.0);
            let x = gx + bar_w * s as f64;
            let by = y(value);
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{by:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect>"#,
                bar_w * 0.92,
                (top + plot_h - by).max(0.0),
                COLOURS[s % COLOURS.len()],
                escape(&serie.name),
                label(value)
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                x + bar_w * 0.46,
                by - 3.0,
                label(value)
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            gx + group_w * 0.4,
            top + plot_h + 18.0,
            escape(category)
        );
    }
    // Legend.
    let mut lx = left;
    let ly = height - 22.0;
    for (s, serie) in series.iter().enumerate() {
        let _ = writeln!(
            svg,
            r#"<rect x="{lx:.1}" y="{}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{}">{}</text>"#,
            ly - 10.0,
            COLOURS[s % COLOURS.len()],
            lx + 16.0,
            ly,
            escape(&serie.name)
        );
        lx += 24.0 + 7.0 * serie.name.chars().count() as f64;
    }
    svg.push_str("</svg>\n");
    svg
}
