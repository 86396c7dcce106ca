//! A random-ring model test of the packed walker: random well-formed and
//! hostile chains over many laps, given back now and then, completed in
//! random order and batches. What comes out is checked against a model
//! worked out from the descriptors as the test wrote them (no spans, no
//! shared code), and what the guest reads back against what was returned.
use std::collections::{HashMap, HashSet};

use super::packed_tests::{RX, TX};
use super::test_guest::DATA;
use super::test_packed::{avail_flags, PackedGuest, Raw};
use super::*;
use crate::test_rng::Rng;

const NEXT: u16 = VRING_DESC_F_NEXT;
const WRITE: u16 = VRING_DESC_F_WRITE;
const INDIRECT: u16 = VRING_DESC_F_INDIRECT;
/// Indirect tables, one per head slot, room for 68 entries each.
const TABLES: u64 = 0x4000;
const TABLE_ROOM: u64 = 68 * 16;

/// One chain as written: its descriptors (flags exactly as in the ring),
/// the lap of each one's slot, and the table its INDIRECT descriptor (if
/// any) points at.
struct Offer {
    descs: Vec<Raw>,
    laps: Vec<bool>,
    table: Vec<Raw>,
}

/// What the walker must make of a chain.
#[derive(Debug, PartialEq)]
enum Want {
    Chain { id: u16, len: u64, descs: usize },
    Bad { id: u16, err: ChainError },
    Broken,
}

struct Env<'a> {
    g: &'a PackedGuest,
    dir: Direction,
}

impl Env<'_> {
    /// A buffer's reason to be refused, the `n`th of its chain.
    fn buffer(&self, (addr, len, _, flags): Raw, n: usize) -> Option<ChainError> {
        if n > MAX_DESCS {
            Some(ChainError::TooLong)
        } else if (flags & WRITE != 0) != (self.dir == RX) {
            Some(ChainError::WrongDirection)
        } else if len == 0 {
            Some(ChainError::BadLength)
        } else if !self.g.mem.contains(Gpa(addr), len as u64) {
            Some(ChainError::OutsideMemory)
        } else {
            None
        }
    }

    /// The rules of 2.7 and ours, read plainly off the offer.
    fn model(&self, o: &Offer, in_flight: &HashMap<u16, u16>) -> Want {
        let (mut err, mut n, mut len) = (None, 0, 0u64);
        let mut bufs = |d: Raw, err: &mut Option<ChainError>| {
            n += 1;
            len += d.1 as u64;
            if err.is_none() {
                *err = self.buffer(d, n);
            }
        };
        for (k, &(addr, l, id, flags)) in o.descs.iter().enumerate() {
            if k > 0 && !((flags & VRING_PACKED_DESC_F_AVAIL != 0) == o.laps[k] && (flags & VRING_PACKED_DESC_F_USED != 0) != o.laps[k]) {
                return Want::Broken;
            }
            if flags & INDIRECT == 0 {
                bufs((addr, l, id, flags), &mut err);
            } else if err.is_none() {
                err = if !self.g.features.indirect {
                    Some(ChainError::Indirect)
                } else if k > 0 || flags & NEXT != 0 || l == 0 || l % 16 != 0 {
                    Some(ChainError::BadIndirect)
                } else if l / 16 > MAX_DESCS as u32 {
                    Some(ChainError::TooLong)
                } else if !self.g.mem.contains(Gpa(addr), l as u64) {
                    Some(ChainError::OutsideMemory)
                } else {
                    assert_eq!(o.table.len(), l as usize / 16);
                    let mut e = None;
                    for &t in &o.table {
                        if t.3 & INDIRECT != 0 && e.is_none() {
                            e = Some(ChainError::BadIndirect);
                        }
                        // A transmit table's WRITE is not held against
                        // the guest (DPDK's PMD presets it on the header).
                        let write = if self.dir == RX { t.3 & WRITE } else { 0 };
                        bufs((t.0, t.1, 0, write), &mut e);
                    }
                    e
                };
            }
            if flags & NEXT == 0 {
                return match err {
                    _ if id >= self.g.size || in_flight.contains_key(&id) => Want::Bad { id, err: ChainError::HeadOutOfRange },
                    Some(err) => Want::Bad { id, err },
                    None => Want::Chain { id, len, descs: n },
                };
            }
        }
        Want::Broken
    }
}

