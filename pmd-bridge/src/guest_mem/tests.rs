use super::*;

fn mem() -> GuestMemory {
    // Two regions with a hole between them, as guests have.
    GuestMemory::new_owned(&[(0x1000, 0x1000), (0x2000, 0x1000), (0x10000, 0x100)])
}

#[test]
fn reads_and_writes_split_across_adjacent_regions() {
    let m = mem();
    let data: Vec<u8> = (0..64).collect();
    m.write(Gpa(0x1fe0), &data).unwrap();
    let mut back = vec![0u8; 64];
    m.read(Gpa(0x1fe0), &mut back).unwrap();
    assert_eq!(back, data);
    assert!(m.contains(Gpa(0x1000), 0x2000));
}

#[test]
fn loads_read_the_same_bytes_aligned_or_not() {
    let m = mem();
    m.write(Gpa(0x1000), &(0..64).collect::<Vec<u8>>()).unwrap();
    let s = m.span(Gpa(0x1000), 64).unwrap();
    for off in 0..8 {
        let want = |n: usize| (off as u8..(off + n) as u8).collect::<Vec<u8>>();
        assert_eq!(m.load::<16>(&s, off).unwrap().to_vec(), want(16));
        let words = m.load_words::<2>(&s, off).unwrap();
        assert_eq!([words[0].to_le_bytes(), words[1].to_le_bytes()].concat(), want(16));
        assert_eq!((m.load::<4>(&s, off).unwrap().to_vec(), m.load::<2>(&s, off).unwrap().to_vec()), (want(4), want(2)));
    }
}

/// Span copies of every length up to 140 (those from 16 to 128 are two
/// overlapping pieces, see `small_copy`), at every alignment: each reads
/// and writes its bytes and no others.
#[test]
fn span_copies_of_any_length_move_their_bytes_and_no_others() {
    let m = mem();
    let s = m.span(Gpa(0x1000), 0x200).unwrap();
    let data: Vec<u8> = (1..=150).collect();
    for n in 0..=140 {
        for off in 0..8 {
            m.write(Gpa(0x1000), &[0xee; 0x200]).unwrap();
            m.write_span(&s, off, &data[..n]).unwrap();
            let mut all = vec![0u8; 0x200];
            m.read(Gpa(0x1000), &mut all).unwrap();
            assert_eq!(&all[off..off + n], &data[..n], "write {n} at {off}");
            assert!(all[..off].iter().chain(&all[off + n..]).all(|&b| b == 0xee), "write {n} at {off}: bytes outside");
            let mut back = vec![0xeeu8; n + 2];
            m.read_span(&s, off, &mut back[1..=n]).unwrap();
            assert_eq!((back[0], &back[1..=n], back[n + 1]), (0xee, &data[..n], 0xee), "read {n} at {off}");
        }
    }
}

#[test]
fn stores_write_their_bytes_and_no_others_aligned_or_not() {
    let m = mem();
    let s = m.span(Gpa(0x1000), 32).unwrap();
    for off in 0..8 {
        m.write(Gpa(0x1000), &[0xee; 32]).unwrap();
        m.store(&s, off, std::array::from_fn::<u8, 12, _>(|i| i as u8)).unwrap();
        m.store(&s, off + 16, [7u8; 7]).unwrap();
        let mut want = [0xee; 32];
        want[off..off + 12].copy_from_slice(&std::array::from_fn::<u8, 12, _>(|i| i as u8));
        want[off + 16..off + 23].fill(7);
        let mut got = [0; 32];
        m.read_span(&s, 0, &mut got).unwrap();
        assert_eq!(got, want, "at {off}");
    }
}

#[test]
fn fixed_size_copies_stay_inside_their_span() {
    let m = mem();
    let s = m.span(Gpa(0x1000), 80).unwrap();
    m.write_span(&s, 12, &[9u8; 64]).unwrap();
    let mut got = [0u8; 76];
    m.read_span(&s, 0, &mut got).unwrap();
    assert_eq!((got[..12].to_vec(), got[12..].to_vec()), (vec![0; 12], vec![9; 64]));
    assert!(m.write_span(&s, 17, &[1u8; 64]).is_err() && m.read_span(&s, 17, &mut [0u8; 64]).is_err(), "past the span's end");
    let mut after = [0u8; 4];
    m.read_span(&s, 76, &mut after).unwrap();
    assert_eq!(after, [0; 4], "a refused write writes nothing");
}

