//! Internet checksums (RFC 1071), for finishing what a guest left partial
//! and for the segments the switch cuts itself.
//!
//! A frame's bytes are rarely in one place (headers in a private copy, the
//! payload in guest memory or an mbuf), so the accumulator takes pieces of
//! any length, in order, and pieces summed apart can be joined later.
use super::hdr::Csum;

/// A running ones'-complement sum of bytes taken in order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checksum {
    /// Big-endian 64-bit words added with end-around carry: modulo
    /// 2^64 - 1, which 2^16 - 1 divides, so folding gives the 16-bit sum.
    acc: u64,
    /// An odd number of bytes so far: the next byte is a word's low byte.
    odd: bool,
}

impl Checksum {
    pub const fn new() -> Checksum {
        Checksum { acc: 0, odd: false }
    }

    /// Adds the next `bytes` of the summed data.
    #[inline]
    pub fn add(&mut self, bytes: &[u8]) {
        self.join(sum_words(bytes), bytes.len() % 2 == 1);
    }

    /// Adds the next `len` bytes, given as their 8-byte words summed (the
    /// last padded with zeros).
    #[inline]
    pub fn append_words(&mut self, words: WordSum, len: usize) {
        self.join(add_carry(words.0, words.1), len % 2 == 1);
    }

    /// Adds the bytes `other` summed, as if they came next.
    #[inline]
    pub fn append(&mut self, other: &Checksum) {
        self.join(other.acc, other.odd);
    }

    fn join(&mut self, sum: u64, odd_len: bool) {
        // Data starting at an odd offset has every byte in the other half of
        // its word: multiplying by 2^8 (modulo 2^16 - 1) swaps the halves.
        let sum = if self.odd { sum.rotate_left(8) } else { sum };
        self.acc = add_carry(self.acc, sum);
        self.odd ^= odd_len;
    }

    /// The 16-bit ones'-complement sum (not complemented). Zero only if
    /// every byte added was zero.
    #[inline]
    pub fn fold(&self) -> u16 {
        let mut s = self.acc;
        while s > 0xffff {
            s = (s >> 16) + (s & 0xffff);
        }
        s as u16
    }

    /// The value for a checksum field: the complement of the fold, with 0
    /// sent as 0xffff (equal in ones' complement, and UDP reads 0 as "no
    /// checksum": Linux's skb_checksum_help does the same).
    #[inline]
    pub fn field(&self) -> u16 {
        match !self.fold() {
            0 => 0xffff,
            v => v,
        }
    }
}

/// A sum over 8-byte words taken one at a time (from guest memory, say),
/// for `Checksum::append_words`: two carry chains, each word going to the
/// other one than the word before, so that they run in parallel.
#[derive(Clone, Copy, Debug, Default)]
pub struct WordSum(u64, u64);

impl WordSum {
    #[inline]
    pub fn push(self, w: [u8; 8]) -> WordSum {
        WordSum(self.1, add_carry(self.0, u64::from_be_bytes(w)))
    }
}

#[inline]
fn add_carry(a: u64, b: u64) -> u64 {
    let (s, carry) = a.overflowing_add(b);
    // No overflow: with a carry, s is at most 2^64 - 2.
    s + u64::from(carry)
}

/// The sum of `bytes` from an even offset, as 64-bit words; a short last
/// word is padded with zeros, as RFC 1071 pads an odd last byte.
#[inline]
fn sum_words(bytes: &[u8]) -> u64 {
    let mut blocks = bytes.chunks_exact(16);
    // Two accumulators: the carry chains of alternate words run in parallel.
    let (mut a, mut b) = (0u64, 0u64);
    for block in blocks.by_ref() {
        let (x, y) = block.split_at(8);
        a = add_carry(a, padded(x));
        b = add_carry(b, padded(y));
    }
    let rest = blocks.remainder();
    let (x, y) = rest.split_at(rest.len().min(8));
    add_carry(add_carry(a, b), add_carry(padded(x), padded(y)))
}

