//! The traffic generator: VMs played by net_virtio_user ports (or physical
//! ports by devargs), sending prebuilt frames in bursts and sinking what
//! arrives, on one thread.
//!
//! Per burst: one bulk allocation, a template copy and an 18-byte stamp per
//! frame (plain memory writes, no C call), one tx call; unsent frames stay
//! queued for the next turn (their sequence numbers stay in order). The loop
//! counts what tells who the bottleneck was: iterations in which nothing
//! could be sent for lack of rate budget and nothing arrived (idle), and
//! iterations in which the switch did not take a whole burst (pushed back).
use std::sync::Arc;
use std::time::{Duration, Instant};

use pmd_bridge::cycles::{tsc, tsc_hz};
use pmd_bridge::{Burst, Eal, EthPort, Mempool, PortConfig, RxQueue, TxQueue};
use serde::{Deserialize, Serialize};

use crate::frame::{self, IMIX};
use crate::sink::{Sink, SinkReport};

/// One VM's port.
pub struct VmPort {
    pub name: String,
    rx: RxQueue,
    tx: TxQueue,
    _port: EthPort,
}

/// How a VM reaches the switch.
#[derive(Clone, Debug)]
pub enum Attach {
    /// net_virtio_user on this socket; `server` makes the VM the listener.
    Vhost { socket: std::path::PathBuf, server: bool },
    /// A DPDK device by devargs (a NIC cabled to the switch).
    Devargs(String),
}

impl VmPort {
    pub fn open(eal: &Eal, pool: &Arc<Mempool>, name: &str, attach: &Attach, mtu: u16) -> Result<VmPort, String> {
        let devargs = match attach {
            Attach::Vhost { socket, server } => format!(
                "net_virtio_user_{name},path={},queues=1,mrg_rxbuf=1,queue_size=1024{}",
                socket.display(),
                if *server { ",server=1" } else { "" }
            ),
            Attach::Devargs(d) => d.clone(),
        };
        let mut port = EthPort::open(eal, &devargs).map_err(|e| format!("{name}: {e}"))?;
        let cfg = PortConfig { mtu: Some(mtu), lsc_interrupt: matches!(attach, Attach::Vhost { server: true, .. }), ..Default::default() };
        port.configure(&cfg, Arc::clone(pool)).map_err(|e| format!("{name}: {e}"))?;
        port.start().map_err(|e| format!("{name}: {e}"))?;
        let rx = port.rx_queue(0).map_err(|e| e.to_string())?;
        let tx = port.tx_queue(0).map_err(|e| e.to_string())?;
        Ok(VmPort { name: name.to_string(), rx, tx, _port: port })
    }
}

/// Frame sizes of a trial.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Size {
    Fixed(usize),
    Imix,
}

impl Size {
    pub fn label(&self) -> String {
        match self {
            Size::Fixed(n) => n.to_string(),
            Size::Imix => "imix".into(),
        }
    }

    /// Mean frame size (for Gbps).
    pub fn mean(&self) -> f64 {
        match self {
            Size::Fixed(n) => *n as f64,
            Size::Imix => IMIX.iter().sum::<usize>() as f64 / IMIX.len() as f64,
        }
    }

    fn cycle(&self) -> Vec<usize> {
        match self {
            Size::Fixed(n) => vec![*n],
            Size::Imix => IMIX.to_vec(),
        }
    }
}

/// One trial's traffic.
#[derive(Clone, Debug)]
pub struct Trial {
    pub size: Size,
    pub flows: u32,
    /// (source VM, destination VM) per stream.
    pub streams: Vec<(usize, usize)>,
    /// Offered rate per stream in packets per second; None: as fast as the
    /// switch takes them.
    pub rate_pps: Option<f64>,
    pub duration: Duration,
    /// Busy-waits this long after each burst sent: a deliberately slow
    /// generator, to check the bottleneck attribution.
    pub throttle: Duration,
}

/// What the generator did in a trial.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GenReport {
    pub sent: Vec<u64>,
    pub seconds: f64,
    pub iterations: u64,
    /// Iterations with no rate budget left and nothing received.
    pub idle_iterations: u64,
    /// Iterations in which a tx call left frames unsent.
    pub pushed_back: u64,
    pub sink: SinkReport,
}

impl GenReport {
    pub fn sent_total(&self) -> u64 {
        self.sent.iter().sum()
    }

    /// Received packets per second over the measured time.
    pub fn rx_pps(&self) -> f64 {
        self.sink.received as f64 / self.seconds.max(1e-9)
    }

