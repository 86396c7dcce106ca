//! Which PMD thread polls each rx queue.
//!
//! A queue keeps its thread from one plan to the next: a new one goes to
//! the thread with the fewest queues, a pinned one (`rxq_pmd`) to its
//! core's thread. Only a rebalance moves queues: `by_cycles` makes an
//! assignment from the queues' measured busy cycles, as OVS's `cycles`
//! assignment does (pinned queues stay and their load counts on their
//! thread; the others, busiest first, each go to the least loaded thread,
//! on a tie the one with the fewest queues, then the queue's own), and
//! `improvement` says how much it evens the threads' loads (OVS's measure:
//! the variance of the loads).
use std::collections::BTreeMap;

/// One rx queue of one port (`gen` tells the ports of a slot apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct RxqKey {
    pub slot: u16,
    pub gen: u16,
    pub queue: u16,
}

/// An rx queue the plans poll, and the thread it is pinned to, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Rxq {
    pub key: RxqKey,
    pub pinned: Option<usize>,
}

/// The thread of every rx queue in the plans.
#[derive(Default)]
pub(super) struct Placement {
    of: BTreeMap<RxqKey, usize>,
}

impl Placement {
    /// Places `rxqs`, the queues the next plans poll, on `threads`
    /// threads: pinned ones on their thread, placed ones where they are,
    /// new ones on the thread with the fewest queues. Queues not listed
    /// are forgotten.
    pub fn place(&mut self, rxqs: &[Rxq], threads: usize) {
        let old = std::mem::take(&mut self.of);
        let mut count = vec![0usize; threads];
        let kept = |q: &Rxq| q.pinned.or_else(|| old.get(&q.key).copied()).filter(|&t| t < threads);
        for q in rxqs {
            if let Some(t) = kept(q) {
                self.of.insert(q.key, t);
                count[t] += 1;
            }
        }
        for q in rxqs.iter().filter(|q| kept(q).is_none()) {
            let t = (0..threads).min_by_key(|&t| count[t]).unwrap_or(0);
            self.of.insert(q.key, t);
            count[t] += 1;
        }
    }

    pub fn thread(&self, key: RxqKey) -> Option<usize> {
        self.of.get(&key).copied()
    }

    /// Moves the queues listed; the next plans apply it.
    pub fn assign(&mut self, moves: impl IntoIterator<Item = (RxqKey, usize)>) {
        self.of.extend(moves);
    }
}

/// The thread for each of `rxqs` (measured busy `cycles` each, now on
/// `current`) on `threads` threads, as OVS's `cycles` assignment.
pub(super) fn by_cycles(rxqs: &[Rxq], cycles: &[u64], current: &[Option<usize>], threads: usize) -> Vec<usize> {
    let mut out = vec![0; rxqs.len()];
    let mut load = vec![0u64; threads];
    let mut count = vec![0usize; threads];
    let mut free = Vec::new();
    for (i, q) in rxqs.iter().enumerate() {
        match q.pinned.filter(|&t| t < threads) {
            Some(t) => {
                out[i] = t;
                load[t] += cycles[i];
                count[t] += 1;
            }
            None => free.push(i),
        }
    }
    // Busiest first; equal loads in queue order, so the result is stable.
    free.sort_by_key(|&i| (std::cmp::Reverse(cycles[i]), rxqs[i].key));
    for i in free {
        let t = (0..threads).min_by_key(|&t| (load[t], count[t], current[i] != Some(t), t)).unwrap_or(0);
        out[i] = t;
        load[t] += cycles[i];
        count[t] += 1;
    }
    out
}

/// Each thread's load: the cycles of the queues `assignment` gives it.
pub(super) fn thread_loads(cycles: &[u64], assignment: &[usize], threads: usize) -> Vec<u64> {
    let mut load = vec![0u64; threads];
    for (&c, &t) in cycles.iter().zip(assignment) {
        load[t] += c;
    }
    load
}

