//! Packed rings: chains, wrap-around, batches, out-of-order completion,
//! giving chains back, and what a queue accepts to be built on.
use super::test_guest::{AVAIL, DATA, DESC, USED};
use super::test_packed::{avail_flags, PackedGuest};
use super::*;
use crate::test_rng::Rng;

pub(super) const SIZE: u16 = 8;
pub(super) const TX: Direction = Direction::DeviceReads;
pub(super) const RX: Direction = Direction::DeviceWrites;
const WRITE: u16 = VRING_DESC_F_WRITE;
/// A used descriptor's flags in the first lap (counter 1).
const USED_1: u16 = VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED;

pub(super) fn pop(g: &PackedGuest, q: &mut PackedQueue, dir: Direction) -> (Result<Pop, RingError>, Chain) {
    let mut c = Chain::default();
    (q.pop(&g.mem, dir, &mut c), c)
}

pub(super) fn spans(c: &Chain) -> Vec<(Gpa, u32)> {
    c.segments().iter().map(|s| (s.gpa(), s.len())).collect()
}

#[test]
fn a_chain_of_three_and_its_used_descriptor() {
    let mut g = PackedGuest::new(SIZE);
    g.offer(5, &[(DATA, 12, 0), (DATA + 0x100, 1000, 0), (DATA + 0x800, 500, 0)]);
    let mut q = g.queue();
    assert_eq!(q.available(&g.mem), Ok(3), "descriptors, not chains");
    let (r, c) = pop(&g, &mut q, TX);
    assert_eq!(r, Ok(Pop::Chain));
    assert_eq!(spans(&c), [(Gpa(DATA), 12), (Gpa(DATA + 0x100), 1000), (Gpa(DATA + 0x800), 500)]);
    assert_eq!((c.head, c.len(), c.descriptors()), (5, 1512, 3), "the head is the buffer id");
    let data: Vec<u8> = (0..1512u32).map(|i| i as u8).collect();
    assert_eq!(c.write(&g.mem, &[&data]), Some(1512));
    let mut back = Vec::new();
    c.read(&g.mem, 0, &mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(pop(&g, &mut q, TX).0, Ok(Pop::Empty));
    assert_eq!(q.available(&g.mem), Ok(0));
    q.add_used(&g.mem, 5, 0).unwrap();
    assert_eq!(g.used(), None, "not visible before publish");
    q.publish(&g.mem).unwrap();
    assert_eq!(g.used(), Some((5, 0, USED_1)), "no WRITE: nothing written");
    assert_eq!(g.used(), None);
    assert_eq!(q.indices(), (0x8003, 0x8003));
}

/// Many laps of rings of every shape, chains across the end of the ring:
/// what the driver gets back is what it offered, and both sides agree on
/// where they are.
#[test]
fn wrap_around_for_many_laps() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for size in [1u16, 2, 3, 5, 8, 13] {
        for dir in [TX, RX] {
            let mut g = PackedGuest::new(size);
            let mut q = g.queue();
            let mut laps = 0;
            for round in 0..200 {
                // Chains of 1 to 3 slots while the ring has room.
                let mut free = size;
                let mut offered = Vec::new();
                while free > 0 && offered.len() < 4 {
                    let n = 1 + rng.below(3.min(free as usize)) as u16;
                    let id = offered.len() as u16 % size;
                    if offered.iter().any(|&(i, _)| i == id) {
                        break;
                    }
                    let flags = if dir == RX { WRITE } else { 0 };
                    let bufs: Vec<_> = (0..n).map(|k| (DATA + 0x1000 * k as u64, 100 + k as u32, flags)).collect();
                    let before = g.wrap;
                    g.offer(id, &bufs);
                    laps += (before != g.wrap) as u32;
                    offered.push((id, n));
                    free -= n;
                }
                for &(id, n) in &offered {
                    let (r, c) = pop(&g, &mut q, dir);
                    assert_eq!(r, Ok(Pop::Chain), "size {size} round {round}");
                    assert_eq!((c.head, c.descriptors() as u16), (id, n));
                }
                assert_eq!(pop(&g, &mut q, dir).0, Ok(Pop::Empty));
                for &(id, n) in &offered {
                    q.add_used(&g.mem, id, if dir == RX { n as u32 } else { 0 }).unwrap();
                }
                q.publish(&g.mem).unwrap();
                for &(id, n) in &offered {
                    let (i, len, flags) = g.used().unwrap_or_else(|| panic!("size {size} round {round}: id {id} not used"));
                    let wrote = if dir == RX { WRITE } else { 0 };
                    assert_eq!((i, len, flags & WRITE), (id, if dir == RX { n as u32 } else { 0 }, wrote));
                }
                assert_eq!(g.used(), None);
                let at = g.next | (g.wrap as u16) << 15;
                assert_eq!(q.indices(), (at, at), "size {size} round {round}");
            }
            assert!(laps > 20, "size {size}: {laps} laps");
        }
    }
}