#[test]
fn nothing_outside_guest_memory_is_touched() {
    let m = mem();
    assert!(m.write(Gpa(0x2ff0), &[1; 32]).is_err(), "runs into the hole");
    let mut b = [7u8; 16];
    m.read(Gpa(0x2ff0), &mut b).unwrap();
    assert_eq!(b, [0; 16], "a failed write writes nothing");
    assert!(m.read(Gpa(0x500), &mut b).is_err());
    assert!(m.read(Gpa(u64::MAX - 4), &mut b).is_err(), "no overflow");
    assert!(!m.contains(Gpa(0x10000), 0x101));
    let misaligned = m.span(Gpa(0x1001), 2).unwrap();
    assert!(m.span_u16_acquire(&misaligned, 0).is_err(), "misaligned index");
}

#[test]
fn every_write_marks_its_pages_while_logging() {
    let m = GuestMemory::new_owned_logged(&[(0x1000, 0x3000)], 1);
    let plain = mem();
    plain.write(Gpa(0x1000), &[1]).unwrap();
    assert!(!plain.logging() && !plain.is_dirty(Gpa(0x1000)), "no log, nothing marked");
    assert!(m.logging());
    m.write(Gpa(0x1ffe), &[1; 4]).unwrap();
    assert!(m.is_dirty(Gpa(0x1000)) && m.is_dirty(Gpa(0x2000)), "a write across a page boundary marks both");
    assert!(!m.is_dirty(Gpa(0x3000)));
    let s = m.span(Gpa(0x3000), 0x10).unwrap();
    m.store(&s, 8, [0u8; 8]).unwrap();
    assert!(m.is_dirty(Gpa(0x3000)));
    let mut reads = [0u8; 4];
    m.read(Gpa(0x1000), &mut reads).unwrap();
    let other = GuestMemory::new_owned_logged(&[(0x1000, 0x3000)], 1);
    let dst = other.span(Gpa(0x1000), 4).unwrap();
    GuestMemory::copy_span(&m, &s, 0, &other, &dst, 0, 4).unwrap();
    assert!(other.is_dirty(Gpa(0x1000)), "the destination of a guest-to-guest copy");
    assert!(!other.is_dirty(Gpa(0x2000)));
}

#[test]
fn copy_between_guests_and_ring_indices() {
    let (a, b) = (mem(), mem());
    a.write(Gpa(0x1ff8), b"abcdefghijklmnop").unwrap();
    let mut src = Vec::new();
    a.translate(Gpa(0x1ff8), 16, |s| src.push(s)).unwrap();
    assert_eq!(src.iter().map(|s| (s.gpa(), s.len())).collect::<Vec<_>>(), [(Gpa(0x1ff8), 8), (Gpa(0x2000), 8)], "split at the region edge");
    let dst = b.span(Gpa(0x10010), 16).unwrap();
    GuestMemory::copy_span(&a, &src[0], 0, &b, &dst, 0, 8).unwrap();
    GuestMemory::copy_span(&a, &src[1], 0, &b, &dst, 8, 8).unwrap();
    let mut out = [0u8; 16];
    b.read(Gpa(0x10010), &mut out).unwrap();
    assert_eq!(&out, b"abcdefghijklmnop");
    assert!(GuestMemory::copy_span(&a, &src[0], 0, &b, &dst, 9, 8).is_err(), "past the span's end");
    assert!(GuestMemory::copy_span(&b, &src[0], 0, &b, &dst, 0, 8).is_err(), "a span of another memory");
    assert!(b.span(Gpa(0x100f8), 16).is_none(), "past the region");
    b.store_u16_release(Gpa(0x2002), 513).unwrap();
    let idx = b.span(Gpa(0x2000), 4).unwrap();
    assert_eq!(b.span_u16_acquire(&idx, 2).unwrap(), 513);
    assert_eq!(b.read_u16(Gpa(0x2002)).unwrap(), 513);
    b.span_u16_release(&idx, 2, 7).unwrap();
    assert_eq!(u16::from_le_bytes(b.load(&idx, 2).unwrap()), 7);
}

/// `mem()` holding the bytes 0, 1, 2, ... from 0x1000.
fn counted() -> GuestMemory {
    let m = mem();
    m.write(Gpa(0x1000), &(0..64).collect::<Vec<u8>>()).unwrap();
    m
}

/// The 8 bytes from `first` on, as a little-endian word of `counted`.
fn word_from(first: u8) -> [u64; 1] {
    [u64::from_le_bytes(std::array::from_fn(|i| first + i as u8))]
}

