//! The copy-once rings over plain memory: what a guest sees, and when.
use super::rx::read_frame_head;
use super::*;
use crate::copy_list::CopyList;
use crate::offload::{Caps, NetHdr};
use crate::virtio_net::{Delivery, FrameSource, NET_HDR_LEN};
use pmd_bridge::guest_mem::{GuestMemory, Gpa};
use crate::virtq::{Chain, Direction, Pop, Virtqueue};

#[test]
fn regression_tso_segments_must_fit_the_mtu_untagged_or_tagged() {
    use crate::fdb::Fdb;
    use crate::fwd::{decide, Decision, PortView};
    use crate::offload::testutil::Spec;
    use crate::virtq::test_guest::{TestGuest, DATA};
    use crate::vlan::VlanMode;
    // IPv4 (20) and TCP with 12 bytes of options (32): 1448 + 52 = 1500.
    for (vlan, mss, fits) in [(false, 1448u16, true), (false, 1449, false), (true, 1448, true), (true, 1449, false)] {
        let spec = Spec { payload: 20000, vlan, ..Spec::V4 };
        let mut frame = spec.tso_hdr(mss).to_bytes().to_vec();
        frame.extend([0, 0]);
        frame.extend(spec.frame());
        let mut g = TestGuest::new(8);
        g.mem.write(Gpa(DATA), &frame).unwrap();
        g.desc(0, DATA, frame.len() as u32, 0, 0);
        g.offer(0);
        let (mut q, mut c, mut pkt) = (g.queue(), Chain::default(), GuestPkt::default());
        assert_eq!(q.pop(&g.mem, Direction::DeviceReads, &mut c), Ok(Pop::Chain));
        read_frame_head(&g.mem, &c, c.len() - NET_HDR_LEN as u64, Caps::ALL, &mut pkt).unwrap();
        let mode = if vlan { VlanMode::Trunk(Box::new(crate::vlan::VlanSet::new(&[1]))) } else { VlanMode::Access(1) };
        let port = PortView::new("p", 0, 1, mode, 1500);
        let d = decide(&pkt, &port, &[Some(port.clone())], &Fdb::new(64, 300), 1, &mut crate::fwd::BurstMemo::default());
        assert_eq!(d == Decision::Drop(crate::counters::DropReason::Oversize), !fits, "mss {mss}, tagged {vlan}: {d:?}");
    }
}

#[test]
fn regression_a_legacy_guest_is_refused() {
    const VERSION_1: u64 = 1 << 32;
    const MRG_RXBUF: u64 = 1 << 15;
    assert!(GuestFeatures::from_bits(MRG_RXBUF).is_err(), "10- or 12-byte header: not guessed");
    let f = GuestFeatures::from_bits(VERSION_1 | MRG_RXBUF).unwrap();
    assert!(f.mergeable && f.rx == Caps::NONE);
}

/// A frame's header and first bytes read the same whether its first buffer
/// holds all of them (one copy of a fixed size) or they span buffers, and
/// for a frame shorter than the bytes the switch reads.
#[test]
fn a_frames_head_reads_alike_in_one_buffer_or_across_buffers() {
    use crate::virtq::test_guest::{TestGuest, DATA};
    use crate::virtq::VRING_DESC_F_NEXT;
    for len in [14usize, 63, 64, 65, 200] {
        let mut bytes = vec![0u8; NET_HDR_LEN];
        bytes.extend((0..len).map(|i| (i * 13 + 5) as u8));
        // 0: one buffer; else the first buffer ends `split` bytes in.
        for split in [0, 1, NET_HDR_LEN, NET_HDR_LEN + 1, NET_HDR_LEN + 63, NET_HDR_LEN + 64, bytes.len() - 1] {
            if split >= bytes.len() {
                continue;
            }
            let mut g = TestGuest::new(8);
            g.mem.write(Gpa(DATA), &bytes).unwrap();
            if split == 0 {
                g.desc(0, DATA, bytes.len() as u32, 0, 0);
            } else {
                g.desc(0, DATA, split as u32, VRING_DESC_F_NEXT, 1);
                g.desc(1, DATA + split as u64, (bytes.len() - split) as u32, 0, 0);
            }
            g.offer(0);
            let (mut q, mut c, mut pkt) = (g.queue(), Chain::default(), GuestPkt::default());
            assert_eq!(q.pop(&g.mem, Direction::DeviceReads, &mut c), Ok(Pop::Chain));
            read_frame_head(&g.mem, &c, len as u64, Caps::NONE, &mut pkt).unwrap();
            let h = len.min(super::HEAD_PLAIN);
            assert_eq!((pkt.frame_len(), pkt.headers()), (len, &bytes[NET_HDR_LEN..NET_HDR_LEN + h]), "{len} bytes, split at {split}");
        }
    }
}

