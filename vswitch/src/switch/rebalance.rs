//! Rx queue loads as measured, and what they decide: `vswitchctl pmd
//! rebalance` and `[switch] pmd_auto_lb`.
//!
//! Every `INTERVAL` the control thread samples the cumulative cycle
//! counters: each thread's busy cycles and all its cycles (busy, idle,
//! asleep), and each rx queue's busy cycles summed over the threads (so a
//! queue that moved keeps its history). Loads are measured over the last
//! `INTERVALS` intervals and the current one, as OVS measures them.
//!
//! Auto load balancing follows OVS's pmd-auto-lb: a thread busy for the
//! load threshold's share of an interval or more is overloaded in it; when
//! the rebalance interval has passed since the last check and a thread has
//! been overloaded `INTERVALS` intervals in a row, `by_cycles` makes a dry
//! run, applied if it lowers the variance of the threads' loads by the
//! improvement threshold or more. `vswitchctl pmd rebalance` applies the
//! assignment at once, whatever it improves. A move is a replan: no
//! packet is lost or reordered (`quiesce`).
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use dataplane::counters::{PmdCounters, PmdTotals, MAX_PORTS, MAX_RXQ};
use pmd_bridge::cycles::tsc;

use super::placement::{by_cycles, improvement, thread_loads, variance, Rxq};
use super::Switch;
use crate::config::AutoLb;
use crate::protocol::{RebalanceInfo, RxqMove};

pub(super) const INTERVAL: Duration = Duration::from_secs(10);
pub(super) const INTERVALS: usize = 6;

/// Cumulative cycle counters at one moment (or their growth over a while).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Sample {
    pub tsc: u64,
    /// Per thread: busy cycles, and all its cycles (busy, idle, asleep).
    pub threads: Vec<(u64, u64)>,
    /// Per port slot and queue: busy cycles, summed over the threads.
    pub rxqs: Vec<[u64; MAX_RXQ]>,
}

impl Sample {
    pub fn read<'a>(pmds: impl Iterator<Item = &'a PmdCounters>) -> Sample {
        let mut s = Sample { tsc: tsc(), threads: Vec::new(), rxqs: vec![[0; MAX_RXQ]; MAX_PORTS] };
        for c in pmds {
            let t = PmdTotals::read(c);
            s.threads.push((t.busy_cycles, t.busy_cycles + t.idle_cycles + t.sleep_cycles));
            for (acc, queues) in s.rxqs.iter_mut().zip(&c.rxq_cycles) {
                for (a, q) in acc.iter_mut().zip(queues) {
                    *a += q.load(Relaxed);
                }
            }
        }
        s
    }

    pub fn since(&self, base: &Sample) -> Sample {
        let threads = self.threads.iter().zip(&base.threads).map(|(a, b)| (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1))).collect();
        let mut rxqs = self.rxqs.clone();
        for (r, b) in rxqs.iter_mut().zip(&base.rxqs) {
            for (x, y) in r.iter_mut().zip(b) {
                *x = x.saturating_sub(*y);
            }
        }
        Sample { tsc: self.tsc.saturating_sub(base.tsc), threads, rxqs }
    }
}

/// The samples of the last intervals, and the auto load balancer's state.
pub(super) struct Loads {
    /// Taken at the start of each interval kept, oldest first.
    samples: VecDeque<Sample>,
    next: Instant,
    /// Per thread: intervals in a row it was overloaded.
    overloaded: Vec<u32>,
    last_check: Instant,
}

impl Loads {
    pub fn new(now: Instant, first: Sample) -> Loads {
        let overloaded = vec![0; first.threads.len()];
        Loads { samples: VecDeque::from([first]), next: now + INTERVAL, overloaded, last_check: now }
    }

    /// The growth of the counters over the window, up to `now`.
    pub fn window(&self, now: &Sample) -> Sample {
        now.since(self.samples.front().expect("one sample at least"))
    }

    /// A new port in `slot`: its queues' history starts now.
    pub fn reset_slot(&mut self, slot: u16, now: &Sample) {
        for s in &mut self.samples {
            s.rxqs[slot as usize] = now.rxqs[slot as usize];
        }
    }

    /// Called often: at the end of an interval, takes a sample (`read`)
    /// and counts the overloaded threads; true when an auto-lb dry run is
    /// due now.
    pub fn tick(&mut self, now: Instant, read: impl FnOnce() -> Sample, lb: &AutoLb) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + INTERVAL;
        let s = read();
        let last = s.since(self.samples.back().expect("one sample at least"));
        for (o, &(busy, all)) in self.overloaded.iter_mut().zip(&last.threads) {
            let overloaded = all > 0 && busy * 100 >= all * u64::from(lb.load_threshold);
            *o = if overloaded { *o + 1 } else { 0 };
        }
        self.samples.push_back(s);
        if self.samples.len() > INTERVALS + 1 {
            self.samples.pop_front();
        }
        if !lb.enabled || now.duration_since(self.last_check) < lb.rebal_interval {
            return false;
        }
        self.last_check = now;
        self.overloaded.iter().any(|&o| o >= INTERVALS as u32)
    }

    /// Queues moved: the threads' loads are measured afresh.
    pub fn rebalanced(&mut self) {
        self.overloaded.fill(0);
    }
}

impl Switch {
    pub(super) fn sample(&self) -> Sample {
        Sample::read(self.pmds.iter().map(|p| &*p.counters))
    }

    /// The queues the plans poll, each with its busy cycles over the window
    /// and its thread now; and the window's length in cycles.
    pub(super) fn measured(&self) -> (Vec<Rxq>, Vec<u64>, Vec<usize>, Sample) {
        let window = self.loads.window(&self.sample());
        let rxqs = self.rxqs();
        let cycles = rxqs.iter().map(|q| window.rxqs[q.key.slot as usize][q.key.queue as usize]).collect();
        let current = rxqs.iter().map(|q| self.placement.thread(q.key).unwrap_or(0)).collect();
        (rxqs, cycles, current, window)
    }

