// MountConfig: every setting of the cookiefs daemon, bound to YAML keys, flags
// and environment variables through ConfigSchema. Filled once in main() before
// any thread starts; read-only (and so freely shared) afterwards.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "config.hpp"

namespace cookiefs::mount {

struct MountConfig {
  std::vector<std::string> storage;
  std::string engine_id;
  std::string cache_dir;
  std::string mountpoint;
  std::string namespace_name = "default";
  std::string token;
  bool tls = false;  // TLS to the storage service (its tls.mode: on)
  std::string tls_ca_file;
  std::string tls_server_name;
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string metrics_listen = "127.0.0.1:9101";
  std::chrono::milliseconds commit_delay{15};
  std::chrono::milliseconds commit_max_lag{1000};
  std::chrono::milliseconds commit_fsync_timeout{30000};
  // The storage service's defaults: a mount enforces the stricter of these
  // and the limits the service sends in its HelloReply (SessionLimits), so
  // before it first connects it accepts nothing the service would refuse.
  ByteSize max_file_bytes{8u << 20};
  ByteSize max_session_bytes{24u << 20};
  std::int64_t max_files_per_session = 1000;
  std::int64_t max_depth = 8;
  std::chrono::milliseconds entry_timeout{86400000};
  std::chrono::milliseconds attr_timeout{86400000};
  std::chrono::milliseconds negative_timeout{86400000};
  // Missing session ids at the root: no event announces a session created
  // elsewhere, so the kernel must ask again soon.
  std::chrono::milliseconds negative_session_timeout{1000};
  std::int64_t fuse_threads = 8;
  bool writeback_cache = false;
  bool io_uring = false;
  bool allow_other = false;
  std::string log_level = "info";
  // strict: only the owner the NM assigned writes; auto: the first writer of
  // an unowned session claims it. Non-owners see sessions read-only in both.
  std::string affinity = "auto";
  std::string control_socket;  // "" = <cache_dir>/control.sock
  std::string control_mode = "0600";
  std::chrono::milliseconds claim_timeout{5000};
  // While the storage service is unreachable: how long a lookup of a session
  // this host does not hold (or a mkdir of a new one) waits for it before
  // answering EAGAIN. Never ENOENT: the session may exist.
  std::chrono::milliseconds offline_wait{10000};
  // The mount root's owner and mode as the kernel sees them (-1 = the
  // daemon's own uid/gid), so an engine running as another user can create
  // sessions (needs fuse.allow_other). New entries belong to their creator.
  std::int64_t root_uid = -1;
  std::int64_t root_gid = -1;
  std::string root_mode = "0755";
  bool foreground = false;  // flag only
};

// Registers every key of `cfg` on `schema`.
void register_keys(ConfigSchema& schema, MountConfig& cfg);

// Cross-key checks after loading; throws ConfigError. Fills defaults that
// depend on other keys (control.socket).
void check(MountConfig& cfg);

// control.mode as permission bits; throws ConfigError.
unsigned control_mode_bits(const std::string& text);
// An octal permission mode of key `key`; throws ConfigError naming the key.
unsigned mode_bits(const std::string& key, const std::string& text);

}  // namespace cookiefs::mount
