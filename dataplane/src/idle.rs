//! Sleeping when idle (`[switch] pmd_sleep_max_us`), with OVS's
//! `pmd-sleep-max` semantics.
//!
//! An iteration in which no rx queue gave at least half a burst is a light
//! one; after each light iteration the thread sleeps, one microsecond
//! longer than after the previous one, up to the maximum. An iteration
//! with half a burst or more on any queue ends the sleeping at once. So a
//! loaded thread never sleeps, an idle one wakes every `max` microseconds
//! to poll (the latency a sleep can add is bounded by `max` plus the
//! kernel's timer slack, set to 1 us for a sleeping thread), and a thread
//! that sleeps with packets waiting finds a fuller burst on waking. A
//! maximum of 0 is pure polling.
//!
//! A thread whose sleeps reached the maximum and whose every rx queue is a
//! copy-once guest's ring (which can kick) sleeps instead until a guest
//! kicks, the control thread sends a plan, or `KICK_SLEEP` passes: an idle
//! VM-only switch wakes ten times a second, not once per maximum, and a
//! frame wakes it at once. Kicks are asked for only for that sleep: a busy
//! guest never kicks. A ring with chains out in NICs, an interrupt still
//! owed, or an OpenFlow table (packet-outs come without a kick) keep the
//! timed sleep.
use std::time::Duration;

use pmd_bridge::BURST;

/// The fullest burst of an iteration that still counts as light.
pub const LIGHT_BELOW: usize = BURST / 2;
/// How much longer each successive sleep is, in microseconds.
pub const STEP_US: u32 = 1;
/// The longest sleep until kicked: housekeeping (a NIC queue's sent mbufs,
/// the MAC table's clock) runs at least this often.
pub const KICK_SLEEP: Duration = Duration::from_millis(100);

/// One thread's sleep state.
pub struct IdleSleep {
    max_us: u32,
    next_us: u32,
}

impl IdleSleep {
    pub fn new(max_us: u32) -> IdleSleep {
        IdleSleep { max_us, next_us: 0 }
    }

    /// False for pure polling: the loop checks this once per iteration.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.max_us != 0
    }

    /// The end of an iteration whose fullest rx burst held `most` packets:
    /// how long to sleep now, in microseconds (0: not at all).
    #[inline]
    pub fn after(&mut self, most: usize) -> u32 {
        if most >= LIGHT_BELOW {
            self.next_us = 0;
            return 0;
        }
        let us = self.next_us;
        self.next_us = (us + STEP_US).min(self.max_us);
        us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_grow_by_a_step_up_to_the_maximum_and_stop_at_half_a_burst() {
        let mut s = IdleSleep::new(3);
        let slept: Vec<u32> = (0..6).map(|_| s.after(0)).collect();
        assert_eq!(slept, [0, 1, 2, 3, 3, 3], "the first light iteration does not sleep yet");
        assert_eq!(s.after(LIGHT_BELOW - 1), 3, "a few packets keep it sleeping");
        assert_eq!(s.after(LIGHT_BELOW), 0, "half a burst wakes it");
        assert_eq!((s.after(0), s.after(0)), (0, 1), "and it starts over");
    }

    #[test]
    fn a_maximum_of_zero_never_sleeps() {
        let mut s = IdleSleep::new(0);
        assert!(!s.enabled());
        assert!((0..10).all(|_| s.after(0) == 0));
    }
}
