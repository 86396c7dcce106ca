//! Packed rings' event suppression: when the guest is interrupted.
use super::packed_tests::{pop, SIZE, TX};
use super::test_guest::DATA;
use super::test_packed::PackedGuest;
use super::*;

/// A guest at `(slot, wrap)` with a queue there, past its first check (which
/// always interrupts).
fn at(slot: u16, wrap: bool, event_idx: bool) -> (PackedGuest, PackedQueue) {
    let mut g = PackedGuest::new(SIZE).at(slot, wrap);
    g.features.event_idx = event_idx;
    let mut q = g.queue();
    assert!(q.needs_interrupt(&g.mem), "the first check interrupts");
    (g, q)
}

/// Offers, takes and returns `n` chains of `slots` slots each, and
/// publishes them.
fn use_chains(g: &mut PackedGuest, q: &mut PackedQueue, n: u16, slots: u16) {
    for id in 0..n {
        let bufs: Vec<_> = (0..slots).map(|k| (DATA + 0x100 * k as u64, 64, 0)).collect();
        g.offer(id, &bufs);
        assert_eq!(pop(g, q, TX).0, Ok(Pop::Chain));
    }
    for id in 0..n {
        q.add_used(&g.mem, id, 0).unwrap();
    }
    q.publish(&g.mem).unwrap();
    while g.used().is_some() {}
}

/// The rule said plainly: interrupt if the device wrote or skipped the
/// event's slot in the event's lap, i.e. it is among the `n` positions from
/// `(slot, wrap)` on.
fn passed(slot: u16, wrap: bool, n: u16, event: (u16, bool)) -> bool {
    let (mut s, mut w) = (slot, wrap);
    for _ in 0..n {
        if (s, w) == event {
            return true;
        }
        s += 1;
        if s == SIZE {
            (s, w) = (0, !w);
        }
    }
    false
}

#[test]
fn desc_events_interrupt_exactly_when_the_position_is_passed() {
    let mut cases = 0;
    for (slot, wrap) in [(0, true), (3, true), (7, true), (0, false), (6, false), (7, false)] {
        for n in 1..=SIZE {
            for event in (0..SIZE).flat_map(|s| [(s, true), (s, false)]) {
                let (mut g, mut q) = at(slot, wrap, true);
                g.set_event(RING_EVENT_FLAGS_DESC, event.0 | (event.1 as u16) << 15);
                use_chains(&mut g, &mut q, n, 1);
                let want = passed(slot, wrap, n, event);
                assert_eq!(q.needs_interrupt(&g.mem), want, "from ({slot}, {wrap}), {n} used, event {event:?}");
                assert!(!q.needs_interrupt(&g.mem), "nothing new since");
                cases += want as u32;
            }
        }
    }
    assert!(cases > 100);
}

#[test]
fn an_event_inside_a_chain_counts_as_passed() {
    // A chain of three at slots 6, 7, 0: its used descriptor is written at
    // 6, and 7 and 0 (next lap) are skipped over.
    for (event, want) in [((6, true), true), ((7, true), true), ((0, false), true), ((1, false), false), ((5, true), false)] {
        let (mut g, mut q) = at(6, true, true);
        g.set_event(RING_EVENT_FLAGS_DESC, event.0 | (event.1 as u16) << 15);
        use_chains(&mut g, &mut q, 1, 3);
        assert_eq!(q.needs_interrupt(&g.mem), want, "event {event:?}");
    }
}

#[test]
fn two_laps_unchecked_pass_every_event() {
    let (mut g, mut q) = at(2, true, true);
    g.set_event(RING_EVENT_FLAGS_DESC, 5);
    use_chains(&mut g, &mut q, SIZE, 1);
    use_chains(&mut g, &mut q, SIZE, 1);
    assert!(q.needs_interrupt(&g.mem), "back where it was, two laps on");
    // One lap from (2, 1) ends at (1, 0): slot 5 passed in lap 1 only.
    use_chains(&mut g, &mut q, SIZE, 1);
    assert!(!q.needs_interrupt(&g.mem), "(5, wrap 0) not passed");
    use_chains(&mut g, &mut q, SIZE, 1);
    assert!(q.needs_interrupt(&g.mem), "the next lap passes it");
}

#[test]
fn the_flags_decide_otherwise() {
    // (what, EVENT_IDX, driver flags, interrupt once something is used?)
    let cases = [
        ("enable", false, RING_EVENT_FLAGS_ENABLE, true),
        ("disable", false, RING_EVENT_FLAGS_DISABLE, false),
        ("desc without EVENT_IDX: as enable", false, RING_EVENT_FLAGS_DESC, true),
        ("reserved", false, 3, true),
        ("enable with EVENT_IDX", true, RING_EVENT_FLAGS_ENABLE, true),
        ("disable with EVENT_IDX", true, RING_EVENT_FLAGS_DISABLE, false),
        ("reserved with EVENT_IDX", true, 3, true),
    ];
    for (what, event_idx, flags, want) in cases {
        let (mut g, mut q) = at(0, true, event_idx);
        // An event position already passed, which only DESC would read.
        g.set_event(flags, 0x8000);
        use_chains(&mut g, &mut q, 2, 1);
        assert_eq!(q.needs_interrupt(&g.mem), want, "{what}");
        assert_eq!(q.guest_wants_interrupt(&g.mem), flags != RING_EVENT_FLAGS_DISABLE, "{what}");
        if !event_idx {
            assert_eq!(q.needs_interrupt(&g.mem), want, "{what}: no memory of the last check");
        }
    }
}

/// A check while interrupts were off still moves the position on: the
/// next one looks only at what was used after it.
#[test]
fn every_check_moves_the_position_on() {
    let (mut g, mut q) = at(0, true, true);
    g.set_event(RING_EVENT_FLAGS_DISABLE, 0x8001);
    use_chains(&mut g, &mut q, 3, 1);
    assert!(!q.needs_interrupt(&g.mem));
    g.set_event(RING_EVENT_FLAGS_DESC, 0x8001);
    use_chains(&mut g, &mut q, 1, 1);
    assert!(!q.needs_interrupt(&g.mem), "slot 1 was passed before the last check");
    g.set_event(RING_EVENT_FLAGS_DESC, 0x8004);
    use_chains(&mut g, &mut q, 1, 1);
    assert!(q.needs_interrupt(&g.mem));
}

#[test]
fn asking_for_kicks_enables_them_and_says_whether_a_descriptor_waits() {
    for event_idx in [false, true] {
        let (mut g, mut q) = at(3, true, event_idx);
        q.suppress_kicks(&g.mem).unwrap();
        g.offer(0, &[(DATA, 64, 0)]);
        assert_eq!(q.ask_for_kicks(&g.mem), Ok(false), "a descriptor waits: no sleep");
        assert_eq!(pop(&g, &mut q, TX).0, Ok(Pop::Chain));
        assert_eq!(q.ask_for_kicks(&g.mem), Ok(true), "none: sleep until kicked");
        assert_eq!(g.device_flags(), RING_EVENT_FLAGS_ENABLE, "a kick for every buffer");
        q.suppress_kicks(&g.mem).unwrap();
        assert_eq!(g.device_flags(), RING_EVENT_FLAGS_DISABLE);
    }
}
