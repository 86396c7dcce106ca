//! The control thread's view of the switch, and its coordinator: ports by
//! slot (`slots`), PMD threads, their plans (`plans`, with each rx queue's
//! thread from `placement`, moved by `rebalance`), vhost events (`events`)
//! and the answers to vswitchctl (`show`).
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

use dataplane::burst_phases::{self, BurstPhases};
use dataplane::counters::{PmdCounters, PmdTotals, PortTotals, MAX_PORTS};
use dataplane::fdb::Fdb;
use dataplane::police::Policer;
use dataplane::pmd_loop::{self, PmdContext, PmdMsg, PmdPlan};
use dataplane::poll_ab::{PollAb, PollAbConfig};
use dataplane::quiesce::Quiesce;
use pmd_bridge::cycles::tsc_hz;
use pmd_bridge::lcore::{self, LcoreJob};
use pmd_bridge::{Eal, Mempool};

use crate::config::{self, Config, PortConfig, State};
use crate::ports::{self, PortIo, PortState};
use crate::protocol::{Command, MempoolInfo, Response};
use captures::Captures;
use placement::Placement;
use rebalance::{Loads, Sample};
use slots::Slots;

const QUIESCE_TIMEOUT: Duration = Duration::from_secs(10);

/// Fault injection for tests: `VSWITCHD_TEST_PMD_PANIC_AFTER=<n>` makes the
/// first PMD thread panic once it has run `n` iterations and has an rx
/// queue in its plan (a port or guest is up). Read once, in `Switch::start`;
/// the loop checks it in its housekeeping, every 1024 iterations.
pub const PANIC_AFTER_ENV: &str = "VSWITCHD_TEST_PMD_PANIC_AFTER";

/// Why `Switch::start` failed.
#[derive(Debug)]
pub enum StartError {
    /// A port, a PMD thread or the plans could not be set up.
    Failed(String),
    /// A PMD thread died (panicked, or returned) meanwhile.
    PmdDied(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Failed(e) | StartError::PmdDied(e) => f.write_str(e),
        }
    }
}

struct Pmd {
    core: u32,
    lcore: u32,
    counters: Arc<PmdCounters>,
    msgs: Sender<PmdMsg>,
    job: Option<LcoreJob>,
    base: PmdTotals,
}

impl Pmd {
    /// If the thread has ended (it only ever returns when told to stop):
    /// how, with its panic message.
    fn death(&self, index: usize) -> Option<String> {
        let how = match self.job.as_ref()?.status()? {
            Err(msg) => format!("panicked: {msg}"),
            Ok(code) => format!("returned {code} unasked"),
        };
        Some(format!("PMD thread {index} (core {}, lcore {}) {how}", self.core, self.lcore))
    }
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
    slots: Slots,
    copies_base: [[u64; 3]; 5],
    /// Which thread polls each rx queue, and the loads that decide it.
    placement: Placement,
    loads: Loads,
    captures: Captures,
    /// Plans the PMD threads are done with (copy-once rings come back here).
    returns: Receiver<PmdPlan>,
    zero_copy_base: [u64; dataplane::counters::ZeroCopy::COUNT],
    /// Guests gone while NICs hold some of their buffers.
    departing: Vec<zero_copy::Departing>,
    openflow: openflow::OpenFlow,
}

