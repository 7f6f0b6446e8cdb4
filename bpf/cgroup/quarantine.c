//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/* The "quarantine" programs: cgroup sock_addr hooks attached once to the
 * cgroup v2 root that refuse every new egress (TCP connect, UDP
 * connect/sendmsg, IPv4 and IPv6, loopback included) of processes whose
 * cgroup, or one of its ancestors, is in the "quarantined" map.
 *
 * Returning 0 from a cgroup/connect* or cgroup/sendmsg* program makes the
 * system call fail with EPERM. Sockets that already exist are not touched:
 * tearing those down is the job of SOCK_DESTROY in user space.
 *
 * Map value: the end of the quarantine in CLOCK_BOOTTIME nanoseconds
 * (bpf_ktime_get_boot_ns), so that suspend counts as elapsed time. An
 * expired entry allows; user space deletes it (deleting it here could race
 * with user space renewing the same entry). */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Cgroup levels below the root examined, besides the task's own cgroup:
 * enough for system.slice/x.service/sub and user.slice/user-N.slice/
 * user@N.service/app.slice/x.scope. */
#define MAX_ANCESTOR_LEVELS 8

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);   /* cgroup v2 id (inode number of the directory) */
	__type(value, __u64); /* expiry, CLOCK_BOOTTIME ns */
} quarantined SEC(".maps");

static __always_inline int is_quarantined(__u64 id, __u64 now)
{
	__u64 *until = bpf_map_lookup_elem(&quarantined, &id);

	return until && *until > now;
}

/* Returns 1 (allow) or 0 (deny). */
static __always_inline int verdict(void)
{
	__u64 now = bpf_ktime_get_boot_ns();
	__u64 self = bpf_get_current_cgroup_id();

	if (is_quarantined(self, now))
		return 0;
	for (int level = 1; level <= MAX_ANCESTOR_LEVELS; level++) {
		__u64 anc = bpf_get_current_ancestor_cgroup_id(level);

		/* 0: deeper than the task's cgroup; self: already checked. */
		if (anc == 0 || anc == self)
			break;
		if (is_quarantined(anc, now))
			return 0;
	}
	return 1;
}

SEC("cgroup/connect4")
int quarantine_connect4(struct bpf_sock_addr *ctx)
{
	return verdict();
}

SEC("cgroup/connect6")
int quarantine_connect6(struct bpf_sock_addr *ctx)
{
	return verdict();
}

SEC("cgroup/sendmsg4")
int quarantine_sendmsg4(struct bpf_sock_addr *ctx)
{
	return verdict();
}

SEC("cgroup/sendmsg6")
int quarantine_sendmsg6(struct bpf_sock_addr *ctx)
{
	return verdict();
}
