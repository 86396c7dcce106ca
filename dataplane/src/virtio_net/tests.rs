//! Delivery into either kind of ring, over plain memory.
use super::*;
use crate::copy_list::Sender;
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

    /// Offers chain `id` of two buffers, laid end to end from its slot's
    /// address (split: its second descriptor is `SIZE - 1`'s).
    fn offer_two(&mut self, id: u16, lens: [u32; 2]) {
        let addr = DATA + 0x1000 * id as u64;
        match self {
            Guest::Split(g) => {
                g.desc(id, addr, lens[0], WRITE | VRING_DESC_F_NEXT, SIZE - 1);
                g.desc(SIZE - 1, addr + lens[0] as u64, lens[1], WRITE, 0);
                g.offer(id);
            }
            Guest::Packed(g) => _ = g.offer(id, &[(addr, lens[0], WRITE), (addr + lens[0] as u64, lens[1], WRITE)]),
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
        let r = deliver(&mut q, g.mem(), &plain(&f), true, (&mut chains(), 0), None).unwrap();
        assert_eq!(r, Delivery::Done { buffers: 5, guest_copies: 0 }, "packed {packed}");
        let (used, bytes) = g.received(&mut q);
        assert_eq!(used.iter().map(|u| u.1).sum::<u32>(), 9012);
        assert_eq!(u16::from_le_bytes([bytes[10], bytes[11]]), 5, "num_buffers");
        assert_eq!(bytes[..10], [0; 10], "no offloads");
        assert_eq!(bytes[NET_HDR_LEN..], f[..]);
    }
}

