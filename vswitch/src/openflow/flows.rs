//! The flow table as OpenFlow edits it (on the control thread): FLOW_MOD's
//! add, modify and delete (strict or not, by cookie, by output port),
//! timeouts, and the snapshot each edit gives the PMD threads.
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::flow::{Action, FlowEntry, FlowKey, FlowStats, FlowTable, Match};

use super::action::{check_flow_actions, OFPP_ANY};
use super::msg::{FlowCommand, FlowFilter, FlowMod, FlowStat, FLAG_CHECK_OVERLAP, FLAG_RESET_COUNTS, NO_BUFFER};
use super::wire::{err, OfError};

/// Flows the table holds at most.
pub const MAX_FLOWS: usize = 65_536;
const ALL_TABLES: u8 = 0xff;

/// Why a flow left (OpenFlow's FLOW_REMOVED reasons).
pub const REMOVED_IDLE: u8 = 0;
pub const REMOVED_HARD: u8 = 1;
pub const REMOVED_DELETE: u8 = 2;

#[derive(Debug)]
pub struct Flow {
    pub matches: Match,
    key: (FlowKey, FlowKey),
    pub priority: u16,
    pub cookie: u64,
    pub actions: Vec<Action>,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub flags: u16,
    pub stats: Arc<FlowStats>,
    added: Instant,
    used: Instant,
    seen_packets: u64,
}

impl Flow {
    pub fn stat(&self, now: Instant) -> FlowStat {
        let age = now.duration_since(self.added);
        FlowStat {
            duration: (age.as_secs() as u32, age.subsec_nanos()),
            priority: self.priority,
            idle_timeout: self.idle_timeout,
            hard_timeout: self.hard_timeout,
            flags: self.flags,
            cookie: self.cookie,
            packets: self.stats.packets.load(Relaxed),
            bytes: self.stats.bytes.load(Relaxed),
            matches: self.matches.clone(),
            actions: self.actions.clone(),
        }
    }

    fn outputs_to(&self, port: u32) -> bool {
        port == OFPP_ANY || self.actions.iter().any(|a| matches!(a, Action::Output(p) if u32::from(*p) == port))
    }
}

/// Whether every packet `specific` matches, `general` matches too.
fn covers(general: &(FlowKey, FlowKey), specific: &(FlowKey, FlowKey)) -> bool {
    let ((gv, gm), (sv, sm)) = (general, specific);
    (0..gv.0.len()).all(|i| gm.0[i] & !sm.0[i] == 0 && sv.0[i] & gm.0[i] == gv.0[i])
}

/// Whether some packet matches both.
fn overlaps(a: &(FlowKey, FlowKey), b: &(FlowKey, FlowKey)) -> bool {
    (0..a.0 .0.len()).all(|i| (a.0 .0[i] ^ b.0 .0[i]) & a.1 .0[i] & b.1 .0[i] == 0)
}

fn cookie_hits(f: &Flow, cookie: u64, mask: u64) -> bool {
    f.cookie & mask == cookie & mask
}

#[derive(Default)]
pub struct Flows {
    list: Vec<Flow>,
}

impl Flows {
    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Flow> {
        self.list.iter()
    }

    /// One FLOW_MOD; the flows it deleted. `Ok` with nothing deleted and
    /// nothing changed is possible (a modify that hit no flow).
    pub fn apply(&mut self, fm: &FlowMod, now: Instant) -> Result<Vec<Flow>, OfError> {
        let deleting = matches!(fm.command, FlowCommand::Delete | FlowCommand::DeleteStrict);
        if fm.table_id != 0 && !(deleting && fm.table_id == ALL_TABLES) {
            return Err(err::FLOW_BAD_TABLE_ID);
        }
        if !deleting {
            if fm.buffer_id != NO_BUFFER {
                return Err(err::BUFFER_UNKNOWN);
            }
            check_flow_actions(&fm.actions)?;
        }
        let key = fm.matches.compile();
        let strict = matches!(fm.command, FlowCommand::ModifyStrict | FlowCommand::DeleteStrict);
        let hits = |f: &Flow| {
            let by_match = if strict { f.key == key && f.priority == fm.priority } else { covers(&key, &f.key) };
            by_match && cookie_hits(f, fm.cookie, fm.cookie_mask)
        };
        match fm.command {
            FlowCommand::Add => {
                if fm.flags & FLAG_CHECK_OVERLAP != 0 && self.list.iter().any(|f| f.priority == fm.priority && f.key != key && overlaps(&f.key, &key)) {
                    return Err(err::OVERLAP);
                }
                let same = self.list.iter().position(|f| f.key == key && f.priority == fm.priority);
                if same.is_none() && self.list.len() >= MAX_FLOWS {
                    return Err(err::TABLE_FULL);
                }
                let flow = Flow {
                    matches: fm.matches.clone(),
                    key,
                    priority: fm.priority,
                    cookie: fm.cookie,
                    actions: fm.actions.clone(),
                    idle_timeout: fm.idle_timeout,
                    hard_timeout: fm.hard_timeout,
                    flags: fm.flags,
                    stats: Arc::default(),
                    added: now,
                    used: now,
                    seen_packets: 0,
                };
                match same {
                    Some(i) => self.list[i] = flow,
                    None => self.list.push(flow),
                }
                Ok(Vec::new())
            }
            FlowCommand::Modify | FlowCommand::ModifyStrict => {
                for f in self.list.iter_mut().filter(|f| hits(f)) {
                    f.actions = fm.actions.clone();
                    if fm.flags & FLAG_RESET_COUNTS != 0 {
                        f.stats = Arc::default();
                        f.seen_packets = 0;
                    }
                }
                Ok(Vec::new())
            }
            FlowCommand::Delete | FlowCommand::DeleteStrict => {
                let (gone, kept) = std::mem::take(&mut self.list).into_iter().partition(|f| hits(f) && f.outputs_to(fm.out_port));
                self.list = kept;
                Ok(gone)
            }
        }
    }

