//! The control thread's view of the switch: ports by slot, PMD threads,
//! plans, vhost events, and the answers to vswitchctl.
//!
//! All changes reach PMD threads through `replan`: first every thread gets an
//! empty plan (so every queue handle is dropped), then each gets its new one,
//! each step confirmed through the quiesce epoch. Polling pauses for that
//! moment; packets wait in the rings, nothing is dropped.
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::counters::{PmdCounters, PmdTotals, PortTotals, MAX_PORTS};
use dataplane::fdb::Fdb;
use dataplane::pmd_loop::{self, PmdContext, PmdMsg, PmdPlan, RxSource};
use dataplane::port_io::{RxPort, TxPort};
use dataplane::quiesce::Quiesce;
use pmd_bridge::lcore::{self, LcoreJob};
use pmd_bridge::{Eal, Mempool, VhostEvent};

use crate::config::{self, Config, PortConfig, State};
use crate::ports::{self, PortIo, PortState};
use crate::protocol::{Command, MempoolInfo, Response};

const QUIESCE_TIMEOUT: Duration = Duration::from_secs(10);

struct Pmd {
    core: u32,
    lcore: u32,
    counters: Arc<PmdCounters>,
    msgs: Sender<PmdMsg>,
    job: Option<LcoreJob>,
    base: PmdTotals,
}

pub struct Switch {
    eal: Eal,
    cfg: Config,
    state_path: PathBuf,
    state: State,
    pool: Arc<Mempool>,
    fdb: Arc<Fdb>,
    quiesce: Arc<Quiesce>,
    clock: Arc<AtomicU32>,
    started: Instant,
    last_aging: u32,
    pmds: Vec<Pmd>,
    ports: Vec<Option<PortState>>,
    gens: Vec<u16>,
    port_base: Vec<PortTotals>,
    copies_base: [[u64; 3]; 5],
    rxq_map: Vec<Vec<(u16, u16)>>,
    /// Plans the PMD threads are done with (copy-once rings come back here).
    returns: Receiver<PmdPlan>,
}

impl Switch {
    /// Launches one PMD thread per worker lcore and opens every port.
    pub fn start(eal: Eal, cfg: Config, state: State, pool: Arc<Mempool>) -> Result<Switch, String> {
        let workers = lcore::workers();
        if workers.len() != cfg.switch.pmd_cores.len() {
            return Err(format!("expected {} PMD lcores, the EAL has {}", cfg.switch.pmd_cores.len(), workers.len()));
        }
        let fdb = Arc::new(Fdb::new(cfg.switch.fdb_size, cfg.switch.fdb_aging_secs));
        let quiesce = Arc::new(Quiesce::new(workers.len()));
        let clock = Arc::new(AtomicU32::new(0));
        let (returns_tx, returns) = channel();
        let mut pmds = Vec::new();
        for (index, (&lcore, &core)) in workers.iter().zip(&cfg.switch.pmd_cores).enumerate() {
            let (tx, rx) = channel();
            let counters = Arc::new(PmdCounters::default());
            let ctx = PmdContext {
                index,
                fdb: Arc::clone(&fdb),
                pool: Arc::clone(&pool),
                counters: Arc::clone(&counters),
                quiesce: Arc::clone(&quiesce),
                msgs: rx,
                returns: returns_tx.clone(),
                clock: Arc::clone(&clock),
            };
            let job = lcore::launch(lcore, move || pmd_loop::run(ctx)).map_err(|e| format!("launch PMD on lcore {lcore}: {e}"))?;
            pmds.push(Pmd { core, lcore, counters, msgs: tx, job: Some(job), base: PmdTotals::default() });
        }
        let state_path = cfg.switch.state_file.clone();
        let mut sw = Switch {
            eal,
            cfg,
            state_path,
            state,
            pool,
            fdb,
            quiesce,
            clock,
            started: Instant::now(),
            last_aging: 0,
            pmds,
            ports: (0..MAX_PORTS).map(|_| None).collect(),
            gens: vec![0; MAX_PORTS],
            port_base: vec![PortTotals::default(); MAX_PORTS],
            copies_base: [[0; 3]; 5],
            rxq_map: Vec::new(),
            returns,
        };
        for pc in sw.cfg.ports.clone() {
            if let Err(e) = sw.add_port(pc) {
                sw.shutdown();
                return Err(e);
            }
        }
        sw.replan()?;
        Ok(sw)
    }