/// Two guests in plain memory: `a` transmits `frame` in one chain, `b`
/// offers one 2 KB receive buffer; and `a`'s memory.
fn two_guests(frame: &[u8]) -> (CopyOnceRx, CopyOnceTx, Arc<GuestMemory>) {
    use crate::virtq::test_guest::{TestGuest, DATA};
    use crate::virtq::VRING_DESC_F_WRITE;
    const VERSION_1: u64 = 1 << 32;
    const MRG_RXBUF: u64 = 1 << 15;
    let f = GuestFeatures::from_bits(VERSION_1 | MRG_RXBUF).unwrap();
    let mut a = TestGuest::new(8);
    let mut bytes = vec![0u8; NET_HDR_LEN];
    bytes.extend_from_slice(frame);
    a.mem.write(Gpa(DATA), &bytes).unwrap();
    a.desc(0, DATA, bytes.len() as u32, 0, 0);
    a.offer(0);
    let mut b = TestGuest::new(8);
    b.desc(0, DATA, 2048, VRING_DESC_F_WRITE, 0);
    b.offer(0);
    let (qa, qb) = (Virtqueue::Split(a.queue()), Virtqueue::Split(b.queue()));
    let a_mem = Arc::new(a.mem);
    let rx = CopyOnceRx::new(GuestRing::new(Arc::clone(&a_mem), qa, Interrupt::None, 1, f));
    let tx = CopyOnceTx::new(GuestRing::new(Arc::new(b.mem), qb, Interrupt::None, 0, f), 0);
    (rx, tx, a_mem)
}

fn used_idx(mem: &GuestMemory) -> u16 {
    mem.read_u16(Gpa(crate::virtq::test_guest::USED + 2)).unwrap()
}

fn received(mem: &GuestMemory, len: usize) -> Vec<u8> {
    let mut got = vec![0u8; len];
    mem.read(Gpa(crate::virtq::test_guest::DATA + NET_HDR_LEN as u64), &mut got).unwrap();
    got
}

#[test]
fn regression_no_used_index_is_published_before_its_copies_run() {
    let frame: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    let (mut a, mut b, a_mem) = two_guests(&frame);
    let mut pkts = [GuestPkt::default(); 4];
    let drops = crate::counters::PerReason::default();
    let burst = a.recv(&mut pkts, &drops, |_, _| {}).expect("one frame");
    let mut copies = CopyList::default();
    assert!(matches!(burst.deliver(0, &mut b, &mut copies, 7).0, Delivery::Done { .. }));
    assert_eq!(used_idx(b.mem()), 0, "an entry listed, its payload not copied: not visible");
    assert_ne!(received(b.mem(), frame.len()), frame);

    let (done, copied) = copies.run(Some(burst.sender()), |out| (out == 7).then_some(b.mem()));
    copied.unwrap();
    assert_eq!(used_idx(b.mem()), 0, "the copies ran; publishing is a step of its own");
    b.publish(&done);
    assert_eq!((used_idx(b.mem()), received(b.mem(), frame.len())), (1, frame.clone()), "the entry with its bytes");
    assert_eq!(used_idx(&a_mem), 0, "the sender's chain is still lent");
    burst.commit(&done);
    assert_eq!(used_idx(&a_mem), 1);
}

#[test]
fn a_frame_copied_at_once_waits_for_the_bursts_publish_too() {
    let (_, mut b, _) = two_guests(b"unused");
    let frame = [0x5au8; 200];
    let d = b.deliver_one(&FrameSource { net_hdr: [0; NetHdr::LEN], head: &frame, tail: None }, 0, None);
    assert!(matches!(d, Delivery::Done { .. }));
    assert_eq!(used_idx(b.mem()), 0, "an mbuf sent mid-burst must not publish entries listed before it");
    let mut copies = CopyList::default();
    let (done, _) = copies.run(None, |_| None);
    b.publish(&done);
    assert_eq!((used_idx(b.mem()), received(b.mem(), 200)), (1, frame.to_vec()));
}

