//! What an idle switch costs: each switch started with two VMs attached
//! (addresses learned, then silence), and the CPU time of its processes
//! over a window read from /proc (the scheduler's count per thread),
//! alternated and repeated. The figure for
//! idle sleep (`pmd_sleep_max_us`) beside pure polling.
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::gen::{Generator, PortOpts, Ring, Size};
use crate::harness::{median, Scenario, Session};
use crate::peers::{Setup, SwitchKind};

/// One window of one switch.
#[derive(Clone, Debug, Serialize)]
pub struct IdleRow {
    pub switch: String,
    pub repeat: usize,
    /// CPU time of the switch's processes over the window, in cores (1.0:
    /// one core busy all the time).
    pub cores: f64,
}

/// Each of `kinds` idle for `window`, `repeats` times, the order rotated
/// each repeat. A switch that fails to start gives an error line instead.
pub fn measure(gen: &Generator, setup: &Setup, kinds: &[SwitchKind], repeats: usize, window: Duration) -> Vec<Result<IdleRow, String>> {
    let sc = Scenario::parse("2vm").expect("a scenario");
    let mut out = Vec::new();
    for repeat in 0..repeats {
        for k in 0..kinds.len() {
            let kind = kinds[(k + repeat) % kinds.len()];
            out.push(one(gen, setup, &sc, kind, repeat, window).map_err(|e| format!("{} repeat {}: {e}", kind.name(), repeat + 1)));
        }
    }
    out
}

fn one(gen: &Generator, setup: &Setup, sc: &Scenario, kind: SwitchKind, repeat: usize, window: Duration) -> Result<IdleRow, String> {
    let s = Session::open(gen, kind, setup, sc, 1, &format!("i{repeat}"), PortOpts::for_size(Size::Fixed(64), Ring::Split), repeat)?;
    // Past the learning phase's last frames.
    std::thread::sleep(Duration::from_secs(1));
    let (t0, c0) = (Instant::now(), s.switch.cpu_ns());
    std::thread::sleep(window);
    let (t1, c1) = (Instant::now(), s.switch.cpu_ns());
    s.close();
    let ns = c1?.checked_sub(c0?).ok_or("CPU time went backwards")?;
    Ok(IdleRow { switch: kind.name().into(), repeat, cores: ns as f64 / 1e9 / (t1 - t0).as_secs_f64() })
}

/// Per switch: the median, lowest and highest share of a core.
pub fn table(kinds: &[SwitchKind], rows: &[IdleRow]) -> String {
    let mut s = format!("{:<26} {:>8} {:>8} {:>8}  (share of one core, idle)\n", "switch", "median", "lowest", "highest");
    for k in kinds {
        let v: Vec<f64> = rows.iter().filter(|r| r.switch == k.name()).map(|r| r.cores * 100.0).collect();
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        if let Some(m) = median(v) {
            s.push_str(&format!("{:<26} {:>7.1}% {:>7.1}% {:>7.1}%\n", k.name(), m, lo, hi));
        }
    }
    s
}
