//! vhost-user through rte_vhost against net_virtio_user (a VM's driver in
//! this same process): frames of 60 to 9000 bytes both ways, server and
//! client socket modes, a frontend that leaves and comes back.
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eal, frame, pool};
use pmd_bridge::{Burst, EthPort, Mempool, PortConfig, VhostDevice, VhostEvent, VhostMode, VhostSocket};

const DEADLINE: Duration = Duration::from_secs(20);
const SIZES: &[usize] = &[60, 64, 128, 512, 1500, 1514, 2048, 4000, 8192, 9000];

fn virtio_port(name: &str, sock: &Path, frontend_is_server: bool, pool: &Arc<Mempool>) -> EthPort {
    let server = if frontend_is_server { ",server=1" } else { "" };
    let devargs = format!("{name},path={},queues=1,mrg_rxbuf=1{server}", sock.display());
    let mut port = EthPort::open(eal(), &devargs).expect("open net_virtio_user");
    port.configure(&PortConfig { mtu: Some(9000), ..Default::default() }, Arc::clone(pool)).expect("configure");
    port.start().expect("start");
    port
}

fn wait_new_device(sock: &VhostSocket) -> VhostDevice {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if let Some(VhostEvent::NewDevice { vid }) = sock.next_event(Duration::from_millis(100)) {
            return sock.device(vid).expect("device handle");
        }
    }
    panic!("no NewDevice event within {DEADLINE:?}");
}

fn wait_event(sock: &VhostSocket, want: impl Fn(&VhostEvent) -> bool) {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if sock.next_event(Duration::from_millis(100)).is_some_and(|e| want(&e)) {
            return;
        }
    }
    panic!("expected event not seen within {DEADLINE:?}");
}

/// Sends every size from the frontend (virtio) and from the backend (vhost)
/// and checks that each side receives exactly what the other sent.
fn exchange(dev: &VhostDevice, virtio: &EthPort, pool: &Mempool, seq: u32) {
    let frames: Vec<Vec<u8>> = SIZES.iter().enumerate().map(|(i, &n)| frame(seq + i as u32, n)).collect();

    // virtio -> vhost
    let mut vtx = virtio.tx_queue(0).unwrap();
    let mut out = Burst::<32>::new();
    for f in &frames {
        out.push(pool.alloc_from(f).unwrap()).unwrap();
    }
    let start = Instant::now();
    while !out.is_empty() && start.elapsed() < DEADLINE {
        vtx.tx_burst(&mut out);
    }
    assert!(out.is_empty(), "virtio tx stalled");
    let mut rxq = dev.rx_queue(0);
    let got = collect(frames.len(), |b| rxq.dequeue_burst(pool, b));
    assert_eq!(got, frames, "guest -> switch");

    // vhost -> virtio
    let mut txq = dev.tx_queue(0);
    for f in &frames {
        out.push(pool.alloc_from(f).unwrap()).unwrap();
    }
    let start = Instant::now();
    while !out.is_empty() && start.elapsed() < DEADLINE {
        txq.enqueue_burst(&mut out);
    }
    assert!(out.is_empty(), "vhost enqueue stalled");
    let mut vrx = virtio.rx_queue(0).unwrap();
    let got = collect(frames.len(), |b| vrx.rx_burst(b));
    assert_eq!(got, frames, "switch -> guest");
}

fn collect(n: usize, mut rx: impl FnMut(&mut Burst<32>) -> usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut burst = Burst::<32>::new();
    let start = Instant::now();
    while got.len() < n && start.elapsed() < DEADLINE {
        rx(&mut burst);
        got.extend(burst.drain().map(|m| m.to_vec()));
    }
    got
}

fn scenario(tag: &str, mode: VhostMode) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{tag}.sock"));
    let pool = Arc::new(pool(&format!("vh_{tag}"), 4096));
    let start_free = pool.free_count();
    let sock = VhostSocket::register(eal(), path.to_str().unwrap(), mode).expect("register");
    assert_ne!(sock.features().unwrap() & (1 << pmd_bridge::ffi::VIRTIO_NET_F_MRG_RXBUF), 0);
    sock.start().expect("start");
    let frontend_is_server = mode == VhostMode::Client;

    let virtio_name = format!("net_virtio_user_{tag}");
    let virtio = virtio_port(&virtio_name, &path, frontend_is_server, &pool);
    let dev = wait_new_device(&sock);
    exchange(&dev, &virtio, &pool, 0);

    // The frontend leaves: our handles go first (destroy_device waits for
    // them), then the frontend closes; the library reports the device gone.
    let vid = dev.vid();
    drop(dev);
    drop(virtio);
    wait_event(&sock, |e| *e == VhostEvent::DestroyDevice { vid });
    assert!(sock.device(vid).is_none(), "a destroyed device gives no handle");

    // ... and comes back.
    let virtio = virtio_port(&virtio_name, &path, frontend_is_server, &pool);
    let dev = wait_new_device(&sock);
    exchange(&dev, &virtio, &pool, 100);
    drop(dev);
    drop(virtio);
    drop(sock);
    assert_eq!(pool.free_count(), start_free, "every mbuf back in the pool");
}

#[test]
fn server_mode_frames_60_to_9000_both_ways_and_reconnect() {
    scenario("srv", VhostMode::Server);
}

#[test]
fn client_mode_frames_60_to_9000_both_ways_and_reconnect() {
    scenario("cli", VhostMode::Client);
}
