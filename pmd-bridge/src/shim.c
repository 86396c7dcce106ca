#define _GNU_SOURCE
#include <stdio.h>
#include <rte_errno.h>
#include <rte_log.h>
#include "shim.h"

int vsw_rte_errno(void)
{
	return rte_errno;
}

static vsw_log_sink log_sink;

static ssize_t log_write(void *cookie, const char *buf, size_t len)
{
	(void)cookie;
	if (log_sink != NULL)
		log_sink(buf, len);
	return (ssize_t)len;
}

int vsw_log_capture_open(vsw_log_sink sink)
{
	cookie_io_functions_t io = { .write = log_write };
	FILE *f;

	log_sink = sink;
	f = fopencookie(NULL, "w", io);
	if (f == NULL)
		return -1;
	/* DPDK flushes after each message; line buffering keeps chunks whole. */
	setvbuf(f, NULL, _IOLBF, 0);
	return rte_openlog_stream(f);
}
