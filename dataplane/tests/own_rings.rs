//! Spike of the copy-once datapath: the switch walks a real vhost-user
//! guest's (net_virtio_user's) virtqueues itself, with rte_vhost's own
//! datapath switched off: what the guest sends is read from its transmit
//! ring, and frames written into its receive ring arrive at the guest intact.
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dataplane::virtq::{copy_chain, Chain, Cursor, Direction, Pop, SplitQueue};
use pmd_bridge::guest_mem::GuestMemory;
use pmd_bridge::{Burst, Eal, EthPort, Mempool, PortConfig, VhostDevice, VhostEvent, VhostMode, VhostSocket};
use testbed::FilePrefix;

const MRG_RXBUF: u64 = 1 << 15;
const ANY_LAYOUT: u64 = 1 << 27;
const PROTOCOL_FEATURES: u64 = 1 << 30;
const VERSION_1: u64 = 1 << 32;
/// virtio-net header with VERSION_1 / MRG_RXBUF: 12 bytes, num_buffers last.
const HDR: usize = 12;
const DEADLINE: Duration = Duration::from_secs(20);

fn queue(mem: &GuestMemory, dev: &VhostDevice, idx: u16) -> SplitQueue {
    let v = dev.vring(idx).unwrap();
    let gpa = |hva| mem.gpa_of(hva).expect("ring inside guest memory");
    SplitQueue::new(v.size, gpa(v.desc), gpa(v.avail), gpa(v.used), (v.last_avail, v.last_used), mem).unwrap()
}

fn eal() -> &'static (Eal, Arc<Mempool>) {
    static EAL: OnceLock<(Eal, Arc<Mempool>)> = OnceLock::new();
    EAL.get_or_init(|| {
        let prefix = FilePrefix::for_process("own-rings");
        pmd_bridge::log::set_echo(std::env::var_os("VSW_TEST_VERBOSE").is_some());
        let eal = Eal::init(&prefix.eal_args(512)).unwrap();
        let pool = Arc::new(Mempool::new(&eal, "own", 4095, 0, 2048).unwrap());
        (eal, pool)
    })
}

/// A net_virtio_user guest on a socket whose rings the switch owns.
struct OwnPort {
    rx: SplitQueue,
    tx: SplitQueue,
    mem: GuestMemory,
    dev: VhostDevice,
    virtio: EthPort,
    _sock: VhostSocket,
}

impl OwnPort {
    fn open(name: &str, path: &Path) -> OwnPort {
        let (eal, pool) = eal();
        let sock = VhostSocket::register(eal, path.to_str().unwrap(), VhostMode::Server).unwrap();
        sock.set_features(VERSION_1 | MRG_RXBUF | ANY_LAYOUT | PROTOCOL_FEATURES).unwrap();
        sock.start().unwrap();
        let devargs = format!("net_virtio_user_{name},path={},queues=1,mrg_rxbuf=1", path.display());
        let mut virtio = EthPort::open(eal, &devargs).unwrap();
        virtio.configure(&PortConfig::default(), Arc::clone(pool)).unwrap();
        virtio.start().unwrap();
        let start = Instant::now();
        let dev = loop {
            if let Some(VhostEvent::NewDevice { vid }) = sock.next_event(Duration::from_millis(100)) {
                break sock.device(vid).unwrap();
            }
            assert!(start.elapsed() < DEADLINE, "no device");
        };
        let mem = dev.guest_memory().unwrap();
        OwnPort { rx: queue(&mem, &dev, 0), tx: queue(&mem, &dev, 1), mem, dev, virtio, _sock: sock }
    }

    /// Hands our indices back, then lets the guest go.
    fn close(self) {
        let (a, u) = self.tx.indices();
        self.dev.set_vring_base(1, a, u).unwrap();
        let (a, u) = self.rx.indices();
        self.dev.set_vring_base(0, a, u).unwrap();
        let OwnPort { mem, dev, virtio, _sock, .. } = self;
        drop((mem, dev));
        drop(virtio);
    }
}

fn send(port: &OwnPort, frames: &[Vec<u8>]) {
    let mut tx = port.virtio.tx_queue(0).unwrap();
    let mut b = Burst::<32>::new();
    for f in frames {
        b.push(eal().1.alloc_from(f).unwrap()).unwrap();
    }
    assert_eq!(tx.tx_burst(&mut b), frames.len());
}

fn receive(port: &OwnPort, n: usize) -> Vec<Vec<u8>> {
    let mut rx = port.virtio.rx_queue(0).unwrap();
    let mut b = Burst::<32>::new();
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < n && start.elapsed() < DEADLINE {
        rx.rx_burst(&mut b);
        got.extend(b.drain().map(|m| m.to_vec()));
    }
    got
}

fn frame(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|b| (b * 7 + i * 13) as u8).collect()
}

