//! Packet capture, the control side: sessions, and the pcap or pcapng
//! stream they become on the control socket.
//!
//! `vswitchctl capture` sends `CaptureStart`: the control loop makes a
//! `Session` (a ring per PMD thread, in every plan as a tap) and leaves it
//! in the `Handoff` under its id; the control socket's thread serving that
//! client takes it and becomes the writer: it drains the rings every few
//! milliseconds, merges their frames by time, and sends them as a pcap
//! or pcapng file in chunks (`u32` length, little-endian, then the bytes;
//! a zero length ends it), then a JSON line with the counts. The capture ends at
//! `count` frames, at its timeout, when its port is deleted, or when the
//! client goes away; the session is then stopped (`CaptureStop`), which
//! takes the taps out of the plans.
use std::collections::HashMap;
use std::io::{self, BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dataplane::capture::{CaptureRing, Record, Tap, RING_WORDS};
use pmd_bridge::cycles::{tsc, tsc_hz};
use serde::{Deserialize, Serialize};

use crate::protocol::{CaptureDirection, CaptureFormat};

/// How often the writer drains the rings: a ring holds thousands of
/// full-size frames, many milliseconds at line rate.
const DRAIN_EVERY: Duration = Duration::from_millis(5);
/// pcap's link type for Ethernet.
const LINKTYPE_ETHERNET: u32 = 1;

/// One capture.
pub struct Session {
    pub id: u64,
    pub port: String,
    /// The port's slot and generation: no other port's frames are taken.
    pub slot: u16,
    pub gen: u16,
    pub direction: CaptureDirection,
    pub snaplen: u32,
    /// One per PMD thread, by thread index.
    pub rings: Vec<Arc<CaptureRing>>,
    /// Its port is gone: the writer stops.
    pub ended: AtomicBool,
    /// A TSC value and the wall-clock time it stood for, and TSC ticks per
    /// second: the timestamps' time base.
    tsc0: u64,
    wall0: Duration,
    hz: u64,
}

impl Session {
    pub fn new(id: u64, port: &str, (slot, gen): (u16, u16), direction: CaptureDirection, snaplen: u32, threads: usize) -> Session {
        Session {
            id,
            port: port.to_string(),
            slot,
            gen,
            direction,
            snaplen,
            rings: (0..threads).map(|_| Arc::new(CaptureRing::new(RING_WORDS))).collect(),
            ended: AtomicBool::new(false),
            tsc0: tsc(),
            wall0: SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default(),
            hz: tsc_hz().max(1),
        }
    }

    /// Thread `i`'s tap.
    pub fn tap(&self, i: usize) -> Tap {
        let (rx, tx) = match self.direction {
            CaptureDirection::Rx => (true, false),
            CaptureDirection::Tx => (false, true),
            CaptureDirection::Both => (true, true),
        };
        Tap { slot: self.slot, rx, tx, snaplen: self.snaplen, ring: Arc::clone(&self.rings[i]) }
    }

    /// Frames the threads took, and those their rings had no room for.
    pub fn counts(&self) -> (u64, u64) {
        self.rings.iter().fold((0, 0), |(c, d), r| (c + r.captured.load(Relaxed), d + r.dropped.load(Relaxed)))
    }

    fn wall(&self, t: u64) -> Duration {
        let since = (u128::from(t.wrapping_sub(self.tsc0)) * 1_000_000_000 / u128::from(self.hz)) as u64;
        self.wall0 + Duration::from_nanos(since)
    }
}

/// Sessions on their way from the control loop to the thread that
/// writes them.
#[derive(Clone, Default)]
pub struct Handoff(Arc<Mutex<HashMap<u64, Arc<Session>>>>);

impl Handoff {
    pub fn put(&self, s: Arc<Session>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(s.id, s);
    }

    pub fn take(&self, id: u64) -> Option<Arc<Session>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&id)
    }
}

