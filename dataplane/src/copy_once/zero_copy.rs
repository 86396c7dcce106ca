//! Zero copy to NICs from a guest's transmit ring: a frame bound for a NIC
//! leaves as the switch's header copy followed by the guest's own buffers
//! (`pmd_bridge::extbuf`), and its chain goes back to the guest only once
//! the NIC has freed every mbuf pointing into it: out of order, which the
//! rings allow unless the guest negotiated IN_ORDER (then nothing is lent).
//!
//! The guest's ring would starve while NICs hold its buffers (they free
//! transmitted mbufs lazily; DPDK's own dequeue zero-copy died of it), so a
//! ring lends at most its lender's slots at once and copies beyond that;
//! small frames are copied too (a copy costs less than a loan). The PMD
//! loop's housekeeping reclaims what quiet NIC queues hold.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pmd_bridge::extbuf::{LendError, Lender, Payload, MAX_HEAD};
use pmd_bridge::guest_mem::GuestMemory;
use pmd_bridge::{Mbuf, Mempool, Stock, BURST};

use super::{payload_sum, GuestPkt};
use crate::counters::ZeroCopy as Outcome;
use crate::flood::PortSet;
use crate::mbuf_offload;
use crate::offload::{complete_partial, Caps, Checksum, Gso, Offload, Segmenter};
use crate::packet::PacketBuf;
use crate::virtio_net::NET_HDR_LEN;
use crate::virtq::{Chain, RingOps, Virtqueue};

const _: () = assert!(BURST <= 32, "`lent` has a bit per frame of a burst");