/// The variance of `loads`, each in percent of `window` cycles.
pub(super) fn variance(loads: &[u64], window: u64) -> f64 {
    if loads.is_empty() || window == 0 {
        return 0.0;
    }
    let pct: Vec<f64> = loads.iter().map(|&l| 100.0 * l as f64 / window as f64).collect();
    let mean = pct.iter().sum::<f64>() / pct.len() as f64;
    pct.iter().map(|p| (p - mean) * (p - mean)).sum::<f64>() / pct.len() as f64
}

/// How much the variance falls from `before` to `after`, in percent of
/// `before` (0 when there is none to lose, negative when it grows).
pub(super) fn improvement(before: f64, after: f64) -> f64 {
    if before <= 0.0 {
        0.0
    } else {
        100.0 * (before - after) / before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rxq(slot: u16, queue: u16, pinned: Option<usize>) -> Rxq {
        Rxq { key: RxqKey { slot, gen: 1, queue }, pinned }
    }

    #[test]
    fn queues_stay_put_and_new_ones_go_where_there_are_fewest() {
        let mut p = Placement::default();
        let a = [rxq(0, 0, None), rxq(0, 1, None), rxq(0, 2, None), rxq(1, 0, None)];
        p.place(&a, 2);
        let threads: Vec<_> = a.iter().map(|q| p.thread(q.key).unwrap()).collect();
        assert_eq!(threads, [0, 1, 0, 1]);
        p.assign([(a[0].key, 1)]);
        // Port 1 goes, port 2 comes: the rest stays where it is.
        let b = [a[0], a[1], a[2], rxq(2, 0, None), rxq(2, 1, Some(1))];
        p.place(&b, 2);
        let threads: Vec<_> = b.iter().map(|q| p.thread(q.key).unwrap()).collect();
        assert_eq!(threads, [1, 1, 0, 0, 1], "moved queue kept, new one on the emptier thread, pin honoured");
        assert_eq!(p.thread(a[3].key), None, "a deleted port's queue is forgotten");
        // A thread index beyond the threads (fewer now) is placed anew.
        p.place(&b, 1);
        assert!(b.iter().all(|q| p.thread(q.key) == Some(0)));
    }

    #[test]
    fn by_cycles_spreads_the_busiest_first_and_leaves_pins() {
        let q = [rxq(0, 0, None), rxq(0, 1, None), rxq(0, 2, None), rxq(1, 0, Some(0))];
        let cycles = [100, 10, 90, 50];
        let current = [Some(0), Some(1), Some(0), Some(0)];
        let out = by_cycles(&q, &cycles, &current, 2);
        // Thread 0 holds the pin (50); 100 goes to thread 1, 90 to thread 0
        // (50 < 100), 10 to thread 1 (140 > 110).
        assert_eq!(out, [1, 1, 0, 0]);
        assert_eq!(thread_loads(&cycles, &out, 2), [140, 110]);
    }

    #[test]
    fn by_cycles_moves_nothing_that_need_not_move() {
        // Idle queues, and equal loads: each stays on its thread.
        let q = [rxq(0, 0, None), rxq(0, 1, None), rxq(1, 0, None), rxq(1, 1, None)];
        let current = [Some(1), Some(0), Some(0), Some(1)];
        assert_eq!(by_cycles(&q, &[0; 4], &current, 2), [1, 0, 0, 1]);
        assert_eq!(by_cycles(&q, &[5, 5, 5, 5], &current, 2), [1, 0, 0, 1]);
    }

    #[test]
    fn improvement_is_the_fall_of_the_variance_of_loads_in_percent() {
        let before = variance(&[100, 0], 100);
        let after = variance(&[50, 50], 100);
        assert_eq!((before, after), (2500.0, 0.0));
        assert_eq!(improvement(before, after), 100.0);
        assert_eq!(improvement(variance(&[60, 40], 100), variance(&[55, 45], 100)), 75.0);
        assert_eq!(improvement(0.0, 0.0), 0.0, "nothing to even out");
        assert!(improvement(variance(&[55, 45], 100), variance(&[60, 40], 100)) < 0.0);
    }
}
