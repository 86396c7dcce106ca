//! The TOML config loader (`vswitch::config::parse`) on arbitrary UTF-8:
//! errors are fine, panics are not. A config that loads must re-validate
//! (`Config::validate`, the rules `vswitchd` applies again on each change)
//! and its ports must survive the state file: JSON out and back, then
//! replayed over the `[switch]` table (`Config::with_state`).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vswitch::config::{parse, Config, State};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(cfg) = parse(text, Path::new("/etc/vswitch/fuzz.toml")) else { return };
    if let Err(e) = cfg.validate() {
        panic!("parsed, then refused by validate: {e}");
    }
    let state = State { added: cfg.ports.clone(), deleted: vec![] };
    let json = serde_json::to_string(&state).expect("a state serializes");
    let back: State = serde_json::from_str(&json).expect("a state reads back");
    assert_eq!(back, state, "state file round trip");
    let empty = Config { switch: cfg.switch.clone(), ports: vec![] };
    let replayed = match empty.with_state(&back) {
        Ok(c) => c.ports,
        Err(e) => panic!("ports of a valid config refused on replay: {e}"),
    };
    assert_eq!(replayed, cfg.ports, "ports replayed from the state file differ");
});