    /// Takes out the flows whose idle or hard timeout passed, with why.
    pub fn expire(&mut self, now: Instant) -> Vec<(Flow, u8)> {
        let mut gone = Vec::new();
        let mut kept = Vec::with_capacity(self.list.len());
        for mut f in std::mem::take(&mut self.list) {
            let packets = f.stats.packets.load(Relaxed);
            if packets != f.seen_packets {
                (f.seen_packets, f.used) = (packets, now);
            }
            let past = |since: Instant, secs: u16| secs != 0 && now.duration_since(since) >= Duration::from_secs(secs.into());
            if past(f.added, f.hard_timeout) {
                gone.push((f, REMOVED_HARD));
            } else if past(f.used, f.idle_timeout) {
                gone.push((f, REMOVED_IDLE));
            } else {
                kept.push(f);
            }
        }
        self.list = kept;
        gone
    }

    /// The flows a FLOW or AGGREGATE request names.
    pub fn select<'a>(&'a self, q: &'a FlowFilter) -> impl Iterator<Item = &'a Flow> {
        let key = q.matches.compile();
        self.list.iter().filter(move |f| {
            (q.table_id == 0 || q.table_id == ALL_TABLES) && covers(&key, &f.key) && cookie_hits(f, q.cookie, q.cookie_mask) && f.outputs_to(q.out_port)
        })
    }

