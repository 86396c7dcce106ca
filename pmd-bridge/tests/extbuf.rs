//! Zero-copy chains over guest memory (`extbuf::Lender`) on real mbufs and
//! a real `net_ring` port: the bytes that leave, who may write them, and
//! completions that come back once every segment is freed, on any thread,
//! in any order. Every test ends with its pool back where it started.
mod common;

use std::sync::Arc;

use common::{eal, frame, pool};
use pmd_bridge::extbuf::{LendError, Lender, Payload};
use pmd_bridge::guest_mem::{GuestMemory, Gpa, Span};
use pmd_bridge::{Burst, EthPort, Mbuf, Mempool, PortConfig, Ring, Stock};

/// Guest memory holding `bytes` at 0x1000 split over buffers of `split`
/// bytes each (a descriptor chain), and the chain's spans.
fn guest(bytes: &[u8], split: usize) -> (Arc<GuestMemory>, Vec<Span>) {
    let mem = Arc::new(GuestMemory::new_owned(&[(0, 0x100000)]));
    let mut spans = Vec::new();
    for (i, piece) in bytes.chunks(split).enumerate() {
        // Buffers 8 KB apart, as a guest's are scattered.
        let gpa = Gpa(0x1000 + 0x2000 * i as u64);
        mem.write(gpa, piece).unwrap();
        mem.translate(gpa, piece.len() as u32, |s| spans.push(s)).unwrap();
    }
    (mem, spans)
}

fn p(spans: &[Span], skip: u64, len: u64) -> Payload<'_> {
    Payload { spans, skip, len }
}

fn reaped(l: &mut Lender) -> Vec<u16> {
    let mut tags = Vec::new();
    l.reap(|t| tags.push(t));
    tags
}

#[test]
fn a_lent_chain_carries_the_private_header_and_the_guest_payload_in_place() {
    let pool = pool("zc_bytes", 256);
    let start = pool.free_count();
    let f = frame(1, 1500);
    let (mem, spans) = guest(&f, 600);
    let mut l = Lender::new(4);
    let mut head = f[..64].to_vec();
    head[0] = 0xaa; // the switch's decision, not the guest's byte
    let m = l.lend((&pool, &mut Stock::default()), &mem, 7, &head, p(&spans, 64, 1500 - 64)).unwrap();
    assert_eq!(m.len(), 1500);
    assert_eq!(m.nb_segs(), 4, "header + the three buffers' pieces");
    let mut want = f.clone();
    want[0] = 0xaa;
    assert_eq!(m.to_vec(), want);
    // The guest rewrites its buffer: its payload changes (no copy was made),
    // the header that leaves does not.
    mem.write(Gpa(0x1000), &[0x55; 100]).unwrap();
    let out = m.to_vec();
    assert_eq!(out[..64], want[..64]);
    assert_eq!(out[64..100], [0x55; 36]);
    // Guest memory is never writable through an mbuf; the header is.
    let mut m = m;
    assert!(!m.is_data_exclusive() && m.append(&[1]).is_none());
    assert!(m.data_mut().is_some() && m.prepend(4).is_some(), "the private header may be edited");
    assert_eq!(l.in_flight(), 1);
    assert!(reaped(&mut l).is_empty(), "nothing back while the chain lives");
    drop(m);
    assert_eq!(reaped(&mut l), [7]);
    assert_eq!(l.in_flight(), 0);
    assert_eq!(pool.free_count(), start);
}

#[test]
fn completions_come_back_from_other_threads_in_any_order_and_floods_wait_for_every_copy() {
    let pool = pool("zc_order", 256);
    let start = pool.free_count();
    let f = frame(2, 9000);
    let (mem, spans) = guest(&f, 4096);
    let mut l = Lender::new(8);
    let mut chains: Vec<Mbuf> = (0..5u16).map(|t| l.lend((&pool, &mut Stock::default()), &mem, 100 + t, &f[..60], p(&spans, 60, 9000 - 60)).unwrap()).collect();
    // A flood: one more reference to chain 0 (one per output).
    let copy = chains[0].share();
    // Freed on another thread, last first.
    let back: Vec<Mbuf> = chains.drain(1..).rev().collect();
    std::thread::spawn(move || drop(back)).join().unwrap();
    let mut tags = reaped(&mut l);
    tags.sort();
    assert_eq!(tags, [101, 102, 103, 104]);
    drop(chains);
    assert!(reaped(&mut l).is_empty(), "chain 0 still has an output");
    drop(copy);
    assert_eq!(reaped(&mut l), [100]);
    assert_eq!(pool.free_count(), start);
}

