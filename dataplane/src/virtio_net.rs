//! Delivering a frame into a guest's receive queue, virtio-net style.
//!
//! With mergeable receive buffers (VIRTIO_NET_F_MRG_RXBUF) a frame larger
//! than one buffer spreads over several chains; the 12-byte header in the
//! first says how many (`num_buffers`, always written). The frame's bytes
//! come from plain memory (headers in switch scratch, an mbuf) and, for the
//! rest, from another guest's buffers: then the payload is copied once,
//! guest to guest. If the guest has too few buffers the packet is dropped
//! and the ring left as it was; the caller counts it.
use pmd_bridge::guest_mem::GuestMemory;

use crate::copy_list::CopyList;
use crate::offload::NetHdr;
use crate::virtq::{copy_chain, pieces, Chain, ChainError, Cursor, Direction, Pop, RingError, RingOps, MAX_SEGS};

/// virtio-net header length with VERSION_1 or MRG_RXBUF.
pub const NET_HDR_LEN: usize = 12;
/// At most this many receive buffers for one frame (a 64 KB TCP segment
/// in the 1.5 KB buffers a Linux guest posts takes 44).
pub const MAX_BUFFERS: usize = 64;

/// Tails shorter than this (a jumbo frame's too) are listed for the
/// burst's copy pass, which takes the next copies' lines while it runs one;
/// longer ones (a TSO segment over many buffers) are copied as they are
/// laid out: an entry per buffer costs more than the pass saves them
/// (`--bench vm2vm` tso64k: 6050 cycles per segment listed, 5100 at once).
const LIST_BELOW: u64 = 16384;
/// While a long tail is copied into one receive buffer, the buffer this
/// many ahead is taken for writing, its first `PREFETCH_CHAIN` bytes: each
/// is a new stream, whose first lines the hardware prefetcher does not
/// fetch (tso64k, 6 alternated runs: median 5130 cycles per segment
/// without, 4881 with 512 bytes, 5312 with the whole 2 KB).
const PREFETCH_AHEAD: usize = 2;
const PREFETCH_CHAIN: u64 = 512;

/// Where a frame's bytes are: `head` in plain memory, then `tail` bytes of
/// another guest's chain starting at an offset; and the virtio-net header
/// the receiving guest gets with it (its offloads, `NetHdr::to_bytes`;
/// `num_buffers` is `deliver`'s).
pub struct FrameSource<'a> {
    pub net_hdr: [u8; NetHdr::LEN],
    pub head: &'a [u8],
    pub tail: Option<(&'a GuestMemory, &'a Chain, u64, u64)>,
}

impl FrameSource<'_> {
    pub fn len(&self) -> u64 {
        self.head.len() as u64 + self.tail.map(|t| t.3).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a delivery did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Delivered into this many receive buffers; payload copies made from
    /// another guest (0 or 1).
    Done { buffers: u16, guest_copies: u16 },
    /// The guest had too few receive buffers: dropped, ring untouched.
    NoBuffers,
    /// A receive chain was malformed: returned to the guest with length 0.
    BadChain(ChainError),
}

/// Delivers `frame` into `q` (a `Virtqueue`, or either kind on its own),
/// adding used entries (the caller publishes once per burst). `chains` is
/// the caller's scratch (at least `MAX_BUFFERS`, kept between calls: a
/// chain table is too big to build per packet). With `copies` (the burst's
/// list and this output's port), the guest-to-guest payload copy is listed
/// for later (if shorter than `LIST_BELOW`); without, it is done now.
/// `taken`: chains the short way already took for this frame, in
/// `chains[..taken]` (0 or 1).
pub fn deliver<Q: RingOps>(
    q: &mut Q,
    mem: &GuestMemory,
    frame: &FrameSource,
    mergeable: bool,
    (chains, taken): (&mut [Chain], usize),
    copies: Option<(&mut CopyList, u16)>,
) -> Result<Delivery, RingError> {
    let need = NET_HDR_LEN as u64 + frame.len();
    if taken == 0 && q.starved(mem, need)? {
        return Ok(Delivery::NoBuffers);
    }
    let chains = &mut chains[..MAX_BUFFERS];
    // At most the short way's one: the bound lets the walk below go
    // without an index check a chain.
    let (mut n, mut room) = match taken {
        0 => (0, 0),
        _ => (1, chains[0].len()),
    };
    while room < need {
        if n == MAX_BUFFERS || (!mergeable && n == 1) {
            q.unpop(&chains[..n]);
            q.mark_starved(need);
            return Ok(Delivery::NoBuffers);
        }
        match q.pop(mem, Direction::DeviceWrites, &mut chains[n])? {
            Pop::Chain => {
                room += chains[n].len();
                n += 1;
            }
            Pop::Empty => {
                q.unpop(&chains[..n]);
                q.mark_starved(need);
                return Ok(Delivery::NoBuffers);
            }
            Pop::Bad { head, err } => {
                // The bad chain and the good ones taken before it all go
                // back to the guest empty; the frame is dropped.
                q.add_used_all(mem, chains[..n].iter().map(|c| c.head).chain([head]).map(|h| (h, 0)))?;
                return Ok(Delivery::BadChain(err));
            }
        }
    }
    let chains = &chains[..n];
    let (fill, guest_copies) = lay(mem, frame, chains, copies)?;
    q.add_used_all(mem, chains.iter().enumerate().map(|(k, c)| (c.head, fill.used(k, c) as u32)))?;
    Ok(Delivery::Done { buffers: n as u16, guest_copies })
}

