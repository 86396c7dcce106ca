//! How far away the guest's core is: the time a ring line the guest has
//! just written takes to come, sampled now and then (a transmit ring's
//! avail->idx or next packed descriptor, a split receive ring's
//! avail->idx). The bench machine (an AMD EPYC, shared) moves between
//! about 100-160 cycles and about 310-390 for such a line, often for
//! seconds; the prefetches that pay in the slow state cost 2-5% in the
//! fast one (`CopyOnceRx::take`).

/// Takes between two timings of a ring's avail index read: one in 64
/// costs the fenced timestamps about 1 cycle a take.
const EVERY: u32 = 64;

/// Timings kept; their median decides.
const KEPT: usize = 8;

/// The median, in TSC cycles, above which lines are slow, and below
/// which they are fast again: between the bench machine's two states
/// (fast timings at most 156, slow at least 312), apart so that a median
/// near one does not flip the state at every sample.
const SLOW_ABOVE: u32 = 240;
const FAST_BELOW: u32 = 200;

#[derive(Clone, Debug, Default)]
pub struct LineClock {
    takes: u32,
    kept: [u32; KEPT],
    at: usize,
    slow: bool,
}

impl LineClock {
    /// Whether this take is timed (one in `EVERY`).
    #[inline]
    pub fn due(&mut self) -> bool {
        self.takes = self.takes.wrapping_add(1);
        self.takes.is_multiple_of(EVERY)
    }

    /// A timing of a line the guest had written since our last read.
    pub fn add(&mut self, cycles: u64) {
        self.kept[self.at] = cycles.min(u32::MAX as u64) as u32;
        self.at = (self.at + 1) % KEPT;
        let mut sorted = self.kept;
        sorted.sort_unstable();
        let median = sorted[KEPT / 2];
        if median > SLOW_ABOVE {
            self.slow = true;
        } else if median < FAST_BELOW {
            self.slow = false;
        }
    }

    /// Whether lines from the guest's core are slow to come.
    #[inline]
    pub fn slow(&self) -> bool {
        self.slow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_take_in_every_64_is_timed() {
        let mut c = LineClock::default();
        let timed: Vec<u32> = (1..=256).filter(|_| c.due()).collect();
        assert_eq!(timed.len(), 4);
    }

    #[test]
    fn the_median_of_the_last_8_timings_decides_with_a_gap_between_states() {
        let mut c = LineClock::default();
        for t in [130, 104, 156, 130, 104, 130, 156, 104] {
            c.add(t);
        }
        assert!(!c.slow(), "the bench machine's fast state");
        // One slow timing among fast ones (a line the guest held at a
        // bad moment) moves nothing; most of them do.
        c.add(900);
        assert!(!c.slow());
        for t in [338, 312, 364, 338, 390] {
            c.add(t);
        }
        assert!(c.slow(), "the slow state: {:?}", c.kept);
        // A median between the thresholds keeps the state it has.
        for _ in 0..KEPT {
            c.add(220);
        }
        assert!(c.slow());
        for _ in 0..KEPT {
            c.add(130);
        }
        assert!(!c.slow());
        for _ in 0..KEPT {
            c.add(220);
        }
        assert!(!c.slow());
    }

    #[test]
    fn a_timing_past_u32_saturates() {
        let mut c = LineClock::default();
        for _ in 0..KEPT {
            c.add(u64::MAX);
        }
        assert!(c.slow());
    }
}
