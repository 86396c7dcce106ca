//! Taking chains in batches (`pop_many`, `pop_singles`) against taking them
//! one `pop` at a time: over random rings of good and hostile chains, both
//! kinds, the same chains, the same refusals, the same used entries and
//! indices; and a run taken by `pop_singles` goes back whole with `unpop`.
use super::packed_tests::{RX, TX};
use super::test_guest::{TestGuest, DATA};
use super::test_packed::{Buf, PackedGuest};
use super::*;
use crate::test_rng::Rng;

const CASES: u64 = 3_000;

/// What a chain came out as (head, bytes, descriptors, spans), to compare
/// two ways of taking it.
type Shape = (u16, u64, usize, Vec<(Gpa, u32)>);
/// Every chain taken, the refusals, and the error that ended it if any.
type Taken = (Vec<Shape>, Refused, Option<RingError>);

fn shape(c: &Chain) -> Shape {
    (c.head, c.len(), c.descriptors(), c.segments().iter().map(|s| (s.gpa(), s.len())).collect())
}

/// Every chain one `pop` at a time, bad ones back at once: (chains,
/// refused, the first error).
fn one_by_one<Q: RingOps>(q: &mut Q, mem: &GuestMemory, dir: Direction) -> Taken {
    let (mut chains, mut refused, mut c) = (Vec::new(), Refused::default(), Chain::default());
    loop {
        match q.pop(mem, dir, &mut c) {
            Ok(Pop::Chain) => chains.push(shape(&c)),
            Ok(Pop::Empty) => return (chains, refused, None),
            Ok(Pop::Bad { head, err }) => {
                refused.add(err);
                q.add_used(mem, head, 0).unwrap();
            }
            Err(e) => return (chains, refused, Some(e)),
        }
    }
}

/// Every chain by `pop_many`, in batches of random sizes; half the rings
/// in order, a bad chain held after good ones given back after the batch
/// (as `CopyOnceRx` returns it, after the batch's good chains).
fn in_batches<Q: RingOps>(q: &mut Q, mem: &GuestMemory, dir: Direction, rng: &mut Rng) -> Taken {
    let (mut chains, mut refused) = (Vec::new(), Refused::default());
    let mut out = vec![Chain::default(); 10];
    let in_order = rng.below(2) == 0;
    loop {
        let k = 1 + rng.below(out.len());
        let mut held = None;
        let got = q.pop_many(mem, dir, &mut out[..k], &mut refused, in_order.then_some(&mut held));
        if let Some(head) = held {
            q.add_used(mem, head, 0).unwrap();
        }
        match got {
            Ok(0) if held.is_none() => return (chains, refused, None),
            Ok(n) => chains.extend(out[..n].iter().map(shape)),
            Err(e) => return (chains, refused, Some(e)),
        }
    }
}

/// `pop_singles` takes a run of one-buffer chains, each as `pop` takes it,
/// and `unpop` gives the run back: the queue is where it was.
fn singles_go_back<Q: RingOps + Clone>(q: &Q, mem: &GuestMemory, dir: Direction, k: usize, case: u64) {
    let (mut a, mut b) = (q.clone(), q.clone());
    let mut out = vec![Chain::default(); k];
    let n = a.pop_singles(mem, dir, &mut out);
    let mut c = Chain::default();
    for (i, got) in out[..n].iter().enumerate() {
        assert_eq!(got.descriptors(), 1, "case {case}: chain {i} of the run");
        assert_eq!(b.pop(mem, dir, &mut c), Ok(Pop::Chain), "case {case}: chain {i} of the run");
        assert_eq!(shape(got), shape(&c), "case {case}: chain {i} of the run");
    }
    a.unpop(&out[..n]);
    assert_eq!(a.indices(), q.indices(), "case {case}: given back");
    let mut c2 = Chain::default();
    let mut fresh = q.clone();
    assert_eq!((a.pop(mem, dir, &mut c).map(|p| (p, shape(&c)))), fresh.pop(mem, dir, &mut c2).map(|p| (p, shape(&c2))), "case {case}: after the run went back");
}

/// Two queues over two guests made alike: `a` taken in batches, `b` a pop
/// at a time (after checking that a run of `a`'s goes back whole). They
/// must agree; what `b` took.
fn both_ways<Q: RingOps + Clone>((qa, ma): (&mut Q, &GuestMemory), (qb, mb): (&mut Q, &GuestMemory), dir: Direction, rng: &mut Rng, case: u64) -> Vec<Shape> {
    singles_go_back(qa, ma, dir, 1 + rng.below(8), case);
    let want = one_by_one(qb, mb, dir);
    assert_eq!(in_batches(qa, ma, dir, rng), want, "case {case}");
    assert_eq!(qa.indices(), qb.indices(), "case {case}");
    want.0
}

