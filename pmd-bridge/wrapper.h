/* Every DPDK header the bindings cover. bindgen reads this file and so does
 * the C file it writes for the static inline functions. */
#include <rte_config.h>
#include <rte_common.h>
#include <rte_errno.h>
#include <rte_log.h>
#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_dev.h>
#include <rte_bus.h>
#include <rte_bus_vdev.h>
#include <rte_ring.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_gso.h>
#include <rte_ethdev.h>
#include <rte_eth_ring.h>
#include <rte_vhost.h>
