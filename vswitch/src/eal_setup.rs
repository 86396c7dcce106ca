//! From the config to the EAL's arguments and the mbuf pool's size.
use dataplane::counters::MAX_PORTS;
use pmd_bridge::BURST;

use crate::config::{Config, Hugepages, PortKind};

/// Data room of each mbuf: a 1500-byte frame fits one; jumbo frames chain.
pub const MBUF_DATA_ROOM: u16 = 2048;
const MEMPOOL_CACHE: u32 = 256;

/// EAL arguments: lcore 0 on the main core, lcores 1..=n on the PMD cores
/// (several may share a CPU), memory, and `--no-pci` when no port is a PCI
/// device. User `eal_args` come last so they can override.
pub fn eal_args(cfg: &Config) -> Vec<String> {
    let s = &cfg.switch;
    let mut lcores = vec![format!("0@{}", s.main_core)];
    lcores.extend(s.pmd_cores.iter().enumerate().map(|(i, c)| format!("{}@{}", i + 1, c)));
    let mut args = vec!["--lcores".to_string(), lcores.join(",")];
    let huge = match s.hugepages {
        Hugepages::On => true,
        Hugepages::Off => false,
        Hugepages::Auto => hugepages_available(),
    };
    if huge {
        if cfg.ports.iter().any(|p| matches!(p.kind, PortKind::VhostUser { .. })) {
            // Fewer memory regions for vhost-user frontends sharing our memory.
            args.push("--single-file-segments".into());
        }
    } else {
        args.extend(["--no-huge".to_string(), "-m".to_string(), s.memory_mb.to_string()]);
    }
    let pci = cfg.ports.iter().any(|p| matches!(&p.kind, PortKind::Dpdk { devargs, .. } if is_pci(devargs)));
    if !pci {
        args.push("--no-pci".into());
    }
    if !s.eal_args.iter().any(|a| a.starts_with("--file-prefix")) {
        args.extend(["--file-prefix".to_string(), "vswitchd".to_string()]);
    }
    args.extend(s.eal_args.iter().cloned());
    args
}

fn is_pci(devargs: &str) -> bool {
    let name = devargs.split(',').next().unwrap_or("");
    name.contains(':') && name.contains('.') && !name.starts_with("net_")
}

/// Free 2 MB pages and a mounted hugetlbfs.
fn hugepages_available() -> bool {
    let free = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("HugePages_Free:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .unwrap_or(0);
    let mounted = std::fs::read_to_string("/proc/mounts").map(|m| m.contains("hugetlbfs")).unwrap_or(false);
    free > 0 && mounted
}

/// How many mbufs the pool needs, and how that was reckoned (printed at start).
pub fn pool_size(cfg: &Config) -> (u32, String) {
    let pmds = cfg.switch.pmd_cores.len() as u32;
    let max_mtu = cfg.ports.iter().map(|p| p.mtu as u32).max().unwrap_or(1500);
    let segs = (max_mtu + 18).div_ceil(MBUF_DATA_ROOM as u32);
    let rings: u32 = cfg.ports.iter().map(|p| p.ring_mbufs(pmds)).sum();
    let in_flight = pmds * (BURST as u32 * (MAX_PORTS as u32 + 1) + MEMPOOL_CACHE);
    let frames = rings + in_flight + 4096; // + control-plane and port churn headroom
    let n = (frames * segs).next_power_of_two() - 1;
    let why = format!(
        "mbuf pool: {n} mbufs of {MBUF_DATA_ROOM} B = ({rings} ring slots + {in_flight} in flight over {pmds} PMD threads + 4096 spare) \
         x {segs} segment(s) for MTU {max_mtu}, {} MiB",
        (n as u64 * (MBUF_DATA_ROOM as u64 + 128 + 128)) >> 20
    );
    (n, why)
}

pub const POOL_CACHE: u32 = MEMPOOL_CACHE;