/// Chains of an in-order guest go back as one used descriptor a batch:
/// the last chain's id in the batch's first slot, the rest of the batch's
/// slots as the driver left them, and the used position past them all
/// (where the driver, reading as 2.7.9 says, goes on), lap after lap.
#[test]
fn an_in_order_batch_goes_back_as_one_used_descriptor() {
    let mut rng = Rng(0x5eed_0e0e_0001);
    for size in [1u16, 2, 5, 8, 13] {
        let mut g = PackedGuest::new(size);
        let mut q = g.queue();
        for round in 0..200 {
            let (mut free, mut ids, mut slots) = (size, Vec::new(), 0);
            while free > 0 && ids.len() < 4 {
                let n = 1 + rng.below(3.min(free as usize)) as u16;
                let id = (round * 4 + ids.len() as u16) % size;
                if ids.contains(&id) {
                    break;
                }
                g.offer(id, &(0..n).map(|k| (DATA + 0x1000 * k as u64, 100, 0)).collect::<Vec<_>>());
                ids.push(id);
                (free, slots) = (free - n, slots + n);
            }
            let (first, first_wrap) = (g.used_at, g.used_wrap);
            for _ in &ids {
                assert_eq!(pop(&g, &mut q, TX).0, Ok(Pop::Chain), "size {size} round {round}");
            }
            q.add_used_in_order(&g.mem, &ids).unwrap();
            q.publish(&g.mem).unwrap();
            let (_, len, id, flags) = g.read(first);
            assert_eq!((id, len, flags & USED_1), (*ids.last().unwrap(), 0, if first_wrap { USED_1 } else { 0 }), "size {size} round {round}");
            for k in 1..slots {
                let (_, _, _, flags) = g.read((first + k) % size);
                let lap = first_wrap != (first + k >= size);
                assert_eq!(flags & USED_1, if lap { VRING_PACKED_DESC_F_AVAIL } else { VRING_PACKED_DESC_F_USED }, "size {size} round {round}: slot {k} of the batch left available");
            }
            (g.used_at, g.used_wrap) = (g.next, g.wrap);
            let at = g.next | (g.wrap as u16) << 15;
            assert_eq!(q.indices(), (at, at), "size {size} round {round}");
        }
    }
}

