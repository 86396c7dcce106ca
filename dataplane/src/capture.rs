//! Packet capture on the PMD threads (`vswitchctl capture`).
//!
//! A capture session gives each PMD thread a `Tap` in its plan: the port
//! slot, the directions, the snap length and a `CaptureRing` of its own, so
//! every ring has one writer (its thread) and one reader (the control
//! side's writer of the pcap file). A thread copies each frame it
//! receives on, or hands to, a tapped port into its ring, with a TSC
//! timestamp; a frame that does not fit is counted as a capture drop and
//! forwarding goes on, never waiting for the reader. Without a session a
//! plan's `Taps` is empty, and the loop tests that once per burst.
//!
//! The ring holds 8-byte words in atomics (no lock, safe Rust only): a record is
//! a timestamp word, a word of lengths and direction, then the frame's
//! first `caplen` bytes. The writer publishes a record by storing its
//! tail with release ordering after the words; the reader frees them by
//! storing its head likewise after reading.
use std::sync::atomic::{AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::sync::Arc;

use pmd_bridge::cycles::tsc;
use pmd_bridge::{Burst, Mbuf, Mempool, Stock};

use crate::copy_once::GuestBurst;
use crate::counters::bump;
use crate::packet::PacketBuf;

/// Words of each thread's ring: 8 MiB, 5000 full-size frames.
pub const RING_WORDS: usize = 1 << 20;
/// The longest snap length (tcpdump's default).
pub const MAX_SNAPLEN: u32 = 262_144;
const TX_BIT: u64 = 1 << 63;

/// One thread's captured frames, on their way to the reader.
pub struct CaptureRing {
    words: Box<[AtomicU64]>,
    /// Words written (the writer's) and read (the reader's), ever.
    tail: AtomicU64,
    head: AtomicU64,
    /// Frames written, and frames that did not fit (the writer's).
    pub captured: AtomicU64,
    pub dropped: AtomicU64,
}

/// A frame as the reader gets it.
pub struct Record<'a> {
    pub tsc: u64,
    pub tx: bool,
    pub orig_len: u32,
    pub data: &'a [u8],
}

impl CaptureRing {
    /// A ring of `words` words (a power of two).
    pub fn new(words: usize) -> CaptureRing {
        assert!(words.is_power_of_two(), "ring size {words} is not a power of two");
        CaptureRing {
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
            tail: AtomicU64::new(0),
            head: AtomicU64::new(0),
            captured: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    #[inline]
    fn store(&self, pos: u64, v: u64) {
        self.words[pos as usize & (self.words.len() - 1)].store(v, Relaxed);
    }

    /// Writes one frame of `orig_len` bytes, whose first `caplen` are
    /// `segs`; false (and counted) if it does not fit. The writer's only.
    pub fn push<'a>(&self, tsc: u64, tx: bool, orig_len: usize, caplen: usize, segs: impl Iterator<Item = &'a [u8]>) -> bool {
        let need = 2 + caplen.div_ceil(8) as u64;
        let tail = self.tail.load(Relaxed);
        if tail + need - self.head.load(Acquire) > self.words.len() as u64 {
            bump(&self.dropped, 1);
            return false;
        }
        self.store(tail, tsc);
        self.store(tail + 1, orig_len as u64 & 0xffff_ffff | (caplen as u64) << 32 | if tx { TX_BIT } else { 0 });
        let mut pos = tail + 2;
        let (mut acc, mut n, mut left) = ([0u8; 8], 0, caplen);
        for seg in segs {
            let mut seg = &seg[..seg.len().min(left)];
            left -= seg.len();
            if n == 0 {
                let mut words = seg.chunks_exact(8);
                for w in &mut words {
                    self.store(pos, u64::from_le_bytes(w.try_into().expect("8 bytes")));
                    pos += 1;
                }
                seg = words.remainder();
            }
            for &b in seg {
                acc[n] = b;
                n += 1;
                if n == 8 {
                    self.store(pos, u64::from_le_bytes(acc));
                    (pos, n) = (pos + 1, 0);
                }
            }
            if left == 0 {
                break;
            }
        }
        if n > 0 {
            acc[n..].fill(0);
            self.store(pos, u64::from_le_bytes(acc));
        }
        self.tail.store(tail + need, Release);
        bump(&self.captured, 1);
        true
    }

    /// Nothing written that the reader has not read (the reader's).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.tail.load(Acquire) == self.head.load(Relaxed)
    }

    /// Reads every frame written so far, in order, into `f` (the frame's
    /// bytes in `scratch`), and frees their words. The reader's only.
    pub fn drain(&self, scratch: &mut Vec<u8>, mut f: impl FnMut(Record)) {
        let tail = self.tail.load(Acquire);
        let mut head = self.head.load(Relaxed);
        let load = |pos: u64| self.words[pos as usize & (self.words.len() - 1)].load(Relaxed);
        while head < tail {
            let (ts, lens) = (load(head), load(head + 1));
            let caplen = ((lens & !TX_BIT) >> 32) as usize;
            scratch.clear();
            for i in 0..caplen.div_ceil(8) as u64 {
                scratch.extend_from_slice(&load(head + 2 + i).to_le_bytes());
            }
            scratch.truncate(caplen);
            f(Record { tsc: ts, tx: lens & TX_BIT != 0, orig_len: lens as u32, data: scratch });
            head += 2 + caplen.div_ceil(8) as u64;
        }
        self.head.store(head, Release);
    }
}

