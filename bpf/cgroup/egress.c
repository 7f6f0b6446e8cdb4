//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/* The "egress" programs: cgroup sock_addr hooks (connect4, connect6,
 * sendmsg4, sendmsg6) attached once to the cgroup v2 root, beside the
 * quarantine's (both are multi-attach links: they coexist, and a connect
 * goes through only if every program allows it).
 *
 * A process is in an egress policy's scope when its cgroup, or one of its
 * ancestors, is in egress_scope, or its executable is in egress_exes: the
 * value is the set of policies (bit i: policy i) that cover it. The destination is looked up in an LPM
 * trie per family keyed by (port, address prefix): once with the real port
 * and once with port 0 ("any port"). Each trie value is the set of policies
 * that allow the prefix; user space folds the policies of every shorter
 * covering prefix into it, so the longest match alone is enough.
 *
 * In scope and allowed by one of the policies in scope: allowed. In scope
 * and allowed by none: refused (return 0: the system call fails with EPERM)
 * when one of the policies in scope enforces, else allowed and reported.
 * Every refusal or report is one event on the ring buffer. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#include "aarsm.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define MAX_ANCESTOR_LEVELS 8

/* Hooks and outcomes, the index of a counter is hook * EGRESS_OUTCOMES +
 * outcome. Keep in sync with agent/internal/egress. */
enum egress_hook { HOOK_CONNECT4, HOOK_CONNECT6, HOOK_SENDMSG4, HOOK_SENDMSG6, EGRESS_HOOKS };
enum egress_outcome { OUT_ALLOWED, OUT_BLOCKED, OUT_REPORTED, EGRESS_OUTCOMES };
#define COUNTER_LOST (EGRESS_HOOKS * EGRESS_OUTCOMES)

struct egress_key4 {
	__u32 prefixlen; /* 16 (port) + address bits */
	__u8 data[8];    /* port (network order), IPv4 address, padding */
};

struct egress_key6 {
	__u32 prefixlen; /* 16 (port) + address bits */
	__u8 data[20];   /* port (network order), IPv6 address, padding */
};

struct egress_config {
	__u64 enforce;     /* policies in enforce mode */
	__u64 self_cgroup; /* the agent's own cgroup: never checked */
	__u32 have_exes;   /* egress_exes has entries: read the task's executable */
	__u32 _pad;
};

struct egress_event {
	__u64 cgroup;   /* cgroup id of the task */
	__u64 policies; /* policies in scope */
	__u32 pid;      /* thread group id */
	__u32 tid;
	__u16 port;     /* host order */
	__u8 family;    /* 4 or 6 */
	__u8 hook;      /* enum egress_hook */
	__u8 blocked;   /* 1: refused; 0: reported (monitor) */
	__u8 protocol;  /* IPPROTO_TCP, IPPROTO_UDP, ... (the socket's) */
	__u8 pad[2];
	__u8 addr[16];  /* IPv4 in the first 4 bytes */
	char comm[16];
	__u64 exe_ino;  /* the file the task runs (mm->exe_file): inode */
	__u32 exe_dev;  /* and device (kernel encoding) */
	__u32 _pad2;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);   /* cgroup v2 id */
	__type(value, __u64); /* policies covering it */
} egress_scope SEC(".maps");

/* Executables in scope: (device, inode) of the file the task runs, as
 * mm->exe_file has it (what /proc/PID/exe points to). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct inode_key);
	__type(value, __u64); /* policies covering it */
} egress_exes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct egress_key4);
	__type(value, __u64); /* policies allowing it */
} egress_allow4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct egress_key6);
	__type(value, __u64);
} egress_allow6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct egress_config);
} egress_settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_LOST + 1);
	__type(key, __u32);
	__type(value, __u64);
} egress_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} egress_events SEC(".maps");

/* Forces bpf2go to emit the Go types. */
const struct egress_event *unused_egress_event __attribute__((unused));
const struct egress_key4 *unused_egress_key4 __attribute__((unused));
const struct egress_key6 *unused_egress_key6 __attribute__((unused));
const struct egress_config *unused_egress_config __attribute__((unused));

static __always_inline void count(__u32 idx)
{
	__u64 *n = bpf_map_lookup_elem(&egress_counters, &idx);

	if (n)
		*n += 1;
}

static __always_inline __u64 scope_of(__u64 id)
{
	__u64 *m = bpf_map_lookup_elem(&egress_scope, &id);

	return m ? *m : 0;
}

/* The policies whose scope covers the current task's cgroup. */
static __always_inline __u64 policies_in_scope(__u64 self)
{
	__u64 mask = scope_of(self);

	for (int level = 0; level <= MAX_ANCESTOR_LEVELS; level++) {
		__u64 anc = bpf_get_current_ancestor_cgroup_id(level);

		/* 0: deeper than the task's cgroup; self: already looked up. */
		if (anc == 0 || anc == self)
			break;
		mask |= scope_of(anc);
	}
	return mask;
}

/* The file the current task runs; 0 when it has none. */
static __always_inline void current_exe(struct inode_key *k)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct inode *ino = BPF_CORE_READ(task, mm, exe_file, f_inode);

	if (!ino)
		return;
	k->ino = BPF_CORE_READ(ino, i_ino);
	k->dev = BPF_CORE_READ(ino, i_sb, s_dev);
}

/* The policies whose scope names the current task's executable. */
static __always_inline __u64 exe_policies(void)
{
	struct inode_key k = {};
	__u64 *m;

	current_exe(&k);
	if (!k.ino)
		return 0;
	m = bpf_map_lookup_elem(&egress_exes, &k);
	return m ? *m : 0;
}