/// A batch is written at `publish`, its first used descriptor flagged
/// last: until then the ring is as the guest left it.
#[test]
fn a_batch_appears_at_once() {
    let mut g = PackedGuest::new(SIZE);
    for id in 0..3 {
        g.offer(id, &[(DATA + 0x1000 * id as u64, 2048, WRITE)]);
    }
    let mut q = g.queue();
    for _ in 0..3 {
        assert_eq!(pop(&g, &mut q, RX).0, Ok(Pop::Chain));
    }
    let before: Vec<_> = (0..SIZE).map(|s| g.read(s)).collect();
    q.add_used(&g.mem, 0, 100).unwrap();
    q.add_used(&g.mem, 1, 200).unwrap();
    q.add_used(&g.mem, 2, 0).unwrap();
    assert_eq!((0..SIZE).map(|s| g.read(s)).collect::<Vec<_>>(), before, "nothing written yet");
    q.publish(&g.mem).unwrap();
    assert_eq!([g.used(), g.used(), g.used(), g.used()], [Some((0, 100, USED_1 | WRITE)), Some((1, 200, USED_1 | WRITE)), Some((2, 0, USED_1)), None]);
    // The next batch starts anew; publishing nothing changes nothing.
    q.publish(&g.mem).unwrap();
    g.offer(0, &[(DATA, 64, WRITE)]);
    assert_eq!(pop(&g, &mut q, RX).0, Ok(Pop::Chain));
    q.add_used(&g.mem, 0, 64).unwrap();
    assert_eq!(g.used(), None);
    q.publish(&g.mem).unwrap();
    assert_eq!(g.used(), Some((0, 64, USED_1 | WRITE)));
}

/// Buffers come back in any order; each used descriptor lands where the
/// driver, moving on by the slots it gave each id, looks for it.
#[test]
fn completion_out_of_order() {
    let mut g = PackedGuest::new(SIZE);
    g.offer(7, &[(DATA, 64, 0), (DATA + 0x100, 64, 0)]);
    g.offer(3, &[(DATA + 0x200, 64, 0)]);
    g.offer(4, &[(DATA + 0x300, 64, 0), (DATA + 0x400, 64, 0), (DATA + 0x500, 64, 0)]);
    let mut q = g.queue();
    let heads: Vec<u16> = (0..3).map(|_| pop(&g, &mut q, TX).1.head).collect();
    assert_eq!(heads, [7, 3, 4]);
    for id in [4, 7] {
        q.add_used(&g.mem, id, 0).unwrap();
    }
    q.publish(&g.mem).unwrap();
    assert_eq!((g.used().map(|u| u.0), g.used().map(|u| u.0)), (Some(4), Some(7)));
    assert_eq!((g.used_at, g.used_wrap), (5, true), "4 took 3 slots, 7 two");
    assert_eq!(g.used(), None, "3 is still in flight");
    q.add_used(&g.mem, 3, 0).unwrap();
    q.publish(&g.mem).unwrap();
    assert_eq!(g.used().map(|u| u.0), Some(3));
    assert_eq!(q.indices(), (0x8006, 0x8006));
}

#[test]
fn an_id_with_nothing_in_flight_writes_nothing() {
    let mut g = PackedGuest::new(SIZE);
    g.offer(2, &[(DATA, 64, 0)]);
    let before = g.read(0);
    let mut q = g.queue();
    q.add_used(&g.mem, 2, 0).unwrap();
    q.add_used(&g.mem, SIZE, 0).unwrap();
    q.add_used(&g.mem, u16::MAX, 0).unwrap();
    q.publish(&g.mem).unwrap();
    assert_eq!(g.read(0), before, "not popped yet");
    assert_eq!(pop(&g, &mut q, TX).0, Ok(Pop::Chain));
    q.add_used(&g.mem, 2, 0).unwrap();
    q.add_used(&g.mem, 2, 0).unwrap();
    q.publish(&g.mem).unwrap();
    assert_eq!((g.used().map(|u| u.0), g.used()), (Some(2), None), "returned once");
    assert_eq!(q.indices(), (0x8001, 0x8001));
}

