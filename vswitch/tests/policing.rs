//! Ingress policing (`ingress_policing_rate`, `ingress_policing_burst`) on
//! a copy-once guest's port, against a rate-controlled stream: at half the
//! rate every frame passes; at twice the rate the bytes that pass are what
//! the token bucket gave (its burst, and the rate over the stream's
//! duration), the rest is counted as `policed`. The bounds are the bucket's
//! arithmetic with generous margins, not a measure of the switch's speed.
mod common;

use std::time::{Duration, Instant};

use common::*;

/// 800 kbit/s = 100 kB/s, an 80 kB (640 kbit) bucket.
const RATE: f64 = 100_000.0;
const BURST: f64 = 80_000.0;
/// A frame of 1014 bytes: 1000 counted (OVS counts no Ethernet header).
const LEN: usize = 1014;
const COUNTED: f64 = 1000.0;

const PORTS: &str = r#"
[[port]]
name = "src"
type = "vhost-user"
mode = "server"
path = "src.sock"
datapath = "copy-once"
ingress_policing_rate = 800
ingress_policing_burst = 640

[[port]]
name = "dst"
type = "vhost-user"
mode = "server"
path = "dst.sock"
"#;

/// Sends `chunks` chunks of `per` frames to `dst`, one every 100 ms, and
/// takes what arrives; how long the sending took.
fn stream(src: &mut Vm, dst: &mut Vm, chunks: u32, per: u32, seq: &mut u32) -> Duration {
    let start = Instant::now();
    for c in 0..chunks {
        let due = start + Duration::from_millis(100) * c;
        // The generator's pace, not a wait for the switch.
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let frames: Vec<_> = (0..per).map(|i| frame(mac(2), mac(1), None, LEN, *seq + i)).collect();
        *seq += per;
        src.send(&frames);
        dst.drain();
    }
    start.elapsed()
}

fn passed_and_policed(sw: &Switchd) -> (u64, u64) {
    let p = sw.port("src");
    (p.forwarded, p.drops.get("policed").copied().unwrap_or(0))
}

#[test]
fn a_stream_over_the_rate_is_cut_to_it_and_one_under_it_passes_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let sw = Switchd::start(dir.path(), "", PORTS);
    let mut src = Vm::connect("src", &dir.path().join("src.sock"), false, 1500);
    let mut dst = Vm::connect("dst", &dir.path().join("dst.sock"), false, 1500);
    sw.wait_ports("guests up", |ps| ps.iter().all(|p| p.state == "up"));
    let p = sw.port("src");
    assert_eq!((p.ingress_policing_rate, p.ingress_policing_burst), (800, 640));
    dst.send(&[frame(BCAST, mac(2), None, 60, 0)]);
    assert_eq!(src.recv(1).len(), 1, "dst's MAC is learned");
    let mut seq = 0;

    // Half the rate, 100 kB in all (more than the bucket): untouched.
    stream(&mut src, &mut dst, 20, 5, &mut seq);
    sw.wait_ports("the slow stream taken", |_| sw.port("src").rx_packets == 100);
    assert_eq!(passed_and_policed(&sw), (100, 0));

    // Twice the rate for 3 s.
    let start = Instant::now();
    let sending = stream(&mut src, &mut dst, 30, 20, &mut seq);
    sw.wait_ports("the fast stream taken", |_| sw.port("src").rx_packets == 700);
    let settled = start.elapsed();
    let (passed, policed) = passed_and_policed(&sw);
    let (passed, policed) = (passed - 100, policed);
    assert_eq!(passed + policed, 600, "every frame passed or was policed");
    let bytes = passed as f64 * COUNTED;
    // No more than the bucket could give from the first frame to the last
    // count, nor much less than it gave while frames came.
    let most = BURST + RATE * settled.as_secs_f64() + COUNTED;
    let least = 0.5 * (BURST + RATE * sending.as_secs_f64());
    eprintln!(
        "policing: {bytes} bytes passed in {:.2} s of a 200 kB/s stream; the bucket gave {:.0} ({:.2} of it)",
        sending.as_secs_f64(),
        BURST + RATE * sending.as_secs_f64(),
        bytes / (BURST + RATE * sending.as_secs_f64())
    );
    assert!(bytes <= most && bytes >= least, "{bytes} bytes passed: not within {least:.0}..{most:.0}");
    assert!(policed >= 150, "about half the stream is over the rate: {policed} policed");
    // Policed frames are neither forwarded nor counted elsewhere.
    let d = sw.port("dst");
    assert_eq!(d.tx_packets, 100 + passed);
}
