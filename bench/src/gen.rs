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
//!
//! With `Size::Tso` each VM sends 64 KB TCP segments instead, as a Linux
//! guest with TSO does: the port negotiates the device's transmit offloads
//! (HOST_TSO4, CSUM), each segment is an mbuf chain, its headers then
//! page-sized buffers of payload, marked for TCP segmentation, and the virtio PMD writes the virtio-net
//! header (NEEDS_CSUM, GSO_TCPV4, gso_size 1448) for the switch to honour.
//! The sink counts TCP payload bytes, however the switch delivered them.
use std::sync::Arc;
use std::time::{Duration, Instant};

use pmd_bridge::cycles::{tsc, tsc_hz};
use pmd_bridge::mbuf::{tx_flags, TxOffload};
use pmd_bridge::{Burst, Eal, EthPort, Mempool, PortConfig, RxQueue, TxQueue};
use serde::{Deserialize, Serialize};

use crate::frame::{self, TCP_HEADERS, TSO_MSS, TSO_PAYLOAD};
use crate::sink::{Sink, SinkReport};
use crate::tunnel::{self, Remote};
pub use crate::size::Size;

/// One VM's port.
pub struct VmPort {
    pub name: String,
    /// Data room of its receive buffers.
    rx_room: u16,
    pub(crate) rx: RxQueue,
    pub(crate) tx: TxQueue,
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

/// How each VM's port is set up, alike on the VM's side and the switch's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortOpts {
    /// L3 MTU of every port (9000 for jumbo frames).
    pub mtu: u16,
    /// The VMs send TSO segments and the switch is set up to take them.
    pub tso: bool,
    /// The virtqueue layout the VMs offer.
    pub ring: Ring,
}

impl PortOpts {
    /// What a size needs: a jumbo MTU for frames over 1518 bytes, TSO for
    /// `Size::Tso`.
    pub fn for_size(size: Size, ring: Ring) -> PortOpts {
        let mtu = match size {
            Size::Fixed(n) if n > 1518 => 9000,
            _ => 1500,
        };
        PortOpts { mtu, tso: size == Size::Tso, ring }
    }
}

/// Virtqueue layout of a VM's rings (VIRTIO 1.1 packed, or split).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ring {
    #[default]
    Split,
    Packed,
}

impl Ring {
    pub fn name(self) -> &'static str {
        match self {
            Ring::Split => "split",
            Ring::Packed => "packed",
        }
    }
}

impl VmPort {
    /// `o.tso`: enable the device's transmit offloads and insist on TSO and
    /// the TCP checksum offload (the backend must offer HOST_TSO4 and CSUM).
    /// `o.ring`: a packed ring is offered (`packed_vq=1`); whether the
    /// switch took it is for the caller to check on the switch's side.
    pub fn open(eal: &Eal, pool: &Arc<Mempool>, name: &str, attach: &Attach, o: PortOpts) -> Result<VmPort, String> {
        let devargs = match attach {
            Attach::Vhost { socket, server } => format!(
                "net_virtio_user_{name},path={},queues=1,mrg_rxbuf=1,queue_size=1024{}{}",
                socket.display(),
                if *server { ",server=1" } else { "" },
                if o.ring == Ring::Packed { ",packed_vq=1" } else { "" }
            ),
            Attach::Devargs(d) => d.clone(),
        };
        let mut port = EthPort::open(eal, &devargs).map_err(|e| format!("{name}: {e}"))?;
        let cfg = PortConfig {
            mtu: Some(o.mtu),
            lsc_interrupt: matches!(attach, Attach::Vhost { server: true, .. }),
            tx_offloads: o.tso,
            // A VM that sends TSO segments takes them whole too (GUEST_TSO4
            // and GUEST_CSUM), as a Linux guest negotiates.
            rx_lro: o.tso,
            ..Default::default()
        };
        port.configure(&cfg, Arc::clone(pool)).map_err(|e| format!("{name}: {e}"))?;
        let caps = port.tx_offload_caps();
        if o.tso && !(caps.tso && caps.tcp_csum) {
            return Err(format!("{name}: the switch's port offers no TCP segmentation offload (HOST_TSO4 and CSUM); device offloads: {caps:?}"));
        }
        port.start().map_err(|e| format!("{name}: {e}"))?;
        let rx = port.rx_queue(0).map_err(|e| e.to_string())?;
        let tx = port.tx_queue(0).map_err(|e| e.to_string())?;
        Ok(VmPort { name: name.to_string(), rx_room: pool.data_room(), rx, tx, _port: port })
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
    /// The VM that is a remote VXLAN endpoint (its frames leave wrapped).
    pub remote: Option<(usize, Remote)>,
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
    /// TCP payload bytes per packet sent (TSO trials; 0 otherwise).
    #[serde(default)]
    pub payload: u64,
    pub sink: SinkReport,
}

impl GenReport {
    pub fn sent_total(&self) -> u64 {
        self.sent.iter().sum()
    }

