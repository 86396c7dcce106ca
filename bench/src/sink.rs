//! The sink: per-stream sequence accounting (loss, reordering, duplicates)
//! and a latency histogram over TSC cycles. TCP (TSO) streams are counted
//! in payload bytes instead: a segment may arrive whole or cut into many
//! frames, so what arrived is a set of byte ranges per stream.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Log-linear histogram: 32 buckets per power of two (about 3% precision),
/// constant-time record, no allocation after creation.
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
}

const SUB: u32 = 32;
const SUB_BITS: u32 = 5;

impl Default for Histogram {
    fn default() -> Self {
        Histogram { buckets: vec![0; (64 * SUB) as usize], count: 0 }
    }
}

impl Histogram {
    #[inline]
    fn index(v: u64) -> usize {
        let exp = 63 - (v | 1).leading_zeros();
        if exp < SUB_BITS {
            v as usize
        } else {
            ((exp - SUB_BITS + 1) * SUB + ((v >> (exp - SUB_BITS)) as u32 & (SUB - 1))) as usize
        }
    }

    fn lower_bound(i: usize) -> u64 {
        let i = i as u32;
        if i < SUB {
            return i as u64;
        }
        let exp = i / SUB + SUB_BITS - 1;
        ((SUB + i % SUB) as u64) << (exp - SUB_BITS)
    }

    #[inline]
    pub fn record(&mut self, v: u64) {
        self.buckets[Self::index(v)] += 1;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The value at quantile `q` (0..=1), as the lower bound of its bucket.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let target = ((self.count as f64 * q).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target {
                return Self::lower_bound(i);
            }
        }
        Self::lower_bound(self.buckets.len() - 1)
    }
}

/// One stream's accounting. `seen` is a bitset over sequence numbers, grown
/// in large steps so it is almost never resized while measuring.
#[derive(Default)]
struct Stream {
    received: u64,
    next: u64,
    reordered: u64,
    duplicates: u64,
    seen: Vec<u64>,
}

/// One TCP stream's accounting: the byte ranges received, merged. The run
/// being extended (in-order arrival, the common case) is kept apart from
/// the map, so that appending to it costs no map operation.
#[derive(Default)]
struct ByteStream {
    /// Disjoint [start, end) ranges other than `run`.
    done: BTreeMap<u64, u64>,
    run: Option<(u64, u64)>,
    /// The highest end seen: where an in-order piece starts, and the
    /// reference for widening 32-bit sequence numbers.
    highest: u64,
    bytes: u64,
    duplicate_bytes: u64,
    frames: u64,
    reordered: u64,
    duplicates: u64,
}

impl ByteStream {
    /// The 64-bit offset of a 32-bit sequence number: the one nearest to
    /// the highest offset seen (pieces are far smaller than 2 GB apart).
    fn widen(&self, seq: u32) -> u64 {
        let cand = (self.highest & !0xffff_ffff) | u64::from(seq);
        if cand > self.highest + (1 << 31) && cand >= 1 << 32 {
            cand - (1 << 32)
        } else if cand + (1 << 31) < self.highest {
            cand + (1 << 32)
        } else {
            cand
        }
    }

    #[inline]
    fn record(&mut self, seq: u32, len: u32) {
        self.frames += 1;
        if len == 0 {
            return;
        }
        let start = self.widen(seq);
        let end = start + u64::from(len);
        match &mut self.run {
            Some((_, e)) if *e == start => {
                *e = end;
                self.bytes += u64::from(len);
                self.highest = self.highest.max(end);
                return;
            }
            _ => {}
        }
        if start < self.highest {
            self.reordered += 1;
        }
        if let Some((s, e)) = self.run.take() {
            self.insert(s, e);
        }
        let overlap = self.insert(start, end);
        if overlap > 0 {
            self.duplicates += 1;
            self.duplicate_bytes += overlap;
        }
        self.bytes += end - start - overlap;
        self.highest = self.highest.max(end);
        // The range now holding this piece becomes the run.
        let (&s, &e) = self.done.range(..=start).next_back().expect("just inserted");
        self.done.remove(&s);
        self.run = Some((s, e));
    }

    /// Merges [start, end) into `done`; returns how many of its bytes were
    /// there already.
    fn insert(&mut self, mut start: u64, mut end: u64) -> u64 {
        let (s0, e0) = (start, end);
        let mut overlap = 0;
        let touching: Vec<(u64, u64)> = self.done.range(..=end).rev().take_while(|&(_, &e)| e >= s0).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in touching {
            overlap += e.min(e0).saturating_sub(s.max(s0));
            start = start.min(s);
            end = end.max(e);
            self.done.remove(&s);
        }
        self.done.insert(start, end);
        overlap
    }
}

#[derive(Default)]
pub struct Sink {
    streams: Vec<Stream>,
    bytes: Vec<ByteStream>,
    /// TCP payload bytes per segment sent (0: packet streams).
    payload: u64,
    pub latency: Histogram,
    /// Frames that were not benchmark frames (announcements, noise).
    pub other: u64,
}

/// What the sink saw, per run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SinkReport {
    pub received: u64,
    pub lost: u64,
    pub reordered: u64,
    pub duplicates: u64,
    pub latency_p50_ns: f64,
    pub latency_p99_ns: f64,
    pub latency_p999_ns: f64,
    /// TCP streams only: distinct payload bytes received, bytes sent and
    /// never received, and the frames they arrived in (a switch that cuts
    /// segments delivers many per segment sent). `received` and `lost`
    /// are then in segments' worth of payload, rounded down and up.
    #[serde(default)]
    pub payload_bytes: u64,
    #[serde(default)]
    pub lost_bytes: u64,
    #[serde(default)]
    pub duplicate_bytes: u64,
    #[serde(default)]
    pub frames: u64,
}

