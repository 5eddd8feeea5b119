// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// empty_uprobe.bpf.c — the baseline of the capture benchmark: programs that do nothing, to
// measure what a uprobe (and a uretprobe) hit costs on this machine by itself.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("uprobe")
int empty_entry(void *ctx)
{
	return 0;
}

SEC("uretprobe")
int empty_return(void *ctx)
{
	return 0;
}
