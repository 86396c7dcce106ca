//! The control thread's view of the switch: ports by slot, PMD threads,
//! plans, vhost events, and the answers to vswitchctl.
//!
//! All changes reach PMD threads through `replan`: first every thread gets an
//! empty plan (so every queue handle is dropped), then each gets its new one,
//! each step confirmed through the quiesce epoch. Polling pauses for that
//! moment; packets wait in the rings, nothing is dropped.
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::counters::{DropReason, Path, PmdCounters, PmdTotals, PortTotals, MAX_PORTS};
use dataplane::fdb::Fdb;
use dataplane::pmd_loop::{self, PmdContext, PmdMsg, PmdPlan, RxSource};
use dataplane::port_io::{RxPort, TxPort};
use dataplane::quiesce::Quiesce;
use pmd_bridge::lcore::{self, LcoreJob};
use pmd_bridge::{Eal, Mempool, VhostEvent};

use crate::config::{self, Config, PortConfig, State, VlanMode};
use crate::ports::{self, PortIo, PortState};
use crate::protocol::{format_mac, Command, CopiesInfo, FdbInfo, MempoolInfo, PathCopies, PmdInfo, PmdRxqInfo, PortInfo, Response, RxqInfo};

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

    fn send_plans(&self, mut plan: impl FnMut(usize) -> PmdPlan) -> Result<(), String> {
        for (i, p) in self.pmds.iter().enumerate() {
            p.msgs.send(PmdMsg::Plan(plan(i))).map_err(|_| format!("PMD {i} is gone"))?;
        }
        let epoch = self.quiesce.bump();
        if self.quiesce.wait(epoch, QUIESCE_TIMEOUT) {
            Ok(())
        } else {
            Err("a PMD thread did not take its new plan in time".into())
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
        for st in self.ports.iter().flatten() {
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
            match &st.io {
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
        let mut changed = false;
        for st in self.ports.iter_mut().flatten() {
            let PortIo::Vhost { sock, dev, enabled_pairs } = &mut st.io else { continue };
            while let Some(ev) = sock.try_event() {
                // A socket may get a second connection while a guest is up;
                // only the first device's events count (the other is not
                // polled, and its destroy waits for nothing of ours).
                let current = dev.as_ref().map(|d| d.vid());
                let mine = |vid: i32| current.is_none_or(|c| c == vid);
                match ev {
                    VhostEvent::NewDevice { vid } if current.is_none() => {
                        *dev = sock.device(vid);
                        changed = true;
                    }
                    VhostEvent::NewDevice { vid } => {
                        eprintln!("vswitchd: port {}: a second guest (vid {vid}) connected; ignored", st.cfg.name);
                    }
                    VhostEvent::DestroyDevice { vid } if current == Some(vid) => {
                        // The library waits in destroy_device until the PMD
                        // threads and we have dropped every handle: replan now.
                        *dev = None;
                        *enabled_pairs = 0;
                        changed = true;
                    }
                    // A pair counts once its guest-transmit ring is enabled.
                    VhostEvent::VringState { vid, queue, enabled } if queue % 2 == 1 && mine(vid) => {
                        let pair = queue / 2 + 1;
                        *enabled_pairs = if enabled { (*enabled_pairs).max(pair) } else { (*enabled_pairs).min(pair - 1) };
                        changed |= dev.is_some();
                    }
                    VhostEvent::NewConnection { .. } if current.is_none() => *enabled_pairs = 0,
                    _ => {}
                }
            }
        }
        if changed {
            if let Err(e) = self.replan() {
                eprintln!("vswitchd: replan failed: {e}");
            }
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

    fn show_ports(&self) -> Vec<PortInfo> {
        self.ports
            .iter()
            .flatten()
            .map(|st| {
                let t = self.port_totals(st.slot).since(&self.port_base[st.slot as usize]);
                let (state, detail) = match &st.io {
                    PortIo::Eth(p) => {
                        let hw = p.stats().map(|s| format!(", nic missed {} no_mbuf {} rx_errors {} tx_errors {}", s.rx_missed, s.rx_nombuf, s.rx_errors, s.tx_errors));
                        match p.link() {
                            Ok(l) if l.up => ("up".to_string(), format!("{} Mbps{}", l.speed_mbps, hw.unwrap_or_default())),
                            _ => ("down".to_string(), hw.unwrap_or_default()),
                        }
                    }
                    PortIo::Vhost { sock, dev: Some(d), .. } => {
                        ("up".to_string(), format!("{} vid {} queues {}", sock.path(), d.vid(), d.queue_pairs()))
                    }
                    PortIo::Vhost { sock, dev: None, .. } => ("waiting".to_string(), sock.path().to_string()),
                };
                PortInfo {
                    name: st.cfg.name.clone(),
                    slot: st.slot,
                    kind: st.kind().to_string(),
                    state,
                    detail,
                    vlan: match &st.cfg.vlan_mode {
                        VlanMode::Access(v) => format!("access {v}"),
                        VlanMode::Trunk(vs) => format!("trunk {}", vs.iter().map(u16::to_string).collect::<Vec<_>>().join(",")),
                    },
                    mtu: st.cfg.mtu,
                    rx_packets: t.rx_packets,
                    rx_bytes: t.rx_bytes,
                    tx_packets: t.tx_packets,
                    tx_bytes: t.tx_bytes,
                    forwarded: t.forwarded,
                    flooded: t.flooded,
                    drops: DropReason::ALL
                        .iter()
                        .filter(|&&r| t.drop(r) != 0)
                        .map(|&r| (r.name().to_string(), t.drop(r)))
                        .collect(),
                }
            })
            .collect()
    }

    fn show_fdb(&self) -> Vec<FdbInfo> {
        let now = self.clock.load(Ordering::Relaxed);
        self.fdb
            .entries(now)
            .into_iter()
            .filter_map(|e| {
                let port = self.ports.get(e.slot as usize)?.as_ref().filter(|p| p.gen == e.gen)?;
                Some(FdbInfo { vlan: e.vlan, mac: format_mac(&e.mac), port: port.cfg.name.clone(), age_secs: e.age_secs })
            })
            .collect()
    }

    fn show_pmd(&self) -> Vec<PmdInfo> {
        self.pmds
            .iter()
            .enumerate()
            .map(|(index, p)| {
                let t = PmdTotals::read(&p.counters).since(&p.base);
                let total = (t.busy_cycles + t.idle_cycles).max(1);
                PmdInfo {
                    index,
                    core: p.core,
                    lcore: p.lcore,
                    packets: t.packets,
                    bursts: t.bursts,
                    avg_burst: t.avg_burst(),
                    busy_cycles: t.busy_cycles,
                    idle_cycles: t.idle_cycles,
                    busy_pct: 100.0 * t.busy_cycles as f64 / total as f64,
                    cycles_per_packet: t.cycles_per_packet(),
                    iterations: t.iterations,
                }
            })
            .collect()
    }

    /// Per path: packets, payload copies, bytes copied, summed over threads.
    fn copies_now(&self) -> [[u64; 3]; 5] {
        let mut t = [[0u64; 3]; 5];
        for p in &self.pmds {
            for (acc, c) in t.iter_mut().zip(&p.counters.paths) {
                acc[0] += c.packets.load(Ordering::Relaxed);
                acc[1] += c.payload_copies.load(Ordering::Relaxed);
                acc[2] += c.bytes_copied.load(Ordering::Relaxed);
            }
        }
        t
    }

    fn show_copies(&self) -> CopiesInfo {
        let now = self.copies_now();
        CopiesInfo {
            paths: Path::ALL
                .iter()
                .map(|&p| {
                    let (n, b) = (now[p as usize], self.copies_base[p as usize]);
                    PathCopies { path: p.name().into(), packets: n[0] - b[0], payload_copies: n[1] - b[1], bytes_copied: n[2] - b[2] }
                })
                .collect(),
        }
    }

    fn show_pmd_rxq(&self) -> Vec<PmdRxqInfo> {
        self.rxq_map
            .iter()
            .enumerate()
            .map(|(index, rxqs)| PmdRxqInfo {
                index,
                core: self.pmds[index].core,
                rxqs: rxqs
                    .iter()
                    .filter_map(|&(slot, queue)| {
                        let p = self.ports[slot as usize].as_ref()?;
                        Some(RxqInfo { port: p.cfg.name.clone(), queue })
                    })
                    .collect(),
            })
            .collect()
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
        PortIo::Vhost { sock, dev, .. } => {
            drop(dev);
            drop(sock);
        }
    }
}
