//! The PNG: a grid of small bar charts, a column per frame size and, per
//! flow count, a row of throughput (Mpps) above a row of cycles per packet
//! on the switch core. Each panel has its own y axis from zero (9000 B
//! frames run at a tenth of 64 B's packet rate), a bar per switch at its
//! median with a whisker from the repeats' lowest to highest, and the
//! value written above. A switch keeps its colour in every plot (fixed by
//! name); its packed-ring bars are a lighter shade of it with a solid
//! border. The legend sits in a strip of its own, off the data.
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::frame::TSO_PAYLOAD;
use crate::gen::Ring;
use crate::report::Summary;

const PANEL_W: u32 = 300;
const PANEL_H: u32 = 230;
const TITLE_H: u32 = 44;
const LEGEND_W: u32 = 250;

/// The colour of a switch in every plot. Known switches have theirs; any
/// other gets one of the spare colours, by its name.
pub fn colour(switch: &str) -> RGBColor {
    match switch {
        "vswitchd-copy-once" => RGBColor(31, 119, 180),
        "vswitchd" => RGBColor(255, 127, 14),
        "ovs-normal" => RGBColor(44, 160, 44),
        "ovs-flows" => RGBColor(148, 103, 189),
        "testpmd-io" => RGBColor(110, 110, 110),
        other => {
            const SPARE: [RGBColor; 4] = [RGBColor(140, 86, 75), RGBColor(227, 119, 194), RGBColor(188, 189, 34), RGBColor(23, 190, 207)];
            let h = other.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
            SPARE[h % SPARE.len()]
        }
    }
}

/// The fill of a series' bars: the switch's colour, lighter for packed rings.
pub fn fill(s: &Series) -> RGBColor {
    let RGBColor(r, g, b) = colour(&s.switch);
    match s.ring {
        Ring::Split => RGBColor(r, g, b),
        Ring::Packed => {
            let light = |c: u8| c + ((255 - c) as u16 * 55 / 100) as u8;
            RGBColor(light(r), light(g), light(b))
        }
    }
}

/// One bar series: a switch on one ring layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Series {
    pub switch: String,
    pub ring: Ring,
}

impl Series {
    pub fn label(&self) -> String {
        match self.ring {
            Ring::Split => self.switch.clone(),
            Ring::Packed => format!("{} (packed ring)", self.switch),
        }
    }
}

/// What the grid holds, each list in the order the rows were measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Columns.
    pub sizes: Vec<String>,
    /// Row pairs (Mpps, cycles per packet).
    pub flows: Vec<u32>,
    /// Bars in every panel, in this order (those with no row there left out).
    pub series: Vec<Series>,
}

pub fn layout(sums: &[Summary]) -> Layout {
    let mut l = Layout { sizes: Vec::new(), flows: Vec::new(), series: Vec::new() };
    for s in sums {
        if !l.sizes.contains(&s.size) {
            l.sizes.push(s.size.clone());
        }
        if !l.flows.contains(&s.flows) {
            l.flows.push(s.flows);
        }
        let series = Series { switch: s.switch.clone(), ring: s.ring };
        if !l.series.contains(&series) {
            l.series.push(series);
        }
    }
    // Split before packed, each in the order of measurement.
    l.series.sort_by_key(|s| s.ring);
    l
}

/// A panel's metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Metric {
    Mpps,
    Cycles,
}

/// One bar: its series, then median, lowest and highest.
struct Bar<'a> {
    series: &'a Series,
    value: f64,
    low: f64,
    high: f64,
}

fn bars<'a>(l: &'a Layout, sums: &[Summary], flows: u32, size: &str, m: Metric) -> Vec<Bar<'a>> {
    // A tso64k row's Mpps counts 64 KB segments' worth of payload: shown
    // as Gbit/s of TCP payload, as the table's Gbps.
    let k = if size == "tso64k" { TSO_PAYLOAD as f64 * 8.0 / 1e3 } else { 1.0 };
    l.series
        .iter()
        .filter_map(|series| {
            let s = sums.iter().find(|s| s.flows == flows && s.size == size && s.switch == series.switch && s.ring == series.ring)?;
            Some(match m {
                Metric::Mpps => Bar { series, value: s.rx_mpps * k, low: s.rx_mpps_min * k, high: s.rx_mpps_max * k },
                Metric::Cycles => Bar { series, value: s.cycles_per_packet?, low: s.cycles_min?, high: s.cycles_max? },
            })
        })
        .collect()
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Writes the PNG for the summaries of one scenario.
pub fn plot(sums: &[Summary], path: &Path, title: &str) -> Result<(), String> {
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
        .map_err(|e| format!("font DejaVuSans.ttf (fonts-dejavu-core): {e}"))?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, font);
    let l = layout(sums);
    if l.sizes.is_empty() {
        return Err("nothing to plot".into());
    }
    let (cols, rows) = (l.sizes.len(), l.flows.len() * 2);
    let size = (PANEL_W * cols as u32 + LEGEND_W, TITLE_H + PANEL_H * rows as u32);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, body) = root.split_vertically(TITLE_H);
    let centred = ("sans-serif", 20).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Center));
    top.draw(&Text::new(title.to_string(), (size.0 as i32 / 2, TITLE_H as i32 / 2), centred)).map_err(err)?;
    let (grid, legend) = body.split_horizontally(PANEL_W * cols as u32);
    let panels = grid.split_evenly((rows, cols));
    for (fi, &flows) in l.flows.iter().enumerate() {
        for (mi, m) in [Metric::Mpps, Metric::Cycles].into_iter().enumerate() {
            for (ci, z) in l.sizes.iter().enumerate() {
                let caption = format!("{}, {flows} flow{}", size_caption(z), if flows == 1 { "" } else { "s" });
                panel(&panels[(fi * 2 + mi) * cols + ci], &bars(&l, sums, flows, z, m), m, z, &caption)?;
            }
        }
    }
    draw_legend(&legend, &l.series)?;
    root.present().map_err(err)
}