/// Guest `a` (which may send a partial checksum) transmits `frames`
/// (virtio-net header and bytes), one chain each; guest `b` has the
/// receive descriptors `descs` and offers `heads`, in order. Both with
/// mergeable buffers, neither takes offloads.
fn many_guests(frames: &[(NetHdr, Vec<u8>)], descs: &[(u64, u32, u16, u16)], heads: &[u16]) -> (CopyOnceRx, CopyOnceTx) {
    use crate::virtq::test_guest::{TestGuest, DATA};
    let base = (1 << 32) | (1 << 15);
    let (fa, fb) = (GuestFeatures::from_bits(base | crate::offload::F_CSUM).unwrap(), GuestFeatures::from_bits(base).unwrap());
    let (mut a, mut b) = (TestGuest::new(16), TestGuest::new(16));
    for (k, (hdr, frame)) in frames.iter().enumerate() {
        let at = DATA + 0x2000 * k as u64;
        a.mem.write(Gpa(at), &hdr.to_bytes()).unwrap();
        a.mem.write(Gpa(at + NET_HDR_LEN as u64), frame).unwrap();
        a.desc(k as u16, at, (NET_HDR_LEN + frame.len()) as u32, 0, 0);
        a.offer(k as u16);
    }
    for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
        b.desc(i as u16, addr, len, flags, next);
    }
    for &h in heads {
        b.offer(h);
    }
    let (qa, qb) = (Virtqueue::Split(a.queue()), Virtqueue::Split(b.queue()));
    let rx = CopyOnceRx::new(GuestRing::new(Arc::new(a.mem), qa, Interrupt::None, 1, fa));
    (rx, CopyOnceTx::new(GuestRing::new(Arc::new(b.mem), qb, Interrupt::None, 0, fb), 0))
}

/// Every frame of the burst through `deliver_all`, published: what each
/// delivery did, and `b`'s used entries (head, length).
fn deliver_burst(a: &mut CopyOnceRx, b: &mut CopyOnceTx, n: usize) -> (Vec<Delivery>, Vec<(u32, u32)>) {
    let mut pkts = [GuestPkt::default(); 8];
    let drops = crate::counters::PerReason::default();
    let burst = a.recv(&mut pkts, &drops, |_, _| {}).expect("frames");
    let (mut copies, mut got) = (CopyList::default(), Vec::new());
    burst.deliver_all(0..n, n, b, &mut copies, 7, |_, d, _| got.push(d));
    let (done, copied) = copies.run(Some(burst.sender()), |out| (out == 7).then_some(b.mem()));
    copied.unwrap();
    b.publish(&done);
    burst.commit(&done);
    let used = crate::virtq::test_guest::USED;
    let entries = (0..used_idx(b.mem()) as u64).map(|i| (b.mem().read_u32(Gpa(used + 4 + 8 * i)).unwrap(), b.mem().read_u32(Gpa(used + 8 + 8 * i)).unwrap())).collect();
    (got, entries)
}