/// Lays `frame` over `chains`, receive chains taken for it with room for
/// its header and bytes: the header (`num_buffers`: their count), the
/// plain head and the guest tail, in order from the start, the tail listed
/// in `copies` (see `deliver`). Returns where the bytes ended, which says
/// what each chain holds (`Fill::used`), and the payload copies made from
/// another guest (0 or 1).
#[inline]
pub(crate) fn lay(mem: &GuestMemory, frame: &FrameSource, chains: &[Chain], mut copies: Option<(&mut CopyList, u16)>) -> Result<(Fill, u16), RingError> {
    let hdr = header(frame.net_hdr, chains.len() as u16);
    let mut fill = Fill::default();
    let put = |bytes: &[u8], fill: &mut Fill| -> bool {
        let mut bytes = bytes;
        while !bytes.is_empty() {
            let Some((c, off)) = fill.next(chains) else { return false };
            let k = ((c.len() - off) as usize).min(bytes.len());
            if c.write_at(mem, off, &bytes[..k]).is_err() {
                return false;
            }
            bytes = &bytes[k..];
            fill.advance(k as u64);
        }
        true
    };
    // Where the first buffer holds header and head (a guest's 1.5 KB and
    // 2 KB buffers do), the header as one store and the head from the
    // switch's copy after it: no walk, and no scratch staging them
    // together, whose copy out would load over the narrower stores just
    // made there and wait for them (a store-forwarding stall a frame).
    let lead = NET_HDR_LEN + frame.head.len();
    let ok = match chains[0].segments().first().filter(|s| s.len() as usize >= lead) {
        Some(s) => {
            let ok = mem.store(s, 0, hdr).is_ok() && mem.write_span(s, NET_HDR_LEN, frame.head).is_ok();
            fill.advance(if ok { lead as u64 } else { 0 });
            ok
        }
        None => put(&hdr, &mut fill) && put(frame.head, &mut fill),
    };
    let mut guest_copies = 0;
    if ok {
        if let Some((from, src, src_off, len)) = frame.tail {
            let mut s = Cursor::new(src, src_off);
            let listed = len < LIST_BELOW;
            let mut done = 0u64;
            while done < len {
                let Some((c, off)) = fill.next(chains) else { break };
                if !listed && off == 0 {
                    if let Some(ahead) = chains.get(fill.i + PREFETCH_AHEAD) {
                        ahead.prefetch_write(mem, PREFETCH_CHAIN);
                    }
                }
                let k = (c.len() - off).min(len - done);
                let copied = match copies.as_mut().filter(|_| listed) {
                    Some((list, out)) => pieces(&mut s, c, off, k, |s, so, d, dof, n| {
                        if list.push(*out, s, so, d, dof, n) {
                            Ok(())
                        } else {
                            GuestMemory::copy_span(from, s, so as usize, mem, d, dof as usize, n as usize)
                        }
                    }),
                    None => copy_chain(from, &mut s, mem, c, off, k),
                }
                .map_err(RingError::from)?;
                done += copied;
                fill.advance(copied);
                if copied == 0 {
                    break;
                }
            }
            guest_copies = 1;
        }
    }
    Ok((fill, guest_copies))
}

/// `deliver` the short way, for a frame that needs none of its generality:
/// one receive chain takes the header and the whole frame, its first
/// buffer the header and `head`; the tail is listed in `copies` (or copied
/// now, if long or the list is full). This takes the chain for a frame of
/// `len` bytes (header included) into `chain`, for `fill_short`; an inner
/// Err is how the short way ends without one (none on offer, or a bad
/// chain, returned as `deliver` returns it).
#[inline(always)]
pub fn take_short<Q: RingOps>(q: &mut Q, mem: &GuestMemory, len: u64, chain: &mut Chain) -> Result<Result<(), Short>, RingError> {
    // Chains found too few for as large a frame are not walked again.
    if q.starved(mem, len)? {
        return Ok(Err(Short::Long(0)));
    }
    match q.pop(mem, Direction::DeviceWrites, chain)? {
        Pop::Chain => Ok(Ok(())),
        Pop::Empty => Ok(Err(Short::Long(0))),
        Pop::Bad { head, err } => q.add_used(mem, head, 0).map(|()| Err(Short::Done(Delivery::BadChain(err)))),
    }
}