    /// Received packets per second over the measured time; in a TSO
    /// trial, segments' worth of TCP payload per second.
    pub fn rx_pps(&self) -> f64 {
        if self.payload > 0 {
            return self.sink.payload_bytes as f64 / self.payload as f64 / self.seconds.max(1e-9);
        }
        self.sink.received as f64 / self.seconds.max(1e-9)
    }

    /// Lost packets over sent; in a TSO trial, lost payload bytes over sent.
    pub fn loss_ratio(&self) -> f64 {
        if self.payload > 0 {
            return self.sink.lost_bytes as f64 / (self.sent_total() * self.payload).max(1) as f64;
        }
        self.sink.lost as f64 / self.sent_total().max(1) as f64
    }

    /// TCP payload received, in Gbit/s (TSO trials).
    pub fn payload_gbps(&self) -> f64 {
        self.sink.payload_bytes as f64 * 8.0 / self.seconds.max(1e-9) / 1e9
    }

    /// Frames the sink received per segment's worth of payload: about 45
    /// when the switch cut the segments, 1 when it delivered them whole.
    pub fn frames_per_segment(&self) -> Option<f64> {
        (self.payload > 0 && self.sink.payload_bytes > 0)
            .then(|| self.sink.frames as f64 * self.payload as f64 / self.sink.payload_bytes as f64)
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
    /// Where the frame starts (after a tunnel's outer headers).
    at: usize,
}

impl FlowPatch {
    fn new(src: usize, dst: usize, flows: u32, size: usize, at: usize) -> FlowPatch {
        FlowPatch {
            at,
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
        let f = &mut f[self.at..];
        f[..12].copy_from_slice(&p[..12]);
        f[26..34].copy_from_slice(&p[12..20]);
        f[24..26].copy_from_slice(&p[20..22]);
    }
}

/// How long a switch gets to learn the announcements (`learn`).
const LEARN_DEADLINE: Duration = Duration::from_secs(10);

/// Sends one announcement per flow from every VM (broadcast), so that a
/// learning switch knows every address before the measured phase, and
/// drains whatever comes back, until `learned` says the switch knows them
/// (within `LEARN_DEADLINE`).
pub fn learn(vms: &mut [VmPort], pool: &Mempool, flows: u32, remote: Option<(usize, Remote)>, mut learned: impl FnMut() -> bool) -> Result<(), String> {
    let mut burst = Burst::<32>::new();
    for vm in 0..vms.len() {
        for chunk in (0..flows).collect::<Vec<_>>().chunks(32) {
            for &f in chunk {
                let a = frame::announce(vm as u8, f);
                let a = match remote {
                    Some((r, t)) if r == vm => t.wrap(&a),
                    _ => a,
                };
                let m = pool.alloc_from(&a).ok_or("mbuf pool empty")?;
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
    // The switch learns as its thread gets to the announcements, which
    // a loaded machine can put off well past the drain.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(200) || (!learned() && start.elapsed() < LEARN_DEADLINE) {
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

/// Per-flow headers of a stream's TSO segments, and their payload: built
/// once and shared by every segment in flight, as a guest's TCP stack
/// hands its NIC headers apart from page fragments. A segment costs the
/// generator its headers, not a 64 KB copy: what a run measures is the
/// switch, and the generator's core also runs the sink.
struct TsoStream {
    headers: Vec<[u8; TCP_HEADERS]>,
    payload: pmd_bridge::Mbuf,
}

impl TsoStream {
    fn new(pool: &Mempool, src: usize, dst: usize, stream: usize, flows: u32) -> Result<TsoStream, String> {
        let (src, dst, stream) = (src as u8, dst as u8, stream as u16);
        let frame = frame::tcp_template(src, dst, 0, stream, TSO_PAYLOAD);
        Ok(TsoStream {
            headers: (0..flows).map(|f| frame::tcp_headers(src, dst, f, stream, TSO_PAYLOAD)).collect(),
            payload: pool.alloc_from(&frame[TCP_HEADERS..]).ok_or("no mbufs for a TSO segment's payload")?,
        })
    }

    /// One segment as an mbuf chain from `pool`, marked for TSO: its own
    /// headers, then the shared payload.
    #[inline]
    fn segment(&mut self, pool: &Mempool, flow: usize, seq: u32, now: u64) -> Option<pmd_bridge::Mbuf> {
        let mut m = pool.alloc_from(&self.headers[flow])?;
        frame::tcp_stamp(m.data_mut()?, seq, now);
        m.chain(self.payload.share()).ok()?;
        let ok = m.set_tx_offload(TxOffload {
            flags: tx_flags::TCP_SEG | tx_flags::TCP_CKSUM | tx_flags::IPV4 | tx_flags::IP_CKSUM,
            l2_len: 14,
            l3_len: 20,
            l4_len: 20,
            tso_segsz: TSO_MSS,
        });
        ok.then_some(m)
    }
}

/// TSO segments each stream may have built and not yet sent: a 64 KB
/// segment takes 17 descriptors of a 1024-entry ring.
const TSO_BURST: u64 = 8;

/// Runs one trial and reports it; a `Size::Tso` trial takes its segments
/// from `gen.tso_pool`, any other its frames from `gen.pool`.
pub fn run(vms: &mut [VmPort], gen: &Generator, t: &Trial) -> Result<GenReport, String> {
    let tso = t.size == Size::Tso;
    let hz = tsc_hz();
    let sizes = t.size.cycle();
    let outer = if t.remote.is_some() { tunnel::OUTER_LEN } else { 0 };
    let pool = gen.pool_for(&sizes, outer);
    let n_streams = t.streams.len();
    let templates: Vec<Vec<Vec<u8>>> = if tso {
        Vec::new()
    } else {
        let wrap = |s: usize, f: Vec<u8>| match t.remote {
            Some((r, ref tun)) if r == s => tun.wrap(&f),
            _ => f,
        };
        t.streams.iter().map(|&(s, d)| sizes.iter().map(|&z| wrap(s, frame::template(s as u8, d as u8, 0, z))).collect()).collect()
    };
    let patches: Vec<Vec<FlowPatch>> = if tso {
        Vec::new()
    } else {
        let at = |s: usize| if t.remote.is_some_and(|(r, _)| r == s) { tunnel::OUTER_LEN } else { 0 };
        t.streams.iter().map(|&(s, d)| sizes.iter().map(|&z| FlowPatch::new(s, d, t.flows.max(1), z, at(s))).collect()).collect()
    };
    let mut tso_streams: Vec<TsoStream> =
        if tso { t.streams.iter().enumerate().map(|(i, &(s, d))| TsoStream::new(&gen.tso_pool, s, d, i, t.flows.max(1))).collect::<Result<_, _>>()? } else { Vec::new() };
    let expected = t.rate_pps.map(|r| r * t.duration.as_secs_f64()).unwrap_or(50e6) as u64;
    let mut sink = if tso { Sink::for_bytes(n_streams, TSO_PAYLOAD as u64) } else { Sink::new(n_streams, expected) };
    let max_burst = if tso { TSO_BURST } else { 32 };
    // Receive buffers per frame: a jumbo frame (and its 12-byte virtio-net
    // header) spans several of the VMs' buffers, and virtio's mergeable
    // receive takes at most 32 buffers per call (10 frames of 3).
    let room = vms.iter().map(|v| v.rx_room).min().unwrap_or(1) as usize;
    let bufs = (sizes.iter().max().copied().unwrap_or(0) + 12).div_ceil(room);
    let rx_rounds = match (tso, bufs) {
        (true, _) => 2 * TSO_BURST as usize * TSO_PAYLOAD.div_ceil(TSO_MSS as usize).div_ceil(32),
        (false, 1) => 1,
        (false, b) => 2 * b,
    };
    let mut pending: Vec<Burst> = (0..n_streams).map(|_| Burst::new()).collect();
    let mut seq = vec![0u64; n_streams];
    let mut sent = vec![0u64; n_streams];
    let mut flow = vec![0usize; n_streams];
    let mut size_i = vec![0usize; n_streams];
    let mut rep = GenReport { payload: t.size.tcp_payload(), ..Default::default() };
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
                    Some(r) => ((((now - start) as f64 / hz as f64) * r) as u64).saturating_sub(seq[s]).min(max_burst) as usize,
                    None => max_burst as usize,
                };
                if budget == 0 {
                    continue;
                }
                if tso {
                    // seq counts segments; the TCP sequence number, bytes.
                    for _ in 0..budget {
                        let byte = seq[s] * TSO_PAYLOAD as u64;
                        let Some(m) = tso_streams[s].segment(&gen.tso_pool, flow[s], byte as u32, now) else { break };
                        let _ = pending[s].push(m);
                        seq[s] += 1;
                        flow[s] = if flow[s] + 1 == flows { 0 } else { flow[s] + 1 };
                    }
                    if pending[s].is_empty() {
                        continue;
                    }
                } else {
                    if !pool.alloc_bulk(&mut pending[s], budget) {
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
            // A TSO segment may come back as 45 frames, a jumbo frame in 3
            // buffers: a turn that sent a burst drains what arrived, as a
            // guest's receive path would, rather than one call's worth.
            for _ in 0..rx_rounds {
                let n = vm.rx.rx_burst(&mut rx);
                got += n;
                record(&mut sink, &rx, rx_now);
                rx.clear();
                // Short of 32 frames: all there was, unless frames span
                // buffers (then only an empty call says so).
                if n == 0 || (bufs == 1 && n < rx.capacity()) {
                    break;
                }
            }
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
        // A VXLAN packet's inner frame (its outer headers in the first
        // segment, its trailer at the end as any frame's).
        let at = tunnel::inner_offset(m.data());
        let head = &m.data()[at..];
        let trailer = if m.nb_segs() == 1 { frame::read(head) } else { frame::read_split(head, m.len() - at, &frame::tail(m.len(), m.segments())) };
        match trailer {
            Some((seq, ts, stream)) => sink.record(seq, ts, now, stream),
            // A TCP frame's headers are all in its first segment.
            None => match frame::read_tcp(head) {
                Some(p) => sink.record_bytes(p.stream, p.seq, p.len, frame::stamp_age(p.stamp, now)),
                None => sink.other += 1,
            },
        }
    }
}

/// Data room of the jumbo pool: the largest frame `Size::parse` takes,
/// inside a tunnel's outer headers.
const JUMBO_ROOM: u16 = 9000 + tunnel::OUTER_LEN as u16;

/// Data room of the VMs' receive buffers: 2 KB, or a page at a jumbo
/// MTU, as a Linux guest sizes its mergeable buffers by the traffic (up to
/// a page).
fn rx_room(mtu: u16) -> u16 {
    if mtu > 1500 {
        4096
    } else {
        2048
    }
}

/// The generator's DPDK side: an EAL on the given core and its pools.
pub struct Generator {
    pub eal: Eal,
    pub pool: Arc<Mempool>,
    /// TSO segments: page-sized buffers (a 64 KB segment is a chain of 16),
    /// as a Linux guest's segments are mostly page fragments.
    pub tso_pool: Arc<Mempool>,
    /// Frames over `pool`'s 2 KB (jumbo, up to 9000 bytes): one buffer
    /// each, so that the per-frame path stays a template copy. The VMs
    /// receive into buffers of their own (`rx_room`), mergeable.
    pub jumbo_pool: Arc<Mempool>,
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
        let tso_pool = Arc::new(Mempool::new(&eal, "bench_tso", 8191, 256, 4096).map_err(|e| e.to_string())?);
        let jumbo_pool = Arc::new(Mempool::new(&eal, "bench_jumbo", 8191, 256, JUMBO_ROOM).map_err(|e| e.to_string())?);
        Ok(Generator { eal, pool, tso_pool, jumbo_pool })
    }

    /// The pool whose buffers take every frame of a size cycle whole.
    fn pool_for(&self, sizes: &[usize], outer: usize) -> &Mempool {
        let largest = sizes.iter().map(|&z| z.max(frame::MIN_SIZE) - frame::FCS + outer).max().unwrap_or(0);
        if largest > self.pool.data_room() as usize {
            &self.jumbo_pool
        } else {
            &self.pool
        }
    }

    /// Opens one VM per socket, named `{tag}{i}`.
    /// Each VM receives into a pool of its own, as each guest's buffers are
    /// its own memory: with one shared pool, a guest-to-guest copy may run
    /// between buffers whose addresses alias, which no real pair of guests
    /// would show. The pools go with the VMs.
    pub fn attach(&self, tag: &str, ports: &[(Attach, PortOpts)]) -> Result<Vec<VmPort>, String> {
        ports
            .iter()
            .enumerate()
            .map(|(i, (a, o))| {
                let name = format!("{tag}{i}");
                let pool = Arc::new(Mempool::new(&self.eal, &format!("rx_{name}"), 8191, 256, rx_room(o.mtu)).map_err(|e| e.to_string())?);
                VmPort::open(&self.eal, &pool, &name, a, *o)
            })
            .collect()
    }
}
