//! Trials, sessions and the comparison: every switch through the same
//! scenario, alternated and repeated, with the bottleneck of each row said.
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::gen::{self, Attach, GenReport, Generator, PortOpts, Ring, Size, Trial, VmPort};
use crate::peers::{Running, Setup, SwitchKind, SwitchStats, START};
use crate::tunnel::{self, Remote};

/// A topology: how many VMs, how they meet the switch, which sends to
/// which.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scenario {
    pub name: String,
    pub vms: usize,
    pub streams: Vec<(usize, usize)>,
    #[serde(default)]
    pub topology: Topology,
    /// VMs before this one offer one ring layout and the rest the other,
    /// whatever the cell's ring (`ring_of`): both layouts through one
    /// switch in one phase, each row from its own VMs' ports (`by_ring`).
    #[serde(default, alias = "packed_from")]
    pub rings_split_at: Option<usize>,
}

/// How the generator's VMs meet the switch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    /// Every VM on a vhost-user port.
    #[default]
    Vms,
    /// The last VM is cabled to a NIC port of the switch (DPDK's
    /// `net_vhost` device: a NIC that copies, as a real one DMAs), the
    /// others on vhost-user ports.
    Nic,
    /// As `Nic`, and that NIC is the underlay of a VXLAN port: the last VM
    /// is the remote tunnel endpoint (another host).
    Vxlan,
    /// Every VM on a vhost-user port, and a NIC that sends infinitely fast
    /// (`net_pcap` with nothing to write to: it frees what it is given)
    /// and once received a frame from each of VM 1's addresses (no VM 1
    /// runs), so that a learning switch knows them: what left through it
    /// is what the switch counted.
    DropNic,
}

impl Scenario {
    pub fn parse(s: &str) -> Option<Scenario> {
        let (vms, streams, topology) = match s {
            "2vm" => (2, vec![(0, 1), (1, 0)], Topology::Vms),
            "2vm-rings" => (4, vec![(0, 1), (1, 0), (2, 3), (3, 2)], Topology::Vms),
            "3vm-chain" => (3, vec![(0, 1), (1, 2), (2, 0)], Topology::Vms),
            "vm-nic" => (2, vec![(0, 1)], Topology::Nic),
            "nic-vm" => (2, vec![(1, 0)], Topology::Nic),
            "vxlan-encap" => (2, vec![(0, 1)], Topology::Vxlan),
            "vxlan-decap" => (2, vec![(1, 0)], Topology::Vxlan),
            "vm-nic-drop" => (1, vec![(0, 1)], Topology::DropNic),
            _ => return None,
        };
        let rings_split_at = (s == "2vm-rings").then_some(2);
        Some(Scenario { name: s.into(), vms, streams, topology, rings_split_at })
    }

    /// The ring VM `vm` offers in repeat `repeat`, if the scenario sets it
    /// (None: the cell's). The VMs after the split offer packed rings in
    /// even repeats and split rings in odd ones: with the same VMs packed
    /// every repeat, one ring always had the ports polled first and the
    /// generator's first streams (2vm-rings 64 B, packed over split: 0.88
    /// with VMs 2 and 3 packed, 0.99 with VMs 0 and 1, in two runs).
    pub fn ring_of(&self, vm: usize, repeat: usize) -> Option<Ring> {
        let at = self.rings_split_at?;
        Some(if (vm >= at) == repeat.is_multiple_of(2) { Ring::Packed } else { Ring::Split })
    }

    /// The VM that plays the remote tunnel endpoint.
    fn remote_vm(&self) -> Option<usize> {
        (self.topology == Topology::Vxlan).then_some(self.vms - 1)
    }
}