    /// Assigns the rx queues by their measured cycles (`by_cycles`), and
    /// moves them when `forced` (`vswitchctl pmd rebalance`) or when that
    /// improves the balance by the auto-lb threshold.
    pub(super) fn rebalance(&mut self, forced: bool) -> Result<RebalanceInfo, String> {
        let n = self.pmds.len();
        let (rxqs, cycles, current, window) = self.measured();
        let now: Vec<Option<usize>> = current.iter().copied().map(Some).collect();
        let new = by_cycles(&rxqs, &cycles, &now, n);
        let before = variance(&thread_loads(&cycles, &current, n), window.tsc);
        let after = variance(&thread_loads(&cycles, &new, n), window.tsc);
        let improvement_pct = improvement(before, after);
        let moves: Vec<_> = rxqs.iter().zip(current.iter().zip(&new)).filter(|(_, (a, b))| a != b).map(|(q, (&a, &b))| (q.key, a, b)).collect();
        let threshold = f64::from(self.cfg.switch.pmd.auto_lb.improvement_threshold);
        let applied = !moves.is_empty() && (forced || improvement_pct >= threshold);
        if applied {
            self.placement.assign(moves.iter().map(|&(key, _, to)| (key, to)));
            self.replan()?;
            self.loads.rebalanced();
        }
        let moved = moves
            .into_iter()
            .filter_map(|(key, from, to)| Some(RxqMove { port: self.slots.port(key.slot)?.cfg.name.clone(), queue: key.queue, from, to }))
            .collect();
        Ok(RebalanceInfo { applied, moved, variance_before: before, variance_after: after, improvement_pct })
    }

    /// Housekeeping: samples the loads, and rebalances when auto-lb says so.
    pub(super) fn auto_lb(&mut self, now: Instant) {
        let pmds = &self.pmds;
        if !self.loads.tick(now, || Sample::read(pmds.iter().map(|p| &*p.counters)), &self.cfg.switch.pmd.auto_lb) {
            return;
        }
        match self.rebalance(false) {
            Ok(r) if r.applied => eprintln!(
                "vswitchd: pmd auto-lb: moved {} rx queue(s), load variance {:.1} -> {:.1} ({:.0}% better)",
                r.moved.len(),
                r.variance_before,
                r.variance_after,
                r.improvement_pct
            ),
            Ok(_) => {}
            Err(e) => eprintln!("vswitchd: pmd auto-lb: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two idle threads, `at` intervals of 100 cycles from the start.
    fn sample(at: u64) -> Sample {
        let all = at * 100;
        Sample { tsc: all, threads: vec![(0, all), (0, all)], rxqs: vec![[0; MAX_RXQ]; MAX_PORTS] }
    }

    fn lb(minutes: u64) -> AutoLb {
        AutoLb { enabled: true, rebal_interval: Duration::from_secs(60 * minutes), ..AutoLb::default() }
    }

    /// Runs `loads` over intervals `from..=to`, thread 0 busy `busy(i)`
    /// percent of interval i; the intervals at which a dry run was due.
    fn due(loads: &mut Loads, t0: Instant, from: u64, to: u64, busy: impl Fn(u64) -> u64, lb: &AutoLb) -> Vec<u64> {
        (from..=to)
            .filter(|&i| {
                let mut s = sample(i);
                s.threads[0].0 = (1..=i).map(&busy).sum();
                loads.tick(t0 + INTERVAL * i as u32, || s, lb)
            })
            .collect()
    }

    #[test]
    fn a_dry_run_needs_six_overloaded_intervals_in_a_row_and_the_rebalance_interval() {
        let t0 = Instant::now();
        let mut loads = Loads::new(t0, sample(0));
        // 96% busy from the start: overloaded from interval 1, due at the
        // first check with six behind it (interval 6 = 60 s, the interval).
        assert_eq!(due(&mut loads, t0, 1, 8, |_| 96, &lb(1)), [6]);
        // Still overloaded: checked again a minute later.
        assert_eq!(due(&mut loads, t0, 9, 12, |_| 96, &lb(1)), [12]);
        loads.rebalanced();
        // One interval below the threshold starts the count again.
        let mut loads = Loads::new(t0, sample(0));
        assert_eq!(due(&mut loads, t0, 1, 18, |i| if i == 5 { 90 } else { 96 }, &lb(1)), [12, 18]);
        // A longer rebalance interval checks less often.
        let mut loads = Loads::new(t0, sample(0));
        assert_eq!(due(&mut loads, t0, 1, 36, |_| 96, &lb(3)), [18, 36]);
        // Disabled: never.
        let mut loads = Loads::new(t0, sample(0));
        assert!(due(&mut loads, t0, 1, 12, |_| 100, &AutoLb::default()).is_empty());
    }

    #[test]
    fn the_window_spans_the_intervals_kept_and_a_new_port_starts_afresh() {
        let t0 = Instant::now();
        let mut loads = Loads::new(t0, sample(0));
        let at = |i: u64| {
            let mut s = sample(i);
            s.rxqs[3][1] = 1000 * i;
            s
        };
        for i in 1..=10 {
            let s = at(i);
            loads.tick(t0 + INTERVAL * i as u32, || s, &AutoLb::default());
        }
        let w = loads.window(&at(10));
        assert_eq!(w.rxqs[3][1], 1000 * INTERVALS as u64, "the last six intervals");
        loads.reset_slot(3, &at(10));
        assert_eq!(loads.window(&at(11)).rxqs[3][1], 1000, "the new port's own history only");
    }
}
