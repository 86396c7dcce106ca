//! Opening and closing the switch's ports, and the checks made before.
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;

use dataplane::fwd::PortView;
use dataplane::offload::Caps;
use dataplane::vxlan::Vtep;
use pmd_bridge::{Eal, EthPort, Mempool, TxOffloadCaps, PortConfig as EthConfig, VhostDevice, VhostSocket};

use crate::config::{Datapath, PortConfig, PortKind, VhostMode};
use crate::features;
use crate::copy_once_state::CopyOnceState;

/// A port's DPDK side. Each kind's open, view, status and close are here;
/// its queues are in `switch/plans.rs`.
pub enum PortIo {
    Eth(EthPort),
    /// Fields drop in order: the device handle before its socket, whose
    /// unregistering would otherwise wait for it.
    Vhost {
        /// The guest's device while one is connected.
        dev: Option<Arc<VhostDevice>>,
        /// A copy-once port's rings (None: rte_vhost's datapath).
        own: Option<CopyOnceState>,
        sock: VhostSocket,
        /// Queue pairs the guest enabled (vring state events).
        enabled_pairs: u16,
    },
    /// A tunnel endpoint: what it learns outlives the plans.
    Vxlan(Arc<Vtep>),
}

pub struct PortState {
    pub cfg: PortConfig,
    pub slot: u16,
    pub gen: u16,
    pub io: PortIo,
}

impl PortState {
    pub fn view(&self) -> PortView {
        PortView::new(&self.cfg.name, self.slot, self.gen, self.cfg.vlan_mode.to_dataplane(), self.cfg.mtu)
            .with_vm(matches!(self.io, PortIo::Vhost { .. }))
            .with_caps(self.caps())
    }

    /// What the port takes whole on output: a guest's receive offloads as
    /// it negotiated them, a NIC's as its device does them.
    fn caps(&self) -> Caps {
        if !self.cfg.offloads {
            return Caps::NONE;
        }
        match &self.io {
            PortIo::Eth(p) => nic_caps(p.tx_offload_caps()),
            PortIo::Vhost { dev: Some(d), .. } => d.negotiated_features().map(Caps::guest_rx).unwrap_or(Caps::NONE),
            PortIo::Vhost { dev: None, .. } | PortIo::Vxlan(_) => Caps::NONE,
        }
    }

    /// For `show ports`: a guest's negotiated features, a NIC's offloads.
    pub fn feature_names(&self) -> Vec<String> {
        match &self.io {
            PortIo::Eth(p) => {
                let c = if self.cfg.offloads { nic_caps(p.tx_offload_caps()) } else { Caps::NONE };
                [("tcp_csum", c.csum), ("tso4", c.tso4), ("tso6", c.tso6)].iter().filter(|f| f.1).map(|f| f.0.to_string()).collect()
            }
            PortIo::Vhost { dev: Some(d), .. } => d.negotiated_features().map(features::names).unwrap_or_default(),
            PortIo::Vhost { dev: None, .. } | PortIo::Vxlan(_) => Vec::new(),
        }
    }

    /// For `show ports`: the port's state and what else there is to say.
    pub fn status(&self) -> (String, String) {
        match &self.io {
            PortIo::Eth(p) => {
                let hw = p.stats().map(|s| format!(", nic missed {} no_mbuf {} rx_errors {} tx_errors {}", s.rx_missed, s.rx_nombuf, s.rx_errors, s.tx_errors));
                match p.link() {
                    Ok(l) if l.up => ("up".to_string(), format!("{} Mbps{}", l.speed_mbps, hw.unwrap_or_default())),
                    _ => ("down".to_string(), hw.unwrap_or_default()),
                }
            }
            PortIo::Vhost { sock, dev: Some(d), .. } => ("up".to_string(), format!("{} vid {} queues {}", sock.path(), d.vid(), d.queue_pairs())),
            PortIo::Vhost { sock, dev: None, .. } => ("waiting".to_string(), sock.path().to_string()),
            PortIo::Vxlan(v) => {
                let underlay = match &self.cfg.kind {
                    PortKind::Vxlan { underlay, .. } => underlay.as_str(),
                    _ => "",
                };
                let remotes: Vec<String> = (0..v.remotes.len())
                    .map(|i| match v.neighbour(i) {
                        Some(mac) => format!("{} at {}", v.remotes[i], crate::protocol::format_mac(&mac)),
                        None => format!("{} unresolved", v.remotes[i]),
                    })
                    .collect();
                ("up".to_string(), format!("vni {} local {} over {underlay}; remotes {}", v.vni, v.local_ip, remotes.join(", ")))
            }
        }
    }
}

