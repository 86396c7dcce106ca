use super::*;

use super::test_guest::{RawDesc, TestGuest, AVAIL, DATA, DESC, USED};

const SIZE: u16 = 8;
type Guest = TestGuest;

fn guest() -> Guest {
    TestGuest::new(SIZE)
}

fn pop(g: &Guest, q: &mut SplitQueue, dir: Direction) -> (Result<Pop, RingError>, Chain) {
    let mut c = Chain::default();
    (q.pop(&g.mem, dir, &mut c), c)
}

#[test]
fn a_chain_of_three_and_the_used_ring() {
    let mut g = guest();
    g.desc(0, DATA, 12, VRING_DESC_F_NEXT, 5);
    g.desc(5, DATA + 0x100, 1000, VRING_DESC_F_NEXT, 2);
    g.desc(2, DATA + 0x800, 500, 0, 0);
    g.offer(0);
    let mut q = g.queue();
    assert_eq!(q.available(&g.mem), Ok(1));
    let (r, c) = pop(&g, &mut q, Direction::DeviceReads);
    assert_eq!(r, Ok(Pop::Chain));
    let segs: Vec<_> = c.segments().iter().map(|s| (s.gpa(), s.len())).collect();
    assert_eq!(segs, [(Gpa(DATA), 12), (Gpa(DATA + 0x100), 1000), (Gpa(DATA + 0x800), 500)]);
    assert_eq!((c.head, c.len()), (0, 1512));
    let data: Vec<u8> = (0..1512u32).map(|i| i as u8).collect();
    assert_eq!(c.write(&g.mem, &[&data[..10], &data[10..]]), Some(1512));
    assert_eq!(c.write(&g.mem, &[&data, &[0]]), None, "one byte too many");
    let mut back = Vec::new();
    c.read(&g.mem, 12, &mut back).unwrap();
    assert_eq!(back, data[12..], "read past a 12-byte header spanning a whole descriptor");
    assert_eq!(pop(&g, &mut q, Direction::DeviceReads).0, Ok(Pop::Empty));
    q.add_used(&g.mem, 0, 0).unwrap();
    assert_eq!(g.mem.read_u16(Gpa(USED + 2)).unwrap(), 0, "not visible before publish");
    q.publish(&g.mem).unwrap();
    assert_eq!(g.mem.read_u16(Gpa(USED + 2)).unwrap(), 1);
    assert_eq!(g.used(0), (0, 0));
    assert_eq!(q.indices(), (1, 1));
}

#[test]
fn copy_between_chains_of_different_shapes() {
    let (mut a, mut b) = (guest(), guest());
    // A: 12-byte header alone, then 100 + 900 bytes; B: 300 + 300 + 1000.
    a.desc(0, DATA, 12, VRING_DESC_F_NEXT, 1);
    a.desc(1, DATA + 0x1000, 100, VRING_DESC_F_NEXT, 2);
    a.desc(2, DATA + 0x3000, 900, 0, 0);
    b.desc(0, DATA + 0x500, 300, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 1);
    b.desc(1, DATA + 0x2000, 300, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 2);
    b.desc(2, DATA + 0x4000, 1000, VRING_DESC_F_WRITE, 0);
    a.offer(0);
    b.offer(0);
    let (mut qa, mut qb) = (a.queue(), b.queue());
    let (_, ca) = pop(&a, &mut qa, Direction::DeviceReads);
    let (_, cb) = pop(&b, &mut qb, Direction::DeviceWrites);
    let payload: Vec<u8> = (0..1000u32).map(|i| (i * 3) as u8).collect();
    ca.write(&a.mem, &[&[0; 12], &payload]).unwrap();
    assert_eq!(copy_chain(&a.mem, &ca, 12 + 14, &b.mem, &cb, 12 + 14, 1000 - 14).unwrap(), 986);
    let mut got = Vec::new();
    cb.read(&b.mem, 12 + 14, &mut got).unwrap();
    assert_eq!(got[..986], payload[14..]);
    assert_eq!(copy_chain(&a.mem, &ca, 0, &b.mem, &cb, 1500, 500).unwrap(), 100, "as much as fits");
}

