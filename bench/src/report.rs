//! Results: medians per cell, ratios to the peers of the same run (in
//! throughput and in cycles per packet on the switch core), the terminal
//! table and the JSON summary. The PNG is `plot`'s.
use std::collections::{BTreeMap, HashMap};

use pmd_bridge::BURST;
use serde::{Deserialize, Serialize};

use crate::gen::Ring;
use crate::harness::{median, NotMeasured, Row};

/// One cell (switch, scenario, flows, size, ring) over its repeats.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub switch: String,
    pub scenario: String,
    pub flows: u32,
    pub size: String,
    pub ring: Ring,
    pub repeats: usize,
    /// Repeats that were not generator-bound (the only ones in Mpps ratios).
    pub counted: usize,
    pub rx_mpps: f64,
    /// Lowest and highest of the repeats (the plot's whiskers).
    pub rx_mpps_min: f64,
    pub rx_mpps_max: f64,
    pub gbps: f64,
    pub loss: f64,
    pub latency_p50_us: f64,
    pub latency_p99_us: f64,
    pub latency_p999_us: f64,
    pub cycles_per_packet: Option<f64>,
    pub cycles_min: Option<f64>,
    pub cycles_max: Option<f64>,
    pub generator_bound: bool,
    /// Mpps over OVS (NORMAL)'s, and over testpmd's, in the same cell.
    pub vs_ovs: Option<f64>,
    pub vs_testpmd: Option<f64>,
    /// Cycles per packet over OVS (NORMAL)'s, and over testpmd's: below 1
    /// is cheaper. The median of each repeat's ratio to the peer's row of
    /// the same repeat, measured next to it, over the repeats where both
    /// saw the machine in one state (`like_state`). Generator-bound repeats
    /// count: a switch's cost per packet does not depend on who the
    /// bottleneck was, and cycles are far steadier than Mpps here.
    pub cycles_vs_ovs: Option<f64>,
    pub cycles_vs_testpmd: Option<f64>,
    /// The repeats behind each of the two ratios.
    #[serde(default)]
    pub cycles_pairs_ovs: usize,
    #[serde(default)]
    pub cycles_pairs_testpmd: usize,
    /// A packed ring's cycles per packet over the same switch's split
    /// ring's, paired alike (`2vm-rings`: measured in the same phase).
    #[serde(default)]
    pub cycles_vs_split: Option<f64>,
    #[serde(default)]
    pub cycles_pairs_split: usize,
    /// Medians of the repeats' `Row::full_burst_cycles` and
    /// `full_burst_share`, and the first over the same switch's split
    /// ring's, paired alike: packed against split at the same burst.
    #[serde(default)]
    pub full_burst_cycles: Option<f64>,
    #[serde(default)]
    pub full_burst_share: Option<f64>,
    #[serde(default)]
    pub full_burst_vs_split: Option<f64>,
    #[serde(default)]
    pub full_burst_pairs_split: usize,
    /// `full_burst_vs_split` of the repeats in the machine's fast state
    /// (`fast_state`) and of the rest, apart, with how many paired in each:
    /// packed and split rings part by several percent more in its slow
    /// state.
    #[serde(default)]
    pub full_burst_vs_split_by_state: [(Option<f64>, usize); 2],
    pub copies_per_packet: Option<f64>,
    /// Median of the repeats' `Row::line_round_trip`: the machine's state.
    #[serde(default)]
    pub line_round_trip: Option<f64>,
    /// The repeats' cycles by second split into the machine's two levels,
    /// and each level over testpmd's same level in the same cell.
    #[serde(default)]
    pub levels: Option<Levels>,
    #[serde(default)]
    pub levels_vs_testpmd: (Option<f64>, Option<f64>),
    /// A packed ring's levels over the same switch's split ring's in the
    /// same cell (whose repeats alternate with them): the packed ring's
    /// target is to cost no more.
    #[serde(default)]
    pub levels_vs_split: (Option<f64>, Option<f64>),
    pub notes: Vec<String>,
}