/// Receive chains taken ahead for a burst: a frame whose checksum the
/// switch finishes or that needs two of them (mergeable) goes the long
/// way, which pops, so the rest go back first; a chain of two descriptors
/// ends the run (it is popped in its turn). Each frame lands in order in
/// the buffers a pop at a time would have given it.
#[test]
fn chains_taken_ahead_go_to_the_frames_in_ring_order() {
    use crate::offload::testutil::Spec;
    use crate::virtq::test_guest::DATA;
    use crate::virtq::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    const W: u16 = VRING_DESC_F_WRITE;
    let plain = |k: u8, n: usize| (NetHdr::default(), vec![k; n]);
    // A TCP frame with its checksum left to the switch (b takes none).
    let spec = Spec { payload: 100, ..Spec::V4 };
    let partial = NetHdr { flags: crate::offload::NEEDS_CSUM, csum_start: (spec.l2() + spec.l3()) as u16, csum_offset: 16, ..NetHdr::default() };
    let buf = |i: u64| DATA + 0x1000 * i;
    // Heads 0 to 8 single 2 KB buffers; 9 a header buffer and a 2 KB one
    // (10); 11 on single again.
    let mut descs: Vec<_> = (0..9).map(|i| (buf(i), 2048, W, 0)).collect();
    descs.extend([(buf(9), 12, W | VRING_DESC_F_NEXT, 10), (buf(10), 2048, W, 0)]);
    descs.extend((11..14).map(|i| (buf(i), 2048, W, 0)));
    let bursts = [vec![plain(1, 100), (partial, spec.frame()), plain(3, 100)], vec![plain(4, 100), plain(5, 3000), plain(6, 100), plain(7, 100)], vec![plain(8, 100), plain(9, 100), plain(10, 100)]];
    let (_, mut b) = many_guests(&[], &descs, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13]);
    let mut used = Vec::new();
    for frames in &bursts {
        let (got, all) = deliver_burst(&mut many_guests(frames, &[], &[]).0, &mut b, frames.len());
        assert!(got.iter().all(|d| matches!(d, Delivery::Done { .. })), "{got:?}");
        used = all;
    }
    let len = |n: usize| (NET_HDR_LEN + n) as u32;
    let short = len(100);
    let want = [(0, short), (1, len(spec.frame_len())), (2, short), (3, short), (4, 2048), (5, len(3000) - 2048), (6, short), (7, short), (8, short), (9, short), (11, short)];
    assert_eq!(used, want);
    for (frame, head) in [(&bursts[0][2], 2), (&bursts[1][2], 6), (&bursts[2][2], 11)] {
        let mut got = vec![0u8; frame.1.len()];
        b.mem().read(Gpa(buf(head) + NET_HDR_LEN as u64), &mut got).unwrap();
        assert_eq!(got, frame.1, "buffer {head}");
    }
}

/// A guest that negotiated IN_ORDER gets its transmit chains back in the
/// order it offered them, refused ones in their place: a chain too short
/// for a header (refused after the pop) and one whose buffer lies outside
/// its memory (refused by the pop, in the middle of pass 1's first group
/// of 8 or first in its second) wait for the good chains before them, and
/// the pop's refusal ends the burst; each burst goes back as one used
/// entry. Without IN_ORDER both go back at once, ahead of the burst, an
/// entry a chain. Split and packed rings alike.
#[test]
fn regression_an_in_order_guest_gets_its_chains_back_in_order() {
    let all: Vec<u16> = (0..10).collect();
    for packed in [false, true] {
        let case = |outside, in_order| chains_back(packed, in_order, outside);
        assert_eq!(case(3, true), (vec![2, 6], all.clone()), "packed {packed}: in order, the refused in their places");
        assert_eq!(case(8, true), (vec![7, 1], all.clone()), "packed {packed}: refused first in its group, still after the group before");
        assert_eq!(case(3, false), (vec![8], vec![3, 1, 0, 2, 4, 5, 6, 7, 8, 9]), "packed {packed}: the refused first, the burst after");
        assert_eq!(case(8, false), (vec![8], vec![1, 8, 0, 2, 3, 4, 5, 6, 7, 9]), "packed {packed}: the refused first, the burst after");
    }
}