/// A drawn chain: its descriptors (availability flags still to add), its
/// table, and which descriptor (if any) is to be flagged not available:
/// for a wrong lap (false) or as used (true).
struct Drawn {
    descs: Vec<Raw>,
    table: Vec<Raw>,
    unavailable: Option<(usize, bool)>,
    /// NEXT on every descriptor, round the whole ring.
    all_next: bool,
}

/// Draws one chain of at most `free` slots: mostly well-formed, else one of
/// the malformations; None if no id is free.
fn draw(rng: &mut Rng, size: u16, dir: Direction, free: u16, outstanding: &HashSet<u16>) -> Option<Drawn> {
    let right = if dir == RX { WRITE } else { 0 };
    let good = |rng: &mut Rng| (DATA + rng.next() % 0xf000, 1 + (rng.next() % 2048) as u32, 0u16, right);
    // A table of `n` good entries, some with the NEXT and AVAIL flags
    // DPDK's virtio PMD leaves there; its INDIRECT descriptor, the address
    // filled in when offered.
    let table = |rng: &mut Rng, n: usize| {
        let mut t: Vec<Raw> = (0..n).map(|_| good(rng)).collect();
        for e in t.iter_mut().filter(|_| rng.below(2) == 0) {
            e.3 |= NEXT | VRING_PACKED_DESC_F_AVAIL;
        }
        ((0, 16 * n as u32, 0, INDIRECT), t)
    };
    let fresh: Vec<u16> = (0..size).filter(|i| !outstanding.contains(i)).collect();
    let mut id = *fresh.get(rng.below(fresh.len().max(1)))?;
    let mut d = Drawn { descs: (0..1 + rng.below(free.min(4) as usize)).map(|_| good(rng)).collect(), table: Vec::new(), unavailable: None, all_next: false };
    match rng.below(100) {
        0..55 => {}
        55..63 => {
            let k = rng.below(d.descs.len());
            let (a, l, _, _) = d.descs[k];
            d.descs[k] = [(a, 0, 0, right), (a, l, 0, right ^ WRITE), (0x10, 4, 0, right), (0x3ff00, 0x200, 0, right), (u64::MAX - 2, 16, 0, right)][rng.below(5)];
        }
        63..73 => {
            let n = 1 + rng.below(MAX_DESCS);
            let (ind, t) = table(rng, n);
            (d.descs, d.table) = (vec![ind], t);
        }
        73..80 => {
            let n = 1 + rng.below(8);
            let (mut ind, mut t) = table(rng, n);
            let k = rng.below(t.len());
            match rng.below(8) {
                0 => ind.1 = 0,
                1 => ind.1 += 1 + rng.below(15) as u32,
                2 => {
                    let n = MAX_DESCS + 1 + rng.below(3);
                    (ind, t) = table(rng, n);
                }
                3 => ind.0 = 0x3fff8,
                4 => t[k].3 |= INDIRECT,
                5 => t[k].1 = 0,
                6 => t[k].3 ^= WRITE,
                _ => {}
            }
            // Alone, or chained with a buffer before or after it.
            d.descs = match (free >= 2, rng.below(3)) {
                (true, 0) => vec![ind, good(rng)],
                (true, 1) => vec![good(rng), ind],
                _ => vec![ind],
            };
            d.table = t;
        }
        80..84 if free >= 60 => d.descs = (0..60 + rng.below((free as usize).min(70) - 59)).map(|_| good(rng)).collect(),
        84..88 => id = if rng.below(2) == 0 { size + rng.below(100) as u16 } else { u16::MAX },
        88..92 if !outstanding.is_empty() => id = *outstanding.iter().nth(rng.below(outstanding.len())).unwrap(),
        92..95 if d.descs.len() >= 2 => d.unavailable = Some((1 + rng.below(d.descs.len() - 1), rng.below(2) == 0)),
        95..97 if free == size => (d.descs, d.all_next) = ((0..size).map(|_| good(rng)).collect(), true),
        _ => {}
    }
    let n = d.descs.len();
    for (k, desc) in d.descs.iter_mut().enumerate() {
        desc.2 = id;
        if k + 1 < n || d.all_next {
            desc.3 |= NEXT;
        }
    }
    Some(d)
}

