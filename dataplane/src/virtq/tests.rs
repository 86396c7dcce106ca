use super::*;

use crate::test_rng::Rng;

use super::test_guest::{TestGuest, AVAIL, DATA, DESC, USED};

pub(super) const SIZE: u16 = 8;
pub(super) type Guest = TestGuest;

pub(super) fn guest() -> Guest {
    TestGuest::new(SIZE)
}

pub(super) fn pop(g: &Guest, q: &mut SplitQueue, dir: Direction) -> (Result<Pop, RingError>, Chain) {
    let mut c = Chain::default();
    (q.pop(&g.mem, dir, &mut c), c)
}

/// `prefetch_buffers` reads avail->idx when the heads known fall short of
/// those asked for, and says how many it looked at.
#[test]
fn buffers_are_taken_ahead_for_every_head_offered() {
    let mut g = guest();
    for head in 0..8 {
        g.desc(head, DATA + 0x100 * head as u64, 64, VRING_DESC_F_WRITE, 0);
    }
    (0..6).for_each(|head| g.offer(head));
    let mut q = g.queue();
    assert_eq!((q.prefetch_buffers(&g.mem, 0..4, 76), q.prefetch_buffers(&g.mem, 0..32, 76)), (4, 6));
    // From further on: as far as the heads offered.
    assert_eq!((q.prefetch_buffers(&g.mem, 2..4, 76), q.prefetch_buffers(&g.mem, 4..32, 76), q.prefetch_buffers(&g.mem, 8..32, 76)), (4, 6, 8));
    assert_eq!(pop(&g, &mut q, Direction::DeviceWrites).0, Ok(Pop::Chain));
    assert_eq!(q.prefetch_buffers(&g.mem, 0..4, 76), 4);
    (6..8).for_each(|head| g.offer(head));
    assert_eq!(q.prefetch_buffers(&g.mem, 0..32, 76), 7);
    assert_eq!(q.to_take(&g.mem, 32), Ok(7));
}

#[test]
fn a_chain_of_three_and_the_used_ring() {
    let mut g = guest();
    g.desc(0, DATA, 12, VRING_DESC_F_NEXT, 5);
    g.desc(5, DATA + 0x100, 1000, VRING_DESC_F_NEXT, 2);
    g.desc(2, DATA + 0x800, 500, 0, 0);
    let mut q = g.queue();
    assert_eq!(q.to_take(&g.mem, 32), Ok(0), "nothing offered");
    g.offer(0);
    assert_eq!((q.available(&g.mem), q.to_take(&g.mem, 32)), (Ok(1), Ok(1)), "those offered, up to the most asked");
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
    assert_eq!(copy_chain(&a.mem, &mut Cursor::new(&ca, 12 + 14), &b.mem, &cb, 12 + 14, 1000 - 14).unwrap(), 986);
    let mut got = Vec::new();
    cb.read(&b.mem, 12 + 14, &mut got).unwrap();
    assert_eq!(got[..986], payload[14..]);
    assert_eq!(copy_chain(&a.mem, &mut Cursor::new(&ca, 0), &b.mem, &cb, 1500, 500).unwrap(), 100, "as much as fits");
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

#[test]
fn regression_misaligned_rings_are_refused() {
    let g = guest();
    let q = |d: u64, a: u64, u: u64| SplitQueue::new(SIZE, Gpa(d), Gpa(a), Gpa(u), (0, 0), &g.mem).map(|_| ());
    assert_eq!(q(DESC, AVAIL, USED), Ok(()));
    assert_eq!(q(DESC + 8, AVAIL, USED), Err("misaligned ring"));
    assert_eq!(q(DESC, AVAIL + 1, USED), Err("misaligned ring"));
    assert_eq!(q(DESC, AVAIL, USED + 2), Err("misaligned ring"));
}

#[test]
fn a_run_of_used_entries_is_what_one_at_a_time_writes() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for case in 0..300 {
        let (ga, gb) = (guest(), guest());
        let start = rng.below(1 << 16) as u16;
        let (mut qa, mut qb) = (ga.queue_at((start, start)), gb.queue_at((start, start)));
        let heads: Vec<u16> = (0..rng.below(2 * SIZE as usize + 1)).map(|_| rng.below(SIZE as usize) as u16).collect();
        qa.add_used_all(&ga.mem, heads.iter().map(|&h| (h, 0))).unwrap();
        for &h in &heads {
            qb.add_used(&gb.mem, h, 0).unwrap();
        }
        qa.publish(&ga.mem).unwrap();
        qb.publish(&gb.mem).unwrap();
        assert_eq!(qa.indices(), qb.indices(), "case {case}");
        assert_eq!(ga.mem.read_u16(Gpa(USED + 2)), gb.mem.read_u16(Gpa(USED + 2)), "case {case}");
        for i in 0..SIZE {
            assert_eq!(ga.used(i), gb.used(i), "case {case}: entry {i}");
        }
    }
}