/// One measured phase of one switch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub switch: String,
    pub scenario: String,
    pub flows: u32,
    pub size: String,
    /// The VMs' virtqueue layout, as negotiated.
    #[serde(default)]
    pub ring: Ring,
    pub repeat: usize,
    pub rx_mpps: f64,
    pub offered_mpps: f64,
    pub gbps: f64,
    pub loss: f64,
    pub latency_p50_us: f64,
    pub latency_p99_us: f64,
    pub latency_p999_us: f64,
    pub cycles_per_packet: Option<f64>,
    /// The switch's busy cycles per packet over each second of the phase.
    #[serde(default)]
    pub cycles_by_second: Vec<f64>,
    pub switch_idle: Option<f64>,
    /// Packets per busy poll on the switch core (vswitchd only).
    #[serde(default)]
    pub switch_burst: Option<f64>,
    /// Cycles per packet of the polls that took a whole burst, and the
    /// share of the packets they took (`2vm-rings` rows): the rings
    /// compared at the same burst, where a slower guest's short bursts,
    /// each with its fixed cost, do not count.
    #[serde(default)]
    pub full_burst_cycles: Option<f64>,
    #[serde(default)]
    pub full_burst_share: Option<f64>,
    pub gen_idle: f64,
    pub gen_pushed_back: f64,
    pub generator_bound: bool,
    pub flooded: Option<u64>,
    pub learned: Option<usize>,
    pub reordered: u64,
    pub duplicates: u64,
    /// Payload copies per packet on the path taken (vswitchd's own counters).
    pub copies_per_packet: Option<f64>,
    pub note: String,
    /// TSC cycles a cache line's round trip between the switch's core and
    /// the generator's took just before the cell (`probe`): how slow the
    /// shared machine was then.
    #[serde(default)]
    pub line_round_trip: Option<f64>,
}

/// The switch's (busy cycles, packets) each second until `stop`, the
/// first at once; none if it does not say.
fn sample_totals(switch: &mut Running, stop: &AtomicBool) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= next {
            let Some(t) = switch.busy_totals() else { break };
            out.push(t);
            next += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    out
}

/// Cycles per packet between consecutive totals (an interval in which
/// nothing was forwarded has none).
fn by_interval(totals: &[(u64, u64)]) -> Vec<f64> {
    totals.windows(2).filter_map(|w| {
        let (c, n) = (w[1].0.saturating_sub(w[0].0), w[1].1.saturating_sub(w[0].1));
        (n > 0).then(|| c as f64 / n as f64)
    }).collect()
}

/// A switch with the generator's VMs attached and addresses learned.
pub struct Session<'g> {
    gen: &'g Generator,
    pub switch: Running,
    vms: Vec<VmPort>,
    scenario: Scenario,
    flows: u32,
    note: String,
    remote: Option<(usize, Remote)>,
}

impl<'g> Session<'g> {
    /// The switch started for `opts` (MTU, TSO) and the VMs attached with
    /// them (rings as the scenario sets them for `repeat`), addresses
    /// learned.
    #[allow(clippy::too_many_arguments)]
    pub fn open(gen: &'g Generator, kind: SwitchKind, setup: &Setup, scenario: &Scenario, flows: u32, tag: &str, opts: PortOpts, repeat: usize) -> Result<Self, String> {
        let switch = Running::start(kind, setup, scenario.vms, scenario.topology, flows, opts)?;
        let remote_vm = scenario.remote_vm();
        let attach: Vec<(Attach, PortOpts)> = (switch.sockets.iter().enumerate())
            .map(|(i, s)| {
                // The remote endpoint's link carries the outer headers too.
                let mut o = if Some(i) == remote_vm { PortOpts { mtu: opts.mtu + tunnel::OUTER_LEN as u16, ..opts } } else { opts };
                if let Some(ring) = scenario.ring_of(i, repeat) {
                    o.ring = ring;
                }
                (Attach::Vhost { socket: s.clone(), server: true }, o)
            })
            .collect();
        let mut vms = gen.attach(tag, &attach).map_err(|e| format!("{e}{}", switch.log_hint()))?;
        switch.wait_connected()?;
        let remote = match remote_vm {
            Some(r) => Some((r, tunnel::resolve(&mut vms[r], &gen.pool, START).map_err(|e| format!("{e}{}", switch.log_hint()))?)),
            None => None,
        };
        let mut note = String::new();
        if kind.learns() {
            let want = flows as usize * scenario.vms;
            gen::learn(&mut vms, &gen.pool, flows, remote, || switch.learned().is_none_or(|n| n >= want))?;
            if let Some(n) = switch.learned() {
                if n < want {
                    note = format!("learned {n} of {want} MACs: some traffic flooded");
                }
            }
        }
        Ok(Session { gen, switch, vms, scenario: scenario.clone(), flows, note, remote })
    }