impl PortIo {
    /// Closes a port: the device handle before its socket (unregistering
    /// runs destroy_device, which waits for every handle).
    pub fn close(self) {
        match self {
            PortIo::Eth(port) => drop(port),
            PortIo::Vhost { sock, dev, own, .. } => {
                if let (Some(mut own), Some(d)) = (own, dev.as_ref()) {
                    own.hand_back(d);
                }
                drop(dev);
                drop(sock);
            }
            PortIo::Vxlan(_) => {}
        }
    }
}

/// The offloads a NIC does for guests' frames.
fn nic_caps(o: TxOffloadCaps) -> Caps {
    let csum = o.tcp_csum && o.udp_csum;
    let tso = csum && o.tso;
    Caps { csum, tso4: tso && o.ipv4_csum, tso6: tso, ecn: tso }
}

/// Fails if a live process answers on `path`; removes a stale socket file a
/// killed process left behind, and nothing else (a regular file or a
/// symbolic link there is an error: the path may be someone else's).
/// Called before anything is touched.
pub fn claim_socket_path(path: &Path, what: &str) -> Result<(), String> {
    let Ok(md) = std::fs::symlink_metadata(path) else { return Ok(()) };
    if !md.file_type().is_socket() {
        return Err(format!("{what} {}: exists and is not a socket; not removed", path.display()));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(format!("{what} {}: a live process is listening on it", path.display()));
    }
    std::fs::remove_file(path).map_err(|e| format!("{what} {}: cannot remove stale socket: {e}", path.display()))
}

/// Opens a port: probes and starts a DPDK device, or registers and starts a
/// vhost-user socket. Ethernet ports get one tx queue per PMD thread, so
/// each thread owns one without a lock.
pub fn open(eal: &Eal, cfg: &PortConfig, pool: &Arc<Mempool>, pmds: u16) -> Result<PortIo, String> {
    match &cfg.kind {
        PortKind::Dpdk { devargs, rx_desc, tx_desc } => {
            let mut port = EthPort::open(eal, devargs).map_err(|e| format!("port {}: {e}", cfg.name))?;
            let ecfg = EthConfig {
                rx_queues: cfg.rx_queues,
                tx_queues: pmds,
                rx_desc: *rx_desc,
                tx_desc: *tx_desc,
                mtu: Some(cfg.mtu),
                lsc_interrupt: false,
                tx_offloads: cfg.offloads,
                rx_lro: false,
            };
            port.configure(&ecfg, Arc::clone(pool)).map_err(|e| format!("port {}: {e}", cfg.name))?;
            port.start().map_err(|e| format!("port {}: {e}", cfg.name))?;
            Ok(PortIo::Eth(port))
        }
        PortKind::VhostUser { mode, path, owner, group, permissions, datapath } => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("port {}: create {}: {e}", cfg.name, dir.display()))?;
            }
            let p = path.to_str().ok_or_else(|| format!("port {}: socket path is not UTF-8", cfg.name))?;
            let sock = VhostSocket::register(eal, p, *mode).map_err(|e| format!("port {}: {e}", cfg.name))?;
            let own = (*datapath == Datapath::CopyOnce).then(CopyOnceState::default);
            if own.is_some() {
                sock.set_features(features::copy_once(cfg.offloads, cfg.packed_rings, cfg.in_order)).map_err(|e| format!("port {}: {e}", cfg.name))?;
            } else {
                // rte_vhost maps the header to mbuf offload flags (and back);
                // the switch segments for outputs that cannot take them. UFO
                // it does not segment, so no guest may send it.
                let off = if cfg.offloads { features::UFO } else { features::UFO | features::OFFLOADS };
                sock.disable_features(off).map_err(|e| format!("port {}: {e}", cfg.name))?;
            }
            sock.start().map_err(|e| format!("port {}: {e}", cfg.name))?;
            if *mode == VhostMode::Server {
                set_socket_access(path, owner.as_deref(), group.as_deref(), *permissions)
                    .map_err(|e| format!("port {}: {e}", cfg.name))?;
            }
            Ok(PortIo::Vhost { sock, dev: None, own, enabled_pairs: 0 })
        }
        PortKind::Vxlan { vni, local_ip, remote_ips, .. } => Ok(PortIo::Vxlan(Arc::new(Vtep::new(*vni, *local_ip, remote_ips.clone())))),
    }
}

