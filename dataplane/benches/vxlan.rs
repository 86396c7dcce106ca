//! The cost of VXLAN encapsulation and decapsulation against plain
//! NIC-to-NIC forwarding on the same thread (an lcore, as a PMD thread is),
//! same pool and same `net_null` outputs, the input mbufs made alike for
//! every row. A benchmark, never a test: `cargo bench -p dataplane --bench
//! vxlan` (needs root for DPDK).
#[path = "../tests/common/vxlan_rig.rs"]
mod rig;

use rig::*;

fn main() {
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
            let eg = Egress { ports: &ports, flood: &flood, guests: guest_outputs(&tx), tx: &mut tx, out: &mut out, pool: &pool, fdb: &fdb, counters: &counters, now: 1, taps: &Taps::default(), flows: None };
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