    fn add_port(&mut self, cfg: PortConfig) -> Result<u16, String> {
        let slot = self.ports.iter().position(Option::is_none).ok_or("no free port slot")? as u16;
        let io = ports::open(&self.eal, &cfg, &self.pool, self.pmds.len() as u16)?;
        self.gens[slot as usize] = self.gens[slot as usize].wrapping_add(1);
        self.port_base[slot as usize] = self.port_totals(slot);
        let gen = self.gens[slot as usize];
        self.fdb.set_port_limit(slot, cfg.mac_limit(self.cfg.switch.fdb_size));
        self.ports[slot as usize] = Some(PortState { cfg, slot, gen, io });
        Ok(slot)
    }

    /// Sends every PMD thread a new plan built from the ports as they are.
    pub fn replan(&mut self) -> Result<(), String> {
        self.send_plans(|_| PmdPlan::empty())?;
        let plans = self.build_plans()?;
        let mut plans = plans.into_iter();
        self.send_plans(|_| plans.next().expect("one plan per PMD"))
    }

    fn send_plans(&mut self, mut plan: impl FnMut(usize) -> PmdPlan) -> Result<(), String> {
        for (i, p) in self.pmds.iter().enumerate() {
            p.msgs.send(PmdMsg::Plan(plan(i))).map_err(|_| format!("PMD {i} is gone"))?;
        }
        let epoch = self.quiesce.bump();
        let done = self.quiesce.wait(epoch, QUIESCE_TIMEOUT);
        while let Ok(old) = self.returns.try_recv() {
            self.recover(old);
        }
        if done {
            Ok(())
        } else {
            Err("a PMD thread did not take its new plan in time".into())
        }
    }

    /// Puts the copy-once rings of a finished plan back with their ports.
    fn recover(&mut self, plan: PmdPlan) {
        let rings = plan.rx.into_iter().map(|s| (s.slot, s.port)).filter_map(|(slot, p)| match p {
            RxPort::Own(r) => Some((slot, r)),
            _ => None,
        });
        let tx_rings = plan.tx.into_iter().enumerate().filter_map(|(slot, p)| match p {
            Some(TxPort::Own(r)) => Some((slot as u16, r)),
            _ => None,
        });
        for (slot, ring) in rings.chain(tx_rings) {
            if let Some(PortState { io: PortIo::Vhost { own: Some(own), .. }, .. }) = self.ports[slot as usize].as_mut() {
                own.put_back(*ring);
            }
        }
    }

