//! Packed rings from a hostile guest: every malformed chain is refused with
//! its reason and returned empty, and the queue goes on; a chain with no
//! end to trust breaks the queue.
use super::packed_tests::{pop, spans, RX, SIZE, TX};
use super::test_guest::DATA;
use super::test_packed::{avail_flags, PackedGuest, Raw};
use super::*;

const NEXT: u16 = VRING_DESC_F_NEXT;
const WRITE: u16 = VRING_DESC_F_WRITE;
const INDIRECT: u16 = VRING_DESC_F_INDIRECT;
/// Where the tests put an indirect table.
const TABLE: u64 = DATA + 0x8000;

fn with_indirect() -> PackedGuest {
    let mut g = PackedGuest::new(SIZE);
    g.features.indirect = true;
    g
}

/// `n` one-byte read-only table entries, with the junk flags DPDK's virtio
/// PMD leaves in them (NEXT, AVAIL): ignored.
fn one_byte_table(n: usize) -> Vec<Raw> {
    (0..n).map(|i| (DATA + i as u64, 1, 0, NEXT | VRING_PACKED_DESC_F_AVAIL)).collect()
}

#[test]
fn an_indirect_table_is_walked_in_order() {
    let mut g = with_indirect();
    g.table(TABLE, &[(DATA, 12, 9, NEXT), (DATA + 0x100, 1000, 0, NEXT | VRING_PACKED_DESC_F_AVAIL), (DATA + 0x800, 500, 0, 0)]);
    // The INDIRECT descriptor's own WRITE flag means nothing (2.7.7).
    g.offer_indirect(2, TABLE, 3, WRITE);
    g.table(TABLE + 0x100, &[(DATA + 0x1000, 2048, 0, WRITE), (DATA + 0x2000, 2048, 0, WRITE)]);
    g.offer_indirect(5, TABLE + 0x100, 2, 0);
    let mut q = g.queue();
    let (r, c) = pop(&g, &mut q, TX);
    assert_eq!(r, Ok(Pop::Chain));
    assert_eq!(spans(&c), [(Gpa(DATA), 12), (Gpa(DATA + 0x100), 1000), (Gpa(DATA + 0x800), 500)]);
    assert_eq!((c.head, c.len(), c.descriptors()), (2, 1512, 3), "the id in the ring, not the table");
    let (r, c) = pop(&g, &mut q, RX);
    assert_eq!((r, c.head, c.len()), (Ok(Pop::Chain), 5, 4096));
    // One slot each.
    q.add_used(&g.mem, 5, 4096).unwrap();
    q.add_used(&g.mem, 2, 0).unwrap();
    q.publish(&g.mem).unwrap();
    assert_eq!((g.used().map(|u| u.0), g.used().map(|u| u.0)), (Some(5), Some(2)));
    assert_eq!(q.indices(), (0x8002, 0x8002));
    // The largest table a chain may have.
    g.table(TABLE, &one_byte_table(MAX_DESCS));
    g.offer_indirect(1, TABLE, MAX_DESCS as u32, 0);
    let (r, c) = pop(&g, &mut q, TX);
    assert_eq!((r, c.descriptors()), (Ok(Pop::Chain), MAX_DESCS));
}

