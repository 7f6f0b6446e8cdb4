//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/* The "ssl" sensor: plaintext of OpenSSL's SSL_write/SSL_write_ex before
 * encryption and of SSL_read/SSL_read_ex after decryption, plus the process
 * events user space needs to find new TLS libraries (exec, executable mmap)
 * and to forget old connections (exit, SSL_free).
 *
 * Hot path: ssl_write. It copies at most MAX_DATA bytes into a per-CPU
 * scratch buffer and submits exactly the captured length to the ring buffer.
 * It does not wake the reader unless the ring is filling up (wakeup_bytes):
 * user space drains it on a short timer, so a write costs no context switch. */

#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "aarsm.h"
#include "mcp_http.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Keep the event types in BTF so that bpf2go emits Go types for them. */
const struct file_event *unused_file_event __attribute__((unused));
const struct event_header *unused_event_header __attribute__((unused));

/* Set by the loader before the programs are loaded. */
/* Wake the reader once this many bytes wait in the ring; 0 wakes on every event. */
const volatile __u64 wakeup_bytes = 0;
/* The agent's pid namespace (nsfs device, kernel encoding, and inode) when
 * it is not the initial one (a container): ids are then reported as the
 * agent sees them, and processes it cannot see are neither reported nor
 * held. 0: the initial namespace, host ids. */
const volatile __u64 pidns_dev = 0;
const volatile __u64 pidns_ino = 0;

/* Handover to a successor image (an upgrade in place): this load's
 * generation, set by the loader. Its programs act only while "active"
 * holds it: the successor loads and attaches its own programs (a
 * generation further) while these still run, switches "active" over in
 * one write, and only then detaches these. No write goes unseen in
 * between, and none is seen twice. */
const volatile __u32 generation = 0;

/* The generation whose programs act (shared by the generations of one
 * handover; entry 0). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} active SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20); /* resized by the loader */
} events SEC(".maps");

/* One data_event per CPU: the copy target of the hot path. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct data_event);
} scratch SEC(".maps");

/* The last SSL call made on this CPU, so that SSL_get_error can tell a
 * failed write (which the application will retry with the same bytes) from
 * a failed read. A thread migrating between the two calls only costs a
 * duplicate that user space may then see. */
struct last_op {
	__u32 tid;
	__u32 op;
	__u64 ssl;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct last_op);
} last_ops SEC(".maps");

/* Arguments of an SSL_read in progress, by thread, until it returns. */
struct read_args {
	__u64 ssl;
	__u64 buf;
	__u64 readbytes; /* SSL_read_ex: size_t *readbytes; 0 for SSL_read */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct read_args);
} reads SEC(".maps");

/* Files (dev, inode) that user space has examined or is examining: a mapping
 * of one of them does not wake user space again. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct inode_key);
	__type(value, __u8);
} known_files SEC(".maps");

/* Run-time settings (struct config). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} settings SEC(".maps");

/* Cgroups whose processes are in an enforcing policy's scope, with what
 * their holds do when unjudged (already combined with the entries of the
 * cgroup's ancestors: the deepest entry found wins). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct hold_policy);
} scope SEC(".maps");

/* When the agent's event loop last went round (bpf_ktime_get_ns), written
 * by it: a loop that is stopped or stuck takes no new holds. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} heartbeat SEC(".maps");

/* What to hold of a connection's writes (enum conn_mode), by connection:
 * written by user space after each held write, from what it parsed so
 * far; removed at SSL_free. A connection with no entry (its first write
 * since the agent started, or a new SSL* after SSL_free) is held whatever
 * it writes, so that user space classifies it before it goes on. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct conn_key);
	__type(value, __u8);
} watch SEC(".maps");

/* Processes held for judgement, by thread. User space deletes the entry
 * and then sends SIGCONT (or kills); the guard process resolves every
 * entry older than its deadline by its fail mode, whatever the agent does.
 * Pinned, so that an agent restarted after a crash finds them. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct hold);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} holds SEC(".maps");

/* Holds being resolved, by thread and resolver (1 agent, 2 guard, 3 an
 * agent or release-holds after a predecessor): a resolver writes its entry
 * before it deletes the "holds" record (which makes it the owner) and
 * deletes it once it has acted, so that a resolver killed in between
 * leaves a trace the others sweep. User space only. */
struct resolving_key {
	__u32 tid;
	__u32 owner;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct resolving_key);
	__type(value, struct hold);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} resolving SEC(".maps");

/* Counters, per CPU: see enum counter in agent/internal/probe. */
enum {
	CNT_WRITES,
	CNT_READS,
	CNT_TRUNCATED,
	CNT_LOST,      /* events dropped because the ring buffer was full */
	CNT_COPY_FAIL, /* plaintext not readable (paged out, bad pointer) */
	CNT_HOLDS,     /* writes held for judgement */
	CNT_GUARD_KILLS, /* held threads resumed by someone else, killed */
	CNT_FILE_HOLDS,  /* processes stopped until a new file was examined */
	CNT_STALE,       /* holds not taken: the agent's loop was not running (fail mode applied at once) */
	CNT_HOLD_FULL,   /* holds not taken: the hold map was full (fail mode applied at once) */
	CNT_FAIL_KILLS,  /* processes killed in the kernel by a fail-closed policy (stale agent, full map or ring) */
	CNT_FOREIGN_CONT, /* SIGCONTs from someone else than the agent to a held process */
	CNT_HELD_EXITS,   /* held threads that exited (killed) while held */
	CNT_STDIO,        /* stdin reads and stdout writes of watched processes copied (MCP) */
	CNT_SOCK,         /* loopback socket reads and writes of listening candidates copied (MCP over HTTP) */
	CNT_HELD_LOST,    /* held writes whose event did not fit in the ring: resolved at once by their fail mode, unjudged */
	CNT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Holds the guard process resolved without a verdict, by outcome (see
 * agent/internal/probe/guard.go): written by the guard alone. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} resolved SEC(".maps");

/* Is this load's generation the one that acts? */
static __always_inline int retired(void)
{
	__u32 zero = 0;
	__u32 *g = bpf_map_lookup_elem(&active, &zero);
	return !g || *g != generation;
}

static __always_inline void count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &which);
	if (v)
		*v += 1;
}

