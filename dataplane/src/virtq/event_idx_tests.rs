//! EVENT_IDX: when the guest is interrupted, and what is never written.
use super::tests::{guest, pop, Guest, SIZE};
use super::*;

use super::test_guest::{AVAIL, DATA, DESC, USED};

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
    around_every_step(|g, q, _, n| publish(g, q, n as u32));
}

/// Every used_event around each step: `add(guest, queue, used index, n)`
/// adds `n` entries, which are published and must interrupt by the plain
/// rule.
fn around_every_step(add: impl Fn(&Guest, &mut SplitQueue, u16, u16)) {
    for old in [0u16, 100, 65530, 65535] {
        for n in 1..=8u16 {
            for d in 0..n + 6 {
                let event = old.wrapping_sub(3).wrapping_add(d);
                let g = with_event_idx();
                let mut q = g.queue_at((0, old));
                q.needs_interrupt(&g.mem);
                g.set_used_event(event);
                add(&g, &mut q, old, n);
                q.publish(&g.mem).unwrap();
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
    assert_eq!(g.queue().features(), RingFeatures { indirect: false, event_idx: true, in_order: false });
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

#[test]
fn asking_for_kicks_names_the_next_entry_or_clears_the_flag_and_says_whether_one_waits() {
    for event_idx in [false, true] {
        let mut g = if event_idx { with_event_idx() } else { guest() };
        let mut q = g.queue();
        q.suppress_kicks(&g.mem).unwrap();
        g.desc(0, DATA, 64, 0, 0);
        g.offer(0);
        assert_eq!(q.ask_for_kicks(&g.mem), Ok(false), "an entry waits: no sleep");
        assert_eq!(pop(&g, &mut q, Direction::DeviceReads).0, Ok(Pop::Chain));
        assert_eq!(q.ask_for_kicks(&g.mem), Ok(true), "empty: sleep until kicked");
        if event_idx {
            assert_eq!(g.avail_event(), 1, "a kick for the next entry");
        } else {
            assert_eq!(g.mem.read_u16(Gpa(USED)).unwrap(), 0, "kicks on");
        }
        q.suppress_kicks(&g.mem).unwrap();
        assert_eq!(g.mem.read_u16(Gpa(USED)).unwrap(), VRING_USED_F_NO_NOTIFY, "and off again");
    }
}

/// An in-order batch, one used entry for `n` chains (the last's, in the
/// batch's first slot), moves the used index as `n` entries do and
/// interrupts as they would, a full wrap of batches included.
#[test]
fn an_in_order_batch_moves_and_interrupts_as_its_chains_would() {
    let heads: Vec<u16> = (0..8).collect();
    around_every_step(|g, q, old, n| {
        q.add_used_in_order(&g.mem, &heads[..n as usize]).unwrap();
        q.publish(&g.mem).unwrap();
        assert_eq!(g.mem.read_u16(Gpa(USED + 2)).unwrap(), old.wrapping_add(n), "old {old}, {n} chains");
        assert_eq!(g.used(old % SIZE), (n as u32 - 1, 0), "old {old}, {n} chains: the last's id, in the first slot");
    });
    let g = with_event_idx();
    let mut q = g.queue();
    publish(&g, &mut q, 1);
    q.needs_interrupt(&g.mem);
    g.set_used_event(5);
    for _ in 0..65536 / 8 {
        q.add_used_in_order(&g.mem, &heads).unwrap();
    }
    q.publish(&g.mem).unwrap();
    assert!(q.needs_interrupt(&g.mem), "back where it was after 65536 chains: not 'nothing published'");
}
