// Package act is the last stage of the pipeline: the responses the
// enforcement loop carries out after a block verdict.
//
//   - Kill and Continue signal one process, named by PID and start time so
//     that a reused PID is never signalled (the signal goes through a pidfd
//     opened before the start time is checked).
//   - DestroySockets tears down the TCP connections of a process with
//     netlink SOCK_DESTROY: its blocked reads and writes fail with
//     ECONNABORTED, the peer sees a reset, the process lives on;
//     BlockSockets, for a block verdict, keeps the connections the process
//     accepted from loopback clients (an MCP server's client). Peers
//     lists, the same way, the remote addresses of its outbound TCP
//     connections (for the journal's AARSM_PEER).
//   - UnitOf / LookupUnit find the systemd unit of a process from
//     /proc/PID/cgroup; DialSystemd and StopUnit stop it through the
//     service manager's D-Bus API.
//   - Quarantine refuses every new egress (connect and sendmsg, IPv4 and
//     IPv6, loopback included) of chosen cgroups until a deadline, with
//     cgroup sock_addr programs attached once to the cgroup v2 root and a
//     map pinned in bpffs, so a quarantine outlives an agent restart.
//     LiftQuarantine and ListQuarantine ("aarsm quarantine") work on the
//     pins and the state file directly, under the agent's state lock.
//   - Package vault keeps the quarantined messages themselves: root-only
//     files, written in the background (Executor.Vault, Plan.Keep).
//   - Executor runs a verdict's effects (policy.Effect) against one process
//     in a fixed order and reports what was done (Done) for the journal.
package act
