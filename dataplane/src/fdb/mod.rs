//! MAC learning table (forwarding database), shared by the PMD threads
//! without locks.
//!
//! Semantics follow an L2 learning switch (Open vSwitch NORMAL): each VLAN is
//! its own learning domain, so one MAC may be known in two VLANs on two
//! ports. `learn` runs on the source MAC of each received frame and adds the
//! station (`New`), refreshes it (`Known`), or records a station move
//! (`Moved`: another port slot, or the same slot after the port was replaced,
//! i.e. another generation). An entry not seen for more than `aging_secs` is
//! absent for `lookup`, may be overwritten by learning, and is deleted by
//! `age`. At most `max_entries` entries exist and live ones are never
//! evicted: if a new station does not fit (its bucket holds 4 live entries,
//! the bound is reached, or its port holds its limit of entries,
//! `set_port_limit`), `learn` says `Full`; the caller forwards the frame
//! anyway and counts it unlearned. So a MAC flood cannot push known stations
//! out, and one port cannot take the table from the others.
//!
//! The bucket hash is keyed, with a key drawn at random per table
//! (multiply-shift with a random odd multiplier: a universal family), so a
//! guest cannot choose MACs that land in a victim's bucket.
//!
//! Concurrency: a fixed set-associative table (4 ways per bucket, buckets for
//! 2x `max_entries` so a full bucket is rare), allocated once, with a
//! sequence lock per way. Readers never write shared memory nor wait; a way
//! being rewritten reads as a miss (the frame is flooded, which L2 allows).
//! Writers never wait: a way held by another writer gives `Busy`, and the
//! station's next frame retries. The steady-state write, the once-a-second
//! refresh, is one CAS on the value word outside the lock, so it never makes
//! a reader miss. A new key is stored, and a full bucket believed, only if
//! the rest of the bucket held still meanwhile, so two PMDs learning one
//! station at once cannot store it twice (see `insert`). Control-plane calls
//! hold one way at a time and spin on busy ways.
//!
//! Trade-offs: `len` counts expired entries until `age` removes them (learning
//! reuses them meanwhile); a station whose bucket is full is refused even if
//! other buckets have room; a lookup racing a rewrite of its entry misses.
use std::hint::spin_loop;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::hash::BuildHasher;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize};

use crate::counters::MAX_PORTS;

/// Entry positions per bucket, called "ways" so as not to be confused with
/// port slots.
const WAYS: usize = 4;

// Key word: bit 63 valid, bits 48..60 VLAN ID, bits 0..48 the MAC as a
// big-endian number (bits 60..63 zero). 0 is an empty way. One word, so a key
// is compared and replaced as a unit; numeric order is (VLAN, MAC) order.
const KEY_VALID: u64 = 1 << 63;
const VLAN_SHIFT: u32 = 48;
const VLAN_MASK: u16 = 0x0fff;
const MAC_MASK: u64 = (1 << VLAN_SHIFT) - 1;
// Value word: bits 48..64 port slot, 32..48 port generation, 0..32 last_seen.
// One word, so a refresh is one CAS and slot, gen and time are read together.
const SLOT_SHIFT: u32 = 48;
const GEN_SHIFT: u32 = 32;

const _: () = assert!(VLAN_SHIFT == 6 * 8 && VLAN_SHIFT + 12 < 63 && VLAN_MASK == 4095);
const _: () = assert!(GEN_SHIFT == u32::BITS && SLOT_SHIFT == GEN_SHIFT + u16::BITS);
// A bucket is two cache lines, and the first holds all seqs and keys.
const _: () = assert!(std::mem::size_of::<Bucket>() == 128);
const _: () = assert!(std::mem::offset_of!(Bucket, val) == 48);

/// What `learn` did with a source MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learn {
    /// Known on this port: refreshed, or already fresh this second.
    Known,
    /// A new station (or a dead entry of it) was stored.
    New,
    /// Station move: the entry pointed at another slot or generation.
    Moved { from: u16 },
    /// No room: the bucket holds 4 live entries, or `max_entries` is reached.
    Full,
    /// Another writer held a way we needed; skipped, the next frame retries.
    Busy,
}

