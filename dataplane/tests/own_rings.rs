//! Spike of the copy-once datapath: the switch walks a real vhost-user
//! guest's (net_virtio_user's) virtqueues itself, with rte_vhost's own
//! datapath switched off: what the guest sends is read from its transmit
//! ring, and frames written into its receive ring arrive at the guest intact.
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::virtq::{Chain, Direction, Pop, SplitQueue};
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
    let q = SplitQueue::new(v.size, gpa(v.desc), gpa(v.avail), gpa(v.used), (v.last_avail, v.last_used)).unwrap();
    assert!(q.rings_in(mem));
    q
}

fn frame(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|b| (b * 7 + i * 13) as u8).collect()
}

#[test]
fn own_virtqueue_walk_both_ways_with_net_virtio_user() {
    let prefix = FilePrefix::new("own-rings");
    pmd_bridge::log::set_echo(std::env::var_os("VSW_TEST_VERBOSE").is_some());
    let eal = Eal::init(&prefix.eal_args(512)).unwrap();
    let pool = Arc::new(Mempool::new(&eal, "own", 4095, 0, 2048).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("own.sock");
    let sock = VhostSocket::register(&eal, path.to_str().unwrap(), VhostMode::Server).unwrap();
    sock.set_features(VERSION_1 | MRG_RXBUF | ANY_LAYOUT | PROTOCOL_FEATURES).unwrap();
    sock.start().unwrap();

    let devargs = format!("net_virtio_user_own,path={},queues=1,mrg_rxbuf=1", path.display());
    let mut virtio = EthPort::open(&eal, &devargs).unwrap();
    virtio.configure(&PortConfig::default(), Arc::clone(&pool)).unwrap();
    virtio.start().unwrap();
    let start = Instant::now();
    let dev = loop {
        if let Some(VhostEvent::NewDevice { vid }) = sock.next_event(Duration::from_millis(100)) {
            break sock.device(vid).unwrap();
        }
        assert!(start.elapsed() < DEADLINE, "no device");
    };
    let features = dev.negotiated_features().unwrap();
    assert_eq!(features & (VERSION_1 | MRG_RXBUF), VERSION_1 | MRG_RXBUF, "{features:#x}");
    let mem = dev.guest_memory().unwrap();
    let mut guest_rx = queue(&mem, &dev, 0);
    let mut guest_tx = queue(&mem, &dev, 1);
    let frames: Vec<Vec<u8>> = [60usize, 64, 128, 600, 1514].iter().enumerate().map(|(i, &n)| frame(i, n)).collect();

    // Guest -> switch: pop its transmit chains, read past the header.
    let mut vtx = virtio.tx_queue(0).unwrap();
    let mut b = Burst::<32>::new();
    for f in &frames {
        b.push(pool.alloc_from(f).unwrap()).unwrap();
    }
    assert_eq!(vtx.tx_burst(&mut b), frames.len());
    let mut got = Vec::new();
    let mut chain = Chain::default();
    let start = Instant::now();
    while got.len() < frames.len() && start.elapsed() < DEADLINE {
        while let Pop::Chain = guest_tx.pop(&mem, Direction::DeviceReads, &mut chain).unwrap() {
            let mut bytes = Vec::new();
            chain.read(&mem, HDR as u64, &mut bytes).unwrap();
            got.push(bytes);
            guest_tx.add_used(&mem, chain.head, 0).unwrap();
        }
        guest_tx.publish(&mem).unwrap();
        if guest_tx.guest_wants_interrupt(&mem) {
            dev.call_nonblock(1);
        }
    }
    assert_eq!(got, frames, "guest -> switch, read from its own ring");

    // Switch -> guest: one receive buffer per frame (num_buffers = 1).
    let mut delivered = 0;
    let start = Instant::now();
    while delivered < frames.len() && start.elapsed() < DEADLINE {
        if guest_rx.pop(&mem, Direction::DeviceWrites, &mut chain).unwrap() != Pop::Chain {
            continue;
        }
        let mut hdr = [0u8; HDR];
        hdr[10..12].copy_from_slice(&1u16.to_le_bytes());
        let n = chain.write(&mem, &[&hdr, &frames[delivered]]).expect("a 2 KB receive buffer");
        guest_rx.add_used(&mem, chain.head, n).unwrap();
        delivered += 1;
    }
    guest_rx.publish(&mem).unwrap();
    if guest_rx.guest_wants_interrupt(&mem) {
        dev.call_nonblock(0);
    }
    let mut vrx = virtio.rx_queue(0).unwrap();
    let mut back = Vec::new();
    let start = Instant::now();
    while back.len() < frames.len() && start.elapsed() < DEADLINE {
        vrx.rx_burst(&mut b);
        back.extend(b.drain().map(|m| m.to_vec()));
    }
    assert_eq!(back, frames, "switch -> guest, written into its own ring");

    // Hand our indices back before the device goes.
    let (a, u) = guest_tx.indices();
    dev.set_vring_base(1, a, u).unwrap();
    let (a, u) = guest_rx.indices();
    dev.set_vring_base(0, a, u).unwrap();
    drop((mem, dev, vtx, vrx));
    drop(virtio);
    drop(sock);
    assert_eq!(pool.in_use_count(), 0);
}