static __always_inline __u64 ring_flags(void)
{
	if (wakeup_bytes == 0)
		return 0;
	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

/* The current thread as the agent sees it: tgid << 32 | pid. Returns -1
 * for a thread outside the agent's pid namespace. */
static __always_inline int current_id(__u64 *id)
{
	if (pidns_ino == 0) {
		*id = bpf_get_current_pid_tgid();
		return 0;
	}
	struct bpf_pidns_info ns = {};
	if (bpf_get_ns_current_pid_tgid(pidns_dev, pidns_ino, &ns, sizeof(ns)) < 0)
		return -1;
	*id = (__u64)ns.tgid << 32 | ns.pid;
	return 0;
}

/* Fills the common header; -1 when the current thread is not the
 * agent's to see (then nothing is reported). */
static __always_inline int fill_header(struct event_header *h, __u8 kind)
{
	__u64 id;
	if (current_id(&id) < 0)
		return -1;

	h->kind = kind;
	h->flags = 0;
	h->pid = id >> 32;
	h->tid = (__u32)id;
	h->ts = bpf_ktime_get_ns();
	h->cgroup = bpf_get_current_cgroup_id();
	h->buf = 0;
	bpf_get_current_comm(h->comm, sizeof(h->comm));
	return 0;
}

static __always_inline void set_last_op(__u32 tid, __u32 op, __u64 ssl)
{
	__u32 zero = 0;
	struct last_op *l = bpf_map_lookup_elem(&last_ops, &zero);
	if (l) {
		l->tid = tid;
		l->op = op;
		l->ssl = ssl;
	}
}

#define SIGKILL 9
#define SIGCONT 18
#define SIGSTOP 19

/* Does the write begin something that may carry mail? An HTTP request with
 * a body, or an SMTP envelope command (any case). Only the first bytes are
 * looked at: cheap enough for every write. */
static __always_inline int starts_candidate(const __u8 *d, __u64 n)
{
	if (n < 4)
		return 0;
	__u32 w = (__u32)d[0] | (__u32)d[1] << 8 | (__u32)d[2] << 16 | (__u32)d[3] << 24;
	if (w == 0x54534f50 /* POST */ || w == 0x20545550 /* "PUT " */ || w == 0x43544150 /* PATC */)
		return 1;
	w |= 0x20202020; /* lower case */
	return w == 0x6c69616d /* mail */ || w == 0x74706372 /* rcpt */ ||
	       w == 0x61746164 /* data */ || w == 0x74616462 /* bdat */;
}

#define SCOPE_DEPTH 16

/* 1 when tracing programs may call bpf_get_current_ancestor_cgroup_id
 * (5.11+); user space clears it on older kernels (5.10 rejects the program:
 * "unknown func bpf_get_current_ancestor_cgroup_id#123"), and the ancestors
 * are read from the task's cgroup instead. The branch not taken is dead
 * code the verifier removes. */
const volatile __u32 have_ancestor_helper = 1;

/* The scope entry of the current cgroup or, failing that, of its deepest
 * ancestor that has one: a scope names a unit or a slice; its processes
 * may sit in cgroups below it. NULL: not in scope. */
static __always_inline struct hold_policy *scope_of(__u64 id)
{
	struct hold_policy *found = bpf_map_lookup_elem(&scope, &id);
	if (found)
		return found;
	if (have_ancestor_helper) {
#pragma unroll
		for (int level = 1; level < SCOPE_DEPTH; level++) {
			id = bpf_get_current_ancestor_cgroup_id(level);
			if (id == 0)
				break;
			struct hold_policy *p = bpf_map_lookup_elem(&scope, &id);
			if (p)
				found = p;
		}
		return found;
	}
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct cgroup___ids *cg = BPF_CORE_READ(task, cgroups, dfl_cgrp);
	if (!cg)
		return NULL;
	int top = BPF_CORE_READ(cg, level);
	/* A bounded loop (5.3+): the variable index keeps clang from unrolling. */
	for (int level = 1; level < SCOPE_DEPTH; level++) {
		if (level >= top)
			break;
		id = 0;
		bpf_core_read(&id, sizeof(id), &cg->ancestor_ids[level]);
		struct hold_policy *p = id ? bpf_map_lookup_elem(&scope, &id) : NULL;
		if (p)
			found = p;
	}
	return found;
}

/* The hold policy of the current process, NULL when it is not held. */
static __always_inline struct hold_policy *hold_policy_of(struct config *cfg)
{
	if (!cfg->holds)
		return NULL;
	__u64 cgroup = bpf_get_current_cgroup_id();
	/* The agent never holds its own: a held guard resolves nothing. */
	if (cgroup == cfg->self_cgroup)
		return NULL;
	if (!cfg->hold_all)
		return scope_of(cgroup);
	if (cfg->scoped) {
		struct hold_policy *p = scope_of(cgroup);
		if (p)
			return p;
	}
	return &cfg->all;
}

/* Is the agent's event loop going round? A hold taken while it is not
 * would wait for its deadline for nothing. */
static __always_inline int agent_stale(struct config *cfg, __u64 now)
{
	if (cfg->stale_ns == 0)
		return 0;
	__u32 zero = 0;
	__u64 *beat = bpf_map_lookup_elem(&heartbeat, &zero);
	return beat && *beat && now > *beat && now - *beat > cfg->stale_ns;
}

/* Stop the current thread's process for judgement; 1 when held. When no
 * hold can be taken (the agent is not running its loop, the map is full)
 * the fail mode applies at once: a fail-closed process is killed before
 * the call goes on, a fail-open one goes on unjudged. */
static __always_inline int take_hold(struct config *cfg, struct hold_policy *p, __u32 pid, __u32 tid,
				     __u8 kind, __u64 ssl, __u64 now)
{
	__u32 ms = kind == HOLD_WRITE ? p->write_ms : p->exec_ms;
	if (ms == 0)
		ms = 1000;
	if (agent_stale(cfg, now)) {
		count(CNT_STALE);
		goto fail;
	}
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct hold h = {
		.pid = pid,
		.kind = kind,
		.fail_closed = p->fail_closed ? 1 : 0,
		.ssl = ssl,
		.ts = now,
		.deadline = now + (__u64)ms * 1000000,
		.start = BPF_CORE_READ(task, start_boottime),
	};
	if (bpf_map_update_elem(&holds, &tid, &h, BPF_ANY) < 0) {
		count(CNT_HOLD_FULL);
		goto fail;
	}
	bpf_send_signal(SIGSTOP);
	return 1;
fail:
	if (p->fail_closed) {
		bpf_send_signal(SIGKILL);
		count(CNT_FAIL_KILLS);
	}
	return 0;
}

/* The most bytes of a write searched for the end of a GET's head: a
 * longer GET is held (and judged at once). */
#define H1_SCAN 1024

/* Is the write one whole HTTP/1.x GET or HEAD request and nothing more?
 * Only then may a write between requests go unheld: anything else may
 * start a request with a body, or a piece of one ("P", "OS", a leading
 * CRLF), or pipeline one behind a GET. */
static __always_inline int single_get(const __u8 *d, __u64 n, __u32 len)
{
	if (n != len || n < 8 || n > H1_SCAN)
		return 0;
	__u32 w = (__u32)d[0] | (__u32)d[1] << 8 | (__u32)d[2] << 16 | (__u32)d[3] << 24;
	if (w != 0x20544547 /* "GET " */ && !(w == 0x44414548 /* HEAD */ && d[4] == ' '))
		return 0;
	/* One branch per offset, none on n, so that the verifier's walk of
	 * the loop stays small; bytes past n are stale and may match only
	 * past the end, which is refused below. */
	__u32 i;
	for (i = 4; i < H1_SCAN - 3; i++) {
		__u32 v;
		__builtin_memcpy(&v, &d[i], sizeof(v));
		if (v == 0x0a0d0a0d /* "\r\n\r\n" */)
			break;
	}
	return i + 4 == n; /* the head ends the write: no second request */
}

#define H2_MAX_FRAMES 16

/* Does an HTTP/2 write carry what may be mail? A HEADERS frame that opens
 * a stream with a body (no END_STREAM), DATA, CONTINUATION, PUSH_PROMISE
 * or a frame type this walk does not know; a write that ends inside a
 * frame (the next one would start mid-frame), is truncated, or holds more
 * frames than the walk follows. SETTINGS, PING, WINDOW_UPDATE, PRIORITY,
 * RST_STREAM, GOAWAY and a bodiless request's HEADERS go on. Writes start
 * at a frame boundary: user space holds every write (CONN_ALL) while a
 * frame or a header block is incomplete. */
static __always_inline int h2_holds(const __u8 *d, __u64 n, __u32 len)
{
	if (n != len)
		return 1;
	__u32 off = 0;
	for (int k = 0; k < H2_MAX_FRAMES; k++) {
		if (off == n)
			return 0;
		__u32 o = off & (MAX_DATA - 1);
		if (o != off || o > MAX_DATA - 9 || o + 9 > n)
			return 1;
		__u32 flen = (__u32)d[o] << 16 | (__u32)d[o + 1] << 8 | d[o + 2];
		__u8 type = d[o + 3], flags = d[o + 4];
		if (type == 0 /* DATA */ || type == 5 /* PUSH_PROMISE */ || type > 8 /* CONTINUATION, unknown */)
			return 1;
		if (type == 1 /* HEADERS */ && !(flags & 0x1 /* END_STREAM */))
			return 1;
		off = o + 9 + flen;
		if (off > n)
			return 1;
	}
	return 1;
}

/* Decide whether to hold this write, by what user space knows of its
 * connection; if so, stop the process and record the hold. */
static __always_inline int maybe_hold(struct config *cfg, struct hold_policy *p, struct data_event *e, __u64 n)
{
	struct conn_key ck = {.pid = e->h.pid, .ssl = e->h.ssl};
	__u8 *mode = bpf_map_lookup_elem(&watch, &ck);
	int hold = 1; /* CONN_ALL, and a connection not classified yet */
	if (mode) {
		if (*mode == CONN_H1)
			hold = !single_get(e->data, n, e->h.len);
		else if (*mode == CONN_H2)
			hold = h2_holds(e->data, n, e->h.len);
		else if (*mode == CONN_OTHER)
			hold = starts_candidate(e->data, n);
	}
	if (!hold)
		return 0;
	if (!take_hold(cfg, p, e->h.pid, e->h.tid, HOLD_WRITE, e->h.ssl, e->h.ts))
		return 0;
	count(CNT_HOLDS);
	return 1;
}

/* Held writes put in the ring since the sensor was loaded (never
 * decremented). User space counts the held writes it has read: while the
 * two differ, a held write waits in the ring behind other events, and the
 * agent sheds the monitoring-only copies in front of it (probe
 * Sensor.HoldsWaiting) so that its judgement is not late. Read by user
 * space through the memory-mapped .bss, without a system call. */
__u64 held_in_ring = 0;

/* Copy up to MAX_DATA bytes of buf and submit them; p (with cfg): the
 * write may be held, under that policy. */
static __always_inline int submit_data(__u8 kind, __u64 ssl, const void *buf, __u64 len,
				       struct config *cfg, struct hold_policy *p)
{
	__u32 zero = 0;
	struct data_event *e = bpf_map_lookup_elem(&scratch, &zero);
	if (!e)
		return 0;

	if (fill_header(&e->h, kind) < 0)
		return 0;
	e->h.ssl = ssl;
	e->h.buf = (__u64)buf;
	e->h.len = len > 0xffffffff ? 0xffffffff : (__u32)len;

	__u64 n = len;
	if (n > MAX_DATA) {
		n = MAX_DATA;
		e->h.flags |= EV_F_TRUNCATED;
		count(CNT_TRUNCATED);
	}
	barrier_var(n);
	if (n > MAX_DATA)
		return 0;
	if (bpf_probe_read_user(e->data, n, buf) < 0) {
		count(CNT_COPY_FAIL);
		n = 0;
		e->h.flags |= EV_F_TRUNCATED;
	}
	__u64 flags = ring_flags();
	if (p)
		e->h.flags |= EV_F_SCOPED;
	if (cfg && p && maybe_hold(cfg, p, e, n)) {
		e->h.flags |= EV_F_HELD;
		flags = BPF_RB_FORCE_WAKEUP;
	}
	__u64 size = sizeof(struct event_header) + n;
	barrier_var(size);
	if (size > sizeof(*e))
		return 0;
	if (bpf_ringbuf_output(&events, e, size, flags) == 0) {
		if (e->h.flags & EV_F_HELD)
			__sync_fetch_and_add(&held_in_ring, 1);
	} else {
		count(CNT_LOST);
		if (e->h.flags & EV_F_HELD) {
			/* Nobody will ever judge it: the fail mode, now. */
			count(CNT_HELD_LOST);
			bpf_map_delete_elem(&holds, &e->h.tid);
			if (p && p->fail_closed) {
				bpf_send_signal(SIGKILL);
				count(CNT_FAIL_KILLS);
			} else {
				bpf_send_signal(SIGCONT);
			}
		}
	}
	return 0;
}

/* ---- Ring headroom (harden) ----
 * While holding is on, a write copied only for a monitoring policy (no
 * hold policy: nothing can stop it) is dropped, and counted lost, once the
 * ring is three quarters full: the last quarter stays for what enforcement
 * needs (held writes, writes of processes in an enforcing scope, exec and
 * mmap events). A process out of scope flooding TLS writes cannot crowd
 * out a held write. */
static __always_inline int ring_crowded(void)
{
	__u64 size = bpf_ringbuf_query(&events, BPF_RB_RING_SIZE);
	__u64 used = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	return size && used > size / 4 * 3;
}
/* ---- end of ring headroom ---- */

/* Whether a TLS write of the current process is wanted at all (0: not
 * even a copy) and, if so, the settings and the hold policy that applies
 * (NULL: copied, never held). Shared by every write probe (OpenSSL,
 * GnuTLS, BoringSSL, Go). */
static __always_inline int write_wanted(struct config **cfgp, struct hold_policy **pp)
{
	count(CNT_WRITES);
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&settings, &zero);
	struct hold_policy *p = NULL;
	if (cfg && cfg->holds) {
		p = hold_policy_of(cfg);
		/* No enforcing policy can match the process, and no other
		 * policy wants its writes: not even a copy. */
		if (!p && !cfg->copy_all)
			return 0;
		if (!p && ring_crowded()) { /* ring headroom (harden) */
			count(CNT_LOST);
			return 0;
		}
	}
	*cfgp = cfg;
	*pp = p;
	return 1;
}