/// A cell's seconds (`Row::cycles_by_second`, over its repeats) split at
/// `LEVEL_SPLIT` times its quickest: the shared machine moves between two
/// states, each held for seconds, and a 3-second phase may see either or
/// both, whatever the round trip timed before it said. Within one level
/// switches compare as the paired ratios cannot when a phase saw two.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Levels {
    /// Median cycles per packet of the seconds in each level, and how many.
    pub fast: f64,
    pub fast_seconds: usize,
    pub slow: Option<f64>,
    pub slow_seconds: usize,
}

/// Seconds within this factor of a cell's quickest are its fast level (the
/// two levels were 1.6 to 2.3 times apart on the machines measured).
const LEVEL_SPLIT: f64 = 1.4;

fn levels(rs: &[&Row]) -> Option<Levels> {
    let all: Vec<f64> = rs.iter().flat_map(|r| r.cycles_by_second.iter().copied()).collect();
    let lo = all.iter().copied().reduce(f64::min)?;
    let (fast, slow): (Vec<f64>, Vec<f64>) = all.into_iter().partition(|&c| c <= LEVEL_SPLIT * lo);
    Some(Levels { fast_seconds: fast.len(), fast: median(fast)?, slow_seconds: slow.len(), slow: median(slow) })
}

type Key = (String, u32, String, Ring, String);

fn key(r: &Row) -> Key {
    (r.scenario.clone(), r.flows, r.size.clone(), r.ring, r.switch.clone())
}

/// Round trips at most this far apart show the machine in one state. On
/// the shared machines here it moves between states (120 and 1100 cycles
/// on one, minutes apart), and every switch's cost moves with it, though
/// not by the same factor: only rows measured in one state compare.
const LIKE_STATE: f64 = 1.5;

/// Round trips within this factor of a run's lowest are its fast state:
/// 106-180 cycles there against 1000-1200 in the slow one, on the machine
/// measured (`LIKE_STATE`, which pairs rows, is tighter).
const FAST_STATE: f64 = 3.0;

/// Whether `r` was measured in the run's fast state (`FAST_STATE`; a row
/// without a round trip counts as fast).
fn fast_state(r: &Row, lowest: Option<f64>) -> bool {
    match (r.line_round_trip, lowest) {
        (Some(t), Some(lo)) => t <= FAST_STATE * lo,
        _ => true,
    }
}

fn like_state(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.max(b) <= LIKE_STATE * a.min(b),
        // Unmeasured (a row from before the probe, a core not pinned).
        _ => true,
    }
}

/// Cycles per packet of `rs` over `base`'s, repeat by repeat (see
/// `Summary::cycles_vs_testpmd`), and how many repeats paired.
fn paired_cycles(rs: &[&Row], base: Option<&Vec<&Row>>) -> (Option<f64>, usize) {
    paired_by(rs, base, |r| r.cycles_per_packet)
}

/// `paired_cycles` of the cycles `cycles` gives of a row.
fn paired_by(rs: &[&Row], base: Option<&Vec<&Row>>, cycles: fn(&Row) -> Option<f64>) -> (Option<f64>, usize) {
    let Some(base) = base else { return (None, 0) };
    let ratios: Vec<f64> = rs
        .iter()
        .filter_map(|r| {
            let b = base.iter().find(|b| b.repeat == r.repeat && like_state(r.line_round_trip, b.line_round_trip))?;
            Some(cycles(r)? / cycles(b).filter(|&c| c > 0.0)?)
        })
        .collect();
    let n = ratios.len();
    (median(ratios), n)
}