fn size_caption(size: &str) -> String {
    match size {
        "tso64k" => "64 KB TCP segments".into(),
        "imix" => "IMIX".into(),
        n => format!("{n} B"),
    }
}

fn panel(area: &DrawingArea<BitMapBackend, Shift>, bars: &[Bar], m: Metric, size: &str, caption: &str) -> Result<(), String> {
    let n = bars.len().max(1) as f64;
    let top = bars.iter().map(|b| b.high.max(b.value)).fold(0.0, f64::max);
    let top = if top > 0.0 { top * 1.2 } else { 1.0 };
    let y_desc = match (m, size) {
        (Metric::Mpps, "tso64k") => "Gbit/s of TCP payload",
        (Metric::Mpps, _) => "Mpps",
        (Metric::Cycles, "tso64k") => "cycles/segment",
        (Metric::Cycles, _) => "cycles/packet",
    };
    if bars.is_empty() {
        // No axes for a cell with nothing measured (tso64k at 1000 flows).
        let (w, h) = area.dim_in_pixel();
        let style = |px: u32, c: RGBColor| ("sans-serif", px).into_font().color(&c).pos(Pos::new(HPos::Center, VPos::Top));
        area.draw(&Text::new(caption.to_string(), (w as i32 / 2, 8), style(14, BLACK))).map_err(err)?;
        return area.draw(&Text::new("not measured", (w as i32 / 2, h as i32 / 2), style(13, RGBColor(120, 120, 120)))).map_err(err);
    }
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 14))
        .margin(8)
        .x_label_area_size(6)
        .y_label_area_size(58)
        .build_cartesian_2d(0f64..n, 0f64..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_labels(5)
        .y_max_light_lines(1)
        .y_label_formatter(&|v: &f64| number(m, *v, top))
        .y_desc(y_desc)
        .label_style(("sans-serif", 11))
        .axis_desc_style(("sans-serif", 12))
        .draw()
        .map_err(err)?;
    for (i, b) in bars.iter().enumerate() {
        let x = i as f64;
        let base = colour(&b.series.switch);
        chart.draw_series(std::iter::once(Rectangle::new([(x + 0.12, 0.0), (x + 0.88, b.value)], fill(b.series).filled()))).map_err(err)?;
        if b.series.ring == Ring::Packed {
            chart.draw_series(std::iter::once(Rectangle::new([(x + 0.12, 0.0), (x + 0.88, b.value)], base.stroke_width(2)))).map_err(err)?;
        }
        let whisker = BLACK.stroke_width(1);
        let (mid, l, r) = (x + 0.5, x + 0.38, x + 0.62);
        chart
            .draw_series([
                PathElement::new(vec![(mid, b.low), (mid, b.high)], whisker),
                PathElement::new(vec![(l, b.low), (r, b.low)], whisker),
                PathElement::new(vec![(l, b.high), (r, b.high)], whisker),
            ])
            .map_err(err)?;
        let label = number(m, b.value, b.value);
        let style = ("sans-serif", 10).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Bottom));
        chart.draw_series(std::iter::once(Text::new(label, (mid, b.high.max(b.value) + top * 0.01), style))).map_err(err)?;
    }
    Ok(())
}

/// A value with as many decimals as its scale needs: three significant
/// digits for rates, whole cycles.
fn number(m: Metric, v: f64, scale: f64) -> String {
    match m {
        Metric::Cycles => format!("{v:.0}"),
        Metric::Mpps if scale >= 10.0 => format!("{v:.1}"),
        Metric::Mpps if scale >= 1.0 => format!("{v:.2}"),
        Metric::Mpps => format!("{v:.3}"),
    }
}