/// Offers chains 0..10 (1 too short for a header, `outside` outside the
/// guest's memory) on a guest transmit ring, takes bursts of up to 16
/// (pass 1 takes them 8 at a time) and commits each: the bursts' sizes and the used entries' chains, in ring
/// order. Each refusal must be counted once.
fn chains_back(packed: bool, in_order: bool, outside: u16) -> (Vec<usize>, Vec<u16>) {
    use crate::virtq::test_guest::{TestGuest, DATA};
    use crate::virtq::test_packed::PackedGuest;
    let f = GuestFeatures::from_bits((1 << 32) | (1 << 15)).unwrap();
    let (mut split, mut pg) = (TestGuest::new(16), PackedGuest::new(16));
    (split.features.in_order, pg.features.in_order) = (in_order, in_order);
    let frame = [0x11u8; 60];
    for k in 0..10u16 {
        let at = DATA + 0x1000 * k as u64;
        let (addr, len) = match k {
            1 => (at, NET_HDR_LEN as u32),
            k if k == outside => (1 << 40, 72),
            _ => (at, (NET_HDR_LEN + frame.len()) as u32),
        };
        for mem in [&split.mem, &pg.mem] {
            mem.write(Gpa(at), &[0u8; NET_HDR_LEN]).unwrap();
            mem.write(Gpa(at + NET_HDR_LEN as u64), &frame).unwrap();
        }
        split.desc(k, addr, len, 0, 0);
        split.offer(k);
        pg.offer(k, &[(addr, len, 0)]);
    }
    let (q, mem, ring) = if packed { (Virtqueue::Packed(pg.queue()), pg.mem, pg.rings[0]) } else { (Virtqueue::Split(split.queue()), split.mem, 0) };
    let mem = Arc::new(mem);
    let mut rx = CopyOnceRx::new(GuestRing::new(Arc::clone(&mem), q, Interrupt::None, 1, f));
    let drops = crate::counters::PerReason::default();
    let mut pkts = [GuestPkt::default(); 16];
    let mut bursts = Vec::new();
    while let Some(burst) = rx.recv(&mut pkts, &drops, |_, _| {}) {
        bursts.push(burst.pkts().len());
        let mut copies = CopyList::default();
        let (done, _) = copies.run(None, |_| None);
        burst.commit(&done);
    }
    let refused: u64 = drops.0.iter().map(|d| d.load(std::sync::atomic::Ordering::Relaxed)).sum();
    assert_eq!(refused, 2, "each refused chain counted once");
    // The used entries as the guest reads them, one where its position
    // reaches (a packed ring's over its slots, a split ring's after its
    // used index). An in-order guest's returns every chain up to the one
    // it names (2.7.9; each chain here is one descriptor, offered in order
    // under ids 0..10), and there is one a burst.
    use crate::virtq::{VRING_PACKED_DESC_F_AVAIL as AVAIL, VRING_PACKED_DESC_F_USED as USED};
    let entry = |p: u64| -> Option<u16> {
        if packed {
            (p < 10 && mem.read_u16(Gpa(ring + 16 * p + 14)).unwrap() & (AVAIL | USED) == AVAIL | USED).then(|| mem.read_u16(Gpa(ring + 16 * p + 12)).unwrap())
        } else {
            (p < used_idx(&mem) as u64).then(|| mem.read_u32(Gpa(crate::virtq::test_guest::USED + 4 + 8 * p)).unwrap() as u16)
        }
    };
    let (mut used, mut entries, mut p) = (Vec::new(), 0, 0);
    while let Some(id) = entry(p) {
        let first = if in_order { used.len() as u16 } else { id };
        used.extend(first..=id);
        p += u64::from(id - first + 1);
        entries += 1;
    }
    assert_eq!(entries, if in_order { bursts.len() } else { 10 }, "packed {packed}, in order {in_order}: used entries");
    (bursts, used)
}

