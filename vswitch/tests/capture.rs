//! Packet capture with `vswitchctl capture`, as an operator runs it: three
//! captures at once (frames sent into a copy-once guest, into an rte_vhost
//! guest, and received from a copy-once guest cut to 64 bytes on standard
//! output, and both ways on the copy-once guest b as pcapng) while a known
//! stream flows; `tcpdump -r` reads each file and shows the stream, every
//! byte matches what was sent, and no forwarding counter differs from what
//! the stream alone makes.
mod common;

use std::path::Path;
use std::process::Command as Cmd;

use common::*;
use testbed::{wait_until, Proc};

const K: usize = 300;

fn port(name: &str, datapath: &str) -> String {
    format!("[[port]]\nname = \"{name}\"\ntype = \"vhost-user\"\nmode = \"server\"\npath = \"{name}.sock\"\ndatapath = \"{datapath}\"\n")
}

/// `vswitchctl capture <args>`, the pcap to `out` (through standard output
/// when `stdout`).
fn capture(sw: &Switchd, args: &str, out: &Path, stdout: bool) -> Proc {
    let ctl = format!("{} --socket {}", env!("CARGO_BIN_EXE_vswitchctl"), sw.ctl.display());
    let line = if stdout { format!("{ctl} capture {args} -w - > {}", out.display()) } else { format!("{ctl} capture {args} -w {}", out.display()) };
    let mut cmd = Cmd::new("sh");
    cmd.arg("-c").arg(line);
    Proc::spawn("vswitchctl", cmd).unwrap()
}

/// A pcap file's records: (caplen bytes, original length).
fn records(pcap: &[u8]) -> Vec<(Vec<u8>, u32)> {
    assert_eq!(pcap[..4], 0xa1b2_c3d4u32.to_le_bytes(), "a pcap file");
    let mut out = Vec::new();
    let mut at = 24;
    while at < pcap.len() {
        let word = |i: usize| u32::from_le_bytes(pcap[at + 4 * i..at + 4 * i + 4].try_into().unwrap());
        let (caplen, orig) = (word(2) as usize, word(3));
        out.push((pcap[at + 16..at + 16 + caplen].to_vec(), orig));
        at += 16 + caplen;
    }
    out
}

/// A pcapng file's packets: (interface name, bytes, original length,
/// inbound), read block by block as the pcapng spec lays them out.
fn pcapng_records(f: &[u8]) -> Vec<(String, Vec<u8>, u32, bool)> {
    let word = |at: usize| u32::from_le_bytes(f[at..at + 4].try_into().unwrap());
    assert_eq!((word(0), word(8)), (0x0a0d_0d0a, 0x1a2b_3c4d), "a little-endian pcapng section");
    let (mut names, mut out, mut at) = (Vec::new(), Vec::new(), 0);
    while at < f.len() {
        let (kind, len) = (word(at), word(at + 4) as usize);
        // Options: from after the fixed fields to the trailing length.
        let options = |mut o: usize| {
            let mut found = Vec::new();
            while o < at + len - 4 {
                let (code, n) = (u16::from_le_bytes([f[o], f[o + 1]]), u16::from_le_bytes([f[o + 2], f[o + 3]]) as usize);
                found.push((code, f[o + 4..o + 4 + n].to_vec()));
                o += 4 + n.next_multiple_of(4);
            }
            found
        };
        match kind {
            1 => names.push(options(at + 16).into_iter().find(|o| o.0 == 2).map(|o| String::from_utf8(o.1).unwrap()).unwrap_or_default()),
            6 => {
                let (iface, caplen) = (word(at + 8) as usize, word(at + 20) as usize);
                let flags = options(at + 28 + caplen.next_multiple_of(4)).into_iter().find(|o| o.0 == 2).expect("epb_flags").1;
                out.push((names[iface].clone(), f[at + 28..at + 28 + caplen].to_vec(), word(at + 24), flags[0] & 3 == 1));
            }
            _ => {}
        }
        at += len;
    }
    out
}

/// `tcpdump -r file -nn -e`: the lines of frames from `src` to `dst`.
fn tcpdump(file: &Path, src: [u8; 6], dst: [u8; 6]) -> Vec<String> {
    let out = Cmd::new("tcpdump").args(["-nn", "-e", "-r"]).arg(file).output().expect("tcpdump (make deps installs it)");
    assert!(out.status.success(), "tcpdump -r {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    let (src, dst) = (vswitch::protocol::format_mac(&src), vswitch::protocol::format_mac(&dst));
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(&format!("{src} > {dst}"))).map(str::to_string).collect()
}

fn finished(p: &mut Proc, want: &str) {
    let status = wait_until(DEADLINE, "the capture to end", || p.try_wait()).unwrap();
    assert!(status.success() && p.output().contains(want), "{status}: {}", p.output());
}