#[test]
fn every_bad_chain_is_refused_returned_and_the_queue_goes_on() {
    // (what, the chain the guest offers as id 1, direction, reason)
    type Case = (&'static str, Box<dyn Fn(&mut PackedGuest)>, Direction, ChainError);
    let one = |bufs: Vec<(u64, u32, u16)>| move |g: &mut PackedGuest| _ = g.offer(1, &bufs);
    let table = |entries: Vec<Raw>, len: u32, flags: u16| {
        move |g: &mut PackedGuest| {
            g.table(TABLE, &entries);
            g.offer(1, &[(TABLE, len, INDIRECT | flags)]);
        }
    };
    let two = || vec![(DATA, 64, 0, 0), (DATA + 0x100, 64, 0, 0)];
    let cases: Vec<Case> = vec![
        ("empty buffer", Box::new(one(vec![(DATA, 0, 0)])), TX, ChainError::BadLength),
        ("empty buffer after a good one", Box::new(one(vec![(DATA, 64, WRITE), (DATA + 0x100, 0, WRITE)])), RX, ChainError::BadLength),
        ("WRITE on a tx buffer", Box::new(one(vec![(DATA, 64, 0), (DATA, 64, WRITE)])), TX, ChainError::WrongDirection),
        ("read-only rx buffer", Box::new(one(vec![(DATA, 64, 0)])), RX, ChainError::WrongDirection),
        ("past the end of memory", Box::new(one(vec![(0x3ff00, 0x200, 0)])), TX, ChainError::OutsideMemory),
        ("in the hole before memory", Box::new(one(vec![(0x10, 4, 0)])), TX, ChainError::OutsideMemory),
        ("address overflow", Box::new(one(vec![(u64::MAX - 2, 16, 0)])), TX, ChainError::OutsideMemory),
        ("the first error counts", Box::new(one(vec![(DATA, 64, WRITE), (DATA, 0, 0)])), TX, ChainError::WrongDirection),
        ("id beyond the ring", Box::new(|g: &mut PackedGuest| _ = g.offer(SIZE, &[(DATA, 64, 0)])), TX, ChainError::HeadOutOfRange),
        ("id beyond the ring before a bad buffer", Box::new(|g: &mut PackedGuest| _ = g.offer(0xffff, &[(DATA, 0, 0)])), TX, ChainError::HeadOutOfRange),
        ("indirect not negotiated", Box::new(table(two(), 32, 0)), TX, ChainError::Indirect),
        ("table length 0", Box::new(table(two(), 0, 0)), TX, ChainError::BadIndirect),
        ("table length 24", Box::new(table(two(), 24, 0)), TX, ChainError::BadIndirect),
        ("INDIRECT with NEXT", Box::new(one(vec![(TABLE, 32, INDIRECT), (DATA, 64, 0)])), TX, ChainError::BadIndirect),
        ("INDIRECT after a buffer", Box::new(one(vec![(DATA, 64, 0), (TABLE, 32, INDIRECT)])), TX, ChainError::BadIndirect),
        ("table past the end of memory", Box::new(one(vec![(0x3fff0, 32, INDIRECT)])), TX, ChainError::OutsideMemory),
        ("table address overflow", Box::new(one(vec![(u64::MAX - 8, 16, INDIRECT)])), TX, ChainError::OutsideMemory),
        ("nested", Box::new(table(vec![(DATA, 64, 0, 0), (TABLE + 0x100, 32, 0, INDIRECT)], 32, 0)), TX, ChainError::BadIndirect),
        ("read-only in a receive table", Box::new(table(vec![(DATA, 64, 0, 0)], 16, WRITE)), RX, ChainError::WrongDirection),
        ("empty buffer in the table", Box::new(table(vec![(DATA, 64, 0, 0), (DATA, 0, 0, 0)], 32, 0)), TX, ChainError::BadLength),
        ("buffer outside memory in the table", Box::new(table(vec![(0x3ff00, 0x200, 0, 0)], 16, 0)), TX, ChainError::OutsideMemory),
        ("more than MAX_DESCS entries", Box::new(table(one_byte_table(MAX_DESCS + 1), 16 * (MAX_DESCS as u32 + 1), 0)), TX, ChainError::TooLong),
    ];
    for (what, setup, dir, want) in cases {
        let mut g = PackedGuest::new(SIZE);
        g.features.indirect = what != "indirect not negotiated";
        setup(&mut g);
        let head = *g.slots.keys().next().unwrap();
        let good = if dir == RX { WRITE } else { 0 };
        g.offer(3, &[(DATA, 60, good)]);
        let mut q = g.queue();
        assert_eq!(pop(&g, &mut q, dir).0, Ok(Pop::Bad { head, err: want }), "{what}");
        let (r, c) = pop(&g, &mut q, dir);
        assert_eq!((r, c.head), (Ok(Pop::Chain), 3), "{what}: the queue goes on after all the bad chain's slots");
        // Returned empty, as the datapath does; an id beyond the ring has
        // nothing to return to.
        q.add_used(&g.mem, head, 0).unwrap();
        q.add_used(&g.mem, 3, 0).unwrap();
        q.publish(&g.mem).unwrap();
        let back: Vec<u16> = std::iter::from_fn(|| g.used()).map(|u| u.0).collect();
        assert_eq!(back, if head < SIZE { vec![head, 3] } else { vec![3] }, "{what}");
    }
}

/// DPDK's virtio PMD sends a multi-segment frame through an indirect table
/// whose header entry it preset with WRITE: read, not refused (every frame
/// over one mbuf was lost on packed rings).
#[test]
fn regression_write_in_a_transmit_table_is_not_held_against_the_guest() {
    let mut g = PackedGuest::new(SIZE);
    g.features.indirect = true;
    g.table(TABLE, &[(DATA, 12, 0, WRITE), (DATA + 0x100, 64, 0, 0)]);
    g.offer(1, &[(TABLE, 32, INDIRECT)]);
    let mut q = g.queue();
    let (r, c) = pop(&g, &mut q, TX);
    assert_eq!((r, c.len()), (Ok(Pop::Chain), 76));
}

/// The ring is 128 slots, but a chain keeps at most MAX_DESCS buffers; a
/// longer one is followed to its end (its slots consumed) and refused.
#[test]
fn a_chain_is_capped_at_max_descs() {
    for (n, want) in [(MAX_DESCS, None), (MAX_DESCS + 1, Some(ChainError::TooLong)), (127, Some(ChainError::TooLong))] {
        let mem = GuestMemory::new_owned(&[(0x1000, 0x3f000)]);
        let mut g = PackedGuest::with_rings(mem, 128, [0x8000, 0x2000, 0x3000]);
        let bufs: Vec<_> = (0..n).map(|i| (DATA + i as u64, 1, 0)).collect();
        g.offer(7, &bufs);
        g.offer(8, &[(DATA, 64, 0)]);
        let mut q = g.queue();
        let (r, c) = pop(&g, &mut q, TX);
        match want {
            None => assert_eq!((r, c.len(), c.descriptors()), (Ok(Pop::Chain), n as u64, n)),
            Some(err) => assert_eq!(r, Ok(Pop::Bad { head: 7, err }), "{n} descriptors"),
        }
        assert_eq!(pop(&g, &mut q, TX).1.head, 8, "{n} descriptors");
    }
}

#[test]
fn an_id_still_in_flight_is_refused_and_goes_back_once() {
    let mut g = PackedGuest::new(SIZE);
    g.offer(1, &[(DATA, 64, 0)]);
    g.offer(1, &[(DATA + 0x100, 64, 0), (DATA + 0x200, 64, 0)]);
    let mut q = g.queue();
    assert_eq!(pop(&g, &mut q, TX).0, Ok(Pop::Chain));
    assert_eq!(pop(&g, &mut q, TX).0, Ok(Pop::Bad { head: 1, err: ChainError::HeadOutOfRange }));
    q.add_used(&g.mem, 1, 0).unwrap();
    q.add_used(&g.mem, 1, 0).unwrap();
    q.publish(&g.mem).unwrap();
    g.slots.insert(1, 1);
    assert_eq!((g.used().map(|u| u.0), g.used()), (Some(1), None), "once: the guest named it twice");
    assert_eq!(q.indices(), (0x8003, 0x8001), "the refused chain's slots are the guest's loss");
    g.offer(1, &[(DATA, 64, 0)]);
    assert_eq!(pop(&g, &mut q, TX).0, Ok(Pop::Chain), "back, the id may come again");
}

/// In order, the batch goes back up to where the switch took, the refused
/// chain's slots with it: the used position follows the avail one, not the
/// chains' own slots (a sum of which left those two behind).
#[test]
fn regression_an_in_order_batch_goes_back_whole_past_an_id_still_in_flight() {
    let mut g = PackedGuest::new(SIZE);
    g.offer(1, &[(DATA, 64, 0)]);
    g.offer(1, &[(DATA + 0x100, 64, 0), (DATA + 0x200, 64, 0)]);
    g.offer(2, &[(DATA + 0x300, 64, 0)]);
    let mut q = g.queue();
    assert_eq!(pop(&g, &mut q, TX).0, Ok(Pop::Chain));
    assert_eq!(pop(&g, &mut q, TX).0, Ok(Pop::Bad { head: 1, err: ChainError::HeadOutOfRange }));
    assert_eq!(pop(&g, &mut q, TX).0, Ok(Pop::Chain));
    q.add_used_in_order(&g.mem, &[1, 1, 2]).unwrap();
    q.publish(&g.mem).unwrap();
    assert_eq!(g.read(0).2, 2, "one used descriptor, the last chain's");
    assert_eq!(q.indices(), (0x8004, 0x8004));
    g.offer(1, &[(DATA, 64, 0)]);
    assert_eq!(pop(&g, &mut q, TX).0, Ok(Pop::Chain), "back, the id may come again");
}

#[test]
fn a_chain_with_no_end_to_trust_breaks_the_queue() {
    // (what, the descriptors exactly as written, ring size)
    let wrong_lap = avail_flags(false);
    let cases: [(&str, Vec<Raw>, u16); 4] = [
        ("second descriptor not available", vec![(DATA, 64, 0, NEXT | avail_flags(true)), (DATA, 64, 0, wrong_lap)], SIZE),
        ("second descriptor used", vec![(DATA, 64, 0, NEXT | avail_flags(true)), (DATA, 64, 0, VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED)], SIZE),
        ("NEXT on every descriptor of the ring", (0..4).map(|_| (DATA, 64, 0, NEXT | avail_flags(true))).collect(), 4),
        ("NEXT round a ring of one", vec![(DATA, 64, 0, NEXT | avail_flags(true))], 1),
    ];
    for (what, descs, size) in cases {
        let mut g = PackedGuest::new(size);
        g.offer_raw(&descs, false);
        let mut q = g.queue();
        assert!(matches!(pop(&g, &mut q, TX).0, Err(RingError::BrokenChain { slot: _ })), "{what}");
    }
}
