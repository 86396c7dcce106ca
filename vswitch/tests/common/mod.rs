//! Scenario harness: a vswitchd child process on a config written for the
//! test, and VMs played by net_virtio_user ports in the test process's own
//! EAL (one EAL per test binary); or by a frontend the test drives by
//! hand (`frontend`), some to load the switch for cost measurements (`load`).
#![allow(dead_code)]
pub mod frontend;
pub mod load;

use std::path::{Path, PathBuf};
use std::process::Command as Cmd;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use pmd_bridge::{Burst, Eal, EthPort, Mempool, PortConfig, RxQueue, TxQueue};
use testbed::{wait_until, FilePrefix, Proc};
use vswitch::ctl_server::request;
use vswitch::protocol::{Command, MempoolInfo, PortInfo, Response};

pub const DEADLINE: Duration = Duration::from_secs(30);

/// The test process's EAL and pool, shared by its VMs.
pub fn eal() -> &'static (Eal, Arc<Mempool>) {
    static EAL: OnceLock<(Eal, Arc<Mempool>)> = OnceLock::new();
    EAL.get_or_init(|| {
        let prefix = FilePrefix::for_process("vms");
        pmd_bridge::log::set_echo(std::env::var_os("VSW_TEST_VERBOSE").is_some());
        let eal = Eal::init(&prefix.eal_args(1024)).expect("EAL init");
        let pool = Arc::new(Mempool::new(&eal, "vms", 16383, 0, 2048).expect("pool"));
        (eal, pool)
    })
}

pub fn pool() -> &'static Arc<Mempool> {
    &eal().1
}

/// A running vswitchd; killed (and its files removed) on drop.
pub struct Switchd {
    pub proc: Proc,
    pub dir: PathBuf,
    pub ctl: PathBuf,
    pub config: PathBuf,
    _prefix: FilePrefix,
}

impl Switchd {
    /// Writes `ports_toml` (the `[[port]]` tables) under a `[switch]` table
    /// for this test and starts vswitchd on it.
    pub fn start(dir: &Path, switch_extra: &str, ports_toml: &str) -> Switchd {
        let prefix = FilePrefix::new("vswitchd");
        let ctl = dir.join("ctl.sock");
        let config = dir.join("switch.toml");
        let pmd = if switch_extra.contains("pmd_cores") { "" } else { "pmd_cores = [1]\n" };
        let text = format!(
            "[switch]\n{pmd}main_core = 0\nhugepages = \"off\"\nmemory_mb = 1024\n\
             eal_args = [\"--file-prefix\", \"{}\", \"--no-shconf\"]\ncontrol_socket = \"{}\"\nsocket_dir = \"{}\"\n{switch_extra}\n{ports_toml}",
            prefix.as_str(),
            ctl.display(),
            dir.display()
        );
        std::fs::write(&config, text).unwrap();
        Self::launch(dir, &config, prefix)
    }

    pub fn launch(dir: &Path, config: &Path, prefix: FilePrefix) -> Switchd {
        let mut cmd = Cmd::new(env!("CARGO_BIN_EXE_vswitchd"));
        cmd.arg("--config").arg(config);
        let mut proc = Proc::spawn("vswitchd", cmd).expect("start vswitchd");
        proc.wait_for("vswitchd: ready", DEADLINE).unwrap();
        Switchd { proc, dir: dir.to_path_buf(), ctl: dir.join("ctl.sock"), config: config.to_path_buf(), _prefix: prefix }
    }

    pub fn prefix(&self) -> &str {
        self._prefix.as_str()
    }

    pub fn ctl(&self, command: Command) -> Response {
        let r = request(&self.ctl, command).unwrap();
        assert!(r.ok, "vswitchctl: {:?}", r.error);
        r
    }

    pub fn mempool_in_use(&self) -> u32 {
        let m: MempoolInfo = serde_json::from_value(self.ctl(Command::ShowMempool).result).unwrap();
        m.in_use
    }

    pub fn ports(&self) -> Vec<PortInfo> {
        serde_json::from_value(self.ctl(Command::ShowPorts).result).unwrap()
    }

    pub fn port(&self, name: &str) -> PortInfo {
        self.ports().into_iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no port {name}"))
    }

    /// Waits until `cond` holds on the port list.
    pub fn wait_ports(&self, what: &str, cond: impl Fn(&[PortInfo]) -> bool) {
        wait_until(DEADLINE, what, || cond(&self.ports()).then_some(())).unwrap_or_else(|e| panic!("{e}: {:#?}", self.ports()));
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.proc.signal_and_wait(libc::SIGTERM, DEADLINE).unwrap()
    }
}

/// A VM: a net_virtio_user port on one of the switch's sockets.
pub struct Vm {
    pub name: String,
    rx: Vec<RxQueue>,
    tx: Vec<TxQueue>,
    pub port: Option<EthPort>,
}

impl Vm {
    /// Connects to `sock`; `server` makes the VM the socket server (for a
    /// switch port in client mode).
    pub fn connect(name: &str, sock: &Path, server: bool, mtu: u16) -> Vm {
        Self::connect_mq(name, sock, server, mtu, 1)
    }

    /// Likewise with `queues` queue pairs.
    pub fn connect_mq(name: &str, sock: &Path, server: bool, mtu: u16, queues: u16) -> Vm {
        Self::connect_args(name, sock, server, mtu, queues, "")
    }

