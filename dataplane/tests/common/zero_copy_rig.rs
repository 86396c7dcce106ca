//! A copy-once guest's transmit ring lending to NICs, played over plain
//! memory and net_ring / net_null ports: shared by the zero-copy tests, the
//! lend-against-copy benchmark (`benches/lend.rs`) and the guest-to-guest
//! one (`benches/vm2vm.rs`).
#![allow(dead_code)] // each user takes what it needs
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use dataplane::copy_once::{CopyOnceRx, CopyOnceTx, GuestFeatures, GuestPkt, GuestRing, Interrupt, ZeroCopy};
use dataplane::counters::{Path, PmdCounters, ZeroCopy as Outcome, MAX_PORTS};
use dataplane::egress::{guest_outputs, prefetch_rings, Egress, Outputs};
use dataplane::fdb::Fdb;
use dataplane::flood::{FloodSets, PortSet};
use dataplane::fwd::PortView;
use dataplane::port_io::TxPort;
use dataplane::capture::Taps;
use dataplane::virtq::{KeptPosition, PackedQueue, RingFeatures, SplitQueue, Virtqueue};
use dataplane::vlan::VlanMode;
use pmd_bridge::extbuf::Lender;
use pmd_bridge::guest_mem::{GuestMemory, Gpa};
use pmd_bridge::persist::SharedWords;
use pmd_bridge::{Burst, Eal, EthPort, Mbuf, Mempool, PortConfig, Ring, RxQueue, BURST};
use testbed::FilePrefix;

pub const HDR: usize = 12;
pub const SIZE: u16 = 64;
pub const DESC: u64 = 0x1000;
pub const AVAIL: u64 = 0x2000;
pub const USED: u64 = 0x3000;
pub const BUFS: u64 = 0x10000;
pub const BUF: u64 = 0x4000;
/// Where `Guest::send_tso` keeps its one segment, past the buffers.
pub const TSO_BUF: u64 = 0x120000;
pub const NEXT: u16 = 1;
pub const WRITE: u16 = 2;

pub fn eal() -> &'static Eal {
    static EAL: OnceLock<Eal> = OnceLock::new();
    EAL.get_or_init(|| {
        let prefix = FilePrefix::for_process("zero-copy");
        pmd_bridge::log::set_echo(std::env::var_os("VSW_TEST_VERBOSE").is_some());
        Eal::init(&prefix.eal_args(512)).unwrap()
    })
}

/// Where a packed guest keeps the descriptors `desc` writes by index, for
/// `offer` to put in the ring (one buffer a chain).
const PACKED_TABLE: u64 = 0x5000;

/// A guest's ring in plain memory, played by the test.
pub struct Guest {
    pub mem: Arc<GuestMemory>,
    pub avail: u16,
    /// What its rings negotiated (`queue`).
    pub features: u64,
    /// A packed ring's driver (`packed`): its next slot and wrap counter.
    pub packed: Option<(u16, bool)>,
}

impl Guest {
    pub fn new() -> Guest {
        const FEATURES: u64 = 1 << 32 | 1 << 15; // VERSION_1, MRG_RXBUF
        Guest { mem: Arc::new(GuestMemory::new_owned(&[(0, TSO_BUF as usize + 0x11000)])), avail: 0, features: FEATURES, packed: None }
    }

    /// Puts the guest on a packed ring (VIRTIO_F_RING_PACKED) from now on
    /// (`queue`): the ring at `DESC`, the driver area at `AVAIL`, the
    /// device area at `USED`; every chain one buffer.
    pub fn use_packed_ring(&mut self) {
        self.features |= dataplane::virtq::VIRTIO_F_RING_PACKED;
        self.packed = Some((0, true));
    }