impl Switch {
    /// Launches one PMD thread per worker lcore and opens every port.
    pub fn start(eal: Eal, cfg: Config, state: State, pool: Arc<Mempool>) -> Result<Switch, StartError> {
        let workers = lcore::workers();
        if workers.len() != cfg.switch.pmd_cores.len() {
            return Err(StartError::Failed(format!("expected {} PMD lcores, the EAL has {}", cfg.switch.pmd_cores.len(), workers.len())));
        }
        let fdb = Arc::new(Fdb::new(cfg.switch.fdb_size, cfg.switch.fdb_aging_secs));
        let quiesce = Arc::new(Quiesce::new(workers.len()));
        let clock = Arc::new(AtomicU32::new(0));
        let (returns_tx, returns) = channel();
        let panic_after = match std::env::var_os(PANIC_AFTER_ENV) {
            None => None,
            Some(v) => Some(
                v.to_str().and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| StartError::Failed(format!("{PANIC_AFTER_ENV}: {v:?} is not a number")))?,
            ),
        };
        let poll_ab = std::env::var_os(PollAbConfig::ENV)
            .map(|v| v.to_str().ok_or_else(|| format!("{}: {v:?} is not UTF-8", PollAbConfig::ENV)).and_then(PollAbConfig::parse).map_err(StartError::Failed))
            .transpose()?;
        let burst_phases = std::env::var_os(burst_phases::ENV).map(std::path::PathBuf::from);
        let mut pmds = Vec::new();
        for (index, (&lcore, &core)) in workers.iter().zip(&cfg.switch.pmd_cores).enumerate() {
            let burst_phases = burst_phases.as_ref().map(|p| BurstPhases::open(p).map_err(|e| StartError::Failed(format!("{}: {}: {e}", burst_phases::ENV, p.display())))).transpose()?;
            let poll_ab = poll_ab.as_ref().map(|c| PollAb::open(c).map_err(|e| StartError::Failed(format!("{}: {}: {e}", PollAbConfig::ENV, c.path.display())))).transpose()?;
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
                panic_after: panic_after.filter(|_| index == 0),
                sleep_max_us: cfg.switch.pmd.sleep_max_us,
                poll_ab,
                burst_phases,
            };
            let job = match lcore::launch(lcore, move || pmd_loop::run(ctx)) {
                Ok(job) => job,
                Err(e) => {
                    // Those already launched wait for a message: stop them.
                    stop_launched(&mut pmds, &quiesce);
                    return Err(StartError::Failed(format!("launch PMD on lcore {lcore}: {e}")));
                }
            };
            pmds.push(Pmd { core, lcore, counters, msgs: tx, job: Some(job), base: PmdTotals::default() });
        }
        let state_path = cfg.switch.state_file.clone();
        let loads = Loads::new(Instant::now(), Sample::read(pmds.iter().map(|p| &*p.counters)));
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
            slots: Slots::new(),
            copies_base: [[0; 3]; 5],
            placement: Placement::default(),
            loads,
            captures: Captures::default(),
            returns,
            zero_copy_base: Default::default(),
            departing: Vec::new(),
            openflow: openflow::OpenFlow::new(workers.len()),
        };
        let mut opened = Ok(());
        for pc in sw.cfg.ports.clone() {
            opened = sw.add_port(pc).map(drop);
            if opened.is_err() {
                break;
            }
        }
        match opened.and_then(|()| sw.replan()) {
            Ok(()) => Ok(sw),
            Err(e) => {
                let died = sw.dead_pmd();
                sw.shutdown();
                Err(died.map_or(StartError::Failed(e), StartError::PmdDied))
            }
        }
    }

    fn add_port(&mut self, cfg: PortConfig) -> Result<u16, String> {
        let slot = self.slots.free().ok_or("no free port slot")?;
        let io = ports::open(&self.eal, &cfg, &self.pool, self.pmds.len() as u16)?;
        let base = self.port_totals(slot);
        self.loads.reset_slot(slot, &self.sample());
        self.fdb.set_port_limit(slot, cfg.mac_limit(self.cfg.switch.fdb_size));
        let s = &mut self.slots[slot];
        s.gen = s.gen.wrapping_add(1);
        s.base = base;
        let rate = cfg.ingress_policing_rate;
        s.policer = (rate > 0).then(|| Arc::new(Policer::new(rate.into(), cfg.ingress_policing_burst.into(), tsc_hz())));
        s.port = Some(PortState { cfg, slot, gen: s.gen, io });
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
            if p.msgs.send(PmdMsg::Plan(plan(i))).is_err() {
                return Err(p.death(i).unwrap_or_else(|| format!("PMD thread {i} is gone")));
            }
        }
        let epoch = self.quiesce.bump();
        let done = self.wait_quiesced(epoch, false);
        while let Ok(old) = self.returns.try_recv() {
            self.recover(old);
        }
        done
    }

    /// Waits until every PMD thread acknowledged `epoch`, up to
    /// `QUIESCE_TIMEOUT`. A thread that has died ends the wait at once with
    /// its story, or, when `dead_ok` (stopping), is acknowledged for: it
    /// holds nothing any more (its plan went as it unwound).
    fn wait_quiesced(&self, epoch: u64, dead_ok: bool) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if self.quiesce.wait(epoch, Duration::from_millis(1)) {
                return Ok(());
            }
            for (i, p) in self.pmds.iter().enumerate() {
                if let Some(death) = p.death(i) {
                    if !dead_ok {
                        return Err(death);
                    }
                    self.quiesce.ack(i, epoch);
                }
            }
            if start.elapsed() > QUIESCE_TIMEOUT {
                return Err("a PMD thread did not take its new plan in time".into());
            }
        }
    }

    /// The first PMD thread that has died (panicked, or returned without
    /// being told to stop), with its panic message. The control loop calls
    /// this every iteration: the switch cannot go on without it (its
    /// queues go unpolled, the next replan fails), so the daemon exits for
    /// its service manager to restart it.
    pub fn dead_pmd(&self) -> Option<String> {
        self.pmds.iter().enumerate().find_map(|(i, p)| p.death(i))
    }

    /// Housekeeping, called a few hundred times a second by the control loop.
    pub fn tick(&mut self) {
        let now = self.started.elapsed().as_secs() as u32;
        self.clock.store(now, Ordering::Relaxed);
        if now != self.last_aging {
            self.last_aging = now;
            self.fdb.age(now);
        }
        self.attach_held();
        self.auto_lb(Instant::now());
        self.reclaim_lent();
        self.poll_openflow();
    }

    fn port_totals(&self, slot: u16) -> PortTotals {
        let mut t = PortTotals::default();
        for p in &self.pmds {
            t.add_pmd(&p.counters, slot as usize);
        }
        t
    }

    pub fn handle(&mut self, cmd: Command) -> Response {
        let result = match cmd {
            Command::ShowPorts => serde_json::to_value(self.show_ports()),
            Command::ShowFdb => serde_json::to_value(self.show_fdb()),
            Command::ShowPmd => serde_json::to_value(self.show_pmd()),
            Command::ShowPmdRxq => serde_json::to_value(self.show_pmd_rxq()),
            Command::ShowCopies => serde_json::to_value(self.show_copies()),
            Command::ShowFlows => serde_json::to_value(self.show_flows()),
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
                    self.slots[slot].base = self.port_totals(slot);
                }
                for p in &mut self.pmds {
                    p.base = PmdTotals::read(&p.counters);
                }
                self.copies_base = self.copies_now();
                self.zero_copy_base = self.zero_copy_now();
                Ok(serde_json::Value::Null)
            }
            Command::PortAdd { port } => return self.port_add(&port),
            Command::PortDel { name } => return self.port_del(&name),
            Command::PmdRebalance => match self.rebalance(true) {
                Ok(r) => serde_json::to_value(r),
                Err(e) => return Response::err(e),
            },
            Command::CaptureStart { port, direction, snaplen, format, .. } => match self.capture_start(&port, direction, snaplen, format) {
                Ok(r) => serde_json::to_value(r),
                Err(e) => return Response::err(e),
            },
            Command::CaptureStop { id } => match self.capture_stop(id) {
                Ok(r) => serde_json::to_value(r),
                Err(e) => return Response::err(e),
            },
        };
        match result {
            Ok(v) => Response::ok(v),
            Err(e) => Response::err(e.to_string()),
        }
    }

    fn port_add(&mut self, json: &serde_json::Value) -> Response {
        let label = format!("port[{}]", self.slots.ports().count());
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
        let Some(slot) = self.slots.by_name(name) else { return Response::err(format!("no port named {name:?}")) };
        // Not from under a port that needs it (a vxlan port's underlay).
        let mut candidate = self.cfg.clone();
        candidate.ports.retain(|p| p.name != name);
        if let Err(e) = candidate.validate() {
            return Response::err(format!("port {name:?} is in use: {e}"));
        }
        let st = self.slots[slot].port.take().expect("slot in use");
        if let Err(e) = self.replan() {
            self.slots[slot].port = Some(st);
            return Response::err(e);
        }
        match st.io {
            PortIo::Eth(port) => {
                self.dma_unmap_port(port.id());
                drop(port);
            }
            PortIo::Vhost { sock, dev: Some(dev), own: Some(own), .. } => {
                own.forget_positions();
                let _ = std::fs::remove_file(crate::copy_once_state::kept_positions(sock.path()));
                self.depart(name, dev, own, Some(sock))
            }
            io => io.close(),
        }
        self.fdb.flush_port(slot);
        self.end_captures(slot);
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

    /// Stops cleanly, in the one order that leaks nothing: the PMD threads
    /// stop (each flushes, hands its plan back and returns) and are joined;
    /// their plans are taken back (copy-once rings go home to their ports,
    /// every queue handle is dropped); then every port is closed. The pool
    /// goes with the `Switch`, after this. A thread that did not stop keeps
    /// its queues, and then the ports and pool it uses are left open and
    /// say so. Server-mode sockets are removed by rte_vhost on unregister.
    pub fn shutdown(&mut self) {
        for p in &self.pmds {
            let _ = p.msgs.send(PmdMsg::Stop);
        }
        let epoch = self.quiesce.bump();
        let stopped = self.wait_quiesced(epoch, true);
        if let Err(e) = &stopped {
            eprintln!("vswitchd: stopping: {e}");
        }
        for (i, p) in self.pmds.iter_mut().enumerate() {
            let Some(job) = p.job.take() else { continue };
            // A thread that acknowledged Stop returns right after; one that
            // did not may never: leave it be.
            if stopped.is_ok() || job.is_finished() {
                if let Err(e) = job.wait() {
                    eprintln!("vswitchd: PMD thread {i} (core {}) had panicked: {}", p.core, lcore::panic_message(e.as_ref()));
                }
            }
        }
        while let Ok(plan) = self.returns.try_recv() {
            self.recover(plan);
        }
        // NICs first: closing one frees what it holds of guests' buffers,
        // which go back to their guests before those are let go.
        for slot in 0..MAX_PORTS as u16 {
            if let Some(PortState { io: PortIo::Eth(port), .. }) = &self.slots[slot].port {
                self.dma_unmap_port(port.id());
                self.slots[slot].port.take().expect("checked").io.close();
            }
        }
        for slot in 0..MAX_PORTS as u16 {
            let lent = matches!(&self.slots[slot].port, Some(PortState { io: PortIo::Vhost { dev: Some(_), own: Some(o), .. }, .. }) if o.lent() > 0);
            if let Some(PortState { cfg, io: PortIo::Vhost { sock, dev: Some(dev), own: Some(own), .. }, .. }) = lent.then(|| self.slots[slot].port.take()).flatten() {
                self.depart(&cfg.name, dev, own, Some(sock));
            }
        }
        self.drain_departing(QUIESCE_TIMEOUT);
        for st in self.slots.take_all() {
            let path = st.cfg.kind.server_socket().map(PathBuf::from);
            st.io.close();
            if let Some(p) = path {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// Stops the PMD threads launched so far when a later one could not be.
fn stop_launched(pmds: &mut [Pmd], quiesce: &Quiesce) {
    for p in pmds.iter() {
        let _ = p.msgs.send(PmdMsg::Stop);
    }
    let epoch = quiesce.bump();
    for i in pmds.len()..quiesce.threads() {
        quiesce.ack(i, epoch); // never launched
    }
    if quiesce.wait(epoch, QUIESCE_TIMEOUT) {
        for p in pmds.iter_mut() {
            if let Some(job) = p.job.take() {
                let _ = job.wait();
            }
        }
    }
}

mod captures;
mod events;
mod openflow;
mod placement;
mod plans;
mod rebalance;
mod show;
mod slots;
mod zero_copy;