static __always_inline int on_write(struct pt_regs *ctx, __u64 len)
{
	__u64 ssl = PT_REGS_PARM1(ctx);
	const void *buf = (const void *)PT_REGS_PARM2(ctx);
	struct config *cfg;
	struct hold_policy *p;

	if (!write_wanted(&cfg, &p))
		return 0;
	set_last_op((__u32)bpf_get_current_pid_tgid(), EV_WRITE, ssl);
	return submit_data(EV_WRITE, ssl, buf, len, cfg, p);
}

/* int SSL_write(SSL *ssl, const void *buf, int num) */
SEC("uprobe/SSL_write")
int ssl_write(struct pt_regs *ctx)
{
	if (retired())
		return 0;
	int num = (int)PT_REGS_PARM3(ctx);
	if (num <= 0)
		return 0;
	return on_write(ctx, (__u64)num);
}

/* int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written) */
SEC("uprobe/SSL_write_ex")
int ssl_write_ex(struct pt_regs *ctx)
{
	if (retired())
		return 0;
	__u64 num = PT_REGS_PARM3(ctx);
	if (num == 0)
		return 0;
	return on_write(ctx, num);
}

/* Does nothing: the kernel's own cost of a probe at a site, the floor the
 * benchmarks measure the sensor against. Never attached by the agent. */