    pub fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        let table = if self.packed.is_some() { PACKED_TABLE } else { DESC };
        self.mem.write(Gpa(table + 16 * i as u64), &d).unwrap();
    }

    pub fn offer(&mut self, head: u16) {
        if self.packed.is_some() {
            return self.offer_packed(head);
        }
        let slot = (self.avail % SIZE) as u64;
        self.mem.write(Gpa(AVAIL + 4 + 2 * slot), &head.to_le_bytes()).unwrap();
        self.avail = self.avail.wrapping_add(1);
        self.mem.store_u16_release(Gpa(AVAIL + 2), self.avail).unwrap();
    }

    /// Descriptor `head` of `desc` made available in the driver's next
    /// slot under id `head`, its flags (with the lap's AVAIL and USED bits)
    /// stored last, with release.
    fn offer_packed(&mut self, head: u16) {
        let Some((slot, wrap)) = self.packed else { return };
        let mut d = [0u8; 16];
        self.mem.read(Gpa(PACKED_TABLE + 16 * head as u64), &mut d).unwrap();
        let lap = if wrap { dataplane::virtq::VRING_PACKED_DESC_F_AVAIL } else { dataplane::virtq::VRING_PACKED_DESC_F_USED };
        let flags = (u16::from_le_bytes([d[12], d[13]]) & WRITE) | lap;
        d[12..14].copy_from_slice(&head.to_le_bytes());
        let at = DESC + 16 * slot as u64;
        self.mem.write(Gpa(at), &d[..14]).unwrap();
        self.mem.store_u16_release(Gpa(at + 14), flags).unwrap();
        self.packed = Some(if slot + 1 == SIZE { (0, !wrap) } else { (slot + 1, wrap) });
    }

    /// Transmits `frame` (after a zero virtio-net header) in chain `head`:
    /// the header alone in the first buffer, the frame in the next.
    pub fn send(&mut self, head: u16, frame: &[u8]) {
        let (a, b) = (BUFS + BUF * head as u64, BUFS + BUF * (head as u64 + SIZE as u64 / 2));
        self.mem.write(Gpa(a), &[0; HDR]).unwrap();
        self.mem.write(Gpa(b), frame).unwrap();
        self.desc(head, a, HDR as u32, NEXT, head + SIZE / 2);
        self.desc(head + SIZE / 2, b, frame.len() as u32, 0, 0);
        self.offer(head);
    }

    /// Offers receive buffer `head` (2 KB).
    pub fn offer_rx(&mut self, head: u16) {
        self.offer_rx_of(head, 2048);
    }

    /// Offers receive buffer `head` of `len` bytes (at most `BUF`).
    pub fn offer_rx_of(&mut self, head: u16, len: u32) {
        self.desc(head, BUFS + BUF * head as u64, len, WRITE, 0);
        self.offer(head);
    }

    /// The frame at the front of receive buffer `head`.
    pub fn received(&self, head: u16, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.mem.read(Gpa(BUFS + BUF * head as u64 + HDR as u64), &mut b).unwrap();
        b
    }

    pub fn used_idx(&self) -> u16 {
        self.mem.read_u16(Gpa(USED + 2)).unwrap()
    }

    /// The heads of used entries `from..to`.
    pub fn used_heads(&self, from: u16, to: u16) -> Vec<u16> {
        (from..to).map(|i| self.mem.read_u16(Gpa(USED + 4 + 8 * (i % SIZE) as u64)).unwrap()).collect()
    }

    pub fn queue(&self, vring: u16) -> GuestRing {
        let q = match self.packed {
            // A fresh ring: slot 0 in the lap of wrap counter 1, its
            // position kept as vswitchd keeps every packed ring's.
            Some(_) => {
                let mut q = PackedQueue::new(SIZE, Gpa(DESC), Gpa(AVAIL), Gpa(USED), (1 << 15, 1 << 15), &self.mem, RingFeatures::from_bits(self.features)).unwrap();
                let dir = tempfile::tempdir().unwrap();
                q.keep_position(KeptPosition::new(Arc::new(SharedWords::open(&dir.path().join("rings"), KeptPosition::WORDS).unwrap()), 0));
                Virtqueue::Packed(q)
            }
            None => Virtqueue::Split(SplitQueue::new(SIZE, Gpa(DESC), Gpa(AVAIL), Gpa(USED), (0, 0), &self.mem).unwrap()),
        };
        GuestRing::new(Arc::clone(&self.mem), q, Interrupt::None, vring, GuestFeatures::from_bits(self.features).unwrap())
    }
}

