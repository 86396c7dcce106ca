//! The state file: ports added and deleted at run time, written atomically
//! beside the config and replayed over it on start.
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{ConfigError, Ctx, PortConfig, VlanConfig};

/// Ports added and deleted at run time, replayed over the file on start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub added: Vec<PortConfig>,
    #[serde(default)]
    pub deleted: Vec<String>,
}

/// The `[[port]]` fields of a validated port, so that ports from the state
/// file go through the very rules that ports from the config file do.
pub(super) fn port_to_json(p: &PortConfig) -> Value {
    let mut v = json!({ "name": p.name, "mtu": p.mtu, "rx_queues": p.rx_queues, "rxq_pmd": p.rxq_pmd,
                        "offloads": p.offloads, "mac_limit": p.mac_limit,
                        "packed_rings": p.packed_rings, "in_order": p.in_order,
                        "ingress_policing_rate": p.ingress_policing_rate, "ingress_policing_burst": p.ingress_policing_burst });
    // The kind as its serde form (the `type` tag and its keys), but for
    // permissions: a number there, an octal string in a `[[port]]` table.
    let mut kind = serde_json::to_value(&p.kind).expect("a port kind serializes");
    if let Some(perm) = kind.get_mut("permissions").filter(|v| v.is_u64()) {
        *perm = json!(format!("{:o}", perm.as_u64().unwrap_or_default()));
    }
    let vlan = match &p.vlan_mode {
        VlanConfig::Access(vlan) => json!({ "vlan": vlan }),
        VlanConfig::Trunk(trunk) => json!({ "trunk": trunk }),
    };
    for extra in [kind, vlan] {
        if let (Value::Object(v), Value::Object(extra)) = (&mut v, extra) {
            v.extend(extra);
        }
    }
    v
}

/// A missing file is an empty state: nothing has changed at run time yet.
pub fn load_state(path: &Path) -> Result<State, ConfigError> {
    let origin = path.display().to_string();
    let cx = Ctx::new(&origin, "");
    match fs::read_to_string(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(cx.err("", format!("cannot read: {e}"))),
        Ok(text) => serde_json::from_str(&text).map_err(|e| cx.err("", e)),
    }
}

/// Writes through a temporary file and a rename so that a crash leaves
/// either the old state or the new one, never half of one.
pub fn save_state(path: &Path, state: &State) -> io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "state path has no file name",
        ));
    };
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp);
    fs::create_dir_all(dir)?;
    let result = (|| {
        let mut file = File::create(&tmp)?;
        serde_json::to_writer_pretty(&mut file, state)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename itself is durable only once the directory is synced.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