    /// The PMD threads' snapshot: None without flows.
    pub fn snapshot(&self) -> Option<Arc<FlowTable>> {
        if self.list.is_empty() {
            return None;
        }
        let entries = self.list.iter().map(|f| FlowEntry::new(&f.matches, f.priority, f.cookie, f.actions.clone(), Arc::clone(&f.stats))).collect();
        Some(Arc::new(FlowTable::new(entries)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fm(command: FlowCommand, m: Match, priority: u16, cookie: u64, actions: Vec<Action>) -> FlowMod {
        FlowMod { command, matches: m, priority, cookie, cookie_mask: u64::MAX, actions, buffer_id: NO_BUFFER, out_port: OFPP_ANY, ..FlowMod::default() }
    }

    fn port(p: u16) -> Match {
        Match { in_port: Some(p), ..Match::default() }
    }

    #[test]
    fn add_replaces_the_same_match_and_priority_only() {
        let (mut t, now) = (Flows::default(), Instant::now());
        t.apply(&fm(FlowCommand::Add, port(1), 10, 1, vec![Action::Output(2)]), now).unwrap();
        t.apply(&fm(FlowCommand::Add, port(1), 10, 2, vec![Action::Output(3)]), now).unwrap();
        t.apply(&fm(FlowCommand::Add, port(1), 11, 3, vec![]), now).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.iter().find(|f| f.priority == 10).unwrap().actions, [Action::Output(3)]);
        let mut overlap = fm(FlowCommand::Add, Match::default(), 11, 0, vec![]);
        overlap.flags = FLAG_CHECK_OVERLAP;
        assert_eq!(t.apply(&overlap, now).unwrap_err(), err::OVERLAP);
        overlap.priority = 12;
        assert!(t.apply(&overlap, now).is_ok(), "no flow of that priority");
        assert_eq!(t.apply(&FlowMod { table_id: 1, ..overlap.clone() }, now).unwrap_err(), err::FLOW_BAD_TABLE_ID);
        assert_eq!(t.apply(&FlowMod { buffer_id: 7, ..overlap }, now).unwrap_err(), err::BUFFER_UNKNOWN);
    }

    #[test]
    fn modify_and_delete_strict_or_by_covering_match_and_cookie() {
        let (mut t, now) = (Flows::default(), Instant::now());
        let eth = |p, d: u8| Match { eth_dst: Some(([2, 0, 0, 0, 0, d], [0xff; 6])), ..port(p) };
        for (i, m) in [eth(1, 1), eth(1, 2), eth(2, 1), port(1)].into_iter().enumerate() {
            t.apply(&fm(FlowCommand::Add, m, 5, i as u64 % 2, vec![Action::Output(9)]), now).unwrap();
        }
        // Non-strict modify of in_port=1 touches the three flows it covers.
        let mut m = fm(FlowCommand::Modify, port(1), 0, 0, vec![Action::Normal]);
        m.cookie_mask = 0;
        t.apply(&m, now).unwrap();
        assert_eq!(t.iter().filter(|f| f.actions == [Action::Normal]).count(), 3);
        // Strict delete needs the match and priority exactly.
        assert!(t.apply(&fm(FlowCommand::DeleteStrict, port(1), 6, 1, vec![]), now).unwrap().is_empty());
        let gone = t.apply(&fm(FlowCommand::DeleteStrict, port(1), 5, 1, vec![]), now).unwrap();
        assert_eq!(gone.len(), 1);
        // Delete by cookie: in_port=1 flows with cookie 1 (only eth(1,2)).
        let gone = t.apply(&fm(FlowCommand::Delete, port(1), 0, 1, vec![]), now).unwrap();
        assert_eq!(gone.iter().map(|f| f.cookie).collect::<Vec<_>>(), [1]);
        // Delete by output port, then everything, in any table.
        let mut d = fm(FlowCommand::Delete, Match::default(), 0, 0, vec![]);
        (d.cookie_mask, d.out_port) = (0, 9);
        assert_eq!(t.apply(&d, now).unwrap().len(), 1, "eth(2,1) still outputs to 9");
        d.table_id = ALL_TABLES;
        d.out_port = OFPP_ANY;
        assert_eq!(t.apply(&d, now).unwrap().len(), 1);
        assert!(t.is_empty() && t.snapshot().is_none());
    }

    #[test]
    fn timeouts_idle_only_while_unused_hard_always() {
        let (mut t, t0) = (Flows::default(), Instant::now());
        let mut idle = fm(FlowCommand::Add, port(1), 1, 0, vec![]);
        idle.idle_timeout = 10;
        let mut hard = fm(FlowCommand::Add, port(2), 1, 0, vec![]);
        hard.hard_timeout = 30;
        t.apply(&idle, t0).unwrap();
        t.apply(&hard, t0).unwrap();
        let s = |n| t0 + Duration::from_secs(n);
        assert!(t.expire(s(5)).is_empty());
        // Used at 9: idle until 19.
        t.iter().find(|f| f.idle_timeout == 10).unwrap().stats.packets.store(1, Relaxed);
        assert!(t.expire(s(9)).is_empty());
        assert!(t.expire(s(18)).is_empty());
        let gone = t.expire(s(19));
        assert_eq!(gone.iter().map(|(_, r)| *r).collect::<Vec<_>>(), [REMOVED_IDLE]);
        t.iter().next().unwrap().stats.packets.store(5, Relaxed);
        assert_eq!(t.expire(s(30)).iter().map(|(_, r)| *r).collect::<Vec<_>>(), [REMOVED_HARD]);
    }

    #[test]
    fn snapshot_keeps_the_counters_of_flows_it_carries_over() {
        let (mut t, now) = (Flows::default(), Instant::now());
        t.apply(&fm(FlowCommand::Add, port(1), 1, 0, vec![Action::Output(2)]), now).unwrap();
        let s1 = t.snapshot().unwrap();
        let k = FlowKey::extract(&[0; 14], 1);
        let i = s1.lookup(&k).unwrap();
        s1.flow(i).stats.packets.fetch_add(3, Relaxed);
        t.apply(&fm(FlowCommand::Add, port(2), 1, 0, vec![]), now).unwrap();
        let s2 = t.snapshot().unwrap();
        assert_eq!(s2.flow(s2.lookup(&k).unwrap()).stats.packets.load(Relaxed), 3);
        let q = FlowFilter { table_id: ALL_TABLES, out_port: 2, ..FlowFilter::default() };
        assert_eq!(t.select(&q).count(), 1);
        assert_eq!(t.select(&q).next().unwrap().stat(now).packets, 3);
    }
}