/// A NIC on rings: what the switch sends, the test receives (and holds).
/// Fields drop in order: the queue before its port.
pub struct Nic {
    pub rx: RxQueue,
    pub _reader: EthPort,
    pub _port: EthPort,
}

/// The switch: guest `a` (slot 0), NICs in slots 1.., guest `b` as the
/// last slot if asked for; a copy-once ring for `a`, lending to the NICs.
pub struct Rig {
    pub pool: Arc<Mempool>,
    pub a: Guest,
    pub rx: CopyOnceRx,
    pub ports: Vec<Option<PortView>>,
    pub tx: Vec<Option<TxPort>>,
    pub nics: Vec<Nic>,
    pub b: Option<Guest>,
    pub flood: FloodSets,
    pub out: Outputs,
    pub fdb: Fdb,
    pub counters: PmdCounters,
    /// A NIC that frees at once (`measure`), kept open.
    pub _null: Option<EthPort>,
    /// An OpenFlow table in front of the L2 path, if set.
    pub flows: Option<dataplane::flow::PmdFlows>,
}

/// A ring port for the switch and one that reads its wire, for the test.
pub fn nic(name: &str, pool: &Arc<Mempool>) -> (EthPort, EthPort) {
    let ring = |n: &str| Arc::new(Ring::new(eal(), &format!("{name}_{n}"), 256).unwrap());
    let (wire, unused) = (ring("w"), ring("u"));
    let start = |mut p: EthPort| {
        p.configure(&PortConfig { mtu: Some(9000), ..Default::default() }, Arc::clone(pool)).unwrap();
        p.start().unwrap();
        p
    };
    let port = start(EthPort::from_rings(eal(), &format!("net_ring_{name}"), &[Arc::clone(&unused)], &[Arc::clone(&wire)]).unwrap());
    let reader = start(EthPort::from_rings(eal(), &format!("net_ring_{name}_r"), &[wire], &[unused]).unwrap());
    (port, reader)
}

impl Rig {
    /// `cache`: the pool's per-lcore cache (only a thread with an lcore
    /// id has one).
    pub fn new(tag: &str, nics: usize, with_b: bool, bound: u16, min_len: u32, cache: u32) -> Rig {
        let pool = Arc::new(Mempool::new(eal(), tag, 2047, cache, 2048).unwrap());
        let a = Guest::new();
        let mut ports: Vec<Option<PortView>> = vec![None; MAX_PORTS];
        let mut tx: Vec<Option<TxPort>> = (0..MAX_PORTS).map(|_| None).collect();
        ports[0] = Some(PortView::new("a", 0, 1, VlanMode::Access(1), 9000).with_vm(true));
        let mut targets = PortSet::EMPTY;
        let mut rigs = Vec::new();
        for i in 0..nics {
            let slot = 1 + i as u16;
            let (port, reader) = nic(&format!("{tag}{i}"), &pool);
            ports[slot as usize] = Some(PortView::new("nic", slot, 1, VlanMode::Access(1), 9000));
            tx[slot as usize] = Some(TxPort::Eth(port.tx_queue(0).unwrap()));
            targets.insert(slot);
            rigs.push(Nic { rx: reader.rx_queue(0).unwrap(), _reader: reader, _port: port });
        }
        let b = with_b.then(|| {
            let slot = 1 + nics;
            let mut b = Guest::new();
            (0..8).for_each(|h| b.offer_rx(h));
            ports[slot] = Some(PortView::new("b", slot as u16, 1, VlanMode::Access(1), 9000).with_vm(true));
            tx[slot] = Some(TxPort::CopyOnce(Box::new(CopyOnceTx::new(b.queue(0), 0))));
            b
        });
        let zc = ZeroCopy::new(Lender::new(bound), targets, min_len, Arc::new(AtomicU64::new(0)));
        let rx = CopyOnceRx::new(a.queue(1)).with_zero_copy(zc);
        let flood = FloodSets::new(&ports, |s| tx[s as usize].is_some());
        Rig { pool, a, rx, ports, tx, nics: rigs, b, flood, out: Outputs::default(), fdb: Fdb::new(64, 300), counters: PmdCounters::default(), _null: None, flows: None }
    }