SEC("uprobe/floor")
int probe_floor(struct pt_regs *ctx)
{
	return 0;
}

/* What a write guard does once it knows the thread whose hold to check
 * (tid; id: the running task's tgid<<32|pid): a hold still recorded means
 * the thread was resumed by someone else than the agent (which deletes
 * the hold first). The record goes; under fail-closed the thread is
 * killed before its write runs. Shared by the OpenSSL-style and Go
 * guards. */
static __always_inline int guard_resolve(__u32 tid, __u64 id)
{
	struct hold *h = bpf_map_lookup_elem(&holds, &tid);
	if (!h)
		return 0;
	int mine = h->pid == (__u32)(id >> 32) && h->kind == HOLD_WRITE;
	int closed = h->fail_closed;
	bpf_map_delete_elem(&holds, &tid);
	if (!mine || !closed)
		return 0; /* a record of a thread that died (its id was reused), or fail-open */
	bpf_send_signal(SIGKILL);
	count(CNT_GUARD_KILLS);
	return 0;
}

/* At the instruction after the write probe, attached only while a
 * fail-closed policy is in force: a thread that gets here while its hold
 * is still recorded was resumed by a SIGCONT that did not come from the
 * agent (which deletes the hold first). Fail-closed: it is killed before
 * its write runs. Fail-open: it goes on, unjudged (counted by
 * signal_generate). */
SEC("uprobe/SSL_write_guard")
int ssl_write_guard(struct pt_regs *ctx)
{
	if (retired())
		return 0;
	__u64 id;
	if (current_id(&id) < 0)
		return 0;
	return guard_resolve((__u32)id, id);
}

/* int SSL_get_error(const SSL *s, int ret_code): called by applications
 * after a failed SSL_write to learn whether to retry it. */
SEC("uprobe/SSL_get_error")
int ssl_get_error(struct pt_regs *ctx)
{
	if (retired())
		return 0;
	__u64 ssl = PT_REGS_PARM1(ctx);
	int ret = (int)PT_REGS_PARM2(ctx);
	__u32 zero = 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	if (ret > 0)
		return 0;
	struct last_op *l = bpf_map_lookup_elem(&last_ops, &zero);
	if (!l || l->tid != tid || l->op != EV_WRITE || l->ssl != ssl)
		return 0;
	l->op = 0;

	struct event_header h = {};
	if (fill_header(&h, EV_WRITE_FAILED) < 0)
		return 0;
	h.ssl = ssl;
	if (bpf_ringbuf_output(&events, &h, sizeof(h), ring_flags()) < 0)
		count(CNT_LOST);
	return 0;
}

static __always_inline int on_read_entry(struct pt_regs *ctx, __u64 readbytes)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct read_args a = {
		.ssl = PT_REGS_PARM1(ctx),
		.buf = PT_REGS_PARM2(ctx),
		.readbytes = readbytes,
	};

	set_last_op((__u32)id, EV_READ, a.ssl);
	bpf_map_update_elem(&reads, &id, &a, BPF_ANY);
	return 0;
}

/* int SSL_read(SSL *ssl, void *buf, int num) */
SEC("uprobe/SSL_read")
int ssl_read(struct pt_regs *ctx)
{
	if (retired())
		return 0;
	return on_read_entry(ctx, 0);
}

/* int SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes) */
SEC("uprobe/SSL_read_ex")
int ssl_read_ex(struct pt_regs *ctx)
{
	if (retired())
		return 0;
	return on_read_entry(ctx, PT_REGS_PARM4(ctx));
}

SEC("uretprobe/SSL_read")
int ssl_read_ret(struct pt_regs *ctx)
{
	if (retired())
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	struct read_args *a = bpf_map_lookup_elem(&reads, &id);
	if (!a)
		return 0;
	struct read_args args = *a;
	bpf_map_delete_elem(&reads, &id);

	long ret = (int)PT_REGS_RC(ctx);
	__u64 n;
	if (args.readbytes) {
		if (ret != 1)
			return 0;
		if (bpf_probe_read_user(&n, sizeof(n), (void *)args.readbytes) < 0)
			return 0;
	} else {
		if (ret <= 0)
			return 0;
		n = ret;
	}
	if (n == 0)
		return 0;
	count(CNT_READS);
	return submit_data(EV_READ, args.ssl, (const void *)args.buf, n, NULL, NULL);
}

/* void SSL_free(SSL *ssl) */
SEC("uprobe/SSL_free")
int ssl_free(struct pt_regs *ctx)
{
	if (retired())
		return 0;
	struct event_header h = {};
	if (fill_header(&h, EV_FREE) < 0)
		return 0;
	h.ssl = PT_REGS_PARM1(ctx);
	/* The address may come back as another connection: unclassified. */
	struct conn_key ck = {.pid = h.pid, .ssl = h.ssl};
	bpf_map_delete_elem(&watch, &ck);
	if (bpf_ringbuf_output(&events, &h, sizeof(h), ring_flags()) < 0)
		count(CNT_LOST);
	return 0;
}

/* Reserve a file_event and fill what is common. */
static __always_inline struct file_event *file_event(__u8 kind)
{
	struct file_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(CNT_LOST);
		return NULL;
	}
	if (fill_header(&e->h, kind) < 0) {
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		return NULL;
	}
	e->h.len = 0;
	e->h.ssl = 0;
	e->ino = 0;
	e->dev = 0;
	e->ppid = 0;
	e->filename[0] = 0;
	return e;
}

/* What the sensor knows of a file (known_files values: user space writes
 * FILE_EXAMINED once the file is probed, or found to need no probe). */
#define FILE_PENDING 0
#define FILE_EXAMINED 1

enum sight {
	SIGHT_KNOWN,   /* examined (or no inode): nothing to do */
	SIGHT_FIRST,   /* never seen: now pending, user space must examine it */
	SIGHT_PENDING, /* seen, user space is examining it */
};

static __always_inline enum sight file_sight(__u32 dev, __u64 ino)
{
	struct inode_key k = {.ino = ino, .dev = dev};
	__u8 pending = FILE_PENDING;
	if (ino == 0)
		return SIGHT_KNOWN;
	__u8 *v = bpf_map_lookup_elem(&known_files, &k);
	if (v)
		return *v == FILE_PENDING ? SIGHT_PENDING : SIGHT_KNOWN;
	if (bpf_map_update_elem(&known_files, &k, &pending, BPF_NOEXIST) == 0)
		return SIGHT_FIRST;
	return SIGHT_PENDING; /* another CPU saw it first */
}