    /// One measured phase at `rate_pps` per stream (None: full load).
    pub fn measure(&mut self, size: Size, rate_pps: Option<f64>, duration: Duration, throttle: Duration) -> Result<(GenReport, SwitchStats), String> {
        let t = Trial { size, flows: self.flows, streams: self.scenario.streams.clone(), rate_pps, duration, throttle, remote: self.remote };
        self.switch.begin()?;
        // The switch's counters each second while the generator runs, read
        // by a thread on the generator's core (it inherits the EAL's
        // pinning of this one), so that the switch's core is left alone.
        let stop = AtomicBool::new(false);
        let (rep, totals) = std::thread::scope(|s| {
            let (switch, stop) = (&mut self.switch, &stop);
            let sampler = s.spawn(move || sample_totals(switch, stop));
            let rep = gen::run(&mut self.vms, self.gen, &t);
            stop.store(true, Ordering::Relaxed);
            (rep, sampler.join().unwrap_or_default())
        });
        let mut rep = rep?;
        let st = SwitchStats { cycles_by_second: by_interval(&totals), ..self.switch.end() };
        if self.scenario.topology == Topology::DropNic {
            let got = st.nic_tx.ok_or("the switch did not say what its NIC sent")?;
            rep.sink.received = got;
            rep.sink.lost = rep.sent_total().saturating_sub(got);
            if rep.payload > 0 {
                // Segments leave whole or cut: their payload is the NIC's
                // bytes less each frame's headers.
                let bytes = st.nic_tx_bytes.ok_or("the switch did not say how many bytes its NIC sent")?;
                rep.sink.frames = got;
                rep.sink.payload_bytes = bytes.saturating_sub(got * crate::frame::TCP_HEADERS as u64);
                rep.sink.lost_bytes = (rep.sent_total() * rep.payload).saturating_sub(rep.sink.payload_bytes);
            }
        }
        Ok((rep, st))
    }

    /// Closes the VMs and the switch.
    pub fn close(self) {
        drop(self.vms);
        self.switch.stop();
    }
}

/// One session of the comparison: a switch started once and measured at
/// each of `sizes`, which need the same ports (`PortOpts::for_size`).
#[derive(Clone, Debug)]
pub struct Cell<'a> {
    pub kind: SwitchKind,
    pub scenario: &'a Scenario,
    pub flows: u32,
    pub sizes: &'a [Size],
    pub ring: Ring,
    pub repeat: usize,
}

/// A cell's size that has no measurement, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NotMeasured {
    pub switch: String,
    pub scenario: String,
    pub flows: u32,
    pub size: String,
    pub ring: Ring,
    pub repeat: usize,
    /// The switch cannot do what the row asks (e.g. it negotiated no packed
    /// ring), rather than failed.
    pub unsupported: bool,
    pub reason: String,
}

impl Cell<'_> {
    fn missing(&self, size: Size, unsupported: bool, reason: &str) -> NotMeasured {
        NotMeasured {
            switch: self.kind.name().into(),
            scenario: self.scenario.name.clone(),
            flows: self.flows,
            size: size.label(),
            ring: self.ring,
            repeat: self.repeat,
            unsupported,
            reason: reason.into(),
        }
    }
}

