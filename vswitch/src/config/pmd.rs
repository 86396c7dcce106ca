//! The `[switch]` keys that tune the PMD threads, named and defaulted as
//! OVS's `other_config` keys are (`pmd-sleep-max` is `pmd_sleep_max_us`,
//! `pmd-auto-lb-load-threshold` is `pmd_auto_lb_load_threshold`, ...).
use std::time::Duration;

use super::*;

/// OVS refuses a longer maximum sleep: the latency it adds is bounded by it.
const SLEEP_MAX_US: Range = 0..=10_000;
const PERCENT: Range = 0..=100;
/// Minutes between two automatic rebalances, as OVS bounds them.
const REBAL_INTERVAL_MIN: Range = 1..=20_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PmdConfig {
    /// Longest sleep of an idle PMD thread, in microseconds (0: it never
    /// sleeps, pure polling).
    pub sleep_max_us: u32,
    pub auto_lb: AutoLb,
}

/// Rx queue auto load balancing (`pmd_auto_lb*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoLb {
    pub enabled: bool,
    /// A thread busy this many percent of its cycles, interval after
    /// interval, is overloaded.
    pub load_threshold: u8,
    /// The least improvement, in percent of the variance of the threads'
    /// loads, worth moving queues for.
    pub improvement_threshold: u8,
    /// The least time between two rebalances.
    pub rebal_interval: Duration,
}

impl Default for AutoLb {
    fn default() -> Self {
        AutoLb { enabled: false, load_threshold: 95, improvement_threshold: 25, rebal_interval: Duration::from_secs(60) }
    }
}

pub(super) fn validate_pmd(raw: &RawSwitch, cx: &Ctx) -> Res<PmdConfig> {
    let d = AutoLb::default();
    let minutes: u64 = cx.opt("pmd_auto_lb_rebal_interval", raw.pmd_auto_lb_rebal_interval, 1, REBAL_INTERVAL_MIN)?;
    Ok(PmdConfig {
        sleep_max_us: cx.opt("pmd_sleep_max_us", raw.pmd_sleep_max_us, 0, SLEEP_MAX_US)?,
        auto_lb: AutoLb {
            enabled: raw.pmd_auto_lb.unwrap_or(d.enabled),
            load_threshold: cx.opt("pmd_auto_lb_load_threshold", raw.pmd_auto_lb_load_threshold, d.load_threshold, PERCENT)?,
            improvement_threshold: cx.opt("pmd_auto_lb_improvement_threshold", raw.pmd_auto_lb_improvement_threshold, d.improvement_threshold, PERCENT)?,
            rebal_interval: Duration::from_secs(60 * minutes),
        },
    })
}
