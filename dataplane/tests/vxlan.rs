//! VXLAN through the egress stage on real DPDK: a VM port (slot 0), an
//! underlay (slot 1) and a vxlan port on it (slot 2), the VM's and the
//! underlay's wires `net_ring`s the test reads. Head-end replication over
//! one shared payload, decapsulation and the remote learned, unicast to
//! the learned remote, ARP both ways, and the drops by reason.
use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};

use dataplane::capture::Taps;
use dataplane::counters::{DropReason, PmdCounters, MAX_PORTS};
use dataplane::egress::{Egress, Outputs};
use dataplane::fdb::Fdb;
use dataplane::flood::FloodSets;
use dataplane::fwd::PortView;
use dataplane::port_io::TxPort;
use dataplane::vlan::VlanMode;
use dataplane::vxlan::tx::VxlanTx;
use dataplane::vxlan::wire::{self, Arp, Encap, Outer, OUTER_LEN};
use dataplane::vxlan::{Tunnel, Underlay, Vtep};
use pmd_bridge::cycles::tsc_hz;
use pmd_bridge::{Burst, Eal, EthPort, Mbuf, Mempool, PortConfig, Ring, RxQueue};
use testbed::FilePrefix;

fn eal() -> &'static Eal {
    static EAL: OnceLock<Eal> = OnceLock::new();
    EAL.get_or_init(|| {
        let prefix = FilePrefix::for_process("vxlan");
        Eal::init(&prefix.eal_args(512)).unwrap()
    })
}

const UNDERLAY_MAC: [u8; 6] = [2, 0xee, 0, 0, 0, 1];
const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const REMOTES: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)];
const HOP: [[u8; 6]; 2] = [[2, 0xee, 0, 0, 0, 2], [2, 0xee, 0, 0, 0, 3]];
const VM: [u8; 6] = [2, 0, 0, 0, 0, 1];
const FAR: [u8; 6] = [2, 0, 0, 0, 0, 9];

struct Rig {
    pool: Arc<Mempool>,
    vtep: Arc<Vtep>,
    ports: Vec<Option<PortView>>,
    tx: Vec<Option<TxPort>>,
    flood: FloodSets,
    out: Outputs,
    fdb: Fdb,
    counters: PmdCounters,
    /// The VM's and the underlay's wires, and the ports kept open.
    vm_wire: RxQueue,
    underlay_wire: RxQueue,
    _ports: Vec<EthPort>,
}

/// A ring port for the switch and one that reads its wire.
fn ring_port(name: &str, pool: &Arc<Mempool>) -> (EthPort, EthPort) {
    let ring = |n: &str| Arc::new(Ring::new(eal(), &format!("{name}_{n}"), 256).unwrap());
    let (wire, unused) = (ring("w"), ring("u"));
    let start = |mut p: EthPort| {
        p.configure(&PortConfig::default(), Arc::clone(pool)).unwrap();
        p.start().unwrap();
        p
    };
    let port = start(EthPort::from_rings(eal(), &format!("net_ring_{name}"), &[Arc::clone(&unused)], &[Arc::clone(&wire)]).unwrap());
    let reader = start(EthPort::from_rings(eal(), &format!("net_ring_{name}_r"), &[wire], &[unused]).unwrap());
    (port, reader)
}

impl Rig {
    fn new(tag: &str) -> Rig {
        let pool = Arc::new(Mempool::new(eal(), tag, 2047, 0, 2048).unwrap());
        let vtep = Arc::new(Vtep::new(42, LOCAL, REMOTES.to_vec()));
        let (vm, vm_r) = ring_port(&format!("{tag}v"), &pool);
        let (ul, ul_r) = ring_port(&format!("{tag}u"), &pool);
        let mut ports: Vec<Option<PortView>> = vec![None; MAX_PORTS];
        let mut tx: Vec<Option<TxPort>> = (0..MAX_PORTS).map(|_| None).collect();
        ports[0] = Some(PortView::new("vm", 0, 1, VlanMode::Access(1), 1500));
        let underlay = Underlay { mac: UNDERLAY_MAC, tunnels: vec![Tunnel { slot: 2, vtep: Arc::clone(&vtep) }] };
        ports[1] = Some(PortView::new("uplink", 1, 1, VlanMode::Access(4000), 1500).with_underlay(Some(Arc::new(underlay))));
        ports[2] = Some(PortView::new("tun", 2, 1, VlanMode::Access(1), 1500));
        tx[0] = Some(TxPort::Eth(vm.tx_queue(0).unwrap()));
        tx[1] = Some(TxPort::Eth(ul.tx_queue(0).unwrap()));
        tx[2] = Some(TxPort::Vxlan(Box::new(VxlanTx::new(Arc::clone(&vtep), 1, UNDERLAY_MAC, 1500, false, tsc_hz()))));
        let flood = FloodSets::new(&ports, |s| tx[s as usize].is_some());
        let (vm_wire, underlay_wire) = (vm_r.rx_queue(0).unwrap(), ul_r.rx_queue(0).unwrap());
        let counters = PmdCounters::default();
        Rig { pool, vtep, ports, tx, flood, out: Outputs::default(), fdb: Fdb::new(64, 300), counters, vm_wire, underlay_wire, _ports: vec![vm, vm_r, ul, ul_r] }
    }

