/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/* Shared definitions of the AARSM eBPF programs: event layout and the few
 * kernel structures read with CO-RE (relocated against the running kernel's
 * BTF at load time, so no vmlinux.h is needed). */
#ifndef AARSM_H
#define AARSM_H

#include <linux/types.h>

/* Largest plaintext copied per TLS call. A longer call keeps its true
 * length in the event and carries EV_F_TRUNCATED. */
#define MAX_DATA 16384

/* Event kinds. Keep in sync with agent/internal/probe/event.go. */
enum aarsm_event_kind {
	EV_WRITE = 1,        /* SSL_write / SSL_write_ex entry: plaintext about to be encrypted */
	EV_READ = 2,         /* SSL_read / SSL_read_ex return: plaintext just decrypted */
	EV_WRITE_FAILED = 3, /* SSL_get_error(ssl, ret <= 0) right after a write on the same thread */
	EV_FREE = 4,         /* SSL_free: the connection is gone */
	EV_EXEC = 5,         /* a process image was replaced */
	EV_EXIT = 6,         /* a thread group leader exited */
	EV_MMAP = 7,         /* a not yet examined file was mapped executable */
	EV_CGROUP = 8,       /* a cgroup was created while new cgroups are in scope until judged */
	EV_STDIN = 9,        /* a watched process read its stdin (fd 0): ssl is the fd, len the bytes read */
	EV_STDOUT = 10,      /* a watched process wrote its stdout (fd 1): ssl is the fd, len the bytes written */
	EV_SOCK_IN = 11,     /* an HTTP candidate read a loopback connection of a port it listens on: ssl is the socket */
	EV_SOCK_OUT = 12,    /* an HTTP candidate wrote such a connection: ssl is the socket */
};

/* Event flags. Keep in sync with agent/internal/probe/event.go. */
enum aarsm_event_flags {
	EV_F_TRUNCATED = 1 << 0, /* len > captured bytes */
	EV_F_UNKNOWN_FILE = 1 << 1, /* EV_EXEC, EV_MMAP: the file has not been seen before */
	EV_F_HELD = 1 << 2,      /* EV_WRITE: stopped until user space judges the write; EV_EXEC, EV_MMAP: until it has examined the file */
	EV_F_SCOPED = 1 << 3,    /* EV_WRITE, EV_READ: the process is in an enforcing policy's hold scope (a hold policy applied) */
};

/* The events: a header (64 bytes), then the plaintext (struct data_event,
 * 64 + the bytes copied) or the file (struct file_event, 336 bytes). The
 * agent decodes them as the Go types bpf2go generates from these structs
 * (agent/internal/probe/event.go): after a change here, run make generate. */
struct event_header {
	__u8 kind;
	__u8 flags;
	__u16 _pad0;
	__u32 pid;   /* thread group id */
	__u32 tid;
	__u32 len;   /* EV_WRITE/EV_READ: true length of the call */
	__u64 ts;    /* bpf_ktime_get_ns */
	__u64 cgroup;/* cgroup v2 id */
	__u64 ssl;   /* SSL*; EV_STDIN, EV_STDOUT: the fd */
	char comm[16];
	__u64 buf;   /* EV_WRITE: the caller's buffer (a held write longer than
		      * MAX_DATA is read whole from it while the process is stopped) */
};

struct data_event {
	struct event_header h;
	__u8 data[MAX_DATA];
};

#define FILENAME_MAX_LEN 256

struct file_event {
	struct event_header h;
	__u64 ino;
	__u32 dev;  /* kernel dev_t: major << 20 | minor */
	__u32 ppid;
	char filename[FILENAME_MAX_LEN];
};

/* How the holds of a process in scope end when nobody judges them in
 * time: the value of the "scope" map, and of the whole host in struct
 * config. A deadline of 0 ms means the default was not filled in: user
 * space always writes one. */
struct hold_policy {
	__u32 fail_closed; /* 1: kill the held process; 0: resume it unjudged */
	__u32 exec_ms;     /* longest hold for a file to be examined (exec, mmap) */
	__u32 write_ms;    /* longest hold of a write */
	__u32 pending;     /* scope entry of a new cgroup that user space has not judged yet */
};