/// Turns a measured phase into a row.
pub fn row(c: &Cell, size: Size, rep: &GenReport, st: &SwitchStats, note: &str) -> Row {
    let Cell { kind, scenario: sc, flows, ring, repeat, .. } = c.clone();
    let it = rep.iterations.max(1) as f64;
    let mpps = rep.rx_pps() / 1e6;
    let mut note = note.to_string();
    if st.flooded.is_some_and(|f| f > 0) {
        note = format!("{note}{}flooded {} packets while measuring", if note.is_empty() { "" } else { "; " }, st.flooded.unwrap_or(0));
    }
    let mut add = |n: String| note = if note.is_empty() { n } else { format!("{note}; {n}") };
    if let Some(f) = rep.frames_per_segment() {
        // Whole, as the VMs negotiated GUEST_TSO4, or cut by the switch
        // all the same (45 frames at MSS 1448); the NIC here has no TSO.
        let to = if sc.topology == Topology::DropNic { "to a NIC without TSO" } else { "to VMs with GUEST_TSO4" };
        add(if f < 1.5 {
            format!("TCP segments delivered whole ({f:.1} frames per 64 KB segment) {to}")
        } else {
            format!("TCP segments delivered cut, {f:.1} frames per 64 KB segment {to}")
        });
    }
    if rep.sent_total() > 0 && rep.sink.received == 0 && rep.sink.payload_bytes == 0 {
        add(format!("nothing arrived of {} packets sent ({} B)", rep.sent_total(), size.label()));
    }
    let refused: u64 = st.drops_by_reason.iter().filter(|(k, _)| k.starts_with("hdr_")).map(|(_, v)| v).sum();
    if refused > 0 {
        add(format!("the switch refused {refused} virtio-net headers ({:?})", st.drops_by_reason));
    }
    Row {
        switch: kind.name().into(),
        scenario: sc.name.clone(),
        flows,
        size: size.label(),
        ring,
        repeat,
        rx_mpps: mpps,
        offered_mpps: rep.sent_total() as f64 / rep.seconds.max(1e-9) / 1e6,
        // On the wire: the frame (FCS included) plus preamble and gap; in a
        // TSO row, the TCP payload received.
        gbps: if rep.payload > 0 { rep.payload_gbps() } else { mpps * size.wire_bytes() * 8.0 / 1e3 },
        loss: rep.loss_ratio(),
        latency_p50_us: rep.sink.latency_p50_ns / 1e3,
        latency_p99_us: rep.sink.latency_p99_ns / 1e3,
        latency_p999_us: rep.sink.latency_p999_ns / 1e3,
        cycles_per_packet: st.cycles_per_packet,
        cycles_by_second: st.cycles_by_second.clone(),
        switch_idle: st.idle_fraction,
        switch_burst: st.avg_burst,
        // A phase's own ports say (`by_ring`).
        full_burst_cycles: None,
        full_burst_share: None,
        gen_idle: rep.idle_iterations as f64 / it,
        gen_pushed_back: rep.pushed_back as f64 / it,
        generator_bound: rep.generator_bound(),
        flooded: st.flooded,
        learned: None,
        reordered: rep.sink.reordered,
        duplicates: rep.sink.duplicates,
        // A TSO segment may be copied in pieces (cut into frames): count
        // its copies in bytes, over the segment's size.
        copies_per_packet: match size {
            Size::Tso => st.bytes_copied_per_packet.map(|b| b / (size.mean() - crate::frame::FCS as f64)),
            _ => st.copies_per_packet,
        },
        note,
        // Measured before the cell (`probe`), by the caller.
        line_round_trip: None,
    }
}

/// Options of a comparison run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub switches: Vec<SwitchKind>,
    pub scenarios: Vec<Scenario>,
    pub sizes: Vec<Size>,
    pub flows: Vec<u32>,
    pub repeats: usize,
    pub duration: Duration,
    /// RFC 2544 search (else: receive rate at full offered load).
    pub full: bool,
    pub loss_tolerance: f64,
    /// Latency is measured at this fraction of the row's throughput...
    pub latency_fraction: f64,
    /// ...for this long.
    pub latency_duration: Duration,
    pub throttle: Duration,
    /// Offered load of the measured phase (None: as fast as the switch takes).
    pub rate: Option<Rate>,
}

/// An offered rate per stream.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    Pps(f64),
    /// Percent of a line rate in Gbit/s, counting preamble and gap (a TSO
    /// segment as the MSS-sized frames it becomes).
    LinePercent { percent: f64, gbps: f64 },
}

impl Rate {
    pub fn parse(s: &str, gbps: f64) -> Option<Rate> {
        match s.strip_suffix('%') {
            Some(p) => p.parse().ok().filter(|&p: &f64| p > 0.0).map(|percent| Rate::LinePercent { percent, gbps }),
            None => s.parse().ok().filter(|&p: &f64| p > 0.0).map(Rate::Pps),
        }
    }