/// Most frames a segment is cut into here (64 KB at an MSS of 536 is 123);
/// more are copied.
const MAX_CUT: usize = 128;

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
    /// offloads `caps`, from guest memory, given to `emit` as one frame or,
    /// a TCP segment the NIC cannot cut, as its MSS-sized frames (each its
    /// header copy followed by its slice of the guest's payload, as
    /// librte_gso cuts one; checksums the NIC cannot fill are summed here,
    /// reading the payload where it lies). `flood`: more outputs of the
    /// same frame may follow (they share it). Ok: the header bytes copied;
    /// Err: copy it, and why.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn lend(&mut self, i: usize, out: u16, caps: Caps, flood: bool, (pool, stock): (&Mempool, &mut Stock), mem: &GuestMemory, chain: &Chain, pkt: &GuestPkt, emit: impl FnMut(Mbuf)) -> Result<usize, Outcome> {
        if !self.targets.contains(out) {
            return Err(Outcome::NotMapped);
        }
        let head = pkt.head_len as u32;
        if pkt.len < self.min_len || pkt.len == head {
            return Err(Outcome::Small);
        }
        let fits = pkt.off.fits(caps);
        // A flood shares one lent frame between its NIC outputs; one that
        // would need cutting or summing differently per output is copied.
        if flood && !fits {
            return Err(Outcome::Other);
        }
        let mut emit = emit;
        if let Some((j, m)) = self.flood.as_ref().filter(|_| flood) {
            if *j == i {
                emit(m.share());
                return Ok(0);
            }
        }
        let lent = match pkt.off.gso {
            Some(gso) if !fits => self.lend_cut((pool, stock), mem, chain, pkt, gso, caps.csum, emit),
            _ => self.lend_whole((pool, stock), mem, chain, pkt, fits, flood.then_some(i), emit),
        };
        let copied = lent.map_err(|e| match e {
            LendError::Full => Outcome::InFlightLimit,
            LendError::NotMapped => Outcome::NotMapped,
            LendError::OtherMemory | LendError::Shape | LendError::NoMbuf => Outcome::Other,
        })?;
        self.lent |= 1 << i;
        Ok(copied)
    }

    /// The frame as it is; a partial checksum the NIC cannot fill (`!fits`)
    /// is finished in the header copy.
    #[allow(clippy::too_many_arguments)]
    fn lend_whole(&mut self, (pool, stock): (&Mempool, &mut Stock), mem: &GuestMemory, chain: &Chain, pkt: &GuestPkt, fits: bool, flood: Option<usize>, mut emit: impl FnMut(Mbuf)) -> Result<usize, LendError> {
        let (h, len) = (pkt.head_len as usize, pkt.len as usize);
        let payload = Payload { spans: chain.segments(), skip: (NET_HDR_LEN + h) as u64, len: (len - h) as u64 };
        // The headers as classified, or a copy that finishes their checksum.
        let mut completed;
        let (headers, off) = if fits {
            (pkt.headers(), pkt.off)
        } else {
            completed = [0u8; MAX_HEAD];
            completed[..h].copy_from_slice(pkt.headers());
            let csum = pkt.off.csum.ok_or(LendError::Shape)?;
            let rest = payload_sum(mem, chain, h..len).ok_or(LendError::Shape)?;
            if !complete_partial(&mut completed[..h], csum, &rest) {
                return Err(LendError::Shape);
            }
            (&completed[..h], Offload::NONE)
        };
        let mut m = self.lender.lend((pool, stock), mem, chain.head, headers, payload)?;
        // The header segment is fresh and ours: the flags always fit.
        if off != Offload::NONE {
            m.set_tx_offload(mbuf_offload::to_mbuf(&off, pkt.headers()));
        }
        if let Some(i) = flood {
            self.flood = Some((i, m.share()));
        }
        emit(m);
        Ok(h)
    }

    /// A TCP segment cut into frames of one MSS over the guest's payload;
    /// the NIC fills their checksums if it can (`csum`), else they are
    /// summed here.
    #[allow(clippy::too_many_arguments)]
    fn lend_cut(&mut self, (pool, stock): (&Mempool, &mut Stock), mem: &GuestMemory, chain: &Chain, pkt: &GuestPkt, gso: Gso, csum: bool, mut emit: impl FnMut(Mbuf)) -> Result<usize, LendError> {
        let seg = Segmenter::try_new(&gso, pkt.headers(), pkt.len as usize).ok_or(LendError::Shape)?;
        let hl = gso.hdr_len();
        let tx = mbuf_offload::to_mbuf(&gso.segment_offload(), pkt.headers());
        // Sums of each frame's payload, taken once (the frames are made
        // twice: counted, then built).
        let mut sums = [Checksum::new(); MAX_CUT];
        if seg.count() > MAX_CUT {
            return Err(LendError::Shape);
        }
        if !csum {
            for (k, sum) in sums.iter_mut().enumerate().take(seg.count()) {
                *sum = payload_sum(mem, chain, seg.payload(k)).ok_or(LendError::Shape)?;
            }
        }
        let mut bad = false;
        let spans = chain.segments();
        self.lender.lend_frames(
            (pool, stock),
            mem,
            chain.head,
            seg.count(),
            |k, buf| {
                let range = seg.segment(k, &mut buf[..hl], true);
                bad |= !csum && !complete_partial(&mut buf[..hl], gso.csum(), &sums[k]);
                (hl, Payload { spans, skip: (NET_HDR_LEN + range.start) as u64, len: range.len() as u64 })
            },
            |mut m| {
                if csum {
                    m.set_tx_offload(tx);
                }
                emit(m)
            },
        )?;
        debug_assert!(!bad, "a segment's checksum field lies in its headers");
        Ok(hl * seg.count())
    }

    /// Chains NICs hold now.
    pub(super) fn in_flight(&self) -> usize {
        self.lender.in_flight()
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

/// For a ring in no plan (a guest going, or between plans): writes the
/// used entries of the chains NICs freed since the last call and publishes
/// them, in the guest's memory `mem`. Returns whether the guest should be
/// interrupted; None if nothing came back (or the ring cannot be written).
pub fn return_parked(lender: &mut Lender, queue: &mut Virtqueue, mem: &GuestMemory) -> Option<bool> {
    if lender.reap(|head| {
        let _ = queue.add_used(mem, head, 0);
    }) == 0 {
        return None;
    }
    queue.publish(mem).ok()?;
    Some(queue.needs_interrupt(mem))
}
