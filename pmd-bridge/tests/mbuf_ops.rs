//! Mbuf and burst operations on real mbufs: headroom, trim, sharing rules,
//! private headers in front of shared packets, indirect clones, bulk free.
mod common;

use common::{eal, frame, pool};
use pmd_bridge::{Burst, Error, EthPort, Stock};

#[test]
fn prepend_adj_trim_on_an_exclusive_mbuf() {
    let pool = pool("ops", 16);
    let mut m = pool.alloc_from(&[1, 2, 3, 4]).unwrap();
    assert!(m.is_data_exclusive());
    m.prepend(2).unwrap().copy_from_slice(&[9, 9]);
    assert_eq!(m.to_vec(), [9, 9, 1, 2, 3, 4]);
    assert!(m.adj(3));
    assert!(m.trim(1));
    assert_eq!(m.to_vec(), [2, 3]);
    m.data_mut().unwrap()[0] = 7;
    assert_eq!(m.data(), [7, 3]);
    assert!(m.prepend(u16::MAX).is_none(), "more than the headroom");
    assert!(!m.adj(10), "more than the data");
    drop(m);
    assert_eq!(pool.in_use_count(), 0);
}

#[test]
fn a_shared_mbuf_cannot_be_changed_through_any_handle() {
    let pool = pool("shared", 16);
    let mut m = pool.alloc_from(&frame(1, 64)).unwrap();
    let mut other = m.share();
    for h in [&mut m, &mut other] {
        assert!(h.data_mut().is_none());
        assert!(h.prepend(4).is_none());
        assert!(!h.adj(1));
        assert!(!h.trim(1));
        assert!(h.append(&[1]).is_none());
    }
    drop(other);
    assert!(m.data_mut().is_some(), "exclusive again");
    drop(m);
    assert_eq!(pool.in_use_count(), 0);
}

#[test]
fn private_header_in_front_of_a_shared_packet() {
    let pool = pool("header", 16);
    let pkt = pool.alloc_from(&frame(2, 100)).unwrap();
    let copies: Vec<_> = (0..3).map(|_| pkt.share()).collect();
    let mut outputs = Vec::new();
    for (i, c) in copies.into_iter().enumerate() {
        let mut hdr = pool.alloc_from(&[i as u8; 4]).unwrap();
        hdr.chain(c).unwrap();
        assert_eq!(hdr.len(), 104);
        outputs.push(hdr);
    }
    for (i, o) in outputs.iter().enumerate() {
        let v = o.to_vec();
        assert_eq!(&v[..4], &[i as u8; 4]);
        assert_eq!(&v[4..], &frame(2, 100)[..]);
    }
    assert_eq!(pkt.to_vec(), frame(2, 100), "the shared packet is untouched");
    drop(outputs);
    assert_eq!(pkt.refcnt(), 1);
    drop(pkt);
    assert_eq!(pool.in_use_count(), 0);
}

#[test]
fn indirect_clone_adjusts_its_own_view_only() {
    let pool = pool("indirect", 16);
    let pkt = pool.alloc_from(&frame(3, 64)).unwrap();
    let mut view = pkt.clone_indirect(&pool).unwrap();
    assert!(view.adj(4), "an indirect clone's headers are its own");
    assert!(view.data_mut().is_none(), "but its data is shared");
    assert_eq!(view.to_vec(), frame(3, 64)[4..]);
    assert_eq!(pkt.len(), 64);
    drop(pkt);
    assert_eq!(view.to_vec(), frame(3, 64)[4..], "the clone keeps the data alive");
    drop(view);
    assert_eq!(pool.in_use_count(), 0);
}

#[test]
fn burst_push_retain_drain_and_bulk_free() {
    let pool = pool("burst", 64);
    let mut burst = Burst::<32>::new();
    for i in 0..32 {
        burst.push(pool.alloc_from(&frame(i, 60 + i as usize)).unwrap()).unwrap();
    }
    let extra = pool.alloc_from(&[0; 60]).unwrap();
    let extra = burst.push(extra).expect_err("a full burst hands the mbuf back");
    drop(extra);
    let mut rejected = 0;
    burst.retain(|m| m.len() % 2 == 0, |_| rejected += 1);
    assert_eq!((burst.len(), rejected), (16, 16));
    assert!(burst.iter().all(|m| m.len() % 2 == 0));
    let first: Vec<_> = burst.drain().take(4).collect();
    assert_eq!(first.len(), 4);
    assert!(burst.is_empty());
    drop(first);
    assert_eq!(pool.in_use_count(), 0);
    for i in 0..10 {
        burst.push(pool.alloc_from(&frame(i, 64)).unwrap()).unwrap();
    }
    assert_eq!(pool.in_use_count(), 10);
    drop(burst);
    assert_eq!(pool.in_use_count(), 0, "drained but untaken mbufs are freed too");
}

#[test]
fn no_port_for_a_bad_name() {
    let err = EthPort::from_id(eal(), 999).expect_err("no such port");
    assert!(matches!(err, Error::InvalidArgument(_)));
}

#[test]
fn regression_chain_never_writes_a_shared_tail() {
    let pool = pool("chain_shared", 16);
    let pkt = pool.alloc_from(&frame(5, 3000)).unwrap();
    assert_eq!(pkt.nb_segs(), 2);
    let copy = pkt.share();
    let mut hdr = pool.alloc_from(&[9; 4]).unwrap();
    hdr.chain(copy).unwrap();
    assert_eq!((hdr.len(), hdr.nb_segs()), (3004, 3));
    assert_eq!((pkt.len(), pkt.nb_segs()), (3000, 2), "the shared packet's own length is untouched");
    assert_eq!(&hdr.to_vec()[4..], &frame(5, 3000)[..]);
    drop((hdr, pkt));
    assert_eq!(pool.in_use_count(), 0);
}

#[test]
fn a_stock_refills_in_steps_and_gives_back_the_rest() {
    use pmd_bridge::mempool::REFILL;
    let pool = pool("stock", 64);
    let base = pool.in_use_count();
    let mut s = Stock::default();
    let taken: Vec<_> = (0..REFILL + 1).map(|_| s.take(&pool).unwrap()).collect();
    assert_eq!(pool.in_use_count() - base, 2 * REFILL as u32, "two refills");
    s.settle();
    assert_eq!(pool.in_use_count() - base, REFILL as u32 + 1, "only what was taken");
    drop(taken);
    assert_eq!(pool.in_use_count(), base);
}
