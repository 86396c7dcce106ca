//! The poll-mode loop: one per PMD thread, never locking, sleeping only
//! when idle and allowed to (`idle`).
//!
//! Per rx queue: receive up to 32 (mbufs, or frames left in a copy-once
//! guest's buffers) → the egress stage classifies, moves and finishes the
//! burst (`egress`). The plan (ports, queues, flood sets) arrives by
//! message under the epoch of `quiesce`.
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

use pmd_bridge::cycles::tsc;
use pmd_bridge::eventfd::Waiter;
use pmd_bridge::{Burst, Mempool, BURST};

use crate::burst_phases::{self, BurstPhases, Phase};
use crate::capture::Taps;
use crate::copy_once::GuestPkt;
use crate::counters::{bump, PmdCounters, MAX_PORTS};
use crate::egress::{guest_outputs, prefetch_rings, Egress, Outputs};
use crate::fdb::Fdb;
use crate::flood::{FloodSets, PortSet};
use crate::flow::PmdFlows;
use crate::fwd::PortTable;
use crate::idle::{IdleSleep, KICK_SLEEP};
use crate::poll_ab::PollAb;
use crate::port_io::{Received, RxPort, TxPort};
use crate::quiesce::Quiesce;

/// One rx queue this thread polls (`queue` below `MAX_RXQ`).
pub struct RxSource {
    pub slot: u16,
    pub queue: u16,
    pub port: RxPort,
}

/// Everything a PMD thread polls and sends to. Immutable while in use.
pub struct PmdPlan {
    pub ports: PortTable,
    pub rx: Vec<RxSource>,
    /// How this thread sends to each port slot; None: no queue (port down).
    pub tx: Vec<Option<TxPort>>,
    /// Per VLAN, the ports this thread can flood to.
    flood: FloodSets,
    /// The slots of `tx` that are copy-once guests.
    guests: PortSet,
    /// Packet captures running (`capture`).
    taps: Taps,
    /// The OpenFlow table, when it holds flows (`flow`).
    flows: Option<Box<PmdFlows>>,
}

impl PmdPlan {
    /// `tx` by port slot (at most `MAX_PORTS`).
    pub fn new(ports: PortTable, rx: Vec<RxSource>, mut tx: Vec<Option<TxPort>>) -> PmdPlan {
        tx.resize_with(MAX_PORTS, || None);
        // A vhost port without a guest has no queue: not part of a flood.
        let flood = FloodSets::new(&ports, |slot| tx[slot as usize].is_some());
        let guests = guest_outputs(&tx);
        PmdPlan { ports, rx, tx, flood, guests, taps: Taps::default(), flows: None }
    }

    pub fn with_taps(self, taps: Taps) -> PmdPlan {
        PmdPlan { taps, ..self }
    }

    pub fn with_flows(self, flows: Option<Box<PmdFlows>>) -> PmdPlan {
        PmdPlan { flows, ..self }
    }

    pub fn empty() -> PmdPlan {
        PmdPlan::new(Arc::new(vec![None; MAX_PORTS]), Vec::new(), Vec::new())
    }

    /// Interrupts copy-once guests are still owed; what NIC queues sent.
    /// Whether an interrupt is still owed.
    fn housekeep(&mut self) -> bool {
        let mut owed = false;
        self.rx.iter_mut().for_each(|s| owed |= s.port.retry_call());
        self.tx.iter_mut().flatten().for_each(|t| owed |= t.housekeep());
        owed
    }

    /// Before a sleep until kicked: whether every rx queue can wake the
    /// thread, each then armed and in `waiter`; if one cannot, none is.
    fn sleep_on_kicks(&mut self, waiter: &mut Waiter) -> bool {
        let all = self.flows.is_none() && self.rx.iter_mut().all(|s| s.port.sleep_on_kick(waiter));
        if !all {
            self.wake();
            waiter.clear();
        }
        all
    }

    fn wake(&mut self) {
        self.rx.iter_mut().for_each(|s| s.port.wake());
    }
}

pub enum PmdMsg {
    Plan(PmdPlan),
    Stop,
}

/// What a PMD thread is given at launch.
pub struct PmdContext {
    pub index: usize,
    pub fdb: Arc<Fdb>,
    pub pool: Arc<Mempool>,
    pub counters: Arc<PmdCounters>,
    pub quiesce: Arc<Quiesce>,
    pub msgs: Receiver<PmdMsg>,
    /// Plans this thread is done with, back to the control thread.
    pub returns: std::sync::mpsc::Sender<PmdPlan>,
    /// Seconds since the switch started, kept by the control thread: the
    /// MAC table's clock, the same for every thread.
    pub clock: Arc<AtomicU32>,
    /// Tests' fault injection: panic once this many iterations have run
    /// and there is a queue to poll (`VSWITCHD_TEST_PMD_PANIC_AFTER`).
    pub panic_after: Option<u64>,
    /// The longest sleep when idle, in microseconds (0: pure polling).
    pub sleep_max_us: u32,
    /// Experiments: each poll picked to one of two ways
    /// (`VSWITCHD_POLL_AB`, see `poll_ab`).
    pub poll_ab: Option<PollAb>,
    /// Experiments: each guest burst's cycles by phase
    /// (`VSWITCHD_BURST_PHASES`, see `burst_phases`).
    pub burst_phases: Option<BurstPhases>,
}

