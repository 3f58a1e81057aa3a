//! The report's charts, drawn as inline SVG (no script, no library): stacked bars over time, and
//! horizontal bars. Every bar is a `rect.bar` carrying its count (`data-count`) and a `<title>`
//! (the browser's tooltip), so the chart can be read by people, screen readers and tests alike.

use std::fmt::Write;

use super::html::esc;

/// Series colours (readable on white, distinguishable side by side); "other" is grey.
pub(crate) const COLOURS: [&str; 8] = [
    "#3b6fd4", "#e07b39", "#3aa17e", "#c94f6d", "#8a63d2", "#c9a227", "#2f9cc0", "#7a8b3c",
];
pub(crate) const OTHER: &str = "#a3a9b3";

/// One column of a stacked chart: its label and (series index, count) from the bottom up.
pub(crate) struct Column {
    pub(crate) label: String,
    pub(crate) parts: Vec<(usize, u64)>,
}

/// The colour of series `i` of `n` (the last one is "other" when `other` is set).
pub(crate) fn colour(i: usize, n: usize, other: bool) -> &'static str {
    if other && i + 1 == n {
        OTHER
    } else {
        COLOURS[i % COLOURS.len()]
    }
}

/// A round axis maximum at or above `max`, and its tick step.
fn axis(max: u64) -> (u64, u64) {
    let max = max.max(1);
    let mut step = 1u64;
    while step * 5 < max {
        step = match step.to_string().as_bytes()[0] {
            b'1' => step * 2,
            b'2' => step / 2 * 5,
            _ => step * 2,
        };
    }
    (max.div_ceil(step) * step, step)
}

/// Stacked bars, one column per time bucket, coloured by series (`names`).
pub(crate) fn stacked(id: &str, columns: &[Column], names: &[String], other: bool) -> String {
    let (w, h, left, bottom, top) = (960.0, 260.0, 56.0, 28.0, 10.0);
    let max = columns
        .iter()
        .map(|c| c.parts.iter().map(|p| p.1).sum::<u64>())
        .max()
        .unwrap_or(0);
    let (ymax, step) = axis(max);
    let plot_h = h - bottom - top;
    let slot = (w - left - 8.0) / columns.len().max(1) as f64;
    let bar_w = (slot * 0.8).max(1.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="{id}" class="chart" viewBox="0 0 {w} {h}" role="img" data-columns="{}">"#,
        columns.len()
    );
    let mut tick = 0;
    while tick <= ymax {
        let y = top + plot_h - plot_h * tick as f64 / ymax as f64;
        let _ = write!(
            s,
            r#"<line class="grid" x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            w - 8.0,
            left - 6.0,
            y + 4.0,
            short(tick)
        );
        tick += step;
    }
    let label_every = (columns.len() / 8).max(1);
    for (i, c) in columns.iter().enumerate() {
        let x = left + slot * i as f64 + (slot - bar_w) / 2.0;
        let mut y = top + plot_h;
        for &(series, n) in &c.parts {
            let bh = plot_h * n as f64 / ymax as f64;
            y -= bh;
            let name = names.get(series).map_or("", String::as_str);
            let _ = write!(
                s,
                r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{bar_w:.1}" height="{bh:.1}" fill="{}" data-series="{}" data-count="{n}"><title>{} — {}: {n} calls</title></rect>"#,
                colour(series, names.len(), other),
                esc(name),
                esc(&c.label),
                esc(name)
            );
        }
        if i % label_every == 0 {
            let _ = write!(
                s,
                r#"<text class="tick" x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                x + bar_w / 2.0,
                h - 8.0,
                esc(&c.label)
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// Horizontal bars with a label and the count at the end of each.
pub(crate) fn hbars(id: &str, rows: &[(String, u64)], colour: &str) -> String {
    let (w, row_h, label_w) = (960.0, 26.0, 240.0);
    let h = row_h * rows.len() as f64 + 4.0;
    let max = rows.iter().map(|r| r.1).max().unwrap_or(1).max(1);
    let plot_w = w - label_w - 80.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="{id}" class="chart" viewBox="0 0 {w} {h}" role="img" data-rows="{}">"#,
        rows.len()
    );
    for (i, (label, n)) in rows.iter().enumerate() {
        let y = 2.0 + row_h * i as f64;
        let bw = (plot_w * *n as f64 / max as f64).max(2.0);
        let _ = write!(
            s,
            r#"<text class="label" x="{}" y="{:.1}" text-anchor="end">{}</text><rect class="bar" x="{label_w}" y="{:.1}" width="{bw:.1}" height="{:.1}" rx="3" fill="{colour}" data-label="{}" data-count="{n}"><title>{}: {n}</title></rect><text class="value" x="{:.1}" y="{:.1}">{}</text>"#,
            label_w - 8.0,
            y + row_h / 2.0 + 4.0,
            esc(label),
            y + 4.0,
            row_h - 8.0,
            esc(label),
            esc(label),
            label_w + bw + 6.0,
            y + row_h / 2.0 + 4.0,
            n
        );
    }
    s.push_str("</svg>");
    s
}

/// A small bar in a table cell: allowed, would-deny and refused side by side, scaled to `max`.
pub(crate) fn split_bar(parts: [(u64, &str); 3], max: u64) -> String {
    let w = 180.0;
    let mut s = format!(r#"<svg class="mini" viewBox="0 0 {w} 12" width="{w}" height="12">"#);
    let mut x = 0.0;
    for (n, class) in parts {
        if n == 0 {
            continue;
        }
        let bw = w * n as f64 / max.max(1) as f64;
        let _ = write!(
            s,
            r#"<rect class="{class}" x="{x:.1}" y="1" width="{bw:.1}" height="10"/>"#
        );
        x += bw;
    }
    s.push_str("</svg>");
    s
}

/// 1234 → 1.2k, 1234567 → 1.2M.
pub(crate) fn short(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3).replace(".0k", "k"),
        _ => format!("{:.1}M", n as f64 / 1e6).replace(".0M", "M"),
    }
}