/* A process in scope that is about to run a file nobody has examined yet
 * (exec, or a library mapped executable) is stopped until user space has
 * examined the file and attached its probes: else its first TLS write
 * could leave before the probe exists. User space releases it like a held
 * write (hold record first, then SIGCONT). */
#define PF_KTHREAD 0x00200000

static __always_inline int hold_for_file(void)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&settings, &zero);
	if (!cfg)
		return 0;
	struct hold_policy *p = hold_policy_of(cfg);
	if (!p)
		return 0;
	/* Never a process the kernel started itself (its parent is a kernel
	 * thread): a usermode helper such as the modprobe of a module
	 * autoload, which the kernel may run for the agent while the agent
	 * waits for it (a sock_diag request loading inet_diag), or init. */
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	if (BPF_CORE_READ(task, real_parent, flags) & PF_KTHREAD)
		return 0;
	__u64 id;
	if (current_id(&id) < 0)
		return 0;
	if (!take_hold(cfg, p, id >> 32, (__u32)id, HOLD_FILE, 0, bpf_ktime_get_ns()))
		return 0;
	count(CNT_FILE_HOLDS);
	return 1;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(sched_exec, struct task_struct *p, int old_pid, struct linux_binprm *bprm)
{
	if (retired())
		return 0;
	struct file_event *e = file_event(EV_EXEC);
	if (!e)
		return 0;

	struct inode *ino = BPF_CORE_READ(p, mm, exe_file, f_inode);
	if (ino) {
		e->ino = BPF_CORE_READ(ino, i_ino);
		e->dev = BPF_CORE_READ(ino, i_sb, s_dev);
	}
	e->ppid = BPF_CORE_READ(p, real_parent, tgid);
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), BPF_CORE_READ(bprm, filename));

	__u64 flags = BPF_RB_NO_WAKEUP;
	enum sight sight = file_sight(e->dev, e->ino);
	if (sight != SIGHT_KNOWN) {
		if (sight == SIGHT_FIRST)
			e->h.flags |= EV_F_UNKNOWN_FILE;
		if (hold_for_file())
			e->h.flags |= EV_F_HELD;
		flags = BPF_RB_FORCE_WAKEUP;
	}
	bpf_ringbuf_submit(e, flags);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(sched_exit, struct task_struct *p)
{
	if (retired())
		return 0;
	__u64 id;
	if (current_id(&id) < 0)
		return 0;
	__u32 tid = (__u32)id;
	/* A thread that dies held (killed, or its process exits) leaves no
	 * record behind for a later thread with the same id. */
	if (bpf_map_delete_elem(&holds, &tid) == 0)
		count(CNT_HELD_EXITS);
	if (tid != (__u32)(id >> 32))
		return 0; /* a thread, not the whole process */

	struct event_header h = {};
	if (fill_header(&h, EV_EXIT) < 0)
		return 0;
	if (bpf_ringbuf_output(&events, &h, sizeof(h), BPF_RB_NO_WAKEUP) < 0)
		count(CNT_LOST);
	return 0;
}

/* Layout of tracepoint/syscalls/sys_enter_mmap. */
struct sys_enter_mmap_args {
	__u64 _common;
	__s32 syscall_nr;
	__u32 _pad;
	__u64 addr;
	__u64 len;
	__u64 prot;
	__u64 flags;
	__u64 fd;
	__u64 off;
};

#define PROT_EXEC 0x4

/* A file mapped executable that nobody examined yet (a library loaded by
 * ld.so or dlopen, possibly in another mount namespace): wake user space so
 * it can look for TLS functions in it. */
SEC("tracepoint/syscalls/sys_enter_mmap")
int sys_enter_mmap(struct sys_enter_mmap_args *args)
{
	if (retired())
		return 0;
	if (!(args->prot & PROT_EXEC))
		return 0;
	long fd = (long)args->fd;
	if (fd < 0)
		return 0;

	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt)
		return 0;
	unsigned int max_fds = BPF_CORE_READ(fdt, max_fds);
	if ((unsigned long)fd >= max_fds)
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) < 0 || !f)
		return 0;
	struct inode *inode = BPF_CORE_READ(f, f_inode);
	if (!inode)
		return 0;
	__u64 ino = BPF_CORE_READ(inode, i_ino);
	__u32 dev = BPF_CORE_READ(inode, i_sb, s_dev);
	enum sight sight = file_sight(dev, ino);
	if (sight == SIGHT_KNOWN)
		return 0;

	/* The event first: a process stopped without one would never be
	 * released. */
	struct file_event *e = file_event(EV_MMAP);
	if (!e)
		return 0;
	e->ino = ino;
	e->dev = dev;
	if (sight == SIGHT_FIRST)
		e->h.flags |= EV_F_UNKNOWN_FILE;
	if (hold_for_file())
		e->h.flags |= EV_F_HELD;
	else if (sight == SIGHT_PENDING) {
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		return 0;
	}
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	return 0;
}

/* A SIGCONT for a held process that does not come from the agent or its
 * guard (an administrator, or another process of the same user trying to
 * slip a write past the judge): counted, and marked on the hold so that
 * the journal says the process went on unjudged. A fail-closed write is
 * stopped in its tracks by ssl_write_guard. */
SEC("tp_btf/signal_generate")
int BPF_PROG(signal_generate, int sig, void *info, struct task_struct *task, int group, int result)
{
	if (retired())
		return 0;
	if (sig != SIGCONT)
		return 0;
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&settings, &zero);
	if (!cfg || !cfg->holds)
		return 0;
	__u32 sender = bpf_get_current_pid_tgid() >> 32;
	if (sender == cfg->agent_tgid || sender == cfg->guard_tgid)
		return 0;
	__u32 ids[2] = {BPF_CORE_READ(task, pid), BPF_CORE_READ(task, tgid)};
	for (int i = 0; i < 2; i++) {
		struct hold *h = bpf_map_lookup_elem(&holds, &ids[i]);
		if (h) {
			h->flags |= HOLD_F_FOREIGN_CONT;
			count(CNT_FOREIGN_CONT);
			return 0;
		}
	}
	return 0;
}

/* A new cgroup while some enforcing policy names systemd units or cgroups
 * that may appear at any time (a unit started or restarted gets a new
 * cgroup, with a new id): in scope at once, under the "pending" policy,
 * until user space has matched its path against the policies. */
SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(cgroup_mkdir, struct cgroup *cgrp, const char *path)
{
	if (retired())
		return 0;
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&settings, &zero);
	if (!cfg || !cfg->holds || !cfg->watch_mkdir)
		return 0;
	if (BPF_CORE_READ(cgrp, root, hierarchy_id) != 0)
		return 0; /* a cgroup v1 hierarchy */
	__u64 id = BPF_CORE_READ(cgrp, kn, id);
	struct hold_policy p = cfg->pending;
	p.pending = 1;
	if (bpf_map_update_elem(&scope, &id, &p, BPF_NOEXIST) < 0)
		return 0;
	struct file_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(CNT_LOST);
		return 0; /* stays pending: in scope, the safe side */
	}
	__builtin_memset(&e->h, 0, sizeof(e->h));
	e->h.kind = EV_CGROUP;
	e->h.ts = bpf_ktime_get_ns();
	e->h.cgroup = id;
	e->ino = id;
	e->dev = 0;
	e->ppid = 0;
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), path);
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	return 0;
}