fn draw_legend(area: &DrawingArea<BitMapBackend, Shift>, series: &[Series]) -> Result<(), String> {
    let text = ("sans-serif", 14).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
    let small = ("sans-serif", 12).into_font().color(&RGBColor(60, 60, 60)).pos(Pos::new(HPos::Left, VPos::Center));
    let (x, mut y) = (16, 30);
    for s in series {
        area.draw(&Rectangle::new([(x, y - 8), (x + 26, y + 8)], fill(s).filled())).map_err(err)?;
        if s.ring == Ring::Packed {
            area.draw(&Rectangle::new([(x, y - 8), (x + 26, y + 8)], colour(&s.switch).stroke_width(2))).map_err(err)?;
        }
        area.draw(&Text::new(s.label(), (x + 34, y), text.clone())).map_err(err)?;
        y += 28;
    }
    y += 12;
    for line in ["bars: median of the repeats", "whiskers: lowest to highest", "cycles: on the switch's poll", "core, per packet (tso64k:", "per 64 KB segment)"] {
        area.draw(&Text::new(line, (x, y), small.clone())).map_err(err)?;
        y += 18;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(switch: &str, ring: Ring, flows: u32, size: &str, mpps: f64, cycles: Option<f64>) -> Summary {
        Summary {
            switch: switch.into(),
            scenario: "2vm".into(),
            flows,
            size: size.into(),
            ring,
            rx_mpps: mpps,
            rx_mpps_min: mpps * 0.9,
            rx_mpps_max: mpps * 1.1,
            cycles_per_packet: cycles,
            cycles_min: cycles.map(|c| c - 10.0),
            cycles_max: cycles.map(|c| c + 10.0),
            ..Default::default()
        }
    }

    fn sample() -> Vec<Summary> {
        let mut v = Vec::new();
        for flows in [1, 1000] {
            for (size, k) in [("64", 1.0), ("1518", 0.3), ("9000", 0.05), ("tso64k", 0.02)] {
                if size == "tso64k" && flows > 1 {
                    continue;
                }
                for (sw, m) in [("vswitchd", 9.0), ("vswitchd-copy-once", 7.0), ("ovs-normal", 10.0), ("testpmd-io", 11.0)] {
                    v.push(sum(sw, Ring::Split, flows, size, m * k, Some(200.0 / k)));
                }
                if flows == 1 {
                    v.push(sum("testpmd-io", Ring::Packed, flows, size, 12.0 * k, None));
                }
            }
        }
        v
    }

    #[test]
    fn colours_are_fixed_per_switch_and_distinct() {
        let known = ["vswitchd", "vswitchd-copy-once", "ovs-normal", "ovs-flows", "testpmd-io"];
        let cs: Vec<RGBColor> = known.iter().map(|s| colour(s)).collect();
        for (i, a) in cs.iter().enumerate() {
            for b in &cs[i + 1..] {
                let d = (a.0 as i32 - b.0 as i32).abs() + (a.1 as i32 - b.1 as i32).abs() + (a.2 as i32 - b.2 as i32).abs();
                assert!(d > 90, "{a:?} and {b:?} are too close");
            }
        }
        assert_eq!(colour("some-new-switch"), colour("some-new-switch"));
        let split = Series { switch: "ovs-normal".into(), ring: Ring::Split };
        let packed = Series { ring: Ring::Packed, ..split.clone() };
        assert_eq!(fill(&split), colour("ovs-normal"));
        assert!(fill(&packed).1 > fill(&split).1, "packed is lighter");
    }

    #[test]
    fn layout_keeps_the_order_of_measurement_split_before_packed() {
        let l = layout(&sample());
        assert_eq!(l.sizes, ["64", "1518", "9000", "tso64k"]);
        assert_eq!(l.flows, [1, 1000]);
        let labels: Vec<String> = l.series.iter().map(Series::label).collect();
        assert_eq!(labels, ["vswitchd", "vswitchd-copy-once", "ovs-normal", "testpmd-io", "testpmd-io (packed ring)"]);
        let s = sample();
        assert_eq!(bars(&l, &s, 1, "64", Metric::Mpps).len(), 5);
        assert_eq!(bars(&l, &s, 1, "64", Metric::Cycles).len(), 4, "no bar without cycles");
        assert_eq!(bars(&l, &s, 1000, "tso64k", Metric::Mpps).len(), 0);
    }

    #[test]
    fn writes_a_png_of_the_grid_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        plot(&sample(), &path, "compare (2vm)").unwrap();
        let png = std::fs::read(&path).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let dim = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
        assert_eq!((dim(16), dim(20)), (4 * PANEL_W + LEGEND_W, TITLE_H + 4 * PANEL_H), "4 sizes, 2 flow counts x 2 metrics");
        assert!(plot(&[], &path, "empty").is_err());
    }
}