    /// One poll of guest `a`'s transmit ring, forwarded; how many frames.
    pub fn poll(&mut self) -> usize {
        let mut pkts = [GuestPkt::default(); BURST];
        let drops = dataplane::counters::PerReason::default();
        // As the PMD loop does: the outputs' rings taken ahead on receipt.
        let (guests, tx) = (guest_outputs(&self.tx), &mut self.tx);
        let Some(burst) = self.rx.recv(&mut pkts, &drops, |n, bytes| prefetch_rings(tx, guests, 0, n, bytes)) else { return 0 };
        let n = burst.pkts().len();
        let eg = Egress { ports: &self.ports, flood: &self.flood, guests, tx: &mut self.tx, out: &mut self.out, pool: &self.pool, fdb: &self.fdb, counters: &self.counters, now: 1, taps: &Taps::default(), flows: self.flows.as_mut() };
        eg.forward_guest(0, burst);
        n
    }

    /// `frames` offered by guest `a` (heads 0..) and forwarded in one poll.
    pub fn poll_burst(&mut self, frames: &[Vec<u8>]) {
        for (h, f) in frames.iter().enumerate() {
            self.a.send(h as u16, f);
        }
        assert_eq!(self.poll(), frames.len(), "one burst");
    }

    /// What NIC `i` holds now, taken off its wire (still held by the test).
    pub fn take(&mut self, i: usize) -> Vec<Mbuf> {
        let mut b = Burst::<32>::new();
        let mut got = Vec::new();
        while self.nics[i].rx.rx_burst(&mut b) > 0 {
            got.extend(b.drain());
        }
        got
    }

    pub fn outcome(&self, o: Outcome) -> u64 {
        self.counters.zero_copy[o as usize].load(Ordering::Relaxed)
    }

    pub fn path(&self, p: Path) -> [u64; 3] {
        let c = &self.counters.paths[p as usize];
        [c.packets.load(Ordering::Relaxed), c.payload_copies.load(Ordering::Relaxed), c.bytes_copied.load(Ordering::Relaxed)]
    }

    /// Everything dropped: the pool must be idle again.
    pub fn finish(self) {
        let pool = Arc::clone(&self.pool);
        drop(self);
        assert_eq!(pool.in_use_count(), 0, "every mbuf back in the pool");
    }
}

/// A frame to `dst` from the guest's MAC, `len` bytes, numbered `seq`.
pub fn frame(dst: u8, len: usize, seq: u8) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, dst, 2, 0, 0, 0, 0, 0xa, 0x88, 0xb5];
    f.extend((0..len - 14).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seq)));
    f
}

impl Guest {
    /// Transmits `f` in chain `head` as one buffer, header and frame.
    pub fn send_one(&mut self, head: u16, f: &[u8]) {
        let at = BUFS + BUF * head as u64;
        self.mem.write(Gpa(at), &[0; HDR]).unwrap();
        self.mem.write(Gpa(at + HDR as u64), f).unwrap();
        self.desc(head, at, (HDR + f.len()) as u32, 0, 0);
        self.offer(head);
    }
}