/// Writes a drawn chain into the ring: availability flags for each slot's
/// lap (but for the one to be unavailable), and its table where its head
/// slot's goes.
fn offer(g: &mut PackedGuest, mut d: Drawn) -> Offer {
    let (mut slot, mut wrap) = (g.next, g.wrap);
    let at = TABLES + g.next as u64 * TABLE_ROOM;
    let mut laps = Vec::new();
    for (k, desc) in d.descs.iter_mut().enumerate() {
        laps.push(wrap);
        if desc.3 & INDIRECT != 0 && desc.0 == 0 {
            desc.0 = at;
        }
        desc.3 |= match d.unavailable {
            Some((u, true)) if u == k => VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED,
            Some((u, false)) if u == k => avail_flags(!wrap),
            _ => avail_flags(wrap),
        };
        slot += 1;
        if slot == g.size {
            (slot, wrap) = (0, !wrap);
        }
    }
    g.table(at, &d.table);
    g.offer_raw(&d.descs, false);
    Offer { descs: d.descs, laps, table: d.table }
}

/// One chain popped and not yet returned.
struct Popped {
    id: u16,
    /// Whether the queue holds it in flight under `id`.
    held: bool,
    /// Its bytes, if it was accepted.
    len: Option<u64>,
}

#[test]
fn property_random_packed_rings_against_a_model() {
    let cases: u64 = std::env::var("VSW_VIRTQ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let mut rng = Rng(0x7f4a_7c15_9e37_79b9);
    let mut seen: HashMap<String, u32> = HashMap::new();
    let (mut accepted, mut longest) = (0u32, 0usize);
    let mut c = Chain::default();
    for case in 0..cases {
        let size = [1u16, 2, 3, 4, 5, 8, 16, 128][rng.below(8)];
        let dir = if case % 2 == 0 { TX } else { RX };
        let mut g = PackedGuest::new(size).at(rng.below(size as usize) as u16, rng.below(2) == 0);
        g.features.indirect = rng.below(4) != 0;
        let mut q = g.queue();
        // The chains the queue holds in flight as the model has them (id ->
        // slots), the ids the guest has not had back, and its slots.
        let mut in_flight: HashMap<u16, u16> = HashMap::new();
        let mut outstanding: HashSet<u16> = HashSet::new();
        let mut out_slots = 0u16;
        let mut popped: Vec<Popped> = Vec::new();
        for round in 0..1 + rng.below(12) {
            let mut offers = Vec::new();
            let chains = 1 + rng.below(8);
            while offers.len() < chains && out_slots < size {
                let Some(d) = draw(&mut rng, size, dir, size - out_slots, &outstanding) else { break };
                let (n, id) = (d.descs.len() as u16, d.descs[0].2);
                out_slots += n;
                if id < size {
                    outstanding.insert(id);
                }
                offers.push(offer(&mut g, d));
            }
            // Take them all, giving the last few back now and then.
            let env = Env { g: &g, dir };
            let mut k = 0;
            let mut unpopped = false;
            while k < offers.len() {
                if rng.below(3) == 0 {
                    // A hint: some chain is there, and no more slots than
                    // were offered.
                    let left: usize = offers[k..].iter().map(|o| o.descs.len()).sum();
                    let n = q.available(&g.mem).unwrap() as usize;
                    assert!(n >= 1 && n <= left, "case {case}: {n} available of {left}");
                }
                let want = env.model(&offers[k], &in_flight);
                let slots = offers[k].descs.len() as u16;
                let (id, held, len) = match (want, q.pop(&g.mem, dir, &mut c)) {
                    (Want::Broken, Err(RingError::BrokenChain { .. })) => {
                        *seen.entry("Broken".into()).or_default() += 1;
                        break;
                    }
                    (Want::Chain { id, len, descs }, Ok(Pop::Chain)) => {
                        assert_eq!((c.head, c.len(), c.descriptors()), (id, len, descs), "case {case} round {round}");
                        assert!(c.segments().iter().all(|s| g.mem.contains(s.gpa(), s.len() as u64)));
                        (accepted, longest) = (accepted + 1, longest.max(descs));
                        (id, true, Some(len))
                    }
                    (Want::Bad { id, err }, Ok(Pop::Bad { head, err: e })) if (head, e) == (id, err) => {
                        *seen.entry(format!("{err:?}")).or_default() += 1;
                        (id, err != ChainError::HeadOutOfRange, None)
                    }
                    (w, r) => panic!("case {case} round {round} chain {k}: want {w:?}, got {r:?}: {:x?} {:?}", offers[k].descs, offers[k].laps),
                };
                if held {
                    in_flight.insert(id, slots);
                }
                popped.push(Popped { id, held, len });
                k += 1;
                if k == offers.len() && !unpopped && rng.below(4) == 0 {
                    // Only chains held under their id can go back, as the
                    // datapath gives back only those it took.
                    let run = popped[popped.len() - k..].iter().rev().take_while(|p| p.held).count();
                    let n = rng.below(run + 1);
                    let back: Vec<Chain> = popped[popped.len() - n..]
                        .iter()
                        .map(|p| {
                            let mut c = Chain::default();
                            c.head = p.id;
                            c
                        })
                        .collect();
                    q.unpop(&back);
                    for p in popped.drain(popped.len() - n..) {
                        if p.held {
                            in_flight.remove(&p.id);
                        }
                    }
                    (k, unpopped) = (k - n, true);
                }
            }
            if k < offers.len() {
                break; // the queue is broken
            }
            assert_eq!(q.pop(&g.mem, dir, &mut c), Ok(Pop::Empty), "case {case} round {round}");
            // Return most, in random order and batches, as the datapath
            // does (refused ones empty); keep the rest for a later round.
            let mut expect = Vec::new();
            let mut keep = Vec::new();
            while !popped.is_empty() {
                let p = popped.swap_remove(rng.below(popped.len()));
                if rng.below(5) == 0 {
                    keep.push(p);
                    continue;
                }
                let len = match p.len {
                    Some(len) if dir == RX => rng.below(len as usize + 1) as u32,
                    _ => 0,
                };
                q.add_used(&g.mem, p.id, len).unwrap();
                // An id the queue does not hold writes nothing; one named
                // twice goes back once, for whichever is returned first.
                if let Some(s) = in_flight.remove(&p.id) {
                    expect.push((p.id, len, s));
                }
                if rng.below(3) == 0 {
                    assert_eq!(g.used(), None, "case {case}: part of a batch seen");
                    q.publish(&g.mem).unwrap();
                    read_back(&mut g, &mut expect, &mut outstanding, &mut out_slots);
                }
            }
            popped = keep;
            assert_eq!(g.used(), None, "case {case}: part of a batch seen");
            q.publish(&g.mem).unwrap();
            read_back(&mut g, &mut expect, &mut outstanding, &mut out_slots);
            assert_eq!(g.used(), None, "case {case} round {round}");
            let pos = |s: u16, w: bool| s | (w as u16) << 15;
            assert_eq!(q.indices(), (pos(g.next, g.wrap), pos(g.used_at, g.used_wrap)), "case {case} round {round}");
        }
    }
    if cases >= 20_000 {
        // The generator reaches what it is meant to.
        // NextOutOfRange is a split ring's: packed chains have no `next`.
        let reasons = ChainError::ALL.iter().filter(|&&e| e != ChainError::NextOutOfRange).map(|e| format!("{e:?}"));
        let missing: Vec<_> = reasons.chain(["Broken".into()]).filter(|e| !seen.contains_key(e)).collect();
        assert!(missing.is_empty(), "never seen: {missing:?} ({seen:?})");
        assert!(accepted > 80_000 && longest == MAX_DESCS, "{accepted} accepted, longest {longest}");
    }
}

/// The guest reads every used descriptor expected so far, in order.
fn read_back(g: &mut PackedGuest, expect: &mut Vec<(u16, u32, u16)>, outstanding: &mut HashSet<u16>, out_slots: &mut u16) {
    for (id, len, slots) in expect.drain(..) {
        // The driver moves on by what it gave the id; for an id it named
        // twice, that is the chain we kept.
        g.slots.insert(id, slots);
        let (i, l, flags) = g.used().unwrap_or_else(|| panic!("id {id} not back"));
        assert_eq!((i, l, flags & WRITE != 0), (id, len, len > 0));
        outstanding.remove(&id);
        *out_slots -= slots;
    }
}