    fn build_plans(&mut self) -> Result<Vec<PmdPlan>, String> {
        let n = self.pmds.len();
        let table = Arc::new(self.ports.iter().map(|p| p.as_ref().map(PortState::view)).collect::<Vec<_>>());
        let mut plans: Vec<PmdPlan> = (0..n).map(|_| PmdPlan { ports: Arc::clone(&table), ..PmdPlan::empty() }).collect();
        let mut map = vec![Vec::new(); n];
        let mut rr = 0usize;
        let cores: Vec<u32> = self.pmds.iter().map(|p| p.core).collect();
        let retries = self.cfg.switch.vhost_retries;
        for st in self.ports.iter_mut().flatten() {
            let slot = st.slot;
            let mut place = |q: u16| -> usize {
                let pinned = st.cfg.rxq_pmd.as_ref().and_then(|pins| pins.get(q as usize));
                match pinned.and_then(|core| cores.iter().position(|c| c == core)) {
                    Some(i) => i,
                    None => {
                        rr += 1;
                        (rr - 1) % n
                    }
                }
            };
            match &mut st.io {
                PortIo::Eth(port) => {
                    for q in 0..st.cfg.rx_queues {
                        let i = place(q);
                        let h = port.rx_queue(q).map_err(|e| e.to_string())?;
                        plans[i].rx.push(RxSource { slot, queue: q, port: RxPort::Eth(h) });
                        map[i].push((slot, q));
                    }
                    for (i, plan) in plans.iter_mut().enumerate() {
                        let h = port.tx_queue(i as u16).map_err(|e| e.to_string())?;
                        plan.tx[slot as usize] = Some(TxPort::Eth(h));
                    }
                }
                PortIo::Vhost { dev: Some(dev), own: Some(own), enabled_pairs, .. } => {
                    if own.mem.is_none() {
                        continue; // rings being changed, or not taken yet
                    }
                    let pairs = dev.queue_pairs().min(st.cfg.rx_queues).min(*enabled_pairs).max(1);
                    for q in 0..pairs {
                        let i = place(q);
                        if let Some(r) = own.rx_ring(dev, q) {
                            plans[i].rx.push(RxSource { slot, queue: q, port: RxPort::Own(Box::new(r)) });
                            map[i].push((slot, q));
                        }
                    }
                    // One writer per guest receive ring: thread i writes
                    // pair i's. A thread beyond the guest's pairs cannot
                    // reach it (its packets count as port_down): give the
                    // guest as many queue pairs as there are PMD threads.
                    for (i, plan) in plans.iter_mut().enumerate().take(pairs as usize) {
                        plan.tx[slot as usize] = own.tx_ring(dev, i as u16).map(|mut r| {
                            r.retries = retries;
                            TxPort::Own(Box::new(r))
                        });
                    }
                }
                PortIo::Vhost { dev: Some(dev), enabled_pairs, .. } => {
                    let pairs = dev.queue_pairs().min(st.cfg.rx_queues).min(*enabled_pairs).max(1);
                    for q in 0..pairs {
                        let i = place(q);
                        plans[i].rx.push(RxSource { slot, queue: q, port: RxPort::Vhost(dev.rx_queue(q)) });
                        map[i].push((slot, q));
                    }
                    // Threads beyond the pairs share a guest queue: rte_vhost
                    // serialises enqueues on it with its own queue lock.
                    for (i, plan) in plans.iter_mut().enumerate() {
                        let q = dev.tx_queue(i as u16 % pairs);
                        plan.tx[slot as usize] = Some(TxPort::Vhost { q, retries });
                    }
                }
                PortIo::Vhost { dev: None, .. } => {}
            }
        }
        self.rxq_map = map;
        Ok(plans)
    }

    /// Takes what rte_vhost reported and replans if a device came or went.
    pub fn poll_events(&mut self) {
        let mut events = Vec::new();
        for st in self.ports.iter().flatten() {
            if let PortIo::Vhost { sock, .. } = &st.io {
                while let Some(ev) = sock.try_event() {
                    events.push((st.slot, ev));
                }
            }
        }
        let mut changed = false;
        for (slot, ev) in events {
            match self.on_event(slot, ev) {
                Ok(c) => changed |= c,
                Err(e) => eprintln!("vswitchd: port in slot {slot}: {e}"),
            }
        }
        if changed {
            if let Err(e) = self.replan() {
                eprintln!("vswitchd: replan failed: {e}");
            }
        }
    }