    pub fn pps(self, size: Size) -> f64 {
        match self {
            Rate::Pps(p) => p,
            Rate::LinePercent { percent, gbps } => percent / 100.0 * gbps * 1e9 / (size.wire_bytes() * 8.0),
        }
    }
}

/// Runs one cell: the switch started for its sizes, each size measured in
/// turn (throughput, then latency at a fraction of it). One result per
/// size: a row, or why there is none. A packed-ring cell whose switch
/// negotiated split rings is not measured (never a split row under a
/// packed label).
pub fn cell(gen: &Generator, setup: &Setup, plan: &Plan, c: &Cell, tag: &str) -> Vec<Result<Row, NotMeasured>> {
    let all = |unsupported: bool, reason: &str| c.sizes.iter().map(|&z| Err(c.missing(z, unsupported, reason))).collect();
    let Some(&first) = c.sizes.first() else { return Vec::new() };
    if !c.kind.supports(c.scenario.topology) {
        return all(true, &format!("{} has no VXLAN tunnel port", c.kind.name()));
    }
    if c.scenario.rings_split_at.is_some() && !matches!(c.kind, SwitchKind::Vswitchd(_)) {
        return all(true, "only vswitchd says what each port's bursts cost");
    }
    if c.scenario.topology == Topology::Vxlan && c.sizes.contains(&Size::Tso) {
        // The remote endpoint's segments would leave unwrapped.
        return all(true, "the generator sends no TCP segments through a tunnel");
    }
    let mut s = match Session::open(gen, c.kind, setup, c.scenario, c.flows, tag, PortOpts::for_size(first, c.ring), c.repeat) {
        Ok(s) => s,
        Err(e) => return all(false, &e),
    };
    // VMs that offer no packed ring get split rings whatever the switch.
    if c.ring == Ring::Packed && c.scenario.rings_split_at.is_none() {
        let ring = s.switch.ring_negotiated();
        if ring != Ok(Ring::Packed) {
            s.close();
            return match ring {
                Ok(got) => all(true, &format!("the VMs offered packed rings; the switch negotiated {} rings", got.name())),
                Err(e) => all(false, &format!("could not tell which ring layout was negotiated: {e}")),
            };
        }
    }
    let mut out = Vec::new();
    for &size in c.sizes {
        match measure_size(&mut s, plan, c, size) {
            Ok(rows) => out.extend(rows.into_iter().map(Ok)),
            Err(e) => out.push(Err(c.missing(size, false, &e))),
        }
    }
    s.close();
    out
}

/// One of a switch's ports, with what its bursts cost (vswitchd's `show
/// ports`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PortLoad {
    pub name: String,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub busy_cycles: u64,
    pub rx_bursts: u64,
    pub full_burst_packets: u64,
    pub full_burst_cycles: u64,
    /// It negotiated a packed ring.
    pub packed: bool,
}

impl PortLoad {
    pub fn of(p: vswitch::protocol::PortInfo) -> PortLoad {
        let packed = p.features.iter().any(|f| f == "ring_packed");
        PortLoad { name: p.name, rx_packets: p.rx_packets, tx_packets: p.tx_packets, busy_cycles: p.busy_cycles, rx_bursts: p.rx_bursts, full_burst_packets: p.full_burst_packets, full_burst_cycles: p.full_burst_cycles, packed }
    }
}