/* MCP servers over stdio speak JSON-RPC on their stdin and stdout: pipes,
 * or socket pairs (libuv). User space names the processes worth reading
 * (stdio_watch: tgid in the agent's pid namespace -> STDIO_IN|STDIO_OUT)
 * and stops when their bytes are not JSON-RPC; of those, read(0, ...) and
 * write(1, ...) are copied (up to MAX_DATA per call) at the syscall's exit,
 * when the count of bytes moved is known: x86-64 keeps the arguments in
 * pt_regs, so the exit alone has the fd, the buffer and the count. Nothing
 * is held. Every other system call of the host costs the program's
 * invocation and a compare of the syscall number; a read or write, a
 * compare of the fd; a read of fd 0 or write of fd 1, one lookup. */
enum {
	STDIO_IN = 1,
	STDIO_OUT = 2,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} stdio_watch SEC(".maps");

/* The kernel's pt_regs (x86-64), the fields read. */
struct pt_regs___kernel {
	unsigned long di;
	unsigned long si;
	unsigned long orig_ax;
} __attribute__((preserve_access_index));

#define NR_read 0
#define NR_write 1

SEC("tp_btf/sys_exit")
int BPF_PROG(stdio_exit, struct pt_regs___kernel *regs, long ret)
{
	if (ret <= 0)
		return 0;
	unsigned long nr = regs->orig_ax;
	unsigned long fd = regs->di;
	__u8 kind, bit;
	if (nr == NR_read && fd == 0) {
		kind = EV_STDIN;
		bit = STDIO_IN;
	} else if (nr == NR_write && fd == 1) {
		kind = EV_STDOUT;
		bit = STDIO_OUT;
	} else {
		return sock_exit(regs, nr, fd, ret); /* MCP over HTTP, below */
	}
	__u64 id;
	if (current_id(&id) < 0)
		return 0;
	__u32 tgid = id >> 32;
	__u8 *w = bpf_map_lookup_elem(&stdio_watch, &tgid);
	if (!w || !(*w & bit) || retired())
		return 0;
	count(CNT_STDIO);
	if (ring_crowded()) { /* context, never held: gives way (sock_copy) */
		count(CNT_LOST);
		return 0;
	}
	return submit_data(kind, fd, (const void *)regs->si, (__u64)ret, NULL, NULL);
}

/* ---- MCP over streamable HTTP on loopback ----
 * A process that starts listening on a TCP port reachable from loopback
 * (bound to 127/8, ::1, or any address) becomes a candidate: the
 * inet_sock_set_state tracepoint, in the listening process, adds its tgid
 * to http_watch and (tgid, port) to http_ports; user space adds the
 * listeners it finds at start and removes processes that are gone or
 * carry no JSON-RPC. Of a candidate's read, readv, recvfrom, recvmsg,
 * write, writev, sendto and sendmsg calls, those on a TCP socket whose
 * local port is one it listens on and whose peer is loopback are copied at
 * the syscall's exit as EV_SOCK_IN / EV_SOCK_OUT (ssl: the socket's
 * kernel address xor the peer port, which names the connection across fd
 * and socket reuse; one event per buffer of a vector call). A process that is not a candidate pays,
 * for each of these calls, one lookup in http_watch; any other call
 * nothing more than before. */
/* 0: the HTTP branch is off (set by the loader): sock_exit is dead code
 * the verifier removes, stdio_exit is what it was without it. */
const volatile __u32 http_on = 1;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} http_watch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct http_port_key);
	__type(value, __u8);
} http_ports SEC(".maps");

#define NR_readv 19
#define NR_writev 20
#define NR_sendto 44
#define NR_recvfrom 45
#define NR_sendmsg 46
#define NR_recvmsg 47

#define AF_INET 2
#define AF_INET6 10
#define TCP_LISTEN 10
#define S_IFMT 0170000
#define S_IFSOCK 0140000
/* Buffers of a vector call copied; the bytes of the rest are reported lost. */
#define SOCK_MAX_IOV 8

struct iovec___http {
	__u64 base;
	__u64 len;
};

struct msghdr___user {
	__u64 name;
	__u32 namelen;
	__u32 _pad;
	__u64 iov;
	__u64 iovlen;
};

/* 127.0.0.0/8, ::1 or ::ffff:127.x.y.z (addresses in network order). */
static __always_inline int loopback4(__be32 a)
{
	return (bpf_ntohl(a) >> 24) == 127;
}

static __always_inline int loopback6(const struct in6_addr *a)
{
	__u32 w0 = a->in6_u.u6_addr32[0], w1 = a->in6_u.u6_addr32[1];
	__u32 w2 = a->in6_u.u6_addr32[2], w3 = a->in6_u.u6_addr32[3];
	if (w0 || w1)
		return 0;
	if (w2 == 0)
		return w3 == bpf_htonl(1);
	return w2 == bpf_htonl(0xffff) && loopback4(w3);
}

static __always_inline int any6(const struct in6_addr *a)
{
	return !(a->in6_u.u6_addr32[0] | a->in6_u.u6_addr32[1] | a->in6_u.u6_addr32[2] | a->in6_u.u6_addr32[3]);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(http_listen, struct sock___http *sk, int oldstate, int newstate)
{
	if (!http_on || newstate != TCP_LISTEN || retired())
		return 0;
	unsigned short family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family == AF_INET) {
		__be32 a = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		if (a != 0 && !loopback4(a))
			return 0;
	} else if (family == AF_INET6) {
		struct in6_addr a = BPF_CORE_READ(sk, __sk_common.skc_v6_rcv_saddr);
		if (!any6(&a) && !loopback6(&a))
			return 0;
	} else {
		return 0;
	}
	__u64 id;
	if (current_id(&id) < 0)
		return 0;
	__u32 tgid = id >> 32;
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&settings, &zero);
	if (cfg && cfg->agent_tgid == tgid)
		return 0;
	struct http_port_key k = {.tgid = tgid, .port = BPF_CORE_READ(sk, __sk_common.skc_num)};
	__u8 one = 1;
	bpf_map_update_elem(&http_ports, &k, &one, BPF_ANY);
	bpf_map_update_elem(&http_watch, &tgid, &one, BPF_ANY);
	return 0;
}

/* The name of fd's connection when it is a connection of a port the
 * process listens on with a loopback peer, else 0. */