/// The JSON line after the stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureSummary {
    pub port: String,
    /// Frames written to the file.
    pub captured: u64,
    /// Frames the PMD threads could not put in a full ring.
    pub dropped: u64,
}

/// What a file begins with: pcap's header (microsecond timestamps), or a
/// pcapng section header and one interface, the port, by name, with
/// nanosecond timestamps.
fn file_header(format: CaptureFormat, s: &Session) -> Vec<u8> {
    let mut h = Vec::new();
    match format {
        CaptureFormat::Pcap => {
            for w in [0xa1b2_c3d4u32.to_le_bytes(), [2, 0, 4, 0], [0; 4], [0; 4], s.snaplen.to_le_bytes(), LINKTYPE_ETHERNET.to_le_bytes()] {
                h.extend_from_slice(&w);
            }
        }
        CaptureFormat::Pcapng => {
            // Byte-order magic, version 1.0, section length unknown (-1).
            let shb = [&0x1a2b_3c4du32.to_le_bytes()[..], &[1, 0, 0, 0], &u64::MAX.to_le_bytes()].concat();
            pcapng_block(&mut h, 0x0a0d_0d0a, &shb, &[(4, b"vswitchd")]);
            let idb = [&(LINKTYPE_ETHERNET as u16).to_le_bytes()[..], &[0, 0], &s.snaplen.to_le_bytes()].concat();
            pcapng_block(&mut h, 1, &idb, &[(2, s.port.as_bytes()), (9, &[9])]);
        }
    }
    h
}

/// One frame: a pcap record, or a pcapng enhanced packet block on the
/// port's interface, flagged inbound (the port received it) or outbound.
fn file_record(format: CaptureFormat, out: &mut Vec<u8>, at: Duration, r: &Record) {
    match format {
        CaptureFormat::Pcap => {
            for w in [at.as_secs() as u32, at.subsec_micros(), r.data.len() as u32, r.orig_len] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(r.data);
        }
        CaptureFormat::Pcapng => {
            let ns = at.as_nanos() as u64;
            let mut epb = Vec::with_capacity(20 + r.data.len() + 3);
            for w in [0, (ns >> 32) as u32, ns as u32, r.data.len() as u32, r.orig_len] {
                epb.extend_from_slice(&w.to_le_bytes());
            }
            epb.extend_from_slice(r.data);
            epb.resize(epb.len().next_multiple_of(4), 0);
            let flags: u32 = if r.tx { 2 } else { 1 };
            pcapng_block(out, 6, &epb, &[(2, &flags.to_le_bytes())]);
        }
    }
}

/// A pcapng block: its type, total length, `body` (a multiple of 4
/// bytes), the options (code, value), each padded to 4 bytes, the end of
/// options, and the total length again.
fn pcapng_block(out: &mut Vec<u8>, kind: u32, body: &[u8], options: &[(u16, &[u8])]) {
    let opts: usize = options.iter().map(|(_, v)| 4 + v.len().next_multiple_of(4)).sum::<usize>() + 4;
    let total = (12 + body.len() + opts) as u32;
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&total.to_le_bytes());
    out.extend_from_slice(body);
    for (code, value) in options {
        out.extend_from_slice(&code.to_le_bytes());
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value);
        out.extend(std::iter::repeat_n(0, value.len().next_multiple_of(4) - value.len()));
    }
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&total.to_le_bytes());
}

fn chunk(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    out.write_all(&(bytes.len() as u32).to_le_bytes())?;
    out.write_all(bytes)
}

