//! The virtio-net header validator on a guest's header and frame, and what
//! the copy-once datapath does with an accepted one (`copy_once/rx.rs`,
//! `deliver_from`): a partial checksum finished over the header copy, or
//! the TCP frame cut by `Segmenter` into a header buffer of `HEAD` bytes.
//! No panic; every segment's headers are `gso.hdr_len()` bytes, its
//! payload the next MSS of the frame, its IP length and checksum right.
//!
//! Input: [0] caps (bit 0 csum, 1 tso4, 2 tso6, 3 ecn), [1..11] the
//! header, [11..13] zero bytes to append (le u16: frames up to 64 KB from
//! small inputs), then the frame's first bytes.
#![no_main]

use dataplane::mbuf_offload;
use dataplane::offload::{complete_partial, validate, Caps, Checksum, GsoKind, NetHdr, Offload, Segmenter};
use libfuzzer_sys::fuzz_target;

/// `copy_once::HEAD`: the header copy a frame's checks and cuts work on.
const HEAD: usize = 160;

fn be16(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([b[at], b[at + 1]]))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 13 {
        return;
    }
    let bit = |i: u8| data[0] & (1 << i) != 0;
    let caps = Caps { csum: bit(0), tso4: bit(1), tso6: bit(2), ecn: bit(3) };
    let hdr = NetHdr::from_bytes(data[1..11].try_into().expect("10 bytes"));
    let pad = usize::from(u16::from_le_bytes([data[11], data[12]]));
    let mut frame = data[13..].to_vec();
    frame.resize(frame.len() + pad, 0);
    let frame_len = frame.len();
    let head = &frame[..frame_len.min(HEAD)];

    let Ok(off) = validate(&hdr, head, frame_len, caps) else { return };
    let _ = mbuf_offload::to_mbuf(&off, head);
    let _ = (off.shifted(4), off.shifted(-4), off.fits(caps));
    // The header a receiving guest gets must itself validate as the same.
    let back = validate(&off.to_hdr(), head, frame_len, Caps::ALL);
    assert_eq!(back, Ok(off), "to_hdr {:?} of {off:?}", off.to_hdr());

    let Some(gso) = off.gso else {
        if let Some(csum) = off.csum {
            // deliver_from's fallback: finish the sum over the copy.
            let mut copy = head.to_vec();
            let mut rest = Checksum::new();
            rest.add(&frame[head.len()..]);
            assert!(complete_partial(&mut copy, csum, &rest), "validated {csum:?} outside {} header bytes", head.len());
        }
        return;
    };
    assert_eq!(off.csum, Some(gso.csum()), "a gso without its checksum");
    let hl = gso.hdr_len();
    assert!(hl <= HEAD && hl <= head.len(), "headers of {hl} bytes");
    let seg = Segmenter::new(&gso, head, frame_len);
    assert!(seg.count() > 0, "a validated {gso:?} cuts into no segments");
    let mss = usize::from(gso.mss);
    let (l2, l3, l4) = (usize::from(gso.l2_len), usize::from(gso.l3_len), usize::from(gso.l4_len));
    let mut next = hl;
    for k in 0..seg.count() {
        let mut partial = [0u8; HEAD];
        let range = seg.segment(k, &mut partial[..hl], true);
        assert_eq!(range.start, next, "segment {k} of {gso:?}");
        assert!(range.end <= frame_len && range.len() <= mss, "segment {k}: {range:?} of {frame_len}");
        assert!(!range.is_empty() || frame_len == hl, "an empty segment {k}");
        next = range.end;
        let ip_len = match gso.kind {
            GsoKind::Tcp4 => be16(&partial, l2 + 2),
            GsoKind::Tcp6 => be16(&partial, l2 + 4) + 40,
        };
        assert_eq!(ip_len, l3 + l4 + range.len(), "segment {k}: IP length");
        let mut sum = Checksum::new();
        sum.add(&frame[range.clone()]);
        assert!(complete_partial(&mut partial[..hl], gso.csum(), &sum));
        let mut full = [0u8; HEAD];
        assert_eq!(seg.segment(k, &mut full[..hl], false), range);
        assert!(seg.finish_tcp(&mut full[..hl], &sum));
        assert_eq!(partial[..hl], full[..hl], "segment {k}: partial then completed, or summed whole");
        assert_eq!(seg.segment(k, &mut full[..hl - 1], true), 0..0, "a short buffer is left alone");
    }
    assert_eq!(next, frame_len, "the segments cover the payload");
    assert_eq!(seg.segment(seg.count(), &mut [0u8; HEAD], true), 0..0);
    let _ = Offload { gso: None, ..off }.to_hdr();
});
