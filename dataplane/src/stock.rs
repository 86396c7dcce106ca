//! Fresh mbufs for one burst's outputs (frames copied out of a guest,
//! tunnel headers): taken from the pool a few at a time, in one call, as
//! they are needed, and what is left given back in one call when the burst
//! ends, so that the hot path calls C per burst rather than per packet.
use pmd_bridge::{Burst, Mbuf, Mempool};

/// Mbufs taken per call: enough to cover most bursts in a call or a few,
/// few enough that a burst needing one gives little back.
pub const REFILL: usize = 8;

#[derive(Default)]
pub struct Stock {
    left: Burst<REFILL>,
}

impl Stock {
    /// A fresh mbuf of `pool`: from the stock, refilled in one call when
    /// empty (one by one if the pool is short).
    #[inline]
    pub fn take(&mut self, pool: &Mempool) -> Option<Mbuf> {
        if let Some(m) = self.left.pop() {
            return Some(m);
        }
        if pool.alloc_bulk(&mut self.left, REFILL) {
            return self.left.pop();
        }
        pool.alloc()
    }

    /// The burst is over: what it did not take goes back to the pool (a
    /// stock kept between bursts would hold mbufs while the switch idles).
    #[inline]
    pub fn settle(&mut self) {
        self.left.clear();
    }
}
