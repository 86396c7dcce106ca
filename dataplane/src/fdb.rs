//! MAC learning table (forwarding database), shared by the PMD threads
//! without locks.
//!
//! Semantics follow an L2 learning switch (Open vSwitch NORMAL): every VLAN
//! is its own learning domain, so the same MAC may be known in two VLANs on
//! two ports. `learn` runs on the source MAC of each received frame: it adds
//! the station (`New`), refreshes its timestamp (`Known`), or records a
//! station move (`Moved`) when the MAC shows up on another port slot, or on
//! the same slot after the port was replaced (another generation). An entry
//! not seen for more than `aging_secs` is absent for `lookup`, may be
//! overwritten by learning, and is deleted by `age`. At most `max_entries`
//! entries exist; live entries are never evicted, so when a new station does
//! not fit (its bucket holds 4 live entries, or the bound is reached) `learn`
//! says `Full` and the caller drops the frame, counted as "MAC table full": a
//! MAC flood cannot push known stations out and turn the switch into a hub.
//!
//! Concurrency: a fixed set-associative table (4 ways per bucket, buckets
//! sized for 2x `max_entries` so a full bucket is rare), allocated once. Each
//! way has a sequence lock; readers never write shared memory and never
//! wait, and a way that is being written reads as a miss (the frame is
//! flooded, which L2 allows). Writers never wait either: a way held by
//! another writer gives `Busy`, and the station's next frame retries. The
//! steady-state write, the once-a-second timestamp refresh, is one CAS on the
//! value word outside the sequence lock, so it never makes a reader miss.
//! Inserting a new key validates the rest of its bucket so that two threads
//! learning the same station at once cannot store it twice (see `insert`).
//! Control-plane calls walk the table one way at a time, spinning briefly on
//! busy ways, and never hold more than one way.
//!
//! Trade-offs: `len` counts expired entries until `age` removes them (learning
//! reuses them meanwhile); a station whose bucket is full is refused even if
//! other buckets have room; a lookup racing a write of the same entry misses.
use std::hint::spin_loop;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize};

/// Ways (entry positions) per bucket. "Way" is used below so as not to
/// confuse a table position with a port slot.
const WAYS: usize = 4;

// Key word: bit 63 valid, bits 60..63 zero, bits 48..60 VLAN ID, bits 0..48
// the MAC read as a big-endian number, so comparing keys orders by (VLAN,
// MAC). 0 (valid clear) is an empty way. One word means a key is compared
// and replaced as a unit.
const KEY_VALID: u64 = 1 << 63;
const VLAN_SHIFT: u32 = 48;
const VLAN_MASK: u16 = 0x0fff;
const MAC_MASK: u64 = (1 << VLAN_SHIFT) - 1;
// Value word: bits 48..64 port slot, bits 32..48 port generation, bits 0..32
// last_seen. One word means a refresh is one CAS and a reader sees a slot,
// gen and time that were written together.
const SLOT_SHIFT: u32 = 48;
const GEN_SHIFT: u32 = 32;

const _: () = assert!(6 * 8 == VLAN_SHIFT, "MAC fills bits 0..48");
const _: () = assert!(
    VLAN_SHIFT + VLAN_MASK.count_ones() < 63,
    "VLAN below the valid bit"
);
const _: () = assert!(GEN_SHIFT == u32::BITS && SLOT_SHIFT == GEN_SHIFT + u16::BITS);
const _: () = assert!(std::mem::size_of::<Bucket>() == 128 && std::mem::align_of::<Bucket>() == 64);
const _: () = assert!(
    std::mem::offset_of!(Bucket, val) == 48,
    "probe line holds seqs and keys"
);

/// What `learn` did with a source MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learn {
    /// Already known on this port; refreshed, or already fresh this second.
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

