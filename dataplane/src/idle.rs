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
//! A thread that has found nothing for `KICK_AFTER_US` of sleeps at the
//! maximum and whose every rx queue is a copy-once guest's ring (which can
//! kick) sleeps instead until a guest kicks, the control thread sends a
//! plan, or `KICK_SLEEP` passes: an idle VM-only switch wakes ten times a
//! second, not once per maximum, and a frame wakes it at once. Kicks are
//! asked for only for that sleep: a busy guest never kicks. A ring with
//! chains out in NICs, an interrupt still owed, or an OpenFlow table
//! (packet-outs come without a kick) keep the timed sleep. So does a
//! trickle of traffic: a frame every few hundred microseconds would
//! otherwise cost its guest a kick and the thread a wakeup each, where
//! timed sleeps take them a few at a time.
use std::time::Duration;

use pmd_bridge::BURST;

/// The fullest burst of an iteration that still counts as light.
pub const LIGHT_BELOW: usize = BURST / 2;
/// How much longer each successive sleep is, in microseconds.
pub const STEP_US: u32 = 1;
/// The longest sleep until kicked: housekeeping (a NIC queue's sent mbufs,
/// the MAC table's clock) runs at least this often.
pub const KICK_SLEEP: Duration = Duration::from_millis(100);
/// Microseconds of sleeps at the maximum, with nothing received between
/// them, before a thread may sleep until kicked.
pub const KICK_AFTER_US: u32 = 1000;

/// One thread's sleep state.
pub struct IdleSleep {
    max_us: u32,
    next_us: u32,
    /// Microseconds of sleeps at the maximum since anything was received,
    /// the one `after` just returned included (saturating).
    quiet_us: u32,
}

impl IdleSleep {
    pub fn new(max_us: u32) -> IdleSleep {
        IdleSleep { max_us, next_us: 0, quiet_us: 0 }
    }

    /// Whether the thread has been idle long enough to sleep until kicked
    /// (the sleep `after` just returned is at the maximum, and nothing came
    /// for `KICK_AFTER_US` of such sleeps before it).
    #[inline]
    pub fn deep(&self) -> bool {
        self.quiet_us > KICK_AFTER_US
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
        if most > 0 {
            self.quiet_us = 0;
        }
        if most >= LIGHT_BELOW {
            self.next_us = 0;
            return 0;
        }
        let us = self.next_us;
        self.next_us = (us + STEP_US).min(self.max_us);
        if us == self.max_us && most == 0 {
            self.quiet_us = self.quiet_us.saturating_add(us);
        }
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
    fn only_a_thread_quiet_for_a_while_at_the_maximum_sleeps_until_kicked() {
        let mut s = IdleSleep::new(500);
        while s.after(0) < 500 {}
        assert!(!s.deep(), "the first sleep at the maximum");
        (0..KICK_AFTER_US / 500 - 1).for_each(|_| _ = s.after(0));
        assert!(!s.deep(), "{KICK_AFTER_US} us of sleeps at the maximum, this one included");
        s.after(0);
        assert!(s.deep(), "quiet for {KICK_AFTER_US} us of sleeps at the maximum before this one");
        assert_eq!(s.after(1), 500, "a frame keeps the timed sleep at the maximum");
        assert!(!s.deep(), "but starts the quiet over: a trickle never sleeps until kicked");
        (0..KICK_AFTER_US / 500 + 1).for_each(|_| _ = s.after(0));
        assert!(s.deep());
    }

    #[test]
    fn a_maximum_of_zero_never_sleeps() {
        let mut s = IdleSleep::new(0);
        assert!(!s.enabled());
        assert!((0..10).all(|_| s.after(0) == 0));
    }
}