static __always_inline __u64 allowed4(__u16 port_be, __u32 ip_be)
{
	struct egress_key4 k = {};
	__u64 mask = 0, *v;

	k.prefixlen = 16 + 32;
	__builtin_memcpy(&k.data[0], &port_be, 2);
	__builtin_memcpy(&k.data[2], &ip_be, 4);
	v = bpf_map_lookup_elem(&egress_allow4, &k);
	if (v)
		mask |= *v;
	k.data[0] = 0;
	k.data[1] = 0;
	v = bpf_map_lookup_elem(&egress_allow4, &k);
	if (v)
		mask |= *v;
	return mask;
}

static __always_inline __u64 allowed6(__u16 port_be, const __u32 ip[4])
{
	struct egress_key6 k = {};
	__u64 mask = 0, *v;

	k.prefixlen = 16 + 128;
	__builtin_memcpy(&k.data[0], &port_be, 2);
	__builtin_memcpy(&k.data[2], &ip[0], 4);
	__builtin_memcpy(&k.data[6], &ip[1], 4);
	__builtin_memcpy(&k.data[10], &ip[2], 4);
	__builtin_memcpy(&k.data[14], &ip[3], 4);
	v = bpf_map_lookup_elem(&egress_allow6, &k);
	if (v)
		mask |= *v;
	k.data[0] = 0;
	k.data[1] = 0;
	v = bpf_map_lookup_elem(&egress_allow6, &k);
	if (v)
		mask |= *v;
	return mask;
}

static __always_inline int decide(__u32 hook, __u8 family, __u8 protocol, __u16 port_be, const __u32 ip[4])
{
	__u32 zero = 0;
	struct egress_config *cfg = bpf_map_lookup_elem(&egress_settings, &zero);
	__u64 self = bpf_get_current_cgroup_id();
	__u64 scope, allow;
	struct egress_event *e;
	int block;

	if (!cfg || self == cfg->self_cgroup)
		return 1;
	scope = policies_in_scope(self);
	if (cfg->have_exes)
		scope |= exe_policies();
	if (!scope)
		return 1;
	if (family == 4)
		allow = allowed4(port_be, ip[0]);
	else
		allow = allowed6(port_be, ip);
	if (allow & scope) {
		count(hook * EGRESS_OUTCOMES + OUT_ALLOWED);
		return 1;
	}
	block = (cfg->enforce & scope) != 0;
	count(hook * EGRESS_OUTCOMES + (block ? OUT_BLOCKED : OUT_REPORTED));
	e = bpf_ringbuf_reserve(&egress_events, sizeof(*e), 0);
	if (!e) {
		count(COUNTER_LOST);
	} else {
		__u64 pt = bpf_get_current_pid_tgid();

		__builtin_memset(e, 0, sizeof(*e));
		e->cgroup = self;
		e->policies = scope;
		e->pid = pt >> 32;
		e->tid = (__u32)pt;
		e->port = bpf_ntohs(port_be);
		e->family = family;
		e->hook = hook;
		e->blocked = block;
		e->protocol = protocol;
		if (family == 4) {
			__builtin_memcpy(&e->addr[0], &ip[0], 4);
		} else {
			__builtin_memcpy(&e->addr[0], &ip[0], 4);
			__builtin_memcpy(&e->addr[4], &ip[1], 4);
			__builtin_memcpy(&e->addr[8], &ip[2], 4);
			__builtin_memcpy(&e->addr[12], &ip[3], 4);
		}
		bpf_get_current_comm(e->comm, sizeof(e->comm));
		{
			/* For the report when the process is gone before it is
			 * read: a short-lived client exits at once. */
			struct inode_key k = {};

			current_exe(&k);
			e->exe_ino = k.ino;
			e->exe_dev = k.dev;
		}
		bpf_ringbuf_submit(e, 0);
	}
	return block ? 0 : 1;
}

static __always_inline int check4(struct bpf_sock_addr *ctx, __u32 hook)
{
	__u32 ip[4] = {};

	ip[0] = ctx->user_ip4;
	return decide(hook, 4, (__u8)ctx->protocol, (__u16)ctx->user_port, ip);
}

static __always_inline int check6(struct bpf_sock_addr *ctx, __u32 hook)
{
	__u32 ip[4];

	ip[0] = ctx->user_ip6[0];
	ip[1] = ctx->user_ip6[1];
	ip[2] = ctx->user_ip6[2];
	ip[3] = ctx->user_ip6[3];
	/* ::ffff:a.b.c.d, an IPv4 destination on a dual-stack socket: the
	 * IPv4 rules apply. */
	if (ip[0] == 0 && ip[1] == 0 && ip[2] == bpf_htonl(0xffff)) {
		ip[0] = ip[3];
		return decide(hook, 4, (__u8)ctx->protocol, (__u16)ctx->user_port, ip);
	}
	return decide(hook, 6, (__u8)ctx->protocol, (__u16)ctx->user_port, ip);
}

SEC("cgroup/connect4")
int egress_connect4(struct bpf_sock_addr *ctx)
{
	return check4(ctx, HOOK_CONNECT4);
}

SEC("cgroup/connect6")
int egress_connect6(struct bpf_sock_addr *ctx)
{
	return check6(ctx, HOOK_CONNECT6);
}

SEC("cgroup/sendmsg4")
int egress_sendmsg4(struct bpf_sock_addr *ctx)
{
	return check4(ctx, HOOK_SENDMSG4);
}

SEC("cgroup/sendmsg6")
int egress_sendmsg6(struct bpf_sock_addr *ctx)
{
	return check6(ctx, HOOK_SENDMSG6);
}
