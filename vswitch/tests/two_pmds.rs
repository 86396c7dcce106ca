//! Two PMD threads on one CPU (`pmd_cores = [1, 1]`), a guest with two queue
//! pairs whose rx queues land on different threads: 10^5 sequence-numbered
//! frames in two flows arrive with none lost, duplicated or reordered within
//! a flow, while both threads enqueue into the same guest queue. Then the
//! same with two busy queues on one thread that `pmd rebalance` splits
//! while frames wait in their rings.
mod common;

use common::*;
use vswitch::protocol::{Command, PmdRxqInfo, RebalanceInfo};

const PORTS: &str = r#"
[[port]]
name = "mq"
type = "vhost-user"
mode = "server"
path = "mq.sock"
rx_queues = 2

[[port]]
name = "sink"
type = "vhost-user"
mode = "server"
path = "sink.sock"
"#;

#[test]
fn two_threads_split_a_two_queue_port_without_loss_or_reordering() {
    let dir = tempfile::tempdir().unwrap();
    let sw = Switchd::start(dir.path(), "pmd_cores = [1, 1]", PORTS);
    let mut src = Vm::connect_mq("mq", &dir.path().join("mq.sock"), false, 1500, 2);
    let mut sink = Vm::connect("sink", &dir.path().join("sink.sock"), false, 1500);
    sw.wait_ports("guests up", |ps| ps.iter().all(|p| p.state == "up"));
    sw.wait_ports("both queue pairs enabled", |_| {
        let map: Vec<PmdRxqInfo> = serde_json::from_value(sw.ctl(Command::ShowPmdRxq).result).unwrap();
        map.iter().filter(|p| p.rxqs.iter().any(|q| q.port == "mq")).count() == 2
    });
    let idle = sw.mempool_in_use();
    sink.send(&[frame(BCAST, mac(0x55), None, 64, 0)]);
    assert_eq!(src.recv(1).len(), 1, "the sink's MAC is learned");

    const PER_FLOW: u32 = 50_000;
    let flows = [mac(0x10), mac(0x11)];
    let mut next = [0u32; 2];
    let mut sent = 0usize;
    let mut got = 0usize;
    let mut seen = [0u32; 2];
    while sent < 2 * PER_FLOW as usize {
        for (q, src_mac) in flows.iter().enumerate() {
            let frames: Vec<_> = (0..32)
                .map(|i| frame(mac(0x55), *src_mac, None, 64, next[q] + i))
                .take((PER_FLOW - next[q]) as usize)
                .collect();
            next[q] += frames.len() as u32;
            sent += frames.len();
            src.send_on(q, &frames);
        }
        // Keep at most one round outstanding: the sink's ring never fills.
        let start = std::time::Instant::now();
        while got < sent {
            for f in sink.drain() {
                let flow = flows.iter().position(|m| f[6..12] == *m).expect("a known flow");
                let seq = u32::from_be_bytes(f[14..18].try_into().unwrap());
                assert_eq!(seq, seen[flow], "flow {flow}: lost, duplicated or reordered");
                seen[flow] += 1;
                got += 1;
            }
            assert!(start.elapsed() < DEADLINE, "stalled at {got} of {sent}");
        }
    }
    assert_eq!(seen, [PER_FLOW, PER_FLOW]);
    let map: Vec<PmdRxqInfo> = serde_json::from_value(sw.ctl(Command::ShowPmdRxq).result).unwrap();
    let threads: Vec<_> = map.iter().filter(|p| p.rxqs.iter().any(|q| q.port == "mq")).map(|p| p.index).collect();
    assert_eq!(threads.len(), 2, "the two queues are on two threads: {map:?}");
    let pmds: Vec<vswitch::protocol::PmdInfo> = serde_json::from_value(sw.ctl(Command::ShowPmd).result).unwrap();
    assert!(pmds.iter().all(|p| p.packets >= PER_FLOW as u64), "both threads forwarded a flow: {pmds:?}");
    sw.wait_ports("mempool back to idle", |_| sw.mempool_in_use() == idle);
}

const THREE_QUEUES: &str = r#"
[[port]]
name = "mq"
type = "vhost-user"
mode = "server"
path = "mq.sock"
rx_queues = 3

[[port]]
name = "sink"
type = "vhost-user"
mode = "server"
path = "sink.sock"
"#;