/// Applies owner, group and permissions to a server socket so that a QEMU
/// run as another user (libvirt's) can connect. The socket is opened first
/// without following a link (O_PATH | O_NOFOLLOW) and checked to be one;
/// the changes go through that descriptor, so whoever can write the socket
/// directory cannot swap in a link and have root change another file.
fn set_socket_access(path: &Path, owner: Option<&str>, group: Option<&str>, mode: Option<u32>) -> Result<(), String> {
    let uid = owner.map(|o| lookup_id("/etc/passwd", o)).transpose()?;
    let gid = group.map(|g| lookup_id("/etc/group", g)).transpose()?;
    if mode.is_none() && uid.is_none() && gid.is_none() {
        return Ok(());
    }
    let fd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let md = fd.metadata().map_err(|e| format!("{}: {e}", path.display()))?;
    if !md.file_type().is_socket() {
        return Err(format!("{}: not a socket (replaced?); access not changed", path.display()));
    }
    // The descriptor's own inode, whatever the path names by now.
    let inode = format!("/proc/self/fd/{}", fd.as_raw_fd());
    if let Some(mode) = mode {
        std::fs::set_permissions(&inode, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod {:o} {}: {e}", mode, path.display()))?;
    }
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::chown(&inode, uid, gid).map_err(|e| format!("chown {}: {e}", path.display()))?;
    }
    Ok(())
}

/// A numeric id as is, or a name looked up in a passwd/group style file.
fn lookup_id(file: &str, name: &str) -> Result<u32, String> {
    if let Ok(id) = name.parse() {
        return Ok(id);
    }
    let text = std::fs::read_to_string(file).map_err(|e| format!("read {file}: {e}"))?;
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[0] == name)
        .and_then(|f| f[2].parse().ok())
        .ok_or_else(|| format!("no {name:?} in {file}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_socket_is_removed_and_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        claim_socket_path(&path, "socket").unwrap();
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = claim_socket_path(&path, "socket").unwrap_err();
        assert!(err.contains("live process"), "{err}");
        drop(listener); // the file stays: stale now
        assert!(path.exists());
        claim_socket_path(&path, "socket").unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn regression_only_sockets_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.sock");
        std::fs::write(&file, b"keep").unwrap();
        let err = claim_socket_path(&file, "socket").unwrap_err();
        assert!(err.contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep");
        let link = dir.path().join("l.sock");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(claim_socket_path(&link, "socket").is_err());
        assert!(std::fs::symlink_metadata(&link).is_ok(), "the link stays");
    }

    #[test]
    fn regression_access_is_never_changed_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"x").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("vm.sock");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(set_socket_access(&link, None, None, Some(0o666)).is_err());
        assert_eq!(std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777, 0o600, "the link's target is untouched");
        // A real socket gets its mode.
        let sock = dir.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        set_socket_access(&sock, None, Some("0"), Some(0o660)).unwrap();
        assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o660);
    }

    #[test]
    fn ids_by_number_or_name() {
        assert_eq!(lookup_id("/etc/passwd", "0").unwrap(), 0);
        assert_eq!(lookup_id("/etc/passwd", "root").unwrap(), 0);
        assert!(lookup_id("/etc/group", "no-such-group-here").is_err());
    }
}
