//! The control socket's requests (`vswitch::protocol::Request`, one JSON
//! object per line) on arbitrary input, and a `port-add`'s port through
//! `config::port_from_json` against `configs/default.toml`'s switch, as
//! `vswitchd` runs them. Errors are answers, never panics.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vswitch::config::{parse, port_from_json, Config};
use vswitch::protocol::{Command, Request, Response, VERSION};

fn config() -> &'static Config {
    static CFG: OnceLock<Config> = OnceLock::new();
    CFG.get_or_init(|| parse(include_str!("../../configs/default.toml"), Path::new("configs/default.toml")).expect("the default config loads"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    let req = match serde_json::from_str::<Request>(line) {
        Ok(r) => r,
        Err(e) => {
            let _ = serde_json::to_string(&Response::err(format!("bad request: {e}")));
            return;
        }
    };
    // What vswitchctl would have sent for it reads back as a request.
    let again = serde_json::to_string(&req).expect("a request serializes");
    assert!(serde_json::from_str::<Request>(&again).is_ok(), "{again} does not read back");
    if req.version != VERSION {
        return;
    }
    if let Command::PortAdd { port } = &req.command {
        let cfg = config();
        let label = format!("port[{}]", cfg.ports.len());
        if let Ok(pc) = port_from_json(port, &cfg.switch, &label) {
            let mut candidate = cfg.clone();
            if candidate.add_port(pc).is_ok() {
                if let Err(e) = candidate.validate() {
                    panic!("port added, then refused by validate: {e}");
                }
            }
        }
    }
});