    /// Likewise with more net_virtio_user devargs (`,packed_vq=1`).
    pub fn connect_args(name: &str, sock: &Path, server: bool, mtu: u16, queues: u16, args: &str) -> Vm {
        let devargs = format!(
            "net_virtio_user_{name},path={},queues={queues},mrg_rxbuf=1{}{args}",
            sock.display(),
            if server { ",server=1" } else { "" }
        );
        let (eal, pool) = eal();
        let mut port = EthPort::open(eal, &devargs).expect("open virtio_user");
        let cfg = PortConfig { mtu: Some(mtu), rx_queues: queues, tx_queues: queues, lsc_interrupt: server, ..Default::default() };
        port.configure(&cfg, Arc::clone(pool)).unwrap();
        port.start().unwrap();
        let rx = (0..queues).map(|q| port.rx_queue(q).unwrap()).collect();
        let tx = (0..queues).map(|q| port.tx_queue(q).unwrap()).collect();
        Vm { name: name.to_string(), rx, tx, port: Some(port) }
    }

    pub fn send(&mut self, frames: &[Vec<u8>]) {
        self.send_on(0, frames)
    }

    /// Sends on tx queue `q`, in order.
    pub fn send_on(&mut self, q: usize, frames: &[Vec<u8>]) {
        let tx = &mut self.tx[q];
        for chunk in frames.chunks(32) {
            let mut b = Burst::<32>::new();
            for f in chunk {
                b.push(pool().alloc_from(f).expect("mbuf")).unwrap();
            }
            let start = Instant::now();
            while !b.is_empty() {
                tx.tx_burst(&mut b);
                assert!(start.elapsed() < DEADLINE, "{}: virtio tx stalled", self.name);
            }
        }
    }

    /// Everything received so far, on every queue.
    pub fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut b = Burst::<32>::new();
        for rx in &mut self.rx {
            while rx.rx_burst(&mut b) > 0 {
                out.extend(b.drain().map(|m| m.to_vec()));
            }
        }
        out
    }

    /// Receives until `n` frames arrived (or the deadline).
    pub fn recv(&mut self, n: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let start = Instant::now();
        while got.len() < n && start.elapsed() < DEADLINE {
            got.extend(self.drain());
        }
        got
    }

    /// Closes the VM's port (its driver leaves the socket).
    pub fn disconnect(&mut self) {
        self.rx.clear();
        self.tx.clear();
        self.port.take();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.disconnect();
    }
}

/// A vhost-user port in server mode on `<name>.sock` in the test's
/// directory, on `datapath`.
pub fn server_port(name: &str, datapath: &str) -> String {
    format!("[[port]]\nname = \"{name}\"\ntype = \"vhost-user\"\nmode = \"server\"\npath = \"{name}.sock\"\ndatapath = \"{datapath}\"\n")
}

/// vhost-user ports in server mode on `<name>.sock`, nothing else set.
pub fn plain_ports(names: &[&str]) -> String {
    names.iter().map(|n| format!("[[port]]\nname = \"{n}\"\ntype = \"vhost-user\"\nmode = \"server\"\npath = \"{n}.sock\"\n\n")).collect()
}

pub fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, n]
}

pub const BCAST: [u8; 6] = [0xff; 6];

/// An Ethernet frame of `len` bytes with an optional 802.1Q tag; the payload
/// carries `seq` so frames can be told apart.
pub fn frame(dst: [u8; 6], src: [u8; 6], tag: Option<u16>, len: usize, seq: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(t) = tag {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&t.to_be_bytes());
    }
    f.extend_from_slice(&[0x88, 0xb5]); // local experimental EtherType
    f.extend_from_slice(&seq.to_be_bytes());
    let mut i = 0u8;
    while f.len() < len {
        f.push(i);
        i = i.wrapping_add(1);
    }
    f.truncate(len);
    f
}

/// The frame as an output port of the other kind sees it: tag pushed or popped.
pub fn retag(f: &[u8], tag: Option<u16>) -> Vec<u8> {
    let untagged: Vec<u8> = if f[12..14] == [0x81, 0x00] { [&f[..12], &f[16..]].concat() } else { f.to_vec() };
    match tag {
        None => untagged,
        Some(t) => [&untagged[..12], &[0x81, 0x00], &t.to_be_bytes(), &untagged[12..]].concat(),
    }
}

/// Boots a real Linux guest named `name` on `dir/name.sock` (MAC and
/// address 10.0.0.n/24 from `n`) and waits for its shell.
pub fn boot_guest(name: &str, image: &testbed::GuestImage, dir: &Path, role: testbed::SocketRole, n: u8) -> testbed::Guest {
    boot_guest_rings(name, image, dir, role, n, false)
}

/// `boot_guest` with packed virtqueues if `packed`.
pub fn boot_guest_rings(name: &str, image: &testbed::GuestImage, dir: &Path, role: testbed::SocketRole, n: u8, packed: bool) -> testbed::Guest {
    let net = testbed::GuestNet {
        socket: dir.join(format!("{name}.sock")),
        role,
        mac: format!("52:54:00:00:00:{n:02x}"),
        ip: format!("10.0.0.{n}/24"),
        mtu: None,
        packed,
    };
    let mut g = testbed::Guest::boot(name, image, &net).expect("boot guest");
    g.wait_ready(Duration::from_secs(180)).unwrap();
    g
}