/// A phase of a scenario with `rings_split_at` as a row per ring layout, each
/// from the ports of the VMs that offered it: its cycles per packet their
/// busy cycles over the packets they sent in, and apart over those of the
/// polls that took a whole burst; its bursts the packets a poll that got
/// any took from them (a slower guest offers fewer, and each costs more);
/// its Mpps and Gbps what the switch sent them. Both rows saw the same
/// machine, load and moment, which no two phases do here. Other scenarios'
/// rows pass as they are.
fn by_ring(r: Row, st: &SwitchStats, sc: &Scenario, seconds: f64, repeat: usize) -> Result<Vec<Row>, String> {
    if sc.rings_split_at.is_none() {
        return Ok(vec![r]);
    }
    [Ring::Split, Ring::Packed]
        .into_iter()
        .map(|ring| {
            let (mut rx, mut tx, mut busy, mut bursts, mut full) = (0, 0, 0, 0, (0, 0));
            for i in (0..sc.vms).filter(|&i| sc.ring_of(i, repeat) == Some(ring)) {
                let p = st.ports.iter().find(|p| p.name == format!("vm{i}")).ok_or(format!("the switch did not list port vm{i}"))?;
                if p.packed != (ring == Ring::Packed) {
                    return Err(format!("vm{i} offered a {} ring and the switch negotiated the other layout", ring.name()));
                }
                (rx, tx, busy, bursts) = (rx + p.rx_packets, tx + p.tx_packets, busy + p.busy_cycles, bursts + p.rx_bursts);
                full = (full.0 + p.full_burst_packets, full.1 + p.full_burst_cycles);
            }
            let mpps = tx as f64 / seconds.max(1e-9) / 1e6;
            let gbps = if r.rx_mpps > 0.0 { r.gbps * mpps / r.rx_mpps } else { 0.0 };
            let note = "split and packed rings measured in one phase; loss and latency are both layouts' together";
            let note = if r.note.is_empty() { note.to_string() } else { format!("{}; {note}", r.note) };
            Ok(Row {
                ring,
                rx_mpps: mpps,
                gbps,
                cycles_per_packet: (rx > 0).then(|| busy as f64 / rx as f64),
                cycles_by_second: Vec::new(),
                switch_burst: (bursts > 0).then(|| rx as f64 / bursts as f64),
                full_burst_cycles: (full.0 > 0).then(|| full.1 as f64 / full.0 as f64),
                full_burst_share: (rx > 0).then(|| full.0 as f64 / rx as f64),
                note,
                ..r.clone()
            })
        })
        .collect()
}

fn measure_size(s: &mut Session, plan: &Plan, c: &Cell, size: Size) -> Result<Vec<Row>, String> {
    let sc = c.scenario;
    let (rep, st) = s.measure(size, plan.rate.map(|r| r.pps(size)), plan.duration, plan.throttle)?;
    let mut r = row(c, size, &rep, &st, &s.note);
    if plan.full {
        let per_stream = rfc2544(s, size, rep.rx_pps() / sc.streams.len() as f64, plan)?;
        r.rx_mpps = per_stream * sc.streams.len() as f64 / 1e6;
        r.gbps = match size.tcp_payload() {
            0 => r.rx_mpps * size.wire_bytes() * 8.0 / 1e3,
            p => r.rx_mpps * 1e6 * p as f64 * 8.0 / 1e9,
        };
        let sep = if r.note.is_empty() { "" } else { "; " };
        r.note = format!("{}{sep}RFC 2544 rate at loss <= {}%", r.note, plan.loss_tolerance * 100.0);
    }
    if plan.latency_fraction > 0.0 && rep.rx_pps() > 0.0 {
        let rate = rep.rx_pps() / sc.streams.len() as f64 * plan.latency_fraction;
        let (lat, _) = s.measure(size, Some(rate), plan.latency_duration, Duration::ZERO)?;
        r.latency_p50_us = lat.sink.latency_p50_ns / 1e3;
        r.latency_p99_us = lat.sink.latency_p99_ns / 1e3;
        r.latency_p999_us = lat.sink.latency_p999_ns / 1e3;
    }
    by_ring(r, &st, sc, rep.seconds, c.repeat)
}

/// Binary search for the highest per-stream rate whose loss stays within the
/// tolerance, between 0 and `max` (the full-load receive rate, a little over).
fn rfc2544(s: &mut Session, size: Size, max: f64, plan: &Plan) -> Result<f64, String> {
    let (mut lo, mut hi) = (0.0, max * 1.1);
    for _ in 0..7 {
        let mid = (lo + hi) / 2.0;
        let (rep, _) = s.measure(size, Some(mid), plan.duration, Duration::ZERO)?;
        if rep.loss_ratio() <= plan.loss_tolerance {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

#[cfg(test)]
mod tests;