#[test]
fn captures_read_by_tcpdump_show_the_stream_and_change_no_counter() {
    let dir = tempfile::tempdir().unwrap();
    let ports = port("a", "copy-once") + &port("b", "copy-once") + &port("c", "rte_vhost");
    let sw = Switchd::start(dir.path(), "", &ports);
    let sock = |n: &str| dir.path().join(format!("{n}.sock"));
    let mut vms: Vec<Vm> = ["a", "b", "c"].iter().map(|n| Vm::connect(n, &sock(n), false, 1500)).collect();
    sw.wait_ports("guests up", |ps| ps.iter().all(|p| p.state == "up"));
    // Each guest announces itself, so that the stream is unicast.
    for (i, vm) in vms.iter_mut().enumerate() {
        vm.send(&[frame(BCAST, mac(i as u8 + 1), None, 60, 0)]);
    }
    sw.wait_ports("MACs learned", |ps| ps.iter().all(|p| p.flooded == 1));
    for vm in &mut vms {
        assert_eq!(vm.recv(2).len(), 2);
    }
    let before = sw.ports();

    let file = |n: &str| dir.path().join(n);
    let mut caps = [
        capture(&sw, &format!("b --direction tx -c {K}"), &file("b.pcap"), false),
        capture(&sw, &format!("c --direction tx -c {K}"), &file("c.pcap"), false),
        capture(&sw, &format!("a --direction rx --count {} -s 64", 2 * K), &file("a.pcap"), true),
        capture(&sw, &format!("b -c {}", K + 1), &file("b.pcapng"), false),
    ];
    // A capture writes the file header as soon as it runs.
    for n in ["b.pcap", "c.pcap", "a.pcap", "b.pcapng"] {
        wait_until(DEADLINE, n, || std::fs::metadata(file(n)).ok().filter(|m| m.len() >= 24)).unwrap();
    }
    let stream = |to: u8| -> Vec<Vec<u8>> { (0..K as u32).map(|i| frame(mac(to), mac(1), None, 60 + (i as usize * 7) % 1400, i)).collect() };
    let (to_b, to_c) = (stream(2), stream(3));
    for (frames, vm) in [(&to_b, 1), (&to_c, 2)] {
        for chunk in frames.chunks(32) {
            vms[0].send(chunk);
            assert_eq!(&vms[vm].recv(chunk.len()), chunk, "forwarded in order");
        }
    }
    finished(&mut caps[0], &format!("{K} packets captured on b"));
    finished(&mut caps[1], &format!("{K} packets captured on c"));
    finished(&mut caps[2], &format!("{} packets captured on a", 2 * K));
    // And one frame b sends, for the pcapng capture of both directions.
    let reply = frame(mac(1), mac(2), None, 90, 0);
    vms[1].send(std::slice::from_ref(&reply));
    assert_eq!(vms[0].recv(1), std::slice::from_ref(&reply));
    finished(&mut caps[3], &format!("{} packets captured on b", K + 1));

    // Frames sent into the copy-once guest b and the rte_vhost guest c,
    // whole; those received from a, cut to 64 bytes.
    let read = |n: &str| records(&std::fs::read(file(n)).unwrap());
    let whole = |f: &Vec<u8>| (f.clone(), f.len() as u32);
    assert_eq!(read("b.pcap"), to_b.iter().map(whole).collect::<Vec<_>>());
    assert_eq!(read("c.pcap"), to_c.iter().map(whole).collect::<Vec<_>>());
    let cut: Vec<_> = to_b.iter().chain(&to_c).map(|f| (f[..f.len().min(64)].to_vec(), f.len() as u32)).collect();
    assert_eq!(read("a.pcap"), cut);
    let pcap = std::fs::read(file("b.pcap")).unwrap();
    let secs = u32::from_le_bytes(pcap[24..28].try_into().unwrap()) as i64;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now - secs).abs() < 120, "timestamps in wall-clock time: {secs} vs {now}");
    let lines = tcpdump(&file("b.pcap"), mac(1), mac(2));
    assert_eq!(lines.len(), K, "tcpdump shows the stream");
    assert!(lines[1].contains(&format!("length {}", to_b[1].len())), "{}", lines[1]);
    assert_eq!(tcpdump(&file("c.pcap"), mac(1), mac(3)).len(), K);
    assert_eq!(tcpdump(&file("a.pcap"), mac(1), mac(2)).len(), K);
    // The pcapng file: the port's name on its interface, the stream sent
    // to b outbound, b's reply inbound; tcpdump reads it too.
    let got = pcapng_records(&std::fs::read(file("b.pcapng")).unwrap());
    let want: Vec<_> = to_b.iter().map(|f| ("b".to_string(), f.clone(), f.len() as u32, false)).chain([("b".to_string(), reply.clone(), 90, true)]).collect();
    assert_eq!(got, want);
    assert_eq!(tcpdump(&file("b.pcapng"), mac(1), mac(2)).len(), K);
    assert_eq!(tcpdump(&file("b.pcapng"), mac(2), mac(1)).len(), 1);

    // The counters are the stream's, capture or not.
    let after = sw.ports();
    let delta = |name: &str| {
        let (b, a) = (before.iter().find(|p| p.name == name).unwrap(), after.iter().find(|p| p.name == name).unwrap());
        (a.rx_packets - b.rx_packets, a.tx_packets - b.tx_packets, a.forwarded - b.forwarded, a.drops.values().sum::<u64>())
    };
    assert_eq!(delta("a"), (2 * K as u64, 1, 2 * K as u64, 0));
    assert_eq!(delta("b"), (1, K as u64, 1, 0));
    assert_eq!(delta("c"), (0, K as u64, 0, 0));
}

#[test]
fn a_capture_of_no_port_or_a_bad_length_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sw = Switchd::start(dir.path(), "", &port("a", "copy-once"));
    let ctl = |args: &[&str]| Cmd::new(env!("CARGO_BIN_EXE_vswitchctl")).arg("--socket").arg(&sw.ctl).args(args).output().unwrap();
    let out = ctl(&["capture", "nope", "-w", "/dev/null"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no port named \"nope\""), "{out:?}");
    let out = ctl(&["capture", "a", "-s", "300000", "-w", "/dev/null"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("snap length 300000 is out of range"), "{out:?}");
    // A capture that ends by its timeout, with nothing seen.
    let out = ctl(&["capture", "a", "--timeout", "1", "-w", "-"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(records(&out.stdout), []);
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 packets captured on a"), "{out:?}");
}