/// Runs the loop until a `Stop` message; returns 0.
pub fn run(mut ctx: PmdContext) -> i32 {
    let mut poll_ab = ctx.poll_ab.take();
    burst_phases::install(ctx.burst_phases.take());
    let mut plan = PmdPlan::empty();
    let mut out = Outputs::default();
    let mut now = ctx.clock.load(Ordering::Relaxed);
    let mut seen = 0;
    let mut iterations: u64 = 0;
    let mut mbufs = Burst::new();
    let mut guest = [GuestPkt::default(); BURST];
    let mut idle = IdleSleep::new(ctx.sleep_max_us);
    let mut waiter = Waiter::default();
    // One time-stamp a poll: each poll's cycles run from the stamp the
    // poll before it took (so the loop's own work between polls counts
    // with the next one), to busy or idle as it received or not.
    let mut stamp = tsc();
    if idle.enabled() {
        // A sleep of a few microseconds under load must not last the
        // default slack's 50 more: the guests' rings would fill meanwhile.
        pmd_bridge::sys::set_timer_slack(Duration::from_micros(1));
    }
    loop {
        let epoch = ctx.quiesce.current();
        if epoch != seen {
            while let Ok(msg) = ctx.msgs.try_recv() {
                match msg {
                    PmdMsg::Plan(p) => {
                        // The old plan goes back: a copy-once ring's indices
                        // live in it and must outlive this thread's use.
                        let old = std::mem::replace(&mut plan, p);
                        let _ = ctx.returns.send(old);
                    }
                    PmdMsg::Stop => {
                        let _ = ctx.returns.send(plan);
                        ctx.quiesce.ack(ctx.index, epoch);
                        return 0;
                    }
                }
            }
            ctx.quiesce.ack(ctx.index, epoch);
            seen = epoch;
        }
        iterations += 1;
        if iterations.is_multiple_of(1024) {
            now = ctx.clock.load(Ordering::Relaxed);
            bump(&ctx.counters.iterations, 1024);
            plan.housekeep();
            if let Some(n) = ctx.panic_after.filter(|&n| iterations >= n && !plan.rx.is_empty()) {
                panic!("injected PMD panic after {n} iterations (VSWITCHD_TEST_PMD_PANIC_AFTER)");
            }
        }
        let PmdPlan { ports, rx: sources, tx, flood, guests, taps, flows } = &mut plan;
        let mut most = 0;
        for src in sources.iter_mut() {
            if let Some(ab) = poll_ab.as_mut() {
                ab.pick();
            }
            let drops = &ctx.counters.ports[src.slot as usize].drops;
            let slot = src.slot;
            burst_phases::start();
            let received = src.port.recv(&ctx.pool, &mut mbufs, &mut guest, drops, |n, bytes| prefetch_rings(tx, *guests, slot, n, bytes));
            let eg = Egress { ports, flood, tx, guests: *guests, out: &mut out, pool: &ctx.pool, fdb: &ctx.fdb, counters: &ctx.counters, now, taps, flows: flows.as_deref_mut() };
            let n = match received {
                Received::Nothing => {
                    let t = tsc();
                    bump(&ctx.counters.idle_cycles, t - std::mem::replace(&mut stamp, t));
                    continue;
                }
                Received::Mbufs(n) => {
                    if !taps.is_empty() {
                        taps.mbufs(src.slot, false, &mbufs);
                    }
                    eg.forward_mbufs(src.slot, &mut mbufs);
                    n
                }
                Received::Guest(mut burst) => {
                    burst_phases::mark(Phase::Heads);
                    if !taps.is_empty() {
                        taps.guest_rx(src.slot, &mut burst, &mut eg.out.stock, &ctx.pool);
                    }
                    let n = burst.pkts().len();
                    eg.forward_guest(src.slot, burst);
                    burst_phases::end(src.slot, n);
                    n
                }
            };
            let c = &ctx.counters;
            let t = tsc();
            let busy = t - std::mem::replace(&mut stamp, t);
            bump(&c.busy_cycles, busy);
            bump(&c.rxq_cycles[src.slot as usize][src.queue as usize], busy);
            let pc = &c.ports[src.slot as usize];
            bump(&pc.rx_bursts, 1);
            if n >= BURST {
                bump(&pc.full_burst_packets, n as u64);
                bump(&pc.full_burst_cycles, busy);
            }
            bump(&c.packets, n as u64);
            bump(&c.bursts, 1);
            if let Some(ab) = poll_ab.as_mut() {
                ab.busy(busy, n);
            }
            most = most.max(n);
        }
        if flows.is_some() {
            Egress { ports, flood, tx, guests: *guests, out: &mut out, pool: &ctx.pool, fdb: &ctx.fdb, counters: &ctx.counters, now, taps, flows: flows.as_deref_mut() }.forward_injected();
        }
        if idle.enabled() {
            let us = idle.after(most);
            if us > 0 {
                // Owed interrupts wait for no housekeeping round.
                let owed = plan.housekeep();
                // The work since the last poll is an idle thread's too.
                let t0 = tsc();
                bump(&ctx.counters.idle_cycles, t0 - stamp);
                match ctx.quiesce.doorbell(ctx.index) {
                    Some(bell) if idle.deep() && !owed && plan.sleep_on_kicks(&mut waiter) => {
                        let kicks = waiter.len();
                        waiter.add(bell);
                        waiter.wait(KICK_SLEEP);
                        if (0..kicks).any(|i| waiter.fired(i)) {
                            bump(&ctx.counters.kicked, 1);
                        }
                        waiter.clear();
                        plan.wake();
                        now = ctx.clock.load(Ordering::Relaxed);
                        bump(&ctx.counters.kick_sleeps, 1);
                    }
                    _ => std::thread::sleep(Duration::from_micros(us.into())),
                }
                stamp = tsc();
                bump(&ctx.counters.sleep_cycles, stamp - t0);
                bump(&ctx.counters.sleeps, 1);
            }
        }
    }
}