#[test]
fn the_in_flight_bound_and_other_memories_refuse_a_loan() {
    let pool = pool("zc_bound", 64);
    let start = pool.free_count();
    let f = frame(3, 1000);
    let (mem, spans) = guest(&f, 1000);
    let mut l = Lender::new(2);
    let a = l.lend((&pool, &mut Stock::default()), &mem, 1, &f[..64], p(&spans, 64, 936)).unwrap();
    let b = l.lend((&pool, &mut Stock::default()), &mem, 2, &f[..64], p(&spans, 64, 936)).unwrap();
    assert_eq!(l.lend((&pool, &mut Stock::default()), &mem, 3, &f[..64], p(&spans, 64, 936)).err(), Some(LendError::Full));
    drop(a);
    assert_eq!(reaped(&mut l), [1]);
    // A new memory table while a chain of the old one is out: copy.
    let (other, ospans) = guest(&f, 1000);
    assert_eq!(l.lend((&pool, &mut Stock::default()), &other, 4, &f[..64], p(&ospans, 64, 936)).err(), Some(LendError::OtherMemory));
    assert_eq!(l.lend((&pool, &mut Stock::default()), &mem, 4, &f[..64], p(&spans, 64, 937)).err(), Some(LendError::Shape), "past the chain");
    drop(b);
    assert_eq!(reaped(&mut l), [2]);
    let c = l.lend((&pool, &mut Stock::default()), &other, 5, &f[..64], p(&ospans, 64, 936)).unwrap();
    let held = |m: &GuestMemory| Arc::strong_count(m.lend_map().unwrap());
    assert_eq!(held(&mem), 1, "the old mapping let go once its chains came back");
    assert_eq!(held(&other), 2, "the new one held while its chain is out");
    drop(c);
    reaped(&mut l);
    assert_eq!(held(&other), 1);
    assert_eq!(pool.free_count(), start);
}

#[test]
fn a_ring_port_holds_lent_chains_until_its_reader_frees_them() {
    let pool = Arc::new(pool("zc_ring", 512));
    let start = pool.free_count();
    let ring = Arc::new(Ring::new(eal(), "zc_ring", 64).unwrap());
    let mut port = EthPort::from_rings(eal(), "net_ring_zc", &[Arc::clone(&ring)], &[Arc::clone(&ring)]).unwrap();
    port.configure(&PortConfig::default(), Arc::clone(&pool)).unwrap();
    port.start().unwrap();
    let (mut txq, mut rxq) = (port.tx_queue(0).unwrap(), port.rx_queue(0).unwrap());
    let frames: Vec<Vec<u8>> = [200usize, 1514, 4000].iter().enumerate().map(|(i, &n)| frame(10 + i as u32, n)).collect();
    let guests: Vec<_> = frames.iter().map(|f| guest(f, 1024)).collect();
    let mut l = Lender::new(4);
    let mut b = Burst::<32>::new();
    for (i, (f, (mem, spans))) in frames.iter().zip(&guests).enumerate() {
        // Each frame from its own guest memory: one lender per memory.
        let mut own = Lender::new(1);
        let lender = if i == 0 { &mut l } else { &mut own };
        b.push(lender.lend((&pool, &mut Stock::default()), mem, i as u16, &f[..64], p(spans, 64, f.len() as u64 - 64)).unwrap()).unwrap();
        if i > 0 {
            // Sent, then its lender dropped with the chain out: it must leak,
            // not free, what the ring's reader frees later.
            std::mem::drop(own);
        }
    }
    assert_eq!(txq.tx_burst(&mut b), 3);
    assert!(reaped(&mut l).is_empty(), "held by the ring");
    let mut got = Burst::<32>::new();
    assert_eq!(rxq.rx_burst(&mut got), 3);
    let bytes: Vec<Vec<u8>> = got.iter().map(Mbuf::to_vec).collect();
    assert_eq!(bytes, frames);
    std::thread::spawn(move || drop(got)).join().unwrap();
    assert_eq!(reaped(&mut l), [0]);
    drop((txq, rxq, port));
    assert_eq!(pool.free_count(), start);
}

#[test]
fn a_frame_in_too_many_pieces_or_an_empty_pool_is_refused() {
    let pool: Mempool = pool("zc_refuse", 8);
    let f = frame(4, 2000);
    let (mem, spans) = guest(&f, 50);
    let mut l = Lender::new(4);
    assert_eq!(l.lend((&pool, &mut Stock::default()), &mem, 1, &f[..64], p(&spans, 64, 1936)).err(), Some(LendError::Shape), "39 pieces");
    let (mem, spans) = guest(&f, 250);
    let held: Vec<Mbuf> = (0..6).map(|_| pool.alloc().unwrap()).collect();
    assert_eq!(l.lend((&pool, &mut Stock::default()), &mem, 1, &f[..64], p(&spans, 64, 1936)).err(), Some(LendError::NoMbuf));
    drop(held);
    assert_eq!(l.in_flight(), 0);
}
