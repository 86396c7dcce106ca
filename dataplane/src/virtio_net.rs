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
use crate::virtq::{copy_chain, pieces, Chain, ChainError, Cursor, Direction, Pop, RingError, RingOps, MAX_SEGS, MAX_UNPOP};

/// virtio-net header length with VERSION_1 or MRG_RXBUF.
pub const NET_HDR_LEN: usize = 12;
/// At most this many receive buffers for one frame (a 64 KB TCP segment
/// in the 1.5 KB buffers a Linux guest posts takes 44).
pub const MAX_BUFFERS: usize = 64;

/// Tails shorter than this are listed for the burst's copy pass; longer
/// ones (a jumbo frame, a TSO segment over 32 buffers) are copied as they
/// are laid out: the pass buys a prefetch of each copy's first line, which
/// a copy of kilobytes does not need, and costs a list entry per buffer
/// (`--bench vm2vm` tso64k: 5100 cycles per segment listed, 4590 copied at
/// once).
const LIST_BELOW: u64 = 4096;
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
pub fn deliver<Q: RingOps>(
    q: &mut Q,
    mem: &GuestMemory,
    frame: &FrameSource,
    mergeable: bool,
    chains: &mut [Chain],
    mut copies: Option<(&mut CopyList, u16)>,
) -> Result<Delivery, RingError> {
    let need = NET_HDR_LEN as u64 + frame.len();
    if q.starved(mem, need)? {
        return Ok(Delivery::NoBuffers);
    }
    let chains = &mut chains[..MAX_BUFFERS];
    let (mut n, mut room) = (0usize, 0u64);
    while room < need {
        if n == MAX_BUFFERS || (!mergeable && n == 1) {
            q.unpop(n as u16);
            q.mark_starved(need);
            return Ok(Delivery::NoBuffers);
        }
        match q.pop(mem, Direction::DeviceWrites, &mut chains[n])? {
            Pop::Chain => {
                room += chains[n].len();
                n += 1;
            }
            Pop::Empty => {
                q.unpop(n as u16);
                q.mark_starved(need);
                return Ok(Delivery::NoBuffers);
            }
            Pop::Bad { head, err } => {
                // The bad chain and the good ones taken before it all go
                // back to the guest empty; the frame is dropped.
                for c in chains.iter().take(n) {
                    q.add_used(mem, c.head, 0)?;
                }
                q.add_used(mem, head, 0)?;
                return Ok(Delivery::BadChain(err));
            }
        }
    }
    // Put together as the words `to_bytes` stored (see there).
    let [a, b, c, d, e, f, g, h, i, j] = frame.net_hdr;
    let lo = u64::from_le_bytes([a, b, c, d, e, f, g, h]);
    let hi = u32::from(u16::from_le_bytes([i, j])) | (n as u32) << 16;
    let mut hdr = [0u8; NET_HDR_LEN];
    hdr[..8].copy_from_slice(&lo.to_le_bytes());
    hdr[8..].copy_from_slice(&hi.to_le_bytes());
    // Lay the header, the plain head and the guest tail over the n chains,
    // in order from the start.
    let chains = &chains[..n];
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
    for (k, c) in chains.iter().enumerate() {
        q.add_used(mem, c.head, fill.used(k, c) as u32)?;
    }
    Ok(Delivery::Done { buffers: n as u16, guest_copies })
}

/// Where the next byte goes in the receive chains: chain `i` at offset
/// `off`. It only moves forward, so no chain is sought from the first
/// again (a 64 KB segment spans about 32 of them).
#[derive(Default)]
struct Fill {
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
    fn used(&self, k: usize, c: &Chain) -> u64 {
        match k.cmp(&self.i) {
            std::cmp::Ordering::Less => c.len(),
            std::cmp::Ordering::Equal => self.off,
            std::cmp::Ordering::Greater => 0,
        }
    }
}