/// One live entry, as listed by `entries`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    pub vlan: u16,
    pub mac: [u8; 6],
    pub slot: u16,
    pub gen: u16,
    pub age_secs: u32,
}

/// A bucket's ways together, one array per field: a probe reads the 4 seqs
/// and 4 keys from one cache line (a miss costs one line, a hit in way 0 or
/// 1 too) instead of 4 scattered lines. Aligned so that no two buckets share
/// a line: writers to different buckets never false-share.
#[derive(Default)]
#[repr(C, align(64))]
struct Bucket {
    seq: [AtomicU32; WAYS],
    key: [AtomicU64; WAYS],
    val: [AtomicU64; WAYS],
}

/// Keeps the count, written on inserts, off the line every lookup reads.
#[repr(align(64))]
struct Padded(AtomicUsize);

/// Entries learned on one port slot, and how many it may have.
struct PortBudget {
    count: AtomicU32,
    limit: AtomicU32,
}

/// The table. Every method takes `&self`: share it as `Arc<Fdb>`.
pub struct Fdb {
    buckets: Box<[Bucket]>,
    /// 64 - log2(bucket count): the hash keeps the top bits of the product.
    shift: u32,
    /// The hash's random key: a value mixed in, and an odd multiplier.
    seed: u64,
    mult: u64,
    /// By port slot (`MAX_PORTS` of them): a slot beyond has no limit.
    ports: Box<[PortBudget]>,
    max_entries: usize,
    aging_secs: u32,
    /// Ways holding a valid key, expired or not. Raised before a key is
    /// stored, lowered after it is cleared: never under the truth, so the
    /// bound holds.
    live: Padded,
}

fn encode_key(vlan: u16, mac: [u8; 6]) -> u64 {
    debug_assert!(vlan <= VLAN_MASK, "VLAN ID out of range: {vlan}");
    let [a, b, c, d, e, f] = mac;
    let mac = u64::from_be_bytes([0, 0, a, b, c, d, e, f]);
    KEY_VALID | u64::from(vlan & VLAN_MASK) << VLAN_SHIFT | mac
}

fn decode_key(k: u64) -> (u16, [u8; 6]) {
    let [_, _, a, b, c, d, e, f] = (k & MAC_MASK).to_be_bytes();
    ((k >> VLAN_SHIFT) as u16 & VLAN_MASK, [a, b, c, d, e, f])
}

fn encode_val(slot: u16, gen: u16, last_seen: u32) -> u64 {
    u64::from(slot) << SLOT_SHIFT | u64::from(gen) << GEN_SHIFT | u64::from(last_seen)
}

fn decode_val(v: u64) -> (u16, u16, u32) {
    ((v >> SLOT_SHIFT) as u16, (v >> GEN_SHIFT) as u16, v as u32)
}

/// (seq, key, value) of one way, or None while a writer holds it or if one
/// overlapped our loads.
fn read(b: &Bucket, i: usize) -> Option<(u32, u64, u64)> {
    // Acquire pairs with the Release in `unlock`: having seen a writer's
    // even seq, we see the key and value it stored before.
    let s = b.seq[i].load(Acquire);
    if s & 1 != 0 {
        return None;
    }
    let (k, v) = (b.key[i].load(Relaxed), b.val[i].load(Relaxed));
    // If a load above saw a store of a writer that locked after our first
    // load, this fence pairs with the Release fence in `lock`, so the reload
    // sees its odd (or later) seq: a torn key/value pair is always caught.
    fence(Acquire);
    (b.seq[i].load(Relaxed) == s).then_some((s, k, v))
}

/// (seq, key, value) of each way of a bucket, read one way after the other.
type Snap = [(u32, u64, u64); WAYS];

/// Whether no way but `skip` was written since `snap`. SeqCst: see `insert`.
fn unchanged(b: &Bucket, snap: &Snap, skip: usize) -> bool {
    (0..WAYS).all(|j| j == skip || b.seq[j].load(SeqCst) == snap[j].0)
}

/// Control plane only: writers hold a way for a few stores, never block.
fn read_spin(b: &Bucket, i: usize) -> (u32, u64, u64) {
    loop {
        match read(b, i) {
            Some(x) => return x,
            None => spin_loop(),
        }
    }
}

