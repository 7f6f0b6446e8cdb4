/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/* MCP servers over streamable HTTP on loopback: the CO-RE views of the
 * kernel structures the sensor reads to tell a loopback TCP connection of
 * a listening process (bpf/ssl/ssl.c, section "MCP over streamable HTTP"),
 * and the entry point stdio_exit calls for the system calls that are not
 * stdio. */
#ifndef AARSM_MCP_HTTP_H
#define AARSM_MCP_HTTP_H

#include <linux/types.h>
#include <linux/in6.h>
#include <bpf/bpf_endian.h>

struct inode___http {
	unsigned short i_mode;
} __attribute__((preserve_access_index));

struct file___http {
	struct inode___http *f_inode;
	void *private_data; /* a socket's file: its struct socket */
} __attribute__((preserve_access_index));

/* Only the fields read; in the kernel they sit in anonymous unions
 * (CO-RE finds them by name). */
struct sock_common___http {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport; /* peer port */
	__u16 skc_num;    /* local port, host order */
	unsigned short skc_family;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct sock___http {
	struct sock_common___http __sk_common;
} __attribute__((preserve_access_index));

struct socket___http {
	struct sock___http *sk;
} __attribute__((preserve_access_index));

/* The kernel's pt_regs (x86-64): the third argument. */
struct pt_regs___http {
	unsigned long dx;
} __attribute__((preserve_access_index));

/* A listening port of a process (map http_ports). */
struct http_port_key {
	__u32 tgid;
	__u32 port;
};

struct pt_regs___kernel;

/* Copies a socket read or write of a candidate (ssl.c); called by
 * stdio_exit for every system call that is not a stdio read or write. */
static __always_inline int sock_exit(struct pt_regs___kernel *regs, unsigned long nr, unsigned long fd, long ret);

#endif
