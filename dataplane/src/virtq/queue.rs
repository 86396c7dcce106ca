//! Either kind of virtqueue behind one interface, for the copy-once code.
//!
//! A port holds a `Virtqueue`, an enum rather than a trait object: a queue
//! is split or packed for its whole life, so the match in each call is a
//! branch the CPU always predicts, both arms inline, and nothing is boxed
//! or called through a pointer. `RingOps` names the operations both kinds
//! (and the enum) offer, so that code such as `virtio_net::deliver` is
//! written once, compiled for each, and takes the enum or a plain
//! `SplitQueue` alike. Each kind keeps its own inherent methods, which
//! the trait forwards to.
use std::ops::Range;

use pmd_bridge::guest_mem::{GuestMemory, Gpa};

use super::{Chain, Direction, PackedQueue, Pop, Refused, RingError, RingFeatures, SplitQueue, UsedAhead, VIRTIO_F_RING_PACKED};

/// What the copy-once datapath does with a virtqueue; see `SplitQueue` and
/// `PackedQueue` for what each means for its kind. A chain's `head` is
/// what `add_used` takes back: the head descriptor of a split chain, the
/// buffer id of a packed one. `indices` are rte_vhost's vring base.
pub trait RingOps {
    fn features(&self) -> RingFeatures;
    fn size(&self) -> u16;
    fn indices(&self) -> (u16, u16);
    /// More than 0 iff a chain can be popped (split: exactly how many;
    /// packed: available descriptors, a few dozen at most).
    fn available(&mut self, mem: &GuestMemory) -> Result<u16, RingError>;
    /// How many chains, at most `max`, a burst should try to take: 0 iff
    /// none can be (split: those available; packed: `max`, its pops
    /// finding where the chains end).
    fn to_take(&mut self, mem: &GuestMemory, max: usize) -> Result<usize, RingError>;
    fn pop(&mut self, mem: &GuestMemory, dir: Direction, out: &mut Chain) -> Result<Pop, RingError>;
    /// The run of one-buffer chains at the front of the ring, up to
    /// `out.len()`, into `out`: how many (see `SplitQueue::pop_singles`).
    fn pop_singles(&mut self, mem: &GuestMemory, dir: Direction, out: &mut [Chain]) -> usize;
    /// Up to `out.len()` chains into `out`, in ring order; a bad chain goes
    /// back at once, with length 0, counted in `refused`. Returns how many
    /// `out` holds. An error after some chains were taken ends the batch
    /// with them: it is the ring's own state, which the next call meets.
    /// `held`, for a ring whose chains go back in order: a bad chain ends
    /// the batch instead, its head left there for the caller to return
    /// after the chains before it, this batch's or earlier ones' (counted
    /// all the same).
    #[inline]
    fn pop_many(&mut self, mem: &GuestMemory, dir: Direction, out: &mut [Chain], refused: &mut Refused, mut held: Option<&mut Option<u16>>) -> Result<usize, RingError> {
        let (mut n, mut singles) = (0, true);
        let end = loop {
            // A ring whose chains are not single buffers (Linux's TSO
            // frames, a jumbo frame in 2 KB buffers) is walked a pop at a
            // time, not looked at twice for each chain.
            if singles {
                let k = self.pop_singles(mem, dir, &mut out[n..]);
                (n, singles) = (n + k, k > 0);
            }
            let Some(c) = out.get_mut(n) else { break Ok(()) };
            match self.pop(mem, dir, c) {
                Ok(Pop::Chain) => n += 1,
                Ok(Pop::Empty) => break Ok(()),
                Ok(Pop::Bad { head, err }) => {
                    refused.add(err);
                    if let Some(h) = held.as_deref_mut() {
                        *h = Some(head);
                        break Ok(());
                    }
                    if let Err(e) = self.add_used(mem, head, 0) {
                        break Err(e);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        match end {
            Err(e) if n == 0 => Err(e),
            _ => Ok(n),
        }
    }
    fn prefetch_next(&self, mem: &GuestMemory, n: usize, used: UsedAhead);
    /// Starts taking for writing the first `bytes` of the buffers of the
    /// chains `chains` counts from the next (0: the next); how far it
    /// looked, a count from the next chain as well.
    fn prefetch_buffers(&mut self, mem: &GuestMemory, chains: Range<usize>, bytes: u64) -> usize;
    fn unpop(&mut self, chains: &[Chain]);
    fn mark_starved(&mut self, need: u64);
    fn starved(&mut self, mem: &GuestMemory, need: u64) -> Result<bool, RingError>;
    fn add_used(&mut self, mem: &GuestMemory, head: u16, len: u32) -> Result<(), RingError>;
    /// `add_used` for each of `entries` (head, bytes written), in order,
    /// in one pass.
    fn add_used_all(&mut self, mem: &GuestMemory, entries: impl Iterator<Item = (u16, u32)>) -> Result<(), RingError>;
    /// Chains taken in ring order from a guest that negotiated IN_ORDER,
    /// going back with nothing written, as one used entry (see
    /// `SplitQueue::add_used_in_order`): `heads`, every chain taken since
    /// the last return.
    fn add_used_in_order(&mut self, mem: &GuestMemory, heads: &[u16]) -> Result<(), RingError>;
    fn publish(&mut self, mem: &GuestMemory) -> Result<(), RingError>;
    fn needs_interrupt(&mut self, mem: &GuestMemory) -> bool;
    fn guest_wants_interrupt(&self, mem: &GuestMemory) -> bool;
    fn suppress_kicks(&self, mem: &GuestMemory) -> Result<(), RingError>;
    /// Kicks asked for, and whether the ring is empty (sleep on the kick).
    fn ask_for_kicks(&mut self, mem: &GuestMemory) -> Result<bool, RingError>;
}

/// `RingOps` for a queue type, by its inherent methods (named by path, so
/// an inherent `&self` method is never mistaken for the trait's `&mut`).
macro_rules! forward {
    ($t:ty) => {
        impl RingOps for $t {
            #[inline]
            fn features(&self) -> RingFeatures {
                <$t>::features(self)
            }
            #[inline]
            fn size(&self) -> u16 {
                <$t>::size(self)
            }
            #[inline]
            fn indices(&self) -> (u16, u16) {
                <$t>::indices(self)
            }
            #[inline]
            fn available(&mut self, mem: &GuestMemory) -> Result<u16, RingError> {
                <$t>::available(self, mem)
            }
            #[inline]
            fn to_take(&mut self, mem: &GuestMemory, max: usize) -> Result<usize, RingError> {
                <$t>::to_take(self, mem, max)
            }
            #[inline]
            fn pop(&mut self, mem: &GuestMemory, dir: Direction, out: &mut Chain) -> Result<Pop, RingError> {
                <$t>::pop(self, mem, dir, out)
            }
            #[inline]
            fn pop_singles(&mut self, mem: &GuestMemory, dir: Direction, out: &mut [Chain]) -> usize {
                <$t>::pop_singles(self, mem, dir, out)
            }
            #[inline]
            fn prefetch_next(&self, mem: &GuestMemory, n: usize, used: UsedAhead) {
                <$t>::prefetch_next(self, mem, n, used)
            }
            #[inline]
            fn prefetch_buffers(&mut self, mem: &GuestMemory, chains: Range<usize>, bytes: u64) -> usize {
                <$t>::prefetch_buffers(self, mem, chains, bytes)
            }
            #[inline]
            fn unpop(&mut self, chains: &[Chain]) {
                <$t>::unpop(self, chains)
            }
            #[inline]
            fn mark_starved(&mut self, need: u64) {
                <$t>::mark_starved(self, need)
            }
            #[inline]
            fn starved(&mut self, mem: &GuestMemory, need: u64) -> Result<bool, RingError> {
                <$t>::starved(self, mem, need)
            }
            #[inline]
            fn add_used(&mut self, mem: &GuestMemory, head: u16, len: u32) -> Result<(), RingError> {
                <$t>::add_used(self, mem, head, len)
            }
            #[inline]
            fn add_used_all(&mut self, mem: &GuestMemory, entries: impl Iterator<Item = (u16, u32)>) -> Result<(), RingError> {
                <$t>::add_used_all(self, mem, entries)
            }
            #[inline]
            fn add_used_in_order(&mut self, mem: &GuestMemory, heads: &[u16]) -> Result<(), RingError> {
                <$t>::add_used_in_order(self, mem, heads)
            }
            #[inline]
            fn publish(&mut self, mem: &GuestMemory) -> Result<(), RingError> {
                <$t>::publish(self, mem)
            }
            #[inline]
            fn needs_interrupt(&mut self, mem: &GuestMemory) -> bool {
                <$t>::needs_interrupt(self, mem)
            }
            #[inline]
            fn guest_wants_interrupt(&self, mem: &GuestMemory) -> bool {
                <$t>::guest_wants_interrupt(self, mem)
            }
            #[inline]
            fn suppress_kicks(&self, mem: &GuestMemory) -> Result<(), RingError> {
                <$t>::suppress_kicks(self, mem)
            }
            #[inline]
            fn ask_for_kicks(&mut self, mem: &GuestMemory) -> Result<bool, RingError> {
                <$t>::ask_for_kicks(self, mem)
            }
        }
    };
}

forward!(SplitQueue);
forward!(PackedQueue);

/// A guest's virtqueue, split or packed as its driver negotiated.
#[derive(Clone, Debug)]
pub enum Virtqueue {
    Split(SplitQueue),
    Packed(PackedQueue),
}

impl Virtqueue {
    /// The queue of a device that negotiated `negotiated`: packed with
    /// VIRTIO_F_RING_PACKED, else split. `rings` are the three addresses
    /// `rte_vhost_get_vhost_vring` gives either way: descriptor table,
    /// avail ring, used ring (split) or descriptor ring, driver area,
    /// device area (packed); `indices` its vring base.
    pub fn new(negotiated: u64, size: u16, rings: [Gpa; 3], indices: (u16, u16), mem: &GuestMemory) -> Result<Virtqueue, &'static str> {
        let features = RingFeatures::from_bits(negotiated);
        let [a, b, c] = rings;
        Ok(if negotiated & VIRTIO_F_RING_PACKED != 0 {
            Virtqueue::Packed(PackedQueue::new(size, a, b, c, indices, mem, features)?)
        } else {
            Virtqueue::Split(SplitQueue::with_features(size, a, b, c, indices, mem, features)?)
        })
    }

    /// The packed queue, if this is one.
    pub fn packed_mut(&mut self) -> Option<&mut PackedQueue> {
        match self {
            Virtqueue::Packed(q) => Some(q),
            Virtqueue::Split(_) => None,
        }
    }

    /// A split ring's avail->idx read, timed (`SplitQueue::time_avail`);
    /// None for a packed ring, whose availability is read slot by slot.
    pub fn time_avail(&mut self, mem: &GuestMemory) -> Option<u64> {
        match self {
            Virtqueue::Split(q) => q.time_avail(mem),
            Virtqueue::Packed(_) => None,
        }
    }

    pub fn is_packed(&self) -> bool {
        matches!(self, Virtqueue::Packed(_))
    }
}

/// `$e` with `$q` bound to whichever queue `$v` holds.
macro_rules! each {
    ($v:expr, $q:ident => $e:expr) => {
        match $v {
            Virtqueue::Split($q) => $e,
            Virtqueue::Packed($q) => $e,
        }
    };
}

impl RingOps for Virtqueue {
    #[inline]
    fn features(&self) -> RingFeatures {
        each!(self, q => RingOps::features(q))
    }
    #[inline]
    fn size(&self) -> u16 {
        each!(self, q => RingOps::size(q))
    }
    #[inline]
    fn indices(&self) -> (u16, u16) {
        each!(self, q => RingOps::indices(q))
    }
    #[inline]
    fn available(&mut self, mem: &GuestMemory) -> Result<u16, RingError> {
        each!(self, q => RingOps::available(q, mem))
    }
    #[inline]
    fn to_take(&mut self, mem: &GuestMemory, max: usize) -> Result<usize, RingError> {
        each!(self, q => RingOps::to_take(q, mem, max))
    }
    #[inline]
    fn pop(&mut self, mem: &GuestMemory, dir: Direction, out: &mut Chain) -> Result<Pop, RingError> {
        each!(self, q => RingOps::pop(q, mem, dir, out))
    }
    #[inline]
    fn pop_singles(&mut self, mem: &GuestMemory, dir: Direction, out: &mut [Chain]) -> usize {
        each!(self, q => RingOps::pop_singles(q, mem, dir, out))
    }
    #[inline]
    fn pop_many(&mut self, mem: &GuestMemory, dir: Direction, out: &mut [Chain], refused: &mut Refused, held: Option<&mut Option<u16>>) -> Result<usize, RingError> {
        each!(self, q => RingOps::pop_many(q, mem, dir, out, refused, held))
    }
    #[inline]
    fn prefetch_next(&self, mem: &GuestMemory, n: usize, used: UsedAhead) {
        each!(self, q => RingOps::prefetch_next(q, mem, n, used))
    }
    #[inline]
    fn prefetch_buffers(&mut self, mem: &GuestMemory, chains: Range<usize>, bytes: u64) -> usize {
        each!(self, q => RingOps::prefetch_buffers(q, mem, chains, bytes))
    }
    #[inline]
    fn unpop(&mut self, chains: &[Chain]) {
        each!(self, q => RingOps::unpop(q, chains))
    }
    #[inline]
    fn mark_starved(&mut self, need: u64) {
        each!(self, q => RingOps::mark_starved(q, need))
    }
    #[inline]
    fn starved(&mut self, mem: &GuestMemory, need: u64) -> Result<bool, RingError> {
        each!(self, q => RingOps::starved(q, mem, need))
    }
    #[inline]
    fn add_used(&mut self, mem: &GuestMemory, head: u16, len: u32) -> Result<(), RingError> {
        each!(self, q => RingOps::add_used(q, mem, head, len))
    }
    #[inline]
    fn add_used_all(&mut self, mem: &GuestMemory, entries: impl Iterator<Item = (u16, u32)>) -> Result<(), RingError> {
        each!(self, q => RingOps::add_used_all(q, mem, entries))
    }
    #[inline]
    fn add_used_in_order(&mut self, mem: &GuestMemory, heads: &[u16]) -> Result<(), RingError> {
        each!(self, q => RingOps::add_used_in_order(q, mem, heads))
    }
    #[inline]
    fn publish(&mut self, mem: &GuestMemory) -> Result<(), RingError> {
        each!(self, q => RingOps::publish(q, mem))
    }
    #[inline]
    fn needs_interrupt(&mut self, mem: &GuestMemory) -> bool {
        each!(self, q => RingOps::needs_interrupt(q, mem))
    }
    #[inline]
    fn guest_wants_interrupt(&self, mem: &GuestMemory) -> bool {
        each!(self, q => RingOps::guest_wants_interrupt(q, mem))
    }
    #[inline]
    fn suppress_kicks(&self, mem: &GuestMemory) -> Result<(), RingError> {
        each!(self, q => RingOps::suppress_kicks(q, mem))
    }
    #[inline]
    fn ask_for_kicks(&mut self, mem: &GuestMemory) -> Result<bool, RingError> {
        each!(self, q => RingOps::ask_for_kicks(q, mem))
    }
}
