//! Ethernet ports (`rte_ethdev`): open, configure, start, and per-queue
//! handles for the poll-mode threads.
//!
//! `EthPort` is the control handle; `RxQueue` and `TxQueue`, the data path's,
//! exist once per queue, so one thread polls or sends on each (DPDK's queues
//! are not thread-safe). A port stops or closes only with no queue handle alive.
use std::ffi::CStr;
use std::os::raw::c_char;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::burst::Burst;
use crate::error::{check, cstring, Error, Result};
use crate::mempool::Mempool;
use crate::ring::Ring;
use crate::{ffi, log, Eal};

/// How to configure a port.
#[derive(Clone, Debug)]
pub struct PortConfig {
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    /// L3 MTU; frames up to MTU + 18 (Ethernet header, one tag, no FCS) pass.
    pub mtu: Option<u16>,
    /// Link-state interrupts, where the device has them. net_virtio_user in
    /// server mode needs them to notice its backend left and accept it back.
    pub lsc_interrupt: bool,
    /// Checksum and TSO offloads, where the device has them (a virtio
    /// device renegotiates with its backend to add them: a device reset).
    pub tx_offloads: bool,
    /// Receive whole TCP segments (LRO) with their checksums unchecked, where
    /// the device has it: a virtio device then negotiates GUEST_TSO4/6 and
    /// GUEST_CSUM.
    pub rx_lro: bool,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig { rx_queues: 1, tx_queues: 1, rx_desc: 1024, tx_desc: 1024, mtu: None, lsc_interrupt: false, tx_offloads: false, rx_lro: false }
    }
}

/// Transmit offloads a configured device does (mbuf `TxOffload` requests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxOffloadCaps {
    pub tcp_csum: bool,
    pub udp_csum: bool,
    pub ipv4_csum: bool,
    pub tso: bool,
}

/// Link state as the PMD reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub up: bool,
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

/// Basic counters (`rte_eth_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_nombuf: u64,
}

static OPEN: Mutex<std::collections::BTreeSet<u16>> = Mutex::new(std::collections::BTreeSet::new());

struct PortShared {
    id: u16,
    name: String,
    /// Set when we probed the device, so closing also removes it.
    hotplugged: bool,
    rx_taken: Mutex<Vec<bool>>,
    tx_taken: Mutex<Vec<bool>>,
    /// RTE_ETH_TX_OFFLOAD_* bits enabled at configure.
    tx_offloads: AtomicU64,
    _rings: Vec<Arc<Ring>>,
    _pool: Mutex<Option<Arc<Mempool>>>,
    _eal: Eal,
}

/// The control handle of an Ethernet port. Dropping it stops and closes the
/// port (and removes the device if it was hot-plugged by `open`).
pub struct EthPort {
    shared: Arc<PortShared>,
    started: bool,
}

impl EthPort {
    /// Probes the device named by `devargs` (a PCI address or a vdev such as
    /// `net_tap0,iface=t0`) and opens its first port. A device already probed
    /// (e.g. by `--vdev` at EAL init) is opened as it is.
    #[cold]
    pub fn open(eal: &Eal, devargs: &str) -> Result<EthPort> {
        let cargs = cstring("devargs", devargs)?;
        // SAFETY: cargs is a valid C string; probing runs on this (control) thread.
        let (ret, logged) = log::capture(|| unsafe { ffi::rte_dev_probe(cargs.as_ptr()) });
        let hotplugged = ret == 0;
        if ret < 0 && ret != -libc::EEXIST {
            return Err(Error::dpdk("rte_dev_probe", -ret, &logged));
        }
        let name = devargs.split(',').next().unwrap_or(devargs);
        let id = port_by_name(name).ok_or_else(|| {
            Error::InvalidArgument(format!("device {name:?} was probed but has no Ethernet port"))
        })?;
        Self::wrap(eal, id, hotplugged, Vec::new())
    }

    /// Opens a port that already exists, by id.
    #[cold]
    pub fn from_id(eal: &Eal, id: u16) -> Result<EthPort> {
        // SAFETY: a range check on the port table.
        if unsafe { ffi::rte_eth_dev_is_valid_port(id) } == 0 {
            return Err(Error::InvalidArgument(format!("no Ethernet port {id}")));
        }
        Self::wrap(eal, id, false, Vec::new())
    }