/// Writes `s` as a file of `format` to `out` until `count` frames,
/// `deadline`, the session's end, or until `wait` (which waits up to the
/// time given) says the client is gone; returns the frames written.
pub fn stream(
    s: &Session,
    format: CaptureFormat,
    out: &mut impl Write,
    count: Option<u64>,
    deadline: Option<Instant>,
    mut wait: impl FnMut(Duration) -> bool,
) -> io::Result<u64> {
    let mut buf = file_header(format, s);
    let (mut written, mut scratch, mut batch) = (0u64, Vec::new(), Vec::new());
    loop {
        for r in &s.rings {
            r.drain(&mut scratch, |rec| batch.push((rec.tsc, rec.orig_len, rec.tx, rec.data.to_vec())));
        }
        // Each ring is in order; frames of several threads are merged.
        batch.sort_by_key(|b| b.0);
        for (t, orig_len, tx, data) in batch.drain(..) {
            if count.is_some_and(|c| written >= c) {
                break;
            }
            file_record(format, &mut buf, s.wall(t), &Record { tsc: t, tx, orig_len, data: &data });
            written += 1;
        }
        if !buf.is_empty() {
            chunk(out, &buf)?;
            out.flush()?;
            buf.clear();
        }
        let done = count.is_some_and(|c| written >= c) || deadline.is_some_and(|d| Instant::now() >= d) || s.ended.load(Relaxed);
        if done || !wait(DRAIN_EVERY) {
            return Ok(written);
        }
    }
}

/// Ends the stream: the zero-length chunk, then `summary` as a line.
pub fn finish(out: &mut impl Write, summary: &CaptureSummary) -> io::Result<()> {
    chunk(out, &[])?;
    let mut line = serde_json::to_string(summary).map_err(io::Error::other)?;
    line.push('\n');
    out.write_all(line.as_bytes())
}

