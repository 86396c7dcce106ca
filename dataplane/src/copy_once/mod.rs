//! The copy-once vhost datapath: the switch walks a guest's virtqueues
//! itself and copies each payload byte once, guest to guest or guest to
//! mbuf.
//!
//! Two ring types, named from the switch's side: `CopyOnceRx` is a guest's
//! transmit ring, which the switch receives from; `CopyOnceTx` is a guest's
//! receive ring, which the switch sends into. A burst received from a guest
//! is a `GuestBurst`: its frames' headers copied to switch-private scratch
//! (the guest may rewrite its buffers at any time; the switch classifies and
//! forwards this copy), the payloads still in the guest's buffers.
//!
//! The order that keeps every guest safe is carried by types, not by call
//! order: deliveries into a `CopyOnceTx` write used entries but only list
//! their payload copies; the used index is published only with a
//! `CopiesDone`, which only running the burst's `CopyList` makes, and
//! which borrows that list so nothing more can be listed meanwhile; the
//! sender's chains go back only with one too (`GuestBurst::commit`). So no
//! guest sees an entry before its bytes, and no sender gets a buffer back
//! before it has been read.
//!
//! Exactly one thread holds each ring: the plan gives a guest receive ring
//! to one PMD thread only (per-thread queues).
use std::sync::Arc;

use pmd_bridge::guest_mem::GuestMemory;
use pmd_bridge::{CallFd, VhostDevice};

use crate::copy_list::CopiesDone;
use crate::offload::{self, Caps, Offload};
use crate::packet::PacketBuf;
use crate::virtq::{self, Refused, RingOps, Virtqueue};
use crate::virtio_net;

mod line_clock;
mod rx;
mod tx;
mod zero_copy;

/// The checksum of the frame's bytes `range` (after the virtio-net header)
/// in `chain` of `mem`, read where they lie, a word at a time: no copy.
fn payload_sum(mem: &GuestMemory, chain: &virtq::Chain, range: std::ops::Range<usize>) -> Option<offload::Checksum> {
    let mut sum = offload::Checksum::new();
    let at = (virtio_net::NET_HDR_LEN + range.start) as u64;
    chain
        .for_range(at, range.len(), |s, off, piece| {
            sum.append_words(mem.fold_words(s, off, piece.len(), offload::WordSum::default(), offload::WordSum::push)?, piece.len());
            Ok(())
        })
        .ok()?;
    Some(sum)
}

pub use rx::{CopyOnceRx, GuestBurst};
pub use tx::CopyOnceTx;
pub use zero_copy::{return_parked, ZeroCopy};

/// Bytes of each frame copied to scratch: every header the switch reads
/// (Ethernet, a tag and IP) in the common case...
pub(crate) const HEAD_PLAIN: usize = 64;
/// ...and every header a checksum or segmentation offload touches
/// (Ethernet, a tag, IPv4 or IPv6 and TCP, options included).
pub const HEAD: usize = 160;

/// A frame still in a guest's transmit buffer: its headers in scratch, and
/// its offload requests as the switch validated them.
#[derive(Clone, Copy)]
pub struct GuestPkt {
    /// The virtio-net header as the guest sent it, then the frame's first
    /// `head_len` bytes: read from the chain in one copy.
    raw: [u8; virtio_net::NET_HDR_LEN + HEAD],
    head_len: u8,
    len: u32,
    off: Offload,
}

impl Default for GuestPkt {
    fn default() -> Self {
        GuestPkt { raw: [0; virtio_net::NET_HDR_LEN + HEAD], head_len: 0, len: 0, off: Offload::NONE }
    }
}

impl GuestPkt {
    pub fn offload(&self) -> &Offload {
        &self.off
    }
}

impl PacketBuf for GuestPkt {
    fn frame_len(&self) -> usize {
        self.len as usize
    }

    fn headers(&self) -> &[u8] {
        &self.raw[virtio_net::NET_HDR_LEN..virtio_net::NET_HDR_LEN + self.head_len as usize]
    }

    fn segment_ip_len(&self) -> Option<usize> {
        self.off.gso.map(|g| g.l3_len as usize + g.l4_len as usize + g.mss as usize)
    }
}

/// What the guest negotiated, as the datapath needs it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestFeatures {
    pub mergeable: bool,
    /// The offloads it may ask for in what it sends.
    pub tx: Caps,
    /// The offloads it takes in what it receives.
    pub rx: Caps,
}