static __always_inline __u64 loopback_conn(__u32 tgid, unsigned long fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file___http *f = NULL;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) < 0 || !f)
		return 0;
	if ((BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return 0;
	struct socket___http *sock = BPF_CORE_READ(f, private_data);
	struct sock___http *sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return 0;
	struct http_port_key k = {.tgid = tgid, .port = BPF_CORE_READ(sk, __sk_common.skc_num)};
	if (!bpf_map_lookup_elem(&http_ports, &k))
		return 0;
	unsigned short family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family == AF_INET) {
		if (!loopback4(BPF_CORE_READ(sk, __sk_common.skc_daddr)))
			return 0;
	} else if (family == AF_INET6) {
		struct in6_addr a = BPF_CORE_READ(sk, __sk_common.skc_v6_daddr);
		if (!loopback6(&a))
			return 0;
	} else {
		return 0;
	}
	/* The connection's name: the socket's address, its top 16 bits
	 * (all ones in a kernel address) replaced by the peer's port, so that
	 * a new connection in a freed socket's memory is another connection. */
	__u64 dport = BPF_CORE_READ(sk, __sk_common.skc_dport);
	return (__u64)sk ^ (dport << 48);
}

static __noinline int sock_copy(__u8 kind, __u64 conn, __u64 buf, __u64 len)
{
	/* Context, never held: like a monitoring copy, it gives way to what
	 * enforcement needs when the ring is crowded (a loopback server pumps
	 * as much as it likes through its own connections). */
	if (ring_crowded()) {
		count(CNT_LOST);
		return 0;
	}
	return submit_data(kind, conn, (const void *)buf, len, NULL, NULL);
}

static __always_inline int sock_exit(struct pt_regs___kernel *regs, unsigned long nr, unsigned long fd, long ret)
{
	if (!http_on)
		return 0;
	__u8 kind;
	switch (nr) {
	case NR_read:
	case NR_readv:
	case NR_recvfrom:
	case NR_recvmsg:
		kind = EV_SOCK_IN;
		break;
	case NR_write:
	case NR_writev:
	case NR_sendto:
	case NR_sendmsg:
		kind = EV_SOCK_OUT;
		break;
	default:
		return 0;
	}
	__u64 id;
	if (current_id(&id) < 0)
		return 0;
	__u32 tgid = id >> 32;
	if (!bpf_map_lookup_elem(&http_watch, &tgid) || retired())
		return 0;
	__u64 sk = loopback_conn(tgid, fd);
	if (!sk)
		return 0;
	count(CNT_SOCK);
	__u64 arg = regs->si;
	if (nr == NR_read || nr == NR_write || nr == NR_recvfrom || nr == NR_sendto)
		return sock_copy(kind, sk, arg, (__u64)ret);
	__u64 iov, cnt;
	if (nr == NR_readv || nr == NR_writev) {
		iov = arg;
		cnt = ((struct pt_regs___http *)regs)->dx;
	} else {
		struct msghdr___user mh;
		if (bpf_probe_read_user(&mh, sizeof(mh), (const void *)arg) < 0)
			return sock_copy(kind, sk, 0, (__u64)ret);
		iov = mh.iov;
		cnt = mh.iovlen;
	}
	__u64 left = (__u64)ret;
	for (int i = 0; i < SOCK_MAX_IOV; i++) {
		if (i >= cnt || left == 0)
			break;
		struct iovec___http v;
		if (bpf_probe_read_user(&v, sizeof(v), (const void *)(iov + i * sizeof(v))) < 0)
			break;
		__u64 n = v.len < left ? v.len : left;
		sock_copy(kind, sk, v.base, n);
		left -= n;
	}
	if (left > 0)
		sock_copy(kind, sk, 0, left); /* not copied: user space counts it lost */
	return 0;
}

/* ------------------------------------------------------------------------
 * Go crypto/tls (agent/internal/gosym finds the sites; issue 15).
 *
 * Go links its own TLS and passes arguments in registers (ABIInternal,
 * Go 1.17+ on amd64): at the first instruction past the stack check of
 * crypto/tls.(*Conn).Write and Read ("Body": runs once per call, also when
 * the goroutine's stack had to grow first), RAX is the *Conn, RBX the
 * buffer, RCX its length; R14 is the goroutine (g) throughout. A result is
 * read at each RET of the function (an ordinary uprobe there, RAX = n):
 * never a uretprobe on Go, whose stacks move. The *Conn is the
 * connection's identity, where OpenSSL's is the SSL*: one Conn is one TLS
 * connection for its whole life, and Go's heap does not move.
 * ------------------------------------------------------------------------ */

/* A Go Read in progress, by goroutine: its goroutine may run on another
 * thread when it returns, and HTTP/2 reads and writes one Conn from two
 * goroutines at once. LRU: a goroutine that panics out of Read never
 * reaches a RET. */
struct go_read_key {
	__u32 tgid;
	__u32 _pad;
	__u64 g;
};

struct go_read_args {
	__u64 conn;
	__u64 buf;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct go_read_key);
	__type(value, struct go_read_args);
} go_reads SEC(".maps");

/* A Go write held, by goroutine: the thread it was held on (the key of
 * "holds"). A goroutine resumed by someone else may be preempted between
 * the write probe and its guard and go on on another thread: the guard
 * finds its hold through the goroutine. LRU: a record the guard never
 * consumed (no guard attached: fail-open) is dropped in time. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct go_read_key);
	__type(value, __u32);
} go_held SEC(".maps");

/* The registers of Go's ABIInternal on amd64 (struct pt_regs of the UAPI
 * header, as uprobe programs see it). */
#define GO_RAX(ctx) ((ctx)->rax)
#define GO_RBX(ctx) ((ctx)->rbx)
#define GO_RCX(ctx) ((ctx)->rcx)
#define GO_G(ctx) ((ctx)->r14)

/* func (c *Conn) Write(b []byte) (int, error), at its Body: the same
 * event and hold path as SSL_write (on_write), the *Conn as the SSL*. A
 * held Go write stops the whole process as an OpenSSL one does, and is
 * remembered by goroutine for go_tls_write_guard. */
SEC("uprobe/go_tls_write")
int go_tls_write(struct pt_regs *ctx)
{
	if (retired())
		return 0;
	long len = (long)GO_RCX(ctx);
	if (len <= 0)
		return 0;
	__u64 conn = GO_RAX(ctx);
	const void *buf = (const void *)GO_RBX(ctx);

	struct config *cfg;
	struct hold_policy *p;
	if (!write_wanted(&cfg, &p))
		return 0;
	submit_data(EV_WRITE, conn, buf, (__u64)len, cfg, p);
	if (!p)
		return 0;
	__u64 id;
	if (current_id(&id) < 0)
		return 0;
	__u32 tid = (__u32)id;
	struct hold *h = bpf_map_lookup_elem(&holds, &tid);
	if (h && h->kind == HOLD_WRITE && h->ssl == conn) {
		struct go_read_key k = {.tgid = id >> 32, .g = GO_G(ctx)};
		bpf_map_update_elem(&go_held, &k, &tid, BPF_ANY);
	}
	return 0;
}

/* The hold guard of a Go write (see ssl_write_guard), at the first
 * emulated instruction after go_tls_write's on every way out: finds the
 * hold by goroutine, whichever thread runs it now. */
SEC("uprobe/go_tls_write_guard")
int go_tls_write_guard(struct pt_regs *ctx)
{
	if (retired())
		return 0;
	__u64 id;
	if (current_id(&id) < 0)
		return 0;
	struct go_read_key k = {.tgid = id >> 32, .g = GO_G(ctx)};
	__u32 *t = bpf_map_lookup_elem(&go_held, &k);
	if (!t)
		return 0;
	__u32 tid = *t;
	bpf_map_delete_elem(&go_held, &k);
	return guard_resolve(tid, id);
}

