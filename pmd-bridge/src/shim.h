/* C helpers for what bindgen cannot bind: DPDK macros over thread-local state
 * and stdio streams. Everything else goes through the generated bindings. */
#ifndef PMD_BRIDGE_SHIM_H
#define PMD_BRIDGE_SHIM_H
#include <stddef.h>

/* rte_errno is a per-thread TLS macro: read it here, never bind it as a static. */
int vsw_rte_errno(void);

/* Called with each chunk DPDK writes to its log stream. */
typedef void (*vsw_log_sink)(const char *buf, size_t len);

/* Points DPDK's log stream (rte_openlog_stream) at a stdio cookie stream
 * whose writes go to `sink`. Returns 0, or -1 if the stream cannot be made. */
int vsw_log_capture_open(vsw_log_sink sink);
#endif
