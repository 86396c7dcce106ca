//! The flow table as a PMD thread sees it: an immutable snapshot, flows in
//! priority order (first hit wins), each with its actions and counters;
//! and the thread's exact-match cache in front of it.
//!
//! The control side keeps the table that OpenFlow edits and hands each
//! thread a new snapshot in its plan; the counters (`FlowStats`) are
//! shared by every snapshot that holds the flow, so they survive edits of
//! other flows. A thread's cache lives with its plan: a new snapshot comes
//! with an empty cache, so no entry can name a flow of an older table.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use super::key::{FlowKey, Match};
use crate::parse::Mac;

/// What a flow does with a packet, in order. OpenFlow port numbers: a
/// port's number is its slot plus one (`port_no`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Output(u16),
    InPort,
    /// Every port but the input (OpenFlow's FLOOD and ALL: no port here is
    /// kept out of floods).
    Flood,
    All,
    /// The switch's own L2 learning pipeline.
    Normal,
    /// To the controller, the first `max_len` bytes (0xffff: all).
    Controller(u16),
    /// PACKET_OUT only: the packet goes through the flow table.
    Table,
    PushVlan,
    PopVlan,
    SetEthSrc(Mac),
    SetEthDst(Mac),
    /// A tagged packet's VLAN id (an untagged one is left alone).
    SetVlanVid(u16),
}

/// A port slot's OpenFlow port number.
#[inline]
pub fn port_no(slot: u16) -> u16 {
    slot + 1
}

impl Action {
    /// One word each: how a PACKET_OUT's actions cross the injection ring.
    pub fn to_word(self) -> u64 {
        let (tag, arg): (u64, u64) = match self {
            Action::Output(p) => (0, p.into()),
            Action::InPort => (1, 0),
            Action::Flood => (2, 0),
            Action::All => (3, 0),
            Action::Normal => (4, 0),
            Action::Controller(n) => (5, n.into()),
            Action::Table => (6, 0),
            Action::PushVlan => (7, 0),
            Action::PopVlan => (8, 0),
            Action::SetEthSrc(m) => (9, mac48(&m)),
            Action::SetEthDst(m) => (10, mac48(&m)),
            Action::SetVlanVid(v) => (11, v.into()),
        };
        tag << 56 | arg
    }

    pub fn from_word(w: u64) -> Option<Action> {
        let arg = w & ((1 << 56) - 1);
        let mac = || -> Mac { arg.to_be_bytes()[2..8].try_into().expect("6 bytes") };
        Some(match w >> 56 {
            0 => Action::Output(arg as u16),
            1 => Action::InPort,
            2 => Action::Flood,
            3 => Action::All,
            4 => Action::Normal,
            5 => Action::Controller(arg as u16),
            6 => Action::Table,
            7 => Action::PushVlan,
            8 => Action::PopVlan,
            9 => Action::SetEthSrc(mac()),
            10 => Action::SetEthDst(mac()),
            11 => Action::SetVlanVid(arg as u16),
            _ => return None,
        })
    }
}

fn mac48(m: &Mac) -> u64 {
    m.iter().fold(0, |acc, &b| acc << 8 | u64::from(b))
}

/// A flow's counters, written by every PMD thread that hits it.
#[derive(Debug, Default)]
pub struct FlowStats {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
}

/// One flow of a snapshot.
#[derive(Debug)]
pub struct FlowEntry {
    value: FlowKey,
    mask: FlowKey,
    pub priority: u16,
    pub cookie: u64,
    pub actions: Box<[Action]>,
    pub stats: Arc<FlowStats>,
    /// Priority 0, matching everything: its packets reach a controller as
    /// table misses (OpenFlow's NO_MATCH), not as an action's.
    pub table_miss: bool,
    /// Its actions are exactly NORMAL: the packet takes the L2 path.
    normal_only: bool,
}

impl FlowEntry {
    pub fn new(m: &Match, priority: u16, cookie: u64, actions: Vec<Action>, stats: Arc<FlowStats>) -> FlowEntry {
        let (value, mask) = m.compile();
        let normal_only = actions == [Action::Normal];
        let table_miss = priority == 0 && *m == Match::default();
        FlowEntry { value, mask, priority, cookie, actions: actions.into(), stats, table_miss, normal_only }
    }

    #[inline]
    fn hits(&self, k: &FlowKey) -> bool {
        k.0.iter().zip(&self.mask.0).zip(&self.value.0).all(|((w, m), v)| w & m == *v)
    }
}

/// The flows in force, highest priority first.
#[derive(Debug, Default)]
pub struct FlowTable {
    flows: Vec<FlowEntry>,
    /// Packets that matched no flow (OpenFlow's lookups less matches).
    pub misses: AtomicU64,
}

impl FlowTable {
    /// Flows of equal priority keep the order given (OpenFlow leaves
    /// overlapping ones of one priority undefined).
    pub fn new(mut flows: Vec<FlowEntry>) -> FlowTable {
        flows.sort_by_key(|f| std::cmp::Reverse(f.priority));
        FlowTable { flows, misses: AtomicU64::new(0) }
    }

    pub fn flow(&self, i: u32) -> &FlowEntry {
        &self.flows[i as usize]
    }

    /// The first flow `k` hits.
    pub fn lookup(&self, k: &FlowKey) -> Option<u32> {
        self.flows.iter().position(|f| f.hits(k)).map(|i| i as u32)
    }
}

/// A packet's fate by the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hit {
    /// No flow, or a NORMAL-only one: the L2 path.
    Normal,
    /// Flow `i`'s actions.
    Flow(u32),
}

