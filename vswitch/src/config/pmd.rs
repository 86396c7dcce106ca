//! The `[switch]` keys that tune the PMD threads, named and defaulted as
//! OVS's `other_config` keys are (`pmd-sleep-max` is `pmd_sleep_max_us`).
use super::*;

/// OVS refuses a longer maximum sleep: the latency it adds is bounded by it.
const SLEEP_MAX_US: Range = 0..=10_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PmdConfig {
    /// Longest sleep of an idle PMD thread, in microseconds (0: it never
    /// sleeps, pure polling).
    pub sleep_max_us: u32,
}

pub(super) fn validate_pmd(raw: &RawSwitch, cx: &Ctx) -> Res<PmdConfig> {
    Ok(PmdConfig { sleep_max_us: cx.opt("pmd_sleep_max_us", raw.pmd_sleep_max_us, 0, SLEEP_MAX_US)? })
}