/// The short way into `chain`, a receive chain already taken for the
/// frame (by `take_short`, or ahead with others by `pop_singles`).
#[inline(always)]
pub fn fill_short<Q: RingOps>(q: &mut Q, mem: &GuestMemory, frame: &FrameSource, chain: &Chain, copies: (&mut CopyList, u16)) -> Result<Short, RingError> {
    match write_short(mem, frame, chain, copies)? {
        Some((len, guest_copies)) => q.add_used(mem, chain.head, len).map(|()| Short::Done(Delivery::Done { buffers: 1, guest_copies })),
        None => Ok(Short::Long(1)),
    }
}

/// `fill_short` but its used entry, which the caller adds: the bytes the
/// entry says were written, and the copies from another guest (0 or 1).
/// None: not the short way (`Short::Long(1)`).
#[inline(always)]
pub fn write_short(mem: &GuestMemory, frame: &FrameSource, chain: &Chain, (list, out): (&mut CopyList, u16)) -> Result<Option<(u32, u16)>, RingError> {
    let len = NET_HDR_LEN as u64 + frame.len();
    let lead = NET_HDR_LEN + frame.head.len();
    // Not walked twice: a chain too short (a frame for mergeable buffers)
    // or whose first buffer is (a header-only one) is `deliver`'s first.
    let Some(first) = chain.segments().first().filter(|s| s.len() as usize >= lead && chain.len() >= len) else {
        return Ok(None);
    };
    // A span of a validated chain: these writes cannot fail.
    let wrote = mem.store(first, 0, header(frame.net_hdr, 1)).is_ok() && mem.write_span(first, NET_HDR_LEN, frame.head).is_ok();
    let mut guest_copies = 0;
    if let Some((from, src, src_off, tail)) = frame.tail.filter(|_| wrote) {
        let copied = if tail < LIST_BELOW {
            pieces(&mut Cursor::new(src, src_off), chain, lead as u64, tail, |s, so, d, dof, n| {
                if list.push(out, s, so, d, dof, n) {
                    Ok(())
                } else {
                    GuestMemory::copy_span(from, s, so as usize, mem, d, dof as usize, n as usize)
                }
            })
        } else {
            copy_chain(from, &mut Cursor::new(src, src_off), mem, chain, lead as u64, tail)
        };
        copied?;
        guest_copies = 1;
    }
    Ok(Some((if wrote { len as u32 } else { 0 }, guest_copies)))
}

/// What the short way did with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Short {
    Done(Delivery),
    /// Not this way: `deliver` it, with the chains already taken for it
    /// (0, or 1: the short way's `chain`). A `u8` keeps the whole result
    /// in registers: with a `usize` it went through the stack as three
    /// partial stores read back as one word, a failed store forwarding that
    /// waited for every store before it (the receive buffer's) to land.
    Long(u8),
}

/// The virtio-net header a receiving guest gets: the offloads' 10 bytes
/// and `num_buffers`, put together as the words `to_bytes` stored (see
/// there), for one 12-byte store.
#[inline]
fn header(net_hdr: [u8; NetHdr::LEN], buffers: u16) -> [u8; NET_HDR_LEN] {
    let [a, b, c, d, e, f, g, h, i, j] = net_hdr;
    let lo = u64::from_le_bytes([a, b, c, d, e, f, g, h]);
    let hi = u32::from(u16::from_le_bytes([i, j])) | u32::from(buffers) << 16;
    let mut hdr = [0u8; NET_HDR_LEN];
    hdr[..8].copy_from_slice(&lo.to_le_bytes());
    hdr[8..].copy_from_slice(&hi.to_le_bytes());
    hdr
}

/// Where the next byte goes in the receive chains: chain `i` at offset
/// `off`. It only moves forward, so no chain is sought from the first
/// again (a 64 KB segment spans about 32 of them).
#[derive(Default)]
pub(crate) struct Fill {
    i: usize,
    off: u64,
}

impl Fill {
    /// The chain the next byte goes in and the offset in it, past the
    /// chains already full; None when all are.
    fn next<'c>(&mut self, chains: &'c [Chain]) -> Option<(&'c Chain, u64)> {
        while let Some(c) = chains.get(self.i) {
            if self.off < c.len() {
                return Some((c, self.off));
            }
            self.i += 1;
            self.off = 0;
        }
        None
    }

    fn advance(&mut self, n: u64) {
        self.off += n;
    }

    /// The bytes laid in chain `k` (`c`): the chains before the position
    /// are full, those after it empty.
    pub(crate) fn used(&self, k: usize, c: &Chain) -> u64 {
        match k.cmp(&self.i) {
            std::cmp::Ordering::Less => c.len(),
            std::cmp::Ordering::Equal => self.off,
            std::cmp::Ordering::Greater => 0,
        }
    }
}

const _: () = assert!(MAX_BUFFERS <= MAX_SEGS);

#[cfg(test)]
mod tests;