/// Up to 8 bytes as a big-endian word, zero-padded on the right.
#[inline]
fn padded(bytes: &[u8]) -> u64 {
    match bytes.try_into() {
        Ok(w) => u64::from_be_bytes(w),
        // In fixed-size pieces: a copy of a length known only at run time
        // is a call to memcpy, which cost more than a 20-byte header's sum.
        Err(_) => {
            let mut w = [0u8; 8];
            let mut at = 0;
            for piece in [4, 2, 1] {
                if let Some(b) = bytes.get(at..at + piece) {
                    w[at..at + piece].copy_from_slice(b);
                    at += piece;
                }
            }
            u64::from_be_bytes(w)
        }
    }
}

/// Stores the checksum for `csum` at `start + offset` in `head`, given
/// `sum`: the sum of the frame's bytes from `start` to its end, the field's
/// own bytes included. False, and nothing written, if the field is not in
/// `head`.
#[must_use]
pub fn finish(head: &mut [u8], csum: Csum, sum: &Checksum) -> bool {
    let at = usize::from(csum.start) + usize::from(csum.offset);
    match head.get_mut(at..at + 2) {
        Some(field) => {
            field.copy_from_slice(&sum.field().to_be_bytes());
            true
        }
        None => false,
    }
}

/// Finishes a NEEDS_CSUM checksum in software (VIRTIO 1.1 5.1.6.2.1: the
/// field holds the pseudo-header's partial sum, and everything from
/// `csum.start` to the end of the frame is summed into it). `head` is the
/// frame's first bytes, field included; `rest` the sum of the bytes after
/// them (`Checksum::new()` if `head` is the whole frame). False, and
/// nothing written, if `head` does not hold the field.
#[must_use]
pub fn complete_partial(head: &mut [u8], csum: Csum, rest: &Checksum) -> bool {
    let Some(from_start) = head.get(usize::from(csum.start)..) else {
        return false;
    };
    let mut sum = Checksum::new();
    sum.add(from_start);
    sum.append(rest);
    finish(head, csum, &sum)
}

/// The header checksum for an IPv4 header (`hdr`: all IHL * 4 bytes),
/// whatever its checksum field holds now.
pub fn ipv4_header_checksum(hdr: &[u8]) -> u16 {
    let mut sum = Checksum::new();
    sum.add(hdr.get(..IPV4_CSUM).unwrap_or(hdr));
    sum.add(hdr.get(IPV4_CSUM + 2..).unwrap_or(&[]));
    !sum.fold()
}

/// Where an IPv4 header's checksum field is.
pub const IPV4_CSUM: usize = 10;

/// The TCP/UDP pseudo-header of IPv4 (RFC 793 3.1): `l4_len` counts the
/// transport header and payload.
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: u16) -> Checksum {
    let mut sum = Checksum::new();
    sum.add(&src);
    sum.add(&dst);
    sum.add(&[0, proto]);
    sum.add(&l4_len.to_be_bytes());
    sum
}

