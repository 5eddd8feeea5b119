// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * proc.bpf.c — process lifecycle (host-wide, rare events): exec, fork, exit.
 * Feeds the daemon's process table (lineage, attribution) and cleans per-process kernel state.
 */
#include "maps.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tp/sched/sched_process_exec")
int ab_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	if (!ab_in_scope())
		return 0; /* outside the --cgroup-scope: not this daemon's process */
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct ab_proc_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		ab_count(AB_CNT_RB_RESERVE_FAIL, 1);
		return 0;
	}
	ab_fill_header(&e->hdr, AB_EV_EXEC);
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->exit_code = 0;
	e->start_time_ns = BPF_CORE_READ(task, start_boottime);
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->_pad = 0;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	unsigned int off = ctx->__data_loc_filename & 0xFFFF;
	bpf_probe_read_kernel_str(&e->filename, sizeof(e->filename), (void *)ctx + off);
	__u32 pid = e->hdr.pid; /* read before submit: the record is gone after it */
	bpf_ringbuf_submit(e, 0);
	/* exec replaces the image: a new program is judged afresh at its next connect. */
	struct ab_watch_value *w = bpf_map_lookup_elem(&watch, &pid);
	if (w && w->state != AB_WATCH_ATTACHED)
		bpf_map_delete_elem(&watch, &pid);
	return 0;
}

/* tp_btf gives both task pointers, so a new thread (same tgid) is told from a new process. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(ab_fork, struct task_struct *parent, struct task_struct *child)
{
	if (child->pid != child->tgid || !ab_in_scope()) /* the child starts in its parent's cgroup */
		return 0;
	struct ab_proc_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		ab_count(AB_CNT_RB_RESERVE_FAIL, 1);
		return 0;
	}
	ab_fill_header(&e->hdr, AB_EV_FORK);
	e->hdr.pid = child->tgid;
	e->hdr.tid = child->pid;
	e->ppid = parent->tgid;
	e->exit_code = 0;
	e->start_time_ns = child->start_boottime;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->_pad = 0;
	bpf_probe_read_kernel_str(&e->comm, sizeof(e->comm), child->comm);
	e->filename[0] = 0;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp/sched/sched_process_exit")
int ab_exit(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	/* Only the last thread of a process: signal->live reaches 0 before this tracepoint. */
	int live = BPF_CORE_READ(task, signal, live.counter);
	if (live != 0)
		return 0;
	__u32 pid = BPF_CORE_READ(task, tgid);
	/* Outside the scope: no record, but the per-pid entries still go (a process moved out). */
	struct ab_proc_event *e = ab_in_scope() ? bpf_ringbuf_reserve(&events, sizeof(*e), 0) : NULL;
	if (e) {
		ab_fill_header(&e->hdr, AB_EV_EXIT);
		e->hdr.pid = pid;
		e->ppid = BPF_CORE_READ(task, real_parent, tgid);
		e->exit_code = BPF_CORE_READ(task, exit_code);
		e->start_time_ns = BPF_CORE_READ(task, group_leader, start_boottime);
		e->uid = 0;
		e->_pad = 0;
		bpf_get_current_comm(&e->comm, sizeof(e->comm));
		e->filename[0] = 0;
		bpf_ringbuf_submit(e, 0);
	} else if (ab_in_scope()) {
		ab_count(AB_CNT_RB_RESERVE_FAIL, 1);
	}
	bpf_map_delete_elem(&watch, &pid);
	bpf_map_delete_elem(&holds, &pid);
	bpf_map_delete_elem(&matched_pids, &pid);
	return 0;
}