#[test]
fn unpop_gives_the_last_chains_back() {
    let mut g = PackedGuest::new(SIZE);
    g.offer(0, &[(DATA, 64, WRITE), (DATA + 0x100, 64, WRITE)]);
    g.offer(1, &[(DATA + 0x200, 64, WRITE)]);
    g.offer(2, &[(DATA + 0x300, 64, WRITE), (DATA + 0x400, 64, WRITE), (DATA + 0x500, 64, WRITE)]);
    let mut q = g.queue();
    let popped: Vec<Chain> = (0..3)
        .map(|_| {
            let (r, c) = pop(&g, &mut q, RX);
            assert_eq!(r, Ok(Pop::Chain));
            c
        })
        .collect();
    q.unpop(&popped[1..]);
    assert_eq!(q.indices(), (0x8002, 0x8000));
    // Neither id reads as still in flight when taken again.
    assert_eq!(pop(&g, &mut q, RX).1.head, 1);
    let (r, c) = pop(&g, &mut q, RX);
    assert_eq!((r, c.head, c.descriptors()), (Ok(Pop::Chain), 2, 3));
    assert_eq!(pop(&g, &mut q, RX).0, Ok(Pop::Empty));
    // Across the end of the ring too.
    for id in [0, 1, 2] {
        q.add_used(&g.mem, id, 64).unwrap();
    }
    q.publish(&g.mem).unwrap();
    while g.used().is_some() {}
    g.offer(3, &[(DATA, 64, WRITE), (DATA + 0x100, 64, WRITE), (DATA + 0x200, 64, WRITE), (DATA + 0x300, 64, WRITE)]);
    let (r, c) = pop(&g, &mut q, RX);
    assert_eq!(r, Ok(Pop::Chain));
    assert_eq!(q.indices(), (0x0002, 0x8006));
    q.unpop(&[c]);
    assert_eq!(q.indices(), (0x8006, 0x8006));
    assert_eq!(pop(&g, &mut q, RX).1.head, 3);
}

/// The chains on offer too few for a frame: until the guest makes the
/// next slot available, asking again costs one flags load.
#[test]
fn a_starved_ring_is_not_walked_again_until_the_guest_offers_more() {
    let mut g = PackedGuest::new(SIZE);
    g.offer(0, &[(DATA, 100, WRITE)]);
    let mut q = g.queue();
    let (r, c) = pop(&g, &mut q, RX);
    assert_eq!(r, Ok(Pop::Chain));
    assert_eq!(pop(&g, &mut q, RX).0, Ok(Pop::Empty));
    q.unpop(&[c]);
    q.mark_starved(1000);
    assert_eq!(q.starved(&g.mem, 1000), Ok(true));
    assert_eq!(q.starved(&g.mem, 999), Ok(false), "a smaller frame may fit");
    assert_eq!(q.starved(&g.mem, 5000), Ok(true));
    g.offer(1, &[(DATA + 0x1000, 2048, WRITE)]);
    assert_eq!(q.starved(&g.mem, 1000), Ok(false));
    assert_eq!(q.starved(&g.mem, 1000), Ok(false), "forgotten");
}

#[test]
fn what_a_queue_is_built_on() {
    let g = PackedGuest::new(SIZE);
    let q = |size: u16, rings: [u64; 3], pos: (u16, u16)| {
        let [d, dr, dv] = rings.map(Gpa);
        PackedQueue::new(size, d, dr, dv, pos, &g.mem, RingFeatures::default()).map(|_| ())
    };
    let rings = [DESC, AVAIL, USED];
    assert_eq!(q(SIZE, rings, (0x8000, 0x8000)), Ok(()));
    assert_eq!(q(5, rings, (0x0004, 0x8003)), Ok(()), "any size, any position in it");
    assert_eq!(q(0, rings, (0, 0)), Err("bad ring size"));
    assert_eq!(q(32769, rings, (0, 0)), Err("bad ring size"));
    assert_eq!(q(SIZE, [DESC + 8, AVAIL, USED], (0, 0)), Err("misaligned ring"));
    assert_eq!(q(SIZE, [DESC, AVAIL + 2, USED], (0, 0)), Err("misaligned ring"));
    assert_eq!(q(SIZE, [DESC, AVAIL, USED + 2], (0, 0)), Err("misaligned ring"));
    assert_eq!(q(SIZE, [0x3ff80, AVAIL, USED], (0, 0)), Ok(()), "the ring ends where memory does");
    assert_eq!(q(SIZE, [0x3ff90, AVAIL, USED], (0, 0)), Err("ring outside guest memory"));
    assert_eq!(q(SIZE, [DESC, 0x40000, USED], (0, 0)), Err("ring outside guest memory"));
    assert_eq!(q(SIZE, rings, (0x8008, 0x8000)), Err("ring position beyond the ring"));
    assert_eq!(q(SIZE, rings, (0, 8)), Err("ring position beyond the ring"));
    let big = GuestMemory::new_owned(&[(0x100000, 0x80000)]);
    let b = Gpa(0x100000);
    assert!(PackedQueue::new(32768, b, b, b, (0x7fff, 0xffff), &big, RingFeatures::default()).is_ok(), "the largest ring");
}