    pub fn loss_ratio(&self) -> f64 {
        self.sink.lost as f64 / self.sent_total().max(1) as f64
    }

    /// Neither idle time nor backpressure: the generator itself was the limit.
    pub fn generator_bound(&self) -> bool {
        let it = self.iterations.max(1) as f64;
        (self.idle_iterations as f64 / it) < 0.01 && (self.pushed_back as f64 / it) < 0.01
    }
}

/// Per-flow header bytes: destination and source MAC, source and
/// destination IP, IP checksum for one frame size.
struct FlowPatch {
    bytes: Vec<[u8; 22]>,
}

impl FlowPatch {
    fn new(src: usize, dst: usize, flows: u32, size: usize) -> FlowPatch {
        FlowPatch {
            bytes: (0..flows)
                .map(|f| {
                    let t = frame::template(src as u8, dst as u8, f, size);
                    let mut p = [0u8; 22];
                    p[..12].copy_from_slice(&t[..12]);
                    p[12..20].copy_from_slice(&t[26..34]);
                    p[20..22].copy_from_slice(&t[24..26]);
                    p
                })
                .collect(),
        }
    }

    #[inline(always)]
    fn apply(&self, flow: usize, f: &mut [u8]) {
        let p = &self.bytes[flow];
        f[..12].copy_from_slice(&p[..12]);
        f[26..34].copy_from_slice(&p[12..20]);
        f[24..26].copy_from_slice(&p[20..22]);
    }
}

