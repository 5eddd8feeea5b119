// placeholder, replaced by the real proc probes
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "Dual BSD/GPL";
SEC("tracepoint/sched/sched_process_exit") int ab_proc_placeholder(void *ctx) { return 0; }
