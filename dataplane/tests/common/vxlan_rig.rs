//! Tunnels over net_ring / net_null ports through the egress stage:
//! shared by the VXLAN tests and the encap/decap benchmark (`benches/vxlan.rs`).
#![allow(dead_code, unused_imports)] // each user takes what it needs (and its imports)
pub use std::net::Ipv4Addr;
pub use std::sync::{Arc, OnceLock};

pub use dataplane::capture::Taps;
pub use dataplane::counters::{DropReason, PmdCounters, MAX_PORTS};
pub use dataplane::egress::{guest_outputs, Egress, Outputs};
pub use dataplane::fdb::Fdb;
pub use dataplane::flood::FloodSets;
pub use dataplane::fwd::PortView;
pub use dataplane::port_io::TxPort;
pub use dataplane::vlan::VlanMode;
pub use dataplane::vxlan::tx::VxlanTx;
pub use dataplane::vxlan::wire::{self, Arp, Encap, Outer, OUTER_LEN};
pub use dataplane::vxlan::{Tunnel, Underlay, Vtep};
pub use pmd_bridge::cycles::tsc_hz;
pub use pmd_bridge::{Burst, Eal, EthPort, Mbuf, Mempool, PortConfig, Ring, RxQueue};
pub use testbed::FilePrefix;

pub fn eal() -> &'static Eal {
    static EAL: OnceLock<Eal> = OnceLock::new();
    EAL.get_or_init(|| {
        let prefix = FilePrefix::for_process("vxlan");
        Eal::init(&prefix.eal_args(512)).unwrap()
    })
}

pub const UNDERLAY_MAC: [u8; 6] = [2, 0xee, 0, 0, 0, 1];
pub const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const REMOTES: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)];
pub const HOP: [[u8; 6]; 2] = [[2, 0xee, 0, 0, 0, 2], [2, 0xee, 0, 0, 0, 3]];
pub const VM: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const FAR: [u8; 6] = [2, 0, 0, 0, 0, 9];

pub struct Rig {
    pub pool: Arc<Mempool>,
    pub vtep: Arc<Vtep>,
    pub ports: Vec<Option<PortView>>,
    pub tx: Vec<Option<TxPort>>,
    pub flood: FloodSets,
    pub out: Outputs,
    pub fdb: Fdb,
    pub counters: PmdCounters,
    /// The VM's and the underlay's wires, and the ports kept open.
    pub vm_wire: RxQueue,
    pub underlay_wire: RxQueue,
    pub _ports: Vec<EthPort>,
}

/// A ring port for the switch and one that reads its wire.
pub fn ring_port(name: &str, pool: &Arc<Mempool>) -> (EthPort, EthPort) {
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
    pub fn new(tag: &str) -> Rig {
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

    pub fn input(&mut self, slot: u16, frames: &[Vec<u8>]) {
        let mut b = Burst::<32>::new();
        for f in frames {
            b.push(self.pool.alloc_from(f).unwrap()).unwrap();
        }
        let eg = Egress { ports: &self.ports, flood: &self.flood, guests: guest_outputs(&self.tx), tx: &mut self.tx, out: &mut self.out, pool: &self.pool, fdb: &self.fdb, counters: &self.counters, now: 1, taps: &Taps::default(), flows: None };
        eg.forward_mbufs(slot, &mut b);
    }

    pub fn take(q: &mut RxQueue) -> Vec<Mbuf> {
        let mut b = Burst::<32>::new();
        q.rx_burst(&mut b);
        b.drain().collect()
    }

    pub fn drops(&self, slot: usize, r: DropReason) -> u64 {
        self.counters.ports[slot].drops[r as usize].load(std::sync::atomic::Ordering::Relaxed)
    }
}

pub fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = [&dst[..], &src[..], &[0x88, 0xb5]].concat();
    f.extend((0..len - 14).map(|i| i as u8));
    f
}

/// What remote `r` would send: `inner` in VXLAN to our local address.
pub fn from_remote(r: usize, vni: u32, inner: &[u8]) -> Vec<u8> {
    let e = Encap { src_mac: HOP[r], dst_mac: UNDERLAY_MAC, src_ip: REMOTES[r], dst_ip: LOCAL, vni };
    let mut hdr = [0u8; OUTER_LEN];
    e.write(&mut hdr, inner.len(), 50000, false);
    [&hdr[..], inner].concat()
}