/* func (c *Conn) Read(b []byte) (int, error), at its Body: remember the
 * connection and the buffer until a RET of the same goroutine. */
SEC("uprobe/go_tls_read")
int go_tls_read(struct pt_regs *ctx)
{
	if (retired())
		return 0;
	struct go_read_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .g = GO_G(ctx)};
	struct go_read_args a = {.conn = GO_RAX(ctx), .buf = GO_RBX(ctx)};
	bpf_map_update_elem(&go_reads, &k, &a, BPF_ANY);
	return 0;
}

/* At each RET of (*Conn).Read: RAX is n. */
SEC("uprobe/go_tls_read_ret")
int go_tls_read_ret(struct pt_regs *ctx)
{
	if (retired())
		return 0;
	struct go_read_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .g = GO_G(ctx)};
	struct go_read_args *a = bpf_map_lookup_elem(&go_reads, &k);
	if (!a)
		return 0;
	struct go_read_args args = *a;
	bpf_map_delete_elem(&go_reads, &k);
	long n = (long)GO_RAX(ctx);
	if (n <= 0)
		return 0;
	count(CNT_READS);
	return submit_data(EV_READ, args.conn, (const void *)args.buf, (__u64)n, NULL, NULL);
}

/* func (c *Conn) Close() error, at its Body: the connection ends, as at
 * SSL_free (Close may come more than once: user space forgets a
 * connection it does not know). */
SEC("uprobe/go_tls_close")
int go_tls_close(struct pt_regs *ctx)
{
	if (retired())
		return 0;
	struct event_header h = {};
	if (fill_header(&h, EV_FREE) < 0)
		return 0;
	h.ssl = GO_RAX(ctx);
	struct conn_key ck = {.pid = h.pid, .ssl = h.ssl};
	bpf_map_delete_elem(&watch, &ck);
	if (bpf_ringbuf_output(&events, &h, sizeof(h), ring_flags()) < 0)
		count(CNT_LOST);
	return 0;
}

/* ---- Unmonitored TLS: connections to TLS ports (AARSM_UNMONITORED) ----
 *
 * A process that connects to a TLS port (tls_ports: 443 unless user space
 * names others) is reported once per process image (EV_CONNECT), so that
 * user space can check whether any file it maps is probed: if none is,
 * its TLS goes unseen and it is reported unmonitored. The tracepoint fires
 * on every TCP state change of the host; all but an active open to a
 * listed port return after two compares and a lookup. */
#include "unmonitored.h"

#define TCP_SYN_SENT 2
#define IPPROTO_TCP_ 6

/* Destination ports (host order) that carry TLS. Written by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u16);
	__type(value, __u8);
} tls_ports SEC(".maps");

/* Processes already reported, by tgid: the address of their memory map,
 * which an exec replaces (so a new image, or a reused pid, is reported
 * again). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, __u64);
} tls_connects SEC(".maps");

/* Layout of tracepoint/sock/inet_sock_set_state (the fields read). */
struct inet_sock_set_state_args {
	__u64 _common;
	__u64 skaddr;
	__s32 oldstate;
	__s32 newstate;
	__u16 sport;
	__u16 dport; /* host order */
	__u16 family;
	__u16 protocol;
};

SEC("tracepoint/sock/inet_sock_set_state")
int tls_connect(struct inet_sock_set_state_args *args)
{
	if (args->newstate != TCP_SYN_SENT || args->protocol != IPPROTO_TCP_)
		return 0;
	__u16 port = args->dport;
	if (!bpf_map_lookup_elem(&tls_ports, &port) || retired())
		return 0;
	struct event_header h = {};
	if (fill_header(&h, EV_CONNECT) < 0)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 image = (__u64)BPF_CORE_READ(task, mm);
	__u64 *seen = bpf_map_lookup_elem(&tls_connects, &h.pid);
	if (seen && *seen == image)
		return 0;
	bpf_map_update_elem(&tls_connects, &h.pid, &image, BPF_ANY);
	h.ssl = port;
	if (bpf_ringbuf_output(&events, &h, sizeof(h), BPF_RB_FORCE_WAKEUP) < 0)
		count(CNT_LOST);
	return 0;
}

/* ---- rustls (agent/internal/rustls) ----
 * Statically linked rustls 0.23 (Codex, Deno): the probe sits on the call
 * of MessageEncrypter::encrypt(&mut self, msg: OutboundPlainMessage, seq)
 * in RecordLayer::encrypt_outgoing, where every record's plaintext is
 * handed to the cipher. At the call: rsi the encrypter (one per connection
 * and direction: it stands for the SSL*), rdx the message. The message's
 * layout is rustc's (measured on the builds agent/internal/rustls
 * recognises): payload OutboundChunks at 0 (word 0 zero: Single, slice at
 * 8/16; else Multiple: chunks pointer 0, count 8, start 16, end 24), the
 * content type's tag at 32 (3: application data; handshake messages and
 * alerts are skipped). Each piece goes the way of SSL_write (write_wanted,
 * then submit_data, as on_write). */
#define RUSTLS_APPDATA 3
#define RUSTLS_MAX_CHUNKS 8

struct rustls_plain {
	__u64 w[4];
	__u8 typ;
};

struct rustls_slice {
	__u64 ptr;
	__u64 len;
};

/* Global: verified once, not once per call. */
__noinline int rustls_copy(__u64 conn, __u64 buf, __u64 len)
{
	struct config *cfg;
	struct hold_policy *p;

	if (len == 0 || !write_wanted(&cfg, &p))
		return 0;
	set_last_op((__u32)bpf_get_current_pid_tgid(), EV_WRITE, conn);
	return submit_data(EV_WRITE, conn, (const void *)buf, len, cfg, p);
}

SEC("uprobe/rustls_encrypt")
int rustls_encrypt(struct pt_regs *ctx)
{
	if (retired())
		return 0;
	__u64 conn = PT_REGS_PARM2(ctx);
	struct rustls_plain m;
	if (bpf_probe_read_user(&m, sizeof(m), (const void *)PT_REGS_PARM3(ctx)) < 0)
		return 0;
	if (m.typ != RUSTLS_APPDATA)
		return 0;
	if (m.w[0] == 0)
		return rustls_copy(conn, m.w[1], m.w[2]);
	/* Multiple { chunks, start, end }: the bytes [start, end) of the
	 * chunks laid end to end. */
	__u64 n = m.w[1], start = m.w[2], end = m.w[3], at = 0;
	for (int i = 0; i < RUSTLS_MAX_CHUNKS; i++) {
		if (i >= n || at >= end)
			break;
		struct rustls_slice s;
		if (bpf_probe_read_user(&s, sizeof(s), (const void *)(m.w[0] + i * sizeof(s))) < 0)
			return 0;
		__u64 from = at, to = at + s.len;
		at = to;
		if (to <= start)
			continue;
		__u64 skip = start > from ? start - from : 0;
		__u64 stop = end < to ? end - from : s.len;
		rustls_copy(conn, s.ptr + skip, stop - skip);
	}
	return 0;
}
/* ---- end of rustls ---- */