/* Run-time settings written by user space (array map "settings", key 0). */
struct config {
	__u32 holds;      /* 1: hold candidate writes of processes in scope */
	__u32 hold_all;   /* 1: every process is in scope (with policy "all"); else only cgroups in "scope" */
	__u32 copy_all;   /* 1: copy the writes of processes out of scope too (nothing held) */
	__u32 watch_mkdir; /* 1: a new cgroup is in scope (policy "pending") until user space judged it */
	struct hold_policy all;
	struct hold_policy pending;
	__u32 scoped;     /* 1 (with hold_all): the "scope" map has entries that override "all" */
	__u32 _pad;
	__u64 self_cgroup; /* the agent's own cgroup: never held (its guard, its ExecStopPost run there) */
	__u32 agent_tgid; /* SIGCONTs from these processes are the agent's own */
	__u32 guard_tgid;
	__u64 stale_ns;   /* heartbeat older than this: the agent is not judging; take no hold, apply the fail mode at once. 0: no check */
};

/* Hold kinds. */
enum {
	HOLD_WRITE = 1,
	HOLD_FILE = 2,
};

/* Hold flags. */
enum {
	HOLD_F_FOREIGN_CONT = 1 << 0, /* someone else than the agent sent SIGCONT while held */
};

/* A connection: process and SSL*. */
/* What the kernel holds of a connection's writes (the "watch" map). */
enum conn_mode {
	CONN_ALL = 1,   /* a message in progress, or SMTP: every write */
	CONN_H1 = 2,    /* HTTP/1.x between requests: all but one whole GET/HEAD */
	CONN_H2 = 3,    /* HTTP/2: writes that may carry a request body (h2_holds) */
	CONN_OTHER = 4, /* neither: writes that start a candidate (starts_candidate) */
};

struct conn_key {
	__u32 pid;
	__u32 _pad;
	__u64 ssl;
};

/* A process held for judgement, by thread id. */
struct hold {
	__u32 pid;         /* thread group id */
	__u8 kind;         /* HOLD_WRITE, HOLD_FILE */
	__u8 fail_closed;  /* what the deadline does: kill (1) or resume (0) */
	__u8 flags;        /* HOLD_F_* */
	__u8 _pad;
	__u64 ssl;         /* HOLD_WRITE: the SSL* */
	__u64 ts;          /* bpf_ktime_get_ns when held */
	__u64 deadline;    /* bpf_ktime_get_ns by which it is resolved, judged or not */
	__u64 start;       /* the thread's start (boot-time ns): tells a reused thread id */
};

struct inode_key {
	__u64 ino;
	__u32 dev;
	__u32 _pad;
};

/* CO-RE views of kernel structures: only the fields read here. */
struct super_block {
	unsigned int s_dev;
} __attribute__((preserve_access_index));

struct inode {
	unsigned long i_ino;
	struct super_block *i_sb;
} __attribute__((preserve_access_index));

struct file {
	struct inode *f_inode;
} __attribute__((preserve_access_index));

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} __attribute__((preserve_access_index));

struct files_struct {
	struct fdtable *fdt;
} __attribute__((preserve_access_index));

struct mm_struct {
	struct file *exe_file;
} __attribute__((preserve_access_index));

struct linux_binprm {
	const char *filename;
} __attribute__((preserve_access_index));

/* Kernels before 6.1 keep the ids of a cgroup's ancestors in the cgroup
 * (ancestor_ids[level], the cgroup itself at its own level); read only when
 * bpf_get_current_ancestor_cgroup_id is missing (before 5.11). */
struct cgroup___ids {
	int level;
	__u64 ancestor_ids[];
} __attribute__((preserve_access_index));

struct css_set {
	struct cgroup___ids *dfl_cgrp;
} __attribute__((preserve_access_index));

struct kernfs_node {
	__u64 id;
} __attribute__((preserve_access_index));

struct cgroup_root {
	int hierarchy_id;
} __attribute__((preserve_access_index));

struct cgroup {
	struct kernfs_node *kn;
	struct cgroup_root *root;
} __attribute__((preserve_access_index));

struct task_struct {
	unsigned int flags;
	__u64 start_boottime;
	int pid;
	int tgid;
	struct css_set *cgroups;
	struct task_struct *real_parent;
	struct files_struct *files;
	struct mm_struct *mm;
} __attribute__((preserve_access_index));

#endif