#[test]
fn a_virtqueue_is_packed_when_the_guest_negotiated_it() {
    let mut g = PackedGuest::new(SIZE);
    g.offer(4, &[(DATA, 64, 0)]);
    let rings = [DESC, AVAIL, USED].map(Gpa);
    let features = VIRTIO_F_RING_PACKED | VIRTIO_RING_F_EVENT_IDX;
    let mut q = Virtqueue::new(features, SIZE, rings, (0x8000, 0x8000), &g.mem).unwrap();
    assert!(q.is_packed());
    assert_eq!(q.features(), RingFeatures { indirect: false, event_idx: true, in_order: false });
    let mut c = Chain::default();
    assert_eq!((q.pop(&g.mem, TX, &mut c), c.head), (Ok(Pop::Chain), 4));
    q.add_used(&g.mem, 4, 0).unwrap();
    q.publish(&g.mem).unwrap();
    assert_eq!(g.used().map(|u| u.0), Some(4));
    let split = Virtqueue::new(0, SIZE, rings, (0, 0), &g.mem).unwrap();
    assert!(!split.is_packed());
    assert_eq!(Virtqueue::new(VIRTIO_F_RING_PACKED, SIZE, rings, (0x8009, 0), &g.mem).err(), Some("ring position beyond the ring"));
}

#[test]
fn kicks_off_and_the_used_ring_logged_during_a_migration() {
    let mut g = PackedGuest::logged(SIZE);
    let mut q = g.queue();
    q.suppress_kicks(&g.mem).unwrap();
    assert_eq!(g.device_flags(), RING_EVENT_FLAGS_DISABLE);
    assert!(g.mem.is_dirty(Gpa(USED)), "the device area");
    g.offer(0, &[(DATA + 0x4000, 64, WRITE)]);
    let (_, c) = pop(&g, &mut q, RX);
    c.write(&g.mem, &[&[7; 64]]).unwrap();
    q.add_used(&g.mem, 0, 64).unwrap();
    q.publish(&g.mem).unwrap();
    assert!(g.mem.is_dirty(Gpa(DESC)) && g.mem.is_dirty(Gpa(DATA + 0x4000)));
    assert!(!g.mem.is_dirty(Gpa(DATA + 0x6000)));
}

#[test]
fn available_counts_descriptors_a_burst_at_most() {
    let mem = GuestMemory::new_owned(&[(0x1000, 0x3f000)]);
    let mut g = PackedGuest::with_rings(mem, 128, [0x8000, AVAIL, USED]);
    for id in 0..100 {
        g.offer(id, &[(DATA, 64, 0)]);
    }
    let mut q = g.queue();
    assert_eq!(q.available(&g.mem), Ok(64));
    for _ in 0..60 {
        assert_eq!(pop(&g, &mut q, TX).0, Ok(Pop::Chain));
    }
    assert_eq!(q.available(&g.mem), Ok(40));
    q.prefetch_next(&g.mem, 200, UsedAhead::Each);
    q.prefetch_next(&g.mem, 200, UsedAhead::One);
    // Up to the first slot not available, whatever was asked.
    assert_eq!((q.prefetch_buffers(&g.mem, 0..200, 76), q.prefetch_buffers(&g.mem, 0..8, 76)), (40, 8));
    assert_eq!((q.prefetch_buffers(&g.mem, 8..16, 76), q.prefetch_buffers(&g.mem, 36..200, 76), q.prefetch_buffers(&g.mem, 60..200, 76)), (16, 40, 60));
}

