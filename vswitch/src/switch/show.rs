//! The answers to `vswitchctl show ...`, read from the PMD threads'
//! counters (relaxed loads of single-writer counters) and the MAC table.
use std::sync::atomic::Ordering;

use dataplane::counters::{DropReason, Path, PmdTotals, ZeroCopy};
use pmd_bridge::cycles::tsc_hz;

use super::{PortIo, Switch};
use crate::protocol::{format_mac, CopiesInfo, FdbInfo, PathCopies, PmdInfo, PmdRxqInfo, PortInfo, RxqInfo};

impl Switch {
    pub(super) fn show_ports(&self) -> Vec<PortInfo> {
        self.slots
            .ports()
            .map(|st| {
                let t = self.port_totals(st.slot).since(&self.slots[st.slot].base);
                let (state, detail) = st.status();
                PortInfo {
                    name: st.cfg.name.clone(),
                    slot: st.slot,
                    kind: st.cfg.kind.name().to_string(),
                    state,
                    detail,
                    vlan: st.cfg.vlan_mode.to_string(),
                    mtu: st.cfg.mtu,
                    rx_packets: t.rx_packets,
                    rx_bytes: t.rx_bytes,
                    tx_packets: t.tx_packets,
                    tx_bytes: t.tx_bytes,
                    forwarded: t.forwarded,
                    flooded: t.flooded,
                    unlearned: t.unlearned,
                    drops: DropReason::ALL
                        .iter()
                        .filter(|&&r| t.drop(r) != 0)
                        .map(|&r| (r.name().to_string(), t.drop(r)))
                        .collect(),
                    features: st.feature_names(),
                    ingress_policing_rate: st.cfg.ingress_policing_rate,
                    ingress_policing_burst: st.cfg.ingress_policing_burst,
                    busy_cycles: t.busy_cycles,
                    rx_bursts: t.rx_bursts,
                    full_burst_packets: t.full_burst_packets,
                    full_burst_cycles: t.full_burst_cycles,
                    lent_to_nics: match &st.io {
                        PortIo::Vhost { own: Some(own), .. } => own.lent(),
                        _ => 0,
                    },
                }
            })
            .collect()
    }

    pub(super) fn show_fdb(&self) -> Vec<FdbInfo> {
        let now = self.clock.load(Ordering::Relaxed);
        self.fdb
            .entries(now)
            .into_iter()
            .filter_map(|e| {
                let port = self.slots.port(e.slot).filter(|p| p.gen == e.gen)?;
                let remote = match &port.io {
                    PortIo::Vxlan(v) => v.remote_of(e.mac).map(|i| v.remotes[i].to_string()),
                    _ => None,
                };
                Some(FdbInfo { vlan: e.vlan, mac: format_mac(&e.mac), port: port.cfg.name.clone(), age_secs: e.age_secs, remote })
            })
            .collect()
    }

    pub(super) fn show_pmd(&self) -> Vec<PmdInfo> {
        self.pmds
            .iter()
            .enumerate()
            .map(|(index, p)| {
                let t = PmdTotals::read(&p.counters).since(&p.base);
                let total = (t.busy_cycles + t.idle_cycles).max(1);
                let all = (total + t.sleep_cycles) as f64;
                PmdInfo {
                    index,
                    core: p.core,
                    lcore: p.lcore,
                    packets: t.packets,
                    bursts: t.bursts,
                    avg_burst: t.avg_burst(),
                    busy_cycles: t.busy_cycles,
                    idle_cycles: t.idle_cycles,
                    busy_pct: 100.0 * t.busy_cycles as f64 / total as f64,
                    cycles_per_packet: t.cycles_per_packet(),
                    iterations: t.iterations,
                    sleep_cycles: t.sleep_cycles,
                    sleep_us: (t.sleep_cycles as u128 * 1_000_000 / u128::from(tsc_hz().max(1))) as u64,
                    sleep_pct: 100.0 * t.sleep_cycles as f64 / all,
                    sleeps: t.sleeps,
                    kick_sleeps: t.kick_sleeps,
                    kicked: t.kicked,
                }
            })
            .collect()
    }

    /// Per path: packets, payload copies, bytes copied, summed over threads.
    pub(super) fn copies_now(&self) -> [[u64; 3]; 5] {
        let mut t = [[0u64; 3]; 5];
        for p in &self.pmds {
            for (acc, c) in t.iter_mut().zip(&p.counters.paths) {
                acc[0] += c.packets.load(Ordering::Relaxed);
                acc[1] += c.payload_copies.load(Ordering::Relaxed);
                acc[2] += c.bytes_copied.load(Ordering::Relaxed);
            }
        }
        t
    }

    /// Copy-once frames bound for NICs by outcome, summed over threads.
    pub(super) fn zero_copy_now(&self) -> [u64; ZeroCopy::COUNT] {
        let mut t = [0u64; ZeroCopy::COUNT];
        for p in &self.pmds {
            for (acc, c) in t.iter_mut().zip(&p.counters.zero_copy) {
                *acc += c.load(Ordering::Relaxed);
            }
        }
        t
    }

    pub(super) fn show_copies(&self) -> CopiesInfo {
        let now = self.copies_now();
        let zc = self.zero_copy_now();
        CopiesInfo {
            zero_copy: ZeroCopy::ALL.iter().map(|&o| (o.name().to_string(), zc[o as usize] - self.zero_copy_base[o as usize])).collect(),
            paths: Path::ALL
                .iter()
                .map(|&p| {
                    let (n, b) = (now[p as usize], self.copies_base[p as usize]);
                    PathCopies { path: p.name().into(), packets: n[0] - b[0], payload_copies: n[1] - b[1], bytes_copied: n[2] - b[2] }
                })
                .collect(),
        }
    }

    /// Each thread's rx queues, with their share of its cycles over the
    /// window loads are measured on.
    pub(super) fn show_pmd_rxq(&self) -> Vec<PmdRxqInfo> {
        let (rxqs, cycles, current, window) = self.measured();
        let mut out: Vec<PmdRxqInfo> = self.pmds.iter().enumerate().map(|(index, p)| PmdRxqInfo { index, core: p.core, rxqs: Vec::new() }).collect();
        for ((q, &c), &t) in rxqs.iter().zip(&cycles).zip(&current) {
            let Some(port) = self.slots.port(q.key.slot) else { continue };
            let all = window.threads[t].1;
            out[t].rxqs.push(RxqInfo {
                port: port.cfg.name.clone(),
                queue: q.key.queue,
                pinned: q.pinned.is_some(),
                cycles: c,
                usage_pct: if all == 0 { 0.0 } else { 100.0 * c as f64 / all as f64 },
            });
        }
        out
    }
}