/// Sends one announcement per flow from every VM (broadcast), so that a
/// learning switch knows every address before the measured phase, and
/// drains whatever comes back.
pub fn learn(vms: &mut [VmPort], pool: &Mempool, flows: u32) -> Result<(), String> {
    let mut burst = Burst::<32>::new();
    for vm in 0..vms.len() {
        for chunk in (0..flows).collect::<Vec<_>>().chunks(32) {
            for &f in chunk {
                let m = pool.alloc_from(&frame::announce(vm as u8, f)).ok_or("mbuf pool empty")?;
                let _ = burst.push(m);
            }
            let start = Instant::now();
            while !burst.is_empty() {
                vms[vm].tx.tx_burst(&mut burst);
                drain(vms);
                if start.elapsed() > Duration::from_secs(10) {
                    return Err(format!("{}: the switch takes no announcements", vms[vm].name));
                }
            }
        }
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(200) {
        drain(vms);
    }
    Ok(())
}

fn drain(vms: &mut [VmPort]) -> usize {
    let mut b = Burst::<32>::new();
    let mut n = 0;
    for vm in vms.iter_mut() {
        n += vm.rx.rx_burst(&mut b);
        b.clear();
    }
    n
}

/// Runs one trial and reports it.
pub fn run(vms: &mut [VmPort], pool: &Mempool, t: &Trial) -> Result<GenReport, String> {
    let hz = tsc_hz();
    let sizes = t.size.cycle();
    let n_streams = t.streams.len();
    let templates: Vec<Vec<Vec<u8>>> =
        t.streams.iter().map(|&(s, d)| sizes.iter().map(|&z| frame::template(s as u8, d as u8, 0, z)).collect()).collect();
    let patches: Vec<Vec<FlowPatch>> =
        t.streams.iter().map(|&(s, d)| sizes.iter().map(|&z| FlowPatch::new(s, d, t.flows.max(1), z)).collect()).collect();
    let expected = t.rate_pps.map(|r| r * t.duration.as_secs_f64()).unwrap_or(50e6) as u64;
    let mut sink = Sink::new(n_streams, expected);
    let mut pending: Vec<Burst> = (0..n_streams).map(|_| Burst::new()).collect();
    let mut seq = vec![0u64; n_streams];
    let mut sent = vec![0u64; n_streams];
    let mut flow = vec![0usize; n_streams];
    let mut size_i = vec![0usize; n_streams];
    let mut rep = GenReport::default();
    let mut rx = Burst::<32>::new();
    let start = tsc();
    let end = start + (t.duration.as_secs_f64() * hz as f64) as u64;
    let throttle = (t.throttle.as_secs_f64() * hz as f64) as u64;
    let flows = t.flows.max(1) as usize;

    let mut now = start;
    while now < end {
        rep.iterations += 1;
        let mut active = false;
        for s in 0..n_streams {
            let src = t.streams[s].0;
            if pending[s].is_empty() {
                let budget = match t.rate_pps {
                    Some(r) => ((((now - start) as f64 / hz as f64) * r) as u64).saturating_sub(seq[s]).min(32) as usize,
                    None => 32,
                };
                if budget == 0 || !pool.alloc_bulk(&mut pending[s], budget) {
                    continue;
                }
                for m in pending[s].as_mut_slice() {
                    let z = size_i[s];
                    let f = m.fill(&templates[s][z]).ok_or("a fresh mbuf would not take a frame")?;
                    patches[s][z].apply(flow[s], f);
                    frame::stamp(f, seq[s], now, s as u16);
                    seq[s] += 1;
                    flow[s] = if flow[s] + 1 == flows { 0 } else { flow[s] + 1 };
                    size_i[s] = if size_i[s] + 1 == sizes.len() { 0 } else { size_i[s] + 1 };
                }
            }
            active = true;
            sent[s] += vms[src].tx.tx_burst(&mut pending[s]) as u64;
            if !pending[s].is_empty() {
                rep.pushed_back += 1;
            }
            if throttle > 0 {
                let until = tsc() + throttle;
                while tsc() < until {
                    std::hint::spin_loop();
                }
            }
        }
        let rx_now = tsc();
        let mut got = 0;
        for vm in vms.iter_mut() {
            got += vm.rx.rx_burst(&mut rx);
            record(&mut sink, &rx, rx_now);
            rx.clear();
        }
        if !active && got == 0 {
            rep.idle_iterations += 1;
        }
        now = tsc();
    }
    rep.seconds = (now - start) as f64 / hz as f64;
    pending.clear();

    // Frames still in flight arrive within a few milliseconds: drain until
    // quiet (or 2 s), without counting this time in the rate.
    let quiet = Instant::now();
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_millis(100) && quiet.elapsed() < Duration::from_secs(2) {
        let rx_now = tsc();
        for vm in vms.iter_mut() {
            if vm.rx.rx_burst(&mut rx) > 0 {
                last = Instant::now();
            }
            record(&mut sink, &rx, rx_now);
            rx.clear();
        }
    }
    rep.sink = sink.report(&sent, hz);
    rep.sent = sent;
    Ok(rep)
}

#[inline]
fn record(sink: &mut Sink, rx: &Burst<32>, now: u64) {
    for m in rx.iter() {
        let trailer = if m.nb_segs() == 1 { frame::read(m.data()) } else { frame::read(&m.to_vec()) };
        match trailer {
            Some((seq, ts, stream)) => sink.record(seq, ts, now, stream),
            None => sink.other += 1,
        }
    }
}

/// The generator's DPDK side: an EAL on the given core and one pool.
pub struct Generator {
    pub eal: Eal,
    pub pool: Arc<Mempool>,
}

impl Generator {
    /// `hugepages`: use them (with single-file segments, which vhost-user
    /// needs) or run with `--no-huge`.
    pub fn init(core: u32, hugepages: bool, prefix: &str) -> Result<Generator, String> {
        let mut args = vec!["--lcores".to_string(), format!("0@{core}"), "--file-prefix".into(), prefix.into(), "--no-pci".into()];
        if hugepages {
            args.extend(["--single-file-segments".into(), "--socket-mem".into(), "1024".into()]);
        } else {
            args.extend(["--no-huge".into(), "-m".into(), "1024".into(), "--no-shconf".into()]);
        }
        pmd_bridge::log::set_echo(false);
        let eal = Eal::init(&args).map_err(|e| e.to_string())?;
        let pool = Arc::new(Mempool::new(&eal, "bench", 32767, 256, 2048).map_err(|e| e.to_string())?);
        Ok(Generator { eal, pool })
    }

    /// Opens one VM per socket, named `{tag}{i}`.
    /// Each VM receives into a pool of its own, as each guest's buffers are
    /// its own memory: with one shared pool, a guest-to-guest copy may run
    /// between buffers whose addresses alias, which no real pair of guests
    /// would show. The pools go with the VMs.
    pub fn attach(&self, tag: &str, sockets: &[Attach], mtu: u16) -> Result<Vec<VmPort>, String> {
        sockets
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let name = format!("{tag}{i}");
                let pool = Arc::new(Mempool::new(&self.eal, &format!("rx_{name}"), 8191, 256, 2048).map_err(|e| e.to_string())?);
                VmPort::open(&self.eal, &pool, &name, a, mtu)
            })
            .collect()
    }
}
