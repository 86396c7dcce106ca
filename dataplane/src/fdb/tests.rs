use super::*;
use Learn::*;

const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

fn mac(n: usize) -> [u8; 6] {
    let [.., a, b, c, d] = n.to_be_bytes();
    [2, 0, a, b, c, d]
}

/// `n` MACs that land in bucket `bucket` (VLAN 1).
fn same_bucket(fdb: &Fdb, bucket: usize, n: usize) -> Vec<[u8; 6]> {
    let hit = |m: &[u8; 6]| fdb.index(encode_key(1, *m)) == bucket;
    (0..).map(mac).filter(hit).take(n).collect()
}

#[test]
fn learn_refresh_vlans_moves() {
    let fdb = Fdb::new(64, 300);
    assert_eq!(fdb.lookup(1, A, 1), None);
    assert_eq!(fdb.learn(1, A, 3, 7, 1), New);
    assert_eq!(fdb.lookup(1, A, 1), Some((3, 7)));
    assert_eq!(fdb.learn(1, A, 3, 7, 1), Known);
    assert_eq!(fdb.learn(1, A, 3, 7, 5), Known);
    assert_eq!(fdb.entries(6)[0].age_secs, 1, "the refresh stored 5");
    // Same MAC, other VLAN: a separate entry.
    assert_eq!(fdb.lookup(2, A, 5), None);
    assert_eq!(fdb.learn(2, A, 4, 7, 5), New);
    assert_eq!(fdb.lookup(1, A, 5), Some((3, 7)));
    assert_eq!(fdb.lookup(2, A, 5), Some((4, 7)));
    // Station moves: another slot, then the same slot, new generation.
    assert_eq!(fdb.learn(1, A, 5, 7, 6), Moved { from: 3 });
    assert_eq!(fdb.lookup(1, A, 6), Some((5, 7)));
    assert_eq!(fdb.learn(1, A, 5, 8, 6), Moved { from: 5 });
    assert_eq!(fdb.lookup(1, A, 6), Some((5, 8)));
    assert_eq!(fdb.len(), 2);
}

#[test]
fn aging() {
    let fdb = Fdb::new(64, 10);
    assert_eq!(fdb.learn(1, A, 3, 0, 100), New);
    assert_eq!(fdb.learn(1, B, 3, 0, 100), New);
    assert_eq!(fdb.lookup(1, A, 110), Some((3, 0)));
    assert_eq!(fdb.lookup(1, A, 111), None);
    assert_eq!(fdb.entries(111), []);
    assert_eq!(fdb.learn(1, A, 4, 0, 111), New, "dead entry reused");
    assert_eq!(fdb.lookup(1, A, 111), Some((4, 0)));
    assert_eq!(fdb.len(), 2, "B is dead but not removed yet");
    assert_eq!(fdb.age(111), 1);
    assert_eq!((fdb.len(), fdb.lookup(1, A, 111)), (1, Some((4, 0))));
    assert_eq!(fdb.age(200), 1);
    assert!(fdb.is_empty());
}

#[test]
fn bound_and_full_bucket() {
    let fdb = Fdb::new(2, 300);
    assert_eq!((fdb.capacity(), fdb.max_entries()), (4, 2));
    assert_eq!(fdb.learn(1, mac(1), 1, 0, 1), New);
    assert_eq!(fdb.learn(1, mac(2), 1, 0, 1), New);
    assert_eq!(fdb.learn(1, mac(3), 1, 0, 1), Full);
    assert_eq!(fdb.learn(1, mac(1), 2, 0, 2), Moved { from: 1 });
    fdb.flush();
    assert_eq!((fdb.len(), fdb.lookup(1, mac(1), 2)), (0, None));
    assert_eq!(fdb.learn(1, mac(3), 1, 0, 2), New);

    let fdb = Fdb::new(64, 10);
    let same = same_bucket(&fdb, 0, WAYS + 1);
    for &m in &same[..WAYS] {
        assert_eq!(fdb.learn(1, m, 1, 0, 1), New);
    }
    assert_eq!(fdb.learn(1, same[WAYS], 1, 0, 1), Full);
    assert!(same[..WAYS].iter().all(|&m| fdb.lookup(1, m, 1).is_some()));
    assert_eq!(fdb.learn(1, same[WAYS], 1, 0, 20), New, "dead way taken");
    assert_eq!(fdb.len(), WAYS);
}

#[test]
fn flushes_and_listing() {
    let fdb = Fdb::new(64, 300);
    for (vlan, m, slot) in [(2, A, 2), (1, B, 2), (4095, A, 1), (1, A, 1), (2, B, 3)] {
        assert_eq!(fdb.learn(vlan, m, slot, 9, 10), New);
    }
    let e = fdb.entries(12);
    let keys: Vec<_> = e.iter().map(|e| (e.vlan, e.mac, e.slot)).collect();
    let sorted = [(1, A, 1), (1, B, 2), (2, A, 2), (2, B, 3), (4095, A, 1)];
    assert_eq!(keys, sorted);
    assert_eq!((e[0].gen, e[0].age_secs), (9, 2));
    fdb.flush_port(2);
    assert_eq!((fdb.lookup(1, B, 12), fdb.lookup(2, A, 12)), (None, None));
    assert_eq!(fdb.len(), 3);
    fdb.flush_vlan(2);
    assert_eq!(fdb.lookup(2, B, 12), None);
    assert_eq!(fdb.lookup(1, A, 12), Some((1, 9)));
    assert_eq!(fdb.len(), 2);
}