/// The upper-layer pseudo-header of IPv6 (RFC 8200 8.1).
pub fn pseudo_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, l4_len: u32) -> Checksum {
    let mut sum = Checksum::new();
    sum.add(src);
    sum.add(dst);
    sum.add(&l4_len.to_be_bytes());
    sum.add(&[0, 0, 0, next_header]);
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::testutil::{random_bytes, Rng};

    /// RFC 1071 as written: 16-bit big-endian words, the odd byte padded.
    fn naive(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for pair in data.chunks(2) {
            let w = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
            sum += u32::from(w);
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    fn one_piece(data: &[u8]) -> u16 {
        let mut c = Checksum::new();
        c.add(data);
        c.fold()
    }

    #[test]
    fn matches_a_naive_sum() {
        for len in (0..300).chain([1499, 1500, 9000, 65535, 65536]) {
            let data = random_bytes(len, len as u64);
            assert_eq!(one_piece(&data), naive(&data), "{len} bytes");
        }
        assert_eq!(one_piece(&[]), 0);
        assert_eq!(one_piece(&[0xff; 65536]), 0xffff, "carries all the way round");
        assert_eq!(one_piece(&[0x12]), 0x1200, "an odd byte is a high byte");
    }

    #[test]
    fn pieces_of_odd_lengths_sum_as_one_as_bytes_or_as_words() {
        let mut rng = Rng(0x5eed);
        for round in 0..500 {
            let data = random_bytes(rng.below(3000), round);
            let (mut c, mut w) = (Checksum::new(), Checksum::new());
            let mut rest = &data[..];
            while !rest.is_empty() {
                let (piece, tail) = rest.split_at(rng.below(rest.len().min(40)) + 1);
                c.add(piece);
                let words = piece.chunks(8).fold(WordSum::default(), |acc, word| {
                    let mut padded = [0u8; 8];
                    padded[..word.len()].copy_from_slice(word);
                    acc.push(padded)
                });
                w.append_words(words, piece.len());
                rest = tail;
            }
            assert_eq!(c.fold(), naive(&data), "round {round}");
            assert_eq!(w.fold(), naive(&data), "round {round}, as words");
        }
    }

    #[test]
    fn sums_taken_apart_append_in_order() {
        let mut rng = Rng(77);
        for round in 0..300 {
            let data = random_bytes(rng.below(2000) + 1, round);
            let cut = rng.below(data.len());
            let (mut a, mut b) = (Checksum::new(), Checksum::new());
            a.add(&data[..cut]);
            b.add(&data[cut..]);
            a.append(&b);
            assert_eq!(a.fold(), naive(&data), "cut at {cut} of {}", data.len());
        }
    }

    #[test]
    fn a_field_sums_the_data_to_all_ones() {
        let mut data = random_bytes(101, 9);
        data[40..42].fill(0);
        let csum = Csum { start: 20, offset: 20 };
        let mut rest = Checksum::new();
        rest.add(&data[64..]);
        assert!(complete_partial(&mut data[..64], csum, &rest));
        assert_eq!(naive(&data[20..]), 0xffff);
        assert!(!complete_partial(&mut data[..41], csum, &rest), "the field is not in the head");
        assert!(!complete_partial(&mut data[..10], csum, &rest), "nor is the start");
        assert!(!finish(&mut [0; 4], Csum { start: u16::MAX, offset: u16::MAX }, &rest));
    }

    #[test]
    fn zero_is_sent_as_all_ones() {
        let mut data = [0xff, 0xff, 0, 0];
        assert!(complete_partial(&mut data, Csum { start: 0, offset: 2 }, &Checksum::new()));
        assert_eq!(data, [0xff; 4]);
    }

    #[test]
    fn ipv4_header_checksum_of_a_known_header() {
        // RFC 1071's worked example is for data; this header is from a
        // capture (checksum 0xb861).
        let mut h = [0x45, 0, 0, 0x73, 0, 0, 0x40, 0, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0, 1, 0xc0, 0xa8, 0, 0xc7];
        assert_eq!(ipv4_header_checksum(&h), 0xb861);
        h[10..12].fill(0);
        assert_eq!(ipv4_header_checksum(&h), 0xb861, "whatever the field holds");
        assert_eq!(ipv4_header_checksum(&h[..3]), !naive(&h[..3]), "short input: no panic");
    }

    #[test]
    fn pseudo_headers_are_their_fields_summed() {
        let v4 = [10, 0, 0, 1, 10, 0, 0, 2, 0, 6, 0x05, 0xdc];
        assert_eq!(pseudo_v4([10, 0, 0, 1], [10, 0, 0, 2], 6, 1500).fold(), naive(&v4));
        let (s, d) = ([0xfd; 16], [0x20; 16]);
        let mut v6 = [s, d].concat();
        v6.extend([0, 1, 0, 0, 0, 0, 0, 6]);
        assert_eq!(pseudo_v6(&s, &d, 6, 65536).fold(), naive(&v6));
    }
}
