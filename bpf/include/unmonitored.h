/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/* AARSM_UNMONITORED: processes that open TCP connections to a TLS port
 * (443, or another port user space names) so that user space can tell
 * whether any file they map is probed. Kept apart from aarsm.h so that the
 * event kind does not collide with others added there. */
#ifndef AARSM_UNMONITORED_H
#define AARSM_UNMONITORED_H

/* An event_header alone: pid, tid, comm, cgroup; ssl holds the
 * destination port. Keep in sync with agent/internal/probe/event.go. */
#define EV_CONNECT 32

#endif