/// Take way `i`, which `read` saw as `s`; fails if it was written since.
fn lock(b: &Bucket, i: usize, s: u32) -> bool {
    // SeqCst: `insert` needs one order of all locks and its checking loads.
    // The Acquire half orders our stores after the previous writer's.
    let cas = b.seq[i].compare_exchange(s, s + 1, SeqCst, Relaxed);
    // Our data stores must not be seen before the odd seq (see `read`).
    fence(Release);
    cas.is_ok()
}

fn unlock(b: &Bucket, i: usize, s: u32) {
    // Release: who sees the new even seq sees our stores.
    b.seq[i].store(s.wrapping_add(2), Release);
}

/// Way `i` held since `read` saw (`s`, `v`): set the value to `nv`, and the
/// key if given. The value is swapped by CAS so that a refresh which slipped
/// in since (see `Fdb::update`) makes us back off instead of being lost.
fn replace(b: &Bucket, i: usize, (s, v): (u32, u64), key: Option<u64>, nv: u64) -> bool {
    if !lock(b, i, s) {
        return false;
    }
    let ok = b.val[i].compare_exchange(v, nv, Relaxed, Relaxed).is_ok();
    if let (true, Some(k)) = (ok, key) {
        b.key[i].store(k, Relaxed);
    }
    unlock(b, i, s);
    ok
}

impl Fdb {
    pub fn new(max_entries: usize, aging_secs: u32) -> Self {
        let n = (max_entries.saturating_mul(2) / WAYS).max(1);
        let n = n.checked_next_power_of_two().expect("fdb too large");
        // RandomState's keys come from the OS's randomness, per process.
        let random = |i: u64| std::collections::hash_map::RandomState::new().hash_one(i);
        Fdb {
            buckets: (0..n).map(|_| Bucket::default()).collect(),
            shift: 64 - n.trailing_zeros(),
            seed: random(1),
            mult: random(2) | 1,
            ports: (0..MAX_PORTS).map(|_| PortBudget { count: AtomicU32::new(0), limit: AtomicU32::new(u32::MAX) }).collect(),
            max_entries,
            aging_secs,
            live: Padded(AtomicUsize::new(0)),
        }
    }

    /// Multiply-shift hashing: multiplying by an odd number carries every
    /// key bit into the top bits of the product, which we keep. With the
    /// multiplier drawn at random, two given keys share a bucket with
    /// probability about 2 / buckets, whatever MACs a guest picks.
    fn index(&self, key: u64) -> usize {
        let h = (key ^ self.seed).wrapping_mul(self.mult);
        // With one bucket the shift is 64, which `>>` rejects: index 0.
        h.checked_shr(self.shift).unwrap_or(0) as usize
    }

    fn bucket(&self, key: u64) -> &Bucket {
        &self.buckets[self.index(key)]
    }

    fn expired(&self, v: u64, now: u32) -> bool {
        // Saturating: another thread's `now` may be a second ahead of ours.
        now.saturating_sub(decode_val(v).2) > self.aging_secs
    }

    /// The port (slot, gen) of a live entry. Never waits, never writes.
    pub fn lookup(&self, vlan: u16, mac: [u8; 6], now: u32) -> Option<(u16, u16)> {
        let key = encode_key(vlan, mac);
        let b = self.bucket(key);
        for i in 0..WAYS {
            // `read`'s protocol, loading the value only for the matching key.
            // Keys are unique in a bucket: skipping a way being written loses
            // at most the entry it holds.
            let s = b.seq[i].load(Acquire);
            if s & 1 != 0 || b.key[i].load(Relaxed) != key {
                continue;
            }
            let v = b.val[i].load(Relaxed);
            fence(Acquire);
            if b.seq[i].load(Relaxed) != s || self.expired(v, now) {
                return None;
            }
            let (slot, gen, _) = decode_val(v);
            return Some((slot, gen));
        }
        None
    }