#[test]
fn own_virtqueue_walk_both_ways_with_net_virtio_user() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = OwnPort::open("own", &dir.path().join("own.sock"));
    let features = p.dev.negotiated_features().unwrap();
    assert_eq!(features & (VERSION_1 | MRG_RXBUF), VERSION_1 | MRG_RXBUF, "{features:#x}");
    let frames: Vec<Vec<u8>> = [60usize, 64, 128, 600, 1514].iter().enumerate().map(|(i, &n)| frame(i, n)).collect();

    // Guest -> switch: pop its transmit chains, read past the header.
    send(&p, &frames);
    let mut got = Vec::new();
    let mut chain = Chain::default();
    let start = Instant::now();
    while got.len() < frames.len() && start.elapsed() < DEADLINE {
        while let Pop::Chain = p.tx.pop(&p.mem, Direction::DeviceReads, &mut chain).unwrap() {
            let mut bytes = Vec::new();
            chain.read(&p.mem, HDR as u64, &mut bytes).unwrap();
            got.push(bytes);
            p.tx.add_used(&p.mem, chain.head, 0).unwrap();
        }
        p.tx.publish(&p.mem).unwrap();
        if p.tx.guest_wants_interrupt(&p.mem) {
            p.dev.call_nonblock(1);
        }
    }
    assert_eq!(got, frames, "guest -> switch, read from its own ring");

    // Switch -> guest: one receive buffer per frame (num_buffers = 1).
    let mut delivered = 0;
    let start = Instant::now();
    while delivered < frames.len() && start.elapsed() < DEADLINE {
        if p.rx.pop(&p.mem, Direction::DeviceWrites, &mut chain).unwrap() != Pop::Chain {
            continue;
        }
        let mut hdr = [0u8; HDR];
        hdr[10..12].copy_from_slice(&1u16.to_le_bytes());
        let n = chain.write(&p.mem, &[&hdr, &frames[delivered]]).expect("a 2 KB receive buffer");
        p.rx.add_used(&p.mem, chain.head, n).unwrap();
        delivered += 1;
    }
    p.rx.publish(&p.mem).unwrap();
    if p.rx.guest_wants_interrupt(&p.mem) {
        p.dev.call_nonblock(0);
    }
    assert_eq!(receive(&p, frames.len()), frames, "switch -> guest, written into its own ring");
    p.close();
    assert_eq!(eal().1.in_use_count(), 0);
}

/// VM to VM with one copy: the Ethernet header goes through switch-private
/// scratch (what a switch classifies on and delivers), the payload straight
/// from A's transmit buffers into B's receive buffers.
#[test]
fn vm_to_vm_with_one_payload_copy() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = OwnPort::open("a", &dir.path().join("a.sock"));
    let mut b = OwnPort::open("b", &dir.path().join("b.sock"));
    let frames: Vec<Vec<u8>> = [60usize, 64, 333, 1024, 1514].iter().enumerate().map(|(i, &n)| frame(i + 100, n)).collect();
    send(&a, &frames);

    let (mut src, mut dst) = (Chain::default(), Chain::default());
    let (mut moved, mut payload_copies) = (0, 0);
    let start = Instant::now();
    while moved < frames.len() && start.elapsed() < DEADLINE {
        if a.tx.pop(&a.mem, Direction::DeviceReads, &mut src).unwrap() != Pop::Chain {
            continue;
        }
        let mut scratch = Vec::with_capacity(HDR + 14);
        src.read(&a.mem, 0, &mut scratch).unwrap();
        scratch.truncate(HDR + 14);
        let frame_len = src.len() - HDR as u64;
        assert_eq!(b.rx.pop(&b.mem, Direction::DeviceWrites, &mut dst).unwrap(), Pop::Chain, "B has receive buffers");
        let mut hdr = [0u8; HDR];
        hdr[10..12].copy_from_slice(&1u16.to_le_bytes());
        dst.write(&b.mem, &[&hdr, &scratch[HDR..]]).unwrap();
        let rest = frame_len - 14;
        let n = copy_chain(&a.mem, &mut Cursor::new(&src, HDR as u64 + 14), &b.mem, &dst, HDR as u64 + 14, rest).unwrap();
        assert_eq!(n, rest);
        payload_copies += 1;
        a.tx.add_used(&a.mem, src.head, 0).unwrap();
        b.rx.add_used(&b.mem, dst.head, HDR as u32 + frame_len as u32).unwrap();
        moved += 1;
    }
    a.tx.publish(&a.mem).unwrap();
    b.rx.publish(&b.mem).unwrap();
    if b.rx.guest_wants_interrupt(&b.mem) {
        b.dev.call_nonblock(0);
    }
    assert_eq!(receive(&b, frames.len()), frames, "A's frames arrive at B intact");
    assert_eq!(payload_copies, frames.len(), "one payload copy per packet");
    a.close();
    b.close();
    assert_eq!(eal().1.in_use_count(), 0, "no mbuf on the VM-to-VM path stays behind");
}