impl Rig {
    /// Guest `a` (which negotiated `features`) unicast to a net_null NIC
    /// (slot 1, host `host` learned there; no offloads), lending (`lend`,
    /// any size) or always copying.
    pub fn null(tag: &str, lend: bool, host: u8, features: u64) -> Rig {
        let mut r = Rig::new(tag, 0, false, 32, 0, 256);
        r.a.features = features;
        let mut port = EthPort::open(eal(), &format!("net_null_{tag}")).unwrap();
        port.configure(&PortConfig { mtu: Some(9000), ..Default::default() }, Arc::clone(&r.pool)).unwrap();
        port.start().unwrap();
        r.ports[1] = Some(PortView::new("null", 1, 1, VlanMode::Access(1), 9000));
        r.tx[1] = Some(TxPort::Eth(port.tx_queue(0).unwrap()));
        r._null = Some(port);
        r.flood = FloodSets::new(&r.ports, |s| r.tx[s as usize].is_some());
        r.fdb.learn(1, [2, 0, 0, 0, 0, host], 1, 1, 1);
        let mut targets = PortSet::EMPTY;
        targets.insert(1);
        r.rx = CopyOnceRx::new(r.a.queue(1));
        if lend {
            r.rx = CopyOnceRx::new(r.a.queue(1)).with_zero_copy(ZeroCopy::new(Lender::new(32), targets, 0, Arc::default()));
        }
        r
    }
}

/// MSS of `Guest::send_tso`'s segments.
pub const TSO_MSS: u16 = 1448;

impl Guest {
    /// Writes a 64 KB TCP/IPv4 segment to `dst` at `TSO_BUF`, its
    /// virtio-net header asking for TSO (MSS `TSO_MSS`) and the checksum,
    /// as a Linux guest with TSO sends one; `send_tso` offers it.
    pub fn write_tso(&mut self, dst: u8) -> usize {
        const PAYLOAD: usize = 65160;
        let (l2, l3, l4) = (14usize, 20usize, 20usize);
        let mut f = vec![2, 0, 0, 0, 0, dst, 2, 0, 0, 0, 0, 0xa, 0x08, 0x00];
        let ip_len = (l3 + l4 + PAYLOAD) as u16;
        f.extend([0x45, 0, (ip_len >> 8) as u8, ip_len as u8, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        // Ports, sequence, ack, data offset 5, ACK|PSH, window; the checksum
        // field holds the pseudo-header's sum, as NEEDS_CSUM wants.
        f.extend([0x30, 0x39, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        let mut pseudo: u32 = 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 6 + (l4 + PAYLOAD) as u32;
        pseudo = (pseudo & 0xffff) + (pseudo >> 16);
        f[l2 + l3 + 16..l2 + l3 + 18].copy_from_slice(&(pseudo as u16).to_be_bytes());
        f.extend((0..PAYLOAD).map(|i| (i as u8).wrapping_mul(13)));
        let hdr_len = (l2 + l3 + l4) as u16;
        let mut h = [0u8; HDR];
        h[0] = 1; // NEEDS_CSUM
        h[1] = 1; // GSO_TCPV4
        h[2..4].copy_from_slice(&hdr_len.to_le_bytes());
        h[4..6].copy_from_slice(&TSO_MSS.to_le_bytes());
        h[6..8].copy_from_slice(&((l2 + l3) as u16).to_le_bytes());
        h[8..10].copy_from_slice(&16u16.to_le_bytes());
        self.mem.write(Gpa(TSO_BUF), &h).unwrap();
        self.mem.write(Gpa(TSO_BUF + HDR as u64), &f).unwrap();
        f.len()
    }

    /// Offers the segment `write_tso` wrote (`len` bytes) in chain `head`.
    pub fn send_tso(&mut self, head: u16, len: usize) {
        self.desc(head, TSO_BUF, (HDR + len) as u32, 0, 0);
        self.offer(head);
    }
}