    /// One vhost event; true if the plans must change. Events that need
    /// the PMD threads off a device first (its destruction, a change of its
    /// memory or rings on a copy-once port) replan right here.
    fn on_event(&mut self, slot: u16, ev: VhostEvent) -> Result<bool, String> {
        let Some(PortState { cfg, io: PortIo::Vhost { sock, dev, own, enabled_pairs }, .. }) = self.ports[slot as usize].as_mut() else {
            return Ok(false);
        };
        // A socket may get a second connection while a guest is up; only
        // the first device's events count (the other is not polled, and its
        // destroy waits for nothing of ours).
        let current = dev.as_ref().map(|d| d.vid());
        let mine = |vid: i32| current.is_none_or(|c| c == vid);
        match ev {
            VhostEvent::NewDevice { vid } if current.is_none() => {
                let d = Arc::new(sock.device(vid).ok_or("device already gone")?);
                if let Some(own) = own.as_mut() {
                    // A request may already be changing the rings again: then
                    // they are mapped on its RingsChanged.
                    match own.attach(&d) {
                        Ok(()) => eprintln!("vswitchd: port {}: guest up, rings (avail/used) {}", cfg.name, own.describe()),
                        Err(e) => eprintln!("vswitchd: port {}: guest up, rings not mapped yet: {e}", cfg.name),
                    }
                }
                *dev = Some(d);
                Ok(true)
            }
            VhostEvent::NewDevice { vid } => {
                eprintln!("vswitchd: port {}: a second guest (vid {vid}) connected; ignored", cfg.name);
                Ok(false)
            }
            VhostEvent::DestroyDevice { vid } if current == Some(vid) => {
                // rte_vhost waits in destroy_device until every handle is
                // dropped: take the device out of the plans first (copy-once
                // rings come back), hand our ring indices back, then let go.
                if let Some(own) = own.as_mut() {
                    own.release();
                }
                *enabled_pairs = 0;
                let d = dev.take();
                self.replan()?;
                if let (Some(d), Some(PortState { cfg, io: PortIo::Vhost { own: Some(own), .. }, .. })) = (d.as_ref(), self.ports[slot as usize].as_mut()) {
                    eprintln!("vswitchd: port {}: guest gone, rings (avail/used) {}", cfg.name, own.describe());
                    own.hand_back(d);
                }
                Ok(false)
            }
            VhostEvent::RingsChanging { vid, .. } if current == Some(vid) && own.as_ref().is_some_and(|o| o.mem.is_some()) => {
                // The pre-message hook waits until no GuestMemory is left.
                own.as_mut().expect("checked").release();
                self.replan()?;
                Ok(false)
            }
            VhostEvent::RingsChanged { vid, .. } if current == Some(vid) => match (own.as_mut(), dev.as_ref()) {
                (Some(o), Some(d)) => {
                    o.remap(d, false)?;
                    Ok(true)
                }
                _ => Ok(false),
            },
            // A pair counts once its guest-transmit ring is enabled.
            VhostEvent::VringState { vid, queue, enabled } if queue % 2 == 1 && mine(vid) => {
                let pair = queue / 2 + 1;
                *enabled_pairs = if enabled { (*enabled_pairs).max(pair) } else { (*enabled_pairs).min(pair - 1) };
                Ok(dev.is_some())
            }
            VhostEvent::NewConnection { .. } if current.is_none() => {
                *enabled_pairs = 0;
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// Housekeeping, called a few hundred times a second by the control loop.
    pub fn tick(&mut self) {
        let now = self.started.elapsed().as_secs() as u32;
        self.clock.store(now, Ordering::Relaxed);
        if now != self.last_aging {
            self.last_aging = now;
            self.fdb.age(now);
        }
    }

    fn port_totals(&self, slot: u16) -> PortTotals {
        let mut t = PortTotals::default();
        for p in &self.pmds {
            t.add(&p.counters.ports[slot as usize]);
        }
        t
    }

    fn slot_of(&self, name: &str) -> Option<u16> {
        self.ports.iter().flatten().find(|p| p.cfg.name == name).map(|p| p.slot)
    }

    pub fn handle(&mut self, cmd: Command) -> Response {
        let result = match cmd {
            Command::ShowPorts => serde_json::to_value(self.show_ports()),
            Command::ShowFdb => serde_json::to_value(self.show_fdb()),
            Command::ShowPmd => serde_json::to_value(self.show_pmd()),
            Command::ShowPmdRxq => serde_json::to_value(self.show_pmd_rxq()),
            Command::ShowCopies => serde_json::to_value(self.show_copies()),
            Command::ShowMempool => serde_json::to_value(MempoolInfo {
                size: self.pool.size(),
                free: self.pool.free_count(),
                in_use: self.pool.in_use_count(),
            }),
            Command::FdbFlush => {
                self.fdb.flush();
                Ok(serde_json::Value::Null)
            }
            Command::StatsClear => {
                for slot in 0..MAX_PORTS as u16 {
                    self.port_base[slot as usize] = self.port_totals(slot);
                }
                for p in &mut self.pmds {
                    p.base = PmdTotals::read(&p.counters);
                }
                self.copies_base = self.copies_now();
                Ok(serde_json::Value::Null)
            }
            Command::PortAdd { port } => return self.port_add(&port),
            Command::PortDel { name } => return self.port_del(&name),
        };
        match result {
            Ok(v) => Response::ok(v),
            Err(e) => Response::err(e.to_string()),
        }
    }

    fn port_add(&mut self, json: &serde_json::Value) -> Response {
        let label = format!("port[{}]", self.ports.iter().flatten().count());
        let pc = match config::port_from_json(json, &self.cfg.switch, &label) {
            Ok(pc) => pc,
            Err(e) => return Response::err(e.to_string()),
        };
        let mut candidate = self.cfg.clone();
        candidate.ports.push(pc.clone());
        if let Err(e) = candidate.validate() {
            return Response::err(e.to_string());
        }
        if let Err(e) = self.add_port(pc.clone()) {
            return Response::err(e);
        }
        self.cfg = candidate;
        self.state.deleted.retain(|n| *n != pc.name);
        self.state.added.retain(|p| p.name != pc.name);
        self.state.added.push(pc);
        self.finish_change()
    }

    fn port_del(&mut self, name: &str) -> Response {
        let Some(slot) = self.slot_of(name) else { return Response::err(format!("no port named {name:?}")) };
        let st = self.ports[slot as usize].take().expect("slot in use");
        if let Err(e) = self.replan() {
            self.ports[slot as usize] = Some(st);
            return Response::err(e);
        }
        close(st.io);
        self.fdb.flush_port(slot);
        self.cfg.ports.retain(|p| p.name != name);
        let was_added = self.state.added.iter().any(|p| p.name == name);
        self.state.added.retain(|p| p.name != name);
        if !was_added {
            self.state.deleted.push(name.to_string());
        }
        self.finish_change()
    }

    fn finish_change(&mut self) -> Response {
        if let Err(e) = self.replan() {
            return Response::err(e);
        }
        match config::save_state(&self.state_path, &self.state) {
            Ok(()) => Response::ok(serde_json::Value::Null),
            Err(e) => Response::err(format!("changed, but the state file {} was not written: {e}", self.state_path.display())),
        }
    }







    /// Stops the PMD threads (each flushes and drops its plan), then closes
    /// every port. Server-mode sockets are removed by rte_vhost on unregister.
    pub fn shutdown(&mut self) {
        for p in &self.pmds {
            let _ = p.msgs.send(PmdMsg::Stop);
        }
        let epoch = self.quiesce.bump();
        if !self.quiesce.wait(epoch, QUIESCE_TIMEOUT) {
            eprintln!("vswitchd: a PMD thread did not stop in time");
        }
        for p in &mut self.pmds {
            if let Some(job) = p.job.take() {
                if job.is_finished() {
                    let _ = job.wait();
                }
            }
        }
        for st in self.ports.iter_mut().filter_map(Option::take) {
            let path = match &st.cfg.kind {
                config::PortKind::VhostUser { path, mode: config::VhostMode::Server, .. } => Some(path.clone()),
                _ => None,
            };
            close(st.io);
            if let Some(p) = path {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// Closes a port: the device handle before its socket (unregistering runs
/// destroy_device, which waits for every handle).
fn close(io: PortIo) {
    match io {
        PortIo::Eth(port) => drop(port),
        PortIo::Vhost { sock, dev, own, .. } => {
            if let (Some(mut own), Some(d)) = (own, dev.as_ref()) {
                own.hand_back(d);
            }
            drop(dev);
            drop(sock);
        }
    }
}

mod show;