/// The client's side: copies the file's stream from `from` to `to`, and
/// reads the summary.
pub fn receive(from: &mut impl BufRead, to: &mut impl Write) -> Result<CaptureSummary, String> {
    let mut bytes = Vec::new();
    loop {
        let mut len = [0u8; 4];
        from.read_exact(&mut len).map_err(|e| format!("capture stream cut: {e}"))?;
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 {
            break;
        }
        bytes.resize(len, 0);
        from.read_exact(&mut bytes).map_err(|e| format!("capture stream cut: {e}"))?;
        to.write_all(&bytes).and_then(|()| to.flush()).map_err(|e| format!("writing the capture: {e}"))?;
    }
    let mut line = String::new();
    from.read_line(&mut line).map_err(|e| e.to_string())?;
    serde_json::from_str(&line).map_err(|e| format!("bad capture summary: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(threads: usize) -> Session {
        Session {
            id: 1,
            port: "vm1".into(),
            slot: 0,
            gen: 1,
            direction: CaptureDirection::Both,
            snaplen: 96,
            rings: (0..threads).map(|_| Arc::new(CaptureRing::new(1024))).collect(),
            ended: AtomicBool::new(false),
            tsc0: 1_000,
            wall0: Duration::from_secs(1_700_000_000),
            hz: 1_000_000_000,
        }
    }

    fn push(s: &Session, thread: usize, t: u64, frame: &[u8]) {
        push_dir(s, thread, t, false, frame);
    }

    fn push_dir(s: &Session, thread: usize, t: u64, tx: bool, frame: &[u8]) {
        let caplen = frame.len().min(s.snaplen as usize);
        assert!(s.rings[thread].push(t, tx, frame.len(), caplen, [frame].into_iter()));
    }

    #[test]
    fn a_stream_is_a_pcap_file_in_chunks_merged_by_time_up_to_count() {
        let s = session(2);
        push(&s, 0, 3_000, &[1; 60]);
        push(&s, 1, 2_000, &[2; 200]);
        push(&s, 0, 5_000, &[3; 64]);
        let mut wire = Vec::new();
        let n = stream(&s, CaptureFormat::Pcap, &mut wire, Some(2), None, |_| true).unwrap();
        assert_eq!(n, 2);
        finish(&mut wire, &CaptureSummary { port: "vm1".into(), captured: n, dropped: 0 }).unwrap();
        let mut pcap = Vec::new();
        let summary = receive(&mut &wire[..], &mut pcap).unwrap();
        assert_eq!(summary.captured, 2);
        assert_eq!(&pcap[..4], &0xa1b2_c3d4u32.to_le_bytes());
        assert_eq!(&pcap[16..24], &[96, 0, 0, 0, 1, 0, 0, 0], "snaplen and Ethernet");
        // Thread 1's frame came first (1 us after the anchor), cut to 96.
        let rec = &pcap[24..];
        assert_eq!(rec[..16], [[0x00, 0xf1, 0x53, 0x65], [1, 0, 0, 0], [96, 0, 0, 0], [200, 0, 0, 0]].concat()[..]);
        assert_eq!(&rec[16..112], &[2; 96]);
        assert_eq!(&rec[112 + 4..112 + 8], &[2, 0, 0, 0], "then thread 0's, 2 us after");
        assert_eq!(pcap.len(), 24 + 16 + 96 + 16 + 60, "the third frame is past the count");
    }

    /// A pcapng file's blocks: (type, body and options).
    fn blocks(mut f: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        while !f.is_empty() {
            let word = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
            let (kind, len) = (word(f, 0), word(f, 4) as usize);
            assert!(len % 4 == 0 && len >= 12 && word(f, len - 4) as usize == len, "block {kind:#x}: lengths agree");
            out.push((kind, f[8..len - 4].to_vec()));
            f = &f[len..];
        }
        out
    }

    #[test]
    fn a_pcapng_stream_names_the_port_and_each_frames_direction() {
        let s = session(1);
        push_dir(&s, 0, 2_000, false, &[1; 61]);
        push_dir(&s, 0, 3_500, true, &[2; 200]);
        let mut wire = Vec::new();
        assert_eq!(stream(&s, CaptureFormat::Pcapng, &mut wire, Some(2), None, |_| true).unwrap(), 2);
        finish(&mut wire, &CaptureSummary::default()).unwrap();
        let mut file = Vec::new();
        receive(&mut &wire[..], &mut file).unwrap();
        let b = blocks(&file);
        assert_eq!(b.iter().map(|b| b.0).collect::<Vec<_>>(), [0x0a0d_0d0a, 1, 6, 6]);
        assert_eq!(b[0].1[..8], [0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0], "little-endian, version 1.0");
        // Ethernet, snaplen 96, if_name "vm1", if_tsresol 9 (nanoseconds).
        assert_eq!(b[1].1, [&[1, 0, 0, 0, 96, 0, 0, 0][..], &[2, 0, 3, 0], b"vm1\0", &[9, 0, 1, 0, 9, 0, 0, 0], &[0; 4]].concat());
        let epb = |i: usize| &b[i].1;
        let ns = 1_700_000_000_000_000_000u64 + 1_000; // 1 us after the anchor
        assert_eq!(epb(2)[..20], [0u32, (ns >> 32) as u32, ns as u32, 61, 61].map(u32::to_le_bytes).concat()[..]);
        assert_eq!(epb(2)[20..81], [1; 61], "the frame, then padding to 4");
        assert_eq!(epb(2)[84..], [[2, 0, 4, 0], [1, 0, 0, 0], [0; 4]].concat()[..], "epb_flags: inbound");
        assert_eq!(epb(3)[12..20], [96, 0, 0, 0, 200, 0, 0, 0], "cut to the snaplen");
        assert_eq!(epb(3)[20 + 96..], [[2, 0, 4, 0], [2, 0, 0, 0], [0; 4]].concat()[..], "epb_flags: outbound");
    }

    #[test]
    fn a_stream_ends_when_the_client_goes_or_the_port_does() {
        let s = session(1);
        let mut calls = 0;
        assert_eq!(stream(&s, CaptureFormat::Pcap, &mut Vec::new(), None, None, |_| { calls += 1; calls < 3 }).unwrap(), 0);
        assert_eq!(calls, 3);
        s.ended.store(true, Relaxed);
        assert_eq!(stream(&s, CaptureFormat::Pcap, &mut Vec::new(), None, None, |_| panic!("not waited for")).unwrap(), 0);
    }
}