#[test]
fn every_bad_input_is_refused_and_consumed() {
    // (what, how the guest breaks it, head offered, queue direction, reason)
    type Case = (&'static str, Box<dyn Fn(&Guest)>, u16, Direction, ChainError);
    let cases: Vec<Case> = vec![
        ("head out of range", Box::new(|_| {}), SIZE, Direction::DeviceReads, ChainError::HeadOutOfRange),
        ("next out of range", Box::new(|g| g.desc(1, DATA, 64, VRING_DESC_F_NEXT, 99)), 1, Direction::DeviceReads, ChainError::NextOutOfRange),
        (
            "next loop",
            Box::new(|g| {
                g.desc(1, DATA, 64, VRING_DESC_F_NEXT, 2);
                g.desc(2, DATA, 64, VRING_DESC_F_NEXT, 1);
            }),
            1,
            Direction::DeviceReads,
            ChainError::TooLong,
        ),
        ("past the end of memory", Box::new(|g| g.desc(1, 0x3ff00, 0x200, 0, 0)), 1, Direction::DeviceReads, ChainError::OutsideMemory),
        ("in the hole before memory", Box::new(|g| g.desc(1, 0x10, 4, 0, 0)), 1, Direction::DeviceReads, ChainError::OutsideMemory),
        ("address overflow", Box::new(|g| g.desc(1, u64::MAX - 2, 16, 0, 0)), 1, Direction::DeviceReads, ChainError::OutsideMemory),
        ("WRITE on a tx buffer", Box::new(|g| g.desc(1, DATA, 64, VRING_DESC_F_WRITE, 0)), 1, Direction::DeviceReads, ChainError::WrongDirection),
        ("read-only rx buffer", Box::new(|g| g.desc(1, DATA, 64, 0, 0)), 1, Direction::DeviceWrites, ChainError::WrongDirection),
        ("indirect", Box::new(|g| g.desc(1, DATA, 64, VRING_DESC_F_INDIRECT, 0)), 1, Direction::DeviceReads, ChainError::Indirect),
        ("empty buffer", Box::new(|g| g.desc(1, DATA, 0, 0, 0)), 1, Direction::DeviceReads, ChainError::BadLength),
        (
            "empty buffer after a good one",
            Box::new(|g| {
                g.desc(1, DATA, 64, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 2);
                g.desc(2, DATA + 0x100, 0, VRING_DESC_F_WRITE, 0);
            }),
            1,
            Direction::DeviceWrites,
            ChainError::BadLength,
        ),
    ];
    for (what, setup, head, dir, want) in cases {
        let mut g = guest();
        setup(&g);
        g.offer(head);
        g.desc(3, DATA, 60, if dir == Direction::DeviceWrites { VRING_DESC_F_WRITE } else { 0 }, 0);
        g.offer(3);
        let mut q = g.queue();
        assert_eq!(pop(&g, &mut q, dir).0, Ok(Pop::Bad { head, err: want }), "{what}");
        // The bad chain is consumed; the next good one still comes out.
        assert_eq!(pop(&g, &mut q, dir).0, Ok(Pop::Chain), "{what}: the queue goes on");
    }
}

#[test]
fn an_avail_index_that_jumps_breaks_the_ring() {
    let g = guest();
    g.mem.store_u16_release(Gpa(AVAIL + 2), SIZE + 1).unwrap();
    let mut q = g.queue();
    assert_eq!(q.available(&g.mem), Err(RingError::AvailJump { avail: SIZE + 1, consumed: 0 }));
    assert!(pop(&g, &mut q, Direction::DeviceReads).0.is_err());
}

#[test]
fn indices_wrap_and_resume_from_a_base() {
    let mut g = guest();
    g.desc(0, DATA, 64, 0, 0);
    g.avail_idx = 65534;
    let mut q = SplitQueue::new(SIZE, Gpa(DESC), Gpa(AVAIL), Gpa(USED), (65534, 65534), &g.mem).unwrap();
    for _ in 0..4 {
        g.offer(0);
        assert_eq!(pop(&g, &mut q, Direction::DeviceReads).0, Ok(Pop::Chain));
        q.add_used(&g.mem, 0, 64).unwrap();
    }
    q.publish(&g.mem).unwrap();
    assert_eq!(q.indices(), (2, 2));
    assert_eq!(g.mem.read_u16(Gpa(USED + 2)).unwrap(), 2);
    assert!(SplitQueue::new(6, Gpa(DESC), Gpa(AVAIL), Gpa(USED), (0, 0), &g.mem).is_err(), "not a power of two");
}

#[test]
fn notifications() {
    let g = guest();
    let q = g.queue();
    assert!(q.guest_wants_interrupt(&g.mem));
    g.mem.write(Gpa(AVAIL), &VRING_AVAIL_F_NO_INTERRUPT.to_le_bytes()).unwrap();
    assert!(!q.guest_wants_interrupt(&g.mem));
    q.suppress_kicks(&g.mem).unwrap();
    assert_eq!(g.mem.read_u16(Gpa(USED)).unwrap(), VRING_USED_F_NO_NOTIFY);
    assert!(SplitQueue::new(SIZE, Gpa(0x3ffff0), Gpa(AVAIL), Gpa(USED), (0, 0), &g.mem).is_err(), "rings outside memory");
}

#[test]
fn a_buffer_across_two_regions_is_split_and_a_stale_chain_refused() {
    // The test guest's memory ends at 0x40000; a second region follows it.
    let mem = GuestMemory::new_owned(&[(0x1000, 0x3f000), (0x40000, 0x1000)]);
    let mut g = TestGuest::with_memory(mem, SIZE);
    g.desc(0, 0x3ff00, 0x200, 0, 0);
    g.offer(0);
    let mut q = g.queue();
    let (r, c) = pop(&g, &mut q, Direction::DeviceReads);
    assert_eq!(r, Ok(Pop::Chain));
    let segs: Vec<_> = c.segments().iter().map(|s| (s.gpa(), s.len())).collect();
    assert_eq!(segs, [(Gpa(0x3ff00), 0x100), (Gpa(0x40000), 0x100)]);
    let data: Vec<u8> = (0..0x200u32).map(|i| i as u8).collect();
    assert_eq!(c.write(&g.mem, &[&data]), Some(0x200));
    let mut back = Vec::new();
    c.read(&g.mem, 0, &mut back).unwrap();
    assert_eq!(back, data);
    // The same guest memory mapped anew (a memory-table change): spans
    // translated against the old mapping are refused, not followed.
    let other = GuestMemory::new_owned(&[(0x1000, 0x3f000), (0x40000, 0x1000)]);
    assert!(c.read(&other, 0, &mut back).is_err());
    assert_eq!(c.write(&other, &[&data]), None);
}

/// A small deterministic generator, so the property test needs no crate and
/// replays the same cases everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Random descriptor tables and avail rings, hostile on purpose: the walker
/// never panics, never yields a buffer outside guest memory or a chain
/// longer than the ring, and consumes at most what was made available.
#[test]
fn property_random_rings_are_walked_safely() {
    let cases: u64 = std::env::var("VSW_VIRTQ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for case in 0..cases {
        let mut g = guest();
        for i in 0..SIZE {
            let r = rng.next();
            let addr = match r % 4 {
                0 => DATA + (r >> 8) % 0x10000,
                1 => rng.next(),
                2 => 0x1000 + (r >> 8) % 0x30000,
                _ => DATA,
            };
            let len = (rng.next() % 0x3000) as u32;
            let flags = (rng.next() % 8) as u16;
            let next = (rng.next() % (SIZE as u64 + 3)) as u16;
            g.desc(i, addr, len, flags, next);
        }
        let offered = (rng.next() % (SIZE as u64 + 1)) as u16;
        for _ in 0..offered {
            let head = (rng.next() % (SIZE as u64 + 2)) as u16;
            g.offer(head);
        }
        let dir = if case % 2 == 0 { Direction::DeviceReads } else { Direction::DeviceWrites };
        let mut q = g.queue();
        let mut popped = 0;
        loop {
            let (r, c) = pop(&g, &mut q, dir);
            match r {
                Ok(Pop::Empty) => break,
                Ok(Pop::Chain) => {
                    assert!(c.segments().len() <= SIZE as usize);
                    for s in c.segments() {
                        assert!(g.mem.contains(s.gpa(), s.len() as u64), "case {case}: buffer outside memory");
                    }
                }
                Ok(Pop::Bad { .. }) => {}
                Err(e) => panic!("case {case}: ring broken unexpectedly: {e:?}"),
            }
            popped += 1;
            assert!(popped <= offered, "case {case}: consumed more than offered");
        }
        assert_eq!(popped, offered, "case {case}");
    }
}

const NEXT: u16 = VRING_DESC_F_NEXT;
const WRITE: u16 = VRING_DESC_F_WRITE;
const INDIRECT: u16 = VRING_DESC_F_INDIRECT;
/// Where the tests put an indirect table.
const TABLE: u64 = DATA + 0x8000;

fn with_indirect() -> Guest {
    let mut g = guest();
    g.features.indirect = true;
    g
}

fn spans(c: &Chain) -> Vec<(Gpa, u32)> {
    c.segments().iter().map(|s| (s.gpa(), s.len())).collect()
}

/// A table of `n` one-byte buffers chained in order (read-only).
fn one_byte_table(n: usize) -> Vec<RawDesc> {
    (0..n).map(|i| (DATA + i as u64, 1, if i + 1 < n { NEXT } else { 0 }, i as u16 + 1)).collect()
}

#[test]
fn an_indirect_table_is_walked_in_chain_order() {
    let mut g = with_indirect();
    // Entries chained 0 -> 2 -> 1: the chain's order, not the table's.
    g.table(TABLE, &[(DATA, 12, NEXT, 2), (DATA + 0x800, 500, 0, 0), (DATA + 0x100, 1000, NEXT, 1)]);
    // The INDIRECT descriptor's own WRITE flag means nothing (2.6.5.3.1).
    g.desc(4, TABLE, 48, INDIRECT | WRITE, 0);
    g.offer(4);
    let mut q = g.queue();
    let (r, c) = pop(&g, &mut q, Direction::DeviceReads);
    assert_eq!(r, Ok(Pop::Chain));
    assert_eq!(spans(&c), [(Gpa(DATA), 12), (Gpa(DATA + 0x100), 1000), (Gpa(DATA + 0x800), 500)]);
    assert_eq!((c.head, c.len(), c.descriptors()), (4, 1512, 3));
    let data: Vec<u8> = (0..1512u32).map(|i| (i * 7) as u8).collect();
    assert_eq!(c.write(&g.mem, &[&data]), Some(1512));
    let mut back = Vec::new();
    c.read(&g.mem, 0, &mut back).unwrap();
    assert_eq!(back, data);
    // A receive table: its entries writable, the INDIRECT descriptor not.
    g.table(TABLE + 0x100, &[(DATA + 0x1000, 2048, WRITE | NEXT, 1), (DATA + 0x2000, 2048, WRITE, 0)]);
    g.desc(5, TABLE + 0x100, 32, INDIRECT, 0);
    g.offer(5);
    let (r, c) = pop(&g, &mut q, Direction::DeviceWrites);
    assert_eq!(r, Ok(Pop::Chain));
    assert_eq!((c.head, c.len(), c.descriptors()), (5, 4096, 2));
}

/// An INDIRECT descriptor may not have NEXT, so it can only end a chain;
/// after direct descriptors it is accepted too (the spec allows it), and
/// the chain's cap counts both kinds.
#[test]
fn an_indirect_table_may_end_a_direct_chain() {
    let mut g = with_indirect();
    g.table(TABLE, &[(DATA + 0x100, 1000, WRITE | NEXT, 1), (DATA + 0x800, 500, WRITE, 0)]);
    g.desc(0, DATA, 12, WRITE | NEXT, 3);
    g.desc(3, TABLE, 32, INDIRECT, 0);
    g.offer(0);
    let mut q = g.queue();
    let (r, c) = pop(&g, &mut q, Direction::DeviceWrites);
    assert_eq!(r, Ok(Pop::Chain));
    assert_eq!(spans(&c), [(Gpa(DATA), 12), (Gpa(DATA + 0x100), 1000), (Gpa(DATA + 0x800), 500)]);
    assert_eq!(c.descriptors(), 3);
    // The largest table a chain may have, alone: accepted.
    g.table(TABLE + 0x1000, &one_byte_table(MAX_DESCS));
    g.desc(4, TABLE + 0x1000, 16 * MAX_DESCS as u32, INDIRECT, 0);
    g.offer(4);
    let (r, c) = pop(&g, &mut q, Direction::DeviceReads);
    assert_eq!(r, Ok(Pop::Chain));
    assert_eq!((c.len(), c.descriptors()), (MAX_DESCS as u64, MAX_DESCS));
}

#[test]
fn every_bad_indirect_table_is_refused_and_consumed() {
    // (what, how the guest breaks chain 1, indirect negotiated, direction, reason)
    type Case = (&'static str, Box<dyn Fn(&Guest)>, bool, Direction, ChainError);
    let table = |entries: Vec<RawDesc>, len: u32, flags: u16| {
        move |g: &Guest| {
            g.table(TABLE, &entries);
            g.desc(1, TABLE, len, flags, 3);
        }
    };
    let two = || vec![(DATA, 64, NEXT, 1), (DATA + 0x100, 64, 0, 0)];
    let tx = Direction::DeviceReads;
    let cases: Vec<Case> = vec![
        ("not negotiated", Box::new(table(two(), 32, INDIRECT)), false, tx, ChainError::Indirect),
        ("length 0", Box::new(table(two(), 0, INDIRECT)), true, tx, ChainError::BadIndirect),
        ("length 24", Box::new(table(two(), 24, INDIRECT)), true, tx, ChainError::BadIndirect),
        ("INDIRECT with NEXT", Box::new(table(two(), 32, INDIRECT | NEXT)), true, tx, ChainError::BadIndirect),
        ("table past the end of memory", Box::new(|g| g.desc(1, 0x3fff0, 32, INDIRECT, 0)), true, tx, ChainError::OutsideMemory),
        ("table in the hole before memory", Box::new(|g| g.desc(1, 0x10, 32, INDIRECT, 0)), true, tx, ChainError::OutsideMemory),
        ("table address overflow", Box::new(|g| g.desc(1, u64::MAX - 8, 16, INDIRECT, 0)), true, tx, ChainError::OutsideMemory),
        ("nested", Box::new(table(vec![(DATA, 64, NEXT, 1), (TABLE + 0x100, 32, INDIRECT, 0)], 32, INDIRECT)), true, tx, ChainError::BadIndirect),
        // Entry 2 exists in memory, just past the table's length.
        ("next beyond the table", Box::new(table(vec![(DATA, 64, NEXT, 1), (DATA, 64, NEXT, 2), (DATA, 64, 0, 0)], 32, INDIRECT)), true, tx, ChainError::BadIndirect),
        ("loop in the table", Box::new(table(vec![(DATA, 64, NEXT, 1), (DATA, 64, NEXT, 0)], 32, INDIRECT)), true, tx, ChainError::TooLong),
        ("WRITE in a transmit table", Box::new(table(vec![(DATA, 64, NEXT, 1), (DATA, 64, WRITE, 0)], 32, INDIRECT)), true, tx, ChainError::WrongDirection),
        ("read-only in a receive table", Box::new(table(vec![(DATA, 64, 0, 0)], 16, INDIRECT | WRITE)), true, Direction::DeviceWrites, ChainError::WrongDirection),
        ("empty buffer in the table", Box::new(table(vec![(DATA, 64, NEXT, 1), (DATA, 0, 0, 0)], 32, INDIRECT)), true, tx, ChainError::BadLength),
        ("buffer outside memory in the table", Box::new(table(vec![(0x3ff00, 0x200, 0, 0)], 16, INDIRECT)), true, tx, ChainError::OutsideMemory),
        ("more than MAX_DESCS entries", Box::new(table(one_byte_table(MAX_DESCS + 1), 16 * (MAX_DESCS as u32 + 1), INDIRECT)), true, tx, ChainError::TooLong),
        (
            "more than MAX_DESCS with the direct ones",
            Box::new(|g| {
                g.table(TABLE, &one_byte_table(MAX_DESCS));
                g.desc(1, DATA, 64, NEXT, 2);
                g.desc(2, TABLE, 16 * MAX_DESCS as u32, INDIRECT, 0);
            }),
            true,
            tx,
            ChainError::TooLong,
        ),
    ];
    for (what, setup, indirect, dir, want) in cases {
        let mut g = guest();
        g.features.indirect = indirect;
        setup(&g);
        g.offer(1);
        g.desc(3, DATA, 60, if dir == Direction::DeviceWrites { WRITE } else { 0 }, 0);
        g.offer(3);
        let mut q = g.queue();
        assert_eq!(pop(&g, &mut q, dir).0, Ok(Pop::Bad { head: 1, err: want }), "{what}");
        assert_eq!(pop(&g, &mut q, dir).0, Ok(Pop::Chain), "{what}: the queue goes on");
    }
}

/// Our choice: a table is walked through one span, so one that crosses a
/// region boundary is refused (a driver allocates it in one piece).
#[test]
fn an_indirect_table_across_two_regions_is_refused() {
    let mem = GuestMemory::new_owned(&[(0x1000, 0x3f000), (0x40000, 0x1000)]);
    let mut g = TestGuest::with_memory(mem, SIZE);
    g.features.indirect = true;
    g.table(0x3fff0, &[(DATA, 64, NEXT, 1), (DATA + 0x100, 64, 0, 0)]);
    g.desc(0, 0x3fff0, 32, INDIRECT, 0);
    g.offer(0);
    let mut q = g.queue();
    assert_eq!(pop(&g, &mut q, Direction::DeviceReads).0, Ok(Pop::Bad { head: 0, err: ChainError::OutsideMemory }));
}

/// A guest with a 1024-entry ring (too big for the usual layout).
fn big_guest() -> Guest {
    let mem = GuestMemory::new_owned(&[(0x1000, 0x3f000), (0x100000, 0x10000)]);
    TestGuest::with_rings(mem, 1024, [0x100000, 0x104000, 0x105000])
}

/// The ring is 1024 entries, but a chain costs at most MAX_DESCS + 1
/// descriptor loads, and empty descriptors do not get it further.
#[test]
fn a_chain_is_capped_at_max_descs_and_empty_buffers_refused() {
    // (what, descriptor i of the chain 0 -> 1 -> ... -> 1023, reason)
    type Case = (&'static str, fn(u16) -> RawDesc, Option<ChainError>);
    let cases: [Case; 4] = [
        ("1024 empty descriptors", |i| (DATA, 0, if i < 1023 { NEXT } else { 0 }, i + 1), Some(ChainError::BadLength)),
        // From the (MAX_DESCS + 1)th on, every descriptor has the wrong
        // direction: the cap refuses the chain as soon as that one is
        // loaded, before looking at it, and a walk that went on would say so.
        (
            "1024 one-byte descriptors",
            |i| (DATA, 1, if i < 1023 { NEXT } else { 0 } | if i as usize >= MAX_DESCS { WRITE } else { 0 }, i + 1),
            Some(ChainError::TooLong),
        ),
        ("a loop round the whole ring", |i| (DATA, 1, NEXT, (i + 1) % 1024), Some(ChainError::TooLong)),
        ("exactly MAX_DESCS", |i| (DATA + i as u64, 1, if (i as usize) < MAX_DESCS - 1 { NEXT } else { 0 }, i + 1), None),
    ];
    for (what, desc, want) in cases {
        let mut g = big_guest();
        for i in 0..1024 {
            let (addr, len, flags, next) = desc(i);
            g.desc(i, addr, len, flags, next);
        }
        g.offer(0);
        let mut q = g.queue();
        let (r, c) = pop(&g, &mut q, Direction::DeviceReads);
        match want {
            Some(err) => assert_eq!(r, Ok(Pop::Bad { head: 0, err }), "{what}"),
            None => {
                assert_eq!(r, Ok(Pop::Chain), "{what}");
                assert_eq!((c.len(), c.descriptors(), c.segments().len()), (MAX_DESCS as u64, MAX_DESCS, MAX_DESCS), "{what}");
            }
        }
    }
}

fn with_event_idx() -> Guest {
    let mut g = guest();
    g.features.event_idx = true;
    g
}

/// Adds and publishes `n` used entries.
fn publish(g: &Guest, q: &mut SplitQueue, n: u32) {
    for _ in 0..n {
        q.add_used(&g.mem, 0, 0).unwrap();
    }
    q.publish(&g.mem).unwrap();
}

/// The spec's rule, said plainly: interrupt when the used index, going from
/// `old` to `new`, passed `used_event`, i.e. wrote the entry at it.
fn passed(event: u16, old: u16, n: u16) -> bool {
    event.wrapping_sub(old) < n
}

#[test]
fn event_idx_interrupts_exactly_when_used_event_is_passed() {
    // (what, used index at the last check, entries published since, used_event, interrupt?)
    let cases = [
        ("just crossed", 0, 1, 0, true),
        ("not yet", 0, 1, 1, false),
        ("passed before the last check", 10, 3, 9, false),
        ("several, crossed in the middle", 10, 5, 12, true),
        ("several, by the last one", 10, 5, 14, true),
        ("several, one short", 10, 5, 15, false),
        ("wrap: 65535 -> 0", 65535, 1, 65535, true),
        ("wrap: 65534 -> 65535, not yet", 65534, 1, 65535, false),
        ("across the wrap", 65534, 4, 0, true),
        ("across the wrap, still ahead", 65534, 4, 2, false),
        ("far behind", 100, 2, 50, false),
    ];
    for (what, old, n, event, want) in cases {
        assert_eq!(passed(event, old, n), want, "{what}: the test's own rule");
        let g = with_event_idx();
        let mut q = g.queue_at((0, old));
        assert!(q.needs_interrupt(&g.mem), "{what}: the first check interrupts");
        assert!(!q.needs_interrupt(&g.mem), "{what}: nothing new");
        g.set_used_event(event);
        publish(&g, &mut q, n as u32);
        assert_eq!(q.needs_interrupt(&g.mem), want, "{what}");
        assert!(!q.needs_interrupt(&g.mem), "{what}: nothing new since");
    }
    // Every used_event around each step, against the plain rule.
    for old in [0u16, 100, 65530, 65535] {
        for n in 1..=8u16 {
            for d in 0..n + 6 {
                let event = old.wrapping_sub(3).wrapping_add(d);
                let g = with_event_idx();
                let mut q = g.queue_at((0, old));
                q.needs_interrupt(&g.mem);
                g.set_used_event(event);
                publish(&g, &mut q, n as u32);
                assert_eq!(q.needs_interrupt(&g.mem), passed(event, old, n), "old {old}, {n} published, used_event {event}");
            }
        }
    }
}

#[test]
fn event_idx_first_check_and_a_full_wrap_interrupt() {
    let g = with_event_idx();
    let mut q = g.queue();
    g.set_used_event(1000);
    publish(&g, &mut q, 1);
    assert!(q.needs_interrupt(&g.mem), "published since construction: the first check is conservative");
    publish(&g, &mut q, 1);
    assert!(!q.needs_interrupt(&g.mem), "used_event 1000 is far ahead");
    // 65536 entries without a check: the used index is back where it was,
    // which must not read as "nothing published".
    g.set_used_event(5);
    publish(&g, &mut q, 65536);
    assert!(q.needs_interrupt(&g.mem));
    assert!(!q.needs_interrupt(&g.mem));
}

#[test]
fn without_event_idx_the_flag_decides() {
    let g = guest();
    let mut q = g.queue();
    g.set_used_event(1000); // meaningless without EVENT_IDX
    assert!(q.needs_interrupt(&g.mem));
    assert!(q.needs_interrupt(&g.mem), "no memory of the last check: the flag alone");
    g.mem.write(Gpa(AVAIL), &VRING_AVAIL_F_NO_INTERRUPT.to_le_bytes()).unwrap();
    publish(&g, &mut q, 3);
    assert!(!q.needs_interrupt(&g.mem));
    assert_eq!(q.needs_interrupt(&g.mem), q.guest_wants_interrupt(&g.mem));
}

#[test]
fn event_idx_rings_are_two_bytes_longer_and_avail_event_left_alone() {
    let mut g = with_event_idx();
    assert_eq!(g.queue().features(), RingFeatures { indirect: false, event_idx: true });
    assert_eq!(guest().queue().features(), RingFeatures::default());
    // Rings ending exactly at the end of memory: room for the plain layout,
    // not for used_event / avail_event.
    let end = 0x40000u64;
    let (avail, used) = (end - (4 + 2 * SIZE as u64), end - (4 + 8 * SIZE as u64));
    for rings in [[DESC, avail, USED], [DESC, AVAIL, used]] {
        let [d, a, u] = rings.map(Gpa);
        assert!(SplitQueue::new(SIZE, d, a, u, (0, 0), &g.mem).is_ok());
        assert!(SplitQueue::with_features(SIZE, d, a, u, (0, 0), &g.mem, g.features).is_err());
    }
    g.mem.write(Gpa(USED + 4 + 8 * SIZE as u64), &0x1234u16.to_le_bytes()).unwrap();
    let mut q = g.queue();
    q.suppress_kicks(&g.mem).unwrap();
    g.desc(0, DATA, 64, 0, 0);
    g.offer(0);
    assert_eq!(pop(&g, &mut q, Direction::DeviceReads).0, Ok(Pop::Chain));
    publish(&g, &mut q, 1);
    q.needs_interrupt(&g.mem);
    assert_eq!(g.avail_event(), 0x1234, "we never ask for kicks");
    assert_eq!(g.mem.read_u16(Gpa(USED)).unwrap(), VRING_USED_F_NO_NOTIFY);
}

/// What the walker should make of chain `head`, worked out from the guest's
/// bytes read plainly (no spans, no shared code): the chain's bytes and
/// descriptors if it is to be accepted.
fn model(g: &Guest, head: u16, dir: Direction) -> Option<(u64, usize)> {
    let read = |at: u64| -> Option<RawDesc> {
        let mut b = [0u8; 16];
        g.mem.read(Gpa(at), &mut b).ok()?;
        Some((u64::from_le_bytes(b[0..8].try_into().unwrap()), u32::from_le_bytes(b[8..12].try_into().unwrap()), u16::from_le_bytes([b[12], b[13]]), u16::from_le_bytes([b[14], b[15]])))
    };
    let mut sum = (0u64, 0usize);
    let mut buffer = |(addr, len, flags, _): RawDesc| {
        sum = (sum.0 + len as u64, sum.1 + 1);
        sum.1 <= MAX_DESCS && (flags & WRITE != 0) == (dir == Direction::DeviceWrites) && len > 0 && g.mem.contains(Gpa(addr), len as u64)
    };
    let (table, entries, mut idx) = if head < g.size { (DESC, g.size, head) } else { return None };
    let mut in_table = None;
    for _ in 0..entries as usize + MAX_DESCS {
        let (base, n) = in_table.unwrap_or((table, entries));
        let d = read(base + 16 * idx as u64)?;
        if d.2 & INDIRECT != 0 {
            let table_ok = g.features.indirect && in_table.is_none() && d.2 & NEXT == 0 && d.1 > 0 && d.1 % 16 == 0 && d.1 as usize <= 16 * MAX_DESCS && g.mem.contains(Gpa(d.0), d.1 as u64);
            if !table_ok {
                return None;
            }
            in_table = Some((d.0, (d.1 / 16) as u16));
            idx = 0;
            continue;
        }
        if !buffer(d) {
            return None;
        }
        if d.2 & NEXT == 0 {
            return Some(sum);
        }
        if d.3 >= n {
            return None;
        }
        idx = d.3;
    }
    None
}

/// Where the property test puts its four indirect tables, 4 KB apart.
const TABLES: u64 = 0x30000;

/// How one case of the property test draws descriptors: `tidy` cases are
/// mostly well-formed, in-order chains of about `run` descriptors ending in
/// tables of the right length, so that long chains and accepted tables
/// occur, not just early refusals; the others are anything at all.
struct Shape {
    tidy: bool,
    run: u64,
    dir: Direction,
    /// Entries in each table.
    tables: [u16; 4],
}

impl Shape {
    /// True one time in `tidy` (tidy cases) or in `wild` (the others).
    fn odds(&self, rng: &mut Rng, tidy: u64, wild: u64) -> bool {
        rng.next().is_multiple_of(if self.tidy { tidy } else { wild })
    }

    fn write_flag(&self, rng: &mut Rng) -> u16 {
        let right = if self.dir == Direction::DeviceWrites { WRITE } else { 0 };
        if self.odds(rng, 256, 2) {
            WRITE ^ right
        } else {
            right
        }
    }

    /// Entry `i` of a table of `n` (the ring, or an indirect table).
    fn desc(&self, rng: &mut Rng, i: u16, n: u16, in_table: bool) -> RawDesc {
        let far = (rng.next() % (n as u64 + 3)) as u16;
        let next = if self.tidy && !self.odds(rng, 16, 1) { i + 1 } else { far };
        if self.odds(rng, if in_table { 256 } else { 8 }, 8) {
            let t = (rng.next() % 4) as usize;
            let addr = if self.odds(rng, 64, 4) { rng.next() % 0x40000 } else { TABLES + t as u64 * 0x1000 };
            let len = if self.odds(rng, 32, 2) { (rng.next() % 0x500) as u32 } else { 16 * self.tables[t] as u32 };
            let chained = if self.odds(rng, 32, 4) { NEXT } else { 0 };
            return (addr, len, INDIRECT | chained | self.write_flag(rng), next);
        }
        let r = rng.next();
        let addr = match r % 8 {
            0 if !self.tidy => rng.next(),
            1 => 0x1000 + (r >> 8) % 0x3f000,
            _ => DATA + (r >> 8) % 0x10000,
        };
        let len = if self.odds(rng, 128, 6) {
            0
        } else if self.odds(rng, 4, 2) {
            (rng.next() % 0x3000) as u32
        } else {
            1 + (rng.next() % 2048) as u32
        };
        let last = self.odds(rng, self.run, 4) || (self.tidy && i + 1 == n);
        (addr, len, self.write_flag(rng) | if last { 0 } else { NEXT }, next)
    }
}

/// Random descriptor tables and indirect tables, hostile on purpose (empty
/// buffers, bad lengths, nesting, loops, long chains): the walker never
/// panics, accepts exactly the chains the rules allow, and an accepted
/// chain has at most MAX_DESCS descriptors, buffers in guest memory, and
/// the sum of its descriptors' lengths as its length.
#[test]
fn property_random_rings_with_indirect_tables() {
    let cases: u64 = std::env::var("VSW_VIRTQ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (mut accepted, mut longest, mut via_table) = (0, 0, 0);
    let mut reasons = std::collections::HashSet::new();
    let mut c = Chain::default();
    for case in 0..cases {
        let size = if case % 3 == 0 { 128 } else { SIZE };
        let mut g = TestGuest::new(size);
        g.features.indirect = !rng.next().is_multiple_of(4);
        let dir = if case % 2 == 0 { Direction::DeviceReads } else { Direction::DeviceWrites };
        let tables = [(); 4].map(|_| (rng.next() % (MAX_DESCS as u64 + 8)) as u16);
        let shape = Shape { tidy: rng.next().is_multiple_of(2), run: 2 + rng.next() % 100, dir, tables };
        for i in 0..size {
            let (addr, len, flags, next) = shape.desc(&mut rng, i, size, false);
            g.desc(i, addr, len, flags, next);
        }
        for (t, &n) in tables.iter().enumerate() {
            let entries: Vec<RawDesc> = (0..n).map(|i| shape.desc(&mut rng, i, n, true)).collect();
            g.table(TABLES + t as u64 * 0x1000, &entries);
        }
        let tidy = shape.tidy;
        let offered = (rng.next() % (size as u64 + 1)) as u16;
        for _ in 0..offered {
            let head = if tidy { (rng.next() % 4) as u16 } else { (rng.next() % (size as u64 + 2)) as u16 };
            g.offer(head);
        }
        let mut q = g.queue();
        let mut popped = 0;
        let heads: Vec<u16> = (0..offered).map(|k| g.mem.read_u16(Gpa(AVAIL + 4 + 2 * (k % size) as u64)).unwrap()).collect();
        let mut heads = heads.into_iter();
        loop {
            let r = q.pop(&g.mem, dir, &mut c);
            if r == Ok(Pop::Empty) {
                break;
            }
            let head = heads.next().unwrap_or_else(|| panic!("case {case}: consumed more than offered"));
            let want = model(&g, head, dir);
            match r {
                Ok(Pop::Chain) => {
                    assert_eq!(want, Some((c.len(), c.descriptors())), "case {case}: head {head} accepted");
                    assert!(c.descriptors() <= MAX_DESCS && c.segments().len() <= MAX_SEGS);
                    for s in c.segments() {
                        assert!(g.mem.contains(s.gpa(), s.len() as u64), "case {case}: buffer outside memory");
                    }
                    assert_eq!(c.segments().iter().map(|s| s.len() as u64).sum::<u64>(), c.len(), "case {case}");
                    accepted += 1;
                    longest = longest.max(c.descriptors());
                    let d = g.mem.read_u16(Gpa(DESC + 16 * head as u64 + 12)).unwrap();
                    via_table += (d & INDIRECT != 0) as u32;
                }
                Ok(Pop::Bad { head: h, err }) => {
                    assert_eq!((h, want), (head, None), "case {case}: refused for {err:?}");
                    reasons.insert(err);
                }
                r => panic!("case {case}: {r:?}"),
            }
            popped += 1;
        }
        assert_eq!(popped, offered, "case {case}");
    }
    if cases >= 20_000 {
        // The generator reaches what it is meant to.
        assert!(accepted > 10_000 && via_table > 1000 && longest == MAX_DESCS, "{accepted} accepted, {via_table} by a table, longest {longest}");
        let missing: Vec<_> = ChainError::ALL.into_iter().filter(|e| !reasons.contains(e)).collect();
        assert!(missing.is_empty(), "never refused for {missing:?}");
    }
}
