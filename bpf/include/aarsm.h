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
};

enum aarsm_event_flags {
	EV_F_TRUNCATED = 1 << 0, /* len > captured bytes */
	EV_F_UNKNOWN_FILE = 1 << 1, /* EV_EXEC, EV_MMAP: the file has not been seen before */
	EV_F_HELD = 1 << 2,      /* EV_WRITE: stopped until user space judges the write; EV_EXEC, EV_MMAP: until it has examined the file */
};

/* Common header of every event, 64 bytes. */
struct event_header {
	__u8 kind;
	__u8 flags;
	__u16 _pad0;
	__u32 pid;   /* thread group id */
	__u32 tid;
	__u32 len;   /* EV_WRITE/EV_READ: true length of the call */
	__u64 ts;    /* bpf_ktime_get_ns */
	__u64 cgroup;/* cgroup v2 id */
	__u64 ssl;   /* SSL* */
	char comm[16];
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

/* Run-time settings written by user space (array map "config", key 0). */
struct config {
	__u32 holds;     /* 1: hold candidate writes of processes in scope */
	__u32 scope_all; /* 1: every process is in scope; else only cgroups in "scope" */
	__u32 scope_only; /* 1 (with holds): writes of processes out of scope are not even copied */
	__u32 _pad;
};

/* A connection: process and SSL*. */
struct conn_key {
	__u32 pid;
	__u32 _pad;
	__u64 ssl;
};

/* A write held for judgement, by thread id. */
struct hold {
	__u32 pid;
	__u32 _pad;
	__u64 ssl;
	__u64 ts;
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

struct task_struct {
	unsigned int flags;
	int pid;
	int tgid;
	struct css_set *cgroups;
	struct task_struct *real_parent;
	struct files_struct *files;
	struct mm_struct *mm;
} __attribute__((preserve_access_index));

#endif
