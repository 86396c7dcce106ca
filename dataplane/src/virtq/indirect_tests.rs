//! Indirect tables, the descriptor cap, and a random-ring model test.
use super::tests::{guest, pop, Guest, SIZE};
use super::*;
use crate::test_rng::Rng;

use super::test_guest::{RawDesc, TestGuest, AVAIL, DATA, DESC};

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
