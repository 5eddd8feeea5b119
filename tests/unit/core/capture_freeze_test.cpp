// CaptureFreezer on a fake cgroup2 tree (a temp dir: cgroup.freeze and cgroup.procs are files).
#include "core/capture_freeze.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace fs = std::filesystem;

namespace ab::core {
namespace {

struct FakeCgroups {
  fs::path root = fs::temp_directory_path() / ("ab-freeze-" + std::to_string(getpid()));
  FakeCgroups() { fs::create_directories(root); }
  ~FakeCgroups() { fs::remove_all(root); }
  void make(const std::string& name, const std::string& freeze, const std::string& procs) {
    fs::create_directories(root / name);
    std::ofstream(root / name / "cgroup.freeze") << freeze;
    std::ofstream(root / name / "cgroup.procs") << procs;
  }
  std::string freeze_of(const std::string& name) {
    std::string v;
    std::ifstream(root / name / "cgroup.freeze") >> v;
    return v;
  }
  std::string state() {
    std::ifstream in(root / "state");
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
};

TEST(CaptureFreezer, FreezesAndThawsWhatItFroze) {
  FakeCgroups cg;
  cg.make("job", "0", "123\n");
  CaptureFreezer f(cg.root.string(), (cg.root / "state").string(), "/daemon.service");
  ASSERT_EQ(f.freeze_for(123, "/job", 1), 0);
  EXPECT_EQ(cg.freeze_of("job"), "1");
  EXPECT_NE(cg.state().find("/job"), std::string::npos) << "recorded for a crashed daemon's successor";
  f.release(123);
  EXPECT_EQ(cg.freeze_of("job"), "0");
}

// Harden L4: a cgroup someone else froze (a manual pause, systemctl freeze) is held as it is
// and left frozen when the hold ends, and is not in the state file a successor thaws.
TEST(CaptureFreezer, LeavesAnotherFreezeInPlace) {
  FakeCgroups cg;
  cg.make("paused", "1", "124\n");
  CaptureFreezer f(cg.root.string(), (cg.root / "state").string(), "/daemon.service");
  ASSERT_EQ(f.freeze_for(124, "/paused", 1), 0);
  EXPECT_EQ(cg.state().find("/paused"), std::string::npos);
  f.release(124);
  EXPECT_EQ(cg.freeze_of("paused"), "1");
  ASSERT_EQ(f.freeze_for(124, "/paused", 2), 0);
  f.release_all();
  EXPECT_EQ(cg.freeze_of("paused"), "1");
  ASSERT_EQ(f.freeze_for(124, "/paused", 3), 0);
  EXPECT_EQ(f.sweep(10'000'000'000, 1), 1u);
  EXPECT_EQ(cg.freeze_of("paused"), "1");
}

TEST(CaptureFreezer, NeverTheDaemonsOwnCgroupOrAnAncestor) {
  FakeCgroups cg;
  cg.make("system.slice/agentbraked.service", "0", "1\n");
  CaptureFreezer f(cg.root.string(), (cg.root / "state").string(), "/system.slice/agentbraked.service");
  EXPECT_EQ(f.freeze_for(1, "/system.slice/agentbraked.service", 1), -EPERM);
  EXPECT_EQ(f.freeze_for(1, "/system.slice", 1), -EPERM);
  EXPECT_EQ(f.freeze_for(1, "/", 1), -EPERM);
}

// Harden H3: a cgroup the held job shares with another process (its shell, a tmux server, a
// heartbeat) is never frozen; without a tracer the process is then not held at all.
TEST(CaptureFreezer, NeverFreezesACgroupItsJobShares) {
  FakeCgroups cg;
  cg.make("session.scope", "0", "50\n123\n124\n");
  auto ids = [](int pid) -> std::optional<ProcIds> {
    if (pid == 50) return ProcIds{50, 1, 50};     // the shell
    if (pid == 123) return ProcIds{123, 50, 123};  // the agent, its foreground job
    if (pid == 124) return ProcIds{124, 123, 124}; // the agent's child
    return std::nullopt;
  };
  CaptureFreezer f(cg.root.string(), (cg.root / "state").string(), "/daemon.service", nullptr, ids);
  HoldMethod how = HoldMethod::Freeze;
  EXPECT_EQ(f.freeze_for(123, "/session.scope", 1, 0, &how), -EPERM);
  EXPECT_EQ(how, HoldMethod::Ptrace);
  EXPECT_EQ(cg.freeze_of("session.scope"), "0");
  EXPECT_EQ(f.frozen(), 0u);
  // the same job alone in its cgroup is frozen
  cg.make("agent.scope", "0", "123\n124\n");
  EXPECT_EQ(f.freeze_for(123, "/agent.scope", 1, 0, &how), 0);
  EXPECT_EQ(how, HoldMethod::Freeze);
  EXPECT_EQ(cg.freeze_of("agent.scope"), "1");
  f.release(123);
  EXPECT_EQ(cg.freeze_of("agent.scope"), "0");
}

// Harden L3: a crashed daemon's successor thaws exactly the cgroups it froze, whatever bytes
// their names hold; a name with a newline must not thaw a different cgroup ("/job" here).
TEST(CaptureFreezer, SuccessorThawsNamesWithSpacesAndNewlines) {
  FakeCgroups cg;
  cg.make("job", "1", "");  // frozen by someone else: must stay frozen
  cg.make("my agent", "0", "200\n");
  cg.make("x\n/job", "0", "201\n");
  {
    CaptureFreezer f(cg.root.string(), (cg.root / "state").string(), "/daemon.service");
    ASSERT_EQ(f.freeze_for(200, "/my agent", 1), 0);
    ASSERT_EQ(f.freeze_for(201, "/x\n/job", 1), 0);
    EXPECT_EQ(cg.freeze_of("my agent"), "1");
    EXPECT_EQ(cg.freeze_of("x\n/job"), "1");
    // the daemon "crashes" here: no release; the state file is what a successor reads
  }
  EXPECT_EQ(CaptureFreezer::thaw_recorded(cg.root.string(), (cg.root / "state").string()), 2u);
  EXPECT_EQ(cg.freeze_of("my agent"), "0");
  EXPECT_EQ(cg.freeze_of("x\n/job"), "0");
  EXPECT_EQ(cg.freeze_of("job"), "1");
}

}  // namespace
}  // namespace ab::core