/// A capture on one port, as one PMD thread sees it.
pub struct Tap {
    pub slot: u16,
    pub rx: bool,
    pub tx: bool,
    pub snaplen: u32,
    pub ring: Arc<CaptureRing>,
}

/// The captures running, in a plan (usually none).
#[derive(Default)]
pub struct Taps(pub Vec<Tap>);

impl Taps {
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn on(&self, slot: u16, tx: bool) -> impl Iterator<Item = &Tap> {
        self.0.iter().filter(move |t| t.slot == slot && if tx { t.tx } else { t.rx })
    }

    /// Mbufs received on, or about to be sent to, port `slot`.
    pub fn mbufs(&self, slot: u16, tx: bool, burst: &Burst) {
        let now = tsc();
        for t in self.on(slot, tx) {
            for m in burst.iter() {
                push_mbuf(t, now, tx, m);
            }
        }
    }

    /// Frames received from a copy-once guest on `slot`: their headers are
    /// in scratch, the rest is copied out of the guest (into an mbuf of
    /// `pool`, freed at once) only if the snap length reaches past them.
    pub fn guest_rx(&self, slot: u16, burst: &mut GuestBurst, stock: &mut Stock, pool: &Mempool) {
        let now = tsc();
        for t in self.on(slot, false) {
            for i in 0..burst.pkts().len() {
                push_guest(t, now, false, burst, i, stock, pool);
            }
        }
    }

    /// Frame `i` of a copy-once guest's burst, delivered into the copy-once
    /// guest on `slot` without an mbuf.
    pub fn guest_tx(&self, slot: u16, burst: &mut GuestBurst, i: usize, stock: &mut Stock, pool: &Mempool) {
        let now = tsc();
        for t in self.on(slot, true) {
            push_guest(t, now, true, burst, i, stock, pool);
        }
    }
}

fn push_mbuf(t: &Tap, now: u64, tx: bool, m: &Mbuf) {
    let caplen = m.len().min(t.snaplen as usize);
    t.ring.push(now, tx, m.len(), caplen, m.segments());
}

fn push_guest(t: &Tap, now: u64, tx: bool, burst: &mut GuestBurst, i: usize, stock: &mut Stock, pool: &Mempool) {
    let p = &burst.pkts()[i];
    let (len, head) = (p.frame_len(), p.headers());
    let caplen = len.min(t.snaplen as usize);
    if caplen <= head.len() {
        t.ring.push(now, tx, len, caplen, std::iter::once(head));
    } else if let Some(m) = burst.materialize(i, stock, pool) {
        push_mbuf(t, now, tx, &m);
    } else {
        bump(&t.ring.dropped, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(r: &CaptureRing) -> Vec<(u64, bool, u32, Vec<u8>)> {
        let mut out = Vec::new();
        r.drain(&mut Vec::new(), |rec| out.push((rec.tsc, rec.tx, rec.orig_len, rec.data.to_vec())));
        out
    }

    #[test]
    fn frames_come_back_as_written_cut_to_their_caplen_across_segments() {
        let r = CaptureRing::new(64);
        let frame: Vec<u8> = (0..45).collect();
        assert!(r.push(7, false, 45, 45, [&frame[..3], &frame[3..20], &frame[20..]].into_iter()));
        assert!(r.push(8, true, 45, 10, [&frame[..]].into_iter()));
        assert!(r.push(9, true, 0, 0, std::iter::empty()));
        let got = read_all(&r);
        assert_eq!(got, [(7, false, 45, frame.clone()), (8, true, 45, frame[..10].to_vec()), (9, true, 0, vec![])]);
        assert!(read_all(&r).is_empty(), "read once");
    }

    #[test]
    fn a_full_ring_drops_and_counts_and_takes_frames_again_once_read() {
        let r = CaptureRing::new(16);
        let frame = [0xabu8; 40]; // 2 + 5 words
        assert!(r.push(1, false, 40, 40, [&frame[..]].into_iter()));
        assert!(r.push(2, false, 40, 40, [&frame[..]].into_iter()));
        assert!(!r.push(3, false, 40, 40, [&frame[..]].into_iter()), "14 of 16 words used");
        assert_eq!((r.captured.load(Relaxed), r.dropped.load(Relaxed)), (2, 1));
        assert_eq!(read_all(&r).len(), 2);
        // The next records wrap around the end of the words.
        for ts in 10..20 {
            assert!(r.push(ts, false, 40, 40, [&frame[..]].into_iter()));
            let got = read_all(&r);
            assert_eq!((got[0].0, &got[0].3[..]), (ts, &frame[..]));
        }
    }

    #[test]
    fn a_reader_on_another_thread_sees_every_frame_whole_and_in_order() {
        let r = Arc::new(CaptureRing::new(256));
        let writer = {
            let r = Arc::clone(&r);
            std::thread::spawn(move || {
                let mut i = 0u64;
                while i < 20_000 {
                    let f: Vec<u8> = (0..(i % 50) as u8).map(|b| b ^ i as u8).collect();
                    if r.push(i, i.is_multiple_of(2), f.len(), f.len(), [&f[..]].into_iter()) {
                        i += 1;
                    }
                }
            })
        };
        let (mut next, mut scratch) = (0u64, Vec::new());
        while next < 20_000 {
            r.drain(&mut scratch, |rec| {
                let want: Vec<u8> = (0..(next % 50) as u8).map(|b| b ^ next as u8).collect();
                assert_eq!((rec.tsc, rec.tx, rec.data), (next, next.is_multiple_of(2), &want[..]));
                next += 1;
            });
        }
        writer.join().unwrap();
    }
}