    /// A `net_ring` port (device `net_ring_<name>`) whose rx queues read
    /// `rx` and tx queues write `tx` (`rte_eth_from_rings`).
    #[cold]
    pub fn from_rings(eal: &Eal, name: &str, rx: &[Arc<Ring>], tx: &[Arc<Ring>]) -> Result<EthPort> {
        let id = ring_port(name, rx, tx)?;
        let rings = rx.iter().chain(tx).cloned().collect();
        Self::wrap(eal, id, false, rings)
    }

    /// `from_rings`, not opened: whoever opens the device by the name
    /// returned (`net_ring_<name>`, with `EthPort::open`) gets the port; a
    /// test plays the wire from the rings' other ends (a switch's NIC that
    /// holds what it is sent until the test frees it). Close that port
    /// before dropping the rings.
    #[cold]
    pub fn ring_device(name: &str, rx: &[Arc<Ring>], tx: &[Arc<Ring>]) -> Result<String> {
        ring_port(name, rx, tx).map(port_name)
    }

    /// One `EthPort` per port id: a second would hand out a second handle to
    /// the same queues, or stop the port under the first one's pollers.
    fn wrap(eal: &Eal, id: u16, hotplugged: bool, rings: Vec<Arc<Ring>>) -> Result<EthPort> {
        if !OPEN.lock().unwrap().insert(id) {
            return Err(Error::InvalidArgument(format!("port {} ({id}) is already open", port_name(id))));
        }
        Ok(EthPort {
            shared: Arc::new(PortShared {
                id,
                name: port_name(id),
                hotplugged,
                rx_taken: Mutex::new(Vec::new()),
                tx_taken: Mutex::new(Vec::new()),
                tx_offloads: AtomicU64::new(0),
                _rings: rings,
                _pool: Mutex::new(None),
                _eal: eal.clone(),
            }),
            started: false,
        })
    }