    /// Learn that (vlan, mac) is behind port (slot, gen). Never waits.
    pub fn learn(&self, vlan: u16, mac: [u8; 6], slot: u16, gen: u16, now: u32) -> Learn {
        let key = encode_key(vlan, mac);
        let b = self.bucket(key);
        let nv = encode_val(slot, gen, now);
        let mut snap: Snap = [(0, 0, 0); WAYS];
        for (i, way) in snap.iter_mut().enumerate() {
            match read(b, i) {
                Some((s, k, v)) if k == key => return self.update(b, i, (s, v), nv),
                Some(x) => *way = x,
                // It may be this very key being stored: don't store it twice.
                None => return Learn::Busy,
            }
        }
        let used = |i: &usize| snap[*i].1 & KEY_VALID != 0;
        // A dead entry first: reusing it needs no room under the bound.
        let dead = (0..WAYS).find(|i| used(i) && self.expired(snap[*i].2, now));
        match dead.or_else(|| (0..WAYS).find(|i| !used(i))) {
            Some(i) => self.insert(b, i, &snap, key, nv),
            // Ways were read one by one: under churn they may show a key
            // twice and no room. Only a bucket that held still is full.
            None if unchanged(b, &snap, WAYS) => Learn::Full,
            None => Learn::Busy,
        }
    }

    /// The key is in way `i`, seen as `sv`; `nv` is what to learn.
    fn update(&self, b: &Bucket, i: usize, sv: (u32, u64), nv: u64) -> Learn {
        let (from, _, seen) = decode_val(sv.1);
        let (now, port) = (nv as u32, nv >> GEN_SHIFT);
        let dead = self.expired(sv.1, now);
        if dead || sv.1 >> GEN_SHIFT != port {
            let to = (nv >> SLOT_SHIFT) as u16;
            let other_slot = to != from;
            if other_slot && !self.claim(to) {
                return Learn::Full;
            }
            // Redirecting traffic is tied to the key we read, through the
            // lock: its CAS fails if the way was rewritten since (no ABA).
            // The key stays, so unlike `insert` no other way matters.
            let done = replace(b, i, sv, None, nv);
            if other_slot {
                self.release(if done { from } else { to });
            }
            return match done {
                false => Learn::Busy,
                true if dead => Learn::New,
                true => Learn::Moved { from },
            };
        }
        if seen >= now {
            // At most one write per entry per second: it dirties a line that
            // every PMD sending to this station reads.
            return Learn::Known;
        }
        // Refresh outside the lock: one word and the key stays, so a reader
        // sees the old or the new time and never misses. ABA: should the way
        // meanwhile hold another key with this exact value, that entry is
        // refreshed, which only delays its aging.
        match b.val[i].compare_exchange(sv.1, nv, Relaxed, Relaxed) {
            Ok(_) => Learn::Known,
            Err(cur) if cur >> GEN_SHIFT == port && cur as u32 >= now => Learn::Known,
            Err(_) => Learn::Busy,
        }
    }

    /// Store `key` in way `i`, empty or dead in `snap`, which lacks `key`.
    fn insert(&self, b: &Bucket, i: usize, snap: &Snap, key: u64, nv: u64) -> Learn {
        let (s, old_key, v) = snap[i];
        if !lock(b, i, s) {
            return Learn::Busy;
        }
        // Two PMDs learning one station may pick different ways (their
        // snapshots or clocks differ). Each holds its way, then checks that
        // no other way changed since its snapshot. Locks and these loads are
        // SeqCst, so of two racing inserters at least one sees the other's
        // lock and backs off: a key is never stored twice.
        let empty = old_key & KEY_VALID == 0;
        let to = (nv >> SLOT_SHIFT) as u16;
        let out = if !unchanged(b, snap, i) {
            Learn::Busy
        } else if !self.claim(to) {
            Learn::Full
        } else if empty && !self.reserve() {
            self.release(to);
            Learn::Full
        } else if b.val[i].compare_exchange(v, nv, Relaxed, Relaxed).is_ok() {
            b.key[i].store(key, Relaxed);
            if !empty {
                self.release(decode_val(v).0);
            }
            Learn::New
        } else {
            // The dead entry was refreshed by a PMD whose clock says alive.
            if empty {
                self.live.0.fetch_sub(1, Relaxed);
            }
            self.release(to);
            Learn::Busy
        };
        unlock(b, i, s);
        out
    }