/// A batch of more used descriptors than a queue keeps back is still seen
/// only whole.
#[test]
fn a_batch_larger_than_kept_back_appears_at_once() {
    let mem = GuestMemory::new_owned(&[(0x1000, 0x3f000), (0x100000, 0x4000)]);
    let mut g = PackedGuest::with_rings(mem, 1024, [0x100000, AVAIL, USED]);
    for id in 0..600 {
        g.offer(id, &[(DATA, 64, 0)]);
    }
    let mut q = g.queue();
    for id in 0..600 {
        assert_eq!(pop(&g, &mut q, TX).1.head, id);
    }
    for id in (0..600).rev() {
        q.add_used(&g.mem, id, 0).unwrap();
    }
    assert_eq!(g.used(), None);
    q.publish(&g.mem).unwrap();
    let back: Vec<u16> = std::iter::from_fn(|| g.used()).map(|u| u.0).collect();
    assert_eq!(back, (0..600).rev().collect::<Vec<_>>());
}

/// `pop_singles` reads each slot's flags with its descriptor, with no look
/// at the ring first: it takes the singles on offer across the end of the
/// ring into the next lap, and stops at the first slot not available in
/// its lap (one flagged for the lap before) or not a single. `to_take`
/// says only whether there is a first.
#[test]
fn pop_singles_reads_each_slots_flags_and_stops_at_the_first_not_available() {
    let mut g = PackedGuest::new(SIZE);
    let mut q = g.queue();
    let mut out = vec![Chain::default(); 2 * SIZE as usize];
    assert_eq!(q.to_take(&g.mem, 32), Ok(0), "nothing offered");
    for id in 0..6 {
        g.offer(id, &[(DATA + 0x100 * id as u64, 64, WRITE)]);
    }
    assert_eq!(q.to_take(&g.mem, 32), Ok(32), "a chain is there, however many");
    assert_eq!(q.pop_singles(&g.mem, RX, &mut out), 6);
    q.add_used_all(&g.mem, (0..6).map(|id| (id, 64))).unwrap();
    q.publish(&g.mem).unwrap();
    while g.used().is_some() {}
    // Slots 6 and 7 in this lap, 0 and 1 in the next; slot 2 flagged for
    // this lap, which in the next means not offered yet.
    for id in 0..4 {
        g.offer(id, &[(DATA + 0x100 * id as u64, 64, WRITE)]);
    }
    g.raw(2, (DATA, 64, 7, avail_flags(true) | WRITE));
    assert_eq!(q.pop_singles(&g.mem, RX, &mut out), 4);
    assert_eq!(out[..4].iter().map(|c| c.head).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert_eq!(q.indices(), (0x0002, 0x8006), "in the next lap");
    assert_eq!((q.pop_singles(&g.mem, RX, &mut out), q.to_take(&g.mem, 32)), (0, Ok(0)));
    assert_eq!(pop(&g, &mut q, RX).0, Ok(Pop::Empty));
    g.offer(4, &[(DATA, 64, WRITE), (DATA + 0x100, 64, WRITE)]);
    assert_eq!(q.to_take(&g.mem, 32), Ok(32));
    assert_eq!(q.pop_singles(&g.mem, RX, &mut out), 0, "a chain of two is pop's");
    let (r, c) = pop(&g, &mut q, RX);
    assert_eq!((r, c.head, c.descriptors()), (Ok(Pop::Chain), 4, 2));
}