/// Jumbo frames into mergeable 4 KB receive buffers fill the chains taken
/// ahead with the burst's, as many a frame as it needs; where those run
/// out (a chain of two descriptors ends `pop_singles`), at a frame's start
/// or in its middle, the long way pops the rest. Each frame lands in the
/// buffers a pop at a time would have given it, `num_buffers` saying how
/// many. Split and packed rings alike.
#[test]
fn jumbo_frames_fill_the_chains_taken_ahead() {
    use crate::virtq::test_guest::{TestGuest, DATA};
    use crate::virtq::test_packed::PackedGuest;
    use crate::virtq::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE as W, VRING_PACKED_DESC_F_AVAIL, VRING_PACKED_DESC_F_USED};
    let buf = |i: u64| DATA + 0x1000 * i;
    // Heads 0-4, 7, 8 and 11: one 4 KB buffer; 5 and 9: a 12-byte one and
    // a 4 KB one (the next head's).
    let chain = |h: u16| -> Vec<(u64, u32)> {
        match h {
            5 | 9 => vec![(buf(h.into()), 12), (buf(h as u64 + 1), 4096)],
            _ => vec![(buf(h.into()), 4096)],
        }
    };
    let heads = [0u16, 1, 2, 3, 4, 5, 7, 8, 9, 11];
    let frame = |k: u8, n: usize| (NetHdr::default(), (0..n).map(|b| (b as u8).wrapping_mul(7) ^ k).collect::<Vec<u8>>());
    let bursts = [vec![frame(1, 7000), frame(2, 7000), frame(3, 7000), frame(4, 100)], vec![frame(5, 7000), frame(6, 100)]];
    for packed in [false, true] {
        let f = GuestFeatures::from_bits((1 << 32) | (1 << 15)).unwrap();
        let (mut split, mut pg) = (TestGuest::new(16), PackedGuest::new(16));
        let mut slot = 0;
        for h in heads {
            let c = chain(h);
            for (k, &(addr, len)) in c.iter().enumerate() {
                split.desc(h + k as u16, addr, len, W | if k + 1 < c.len() { VRING_DESC_F_NEXT } else { 0 }, h + 1);
            }
            split.offer(h);
            pg.offer(h, &c.iter().map(|&(a, l)| (a, l, W)).collect::<Vec<_>>());
        }
        let (q, mem, ring) = if packed { (Virtqueue::Packed(pg.queue()), pg.mem, pg.rings[0]) } else { (Virtqueue::Split(split.queue()), split.mem, 0) };
        let mut b = CopyOnceTx::new(GuestRing::new(Arc::new(mem), q, Interrupt::None, 0, f), 0);
        let mut delivered = Vec::new();
        for frames in &bursts {
            let mut a = many_guests(frames, &[], &[]).0;
            let mut pkts = [GuestPkt::default(); 8];
            let drops = crate::counters::PerReason::default();
            let burst = a.recv(&mut pkts, &drops, |_, _| {}).expect("frames");
            let mut copies = CopyList::default();
            burst.deliver_all(0..frames.len(), frames.len(), &mut b, &mut copies, 7, |_, d, _| delivered.push(d));
            let (done, copied) = copies.run(Some(burst.sender()), |out| (out == 7).then_some(b.mem()));
            copied.unwrap();
            b.publish(&done);
            burst.commit(&done);
        }
        let two = Delivery::Done { buffers: 2, guest_copies: 1 };
        let one = Delivery::Done { buffers: 1, guest_copies: 1 };
        assert_eq!(delivered, [two, two, two, one, two, one], "packed {packed}");
        // The used entries in order: a packed ring's over the slots of the
        // chains they return, a split ring's after its used index.
        let mem = b.mem();
        let used: Vec<(u16, u32)> = if packed {
            let both = VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED;
            std::iter::from_fn(|| {
                let at = ring + 16 * slot;
                (slot < 16 && mem.read_u16(Gpa(at + 14)).unwrap() & both == both).then(|| {
                    let id = mem.read_u16(Gpa(at + 12)).unwrap();
                    slot += chain(id).len() as u64;
                    (id, mem.read_u32(Gpa(at + 8)).unwrap())
                })
            })
            .collect()
        } else {
            let used = crate::virtq::test_guest::USED;
            (0..used_idx(mem) as u64).map(|i| (mem.read_u32(Gpa(used + 4 + 8 * i)).unwrap() as u16, mem.read_u32(Gpa(used + 8 + 8 * i)).unwrap())).collect()
        };
        let (full, rest, short) = (4096, (NET_HDR_LEN + 7000) as u32 - 4096, (NET_HDR_LEN + 100) as u32);
        assert_eq!(used, [(0, full), (1, rest), (2, full), (3, rest), (4, full), (5, rest), (7, short), (8, full), (9, rest), (11, short)], "packed {packed}");
        // Each frame read back over its buffers, its header first.
        let mut entries = used.iter();
        for (_, bytes) in bursts.iter().flatten() {
            let mut got = Vec::new();
            while got.len() < NET_HDR_LEN + bytes.len() {
                let &(h, mut len) = entries.next().expect("an entry");
                for (addr, room) in chain(h) {
                    let mut part = vec![0u8; room.min(len) as usize];
                    mem.read(Gpa(addr), &mut part).unwrap();
                    len -= part.len() as u32;
                    got.extend(part);
                }
            }
            let num_buffers = u16::from_le_bytes([got[10], got[11]]);
            assert_eq!((num_buffers, &got[NET_HDR_LEN..]), (if bytes.len() > 4096 { 2 } else { 1 }, &bytes[..]), "packed {packed}");
        }
    }
}