/// A bucket's ways side by side, arrays per field: a probe loads the 4 seqs
/// and 4 keys from the first cache line (a miss costs one line, a hit in way
/// 0 or 1 too) instead of 4 scattered lines. Aligned so that two buckets
/// never share a line, i.e. writers to different buckets never false-share.
#[derive(Default)]
#[repr(C, align(64))]
struct Bucket {
    seq: [AtomicU32; WAYS],
    key: [AtomicU64; WAYS],
    val: [AtomicU64; WAYS],
}

/// The live count is written by inserts and removals; keep it off the line
/// that every lookup reads (`buckets`, `shift`).
#[repr(align(64))]
struct Padded(AtomicUsize);

/// The table; share it as `Arc<Fdb>`, every method takes `&self`.
pub struct Fdb {
    buckets: Box<[Bucket]>,
    /// 64 - log2(bucket count): the hash keeps the top bits of the product.
    shift: u32,
    max_entries: usize,
    aging_secs: u32,
    /// Ways holding a valid key (expired or not). Raised before a key is
    /// stored and lowered after it is cleared, so it never under-counts and
    /// the bound holds.
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

/// A consistent (seq, key, value) of one way, or None while a writer holds
/// it or if one overlapped our reads.
fn read(b: &Bucket, i: usize) -> Option<(u32, u64, u64)> {
    // Acquire pairs with the writer's Release unlock: having seen its even
    // seq, we see the key and value it stored before unlocking.
    let s = b.seq[i].load(Acquire);
    if s & 1 != 0 {
        return None;
    }
    let k = b.key[i].load(Relaxed);
    let v = b.val[i].load(Relaxed);
    // If a load above saw a store of a writer that locked after our first
    // load, this fence pairs with the Release fence in `lock`, so the reload
    // sees the changed seq: a torn key/value pair is always caught.
    fence(Acquire);
    (b.seq[i].load(Relaxed) == s).then_some((s, k, v))
}

/// Spin until way `i` reads consistently; control plane only (writers hold a
/// way for a few stores).
fn read_stable(b: &Bucket, i: usize) -> (u32, u64, u64) {
    loop {
        match read(b, i) {
            Some(x) => return x,
            None => spin_loop(),
        }
    }
}

/// Take way `i`, which `read` saw as `s`; fails if it was written since.
fn lock(b: &Bucket, i: usize, s: u32) -> bool {
    // SeqCst: `insert` relies on a total order of locks and validation loads.
    // Its Acquire half orders our stores after the previous writer's.
    if b.seq[i]
        .compare_exchange(s, s + 1, SeqCst, Relaxed)
        .is_err()
    {
        return false;
    }
    // Keeps our data stores from becoming visible before the odd seq; the
    // reader's Acquire fence pairs with it (see `read`).
    fence(Release);
    true
}

fn unlock(b: &Bucket, i: usize, s: u32) {
    // Release: a reader that sees the new even seq sees our stores.
    b.seq[i].store(s.wrapping_add(2), Release);
}

impl Fdb {
    pub fn new(max_entries: usize, aging_secs: u32) -> Self {
        let n = (max_entries.saturating_mul(2) / WAYS)
            .max(1)
            .checked_next_power_of_two()
            .expect("fdb size too large");
        Fdb {
            buckets: (0..n).map(|_| Bucket::default()).collect(),
            shift: 64 - n.trailing_zeros(),
            max_entries,
            aging_secs,
            live: Padded(AtomicUsize::new(0)),
        }
    }

    /// Fibonacci hashing: multiplying by the odd constant 2^64/phi carries
    /// every key bit into the high bits of the product, which we keep. One
    /// multiply; MACs of one vendor (same OUI, sequential serials) and the
    /// same MAC in several VLANs still spread.
    fn bucket(&self, key: u64) -> &Bucket {
        let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // A shift of 64 (one bucket) is not a valid shift: index 0.
        &self.buckets[h.checked_shr(self.shift).unwrap_or(0) as usize]
    }

