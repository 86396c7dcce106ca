//! The split-virtqueue walker over a ring image the guest wrote: nothing
//! may panic, every accepted chain holds 1..=MAX_DESCS descriptors and
//! 1..=MAX_SEGS spans whose lengths add up, and reads, writes and copies
//! over it stay inside it.
//!
//! Input: 12 header bytes, then the image, written at guest address 0x1000.
//!   [0]      bit 0 INDIRECT_DESC, bit 1 EVENT_IDX, bit 2 dirty log on,
//!            bit 3 the receive direction first, bit 4 ring addresses below
//!   [1]      ring size 1 << (b % 5): 1..16
//!   [2..4]   next avail index (le),  [4..6] next used index
//!   [6..12]  desc, avail, used as offsets from 0x1000 (le u16; bit 4)
//! Guest memory: [0x1000, 0x2000) one region (default rings: desc 0x1000,
//! avail 0x1100, used 0x1140; tables and buffers after), [0x2000, 0x3000)
//! sixteen adjacent 256-byte regions (buffers crossing them split), and
//! [0x8000, 0x9000) after a hole.
#![no_main]

use dataplane::virtq::{copy_chain, Chain, Direction, Pop, RingFeatures, SplitQueue, MAX_DESCS, MAX_READ, MAX_SEGS};
use libfuzzer_sys::fuzz_target;
use pmd_bridge::guest_mem::{GuestMemory, Gpa};

const BASE: u64 = 0x1000;
const HDR: usize = 12;
/// Pages 0..8 of the dirty log (one byte): 0x8000 and above is untracked.
const LOG_BYTES: usize = 1;

fn layout() -> Vec<(u64, usize)> {
    let mut l = vec![(0x1000, 0x1000)];
    l.extend((0..16).map(|i| (0x2000 + 0x100 * i, 0x100)));
    l.push((0x8000, 0x1000));
    l
}

fn le16(d: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([d[i], d[i + 1]])
}

/// The checks every accepted chain must pass, whatever the ring held.
fn check_chain(c: &Chain, size: u16) {
    assert!(c.head < size, "head {} of a {size}-entry ring", c.head);
    assert!((1..=MAX_DESCS).contains(&c.descriptors()), "{} descriptors", c.descriptors());
    assert!((1..=MAX_SEGS).contains(&c.segments().len()), "{} spans", c.segments().len());
    let sum: u64 = c.segments().iter().map(|s| s.len() as u64).sum();
    assert_eq!(sum, c.len());
    assert!(c.segments().iter().all(|s| !s.is_empty()));
}

/// Whether every tracked page of `[gpa, gpa+len)` is marked dirty.
fn logged(mem: &GuestMemory, gpa: u64, len: u64) -> bool {
    (gpa / 4096..=(gpa + len - 1) / 4096).filter(|p| p / 8 < LOG_BYTES as u64).all(|p| mem.is_dirty(Gpa(p * 4096)))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < HDR {
        return;
    }
    let flags = data[0];
    let size = 1u16 << (data[1] % 5);
    let indices = (le16(data, 2), le16(data, 4));
    let rings = if flags & 16 != 0 {
        [6, 8, 10].map(|i| Gpa(BASE + u64::from(le16(data, i))))
    } else {
        [Gpa(0x1000), Gpa(0x1100), Gpa(0x1140)]
    };
    let features = RingFeatures { indirect: flags & 1 != 0, event_idx: flags & 2 != 0 };
    let log = flags & 4 != 0;
    let mem = if log { GuestMemory::new_owned_logged(&layout(), LOG_BYTES) } else { GuestMemory::new_owned(&layout()) };
    let image = &data[HDR..];
    // 0x1000..0x3000 is contiguous: the image fills it from the start.
    mem.write(Gpa(BASE), &image[..image.len().min(0x2000)]).expect("the image fits");

    let dirs = if flags & 8 != 0 {
        [Direction::DeviceWrites, Direction::DeviceReads]
    } else {
        [Direction::DeviceReads, Direction::DeviceWrites]
    };
    // The last transmit chain read, copied into each receive chain after.
    let mut src: Option<Chain> = None;
    let mut buf = Vec::new();
    for dir in dirs {
        // A fresh queue per direction, over the same rings: each direction
        // walks every chain the image offers.
        let Ok(mut q) = SplitQueue::with_features(size, rings[0], rings[1], rings[2], indices, &mem, features) else {
            return;
        };
        let _ = q.suppress_kicks(&mem);
        let mut c = Chain::default();
        // A write into the guest's buffers may move its avail index (its
        // buffers may overlap its rings): bound the walk anyway.
        for _ in 0..4 * usize::from(size) + 8 {
            q.prefetch_next(&mem, 4);
            let used_len = match q.pop(&mem, dir, &mut c) {
                Ok(Pop::Empty) | Err(_) => break,
                Ok(Pop::Bad { head, .. }) => {
                    let _ = q.add_used(&mem, head, 0);
                    continue;
                }
                Ok(Pop::Chain) => {
                    check_chain(&c, size);
                    let len = c.len();
                    let mut one = [0u8; 1];
                    assert!(c.read_at(&mem, len - 1, &mut one).is_ok(), "last byte of a {len}-byte chain");
                    assert!(c.read_at(&mem, len, &mut one).is_err(), "a byte past the chain");
                    assert!(c.read_at(&mem, u64::MAX, &mut one).is_err());
                    match dir {
                        Direction::DeviceReads => {
                            for skip in [0, 12, len] {
                                buf.clear();
                                let r = c.read(&mem, skip, &mut buf);
                                let want = len.saturating_sub(skip);
                                assert_eq!(r.is_ok(), want <= MAX_READ, "read from {skip} of {len}");
                                if r.is_ok() {
                                    assert_eq!(buf.len() as u64, want);
                                }
                            }
                            src = Some(c.clone());
                            0
                        }
                        Direction::DeviceWrites => {
                            let n = (len as usize).min(2048);
                            let bytes = vec![0xa5u8; n];
                            let w = c.write(&mem, &[&bytes[..n.min(12)], &bytes[n.min(12)..]]);
                            assert_eq!(w, Some(n as u32));
                            if len < 65536 {
                                assert_eq!(c.write(&mem, &[&vec![0u8; len as usize + 1]]), None, "more than the chain holds");
                            }
                            if log {
                                let mut left = n as u64;
                                for s in c.segments() {
                                    let k = left.min(s.len() as u64);
                                    if k > 0 {
                                        assert!(logged(&mem, s.gpa().0, k), "written bytes at {:#x} not in the dirty log", s.gpa().0);
                                    }
                                    left -= k;
                                }
                            }
                            if let Some(s) = &src {
                                let want = s.len().min(len);
                                let got = copy_chain(&mem, s, 0, &mem, &c, 0, s.len()).expect("spans of this memory");
                                assert_eq!(got, want);
                            }
                            n as u32
                        }
                    }
                }
            };
            let _ = q.add_used(&mem, c.head, used_len);
        }
        if q.publish(&mem).is_ok() && log {
            assert!(logged(&mem, rings[2].0 + 2, 2), "used->idx not in the dirty log");
        }
        let _ = q.needs_interrupt(&mem);
        let _ = q.guest_wants_interrupt(&mem);
        let _ = q.starved(&mem, 1500);
    }
});