/// Receive chains of mixed sizes, one of two buffers among them: each
/// frame takes as many as it needs, in ring order, and the next frame
/// starts where it stopped (a short first chain, long ones after it).
#[test]
fn receive_buffers_of_mixed_sizes_are_taken_as_each_frame_needs_them() {
    for packed in [false, true] {
        let mut g = Guest::new(packed);
        for (id, len) in [(0, 512), (1, 4096), (2, 4096)] {
            g.offer(id, DATA + 0x1000 * id as u64, len, WRITE);
        }
        g.offer_two(3, [1024, 1024]);
        for (id, len) in [(4, 2048), (5, 100), (6, 4096), (7, 4096), (8, 4096)] {
            g.offer(id, DATA + 0x1000 * id as u64, len, WRITE);
        }
        let mut q = g.queue();
        let f = frame(16300);
        let mut laid = Vec::new();
        for (at, len, buffers) in [(0, 5000, 3), (5000, 3000, 2), (8000, 300, 2), (8300, 8000, 2)] {
            let r = deliver(&mut q, g.mem(), &plain(&f[at..at + len]), true, (&mut chains(), 0), None).unwrap();
            assert_eq!(r, Delivery::Done { buffers, guest_copies: 0 }, "packed {packed}, the frame at {at}");
            laid.extend_from_slice(&[0; NET_HDR_LEN]);
            laid.extend_from_slice(&f[at..at + len]);
        }
        let (used, mut bytes) = g.received(&mut q);
        let want = [(0, 512), (1, 4096), (2, 404), (3, 2048), (4, 964), (5, 100), (6, 212), (7, 4096), (8, 3916)];
        assert_eq!(used, want, "packed {packed}");
        let mut k = 0;
        for (i, n) in [(0, 3), (1, 2), (2, 2), (3, 2)] {
            let first = used[..k].iter().map(|e| e.1 as usize).sum::<usize>();
            assert_eq!(u16::from_le_bytes([bytes[first + 10], bytes[first + 11]]), n, "packed {packed}: num_buffers of frame {i}");
            bytes[first..first + NET_HDR_LEN].fill(0);
            k += n as usize;
        }
        assert!(bytes == laid, "packed {packed}: the frames' bytes in order");
        assert_eq!(q.available(g.mem()).unwrap(), 0, "every buffer taken, none twice");
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
    let r = deliver(&mut q, &g.mem, &FrameSource { net_hdr, head: &f, tail: None }, true, (&mut chains(), 0), None).unwrap();
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
        assert_eq!(deliver(&mut q, g.mem(), &plain(&f), true, (&mut chains(), 0), None).unwrap(), Delivery::NoBuffers);
        assert_eq!(q.available(g.mem()).unwrap(), 2, "nothing consumed");
        assert_eq!(deliver(&mut q, g.mem(), &plain(&f[..1500]), false, (&mut chains(), 0), None).unwrap(), Delivery::Done { buffers: 1, guest_copies: 0 });
        assert_eq!(deliver(&mut q, g.mem(), &plain(&f[..3000]), false, (&mut chains(), 0), None).unwrap(), Delivery::NoBuffers, "without MRG_RXBUF one buffer must hold it");
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
        assert_eq!(deliver(&mut qb, b.mem(), &source, true, (&mut chains(), 0), copies).unwrap(), Delivery::Done { buffers: 3, guest_copies: 1 });
        if listed {
            assert_eq!(list.len(), 4, "pieces between both sides' buffer ends");
            list.run(Some(Sender { mem: &a.mem, lines_slow: false }), |out| (out == 3).then_some(b.mem())).1.unwrap();
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
        b.post(6, LIST_BELOW as u32 / 4);
        let mut qb = b.queue();
        let tail = Some((&a.mem, &src, NET_HDR_LEN as u64 + 14, payload.len() as u64 - 14));
        let source = FrameSource { net_hdr: [0; NetHdr::LEN], head: &payload[..14], tail };
        let mut list = CopyList::default();
        assert_eq!(deliver(&mut qb, b.mem(), &source, true, (&mut chains(), 0), Some((&mut list, 3))).unwrap(), Delivery::Done { buffers: 5, guest_copies: 1 });
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
        assert_eq!(deliver(&mut qb, b.mem(), &plain(&frame(3288)), true, (&mut chains(), 0), None).unwrap(), Delivery::Done { buffers: 2, guest_copies: 0 });
        assert_eq!(deliver(&mut qb, b.mem(), &source, true, (&mut chains(), 0), None).unwrap(), Delivery::Done { buffers: 1, guest_copies: 1 });
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
        assert_eq!(deliver(&mut q, g.mem(), &plain(&f), true, (&mut chains(), 0), None).unwrap(), Delivery::NoBuffers);
        // Were the same chains walked again, this broken one would say so;
        // by the short way too, or a guest of long receive chains too short
        // for a broadcast would cost a walk per frame flooded to it.
        g.spoil_first();
        assert_eq!(short(&mut q, g.mem(), &plain(&f), &mut Chain::default(), (&mut CopyList::default(), 0)), Ok(Short::Long(0)), "packed {packed}");
        assert_eq!(deliver(&mut q, g.mem(), &plain(&f), true, (&mut chains(), 0), None).unwrap(), Delivery::NoBuffers, "not walked");
        // New buffers: the ring is walked again (and the broken chain found).
        g.offer(2, DATA + 0x2000, 2048, WRITE);
        assert_eq!(deliver(&mut q, g.mem(), &plain(&f), true, (&mut chains(), 0), None).unwrap(), Delivery::BadChain(ChainError::WrongDirection), "packed {packed}");
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
        assert_eq!(deliver(&mut q, g.mem(), &plain(&f), true, (&mut chains(), 0), None).unwrap(), Delivery::BadChain(ChainError::WrongDirection));
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
    assert_eq!(deliver(&mut q, &g.mem, &plain(&frame(100)), true, (&mut chains(), 0), None).unwrap(), Delivery::Done { buffers: 1, guest_copies: 0 });
    q.publish(&g.mem).unwrap();
    assert_eq!(g.used(0), (0, 112));
}

/// The short way: one receive chain for header and frame, the tail listed
/// for the burst's copy pass like `deliver`'s.
#[test]
fn a_frame_that_fits_one_chain_goes_the_short_way() {
    for packed in [false, true] {
        let payload = frame(1000);
        let (a, src) = sent(&payload);
        let mut g = Guest::new(packed);
        g.post(2, 2048);
        let mut q = g.queue();
        let (mut list, mut chain) = (CopyList::default(), Chain::default());
        let f = FrameSource { net_hdr: [0; NetHdr::LEN], head: &payload[..64], tail: Some((&a.mem, &src, (NET_HDR_LEN + 64) as u64, 936)) };
        let r = short(&mut q, g.mem(), &f, &mut chain, (&mut list, 3));
        assert_eq!(r, Ok(Short::Done(Delivery::Done { buffers: 1, guest_copies: 1 })), "packed {packed}");
        assert!(!list.is_empty(), "the tail listed, not copied");
        list.run(Some(Sender { mem: &a.mem, lines_slow: false }), |_| Some(g.mem())).1.unwrap();
        let (used, bytes) = g.received(&mut q);
        assert_eq!(used, [(0, 1012)]);
        assert_eq!(u16::from_le_bytes([bytes[10], bytes[11]]), 1, "num_buffers");
        assert_eq!(bytes[NET_HDR_LEN..], payload[..]);
    }
}

/// A frame the short way cannot take goes to `deliver` with the chain the
/// short way took, not walked again: a first buffer shorter than header
/// and head, a chain shorter than the frame (it needs mergeable buffers).
#[test]
fn a_frame_that_does_not_fit_one_chain_goes_on_to_deliver_with_the_chain_taken() {
    for packed in [false, true] {
        for (first, frame_len) in [(40u32, 64usize), (1024, 1500)] {
            let mut g = Guest::new(packed);
            g.offer(0, DATA, first, WRITE);
            g.offer(1, DATA + 0x1000, 2048, WRITE);
            let mut q = g.queue();
            let payload = frame(frame_len);
            let (a, src) = sent(&frame(1500));
            let f = FrameSource { net_hdr: [0; NetHdr::LEN], head: &payload[..64], tail: (frame_len > 64).then_some((&a.mem, &src, (NET_HDR_LEN + 64) as u64, frame_len as u64 - 64)) };
            let mut chains = chains();
            let r = short(&mut q, g.mem(), &f, &mut chains[0], (&mut CopyList::default(), 0));
            assert_eq!(r, Ok(Short::Long(1)), "packed {packed}, {first}");
            assert_eq!(q.available(g.mem()).unwrap(), 1, "one chain taken");
            let r = deliver(&mut q, g.mem(), &f, true, (&mut chains, 1), None).unwrap();
            assert_eq!(r, Delivery::Done { buffers: 2, guest_copies: (frame_len > 64) as u16 }, "packed {packed}, {first}");
            let (used, bytes) = g.received(&mut q);
            assert_eq!(used, [(0, first), (1, (NET_HDR_LEN + frame_len) as u32 - first)], "packed {packed}, {first}");
            assert_eq!(bytes[NET_HDR_LEN..], payload[..]);
        }
    }
}

#[test]
fn a_bad_receive_chain_on_the_short_way_goes_back_empty() {
    for packed in [false, true] {
        let mut g = Guest::new(packed);
        g.post(2, 2048);
        g.spoil_first();
        let mut q = g.queue();
        let r = short(&mut q, g.mem(), &plain(&frame(64)), &mut Chain::default(), (&mut CopyList::default(), 0));
        assert_eq!(r, Ok(Short::Done(Delivery::BadChain(ChainError::WrongDirection))), "packed {packed}");
        assert_eq!(g.received(&mut q).0, [(0, 0)]);
    }
}

/// The short way whole: a chain taken, then filled.
fn short<Q: RingOps>(q: &mut Q, mem: &GuestMemory, frame: &FrameSource, chain: &mut Chain, copies: (&mut CopyList, u16)) -> Result<Short, RingError> {
    match take_short(q, mem, NET_HDR_LEN as u64 + frame.len(), chain)? {
        Ok(()) => fill_short(q, mem, frame, chain, copies),
        Err(s) => Ok(s),
    }
}