/// The thread polling each of mq's queues.
fn mq_threads(sw: &Switchd) -> Vec<Option<usize>> {
    let map: Vec<PmdRxqInfo> = serde_json::from_value(sw.ctl(Command::ShowPmdRxq).result).unwrap();
    (0..3).map(|q| map.iter().find(|p| p.rxqs.iter().any(|r| r.port == "mq" && r.queue == q)).map(|p| p.index)).collect()
}

#[test]
fn a_rebalance_splits_two_busy_queues_without_loss_or_reordering() {
    let dir = tempfile::tempdir().unwrap();
    // Sleeping threads too: a move must not lose what waits meanwhile.
    let sw = Switchd::start(dir.path(), "pmd_cores = [1, 1]\npmd_sleep_max_us = 200", THREE_QUEUES);
    let mut src = Vm::connect_mq("mq", &dir.path().join("mq.sock"), false, 1500, 3);
    let mut sink = Vm::connect("sink", &dir.path().join("sink.sock"), false, 1500);
    sw.wait_ports("guests up", |ps| ps.iter().all(|p| p.state == "up"));
    sw.wait_ports("three queue pairs polled", |_| mq_threads(&sw).iter().all(Option::is_some));
    let idle = sw.mempool_in_use();
    sink.send(&[frame(BCAST, mac(0x55), None, 64, 0)]);
    assert_eq!(src.recv(1).len(), 1, "the sink's MAC is learned");

    // Three queues on two threads: two of them share one. Those carry the flows.
    let threads = mq_threads(&sw);
    let queues: Vec<usize> = (0..3).filter(|&q| (0..3).filter(|&o| threads[o] == threads[q]).count() > 1).take(2).collect();
    assert_eq!(queues.len(), 2, "{threads:?}");
    const PER_FLOW: u32 = 40_000;
    let flows = [mac(0x10), mac(0x11)];
    let (mut next, mut seen, mut sent, mut got) = ([0u32; 2], [0u32; 2], 0usize, 0usize);
    let mut rebalanced = None;
    while sent < 2 * PER_FLOW as usize {
        for (f, src_mac) in flows.iter().enumerate() {
            let frames: Vec<_> = (0..32).map(|i| frame(mac(0x55), *src_mac, None, 64, next[f] + i)).take((PER_FLOW - next[f]) as usize).collect();
            next[f] += frames.len() as u32;
            sent += frames.len();
            src.send_on(queues[f], &frames);
        }
        // Half-way, with this round still in the rings: move.
        if rebalanced.is_none() && sent >= PER_FLOW as usize {
            let r: RebalanceInfo = serde_json::from_value(sw.ctl(Command::PmdRebalance).result).unwrap();
            rebalanced = Some(r);
        }
        let start = std::time::Instant::now();
        while got < sent {
            for f in sink.drain() {
                let flow = flows.iter().position(|m| f[6..12] == *m).expect("a known flow");
                let seq = u32::from_be_bytes(f[14..18].try_into().unwrap());
                assert_eq!(seq, seen[flow], "flow {flow}: lost, duplicated or reordered");
                seen[flow] += 1;
                got += 1;
            }
            assert!(start.elapsed() < DEADLINE, "stalled at {got} of {sent}");
        }
    }
    assert_eq!(seen, [PER_FLOW, PER_FLOW]);
    let r = rebalanced.unwrap();
    assert!(r.applied && r.moved.iter().any(|m| m.port == "mq" && queues.contains(&(m.queue as usize))), "a busy queue moved: {r:?}");
    assert!(r.improvement_pct > 0.0, "{r:?}");
    let after = mq_threads(&sw);
    assert_ne!(after[queues[0]], after[queues[1]], "the busy queues are on two threads now: {after:?}");
    let map: Vec<PmdRxqInfo> = serde_json::from_value(sw.ctl(Command::ShowPmdRxq).result).unwrap();
    let usage = |q: usize| map.iter().flat_map(|p| &p.rxqs).find(|r| r.port == "mq" && r.queue as usize == q).unwrap().usage_pct;
    assert!(usage(queues[0]) > 0.0 && usage(queues[1]) > 0.0, "measured: {map:?}");
    sw.wait_ports("mempool back to idle", |_| sw.mempool_in_use() == idle);
}