impl GuestFeatures {
    /// What a guest that negotiated `features` gets; refused without
    /// VERSION_1: a legacy guest's virtio-net header is 10 bytes (12 only
    /// with MRG_RXBUF), and every offset here assumes 12.
    pub fn from_bits(features: u64) -> Result<GuestFeatures, &'static str> {
        const MRG_RXBUF: u64 = 1 << 15;
        const VERSION_1: u64 = 1 << 32;
        if features & VERSION_1 == 0 {
            return Err("the guest did not negotiate VERSION_1 (a copy-once port needs it)");
        }
        Ok(GuestFeatures { mergeable: features & MRG_RXBUF != 0, tx: Caps::guest_tx(features), rx: Caps::guest_rx(features) })
    }
}

/// How a ring's guest is interrupted.
pub enum Interrupt {
    /// Its call eventfd, signalled directly: rte_vhost's call would decide
    /// with EVENT_IDX from indices it does not keep for rings we walk.
    Fd(Arc<CallFd>),
    /// No eventfd known: rte_vhost's call for vring `.1`.
    Vhost(Arc<VhostDevice>, u16),
    /// A guest that polls (tests over plain memory).
    None,
}

/// What both kinds of ring hold: the guest's memory, our side of the
/// virtqueue, how to interrupt the guest, and what went wrong.
pub struct GuestRing {
    pub mem: Arc<GuestMemory>,
    queue: Virtqueue,
    interrupt: Interrupt,
    /// The virtio queue index (even: guest receive, odd: guest transmit).
    vring: u16,
    features: GuestFeatures,
    /// A ring whose state is impossible: not walked any more.
    broken: bool,
    /// Chains returned empty since the PMD thread last counted them.
    refused: Refused,
    /// An interrupt the guest is owed: the call found the queue lock taken
    /// by a vhost-user message handler (`retry_call`).
    call_pending: bool,
}

impl GuestRing {
    pub fn new(mem: Arc<GuestMemory>, queue: Virtqueue, interrupt: Interrupt, vring: u16, features: GuestFeatures) -> GuestRing {
        GuestRing {
            mem,
            queue,
            interrupt,
            vring,
            features,
            broken: false,
            refused: Refused::default(),
            // A ring comes (back) into a plan after the guest may have been
            // owed an interrupt (the previous holder's call failed, or the
            // ring was handed over mid-change): one spurious interrupt is
            // harmless, a lost one can stall a guest's queue for good.
            call_pending: true,
        }
    }

    /// The virtio queue index and our side of the ring, back to the
    /// control thread at the end of a plan.
    pub fn into_queue(self) -> (u16, Virtqueue) {
        (self.vring, self.queue)
    }

    /// Never waits on the queue lock a message handler may hold; if it is
    /// held, the interrupt is owed (`retry_call`).
    fn call(&mut self) {
        self.call_pending = !match &self.interrupt {
            Interrupt::Fd(fd) => fd.signal(),
            Interrupt::Vhost(dev, vring) => dev.call_nonblock(*vring),
            Interrupt::None => true,
        };
    }

    /// Makes the used entries written so far visible, once their bytes are
    /// (`done`), and interrupts the guest if it asked; a used ring we
    /// cannot write any more stops the queue.
    fn publish(&mut self, _done: &CopiesDone) {
        if self.publish_index() {
            self.call();
        }
    }

    /// `publish` for a burst of refused chains only (nothing was copied
    /// into or out of them). Their interrupt is owed, not sent: the loop
    /// delivers it on its next housekeeping pass (`retry_call`), so a guest
    /// that offers nothing but bad chains costs one eventfd write per pass,
    /// not one per poll.
    fn publish_returned(&mut self) {
        if self.publish_index() {
            self.call_pending = true;
        }
    }

    /// Publishes the used index; whether the guest wants an interrupt.
    fn publish_index(&mut self) -> bool {
        if self.queue.publish(&self.mem).is_err() {
            self.broken = true;
            return false;
        }
        self.queue.needs_interrupt(&self.mem)
    }

    /// Delivers an interrupt a failed call still owes the guest (the PMD
    /// loop calls this now and then, not per burst).
    /// Whether one is still owed.
    pub fn retry_call(&mut self) -> bool {
        if self.call_pending && !self.broken {
            self.call();
        }
        self.call_pending && !self.broken
    }

    /// Moves the refused-chain counts into a port's drop counters.
    pub fn count_refused(&mut self, drops: &[std::sync::atomic::AtomicU64; crate::counters::DropReason::COUNT]) {
        crate::counters::count_refused(&mut self.refused, drops);
    }
}

#[cfg(test)]
mod tests;
