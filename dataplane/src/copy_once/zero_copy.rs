//! Zero copy to NICs from a guest's transmit ring: a frame bound for a NIC
//! leaves as the switch's header copy followed by the guest's own buffers
//! (`pmd_bridge::extbuf`), and its chain goes back to the guest only once
//! the NIC has freed every mbuf pointing into it: out of order, which split
//! rings allow (IN_ORDER is never offered).
//!
//! The guest's ring would starve while NICs hold its buffers (they free
//! transmitted mbufs lazily; DPDK's own dequeue zero-copy died of it), so a
//! ring lends at most its lender's slots at once and copies beyond that;
//! small frames are copied too (a copy costs less than a loan). The PMD
//! loop's housekeeping reclaims what quiet NIC queues hold.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pmd_bridge::extbuf::{LendError, Lender, Payload};
use pmd_bridge::guest_mem::GuestMemory;
use pmd_bridge::{Mbuf, Mempool, BURST};

use super::GuestPkt;
use crate::counters::ZeroCopy as Outcome;
use crate::flood::PortSet;
use crate::mbuf_offload;
use crate::offload::{Caps, Offload};
use crate::packet::PacketBuf;
use crate::virtio_net::NET_HDR_LEN;
use crate::virtq::{Chain, RingOps, Virtqueue};

const _: () = assert!(BURST <= 32, "`lent` has a bit per frame of a burst");

/// One ring's zero-copy state, kept between plans with its lender.
pub struct ZeroCopy {
    lender: Lender,
    /// The output ports that may read guest memory.
    targets: PortSet,
    /// Frames shorter than this are copied.
    min_len: u32,
    /// Chains in flight, for `show ports` (written here only).
    gauge: Arc<AtomicU64>,
    /// Frames of this burst lent (bit i: frame i): their chains are not
    /// returned with the burst.
    lent: u32,
    /// The frame last lent to a flood, for its next NIC output.
    flood: Option<(usize, Mbuf)>,
}

impl ZeroCopy {
    pub fn new(lender: Lender, targets: PortSet, min_len: u32, gauge: Arc<AtomicU64>) -> ZeroCopy {
        ZeroCopy { lender, targets, min_len, gauge, lent: 0, flood: None }
    }

    /// The lender, with whatever it still has in flight, back to the
    /// control thread at the end of a plan.
    pub fn into_lender(self) -> Lender {
        self.lender
    }

    /// Frame `i` (`pkt` in `chain` of `mem`) for NIC output `out` taking
    /// offloads `caps`, from guest memory; `flood`: more outputs of the
    /// same frame may follow (they share it). Err: copy it, and why.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn lend(&mut self, i: usize, out: u16, caps: Caps, flood: bool, pool: &Mempool, mem: &Arc<GuestMemory>, chain: &Chain, pkt: &GuestPkt) -> Result<Mbuf, Outcome> {
        if !self.targets.contains(out) {
            return Err(Outcome::NotMapped);
        }
        // The NIC must do the offloads itself: the software fallback writes
        // the frame (and would copy it anyway).
        if !pkt.off.fits(caps) {
            return Err(Outcome::Other);
        }
        let head = pkt.head_len as u32;
        if pkt.len < self.min_len || pkt.len == head {
            return Err(Outcome::Small);
        }
        if let Some((j, m)) = self.flood.as_ref().filter(|_| flood) {
            if *j == i {
                return Ok(m.share());
            }
        }
        let payload = Payload { spans: chain.segments(), skip: (NET_HDR_LEN as u32 + head) as u64, len: (pkt.len - head) as u64 };
        let mut m = self.lender.lend(pool, mem, chain.head, pkt.headers(), payload).map_err(|e| match e {
            LendError::Full => Outcome::InFlightLimit,
            LendError::OtherMemory | LendError::Shape | LendError::NoMbuf => Outcome::Other,
        })?;
        // The header segment is fresh and ours: the flags always fit.
        if pkt.off != Offload::NONE {
            m.set_tx_offload(mbuf_offload::to_mbuf(&pkt.off, pkt.headers()));
        }
        self.lent |= 1 << i;
        if flood {
            self.flood = Some((i, m.share()));
        }
        Ok(m)
    }

    /// Whether frame `i` of this burst was lent (its chain comes back later).
    #[inline]
    pub(super) fn is_lent(&self, i: usize) -> bool {
        self.lent & (1 << i) != 0
    }

    /// The burst is over: forget which frames were lent (the lender keeps
    /// their chains), and let go of the flood's handle.
    #[inline]
    pub(super) fn end_burst(&mut self) {
        self.lent = 0;
        self.flood = None;
        self.gauge.store(self.lender.in_flight() as u64, Ordering::Relaxed);
    }

    /// Chains the NICs freed since the last call: `used(head)` for each.
    #[inline]
    pub(super) fn reap(&mut self, used: impl FnMut(u16)) -> usize {
        let n = self.lender.reap(used);
        if n > 0 {
            self.gauge.store(self.lender.in_flight() as u64, Ordering::Relaxed);
        }
        n
    }
}

/// For a ring in no plan (a guest going, its memory changing): writes the
/// used entries of the chains NICs freed since the last call and publishes
/// them, in the memory they came from. Returns whether the guest should be
/// interrupted; None if nothing came back (or the ring cannot be written).
pub fn return_parked(lender: &mut Lender, queue: &mut Virtqueue) -> Option<bool> {
    let mem = Arc::clone(lender.memory()?);
    if lender.reap(|head| {
        let _ = queue.add_used(&mem, head, 0);
    }) == 0 {
        return None;
    }
    queue.publish(&mem).ok()?;
    Some(queue.needs_interrupt(&mem))
}