    fn expired(&self, v: u64, now: u32) -> bool {
        // Saturating: another thread's `now` may run a second behind.
        now.saturating_sub(decode_val(v).2) > self.aging_secs
    }

    /// The port of (vlan, mac) if known and not expired. Never waits.
    pub fn lookup(&self, vlan: u16, mac: [u8; 6], now: u32) -> Option<(u16, u16)> {
        let key = encode_key(vlan, mac);
        let b = self.bucket(key);
        for i in 0..WAYS {
            // Same protocol as `read`, but the value is loaded only for the
            // matching key. Keys are unique in a bucket, so skipping a way
            // being written loses at most the entry it holds.
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

    /// Learn that (vlan, mac) is reachable through port (slot, gen). Never
    /// waits.
    pub fn learn(&self, vlan: u16, mac: [u8; 6], slot: u16, gen: u16, now: u32) -> Learn {
        let key = encode_key(vlan, mac);
        let b = self.bucket(key);
        let nv = encode_val(slot, gen, now);
        let mut snap = [(0, 0, 0); WAYS];
        let mut unstable = false;
        for (i, sn) in snap.iter_mut().enumerate() {
            match read(b, i) {
                Some((s, k, v)) if k == key => return self.update(b, i, s, v, nv),
                Some(x) => *sn = x,
                None => unstable = true,
            }
        }
        if unstable {
            // The way being written may be this very key: inserting it
            // elsewhere could store it twice.
            return Learn::Busy;
        }
        let is_valid = |i: &usize| snap[*i].1 & KEY_VALID != 0;
        // A dead entry first: reusing it needs no room under the bound.
        let dead = (0..WAYS).find(|i| is_valid(i) && self.expired(snap[*i].2, now));
        match dead.or_else(|| (0..WAYS).find(|i| !is_valid(i))) {
            Some(i) => self.insert(b, i, &snap, key, nv),
            None => Learn::Full,
        }
    }

    /// `key` is in way `i`, seen as seq `s`, value `v`; `nv` is what to learn.
    fn update(&self, b: &Bucket, i: usize, s: u32, v: u64, nv: u64) -> Learn {
        let (from, _, seen) = decode_val(v);
        let (now, port) = (nv as u32, nv >> GEN_SHIFT);
        if self.expired(v, now) || v >> GEN_SHIFT != port {
            // Redirecting traffic must be tied to the key we read: the lock
            // CAS fails if the way was rewritten since (no ABA). The key
            // stays, so unlike `insert` no other way needs checking.
            if !Self::replace(b, i, s, v, None, nv) {
                return Learn::Busy;
            }
            return match self.expired(v, now) {
                true => Learn::New,
                false => Learn::Moved { from },
            };
        }
        if seen >= now {
            // At most one write per entry per second: it dirties a line that
            // every PMD forwarding to this station reads.
            return Learn::Known;
        }
        // Refresh outside the lock: one word, the key is unchanged, so a
        // reader sees the old or the new time, never a miss. A failed CAS
        // means a writer got there first. (ABA: if the way was meanwhile
        // re-learned for another key with this exact old value, we refresh
        // that entry; it only lives up to `aging_secs` longer.)
        match b.val[i].compare_exchange(v, nv, Relaxed, Relaxed) {
            Ok(_) => Learn::Known,
            Err(cur) if cur >> GEN_SHIFT == port && cur as u32 >= now => Learn::Known,
            Err(_) => Learn::Busy,
        }
    }

    /// Replace way `i` (seen as `s`, `v`) with `nv`, and the key if given.
    /// The value is swapped by CAS so that a refresh that slipped in since
    /// `read` (see `update`) makes us back off rather than be lost.
    fn replace(b: &Bucket, i: usize, s: u32, v: u64, key: Option<u64>, nv: u64) -> bool {
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

    /// Store `key` in way `i`, empty or dead in the snapshot `snap` of the
    /// whole bucket, in which `key` is absent.
    fn insert(
        &self,
        b: &Bucket,
        i: usize,
        snap: &[(u32, u64, u64); WAYS],
        key: u64,
        nv: u64,
    ) -> Learn {
        let (s, old_key, v) = snap[i];
        if !lock(b, i, s) {
            return Learn::Busy;
        }
        // Two threads learning the same station may pick different ways
        // (their snapshots or clocks differ). Each holds its way, then checks
        // that no other way changed since its snapshot. The lock and these
        // loads are SeqCst, so of two racing inserters at least one sees the
        // other's lock and backs off: a key is never stored twice.
        let unchanged = (0..WAYS).all(|j| j == i || b.seq[j].load(SeqCst) == snap[j].0);
        let empty = old_key & KEY_VALID == 0;
        let out = if !unchanged {
            Learn::Busy
        } else if empty && !self.reserve() {
            Learn::Full
        } else if b.val[i].compare_exchange(v, nv, Relaxed, Relaxed).is_ok() {
            b.key[i].store(key, Relaxed);
            Learn::New
        } else {
            // The dead entry was refreshed by a PMD whose clock calls it alive.
            if empty {
                self.live.0.fetch_sub(1, Relaxed);
            }
            Learn::Busy
        };
        unlock(b, i, s);
        out
    }

    /// Claim room for one more entry under the bound. Relaxed: the count
    /// publishes no data, it is only a budget.
    fn reserve(&self) -> bool {
        let max = self.max_entries;
        let up = |n: usize| (n < max).then_some(n + 1);
        self.live.0.fetch_update(Relaxed, Relaxed, up).is_ok()
    }

    /// Remove every entry for which `pred(key, value)` holds; returns how
    /// many. Holds one way at a time.
    fn remove_where(&self, pred: impl Fn(u64, u64) -> bool) -> usize {
        let mut removed = 0;
        for b in self.buckets.iter() {
            for i in 0..WAYS {
                loop {
                    let (s, k, v) = read_stable(b, i);
                    if k & KEY_VALID == 0 || !pred(k, v) {
                        break;
                    }
                    // The CAS on the value keeps a concurrent refresh (a
                    // PMD just saw the station) from being wiped by `age`.
                    if Self::replace(b, i, s, v, Some(0), 0) {
                        self.live.0.fetch_sub(1, Relaxed);
                        removed += 1;
                        break;
                    }
                    spin_loop();
                }
            }
        }
        removed
    }

    /// Remove expired entries; returns how many. Meant for the control
    /// thread, about once a second.
    pub fn age(&self, now: u32) -> usize {
        self.remove_where(|_, v| self.expired(v, now))
    }

    /// Remove all entries.
    pub fn flush(&self) {
        self.remove_where(|_, _| true);
    }

    /// Remove the entries that point at port `slot` (any generation).
    pub fn flush_port(&self, slot: u16) {
        self.remove_where(|_, v| decode_val(v).0 == slot);
    }

    /// Remove the entries of one VLAN.
    pub fn flush_vlan(&self, vlan: u16) {
        self.remove_where(|k, _| decode_key(k).0 == vlan);
    }

    /// Live (not expired) entries, sorted by VLAN, then MAC.
    pub fn entries(&self, now: u32) -> Vec<FdbEntry> {
        let mut out = Vec::new();
        for b in self.buckets.iter() {
            for i in 0..WAYS {
                let (_, k, v) = read_stable(b, i);
                if k & KEY_VALID == 0 || self.expired(v, now) {
                    continue;
                }
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
        out.sort_unstable_by_key(|e| (e.vlan, e.mac));
        out
    }

    /// Stored entries, including expired ones `age` has not removed yet.
    pub fn len(&self) -> usize {
        self.live.0.load(Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ways in the table (2x `max_entries`, rounded up to whole buckets).
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
mod tests {
    use super::*;
    use std::thread;

    const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
    const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

    fn mac(n: usize) -> [u8; 6] {
        let [.., a, b, c, d] = n.to_be_bytes();
        [0x02, 0, a, b, c, d]
    }

    #[test]
    fn learn_lookup_refresh_and_vlans() {
        let fdb = Fdb::new(64, 300);
        assert_eq!(fdb.lookup(1, A, 1), None);
        assert_eq!(fdb.learn(1, A, 3, 7, 1), Learn::New);
        assert_eq!(fdb.lookup(1, A, 1), Some((3, 7)));
        assert_eq!(fdb.learn(1, A, 3, 7, 1), Learn::Known);
        assert_eq!(fdb.learn(1, A, 3, 7, 5), Learn::Known);
        assert_eq!(fdb.entries(6)[0].age_secs, 1, "refresh stored the time");
        assert_eq!(fdb.lookup(2, A, 5), None, "VLANs are separate");
        assert_eq!(fdb.learn(2, A, 4, 7, 5), Learn::New);
        assert_eq!(
            (fdb.lookup(1, A, 5), fdb.lookup(2, A, 5)),
            (Some((3, 7)), Some((4, 7)))
        );
        assert_eq!(fdb.len(), 2);
    }

    #[test]
    fn station_move_and_generation() {
        let fdb = Fdb::new(64, 300);
        assert_eq!(fdb.learn(1, A, 3, 7, 1), Learn::New);
        assert_eq!(fdb.learn(1, A, 5, 7, 2), Learn::Moved { from: 3 });
        assert_eq!(fdb.lookup(1, A, 2), Some((5, 7)));
        assert_eq!(
            fdb.learn(1, A, 5, 8, 2),
            Learn::Moved { from: 5 },
            "port replaced"
        );
        assert_eq!(fdb.lookup(1, A, 2), Some((5, 8)));
        assert_eq!(fdb.len(), 1);
    }

    #[test]
    fn aging() {
        let fdb = Fdb::new(64, 10);
        assert_eq!(fdb.learn(1, A, 3, 0, 100), Learn::New);
        assert_eq!(fdb.learn(1, B, 3, 0, 100), Learn::New);
        assert_eq!(fdb.lookup(1, A, 110), Some((3, 0)));
        assert_eq!(fdb.lookup(1, A, 111), None);
        assert_eq!(fdb.entries(111), vec![]);
        assert_eq!(fdb.learn(1, A, 4, 0, 111), Learn::New, "dead entry reused");
        assert_eq!(fdb.lookup(1, A, 111), Some((4, 0)));
        assert_eq!(fdb.len(), 2, "B is dead but not yet removed");
        assert_eq!(fdb.age(111), 1);
        assert_eq!((fdb.len(), fdb.lookup(1, A, 111)), (1, Some((4, 0))));
        assert_eq!(fdb.age(200), 1);
        assert!(fdb.is_empty());
    }

    #[test]
    fn bound_and_flush() {
        let fdb = Fdb::new(2, 300);
        assert_eq!(
            (fdb.capacity(), fdb.max_entries(), fdb.aging_secs()),
            (4, 2, 300)
        );
        assert_eq!(fdb.learn(1, mac(1), 1, 0, 1), Learn::New);
        assert_eq!(fdb.learn(1, mac(2), 1, 0, 1), Learn::New);
        assert_eq!(fdb.learn(1, mac(3), 1, 0, 1), Learn::Full);
        assert_eq!(
            fdb.learn(1, mac(1), 1, 0, 2),
            Learn::Known,
            "known stations still refresh"
        );
        fdb.flush();
        assert_eq!((fdb.len(), fdb.lookup(1, mac(1), 2)), (0, None));
        assert_eq!(fdb.learn(1, mac(3), 1, 0, 2), Learn::New);
    }

    #[test]
    fn full_bucket() {
        let fdb = Fdb::new(64, 10);
        let same: Vec<_> = (0..)
            .map(mac)
            .filter(|&m| std::ptr::eq(fdb.bucket(encode_key(1, m)), &fdb.buckets[0]))
            .take(WAYS + 1)
            .collect();
        for &m in &same[..WAYS] {
            assert_eq!(fdb.learn(1, m, 1, 0, 1), Learn::New);
        }
        assert_eq!(fdb.learn(1, same[WAYS], 1, 0, 1), Learn::Full);
        assert!(same[..WAYS]
            .iter()
            .all(|&m| fdb.lookup(1, m, 1) == Some((1, 0))));
        assert_eq!(
            fdb.learn(1, same[WAYS], 1, 0, 20),
            Learn::New,
            "a dead way is taken"
        );
        assert_eq!(fdb.len(), WAYS);
    }

    #[test]
    fn flush_port_and_vlan() {
        let fdb = Fdb::new(64, 300);
        for (vlan, m, slot) in [(1, A, 1), (1, B, 2), (2, A, 2), (2, B, 3)] {
            assert_eq!(fdb.learn(vlan, m, slot, 0, 1), Learn::New);
        }
        fdb.flush_port(2);
        assert_eq!((fdb.lookup(1, B, 1), fdb.lookup(2, A, 1)), (None, None));
        assert_eq!(fdb.len(), 2);
        fdb.flush_vlan(1);
        assert_eq!(
            (fdb.lookup(1, A, 1), fdb.lookup(2, B, 1)),
            (None, Some((3, 0)))
        );
        assert_eq!(fdb.len(), 1);
    }

    #[test]
    fn entries_sorted() {
        let fdb = Fdb::new(64, 300);
        for (vlan, m) in [(2, A), (1, B), (4095, A), (1, A)] {
            assert_eq!(fdb.learn(vlan, m, vlan, 9, 10), Learn::New);
        }
        let e = fdb.entries(12);
        let keys: Vec<_> = e.iter().map(|e| (e.vlan, e.mac)).collect();
        assert_eq!(keys, [(1, A), (1, B), (2, A), (4095, A)]);
        let first = FdbEntry {
            vlan: 1,
            mac: A,
            slot: 1,
            gen: 9,
            age_secs: 2,
        };
        assert_eq!(e[0], first);
    }

    #[test]
    fn concurrent_learn_and_lookup() {
        const KEYS: usize = 256;
        const WRITERS: usize = 4;
        // Writer w stores key k as (slot k + 1000 w, gen 7 k + w), so a
        // reader can tell whether a value was written for the key it read.
        fn port(k: usize, w: usize) -> (u16, u16) {
            ((k + 1000 * w) as u16, (7 * k + w) as u16)
        }
        fn valid(k: usize, got: (u16, u16)) -> bool {
            let w = usize::from(got.0) / 1000;
            w < WRITERS && port(k, w) == got
        }
        let fdb = Fdb::new(4096, 300);
        thread::scope(|sc| {
            for w in 0..WRITERS {
                let fdb = &fdb;
                sc.spawn(move || {
                    for round in 0..200 {
                        // Round 0: all writers insert the same keys at once.
                        for j in 0..KEYS {
                            let k = (j + round * w) % KEYS;
                            let (slot, gen) = port(k, w);
                            assert_ne!(fdb.learn(1, mac(k), slot, gen, 1), Learn::Full);
                        }
                    }
                });
            }
            for _ in 0..2 {
                sc.spawn(|| {
                    for _ in 0..200 {
                        for k in 0..KEYS {
                            if let Some(got) = fdb.lookup(1, mac(k), 1) {
                                assert!(valid(k, got), "key {k}: torn value {got:?}");
                            }
                        }
                    }
                });
            }
        });
        // One entry per key: no key was stored twice, none was lost.
        assert_eq!(fdb.len(), KEYS);
        let e = fdb.entries(1);
        assert_eq!(e.len(), KEYS);
        for (k, e) in e.iter().enumerate() {
            assert_eq!((e.vlan, e.mac), (1, mac(k)));
            assert!(valid(k, (e.slot, e.gen)));
        }
    }
}
