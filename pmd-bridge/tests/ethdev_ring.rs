//! Ethernet ports over DPDK rings (`net_ring`): loopback, partial transmit,
//! shared mbufs, multi-segment chains, bad devargs. Every test ends with its
//! pool's free count back where it started.
mod common;

use std::sync::Arc;

use common::{eal, frame, pool};
use pmd_bridge::{Burst, Error, EthPort, Mbuf, Mempool, PortConfig, Ring};

fn loop_port(name: &str, slots: u32, pool: &Arc<Mempool>) -> EthPort {
    let ring = Arc::new(Ring::new(eal(), &format!("r_{name}"), slots).expect("ring"));
    let mut port = EthPort::from_rings(eal(), name, &[Arc::clone(&ring)], &[ring]).expect("port");
    port.configure(&PortConfig::default(), Arc::clone(pool)).expect("configure");
    port.start().expect("start");
    port
}

/// Receives until `n` mbufs arrived (a ring delivers at once, so one pass of
/// bounded polls is enough).
fn receive(port: &EthPort, n: usize) -> Vec<Mbuf> {
    let mut rxq = port.rx_queue(0).unwrap();
    let mut got = Vec::new();
    let mut burst = Burst::<32>::new();
    for _ in 0..(n / 32 + 4) {
        rxq.rx_burst(&mut burst);
        got.extend(burst.drain());
    }
    got
}

#[test]
fn ring_loopback_delivers_frames_intact() {
    let pool = Arc::new(pool("loopback", 1024));
    let start = pool.free_count();
    let port = loop_port("loopback", 1024, &pool);
    let mut txq = port.tx_queue(0).unwrap();
    let frames: Vec<Vec<u8>> = (0..200).map(|i| frame(i, 60 + i as usize * 7)).collect();
    for chunk in frames.chunks(32) {
        let mut burst = Burst::<32>::new();
        for f in chunk {
            burst.push(pool.alloc_from(f).unwrap()).unwrap();
        }
        assert_eq!(txq.tx_burst(&mut burst), chunk.len());
        assert!(burst.is_empty());
    }
    let got = receive(&port, frames.len());
    assert_eq!(got.len(), frames.len());
    for (m, f) in got.iter().zip(&frames) {
        assert_eq!(&m.to_vec(), f);
    }
    drop(got);
    drop((txq, port));
    assert_eq!(pool.free_count(), start);
}

#[test]
fn partial_transmit_leaves_unsent_tail_with_caller() {
    let pool = Arc::new(pool("partial", 256));
    let start = pool.free_count();
    let port = loop_port("partial", 32, &pool);
    let mut txq = port.tx_queue(0).unwrap();
    let mut burst = Burst::<64>::new();
    for i in 0..64 {
        burst.push(pool.alloc_from(&frame(i, 64)).unwrap()).unwrap();
    }
    assert_eq!(txq.tx_burst(&mut burst), 32, "a 32-slot ring takes exactly 32");
    assert_eq!(burst.len(), 32, "the other 32 stay with the caller");
    // The tail is the second half, in order.
    assert_eq!(burst.as_slice()[0].to_vec(), frame(32, 64));
    assert_eq!(pool.in_use_count(), 64);
    drop(burst);
    assert_eq!(pool.in_use_count(), 32, "the ring holds the sent 32");
    let got = receive(&port, 32);
    assert_eq!(got.len(), 32);
    assert_eq!(got[0].to_vec(), frame(0, 64));
    drop(got);
    drop((txq, port));
    assert_eq!(pool.free_count(), start);
}

#[test]
fn one_mbuf_to_two_ports_is_freed_once() {
    let pool = Arc::new(pool("refcnt", 64));
    let start = pool.free_count();
    let a = loop_port("refcnt_a", 64, &pool);
    let b = loop_port("refcnt_b", 64, &pool);
    let m = pool.alloc_from(&frame(1, 128)).unwrap();
    let copy = m.share();
    assert_eq!(m.refcnt(), 2);
    assert!(!copy.is_exclusive());
    let (mut ta, mut tb) = (a.tx_queue(0).unwrap(), b.tx_queue(0).unwrap());
    let mut burst = Burst::<32>::new();
    burst.push(m).unwrap();
    assert_eq!(ta.tx_burst(&mut burst), 1);
    burst.push(copy).unwrap();
    assert_eq!(tb.tx_burst(&mut burst), 1);
    assert_eq!(pool.in_use_count(), 1, "one buffer, two references");
    let got_a = receive(&a, 1);
    let got_b = receive(&b, 1);
    assert_eq!(got_a[0].to_vec(), got_b[0].to_vec());
    drop(got_a);
    assert_eq!(pool.in_use_count(), 1, "still referenced by b's copy");
    drop(got_b);
    drop((ta, tb, a, b));
    assert_eq!(pool.free_count(), start);
}

#[test]
fn multi_segment_chain_passes_intact() {
    let pool = Arc::new(pool("multiseg", 256));
    let start = pool.free_count();
    let port = loop_port("multiseg", 64, &pool);
    let mut txq = port.tx_queue(0).unwrap();
    let data = frame(9, 9000);
    let m = pool.alloc_from(&data).unwrap();
    assert_eq!(m.nb_segs(), 5, "9000 bytes in 2048-byte segments");
    assert_eq!(m.len(), 9000);
    let mut burst = Burst::<32>::new();
    burst.push(m).unwrap();
    assert_eq!(txq.tx_burst(&mut burst), 1);
    let got = receive(&port, 1);
    assert_eq!(got[0].to_vec(), data);
    drop(got);
    drop((txq, port));
    assert_eq!(pool.free_count(), start);
}