/// Summaries in the order the rows were measured in (the plan's order of
/// sizes and switches).
pub fn summarize(rows: &[Row]) -> Vec<Summary> {
    let mut order: Vec<Key> = Vec::new();
    let mut cells: HashMap<Key, Vec<&Row>> = HashMap::new();
    for r in rows {
        let k = key(r);
        if !cells.contains_key(&k) {
            order.push(k.clone());
        }
        cells.entry(k).or_default().push(r);
    }
    let med = |rs: &[&Row], f: &dyn Fn(&Row) -> f64| median(rs.iter().map(|r| f(r)).collect()).unwrap_or(0.0);
    let counted_mpps = |rs: &[&Row]| median(rs.iter().filter(|r| !r.generator_bound).map(|r| r.rx_mpps).collect());
    let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b.filter(|&b| b > 0.0)?);
    let lowest_rtt = rows.iter().filter_map(|r| r.line_round_trip).reduce(f64::min);
    let mut out = Vec::new();
    for k in order {
        let rs = &cells[&k];
        let (sc, flows, size, ring, sw) = k.clone();
        let base = |name: &str| cells.get(&(sc.clone(), flows, size.clone(), ring, name.to_string()));
        let cyc_all: Vec<f64> = rs.iter().filter_map(|r| r.cycles_per_packet).collect();
        let (mpps, cyc) = (counted_mpps(rs), median(cyc_all.clone()));
        let (ovs, tpmd) = (base("ovs-normal"), base("testpmd-io"));
        let ((cycles_vs_ovs, cycles_pairs_ovs), (cycles_vs_testpmd, cycles_pairs_testpmd)) = (paired_cycles(rs, ovs), paired_cycles(rs, tpmd));
        let lv = levels(rs);
        let by_level = |peer: Option<&Vec<&Row>>| {
            let p = peer.and_then(|b| levels(b));
            (ratio(lv.map(|l| l.fast), p.map(|l| l.fast)), ratio(lv.and_then(|l| l.slow), p.and_then(|l| l.slow)))
        };
        let split = (ring == Ring::Packed).then(|| cells.get(&(sc.clone(), flows, size.clone(), Ring::Split, sw.clone()))).flatten();
        let (levels_vs_testpmd, levels_vs_split) = (by_level(tpmd), by_level(split));
        let (cycles_vs_split, cycles_pairs_split) = paired_cycles(rs, split);
        let (full_burst_vs_split, full_burst_pairs_split) = paired_by(rs, split, |r| r.full_burst_cycles);
        let (fast, slow): (Vec<&Row>, Vec<&Row>) = rs.iter().partition(|r| fast_state(r, lowest_rtt));
        let full_burst_vs_split_by_state = [fast, slow].map(|rs| paired_by(&rs, split, |r| r.full_burst_cycles));
        let mut notes: Vec<String> = rs.iter().filter(|r| !r.note.is_empty()).map(|r| r.note.clone()).collect();
        notes.sort();
        notes.dedup();
        out.push(Summary {
            switch: sw,
            scenario: sc,
            flows,
            size: size.clone(),
            ring,
            repeats: rs.len(),
            counted: rs.iter().filter(|r| !r.generator_bound).count(),
            rx_mpps: med(rs, &|r| r.rx_mpps),
            rx_mpps_min: rs.iter().map(|r| r.rx_mpps).fold(f64::INFINITY, f64::min),
            rx_mpps_max: rs.iter().map(|r| r.rx_mpps).fold(0.0, f64::max),
            gbps: med(rs, &|r| r.gbps),
            loss: med(rs, &|r| r.loss),
            latency_p50_us: med(rs, &|r| r.latency_p50_us),
            latency_p99_us: med(rs, &|r| r.latency_p99_us),
            latency_p999_us: med(rs, &|r| r.latency_p999_us),
            cycles_per_packet: cyc,
            cycles_min: cyc_all.iter().copied().reduce(f64::min),
            cycles_max: cyc_all.iter().copied().reduce(f64::max),
            generator_bound: rs.iter().all(|r| r.generator_bound),
            vs_ovs: ratio(mpps, ovs.and_then(|b| counted_mpps(b))),
            vs_testpmd: ratio(mpps, tpmd.and_then(|b| counted_mpps(b))),
            cycles_vs_ovs,
            cycles_vs_testpmd,
            cycles_pairs_ovs,
            cycles_pairs_testpmd,
            cycles_vs_split,
            cycles_pairs_split,
            full_burst_cycles: median(rs.iter().filter_map(|r| r.full_burst_cycles).collect()),
            full_burst_share: median(rs.iter().filter_map(|r| r.full_burst_share).collect()),
            full_burst_vs_split,
            full_burst_pairs_split,
            full_burst_vs_split_by_state,
            copies_per_packet: median(rs.iter().filter_map(|r| r.copies_per_packet).collect()),
            line_round_trip: median(rs.iter().filter_map(|r| r.line_round_trip).collect()),
            levels: lv,
            levels_vs_testpmd,
            levels_vs_split,
            notes,
        });
    }
    out
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}")).unwrap_or_else(|| "-".into())
}

