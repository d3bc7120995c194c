// Key registration for MountConfig; see mount_config.hpp.
#include "mount_config.hpp"

#include "logging.hpp"
#include "names.hpp"

namespace cookiefs::mount {

void register_keys(ConfigSchema& s, MountConfig& c) {
  s.add("storage", &c.storage, "storage-service endpoints HOST:PORT, tried in order",
        {.flag = "--storage", .env = "COOKIEFS_STORAGE", .required = true});
  s.add("engine_id", &c.engine_id, "this engine host's id ([A-Za-z0-9._-]{1,128})",
        {.flag = "--engine-id", .env = "COOKIEFS_ENGINE_ID", .required = true});
  s.add("cache_dir", &c.cache_dir, "local directory holding the cached sessions",
        {.flag = "--cache-dir", .required = true});
  s.add("mountpoint", &c.mountpoint, "where to mount (or the positional MOUNTPOINT)",
        {.flag = "--mountpoint"});
  s.add("namespace", &c.namespace_name, "tenant namespace", {.flag = "--namespace"});
  s.add("token", &c.token, "token presented to the storage service",
        {.flag = "--token", .env = "COOKIEFS_TOKEN", .secret = true});
  s.add("tls.enabled", &c.tls, "speak TLS to the storage service (its tls.mode: on)",
        {.flag = "--tls"});
  s.add("tls.ca_file", &c.tls_ca_file,
        "PEM CA bundle the storage service's certificate must chain to (\"\": system default)");
  s.add("tls.server_name", &c.tls_server_name,
        "name the storage service's certificate must carry (\"\": each endpoint's host)");
  s.add("tls.cert_file", &c.tls_cert_file, "PEM client certificate, for mutual TLS");
  s.add("tls.key_file", &c.tls_key_file, "PEM key of tls.cert_file");
  s.add("metrics_listen", &c.metrics_listen, "HOST:PORT of the Prometheus endpoint; \"\" disables",
        {.flag = "--metrics-listen"});
  s.add("commit.delay", &c.commit_delay, "quiet time before a change is committed",
        {.min = 0, .max = 60000});
  s.add("commit.max_lag", &c.commit_max_lag, "longest a change waits for its commit",
        {.min = 0, .max = 600000});
  s.add("commit.fsync_timeout", &c.commit_fsync_timeout, "fsync gives EIO after this long",
        {.min = 100, .max = 3600000});
  s.add("limits.max_file_bytes", &c.max_file_bytes,
        "largest file (EFBIG beyond); the storage service's limit applies when lower", {.min = 1});
  s.add("limits.max_session_bytes", &c.max_session_bytes,
        "largest session (EDQUOT beyond); the storage service's limit applies when lower",
        {.min = 1});
  s.add("limits.max_files_per_session", &c.max_files_per_session,
        "most files, directories and symlinks in a session (EDQUOT beyond); the storage "
        "service's limit applies when lower",
        {.min = 1});
  s.add("limits.max_depth", &c.max_depth, "deepest path inside a session, in components",
        {.min = 1, .max = kMaxPathDepth});
  s.add("cache.entry_timeout", &c.entry_timeout, "kernel name cache timeout", {.min = 0});
  s.add("cache.attr_timeout", &c.attr_timeout, "kernel attribute cache timeout", {.min = 0});
  s.add("cache.negative_timeout", &c.negative_timeout, "kernel cache of missing names", {.min = 0});
  s.add("cache.negative_session_timeout", &c.negative_session_timeout,
        "kernel cache of missing session ids at the root", {.min = 0, .max = 3600000});
  s.add("fuse.threads", &c.fuse_threads,
        "FUSE worker threads (with fuse.io_uring: spread over the CPUs' rings, at least one each)",
        {.min = 1, .max = 256});
  s.add("fuse.writeback_cache", &c.writeback_cache,
        "kernel writeback cache: writes are cached by the kernel and forced back before each "
        "snapshot (false: write-through, every write is a request)");
  s.add("fuse.io_uring", &c.io_uring,
        "FUSE over io_uring (Linux 6.14+): requests served on the caller's CPU; switches the "
        "kernel's fuse.enable_uring on when it is off (root)");
  s.add("fuse.allow_other", &c.allow_other, "let other users access the mount");
  s.add("affinity", &c.affinity,
        "strict: only the NM-assigned owner writes; auto: the first writer claims an unowned "
        "session",
        {.flag = "--affinity", .choices = {"strict", "auto"}});
  s.add("offline_wait", &c.offline_wait,
        "while the storage service is unreachable, how long a lookup of a session not held "
        "here (or a mkdir of a new one) waits for it before answering EAGAIN",
        {.min = 0, .max = 600000});
  // Not "affinity.claim_timeout": `affinity` is a scalar key, so YAML could
  // never hold both. The flag stays --affinity-claim-timeout.
  s.add("affinity_claim_timeout", &c.claim_timeout, "auto: how long a claim may take",
        {.min = 100, .max = 600000});
  s.add("control.socket", &c.control_socket,
        "Unix socket of cookiefs-shim release/flush/status (default <cache_dir>/control.sock)",
        {.flag = "--control-socket"});
  s.add("control.mode", &c.control_mode, "permission bits of the control socket (octal)",
        {.flag = "--control-mode"});
  s.add("mount.root_uid", &c.root_uid,
        "owner uid of the mount root (-1: the daemon's); with fuse.allow_other lets that user "
        "create sessions",
        {.min = -1, .max = 2147483647});
  s.add("mount.root_gid", &c.root_gid, "group of the mount root (-1: the daemon's)",
        {.min = -1, .max = 2147483647});
  s.add("mount.root_mode", &c.root_mode, "permission bits of the mount root (octal)");
  std::vector<std::string> levels(std::begin(kLogLevels), std::end(kLogLevels));
  s.add("log.level", &c.log_level, "log level", {.flag = "--log-level", .choices = levels});
}

unsigned mode_bits(const std::string& key, const std::string& text) {
  if (text.empty() || text.size() > 4 || text.find_first_not_of("01234567") != std::string::npos) {
    throw ConfigError(key + ": not an octal permission mode such as 0755");
  }
  return static_cast<unsigned>(std::stoul(text, nullptr, 8));
}

unsigned control_mode_bits(const std::string& text) {
  return mode_bits("control.mode", text);
}

void check(MountConfig& c) {
  if (!valid_id(c.engine_id)) throw ConfigError("engine_id: not a valid id");
  if (!valid_id(c.namespace_name)) throw ConfigError("namespace: not a valid id");
  if (c.storage.empty()) throw ConfigError("storage: at least one endpoint is required");
  if (c.commit_max_lag < c.commit_delay) {
    throw ConfigError("commit.max_lag: must not be shorter than commit.delay");
  }
  control_mode_bits(c.control_mode);
  mode_bits("mount.root_mode", c.root_mode);
  if (c.control_socket.empty()) c.control_socket = c.cache_dir + "/control.sock";
  if (c.control_socket.size() >= 108) {
    throw ConfigError("control.socket: path longer than a Unix socket allows (107 bytes)");
  }
}

}  // namespace cookiefs::mount
