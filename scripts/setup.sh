#!/bin/sh
# Installs build dependencies (Debian 12, as root) and builds agentbrake into ./build.
set -e
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq cmake g++ make pkg-config clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev \
  libcli11-dev libspdlog-dev libfmt-dev libyaml-cpp-dev nlohmann-json3-dev libnghttp2-dev \
  libcurl4-openssl-dev libsystemd-dev libcpp-httplib-dev libbrotli-dev libsqlite3-dev sqlite3 \
  libgtest-dev libgmock-dev libbenchmark-dev python3 openssl curl tmux iproute2 systemd \
  prometheus libclang-rt-14-dev chromium libcapstone-dev golang-go wget libhiredis-dev redis-server >/dev/null
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
