//! The sink: per-stream sequence accounting (loss, reordering, duplicates)
//! and a latency histogram over TSC cycles.
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

#[derive(Default)]
pub struct Sink {
    streams: Vec<Stream>,
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
        let received: u64 = self.streams.iter().map(|s| s.received).sum();
        let total_sent: u64 = sent.iter().sum();
        SinkReport {
            received,
            lost: total_sent.saturating_sub(received),
            reordered: self.streams.iter().map(|s| s.reordered).sum(),
            duplicates: self.streams.iter().map(|s| s.duplicates).sum(),
            latency_p50_ns: ns(self.latency.quantile(0.5)),
            latency_p99_ns: ns(self.latency.quantile(0.99)),
            latency_p999_ns: ns(self.latency.quantile(0.999)),
        }
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
}