    /// Claim room for one entry of port `slot` under its limit. Relaxed, as
    /// `reserve`.
    fn claim(&self, slot: u16) -> bool {
        let Some(p) = self.ports.get(slot as usize) else { return true };
        let limit = p.limit.load(Relaxed);
        p.count.fetch_update(Relaxed, Relaxed, |n| (n < limit).then_some(n + 1)).is_ok()
    }

    /// Give back an entry of port `slot`.
    fn release(&self, slot: u16) {
        if let Some(p) = self.ports.get(slot as usize) {
            p.count.fetch_sub(1, Relaxed);
        }
    }

    /// At most `limit` entries for port `slot` (from now on: entries it
    /// has beyond it stay until they age).
    pub fn set_port_limit(&self, slot: u16, limit: u32) {
        if let Some(p) = self.ports.get(slot as usize) {
            p.limit.store(limit, Relaxed);
        }
    }

    /// Entries port `slot` holds, expired ones included until `age`.
    pub fn port_entries(&self, slot: u16) -> u32 {
        self.ports.get(slot as usize).map_or(0, |p| p.count.load(Relaxed))
    }

    /// Claim room for one entry. Relaxed: the count is a budget that
    /// publishes no data.
    fn reserve(&self) -> bool {
        let up = |n: usize| (n < self.max_entries).then_some(n + 1);
        self.live.0.fetch_update(Relaxed, Relaxed, up).is_ok()
    }

    /// Remove the entries for which `pred(key, value)` holds; returns how
    /// many.
    fn remove_where(&self, pred: impl Fn(u64, u64) -> bool) -> usize {
        let mut removed = 0;
        for b in self.buckets.iter() {
            for i in 0..WAYS {
                // Retry until the predicate fails or the removal sticks. The
                // value CAS in `replace` keeps `age` from wiping an entry a
                // PMD just refreshed.
                loop {
                    let (s, k, v) = read_spin(b, i);
                    if k & KEY_VALID == 0 || !pred(k, v) {
                        break;
                    }
                    if replace(b, i, (s, v), Some(0), 0) {
                        self.live.0.fetch_sub(1, Relaxed);
                        self.release(decode_val(v).0);
                        removed += 1;
                        break;
                    }
                    spin_loop();
                }
            }
        }
        removed
    }

    /// Remove expired entries; returns how many. For the control thread,
    /// about once a second.
    pub fn age(&self, now: u32) -> usize {
        self.remove_where(|_, v| self.expired(v, now))
    }

    pub fn flush(&self) {
        self.remove_where(|_, _| true);
    }

    /// Remove the entries of port `slot`, whatever their generation.
    pub fn flush_port(&self, slot: u16) {
        self.remove_where(|_, v| decode_val(v).0 == slot);
    }

    pub fn flush_vlan(&self, vlan: u16) {
        self.remove_where(|k, _| decode_key(k).0 == vlan);
    }

    /// Live entries, sorted by VLAN, then MAC.
    pub fn entries(&self, now: u32) -> Vec<FdbEntry> {
        let mut out = Vec::new();
        for b in self.buckets.iter() {
            for i in 0..WAYS {
                let (_, k, v) = read_spin(b, i);
                if k & KEY_VALID != 0 && !self.expired(v, now) {
                    let ((vlan, mac), (slot, gen, seen)) = (decode_key(k), decode_val(v));
                    let age_secs = now.saturating_sub(seen);
                    out.push(FdbEntry {
                        vlan,
                        mac,
                        slot,
                        gen,
                        age_secs,
                    });
                }
            }
        }
        out.sort_unstable_by_key(|e| (e.vlan, e.mac));
        out
    }

    /// Stored entries, counting expired ones `age` has not removed yet.
    pub fn len(&self) -> usize {
        self.live.0.load(Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ways in the table: about 2x `max_entries`, in whole buckets.
    pub fn capacity(&self) -> usize {
        self.buckets.len() * WAYS
    }

    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    pub fn aging_secs(&self) -> u32 {
        self.aging_secs
    }
}

#[cfg(test)]
mod tests;
