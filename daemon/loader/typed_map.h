// typed_map.h — a BPF map seen from user space with its key and value types, instead of a raw
// fd and void pointers. Non-owning: the fd belongs to the BpfRuntime that loaded the map.
//
// Every call returns what the kernel said: 0 or a negative errno (-ENOENT for a missing key,
// -EEXIST for BPF_NOEXIST on a present one), or std::nullopt for a lookup that found nothing.
#pragma once
#include <bpf/bpf.h>

#include <cerrno>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <vector>

namespace ab::loader {

enum class MapUpdate : uint64_t { Any = BPF_ANY, NoExist = BPF_NOEXIST, Exist = BPF_EXIST };

template <typename K, typename V>
class TypedMap {
  static_assert(std::is_trivially_copyable_v<K> && std::is_trivially_copyable_v<V>,
                "BPF map keys and values are plain bytes");

 public:
  explicit TypedMap(int fd = -1) : fd_(fd) {}
  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

  std::optional<V> lookup(const K& key) const {
    V v{};
    if (bpf_map_lookup_elem(fd_, &key, &v) != 0) return std::nullopt;
    return v;
  }
  int update(const K& key, const V& value, MapUpdate how = MapUpdate::Any) const {
    return bpf_map_update_elem(fd_, &key, &value, static_cast<uint64_t>(how)) == 0 ? 0 : -errno;
  }
  int erase(const K& key) const { return bpf_map_delete_elem(fd_, &key) == 0 ? 0 : -errno; }

  // Every key present now (a snapshot: the kernel may add or delete entries meanwhile). At most
  // `limit` keys, so a map changing under the walk cannot keep it going forever.
  std::vector<K> keys(size_t limit = 1 << 20) const {
    std::vector<K> out;
    K cur{}, next{};
    const K* prev = nullptr;
    while (out.size() < limit && bpf_map_get_next_key(fd_, prev, &next) == 0) {
      out.push_back(next);
      cur = next;
      prev = &cur;
    }
    return out;
  }

 private:
  int fd_;
};

}  // namespace ab::loader