/// A split descriptor: mostly one good buffer, else a chain or anything.
fn split_desc(rng: &mut Rng, right: u16) -> (u64, u32, u16, u16) {
    let good = (DATA + rng.next() % 0xf000, 1 + (rng.next() % 2048) as u32);
    match rng.below(10) {
        0..6 => (good.0, good.1, right, 0),
        6..8 => (good.0, good.1, right | VRING_DESC_F_NEXT, (rng.next() % 10) as u16),
        _ => (if rng.below(2) == 0 { rng.next() } else { good.0 }, (rng.next() % 0x3000) as u32, (rng.next() % 8) as u16, (rng.next() % 10) as u16),
    }
}

#[test]
fn property_split_batches_take_what_pops_take() {
    const SIZE: u16 = 8;
    let mut rng = Rng(0x51d3_0b7a_c4e2_9f01);
    for case in 0..CASES {
        let dir = if case % 2 == 0 { TX } else { RX };
        let right = if dir == RX { VRING_DESC_F_WRITE } else { 0 };
        let (mut ga, mut gb) = (TestGuest::new(SIZE), TestGuest::new(SIZE));
        for i in 0..SIZE {
            let (addr, len, flags, next) = split_desc(&mut rng, right);
            ga.desc(i, addr, len, flags, next);
            gb.desc(i, addr, len, flags, next);
        }
        for _ in 0..rng.below(SIZE as usize + 1) {
            let head = rng.below(SIZE as usize + 2) as u16;
            ga.offer(head);
            gb.offer(head);
        }
        let (mut qa, mut qb) = (ga.queue(), gb.queue());
        both_ways((&mut qa, &ga.mem), (&mut qb, &gb.mem), dir, &mut rng, case);
        for i in 0..SIZE {
            assert_eq!(ga.used(i), gb.used(i), "case {case}: used entry {i}");
        }
    }
}

#[test]
fn property_packed_batches_take_what_pops_take() {
    let mut rng = Rng(0x0a7c_4e21_9f51_d3b6);
    for case in 0..CASES {
        let size = [1u16, 2, 5, 8, 16][rng.below(5)];
        let dir = if case % 2 == 0 { TX } else { RX };
        let right = if dir == RX { VRING_DESC_F_WRITE } else { 0 };
        let at = (rng.below(size as usize) as u16, rng.below(2) == 0);
        let (mut ga, mut gb) = (PackedGuest::new(size).at(at.0, at.1), PackedGuest::new(size).at(at.0, at.1));
        let mut free = size as usize;
        while free > 0 && rng.below(8) != 0 {
            let good = |rng: &mut Rng| -> Buf { (DATA + rng.next() % 0xf000, 1 + (rng.next() % 2048) as u32, right) };
            let bufs: Vec<Buf> = match rng.below(10) {
                0..6 => vec![good(&mut rng)],
                6..8 => (0..1 + rng.below(free)).map(|_| good(&mut rng)).collect(),
                8 => vec![[(DATA, 0, right), (DATA, 64, right ^ VRING_DESC_F_WRITE), (u64::MAX - 2, 16, right)][rng.below(3)]],
                _ => vec![(DATA, 64, right | VRING_DESC_F_INDIRECT)],
            };
            // Ids mostly fresh, some beyond the ring or used twice.
            let id = if rng.below(8) == 0 { rng.below(size as usize + 2) as u16 } else { ((size as usize - free) % size as usize) as u16 };
            free -= bufs.len();
            ga.offer(id, &bufs);
            gb.offer(id, &bufs);
        }
        let (mut qa, mut qb) = (ga.queue(), gb.queue());
        let want = both_ways((&mut qa, &ga.mem), (&mut qb, &gb.mem), dir, &mut rng, case);
        // Both give the good chains back in the same order: the guest
        // reads the same used descriptors.
        for (id, len, _, _) in &want {
            let n = if dir == RX { *len as u32 } else { 0 };
            qa.add_used(&ga.mem, *id, n).unwrap();
            qb.add_used(&gb.mem, *id, n).unwrap();
        }
        qa.publish(&ga.mem).unwrap();
        qb.publish(&gb.mem).unwrap();
        loop {
            let (a, b) = (ga.used(), gb.used());
            assert_eq!(a, b, "case {case}");
            if a.is_none() {
                break;
            }
        }
    }
}