    pub fn id(&self) -> u16 {
        self.shared.id
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    fn info(&self) -> Result<ffi::rte_eth_dev_info> {
        let mut info = ffi::rte_eth_dev_info::default();
        // SAFETY: info is a valid out-parameter for a valid port.
        check("rte_eth_dev_info_get", unsafe { ffi::rte_eth_dev_info_get(self.id(), &mut info) }, "")?;
        Ok(info)
    }

    /// Configures queues, descriptors and MTU, receiving into `pool`. With
    /// several rx queues, RSS spreads flows over them (IP, TCP and UDP hash,
    /// as far as the device supports). Jumbo MTUs turn on scattered receive
    /// and multi-segment transmit where the device offers them.
    #[cold]
    pub fn configure(&mut self, cfg: &PortConfig, pool: Arc<Mempool>) -> Result<()> {
        self.require_idle("configure")?;
        let info = self.info()?;
        let mut conf = ffi::rte_eth_conf::default();
        let rss_hf = (ffi::RTE_ETH_RSS_IP as u64 | ffi::RTE_ETH_RSS_TCP as u64 | ffi::RTE_ETH_RSS_UDP as u64)
            & info.flow_type_rss_offloads;
        // A device without RSS (virtio without the RSS feature) would refuse
        // the mode; its queues are then spread by whoever feeds them.
        if cfg.rx_queues > 1 && rss_hf != 0 {
            conf.rxmode.mq_mode = ffi::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
        }
        if let Some(mtu) = cfg.mtu {
            conf.rxmode.mtu = mtu as u32;
            let frame = mtu as u32 + 18;
            if frame > pool.data_room() as u32 {
                conf.rxmode.offloads |= ffi::RTE_ETH_RX_OFFLOAD_SCATTER as u64 & info.rx_offload_capa;
            }
        }
        // SAFETY: dev_info points dev_flags at the live device's flags word.
        let dev_flags = if info.dev_flags.is_null() { 0 } else { unsafe { *info.dev_flags } };
        if cfg.lsc_interrupt && dev_flags & ffi::RTE_ETH_DEV_INTR_LSC != 0 {
            conf.intr_conf.set_lsc(1);
        }
        conf.txmode.offloads |= ffi::RTE_ETH_TX_OFFLOAD_MULTI_SEGS as u64 & info.tx_offload_capa;
        // What guests ask of their frames (checksums, TSO), done by the
        // device where it can: the switch segments in software otherwise.
        let guest_offloads = (ffi::RTE_ETH_TX_OFFLOAD_TCP_TSO | ffi::RTE_ETH_TX_OFFLOAD_TCP_CKSUM | ffi::RTE_ETH_TX_OFFLOAD_UDP_CKSUM | ffi::RTE_ETH_TX_OFFLOAD_IPV4_CKSUM) as u64;
        if cfg.tx_offloads {
            conf.txmode.offloads |= guest_offloads & info.tx_offload_capa & !refused_offloads(&info);
        }
        if cfg.rx_lro {
            conf.rxmode.offloads |= (ffi::RTE_ETH_RX_OFFLOAD_TCP_LRO | ffi::RTE_ETH_RX_OFFLOAD_TCP_CKSUM) as u64 & info.rx_offload_capa;
        }
        let id = self.id();
        let (res, logged) = log::capture(|| -> std::result::Result<(), (&'static str, i32)> {
            // SAFETY: conf is a fully initialised configuration; the port is stopped.
            let r = unsafe { ffi::rte_eth_dev_configure(id, cfg.rx_queues, cfg.tx_queues, &conf) };
            if r < 0 {
                return Err(("rte_eth_dev_configure", r));
            }
            if let Some(mtu) = cfg.mtu {
                // SAFETY: a configured, stopped port.
                let r = unsafe { ffi::rte_eth_dev_set_mtu(id, mtu) };
                if r < 0 && r != -libc::ENOTSUP {
                    return Err(("rte_eth_dev_set_mtu", r));
                }
            }
            for q in 0..cfg.rx_queues {
                // SAFETY: the pool outlives the port (kept in PortShared);
                // a null rx_conf means the driver's defaults.
                let r = unsafe {
                    ffi::rte_eth_rx_queue_setup(id, q, cfg.rx_desc, ffi::SOCKET_ID_ANY as u32, std::ptr::null(), pool.as_ptr())
                };
                if r < 0 {
                    return Err(("rte_eth_rx_queue_setup", r));
                }
            }
            for q in 0..cfg.tx_queues {
                // SAFETY: as above, with the driver's default tx_conf.
                let r = unsafe { ffi::rte_eth_tx_queue_setup(id, q, cfg.tx_desc, ffi::SOCKET_ID_ANY as u32, std::ptr::null()) };
                if r < 0 {
                    return Err(("rte_eth_tx_queue_setup", r));
                }
            }
            Ok(())
        });
        res.map_err(|(call, r)| Error::dpdk(call, -r, &logged))?;
        *self.shared.rx_taken.lock().unwrap() = vec![false; cfg.rx_queues as usize];
        *self.shared.tx_taken.lock().unwrap() = vec![false; cfg.tx_queues as usize];
        *self.shared._pool.lock().unwrap() = Some(pool);
        self.shared.tx_offloads.store(conf.txmode.offloads, Ordering::Relaxed);
        Ok(())
    }

    #[cold]
    pub fn start(&mut self) -> Result<()> {
        let id = self.id();
        // SAFETY: starting a configured port from the control thread.
        let (r, logged) = log::capture(|| unsafe { ffi::rte_eth_dev_start(id) });
        check("rte_eth_dev_start", r, &logged)?;
        self.started = true;
        Ok(())
    }

    /// Stops the port. Refused while any queue handle is alive: a thread
    /// could be inside rx_burst or tx_burst.
    #[cold]
    pub fn stop(&mut self) -> Result<()> {
        self.require_idle("stop")?;
        if self.started {
            let id = self.id();
            // SAFETY: no queue handle exists, so no thread polls this port.
            let (r, logged) = log::capture(|| unsafe { ffi::rte_eth_dev_stop(id) });
            check("rte_eth_dev_stop", r, &logged)?;
            self.started = false;
        }
        Ok(())
    }

    fn require_idle(&self, what: &str) -> Result<()> {
        // Strong count: this handle plus one per live queue handle.
        match Arc::strong_count(&self.shared) {
            1 => Ok(()),
            n => Err(Error::InvalidArgument(format!(
                "cannot {what} port {}: {} queue handle(s) still in use",
                self.name(),
                n - 1
            ))),
        }
    }

    /// The handle for rx queue `q`; an error if it does not exist or is taken.
    pub fn rx_queue(&self, q: u16) -> Result<RxQueue> {
        take(&self.shared.rx_taken, q, "rx", self.name())?;
        Ok(RxQueue { shared: Arc::clone(&self.shared), queue: q })
    }

    /// The handle for tx queue `q`; an error if it does not exist or is taken.
    pub fn tx_queue(&self, q: u16) -> Result<TxQueue> {
        take(&self.shared.tx_taken, q, "tx", self.name())?;
        let prepare = self.tx_offloads() & TX_PREPARE_OFFLOADS != 0;
        Ok(TxQueue { shared: Arc::clone(&self.shared), queue: q, prepare, cleanup: true })
    }

    fn tx_offloads(&self) -> u64 {
        self.shared.tx_offloads.load(Ordering::Relaxed)
    }

    /// Which of guests' offload requests the device was configured to do.
    pub fn tx_offload_caps(&self) -> TxOffloadCaps {
        let o = self.tx_offloads();
        let has = |bit: u32| o & bit as u64 != 0;
        TxOffloadCaps {
            tcp_csum: has(ffi::RTE_ETH_TX_OFFLOAD_TCP_CKSUM),
            udp_csum: has(ffi::RTE_ETH_TX_OFFLOAD_UDP_CKSUM),
            ipv4_csum: has(ffi::RTE_ETH_TX_OFFLOAD_IPV4_CKSUM),
            tso: has(ffi::RTE_ETH_TX_OFFLOAD_TCP_TSO),
        }
    }

    pub fn mac(&self) -> Result<[u8; 6]> {
        let mut addr = ffi::rte_ether_addr::default();
        // SAFETY: addr is a valid out-parameter.
        check("rte_eth_macaddr_get", unsafe { ffi::rte_eth_macaddr_get(self.id(), &mut addr) }, "")?;
        Ok(addr.addr_bytes)
    }

    pub fn link(&self) -> Result<Link> {
        let mut link = ffi::rte_eth_link::default();
        // SAFETY: link is a valid out-parameter; nowait never sleeps.
        check("rte_eth_link_get_nowait", unsafe { ffi::rte_eth_link_get_nowait(self.id(), &mut link) }, "")?;
        Ok(Link {
            up: link.link_status() != 0,
            speed_mbps: link.link_speed,
            full_duplex: link.link_duplex() != 0,
        })
    }

    pub fn stats(&self) -> Result<PortStats> {
        let mut s = ffi::rte_eth_stats::default();
        // SAFETY: s is a valid out-parameter.
        check("rte_eth_stats_get", unsafe { ffi::rte_eth_stats_get(self.id(), &mut s) }, "")?;
        Ok(PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    /// The driver's extended statistics, by name.
    pub fn xstats(&self) -> Result<Vec<(String, u64)>> {
        let id = self.id();
        // SAFETY: a null array with size 0 asks for the count.
        let n = check("rte_eth_xstats_get_names", unsafe { ffi::rte_eth_xstats_get_names(id, std::ptr::null_mut(), 0) }, "")?;
        let mut names = vec![ffi::rte_eth_xstat_name { name: [0; 64] }; n as usize];
        let mut values = vec![ffi::rte_eth_xstat::default(); n as usize];
        // SAFETY: both arrays hold n entries.
        let got = unsafe { ffi::rte_eth_xstats_get_names(id, names.as_mut_ptr(), n as u32) };
        check("rte_eth_xstats_get_names", got, "")?;
        // SAFETY: as above.
        let got2 = unsafe { ffi::rte_eth_xstats_get(id, values.as_mut_ptr(), n as u32) };
        check("rte_eth_xstats_get", got2, "")?;
        let count = (got.min(got2)) as usize;
        Ok(values[..count]
            .iter()
            .filter_map(|v| {
                let name = names.get(v.id as usize)?;
                // SAFETY: DPDK NUL-terminates each name within its 64 bytes.
                let name = unsafe { CStr::from_ptr(name.name.as_ptr()) };
                Some((name.to_string_lossy().into_owned(), v.value))
            })
            .collect())
    }

    pub fn reset_stats(&self) -> Result<()> {
        // SAFETY: a valid port id.
        check("rte_eth_stats_reset", unsafe { ffi::rte_eth_stats_reset(self.id()) }, "")?;
        Ok(())
    }
}

impl Drop for EthPort {
    fn drop(&mut self) {
        if self.require_idle("close").is_err() {
            // Queue handles outlive the port handle: leave the port running
            // rather than pull it from under a polling thread.
            eprintln!("pmd-bridge: port {} dropped while its queues are in use; not closed", self.name());
            return;
        }
        let _ = self.stop();
        let id = self.id();
        let mut info = ffi::rte_eth_dev_info::default();
        // SAFETY: a valid port; info is a valid out-parameter.
        let device = (unsafe { ffi::rte_eth_dev_info_get(id, &mut info) } == 0).then_some(info.device);
        // SAFETY: the port is stopped and nothing polls it (no queue handles).
        unsafe { ffi::rte_eth_dev_close(id) };
        // Remove the device too once no port of it is left (also one probed
        // at EAL init), so that opening it again probes it afresh.
        if let Some(dev) = device.filter(|&d| self.shared.hotplugged || !device_has_ports(d)) {
            // SAFETY: a device whose ports are all closed.
            unsafe { ffi::rte_dev_remove(dev) };
        }
        OPEN.lock().unwrap().remove(&id);
    }
}

fn take(taken: &Mutex<Vec<bool>>, q: u16, kind: &str, port: &str) -> Result<()> {
    let mut taken = taken.lock().unwrap();
    match taken.get_mut(q as usize) {
        None => Err(Error::InvalidArgument(format!("port {port} has no {kind} queue {q}"))),
        Some(true) => Err(Error::InvalidArgument(format!("{kind} queue {q} of port {port} is already in use"))),
        Some(t) => {
            *t = true;
            Ok(())
        }
    }
}

/// Whether any valid port still belongs to `dev`.
fn device_has_ports(dev: *mut ffi::rte_device) -> bool {
    (0..ffi::RTE_MAX_ETHPORTS as u16).any(|p| {
        let mut info = ffi::rte_eth_dev_info::default();
        // SAFETY: a validity check, then an info query on a valid port.
        unsafe { ffi::rte_eth_dev_is_valid_port(p) != 0 && ffi::rte_eth_dev_info_get(p, &mut info) == 0 && info.device == dev }
    })
}

fn ring_port(name: &str, rx: &[Arc<Ring>], tx: &[Arc<Ring>]) -> Result<u16> {
    let cname = cstring("port name", name)?;
    let mut rxp: Vec<*mut ffi::rte_ring> = rx.iter().map(|r| r.as_ptr()).collect();
    let mut txp: Vec<*mut ffi::rte_ring> = tx.iter().map(|r| r.as_ptr()).collect();
    // SAFETY: the ring pointers are live (the caller keeps them so while the
    // port exists); DPDK copies the arrays and the name.
    let (ret, logged) = log::capture(|| unsafe {
        ffi::rte_eth_from_rings(cname.as_ptr(), rxp.as_mut_ptr(), rxp.len() as u32, txp.as_mut_ptr(), txp.len() as u32, ffi::SOCKET_ID_ANY as u32)
    });
    if ret < 0 {
        return Err(Error::dpdk("rte_eth_from_rings", crate::error::rte_errno(), &logged));
    }
    Ok(ret as u16)
}

fn port_by_name(name: &str) -> Option<u16> {
    let cname = cstring("port name", name).ok()?;
    let mut id = 0u16;
    // SAFETY: cname is a valid C string, id a valid out-parameter.
    (unsafe { ffi::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) } == 0).then_some(id)
}

/// Offloads a driver claims but refuses for the frames guests send, left
/// to the switch. DPDK's tap PMD (22.11.11, 23.11) refuses a TSO packet
/// whose MSS plus headers (L2 included) exceeds the MTU, i.e. every full
/// segment, with the rest of its burst: guests' TCP crawled.
fn refused_offloads(info: &ffi::rte_eth_dev_info) -> u64 {
    // SAFETY: dev_info points driver_name at the driver's static name.
    let driver = (!info.driver_name.is_null()).then(|| unsafe { CStr::from_ptr(info.driver_name) });
    match driver.map(CStr::to_bytes) {
        Some(b"net_tap") => ffi::RTE_ETH_TX_OFFLOAD_TCP_TSO as u64,
        _ => 0,
    }
}

fn port_name(id: u16) -> String {
    let mut buf = [0 as c_char; ffi::RTE_ETH_NAME_MAX_LEN as usize];
    // SAFETY: buf has RTE_ETH_NAME_MAX_LEN bytes, as the call requires.
    if unsafe { ffi::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) } != 0 {
        return format!("port{id}");
    }
    // SAFETY: DPDK NUL-terminated the name within buf.
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

/// The only handle to one rx queue: the thread holding it may poll it.
pub struct RxQueue {
    shared: Arc<PortShared>,
    queue: u16,
}

/// The only handle to one tx queue: the thread holding it may send on it.
pub struct TxQueue {
    shared: Arc<PortShared>,
    queue: u16,
    /// The device does checksums or TSO: packets go through
    /// rte_eth_tx_prepare first (the pseudo-header sums each NIC expects).
    prepare: bool,
    /// Whether the driver may have rte_eth_tx_done_cleanup (until it says
    /// it has not).
    cleanup: bool,
}

/// Offloads whose requests `rte_eth_tx_prepare` checks and adjusts.
const TX_PREPARE_OFFLOADS: u64 = (ffi::RTE_ETH_TX_OFFLOAD_TCP_TSO | ffi::RTE_ETH_TX_OFFLOAD_TCP_CKSUM | ffi::RTE_ETH_TX_OFFLOAD_UDP_CKSUM) as u64;

impl RxQueue {
    pub fn port_id(&self) -> u16 {
        self.shared.id
    }

    pub fn queue_id(&self) -> u16 {
        self.queue
    }

    /// Receives into the free slots of `burst`; returns how many arrived.
    #[inline]
    pub fn rx_burst<const N: usize>(&mut self, burst: &mut Burst<N>) -> usize {
        let (slots, room) = burst.spare_raw();
        if room == 0 {
            return 0;
        }
        // SAFETY: this handle is the only poller of (port, queue); `slots`
        // has `room` free entries; the PMD fills n of them with mbufs it
        // hands over to us.
        unsafe {
            let n = ffi::rte_eth_rx_burst(self.shared.id, self.queue, slots, room as u16) as usize;
            burst.assume_filled(n);
            n
        }
    }
}

impl TxQueue {
    pub fn port_id(&self) -> u16 {
        self.shared.id
    }

    pub fn queue_id(&self) -> u16 {
        self.queue
    }

    /// Hands the burst to the PMD, which takes what it can from the front.
    /// Returns how many it took; the unsent tail stays in `burst`, owned by
    /// the caller, to retry or drop (and count).
    #[inline]
    pub fn tx_burst<const N: usize>(&mut self, burst: &mut Burst<N>) -> usize {
        if burst.is_empty() {
            return 0;
        }
        let mut len = burst.len() as u16;
        if self.prepare {
            // SAFETY: as below; prepare only adjusts the headers of packets
            // the burst owns. One it refuses stops the send there: it and
            // the rest stay with the caller, who drops and counts them.
            len = unsafe { ffi::rte_eth_tx_prepare(self.shared.id, self.queue, burst.as_raw(), len) };
        }
        // SAFETY: this handle is the only sender on (port, queue); the first
        // n mbufs become the PMD's and are forgotten by the burst.
        let n = unsafe { ffi::rte_eth_tx_burst(self.shared.id, self.queue, burst.as_raw(), len) } as usize;
        burst.consume_front(n);
        n
    }

    /// Frees the mbufs of packets the device has finished sending
    /// (`rte_eth_tx_done_cleanup`): drivers free them lazily, when the
    /// queue needs room, so a queue gone quiet would hold them for good.
    /// Returns how many were freed; 0 once the driver said it cannot.
    pub fn reclaim(&mut self) -> u32 {
        if !self.cleanup {
            return 0;
        }
        // SAFETY: this handle is the only user of (port, queue), so nothing
        // sends on it meanwhile; 0 asks for everything done.
        let r = unsafe { ffi::rte_eth_tx_done_cleanup(self.shared.id, self.queue, 0) };
        self.cleanup = r != -libc::ENOTSUP;
        r.max(0) as u32
    }
}

impl Drop for RxQueue {
    fn drop(&mut self) {
        self.shared.rx_taken.lock().unwrap()[self.queue as usize] = false;
    }
}

impl Drop for TxQueue {
    fn drop(&mut self) {
        self.shared.tx_taken.lock().unwrap()[self.queue as usize] = false;
    }
}

impl std::fmt::Debug for EthPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EthPort").field("id", &self.id()).field("name", &self.name()).finish()
    }
}
