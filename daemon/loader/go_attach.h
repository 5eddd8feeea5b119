// go_attach.h — attach the Go crypto/tls programs to one process (see go_symbols.h for where
// they go and why there is no uretprobe).
#pragma once
#include <string>
#include <vector>

#include "loader/bpf_runtime.h"
#include "loader/go_symbols.h"
#include "loader/tls_attach.h"

namespace ab::loader {

// Attaches entry probes of (*Conn).Write / Read / Close and a probe on every RET of Write and
// Read, for pid only, to the file named by `target` (ObjectFile::fd_path(): the inode the
// process maps); `path` is its name as the process sees it, for errors and out->objects.
// Links are appended to out; returns 0 or negative errno (links already made stay in out for
// the caller to detach).
int attach_go_object(BpfRuntime& rt, int pid, const std::string& target, const std::string& path,
                     const GoTlsSymbols& syms, ProcessLinks* out, std::string* error);

// One program (hook) at `offsets` of the file `target`, for pid only: one uprobe_multi link
// for all offsets, or one perf uprobe each (return probes for the *Exit hooks). Links are
// appended to out; returns 0 or negative errno with *error naming `path`.
int attach_hook_offsets(BpfRuntime& rt, TlsHook hook, int pid, const std::string& target, const std::string& path,
                        const std::vector<uint64_t>& offsets, ProcessLinks* out, std::string* error);

}  // namespace ab::loader
