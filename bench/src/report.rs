//! Results: medians per cell, ratios to the peers of the same run, the
//! terminal table, the JSON file and the PNG plot.
use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::harness::{median, Row};

/// One cell (switch, scenario, flows, size) over its repeats.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub switch: String,
    pub scenario: String,
    pub flows: u32,
    pub size: String,
    pub repeats: usize,
    /// Repeats that were not generator-bound (the only ones in ratios).
    pub counted: usize,
    pub rx_mpps: f64,
    pub gbps: f64,
    pub loss: f64,
    pub latency_p50_us: f64,
    pub latency_p99_us: f64,
    pub latency_p999_us: f64,
    pub cycles_per_packet: Option<f64>,
    pub generator_bound: bool,
    pub vs_ovs: Option<f64>,
    pub vs_testpmd: Option<f64>,
    pub copies_per_packet: Option<f64>,
    pub notes: Vec<String>,
}

fn key(r: &Row) -> (String, u32, String) {
    (r.scenario.clone(), r.flows, r.size.clone())
}

pub fn summarize(rows: &[Row]) -> Vec<Summary> {
    let mut cells: BTreeMap<(String, u32, String, String), Vec<&Row>> = BTreeMap::new();
    for r in rows {
        let (sc, f, z) = key(r);
        cells.entry((sc, f, z, r.switch.clone())).or_default().push(r);
    }
    let med = |rs: &[&Row], f: &dyn Fn(&Row) -> f64| median(rs.iter().map(|r| f(r)).collect()).unwrap_or(0.0);
    let counted_mpps = |rs: &[&Row]| median(rs.iter().filter(|r| !r.generator_bound).map(|r| r.rx_mpps).collect());
    let mut out = Vec::new();
    for ((sc, flows, size, sw), rs) in &cells {
        let base = |name: &str| cells.get(&(sc.clone(), *flows, size.clone(), name.to_string())).and_then(|b| counted_mpps(b));
        let mine = counted_mpps(rs);
        let ratio = |b: Option<f64>| Some(mine? / b.filter(|&b| b > 0.0)?);
        let mut notes: Vec<String> = rs.iter().filter(|r| !r.note.is_empty()).map(|r| r.note.clone()).collect();
        notes.sort();
        notes.dedup();
        out.push(Summary {
            switch: sw.clone(),
            scenario: sc.clone(),
            flows: *flows,
            size: size.clone(),
            repeats: rs.len(),
            counted: rs.iter().filter(|r| !r.generator_bound).count(),
            rx_mpps: med(rs, &|r| r.rx_mpps),
            gbps: med(rs, &|r| r.gbps),
            loss: med(rs, &|r| r.loss),
            latency_p50_us: med(rs, &|r| r.latency_p50_us),
            latency_p99_us: med(rs, &|r| r.latency_p99_us),
            latency_p999_us: med(rs, &|r| r.latency_p999_us),
            cycles_per_packet: median(rs.iter().filter_map(|r| r.cycles_per_packet).collect()),
            generator_bound: rs.iter().all(|r| r.generator_bound),
            vs_ovs: ratio(base("ovs-normal")),
            vs_testpmd: ratio(base("testpmd-io")),
            copies_per_packet: median(rs.iter().filter_map(|r| r.copies_per_packet).collect()),
            notes,
        });
    }
    out
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}")).unwrap_or_else(|| "-".into())
}

/// The terminal table.
pub fn table(sums: &[Summary]) -> String {
    let mut s = format!(
        "{:<11} {:<10} {:>6} {:>5} {:>8} {:>7} {:>7} {:>8} {:>8} {:>9} {:>8} {:>6} {:>5} {:>7} {:>7}\n",
        "switch", "scenario", "flows", "size", "Mpps", "Gbps", "loss%", "p50 us", "p99 us", "p99.9 us", "cyc/pkt", "cp/pkt", "gen", "xOVS", "xtpmd"
    );
    for r in sums {
        s.push_str(&format!(
            "{:<11} {:<10} {:>6} {:>5} {:>8.3} {:>7.2} {:>7.3} {:>8.1} {:>8.1} {:>9.1} {:>8} {:>6} {:>5} {:>7} {:>7}\n",
            r.switch,
            r.scenario,
            r.flows,
            r.size,
            r.rx_mpps,
            r.gbps,
            r.loss * 100.0,
            r.latency_p50_us,
            r.latency_p99_us,
            r.latency_p999_us,
            opt(r.cycles_per_packet, 0),
            opt(r.copies_per_packet, 2),
            if r.generator_bound { "BOUND" } else if r.counted < r.repeats { "some" } else { "ok" },
            opt(r.vs_ovs, 2),
            opt(r.vs_testpmd, 2),
        ));
        for n in &r.notes {
            s.push_str(&format!("    note: {n}\n"));
        }
    }
    if sums.iter().any(|r| r.size == "tso64k") {
        s.push_str(
            "tso64k rows: 64 KB TCP segments (65160 B payload, MSS 1448) with TSO asked of the switch; Gbps = TCP payload \
             received, Mpps = million segments' worth of payload received per second, loss% = payload bytes lost, \
             cyc/pkt = switch core cycles per 64 KB segment taken in, cp/pkt = bytes copied per segment over its size\n",
        );
    }
    s
}

/// Throughput against frame size, one line per switch and flow count.
pub fn plot(sums: &[Summary], path: &Path, title: &str) -> Result<(), String> {
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
        .map_err(|e| format!("font DejaVuSans.ttf (fonts-dejavu-core): {e}"))?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, font);
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in sums.iter().filter(|r| r.scenario == sums[0].scenario) {
        if let Ok(z) = r.size.parse::<f64>() {
            series.entry(format!("{} ({} flows)", r.switch, r.flows)).or_default().push((z, r.rx_mpps));
        }
    }
    let max_x = series.values().flatten().map(|p| p.0).fold(64.0, f64::max);
    let max_y = series.values().flatten().map(|p| p.1).fold(0.1, f64::max) * 1.15;
    let root = BitMapBackend::new(path, (1000, 650)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_x * 1.05, 0f64..max_y)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("frame size (bytes)")
        .y_desc("throughput (Mpps, median)")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, mut pts)) in series.into_iter().enumerate() {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled()))).map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(sw: &str, rep: usize, mpps: f64, bound: bool) -> Row {
        Row { switch: sw.into(), scenario: "2vm".into(), flows: 1, size: "64".into(), repeat: rep, rx_mpps: mpps, generator_bound: bound, ..Default::default() }
    }

    #[test]
    fn medians_and_ratios_leave_out_generator_bound_rows() {
        let rows = vec![
            row("vswitchd", 0, 4.0, false),
            row("vswitchd", 1, 6.0, false),
            row("vswitchd", 2, 100.0, true),
            row("ovs-normal", 0, 2.0, false),
            row("ovs-normal", 1, 2.0, false),
            row("testpmd-io", 0, 8.0, true),
        ];
        let s = summarize(&rows);
        let v = s.iter().find(|r| r.switch == "vswitchd").unwrap();
        assert_eq!((v.repeats, v.counted), (3, 2));
        assert_eq!(v.vs_ovs, Some(2.5), "median 5 of the counted rows over 2");
        assert_eq!(v.vs_testpmd, None, "every testpmd row was generator-bound");
        assert!(table(&s).contains("vswitchd"));
    }
}