#[test]
fn queue_handles_are_exclusive_and_block_stop() {
    let pool = Arc::new(pool("handles", 64));
    let mut port = loop_port("handles", 64, &pool);
    let rxq = port.rx_queue(0).unwrap();
    assert!(port.rx_queue(0).is_err(), "a queue has one handle at a time");
    assert!(port.rx_queue(1).is_err(), "no such queue");
    assert!(port.stop().is_err(), "stopping under a live queue handle is refused");
    drop(rxq);
    port.stop().expect("stop once no handle is alive");
    assert!(port.rx_queue(0).is_ok());
}

#[test]
fn bad_devargs_give_dpdks_message() {
    let err = EthPort::open(eal(), "net_no_such_driver0").expect_err("no such driver");
    let Error::Dpdk { call, .. } = &err else { panic!("{err:?}") };
    assert_eq!(*call, "rte_dev_probe");
    let err = EthPort::open(eal(), "net_null9,no_such_arg=1").expect_err("bad argument");
    assert!(err.to_string().contains("no_such_arg") || err.errno().is_some(), "{err}");
    assert!(EthPort::open(eal(), "bad\0devargs").is_err());
}

#[test]
fn port_info_stats_and_xstats() {
    let pool = Arc::new(pool("info", 64));
    let port = EthPort::open(eal(), "net_null3").expect("open net_null");
    let mut port = port;
    port.configure(&PortConfig { mtu: Some(1500), ..Default::default() }, Arc::clone(&pool)).unwrap();
    port.start().unwrap();
    assert_eq!(port.name(), "net_null3");
    assert_eq!(port.mac().unwrap().len(), 6);
    assert!(port.link().unwrap().up);
    let mut txq = port.tx_queue(0).unwrap();
    let mut burst = Burst::<32>::new();
    for i in 0..8 {
        burst.push(pool.alloc_from(&frame(i, 100)).unwrap()).unwrap();
    }
    assert_eq!(txq.tx_burst(&mut burst), 8);
    let stats = port.stats().unwrap();
    assert_eq!(stats.tx_packets, 8);
    assert!(!port.xstats().unwrap().is_empty());
    drop(txq);
    drop(port);
    assert_eq!(pool.in_use_count(), 0);
}

#[test]
fn one_handle_per_port_and_no_receive_into_a_full_burst() {
    let pool = Arc::new(pool("full", 128));
    let port = loop_port("full", 64, &pool);
    assert!(EthPort::from_id(eal(), port.id()).is_err(), "a second handle to an open port is refused");
    let mut txq = port.tx_queue(0).unwrap();
    let mut b = Burst::<32>::new();
    for i in 0..8 {
        b.push(pool.alloc_from(&frame(i, 64)).unwrap()).unwrap();
    }
    txq.tx_burst(&mut b);
    let mut full = Burst::<4>::new();
    for i in 0..4 {
        full.push(pool.alloc_from(&frame(i, 64)).unwrap()).unwrap();
    }
    let mut rxq = port.rx_queue(0).unwrap();
    assert_eq!(rxq.rx_burst(&mut full), 0, "no room, no call");
    drop((full, rxq, txq));
    let got = receive(&port, 8);
    assert_eq!(got.len(), 8);
    drop(got);
    drop(port);
    assert_eq!(pool.in_use_count(), 0);
}

#[test]
fn a_ring_device_is_opened_by_name_and_its_wire_read_from_the_other_ends() {
    let pool = Arc::new(pool("ringdev", 256));
    let start = pool.free_count();
    let ring = |n: &str| Arc::new(Ring::new(eal(), n, 64).unwrap());
    let (out, inbound) = (ring("rd_out"), ring("rd_in"));
    let name = EthPort::ring_device("rd", &[Arc::clone(&inbound)], &[Arc::clone(&out)]).unwrap();
    assert_eq!(name, "net_ring_rd");
    let mut port = EthPort::open(eal(), &name).unwrap();
    port.configure(&PortConfig::default(), Arc::clone(&pool)).unwrap();
    port.start().unwrap();
    let mut wire = EthPort::from_rings(eal(), "rdw", &[Arc::clone(&out)], &[Arc::clone(&inbound)]).unwrap();
    wire.configure(&PortConfig::default(), Arc::clone(&pool)).unwrap();
    wire.start().unwrap();
    let (mut ptx, mut prx, mut wtx, mut wrx) = (port.tx_queue(0).unwrap(), port.rx_queue(0).unwrap(), wire.tx_queue(0).unwrap(), wire.rx_queue(0).unwrap());
    for (tx, rx, f) in [(&mut ptx, &mut wrx, frame(1, 100)), (&mut wtx, &mut prx, frame(2, 200))] {
        let mut b = Burst::<32>::new();
        b.push(pool.alloc_from(&f).unwrap()).unwrap();
        assert_eq!(tx.tx_burst(&mut b), 1);
        let mut got = Burst::<32>::new();
        assert_eq!(rx.rx_burst(&mut got), 1);
        assert_eq!(got.iter().next().unwrap().to_vec(), f);
    }
    drop((ptx, prx, wtx, wrx, port, wire));
    assert_eq!(pool.free_count(), start);
}