#[test]
fn insert_with_stale_snapshot_backs_off() {
    // A PMD read the bucket as [X, -, -, -] and chose way 1 for A. Then
    // X was removed and another PMD stored A in way 0: storing A again
    // would duplicate it.
    let fdb = Fdb::new(64, 300);
    let [x, a] = same_bucket(&fdb, 0, 2)[..] else {
        unreachable!()
    };
    assert_eq!(fdb.learn(1, x, 1, 0, 1), New);
    let b = &fdb.buckets[0];
    let snap: Snap = std::array::from_fn(|i| read(b, i).unwrap());
    fdb.flush();
    assert_eq!(fdb.learn(1, a, 2, 0, 1), New);
    let (key, nv) = (encode_key(1, a), encode_val(3, 0, 1));
    assert_eq!(fdb.insert(b, 1, &snap, key, nv), Busy);
    assert_eq!((fdb.len(), fdb.entries(1).len()), (1, 1));
}

#[test]
fn concurrent_learn_and_lookup() {
    const KEYS: usize = 96;
    const WRITERS: usize = 4;
    // Writer w stores key k as (slot 1 + k + 1000 w, gen 7 k + w): a
    // reader can tell whether a value was written for the key it read.
    fn port(k: usize, w: usize) -> (u16, u16) {
        ((1 + k + 1000 * w) as u16, (7 * k + w) as u16)
    }
    fn valid(k: usize, (slot, gen): (u16, u16)) -> bool {
        let w = usize::from(slot.max(1) - 1) / 1000;
        w < WRITERS && port(k, w) == (slot, gen)
    }
    // 4 keys in each of 24 buckets: full buckets, so any duplicate
    // would crowd out a key (Full). The bound is not reached.
    let fdb = Fdb::new(128, 10_000);
    let mut keys: Vec<_> = (0..KEYS / WAYS)
        .flat_map(|b| same_bucket(&fdb, b, WAYS))
        .collect();
    keys.sort_unstable();
    let start = std::sync::Barrier::new(WRITERS + 3);
    std::thread::scope(|sc| {
        for w in 0..WRITERS {
            let (fdb, keys, start) = (&fdb, &keys, &start);
            sc.spawn(move || {
                start.wait();
                // Each writer in its own order: snapshots differ.
                for round in 0..1000 {
                    for j in 0..KEYS {
                        let k = (j * (2 * w + 1) + round) % KEYS;
                        let ((slot, gen), now) = (port(k, w), round as u32 + 1);
                        assert_ne!(fdb.learn(1, keys[k], slot, gen, now), Full);
                    }
                }
            });
        }
        for _ in 0..2 {
            sc.spawn(|| {
                start.wait();
                for _ in 0..1000 {
                    for (k, &m) in keys.iter().enumerate() {
                        if let Some(got) = fdb.lookup(1, m, 1) {
                            assert!(valid(k, got), "key {k}: torn value {got:?}");
                        }
                    }
                }
            });
        }
        // Churn: removals racing inserts and lookups.
        sc.spawn(|| {
            start.wait();
            (0..300).for_each(|_| fdb.flush());
        });
    });
    // No key stored twice, and the count matches the table.
    let e = fdb.entries(1000);
    assert!(e.windows(2).all(|p| p[0].mac != p[1].mac));
    for e in &e {
        assert!(valid(keys.binary_search(&e.mac).unwrap(), (e.slot, e.gen)));
    }
    assert_eq!(fdb.len(), e.len());
    for &m in &keys {
        assert_ne!(fdb.learn(1, m, 1, 0, 1000), Full);
    }
    assert_eq!(fdb.len(), KEYS);
}

#[test]
fn regression_the_bucket_hash_is_keyed() {
    // MACs chosen to share a bucket of one table are spread in another:
    // a guest cannot aim at a victim's bucket without knowing the key.
    let (a, b) = (Fdb::new(1024, 300), Fdb::new(1024, 300));
    let aimed = same_bucket(&a, 0, 8);
    let spread = aimed.iter().map(|&m| b.index(encode_key(1, m))).collect::<std::collections::HashSet<_>>();
    assert!(spread.len() > 1, "the same 8 MACs all share a bucket in another table: {spread:?}");
}

#[test]
fn per_port_limits_count_moves_reuse_and_removal() {
    let fdb = Fdb::new(64, 10);
    fdb.set_port_limit(1, 2);
    assert_eq!(fdb.learn(1, mac(1), 1, 0, 1), New);
    assert_eq!(fdb.learn(1, mac(2), 1, 0, 1), New);
    assert_eq!(fdb.learn(1, mac(3), 1, 0, 1), Full, "port 1 at its limit");
    assert_eq!(fdb.learn(1, mac(3), 2, 0, 1), New, "port 2 has no limit");
    assert_eq!(fdb.learn(1, mac(3), 1, 0, 2), Full, "no move into a full port");
    assert_eq!(fdb.learn(1, mac(1), 2, 0, 2), Moved { from: 1 });
    assert_eq!((fdb.port_entries(1), fdb.port_entries(2)), (1, 2));
    assert_eq!(fdb.learn(1, mac(3), 1, 0, 3), Moved { from: 2 }, "room again");
    fdb.flush_port(1);
    assert_eq!((fdb.port_entries(1), fdb.port_entries(2)), (0, 1));
    // A dead entry of port 2 reused by port 1 moves the count.
    assert_eq!(fdb.learn(1, mac(1), 1, 0, 20), New);
    assert_eq!((fdb.port_entries(1), fdb.port_entries(2)), (1, 0));
}