/// A paired ratio with the number of repeats behind it ("0.72/4").
fn paired(v: Option<f64>, n: usize) -> String {
    v.map(|x| format!("{x:.2}/{n}")).unwrap_or_else(|| "-".into())
}

/// Cells without a measurement, one line per cell and reason, with how
/// many repeats each covers.
pub fn not_measured(missing: &[NotMeasured]) -> Vec<String> {
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for m in missing {
        let cell = format!("{} {} {} flows {} {} ring", m.switch, m.scenario, m.flows, m.size, m.ring.name());
        // The first line: a failure's reason may carry a peer's log tail.
        let reason = m.reason.lines().next().unwrap_or("").chars().take(240).collect::<String>();
        let what = if m.unsupported { "not supported" } else { "failed" };
        *seen.entry((cell, format!("{what}: {reason}"))).or_default() += 1;
    }
    seen.into_iter().map(|((cell, why), n)| format!("{cell}, {n} repeat(s): {why}")).collect()
}

/// The terminal table. `retries`: each switch's enqueue retries as run
/// (`SwitchKind::retries`), printed above it.
pub fn table(sums: &[Summary], missing: &[NotMeasured], retries: &[(String, String)]) -> String {
    let mut s = String::from("vhost retries (guest ring full):");
    for (sw, r) in retries {
        s.push_str(&format!("\n  {sw}: {r}"));
    }
    s.push_str(&format!(
        "\n{:<24} {:<6} {:<11} {:>5} {:>6} {:>8} {:>7} {:>7} {:>7} {:>7} {:>8} {:>7} {:>6} {:>5} {:>5} | {:>6} {:>6} | {:>7} {:>7} {:>7}\n",
        "switch", "ring", "scenario", "flows", "size", "Mpps", "Gbps", "loss%", "p50 us", "p99 us", "p99.9 us", "cyc/pkt", "cp/pkt", "rtt", "gen", "xOVS", "xtpmd", "cOVS", "ctpmd", "csplit"
    ));
    for r in sums {
        s.push_str(&format!(
            "{:<24} {:<6} {:<11} {:>5} {:>6} {:>8.3} {:>7.2} {:>7.3} {:>7.1} {:>7.1} {:>8.1} {:>7} {:>6} {:>5} {:>5} | {:>6} {:>6} | {:>7} {:>7} {:>7}\n",
            r.switch,
            r.ring.name(),
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
            opt(r.line_round_trip, 0),
            if r.generator_bound { "BOUND" } else if r.counted < r.repeats { "some" } else { "ok" },
            opt(r.vs_ovs, 2),
            opt(r.vs_testpmd, 2),
            paired(r.cycles_vs_ovs, r.cycles_pairs_ovs),
            paired(r.cycles_vs_testpmd, r.cycles_pairs_testpmd),
            paired(r.cycles_vs_split, r.cycles_pairs_split),
        ));
        for n in &r.notes {
            s.push_str(&format!("    note: {n}\n"));
        }
    }
    s.push_str(
        "xOVS, xtpmd: Mpps over ovs-normal's and testpmd-io's (same cell and ring; generator-bound repeats left out); \
         cOVS, ctpmd: cycles per packet on the switch core over theirs (below 1: cheaper), the median of each repeat's \
         ratio to theirs in the same repeat, counting only repeats whose rtt were within 1.5x of each other \
         (/n: how many; -: none); csplit: a packed ring's over the same switch's split ring's, paired alike; \
         rtt: cycles a cache line took to go round between the switch's core and the generator's before the cell \
         (median of the repeats; higher: a slower period of this shared machine, every figure with it)\n",
    );
    if sums.iter().any(|r| r.size == "tso64k") {
        s.push_str(
            "tso64k rows: 64 KB TCP segments (65160 B payload, MSS 1448) with TSO asked of the switch; Gbps = TCP payload \
             received, Mpps = million segments' worth of payload received per second, loss% = payload bytes lost, \
             cyc/pkt = switch core cycles per 64 KB segment taken in, cp/pkt = bytes copied per segment over its size\n",
        );
    }
    let by_level: Vec<(&Summary, Levels)> = sums.iter().filter_map(|r| Some((r, r.levels?))).collect();
    if !by_level.is_empty() {
        s.push_str(&format!(
            "by level: each cell's seconds within {LEVEL_SPLIT}x of its quickest (fast) and the rest (slow), median cycles per packet (seconds), and over testpmd-io's \
             same level in the same cell (ctpmd) and, for a packed ring, over the same switch's split ring's (csplit)\n"
        ));
    }
    for (r, l) in by_level {
        let slow = l.slow.map_or("-".to_string(), |c| format!("{c:.0} ({} s)", l.slow_seconds));
        let vs = |name: &str, v: (Option<f64>, Option<f64>)| match v {
            (None, None) => String::new(),
            (f, sl) => format!(" | {name} fast {} slow {}", opt(f, 2), opt(sl, 2)),
        };
        let vs = vs("ctpmd", r.levels_vs_testpmd) + &vs("csplit", r.levels_vs_split);
        s.push_str(&format!("  {} {} {} {} {}: fast {:.0} ({} s) slow {slow}{vs}\n", r.switch, r.ring.name(), r.scenario, r.flows, r.size, l.fast, l.fast_seconds));
    }
    let full: Vec<&Summary> = sums.iter().filter(|r| r.full_burst_cycles.is_some()).collect();
    if !full.is_empty() {
        s.push_str(&format!(
            "at full bursts: median cycles per packet of the polls that took a whole burst ({BURST} frames) from the row's VMs, the share of their packets \
             those polls took, and for a packed ring its over the same switch's split ring's, paired alike (csplit), over all repeats and over those in the \
             machine's fast state (round trip within {FAST_STATE}x of the run's lowest) and the rest apart\n"
        ));
    }
    for r in full {
        let [(f, nf), (sl, ns)] = r.full_burst_vs_split_by_state;
        let vs = if r.ring == Ring::Packed { format!(" | csplit {} (fast {}, slow {})", paired(r.full_burst_vs_split, r.full_burst_pairs_split), paired(f, nf), paired(sl, ns)) } else { String::new() };
        s.push_str(&format!("  {} {} {} {} {}: {} ({}% of its packets){vs}\n", r.switch, r.ring.name(), r.scenario, r.flows, r.size, opt(r.full_burst_cycles, 0), opt(r.full_burst_share.map(|f| f * 100.0), 0)));
    }
    for line in not_measured(missing) {
        s.push_str(&format!("not measured: {line}\n"));
    }
    s
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
        assert_eq!((v.rx_mpps_min, v.rx_mpps_max), (4.0, 100.0), "whiskers span every repeat");
        assert!(table(&s, &[], &[]).contains("vswitchd"));
    }

    #[test]
    fn cycle_ratios_count_every_repeat_and_stay_within_a_ring() {
        let cyc = |sw: &str, ring: Ring, rep: usize, c: f64, bound: bool| Row { ring, cycles_per_packet: Some(c), ..row(sw, rep, 1.0, bound) };
        let rows = vec![
            cyc("vswitchd", Ring::Split, 0, 100.0, false),
            cyc("vswitchd", Ring::Split, 1, 140.0, true),
            cyc("vswitchd", Ring::Split, 2, 120.0, false),
            cyc("ovs-normal", Ring::Split, 0, 200.0, false),
            cyc("ovs-normal", Ring::Split, 1, 280.0, false),
            cyc("ovs-normal", Ring::Split, 2, 240.0, false),
            cyc("testpmd-io", Ring::Split, 0, 50.0, false),
            cyc("testpmd-io", Ring::Split, 2, 60.0, false),
            cyc("vswitchd", Ring::Packed, 0, 90.0, false),
            cyc("testpmd-io", Ring::Packed, 0, 45.0, false),
        ];
        let s = summarize(&rows);
        let v = s.iter().find(|r| r.switch == "vswitchd" && r.ring == Ring::Split).unwrap();
        assert_eq!(v.cycles_per_packet, Some(120.0));
        assert_eq!((v.cycles_min, v.cycles_max), (Some(100.0), Some(140.0)));
        assert_eq!((v.cycles_vs_ovs, v.cycles_vs_testpmd), (Some(0.5), Some(2.0)));
        assert_eq!((v.cycles_pairs_ovs, v.cycles_pairs_testpmd), (3, 2), "a repeat the peer lacks does not pair");
        let p = s.iter().find(|r| r.switch == "vswitchd" && r.ring == Ring::Packed).unwrap();
        assert_eq!((p.cycles_vs_ovs, p.cycles_vs_testpmd), (None, Some(2.0)), "packed rows compare with packed rows only");
        let order: Vec<(&str, Ring)> = s.iter().map(|r| (r.switch.as_str(), r.ring)).collect();
        assert_eq!(order[0], ("vswitchd", Ring::Split), "summaries keep the order of measurement");
        assert_eq!(order[3], ("vswitchd", Ring::Packed));
        let t = table(&s, &[], &[("vswitchd".into(), "8 ([switch] vhost_retries)".into())]);
        assert!(t.contains("vswitchd: 8 ([switch] vhost_retries)"), "{t}");
        assert!(t.lines().any(|l| l.starts_with("vswitchd ") && l.contains("packed") && l.trim_end().ends_with("-  2.00/1  0.90/1")), "{t}");
    }

    #[test]
    fn cycle_ratios_pair_repeats_measured_in_one_state_of_the_machine() {
        let at = |sw: &str, rep: usize, c: f64, rtt: Option<f64>| Row { cycles_per_packet: Some(c), line_round_trip: rtt, ..row(sw, rep, 1.0, false) };
        // Both switches cost three times as much when a line's round trip
        // is 1100 cycles, and each met that state in a different repeat.
        let rows = vec![
            at("vswitchd-copy-once", 0, 100.0, Some(120.0)),
            at("vswitchd-copy-once", 1, 300.0, Some(1100.0)),
            at("vswitchd-copy-once", 2, 300.0, Some(1150.0)),
            at("vswitchd-copy-once", 3, 100.0, None),
            at("testpmd-io", 0, 150.0, Some(130.0)),
            at("testpmd-io", 1, 150.0, Some(125.0)),
            at("testpmd-io", 2, 450.0, Some(1080.0)),
            at("testpmd-io", 3, 150.0, Some(118.0)),
        ];
        let s = summarize(&rows);
        let co = s.iter().find(|r| r.switch == "vswitchd-copy-once").unwrap();
        assert_eq!(co.cycles_pairs_testpmd, 3, "repeat 1 saw two states; an unmeasured repeat pairs");
        let r = co.cycles_vs_testpmd.unwrap();
        assert!((r - 2.0 / 3.0).abs() < 1e-9, "{r}: the ratio of the medians would say 1.33");
        let alone = summarize(&rows[..2].iter().chain(&rows[5..6]).cloned().collect::<Vec<_>>());
        assert_eq!((alone[0].cycles_vs_testpmd, alone[0].cycles_pairs_testpmd), (None, 0), "no repeat in one state: no ratio");
        assert!(table(&alone, &[], &[]).lines().any(|l| l.starts_with("vswitchd-copy-once") && l.trim_end().ends_with("-       -")));
    }

    #[test]
    fn levels_split_a_cells_seconds_and_compare_each_with_testpmds_same_level() {
        let at = |sw: &str, rep: usize, secs: &[f64]| Row { cycles_by_second: secs.to_vec(), ..row(sw, rep, 1.0, false) };
        // Copy-once saw the slow level for most of its seconds, testpmd for
        // few: their phase figures would compare the two levels.
        let rows = vec![
            at("vswitchd-copy-once", 0, &[90.0, 200.0, 210.0]),
            at("vswitchd-copy-once", 1, &[200.0, 92.0, 94.0]),
            at("testpmd-io", 0, &[120.0, 118.0, 122.0]),
            at("testpmd-io", 1, &[250.0, 120.0, 120.0]),
            at("ovs-normal", 0, &[]),
        ];
        let s = summarize(&rows);
        let co = s.iter().find(|r| r.switch == "vswitchd-copy-once").unwrap();
        assert_eq!(co.levels, Some(Levels { fast: 92.0, fast_seconds: 3, slow: Some(200.0), slow_seconds: 3 }));
        let (f, sl) = co.levels_vs_testpmd;
        assert!((f.unwrap() - 92.0 / 120.0).abs() < 1e-9 && (sl.unwrap() - 200.0 / 250.0).abs() < 1e-9, "{f:?} {sl:?}");
        let tp = s.iter().find(|r| r.switch == "testpmd-io").unwrap();
        assert_eq!(tp.levels.map(|l| (l.fast_seconds, l.slow_seconds)), Some((5, 1)));
        assert_eq!(s.iter().find(|r| r.switch == "ovs-normal").unwrap().levels, None, "no figures by second: no levels");
        let t = table(&s, &[], &[]);
        assert!(t.contains("vswitchd-copy-once split 2vm 1 64: fast 92 (3 s) slow 200 (3 s) | ctpmd fast 0.77 slow 0.80"), "{t}");
    }

    #[test]
    fn a_packed_rings_levels_are_compared_with_the_same_switchs_split_ring() {
        let at = |ring: Ring, rep: usize, secs: &[f64]| Row { ring, cycles_by_second: secs.to_vec(), ..row("vswitchd-copy-once", rep, 1.0, false) };
        let rows = vec![
            at(Ring::Split, 0, &[90.0, 200.0]),
            at(Ring::Packed, 0, &[91.0, 93.0, 150.0]),
            at(Ring::Split, 1, &[88.0, 190.0]),
            Row { ring: Ring::Packed, ..row("testpmd-io", 0, 1.0, false) },
        ];
        let s = summarize(&rows);
        let packed = s.iter().find(|r| r.switch == "vswitchd-copy-once" && r.ring == Ring::Packed).unwrap();
        let (f, sl) = packed.levels_vs_split;
        assert!((f.unwrap() - 92.0 / 89.0).abs() < 1e-9 && (sl.unwrap() - 150.0 / 195.0).abs() < 1e-9, "{f:?} {sl:?}");
        assert_eq!(s[0].levels_vs_split, (None, None), "a split ring is not compared with itself");
        let t = table(&s, &[], &[]);
        assert!(t.contains("vswitchd-copy-once packed 2vm 1 64: fast 92 (2 s) slow 150 (1 s) | csplit fast 1.03 slow 0.77"), "{t}");
    }

    /// `2vm-rings` rows: a packed row and its split row from one phase
    /// (one round trip), paired repeat by repeat into `csplit`, over all
    /// their polls and over their full bursts apart.
    #[test]
    fn a_packed_rings_cycles_pair_with_its_split_rings_in_the_same_repeat() {
        let at = |ring: Ring, rep: usize, cyc: f64| Row {
            ring,
            scenario: "2vm-rings".into(),
            cycles_per_packet: Some(cyc),
            full_burst_cycles: Some(cyc - 10.0),
            full_burst_share: Some(if ring == Ring::Packed { 0.6 } else { 1.0 }),
            line_round_trip: Some(120.0),
            ..row("vswitchd-copy-once", rep, 1.0, false)
        };
        let rows = vec![at(Ring::Split, 0, 100.0), at(Ring::Packed, 0, 90.0), at(Ring::Split, 1, 200.0), at(Ring::Packed, 1, 220.0), at(Ring::Split, 2, 100.0), at(Ring::Packed, 2, 95.0)];
        let s = summarize(&rows);
        let packed = s.iter().find(|r| r.ring == Ring::Packed).unwrap();
        assert_eq!((packed.cycles_vs_split, packed.cycles_pairs_split), (Some(0.95), 3), "the median of 0.90, 1.10 and 0.95");
        assert_eq!(s[0].cycles_vs_split, None, "a split ring is not compared with itself");
        let full = (packed.full_burst_cycles, packed.full_burst_share, packed.full_burst_vs_split.map(|v| (v * 1e4).round() / 1e4), packed.full_burst_pairs_split);
        assert_eq!(full, (Some(85.0), Some(0.6), Some(0.9444), 3), "85 the median of 80, 210 and 85; 0.944 that of 80/90, 210/190 and 85/90");
        let t = table(&s, &[], &[]);
        assert!(t.lines().any(|l| l.starts_with("vswitchd-copy-once       packed 2vm-rings") && l.ends_with("0.95/3")), "{t}");
        assert!(t.contains("vswitchd-copy-once split 2vm-rings 1 64: 90 (100% of its packets)\n"), "{t}");
        assert!(t.contains("vswitchd-copy-once packed 2vm-rings 1 64: 85 (60% of its packets) | csplit 0.94/3 (fast 0.94/3, slow -)"), "{t}");
    }

    /// The machine's two states part packed from split rings by different
    /// amounts: `csplit` at full bursts is also given for each apart, by
    /// the repeat's round trip against the run's lowest.
    #[test]
    fn full_burst_csplit_is_also_given_for_each_state_of_the_machine() {
        let at = |ring: Ring, rep: usize, rtt: f64, cyc: f64| Row {
            ring,
            scenario: "2vm-rings".into(),
            full_burst_cycles: Some(cyc),
            line_round_trip: Some(rtt),
            ..row("vswitchd-copy-once", rep, 1.0, false)
        };
        let mut rows = Vec::new();
        for (rep, rtt, split, packed) in [(0, 120.0, 100.0, 101.0), (1, 1100.0, 130.0, 140.0), (2, 170.0, 100.0, 103.0), (3, 1050.0, 130.0, 138.0)] {
            rows.extend([at(Ring::Split, rep, rtt, split), at(Ring::Packed, rep, rtt, packed)]);
        }
        let s = summarize(&rows);
        let packed = s.iter().find(|r| r.ring == Ring::Packed).unwrap();
        let round = |(v, n): (Option<f64>, usize)| (v.map(|v| (v * 1e4).round() / 1e4), n);
        assert_eq!(packed.full_burst_vs_split_by_state.map(round), [(Some(1.02), 2), (Some(1.0692), 2)], "1.01 and 1.03; 140/130 and 138/130");
        assert_eq!(s[0].full_burst_vs_split_by_state, [(None, 0), (None, 0)], "a split ring is not compared with itself");
        let t = table(&s, &[], &[]);
        assert!(t.contains("| csplit 1.05/4 (fast 1.02/2, slow 1.07/2)"), "{t}");
    }

    #[test]
    fn a_cells_round_trip_is_the_median_of_its_repeats_and_shown() {
        let at = |rep: usize, rtt: Option<f64>| Row { line_round_trip: rtt, cycles_per_packet: Some(150.0), ..row("vswitchd-copy-once", rep, 1.0, false) };
        let s = summarize(&[at(0, Some(240.0)), at(1, Some(480.0)), at(2, Some(260.0)), at(3, None)]);
        assert_eq!(s[0].line_round_trip, Some(260.0), "the repeats that have one");
        let t = table(&s, &[], &[]);
        let header = t.lines().find(|l| l.starts_with("switch")).unwrap();
        let line = t.lines().find(|l| l.starts_with("vswitchd-copy-once")).unwrap();
        let col = |l: &str, i: usize| l.split_whitespace().nth(i).map(str::to_string);
        let i = header.split_whitespace().position(|c| c == "rtt").expect("an rtt column");
        // The header's "p50 us", "p99 us" and "p99.9 us" are two words each.
        assert_eq!(col(line, i - 3).as_deref(), Some("260"), "{t}");
        assert_eq!(summarize(&[at(0, None)])[0].line_round_trip, None, "none measured: none shown");
    }

    #[test]
    fn cells_not_measured_are_listed_once_per_reason() {
        let m = |rep: usize, reason: &str| NotMeasured {
            switch: "vswitchd-copy-once".into(),
            scenario: "2vm".into(),
            flows: 1,
            size: "64".into(),
            ring: Ring::Packed,
            repeat: rep,
            unsupported: true,
            reason: reason.into(),
        };
        let lines = not_measured(&[m(0, "negotiated split\nlog tail"), m(1, "negotiated split\nother tail")]);
        assert_eq!(lines, vec!["vswitchd-copy-once 2vm 1 flows 64 packed ring, 2 repeat(s): not supported: negotiated split"]);
        assert!(table(&[], &[m(0, "x")], &[]).contains("not measured: vswitchd-copy-once"));
    }
}