const _: () = assert!(MAX_BUFFERS <= MAX_SEGS && MAX_BUFFERS <= MAX_UNPOP);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtq::test_packed::{avail_flags, PackedGuest};
    use crate::virtq::{Virtqueue, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use pmd_bridge::guest_mem::Gpa;

    use crate::virtq::test_guest::{TestGuest, DATA, DESC, USED};

    const SIZE: u16 = 16;
    const WRITE: u16 = VRING_DESC_F_WRITE;

    /// A receiving guest, with either kind of ring: every test runs on both.
    enum Guest {
        Split(TestGuest),
        Packed(PackedGuest),
    }

    impl Guest {
        fn new(packed: bool) -> Guest {
            if packed {
                Guest::Packed(PackedGuest::new(SIZE))
            } else {
                Guest::Split(TestGuest::new(SIZE))
            }
        }

        fn logged(packed: bool) -> Guest {
            if packed {
                Guest::Packed(PackedGuest::logged(SIZE))
            } else {
                Guest::Split(TestGuest::logged(SIZE))
            }
        }

        fn mem(&self) -> &GuestMemory {
            match self {
                Guest::Split(g) => &g.mem,
                Guest::Packed(g) => &g.mem,
            }
        }

        /// Offers one single-buffer chain, `id` (its head, or buffer id).
        fn offer(&mut self, id: u16, addr: u64, len: u32, flags: u16) {
            match self {
                Guest::Split(g) => {
                    g.desc(id, addr, len, flags, 0);
                    g.offer(id);
                }
                Guest::Packed(g) => _ = g.offer(id, &[(addr, len, flags)]),
            }
        }

        /// Offers `n` receive buffers of `len` bytes (ids 0..n).
        fn post(&mut self, n: u16, len: u32) {
            for i in 0..n {
                self.offer(i, DATA + 0x1000 * i as u64, len, WRITE);
            }
        }

        /// Makes the first buffer offered read-only, behind the walker's
        /// back.
        fn spoil_first(&self) {
            match self {
                Guest::Split(g) => g.desc(0, DATA, 100, 0, 0),
                Guest::Packed(g) => g.raw(0, (DATA, 100, 0, avail_flags(true))),
            }
        }

        fn queue(&self) -> Virtqueue {
            match self {
                Guest::Split(g) => Virtqueue::Split(g.queue()),
                Guest::Packed(g) => Virtqueue::Packed(g.queue()),
            }
        }

        /// Where the ring the switch writes lies.
        fn used_ring(&self) -> u64 {
            match self {
                Guest::Split(_) => USED,
                Guest::Packed(_) => DESC,
            }
        }

        /// The used entries' (id, len), and the bytes they hold, in order.
        fn received(&mut self, q: &mut Virtqueue) -> (Vec<(u32, u32)>, Vec<u8>) {
            q.publish(self.mem()).unwrap();
            let entries: Vec<(u32, u32)> = match self {
                Guest::Split(g) => (0..g.mem.read_u16(Gpa(USED + 2)).unwrap()).map(|i| g.used(i)).collect(),
                Guest::Packed(g) => std::iter::from_fn(|| g.used()).map(|(id, len, _)| (id as u32, len)).collect(),
            };
            let mut bytes = Vec::new();
            for &(id, len) in &entries {
                let mut b = vec![0u8; len as usize];
                self.mem().read(Gpa(DATA + 0x1000 * id as u64), &mut b).unwrap();
                bytes.extend(b);
            }
            (entries, bytes)
        }
    }

    fn chains() -> Vec<Chain> {
        vec![Chain::default(); MAX_BUFFERS]
    }

    fn frame(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn plain(head: &[u8]) -> FrameSource<'_> {
        FrameSource { net_hdr: [0; NetHdr::LEN], head, tail: None }
    }

    /// A transmitting split guest's chain: `payload` after a zero header,
    /// over two buffers.
    fn sent(payload: &[u8]) -> (TestGuest, Chain) {
        let mut a = TestGuest::new(SIZE);
        a.desc(0, DATA, 1000, VRING_DESC_F_NEXT, 1);
        a.desc(1, DATA + 0x2000, (NET_HDR_LEN + payload.len()) as u32 - 1000, 0, 0);
        a.offer(0);
        let mut src = Chain::default();
        assert_eq!(a.queue().pop(&a.mem, Direction::DeviceReads, &mut src).unwrap(), Pop::Chain);
        src.write(&a.mem, &[&[0; NET_HDR_LEN], payload]).unwrap();
        (a, src)
    }

    #[test]
    fn a_jumbo_frame_spreads_over_mergeable_buffers() {
        for packed in [false, true] {
            let mut g = Guest::new(packed);
            g.post(8, 2048);
            let mut q = g.queue();
            let f = frame(9000);
            let r = deliver(&mut q, g.mem(), &plain(&f), true, &mut chains(), None).unwrap();
            assert_eq!(r, Delivery::Done { buffers: 5, guest_copies: 0 }, "packed {packed}");
            let (used, bytes) = g.received(&mut q);
            assert_eq!(used.iter().map(|u| u.1).sum::<u32>(), 9012);
            assert_eq!(u16::from_le_bytes([bytes[10], bytes[11]]), 5, "num_buffers");
            assert_eq!(bytes[..10], [0; 10], "no offloads");
            assert_eq!(bytes[NET_HDR_LEN..], f[..]);
        }
    }

    /// A receive chain whose first buffer is shorter than the header: the
    /// header goes over two buffers, byte for byte as over one.
    #[test]
    fn a_header_split_over_two_buffers_is_laid_in_order() {
        let mut g = TestGuest::new(SIZE);
        g.desc(0, DATA, 8, WRITE | VRING_DESC_F_NEXT, 1);
        g.desc(1, DATA + 0x1000, 2048, WRITE, 0);
        g.offer(0);
        let mut q = Virtqueue::Split(g.queue());
        let f = frame(64);
        let net_hdr = NetHdr { flags: crate::offload::NEEDS_CSUM, csum_start: 34, csum_offset: 16, ..NetHdr::default() }.to_bytes();
        let r = deliver(&mut q, &g.mem, &FrameSource { net_hdr, head: &f, tail: None }, true, &mut chains(), None).unwrap();
        assert_eq!(r, Delivery::Done { buffers: 1, guest_copies: 0 });
        q.publish(&g.mem).unwrap();
        assert_eq!(g.used(0), (0, (NET_HDR_LEN + 64) as u32));
        let mut got = [0u8; NET_HDR_LEN + 64];
        g.mem.read(Gpa(DATA), &mut got[..8]).unwrap();
        g.mem.read(Gpa(DATA + 0x1000), &mut got[8..]).unwrap();
        assert_eq!(got[..NetHdr::LEN], net_hdr);
        assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1, "num_buffers");
        assert_eq!(got[NET_HDR_LEN..], f[..]);
    }

    #[test]
    fn too_few_buffers_leave_the_ring_as_it_was() {
        for packed in [false, true] {
            let mut g = Guest::new(packed);
            g.post(2, 2048);
            let mut q = g.queue();
            let f = frame(9000);
            assert_eq!(deliver(&mut q, g.mem(), &plain(&f), true, &mut chains(), None).unwrap(), Delivery::NoBuffers);
            assert_eq!(q.available(g.mem()).unwrap(), 2, "nothing consumed");
            assert_eq!(deliver(&mut q, g.mem(), &plain(&f[..1500]), false, &mut chains(), None).unwrap(), Delivery::Done { buffers: 1, guest_copies: 0 });
            assert_eq!(deliver(&mut q, g.mem(), &plain(&f[..3000]), false, &mut chains(), None).unwrap(), Delivery::NoBuffers, "without MRG_RXBUF one buffer must hold it");
        }
    }

    /// Copied at once or listed and run after: the sender's buffers (1000
    /// and 2012 bytes) and the receiver's (1024) end at different places.
    #[test]
    fn payload_from_another_guest_is_copied_once() {
        for (packed, listed) in [(false, false), (true, false), (false, true), (true, true)] {
            let payload = frame(3000);
            let (a, src) = sent(&payload);
            let mut head = Vec::new();
            src.read(&a.mem, NET_HDR_LEN as u64, &mut head).unwrap();
            head.truncate(14);
            let mut b = Guest::new(packed);
            b.post(4, 1024);
            let mut qb = b.queue();
            let source = FrameSource { net_hdr: [0; NetHdr::LEN], head: &head, tail: Some((&a.mem, &src, NET_HDR_LEN as u64 + 14, 3000 - 14)) };
            let mut list = CopyList::default();
            let copies = listed.then_some((&mut list, 3));
            assert_eq!(deliver(&mut qb, b.mem(), &source, true, &mut chains(), copies).unwrap(), Delivery::Done { buffers: 3, guest_copies: 1 });
            if listed {
                assert_eq!(list.len(), 4, "pieces between both sides' buffer ends");
                list.run(Some(&a.mem), |out| (out == 3).then_some(b.mem())).1.unwrap();
            }
            let (_, bytes) = b.received(&mut qb);
            assert_eq!(bytes[NET_HDR_LEN..], payload[..], "packed {packed}, listed {listed}");
        }
    }

    /// A tail of `LIST_BELOW` bytes or more is copied as it is laid out,
    /// a list given or not: nothing listed, every byte there at once.
    #[test]
    fn a_long_tail_is_copied_at_once_even_with_a_list() {
        for packed in [false, true] {
            let payload = frame(LIST_BELOW as usize + 100);
            let (a, src) = sent(&payload);
            let mut b = Guest::new(packed);
            b.post(6, 1024);
            let mut qb = b.queue();
            let tail = Some((&a.mem, &src, NET_HDR_LEN as u64 + 14, payload.len() as u64 - 14));
            let source = FrameSource { net_hdr: [0; NetHdr::LEN], head: &payload[..14], tail };
            let mut list = CopyList::default();
            assert_eq!(deliver(&mut qb, b.mem(), &source, true, &mut chains(), Some((&mut list, 3))).unwrap(), Delivery::Done { buffers: 5, guest_copies: 1 });
            assert!(list.is_empty(), "packed {packed}: nothing listed");
            let (_, bytes) = b.received(&mut qb);
            assert_eq!(bytes[NET_HDR_LEN..], payload[..], "packed {packed}");
        }
    }

    #[test]
    fn during_a_migration_every_page_written_is_logged() {
        for packed in [false, true] {
            let (a, src) = sent(&frame(1500));
            let mut b = Guest::logged(packed);
            // Three 2 KB buffers, the second straddling a page boundary.
            for (i, at) in [0x0u64, 0x1c00, 0x5000].into_iter().enumerate() {
                b.offer(i as u16, DATA + at, 2048, WRITE);
            }
            let mut qb = b.queue();
            let source = FrameSource { net_hdr: [0; NetHdr::LEN], head: &[0u8; 14], tail: Some((&a.mem, &src, NET_HDR_LEN as u64, 1500)) };
            // 12 + 3288 bytes: all of the first buffer, 1252 of the second
            // (past its page's end); then 12 + 14 + 1500 bytes copied from
            // guest A.
            assert_eq!(deliver(&mut qb, b.mem(), &plain(&frame(3288)), true, &mut chains(), None).unwrap(), Delivery::Done { buffers: 2, guest_copies: 0 });
            assert_eq!(deliver(&mut qb, b.mem(), &source, true, &mut chains(), None).unwrap(), Delivery::Done { buffers: 1, guest_copies: 1 });
            qb.publish(b.mem()).unwrap();
            let dirty = |gpa: u64| b.mem().is_dirty(Gpa(gpa));
            assert!(dirty(b.used_ring()), "the used ring (packed {packed})");
            assert!(dirty(DATA) && dirty(DATA + 0x1000) && dirty(DATA + 0x2000), "both pages of the straddling buffer");
            assert!(dirty(DATA + 0x5000), "the guest-to-guest copy's destination");
            assert!(!dirty(DATA + 0x3000) && !dirty(DATA + 0x6000) && !dirty(DATA + 0x8000), "nothing unwritten");
            assert!(!a.mem.logging(), "the sender is not migrating");
        }
    }

    #[test]
    fn regression_a_starved_ring_is_not_walked_again_until_the_guest_offers_more() {
        for packed in [false, true] {
            let mut g = Guest::new(packed);
            g.post(2, 100);
            let mut q = g.queue();
            let f = frame(1000);
            assert_eq!(deliver(&mut q, g.mem(), &plain(&f), true, &mut chains(), None).unwrap(), Delivery::NoBuffers);
            // Were the same chains walked again, this broken one would say so.
            g.spoil_first();
            assert_eq!(deliver(&mut q, g.mem(), &plain(&f), true, &mut chains(), None).unwrap(), Delivery::NoBuffers, "not walked");
            // New buffers: the ring is walked again (and the broken chain found).
            g.offer(2, DATA + 0x2000, 2048, WRITE);
            assert_eq!(deliver(&mut q, g.mem(), &plain(&f), true, &mut chains(), None).unwrap(), Delivery::BadChain(ChainError::WrongDirection), "packed {packed}");
        }
    }

    #[test]
    fn a_bad_receive_chain_drops_the_frame_and_returns_buffers() {
        for packed in [false, true] {
            let mut g = Guest::new(packed);
            g.offer(0, DATA, 1024, WRITE);
            g.offer(1, DATA + 0x1000, 1024, 0); // not writable
            let mut q = g.queue();
            let f = frame(2000);
            assert_eq!(deliver(&mut q, g.mem(), &plain(&f), true, &mut chains(), None).unwrap(), Delivery::BadChain(ChainError::WrongDirection));
            let (used, _) = g.received(&mut q);
            assert_eq!(used, [(0, 0), (1, 0)], "packed {packed}");
        }
    }

    /// Plain `SplitQueue`s still take deliveries (the copy-once port code
    /// holds one until it moves to `Virtqueue`).
    #[test]
    fn deliver_takes_a_plain_split_queue() {
        let mut g = TestGuest::new(SIZE);
        g.desc(0, DATA, 2048, WRITE, 0);
        g.offer(0);
        let mut q = g.queue();
        assert_eq!(deliver(&mut q, &g.mem, &plain(&frame(100)), true, &mut chains(), None).unwrap(), Delivery::Done { buffers: 1, guest_copies: 0 });
        q.publish(&g.mem).unwrap();
        assert_eq!(g.used(0), (0, 112));
    }
}
