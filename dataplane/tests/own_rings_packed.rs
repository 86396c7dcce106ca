//! The packed-ring walker against a real driver: net_virtio_user with
//! `packed_vq=1` on a socket whose rings the switch walks itself. What the
//! guest sends is read from its transmit ring (completed out of order),
//! frames are delivered into its receive ring with `virtio_net::deliver`,
//! for several laps of the ring, and the ring positions rte_vhost reports
//! and takes back are in its packed encoding (slot | wrap << 15).
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dataplane::offload::NetHdr;
use dataplane::virtio_net::{deliver, Delivery, FrameSource, MAX_BUFFERS, NET_HDR_LEN};
use dataplane::virtq::{Chain, Direction, Pop, RingOps, Virtqueue, VIRTIO_F_RING_PACKED};
use pmd_bridge::guest_mem::GuestMemory;
use pmd_bridge::{Burst, Eal, EthPort, Mempool, PortConfig, VhostDevice, VhostEvent, VhostMode, VhostSocket};
use testbed::FilePrefix;

const MRG_RXBUF: u64 = 1 << 15;
const ANY_LAYOUT: u64 = 1 << 27;
const EVENT_IDX: u64 = 1 << 29;
const PROTOCOL_FEATURES: u64 = 1 << 30;
const VERSION_1: u64 = 1 << 32;
const DEADLINE: Duration = Duration::from_secs(20);

fn eal() -> &'static (Eal, Arc<Mempool>) {
    static EAL: OnceLock<(Eal, Arc<Mempool>)> = OnceLock::new();
    EAL.get_or_init(|| {
        let prefix = FilePrefix::for_process("own-packed");
        pmd_bridge::log::set_echo(std::env::var_os("VSW_TEST_VERBOSE").is_some());
        let eal = Eal::init(&prefix.eal_args(512)).unwrap();
        let pool = Arc::new(Mempool::new(&eal, "own", 4095, 0, 2048).unwrap());
        (eal, pool)
    })
}

/// A net_virtio_user guest with packed rings, on a socket the switch owns.
struct PackedPort {
    rx: Virtqueue,
    tx: Virtqueue,
    mem: GuestMemory,
    dev: VhostDevice,
    virtio: EthPort,
    _sock: VhostSocket,
}

impl PackedPort {
    fn open(name: &str, path: &Path) -> PackedPort {
        let (eal, pool) = eal();
        let sock = VhostSocket::register(eal, path.to_str().unwrap(), VhostMode::Server).unwrap();
        sock.set_features(VERSION_1 | MRG_RXBUF | ANY_LAYOUT | EVENT_IDX | PROTOCOL_FEATURES | VIRTIO_F_RING_PACKED).unwrap();
        sock.start().unwrap();
        let devargs = format!("net_virtio_user_{name},path={},queues=1,mrg_rxbuf=1,packed_vq=1", path.display());
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
        let features = dev.negotiated_features().unwrap();
        let queue = |idx| {
            let v = dev.vring(idx).unwrap();
            let gpa = |hva| mem.gpa_of(hva).expect("ring inside guest memory");
            assert_eq!((v.last_avail, v.last_used), (0x8000, 0x8000), "a fresh ring: slot 0, wrap counter 1");
            let q = Virtqueue::new(features, v.size, [gpa(v.desc), gpa(v.avail), gpa(v.used)], (v.last_avail, v.last_used), &mem).unwrap();
            q.suppress_kicks(&mem).unwrap();
            q
        };
        let (rx, tx) = (queue(0), queue(1));
        PackedPort { rx, tx, mem, dev, virtio, _sock: sock }
    }

    /// Hands our positions back, then lets the guest go.
    fn close(self) {
        for (idx, q) in [(0, &self.rx), (1, &self.tx)] {
            let (a, u) = q.indices();
            self.dev.set_vring_base(idx, a, u).unwrap();
        }
        let PackedPort { mem, dev, virtio, _sock, .. } = self;
        drop((mem, dev));
        drop(virtio);
    }
}

fn send(port: &PackedPort, frames: &[Vec<u8>]) {
    let mut tx = port.virtio.tx_queue(0).unwrap();
    let mut b = Burst::<32>::new();
    for f in frames {
        b.push(eal().1.alloc_from(f).unwrap()).unwrap();
    }
    assert_eq!(tx.tx_burst(&mut b), frames.len());
}

fn receive(port: &PackedPort, n: usize) -> Vec<Vec<u8>> {
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
fn packed_rings_of_a_real_driver_both_ways_for_several_laps() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = PackedPort::open("packed", &dir.path().join("packed.sock"));
    let features = p.dev.negotiated_features().unwrap();
    assert_ne!(features & VIRTIO_F_RING_PACKED, 0, "{features:#x}");
    assert!(p.tx.is_packed() && p.rx.is_packed());
    let size = p.tx.size() as usize;
    let mut chains = vec![Chain::default(); MAX_BUFFERS];
    let (mut sent, mut laps, mut wrap) = (0, 0, true);
    // Bursts of 24 frames until both rings have gone round three times.
    while sent < 3 * size + 40 {
        let frames: Vec<Vec<u8>> = (0..24).map(|i| frame(sent + i, [60, 64, 333, 1514, 3000][(sent + i) % 5])).collect();
        send(&p, &frames);
        // Guest -> switch: take the burst, return it in reverse order.
        let mut heads = Vec::new();
        let mut got = Vec::new();
        let start = Instant::now();
        while got.len() < frames.len() && start.elapsed() < DEADLINE {
            match p.tx.pop(&p.mem, Direction::DeviceReads, &mut chains[0]).unwrap() {
                Pop::Chain => {
                    let mut bytes = Vec::new();
                    chains[0].read(&p.mem, NET_HDR_LEN as u64, &mut bytes).unwrap();
                    got.push(bytes);
                    heads.push(chains[0].head);
                }
                Pop::Empty => continue,
                bad => panic!("{bad:?}"),
            }
        }
        assert_eq!(got, frames, "guest -> switch, from slot {sent}");
        for &id in heads.iter().rev() {
            p.tx.add_used(&p.mem, id, 0).unwrap();
        }
        p.tx.publish(&p.mem).unwrap();
        // Switch -> guest, through the same code as the datapath's.
        for f in &frames {
            let src = FrameSource { net_hdr: [0; NetHdr::LEN], head: f, tail: None };
            let start = Instant::now();
            loop {
                match deliver(&mut p.rx, &p.mem, &src, true, (&mut chains, 0), None).unwrap() {
                    Delivery::Done { .. } => break,
                    Delivery::NoBuffers if start.elapsed() < DEADLINE => continue,
                    d => panic!("{d:?}"),
                }
            }
        }
        p.rx.publish(&p.mem).unwrap();
        if p.rx.needs_interrupt(&p.mem) {
            p.dev.call_nonblock(0);
        }
        assert_eq!(receive(&p, frames.len()), frames, "switch -> guest, from frame {sent}");
        sent += frames.len();
        let (a, u) = p.tx.indices();
        assert_eq!(a, u, "everything taken was returned");
        laps += (wrap != (a & 0x8000 != 0)) as u32;
        wrap = a & 0x8000 != 0;
    }
    assert!(laps >= 3, "{laps} laps of the transmit ring");
    p.close();
    assert_eq!(eal().1.in_use_count(), 0);
}