    fn input(&mut self, slot: u16, frames: &[Vec<u8>]) {
        let mut b = Burst::<32>::new();
        for f in frames {
            b.push(self.pool.alloc_from(f).unwrap()).unwrap();
        }
        let eg = Egress { ports: &self.ports, flood: &self.flood, tx: &mut self.tx, out: &mut self.out, pool: &self.pool, fdb: &self.fdb, counters: &self.counters, now: 1, taps: &Taps::default() };
        eg.forward_mbufs(slot, &mut b);
    }

    fn take(q: &mut RxQueue) -> Vec<Mbuf> {
        let mut b = Burst::<32>::new();
        q.rx_burst(&mut b);
        b.drain().collect()
    }

    fn drops(&self, slot: usize, r: DropReason) -> u64 {
        self.counters.ports[slot].drops[r as usize].load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = [&dst[..], &src[..], &[0x88, 0xb5]].concat();
    f.extend((0..len - 14).map(|i| i as u8));
    f
}

/// What remote `r` would send: `inner` in VXLAN to our local address.
fn from_remote(r: usize, vni: u32, inner: &[u8]) -> Vec<u8> {
    let e = Encap { src_mac: HOP[r], dst_mac: UNDERLAY_MAC, src_ip: REMOTES[r], dst_ip: LOCAL, vni };
    let mut hdr = [0u8; OUTER_LEN];
    e.write(&mut hdr, inner.len(), 50000, false);
    [&hdr[..], inner].concat()
}

#[test]
fn a_flood_is_one_shared_payload_under_a_header_per_remote() {
    let mut rig = Rig::new("vxf");
    rig.vtep.learn_neighbour(0, HOP[0]);
    rig.vtep.learn_neighbour(1, HOP[1]);
    let f = frame([0xff; 6], VM, 300);
    rig.input(0, std::slice::from_ref(&f));
    let got = Rig::take(&mut rig.underlay_wire);
    assert_eq!(got.len(), 2, "one packet per remote");
    let mut payloads = Vec::new();
    for (m, r) in got.iter().zip(0..) {
        let segs: Vec<&[u8]> = m.segments().collect();
        assert_eq!(segs.len(), 2, "a header segment in front of the frame");
        assert_eq!(segs[0].len(), OUTER_LEN);
        assert_eq!(&segs[0][..6], &HOP[r], "to remote {r}'s link-layer address");
        assert_eq!(&segs[0][30..34], &REMOTES[r].octets());
        assert_eq!(segs[1], &f[..]);
        payloads.push(segs[1].as_ptr());
        let whole = m.to_vec();
        let o = Outer::parse(&whole).unwrap().expect("VXLAN");
        assert_eq!((o.vni, o.src_ip, o.dst_ip, o.inner_len), (42, LOCAL, REMOTES[r], f.len()));
    }
    assert_eq!(payloads[0], payloads[1], "not copied: the same buffer under both headers");
}

#[test]
fn decapsulated_frames_teach_the_remote_and_unicast_follows() {
    let mut rig = Rig::new("vxd");
    let inner = frame(VM, FAR, 200);
    rig.input(1, &[from_remote(1, 42, &inner)]);
    let got = Rig::take(&mut rig.vm_wire);
    assert_eq!(got.iter().map(Mbuf::to_vec).collect::<Vec<_>>(), [inner], "the inner frame, whole, to the VM (flooded)");
    assert_eq!(rig.vtep.remote_of(FAR), Some(1));
    assert_eq!(rig.vtep.neighbour(1), Some(HOP[1]), "the remote's MAC from its packet");
    assert_eq!(rig.fdb.lookup(1, FAR, 1), Some((2, 1)), "learned on the vxlan port");
    // Back to FAR: to remote 1 alone.
    rig.input(0, &[frame(FAR, VM, 100)]);
    let got = Rig::take(&mut rig.underlay_wire);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].to_vec()[30..34], &REMOTES[1].octets());
    assert_eq!(rig.counters.ports[2].rx_packets.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn arp_is_answered_and_asked() {
    let mut rig = Rig::new("vxa");
    // Asked for our address: answered from the underlay's MAC.
    let ask = Arp::frame(wire::ARP_REQUEST, HOP[0], REMOTES[0], [0; 6], LOCAL, [0xff; 6]);
    rig.input(1, &[ask.to_vec()]);
    let got = Rig::take(&mut rig.underlay_wire);
    assert_eq!(got.len(), 1);
    let reply = Arp::parse(&got[0].to_vec()).unwrap();
    assert_eq!((reply.op, reply.sha, reply.spa, reply.tpa), (wire::ARP_REPLY, UNDERLAY_MAC, LOCAL, REMOTES[0]));
    assert_eq!(rig.vtep.neighbour(0), Some(HOP[0]), "the asker learned");
    // Remote 1 unknown: its copy dropped, an ARP request sent instead.
    rig.input(0, &[frame([0xff; 6], VM, 100)]);
    let got: Vec<Vec<u8>> = Rig::take(&mut rig.underlay_wire).iter().map(Mbuf::to_vec).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    let request = got.iter().find_map(|f| Arp::parse(f)).expect("an ARP request");
    assert_eq!((request.op, request.spa, request.tpa), (wire::ARP_REQUEST, LOCAL, REMOTES[1]));
    assert_eq!(rig.drops(2, DropReason::NoNeighbour), 1);
    // Not ours: another address's ARP is bridged on the underlay's VLAN.
    let other = Arp::frame(wire::ARP_REQUEST, HOP[0], REMOTES[0], [0; 6], Ipv4Addr::new(10, 0, 0, 7), [0xff; 6]);
    rig.input(1, &[other.to_vec()]);
    assert!(Rig::take(&mut rig.underlay_wire).is_empty());
    assert_eq!(rig.counters.ports[1].flooded.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn bad_packets_and_big_frames_are_counted_by_reason() {
    let mut rig = Rig::new("vxb");
    rig.vtep.learn_neighbour(0, HOP[0]);
    rig.vtep.learn_neighbour(1, HOP[1]);
    let inner = frame(VM, FAR, 100);
    let mut flags = from_remote(0, 42, &inner);
    flags[OUTER_LEN - 8] = 0;
    let mut stranger = from_remote(0, 42, &inner);
    stranger[26..30].copy_from_slice(&[10, 0, 0, 99]);
    let sum = !wire::ones_sum(&{
        let mut h = stranger[14..34].to_vec();
        h[10..12].copy_from_slice(&[0, 0]);
        h
    });
    stranger[24..26].copy_from_slice(&sum.to_be_bytes());
    let short = from_remote(0, 42, &inner)[..OUTER_LEN + 6].to_vec();
    rig.input(1, &[from_remote(0, 43, &inner), flags, stranger, short]);
    assert!(Rig::take(&mut rig.vm_wire).is_empty());
    for r in [DropReason::VxlanUnknownVni, DropReason::VxlanFlags, DropReason::VxlanUnknownRemote, DropReason::VxlanShort] {
        assert_eq!(rig.drops(1, r), 1, "{r:?}");
    }
    assert_eq!(rig.vtep.remote_of(FAR), None, "nothing learned");
    // 1500 B of underlay MTU carries frames of 1464 B at most.
    rig.input(0, &[frame([0xff; 6], VM, 1464), frame([0xff; 6], VM, 1465)]);
    assert_eq!(Rig::take(&mut rig.underlay_wire).len(), 2, "the first, to both remotes");
    assert_eq!(rig.drops(2, DropReason::UnderlayMtu), 1);
}

/// Not a test of speed (nothing is asserted): the cost of encapsulation
/// and decapsulation against plain NIC-to-NIC forwarding on the same
/// thread (an lcore, as a PMD thread is), same pool and same `net_null`
/// outputs, the input mbufs made alike for every row. `cargo test --release -p dataplane --test vxlan
/// -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_encap_and_decap_against_plain_forwarding() {
    // An lcore id, for the pool's per-thread cache, as a PMD thread has.
    let _ = eal();
    let _lcore = pmd_bridge::lcore::current().is_none().then(|| pmd_bridge::lcore::register_thread().unwrap());
    let pool = Arc::new(Mempool::new(eal(), "vxm", 8191, 256, 2048).unwrap());
    let vtep = Arc::new(Vtep::new(42, LOCAL, REMOTES[..1].to_vec()));
    vtep.learn_neighbour(0, HOP[0]);
    let null = |i: u16| {
        let mut p = EthPort::open(eal(), &format!("net_null_vxm{i}")).unwrap();
        p.configure(&PortConfig { mtu: Some(9000), ..Default::default() }, Arc::clone(&pool)).unwrap();
        p.start().unwrap();
        p
    };
    let nics: Vec<EthPort> = (0..4).map(null).collect();
    let mut ports: Vec<Option<PortView>> = vec![None; MAX_PORTS];
    let mut tx: Vec<Option<TxPort>> = (0..MAX_PORTS).map(|_| None).collect();
    let underlay = Underlay { mac: UNDERLAY_MAC, tunnels: vec![Tunnel { slot: 2, vtep: Arc::clone(&vtep) }] };
    ports[0] = Some(PortView::new("vm", 0, 1, VlanMode::Access(1), 1500));
    ports[1] = Some(PortView::new("uplink", 1, 1, VlanMode::Access(4000), 1600).with_underlay(Some(Arc::new(underlay))));
    ports[2] = Some(PortView::new("tun", 2, 1, VlanMode::Access(1), 1500));
    ports[3] = Some(PortView::new("nic", 3, 1, VlanMode::Access(1), 1500));
    for s in [0, 1, 3] {
        tx[s] = Some(TxPort::Eth(nics[s].tx_queue(0).unwrap()));
    }
    tx[2] = Some(TxPort::Vxlan(Box::new(VxlanTx::new(Arc::clone(&vtep), 1, UNDERLAY_MAC, 1600, false, tsc_hz()))));
    let flood = FloodSets::new(&ports, |s| tx[s as usize].is_some());
    let (fdb, counters, mut out) = (Fdb::new(64, 300), PmdCounters::default(), Outputs::default());
    const NIC_HOST: [u8; 6] = [2, 0, 0, 0, 0, 3];
    fdb.learn(1, VM, 0, 1, 1);
    fdb.learn(1, FAR, 2, 1, 1);
    vtep.learn_mac(FAR, 0);
    fdb.learn(1, NIC_HOST, 3, 1, 1);
    let mut run = |slot: u16, f: &[u8]| {
        const N: usize = 1 << 20;
        let start = std::time::Instant::now();
        for _ in 0..N / 32 {
            let mut b = Burst::<32>::new();
            for _ in 0..32 {
                b.push(pool.alloc_from(f).unwrap()).unwrap();
            }
            let eg = Egress { ports: &ports, flood: &flood, tx: &mut tx, out: &mut out, pool: &pool, fdb: &fdb, counters: &counters, now: 1, taps: &Taps::default() };
            eg.forward_mbufs(slot, &mut b);
        }
        N as f64 / start.elapsed().as_secs_f64() / 1e6
    };
    for size in [64, 1518] {
        let (mut plain, mut encap, mut decap) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            plain.push(run(0, &frame(NIC_HOST, VM, size)));
            encap.push(run(0, &frame(FAR, VM, size)));
            decap.push(run(1, &from_remote(0, 42, &frame(VM, FAR, size))));
        }
        let med = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[1]
        };
        let (p, e, d) = (med(plain), med(encap), med(decap));
        println!("{size:>5} B: plain {p:.2} Mpps, encap {e:.2} Mpps ({:.2}x), decap {d:.2} Mpps ({:.2}x)", e / p, d / p);
    }
    for (slot, name) in [(2, "tun"), (0, "vm"), (1, "uplink")] {
        let c = &counters.ports[slot];
        let drops: u64 = c.drops.iter().map(|d| d.load(std::sync::atomic::Ordering::Relaxed)).sum();
        assert_eq!(drops, 0, "{name}: every frame went out");
    }
}