#[test]
fn a_reader_reads_what_span_loads_read_and_nothing_outside() {
    let m = counted();
    let s = m.span(Gpa(0x1000), 32).unwrap();
    let r = m.reader(&s, 8).unwrap();
    for off in (0..32).step_by(2) {
        assert_eq!(r.u16_at(off), (off + 2 <= 32).then(|| u16::from_le_bytes(m.load(&s, off).unwrap())));
        assert_eq!(r.u16_acquire_at(off), r.u16_at(off));
    }
    assert_eq!(r.words_at::<2>(16), Some(m.load_words::<2>(&s, 16).unwrap()));
    assert_eq!((r.u16_at(31), r.u16_at(32), r.u16_at(usize::MAX - 1)), (None, None, None), "misaligned, past the end, overflowing");
    assert_eq!((r.u16_acquire_at(31), r.u16_acquire_at(32), r.u16_acquire_at(usize::MAX - 1)), (None, None, None));
    assert_eq!((r.words_at::<2>(4), r.words_at::<2>(24), r.words_at::<1>(usize::MAX - 7)), (None, None, None));
    // A span that starts off the alignment asked, or is another memory's, gives none.
    let odd = m.span(Gpa(0x1002), 16).unwrap();
    assert!(m.reader(&odd, 2).is_some() && m.reader(&odd, 8).is_none());
    assert!(mem().reader(&s, 2).is_none(), "a span of another memory");
}

#[test]
fn regression_a_reader_of_any_alignment_reads_only_aligned_words() {
    // Readers of spans starting at odd and 2-aligned addresses: their reads
    // are aligned where the address is (once they trusted the span's start).
    let m = counted();
    let r = m.reader(&m.span(Gpa(0x1001), 32).unwrap(), 1).unwrap();
    assert_eq!((r.u16_at(0), r.u16_at(1)), (None, Some(u16::from_le_bytes([2, 3]))));
    assert_eq!((r.u16_acquire_at(0), r.u16_acquire_at(1)), (None, Some(u16::from_le_bytes([2, 3]))));
    assert_eq!((r.words_at::<1>(0), r.words_at::<1>(7)), (None, Some(word_from(8))));
    let r = m.reader(&m.span(Gpa(0x1002), 16).unwrap(), 2).unwrap();
    assert_eq!((r.words_at::<1>(0), r.words_at::<1>(6)), (None, Some(word_from(8))));
}

#[test]
fn a_run_of_flags_counts_what_it_keeps_and_reads_nothing_outside() {
    // A 16-entry ring of 16-byte slots whose u16 at 14 is 1 in slots 0..11.
    let m = mem();
    let s = m.span(Gpa(0x1000), 256).unwrap();
    for slot in 0..16 {
        m.store(&s, slot * 16 + 14, u16::from(slot < 11).to_le_bytes()).unwrap();
    }
    let r = m.reader(&s, 8).unwrap();
    let kept = |f: u16| f == 1;
    // Every count from every start.
    for first in 0..16 {
        for n in 0..=16 - first {
            let want = (first..first + n).take_while(|&k| k < 11).count();
            assert_eq!(r.u16_acquire_run(first * 16 + 14, 16, n, kept), Some(want), "from slot {first}, {n} slots");
        }
    }
    assert_eq!(r.u16_acquire_run(14, 16, 17, kept), None, "one slot past the span");
    assert_eq!(r.u16_acquire_run(15, 16, 1, kept), None, "misaligned");
    assert_eq!(r.u16_acquire_run(14, 15, 2, kept), None, "an odd stride");
    assert_eq!(r.u16_acquire_run(14, usize::MAX / 2, 3, kept), None, "overflowing");
    assert_eq!(r.u16_acquire_run(usize::MAX, 16, 0, kept), Some(0), "nothing asked, nothing read");
}

#[test]
fn a_writer_stores_what_span_stores_store_marks_them_and_nothing_outside() {
    let m = GuestMemory::new_owned_logged(&[(0x1000, 0x3000)], 1);
    let s = m.span(Gpa(0x2ff0), 0x20).unwrap();
    let w = m.writer(&s).unwrap();
    assert!(w.store(8, 0x0807_0605_0403_0201u64.to_le_bytes()) && w.u16_release_at(0x1e, 0x0a09));
    assert_eq!(m.load_words::<1>(&s, 8).unwrap(), [0x0807_0605_0403_0201]);
    assert_eq!(m.span_u16_acquire(&s, 0x1e).unwrap(), 0x0a09);
    assert!(m.is_dirty(Gpa(0x2000)) && m.is_dirty(Gpa(0x3000)), "each store's page");
    assert!(!w.store(0x19, [0u8; 8]) && !w.store(usize::MAX - 2, [0u8; 8]), "past the end, overflowing");
    assert!(!w.u16_release_at(0x20, 1) && !w.u16_release_at(0x1d, 1), "past the end, misaligned");
    assert_eq!(m.span_u16_acquire(&s, 0x1c).unwrap(), 0, "nothing stored by a refused store");
    assert!(mem().writer(&s).is_none(), "a span of another memory");
}