impl Sink {
    /// Expects streams `0..streams`, each about `expected` frames long.
    pub fn new(streams: usize, expected: u64) -> Sink {
        let words = (expected / 64 + 1024) as usize;
        Sink {
            streams: (0..streams).map(|_| Stream { seen: vec![0; words], ..Default::default() }).collect(),
            ..Default::default()
        }
    }

    /// Expects TCP streams `0..streams`, each segment sent carrying
    /// `payload` bytes.
    pub fn for_bytes(streams: usize, payload: u64) -> Sink {
        Sink { bytes: (0..streams).map(|_| ByteStream::default()).collect(), payload, ..Default::default() }
    }

    /// A TCP frame: `len` payload bytes at sequence number `seq` of
    /// `stream`, sent `age` cycles ago.
    #[inline]
    pub fn record_bytes(&mut self, stream: u16, seq: u32, len: u32, age: u64) {
        let Some(s) = self.bytes.get_mut(stream as usize) else {
            self.other += 1;
            return;
        };
        s.record(seq, len);
        self.latency.record(age);
    }

    #[inline]
    pub fn record(&mut self, seq: u64, sent_tsc: u64, now_tsc: u64, stream: u16) {
        let Some(s) = self.streams.get_mut(stream as usize) else {
            self.other += 1;
            return;
        };
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if w >= s.seen.len() {
            s.seen.resize((w + 1).next_power_of_two(), 0);
        }
        if s.seen[w] & (1 << b) != 0 {
            s.duplicates += 1;
            return;
        }
        s.seen[w] |= 1 << b;
        s.received += 1;
        if seq < s.next {
            s.reordered += 1;
        } else {
            s.next = seq + 1;
        }
        self.latency.record(now_tsc.saturating_sub(sent_tsc));
    }

    /// The report, given how many frames each stream sent.
    pub fn report(&self, sent: &[u64], tsc_hz: u64) -> SinkReport {
        let ns = |c: u64| c as f64 * 1e9 / tsc_hz.max(1) as f64;
        let total_sent: u64 = sent.iter().sum();
        let mut r = SinkReport {
            latency_p50_ns: ns(self.latency.quantile(0.5)),
            latency_p99_ns: ns(self.latency.quantile(0.99)),
            latency_p999_ns: ns(self.latency.quantile(0.999)),
            ..Default::default()
        };
        if self.payload > 0 {
            let bytes: u64 = self.bytes.iter().map(|s| s.bytes).sum();
            r.payload_bytes = bytes;
            r.lost_bytes = (total_sent * self.payload).saturating_sub(bytes);
            r.duplicate_bytes = self.bytes.iter().map(|s| s.duplicate_bytes).sum();
            r.frames = self.bytes.iter().map(|s| s.frames).sum();
            r.received = bytes / self.payload;
            r.lost = total_sent - r.received;
            r.reordered = self.bytes.iter().map(|s| s.reordered).sum();
            r.duplicates = self.bytes.iter().map(|s| s.duplicates).sum();
        } else {
            r.received = self.streams.iter().map(|s| s.received).sum();
            r.lost = total_sent.saturating_sub(r.received);
            r.reordered = self.streams.iter().map(|s| s.reordered).sum();
            r.duplicates = self.streams.iter().map(|s| s.duplicates).sum();
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_within_bucket_precision() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for (q, want) in [(0.5, 50_000.0), (0.99, 99_000.0), (0.999, 99_900.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.04, "q{q}: {got} vs {want}");
        }
        for v in [0u64, 1, 31, 32, 33, 1000, u32::MAX as u64] {
            assert!(Histogram::lower_bound(Histogram::index(v)) <= v);
        }
    }

    #[test]
    fn loss_reordering_and_duplicates() {
        let mut s = Sink::new(2, 100);
        for seq in [0, 1, 3, 2, 2, 5] {
            s.record(seq, 0, 10, 0);
        }
        s.record(0, 0, 10, 1);
        s.record(0, 0, 10, 7); // unknown stream
        let r = s.report(&[7, 1], 1_000_000_000);
        assert_eq!((r.received, r.lost, r.reordered, r.duplicates), (6, 2, 1, 1));
        assert_eq!(s.other, 1);
        assert!((r.latency_p50_ns - 10.0).abs() < 1.0);
    }

    #[test]
    fn byte_streams_count_pieces_whole_or_cut() {
        let mut s = Sink::for_bytes(2, 100);
        // Stream 0: segment 0 whole, segment 1 cut in four, segment 2 lost,
        // segment 3 early (reordered relative to nothing: it comes last).
        s.record_bytes(0, 0, 100, 5);
        for (seq, len) in [(100, 25), (125, 25), (175, 25), (150, 25)] {
            s.record_bytes(0, seq, len, 5);
        }
        s.record_bytes(0, 300, 100, 5);
        s.record_bytes(0, 125, 50, 5); // overlaps 50 bytes already there
        // Stream 1 wraps its 32-bit sequence numbers.
        let base = u32::MAX - 149;
        for i in 0..4u32 {
            s.record_bytes(1, base.wrapping_add(i * 100), 100, 5);
        }
        s.record_bytes(9, 0, 100, 5);
        let r = s.report(&[4, 4], 1_000_000_000);
        assert_eq!(r.payload_bytes, 300 + 400);
        assert_eq!(r.lost_bytes, 100);
        assert_eq!(r.duplicate_bytes, 50);
        assert_eq!((r.duplicates, r.reordered), (1, 2));
        assert_eq!(r.frames, 7 + 4);
        assert_eq!((r.received, r.lost), (7, 1));
        assert_eq!(s.other, 1);
    }
}