const EMC_ENTRIES: usize = 4096;
const NO_FLOW: u32 = u32::MAX;

#[derive(Clone, Copy, Default)]
struct EmcEntry {
    key: FlowKey,
    /// The flow, or `NO_FLOW` for a miss; `used` false: empty.
    flow: u32,
    used: bool,
}

/// One thread's exact-match cache: a packet's whole key to the flow it
/// hit (or that it hit none), so a stream of one flow is classified with
/// one hash and one compare whatever the table holds.
pub struct Emc {
    entries: Box<[EmcEntry]>,
}

impl Default for Emc {
    fn default() -> Self {
        Emc { entries: vec![EmcEntry::default(); EMC_ENTRIES].into_boxed_slice() }
    }
}

impl Emc {
    /// Classifies `k` in `table`, counting `len` bytes on the flow it hits.
    #[inline]
    pub fn classify(&mut self, table: &FlowTable, k: &FlowKey, len: usize) -> Hit {
        let e = &mut self.entries[k.hash() as usize & (EMC_ENTRIES - 1)];
        let flow = if e.used && e.key == *k {
            e.flow
        } else {
            let flow = table.lookup(k).unwrap_or(NO_FLOW);
            *e = EmcEntry { key: *k, flow, used: true };
            flow
        };
        if flow == NO_FLOW {
            table.misses.fetch_add(1, Relaxed);
            return Hit::Normal;
        }
        let f = table.flow(flow);
        f.stats.packets.fetch_add(1, Relaxed);
        f.stats.bytes.fetch_add(len as u64, Relaxed);
        if f.normal_only {
            Hit::Normal
        } else {
            Hit::Flow(flow)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::key::{ETHERTYPE_IPV4, VID_PRESENT};

    fn entry(m: Match, prio: u16, actions: Vec<Action>) -> FlowEntry {
        FlowEntry::new(&m, prio, prio.into(), actions, Arc::default())
    }

    fn key(in_port: u16, eth_type: u16, vid: u16) -> FlowKey {
        FlowKey([u64::from(in_port) | u64::from(eth_type) << 16 | u64::from(vid) << 32, 0, 0, 0, 0, 0, 0, 0])
    }

    #[test]
    fn highest_priority_wins_whatever_the_order() {
        let t = FlowTable::new(vec![
            entry(Match::default(), 0, vec![Action::Controller(0xffff)]),
            entry(Match { in_port: Some(1), ..Match::default() }, 10, vec![Action::Output(2)]),
            entry(Match { in_port: Some(1), eth_type: Some(ETHERTYPE_IPV4), ..Match::default() }, 20, vec![]),
        ]);
        let hit = |k: &FlowKey| t.lookup(k).map(|i| t.flow(i).priority);
        assert_eq!(hit(&key(1, ETHERTYPE_IPV4, 0)), Some(20));
        assert_eq!(hit(&key(1, 0x0806, 0)), Some(10));
        assert_eq!(hit(&key(2, 0x0806, 0)), Some(0));
        assert!(t.flow(t.lookup(&key(2, 0x0806, 0)).unwrap()).table_miss);
        assert!(!t.flow(t.lookup(&key(1, 0x0806, 0)).unwrap()).table_miss);
    }

    #[test]
    fn the_cache_gives_what_the_table_gives_and_counts() {
        let t = FlowTable::new(vec![
            entry(Match { vlan_vid: Some((VID_PRESENT, VID_PRESENT)), ..Match::default() }, 5, vec![Action::PopVlan, Action::Output(3)]),
            entry(Match { in_port: Some(2), ..Match::default() }, 1, vec![Action::Normal]),
        ]);
        let mut emc = Emc::default();
        for _ in 0..3 {
            assert_eq!(emc.classify(&t, &key(1, 0x0800, VID_PRESENT | 7), 100), Hit::Flow(0));
            assert_eq!(emc.classify(&t, &key(2, 0x0800, 0), 60), Hit::Normal, "NORMAL-only takes the L2 path");
            assert_eq!(emc.classify(&t, &key(1, 0x0800, 0), 60), Hit::Normal, "a miss");
        }
        assert_eq!(t.flow(0).stats.packets.load(Relaxed), 3);
        assert_eq!(t.flow(0).stats.bytes.load(Relaxed), 300);
        assert_eq!(t.flow(1).stats.packets.load(Relaxed), 3);
        assert_eq!(t.misses.load(Relaxed), 3);
    }

    #[test]
    fn colliding_keys_evict_and_still_classify_right() {
        let t = FlowTable::new(vec![entry(Match { in_port: Some(9), ..Match::default() }, 1, vec![Action::Flood])]);
        let mut emc = Emc::default();
        for round in 0..2 {
            for p in 0..3 * EMC_ENTRIES as u16 {
                let want = if p == 9 { Hit::Flow(0) } else { Hit::Normal };
                assert_eq!(emc.classify(&t, &key(p, 0, 0), 1), want, "round {round} port {p}");
            }
        }
    }

    #[test]
    fn actions_cross_the_ring_as_words() {
        let all = [
            Action::Output(7),
            Action::InPort,
            Action::Flood,
            Action::All,
            Action::Normal,
            Action::Controller(128),
            Action::Table,
            Action::PushVlan,
            Action::PopVlan,
            Action::SetEthSrc([2, 3, 4, 5, 6, 7]),
            Action::SetEthDst([0xff; 6]),
            Action::SetVlanVid(4095),
        ];
        for a in all {
            assert_eq!(Action::from_word(a.to_word()), Some(a));
        }
        assert_eq!(Action::from_word(99 << 56), None);
    }
}
