// cookiefs: the FUSE daemon. main() parses the configuration, takes the
// mountpoint (detaching one left stale by a crashed instance: stale_mount.hpp), mounts, daemonizes
// unless -f, then starts the storage client, the commit workers and the
// metrics endpoint, serves until SIGTERM/SIGINT or `fusermount3 -u`, and
// commits what is still pending before it exits.
//
// Exit codes: 0 clean stop, 1 runtime failure, 2 usage or configuration error.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <thread>

#include "commit_queue.hpp"
#include "control_server.hpp"
#include "filesystem.hpp"
#include "fuse_uring.hpp"
#include "halt_polling.hpp"
#include "init_reply.hpp"
#include "logging.hpp"
#include "metrics.hpp"
#include "mount_config.hpp"
#include "remote_events.hpp"
#include "session_cache.hpp"
#include "stale_mount.hpp"
#include "storage_client.hpp"
#include "version.hpp"

namespace cookiefs::mount {
namespace {

constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;
// How long a stop waits for pending commits (within the harness' and
// Kubernetes' default 30 s termination grace).
constexpr std::chrono::seconds kStopGrace{10};

void op_init(void* userdata, fuse_conn_info* conn) {
  const auto& fs = *static_cast<const Filesystem*>(userdata);
  // Snapshots stay crash-consistent either way (see DESIGN.md): write-through
  // by construction, writeback because each snapshot forces the dirty pages
  // back first (SessionCache::snapshot_at_rest).
  if (fs.writeback && (conn->capable & FUSE_CAP_WRITEBACK_CACHE)) {
    conn->want |= FUSE_CAP_WRITEBACK_CACHE;
    // The kernel keeps mtimes itself and sends each change with a SETATTR
    // when it writes the inode back; at one-second granularity a file
    // written many times a second changes (and costs a request) once.
    conn->time_gran = 1000000000;
  } else {
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  }
  // See kModeBits: this mount never has set-id bits to kill. libfuse 3.14
  // does not pass this one on to the kernel; init_reply.hpp does.
  if (conn->capable & FUSE_CAP_HANDLE_KILLPRIV) conn->want |= FUSE_CAP_HANDLE_KILLPRIV;
  // Atomic O_TRUNC hands the truncation to OPEN, which a writeback mount
  // never receives (ENOSYS): the kernel would drop its pages and the backing
  // file would keep its old bytes. Without it the kernel sends a SETATTR.
  if (!fs.writeback && (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)) {
    conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
  } else {
    conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
  }
  spdlog::debug("fuse init: kernel offers capabilities {:#x}, the mount wants {:#x}", conn->capable,
                conn->want);
}

// Opens and closes the mount root: an OPENDIR a worker has to answer.
void poke(const std::string& mountpoint) {
  if (const int fd = ::open(mountpoint.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); fd >= 0) {
    ::close(fd);
  }
}

// Waits for a termination signal and stops the loop. With the writeback
// cache the kernel may still hold dirty pages, and unmounting closes the
// connection first (they would be lost): while the loop still serves, a
// syncfs of the whole mount writes them back.
void stop_on_signal(const sigset_t& termination, fuse_session* se, const MountConfig& cfg,
                    KernelFlusher& flusher, const std::atomic<bool>& loop_done,
                    const std::atomic<std::uint64_t>& writes_served, UringTransport* uring) {
  int sig = 0;
  ::sigwait(&termination, &sig);
  if (loop_done) return;
  spdlog::info("stopping on signal {}", sig);
  if (cfg.writeback_cache) {
    if (!flusher.sync_all()) spdlog::warn("stopping: writing the kernel's dirty pages back failed");
    // syncfs may return while WRITEs it started still wait in the kernel's
    // queue for a worker (seen under CPU load: the page written just before
    // SIGTERM was lost). Keep serving until no WRITE came for a while.
    constexpr auto kQuiet = std::chrono::milliseconds(50);
    std::uint64_t seen = writes_served;
    for (int i = 0; i < 100; ++i) {
      std::this_thread::sleep_for(kQuiet);
      if (writes_served == seen) break;
      seen = writes_served;
    }
  }
  fuse_session_exit(se);
  poke(cfg.mountpoint);              // wakes a worker blocked in read(), which then sees the exit
  if (uring) uring->wake_classic();  // with rings the poke is served by a ring
}

// Publishes gauges that are cheaper to sample than to maintain.
// The gauges and counters read from the session cache, the commit queue and
// the rings, refreshed at each scrape (Metrics::on_scrape): true when read.
// Called under the scrape's lock, from the metrics server's thread.
class ScrapeRefresh {
 public:
  ScrapeRefresh(Metrics& m, SessionCache& s, CommitQueue& q, const UringTransport* u)
      : m_(m), s_(s), q_(q), u_(u) {}

  void operator()() {
    const auto sessions = s_.list();
    std::uint64_t dirty = 0;
    for (const auto& s : sessions) dirty += s->dirty_bytes;
    m_.dirty_bytes->Set(static_cast<double>(dirty));
    m_.sessions_held->Set(static_cast<double>(sessions.size()));
    m_.sessions_pending->Set(static_cast<double>(q_.pending()));
    const std::uint64_t q = s_.counters.quarantined;
    m_.quarantined->Increment(static_cast<double>(q - quarantined_));
    quarantined_ = q;
    if (u_) {
      const std::uint64_t served = u_->served();
      m_.uring_requests->Increment(static_cast<double>(served - uring_served_));
      uring_served_ = served;
    }
  }

 private:
  Metrics& m_;
  SessionCache& s_;
  CommitQueue& q_;
  const UringTransport* u_;
  std::uint64_t quarantined_ = 0;
  std::uint64_t uring_served_ = 0;
};

int run(int argc, char** argv) {
  MountConfig cfg;
  CLI::App app{"cookiefs: FUSE mount whose session directories live in PostgreSQL", "cookiefs"};
  app.set_version_flag("--version", std::string("cookiefs ") + COOKIEFS_VERSION);
  app.add_flag("-f,--foreground", cfg.foreground, "stay in the foreground");
  std::string positional;
  app.add_option("MOUNTPOINT", positional, "where to mount");
  bool print_config = false;
  app.add_flag("--print-config", print_config,
               "load and check the configuration, print the effective values (secrets "
               "redacted) and exit");
  ConfigSchema schema("cookiefs");
  register_keys(schema, cfg);
  schema.bind(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : kExitUsage;
  }
  try {
    schema.load();
    if (!positional.empty()) cfg.mountpoint = positional;
    check(cfg);
  } catch (const ConfigError& e) {
    const std::string what = e.what();  // the schema's messages already name the source
    std::cerr << (what.starts_with("cookiefs") ? "" : "cookiefs: ") << what << '\n';
    return kExitUsage;
  }
  if (print_config) {
    std::cout << schema.dump();
    return 0;
  }
  init_logging("cookiefs", cfg.log_level);

  std::string mountpoint;
  try {
    mountpoint = take_mountpoint(cfg.mountpoint);
  } catch (const std::exception& e) {
    std::cerr << "cookiefs: " << e.what() << '\n';
    return kExitUsage;
  }

  ClientOptions copts;
  copts.endpoints = cfg.storage;
  copts.namespace_name = cfg.namespace_name;
  copts.engine_id = cfg.engine_id;
  copts.token = cfg.token;
  copts.tls = {.enabled = cfg.tls,
               .ca_file = cfg.tls_ca_file,
               .server_name = cfg.tls_server_name,
               .cert_file = cfg.tls_cert_file,
               .key_file = cfg.tls_key_file};
  copts.client_name = std::string("cookiefs/") + COOKIEFS_VERSION;
  StorageClient client(copts);
  CommitQueue queue(cfg.commit_delay, cfg.commit_max_lag);
  ClientSessionStore store(client);
  PosixDisk disk;
  SystemTime time;
  SessionCache sessions(cfg, store, queue, disk, time);
  try {
    sessions.open();
  } catch (const std::exception& e) {
    std::cerr << "cookiefs: " << e.what() << '\n';
    return kExitUsage;
  }
  Filesystem fs(cfg, sessions, client, nullptr);
  RemoteEvents events(fs);
  events.install();
  // Beside sessions/ on the cache dir's file system (renames, no copies).
  fs.spares.open((std::filesystem::path(cfg.cache_dir) / "spare").string(), fs.inodes);
  fs.inodes.on_spare_released = [&fs](const std::string& spare) { fs.spares.released(spare); };
  // Each connection's HelloReply brings the service's limits (before its first request).
  client.on_hello([&fs](const wire::HelloReply& r) { fs.limits.from_service(r); });

  fuse_lowlevel_ops ops{};
  add_entry_ops(ops);
  add_file_ops(ops);
  add_dir_ops(ops);
  add_xattr_ops(ops);
  ops.init = op_init;
  // Without create the kernel makes files with mknod and opens them without
  // a request (open answers ENOSYS), so no release follows either.
  if (cfg.writeback_cache) ops.create = nullptr;
  std::string options = "fsname=cookiefs,subtype=cookiefs";
  // Permission bits matter only when other users may enter the mount. Without
  // allow_other the kernel admits the mounting user alone, and checking bits
  // would cost a GETATTR of a directory after every create or unlink in it
  // (they invalidate its attributes): 3 of a SQLite transaction's requests.
  if (cfg.allow_other) options += ",allow_other,default_permissions";
  std::vector<std::string> fuse_argv_s = {"cookiefs", "-o", options};
  std::vector<char*> fuse_argv;
  for (auto& a : fuse_argv_s) fuse_argv.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(fuse_argv.size()), fuse_argv.data());
  // fuse_session_new may copy and extend the arguments; free them on every exit.
  struct ArgsOwner {
    fuse_args* a;
    ~ArgsOwner() { fuse_opt_free_args(a); }
  } args_owner{&args};
  fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, &fs);
  if (!se) {
    std::cerr << "cookiefs: cannot create the FUSE session\n";
    return kExitRuntime;
  }
  fs.se = se;
  // Termination signals are taken by stop_on_signal (sigwait), not by
  // libfuse's handlers: the stop must write dirty pages back while serving.
  std::signal(SIGPIPE, SIG_IGN);
  // The kernel offers the rings in the INIT it sends while mounting.
  bool use_uring = false;
  if (cfg.io_uring) {
    if (const auto why = UringTransport::unavailable_reason(true); !why.empty()) {
      spdlog::warn("fuse.io_uring: {}; serving through /dev/fuse", why);
    } else {
      use_uring = true;
    }
  }
  if (fuse_session_mount(se, mountpoint.c_str()) != 0) {
    std::cerr << "cookiefs: mounting failed\n";
    fuse_session_destroy(se);
    return kExitRuntime;
  }
  // Its queue threads start at INIT, after the fork below.
  std::optional<UringTransport> uring;
  if (use_uring) {
    try {
      uring.emplace(se, UringTransport::Options{.threads = static_cast<unsigned>(cfg.fuse_threads),
                                                .entries_per_thread = 2});
      uring->install();
    } catch (const std::exception& e) {
      spdlog::warn("fuse.io_uring: {}; serving through /dev/fuse", e.what());
      uring.reset();
    }
  }
  if (!uring) {
    try {
      install_init_reply_patch(se);  // the rings' transport patches INIT itself
    } catch (const std::exception& e) {
      spdlog::warn("the FUSE INIT reply cannot be amended ({}): each chown costs a GETATTR",
                   e.what());
    }
  }
  // Threads do not survive the fork: everything that runs one starts after it.
  fuse_daemonize(cfg.foreground ? 1 : 0);
  // Forked before any thread of ours starts (see kernel_flusher.hpp).
  KernelFlusher flusher;
  if (cfg.writeback_cache) {
    try {
      flusher.start(mountpoint);
      fs.flusher = &flusher;
    } catch (const std::exception& e) {
      spdlog::error("cannot start the write-back helper process: {}", e.what());
      fuse_session_unmount(se);
      fuse_session_destroy(se);
      return kExitRuntime;
    }
  }

  // Every inode the kernel knows holds an O_PATH descriptor (passthrough
  // style), so a host holding thousands of sessions needs more than the
  // usual soft limit of 1024; take the hard limit. With CAP_SYS_RESOURCE
  // (root) first lift the hard limit to the kernel's per-process ceiling
  // (fs.nr_open): 10,000 sessions of two inodes each outgrow a 20,000 limit.
  if (rlimit nofile{}; ::getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
    rlim_t ceiling = 1 << 20;
    if (std::ifstream nr_open("/proc/sys/fs/nr_open"); !(nr_open >> ceiling)) ceiling = 1 << 20;
    if (nofile.rlim_max == RLIM_INFINITY || nofile.rlim_max > ceiling) nofile.rlim_max = ceiling;
    if (const rlimit lifted{ceiling, ceiling};
        nofile.rlim_max < ceiling && ::setrlimit(RLIMIT_NOFILE, &lifted) == 0) {
      nofile = lifted;  // EPERM without CAP_SYS_RESOURCE: keep the hard limit
    } else if (nofile.rlim_cur < nofile.rlim_max) {
      nofile.rlim_cur = nofile.rlim_max;
      if (::setrlimit(RLIMIT_NOFILE, &nofile) != 0) {
        spdlog::warn("cannot raise the open-file limit");
      }
    }
    spdlog::debug("open-file limit: {}", nofile.rlim_cur);
  }

  // Every thread blocks the termination signals; stop_on_signal takes them
  // with sigwait once the loop runs.
  sigset_t termination;
  sigemptyset(&termination);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&termination, sig);
  pthread_sigmask(SIG_BLOCK, &termination, nullptr);
  std::unique_ptr<Metrics> metrics;
  try {
    metrics = std::make_unique<Metrics>(cfg.metrics_listen);
  } catch (const std::exception& e) {
    spdlog::error("metrics_listen: cannot listen: {}", e.what());
    fuse_session_unmount(se);
    fuse_session_destroy(se);
    return kExitRuntime;
  }
  // The engine-shim's way in (release, flush, status, wait_ready).
  ControlServer control(
      cfg.control_socket, control_mode_bits(cfg.control_mode),
      ControlHandlers{
          .flush = [&sessions](const wire::Flush& r) { return sessions.control_flush(r); },
          .release = [&sessions](const wire::Release& r) { return sessions.control_release(r); },
          .status =
              [&sessions](const wire::StatusRequest& r) { return sessions.control_status(r); },
          .wait_ready =
              [&sessions](const wire::WaitReady& r) { return sessions.control_wait_ready(r); }});
  try {
    control.start();
  } catch (const std::exception& e) {
    spdlog::error("control.socket: {}", e.what());
    fuse_session_unmount(se);
    fuse_session_destroy(se);
    return kExitRuntime;
  }
  fs.metrics = metrics.get();
  if (cfg.writeback_cache) {
    sessions.before_snapshot = [&fs](Session& s) { return fs.flush_kernel_pages(s); };
  }
  sessions.on_commit = [m = metrics.get()](const char* result, double s) { m->commit(result, s); };
  metrics->set_readiness([&client] {
    return client.connected() ? Readiness::yes() : Readiness::no("storage service unreachable");
  });
  client.start();
  queue.start([&sessions](const std::string& id) { return sessions.process(id); }, 4);
  sessions.recover();
  spdlog::info("cookiefs {} serving (engine {}, affinity {}, {} cached sessions)", COOKIEFS_VERSION,
               cfg.engine_id, cfg.affinity, sessions.list().size());
  if (idle_vcpus_halt_without_polling()) {
    spdlog::info(
        "idle vCPUs of this VM halt without polling (guest_halt_poll_ns 0): each FUSE "
        "request pays two VM exits; see docs/deploy.md on halt polling");
  }
  std::atomic<bool> loop_done{false};
  std::thread stopper([&] {
    stop_on_signal(termination, se, cfg, flusher, loop_done, fs.writes_served,
                   uring ? &*uring : nullptr);
  });
  int rc;
  {
    // Replaced before the objects it reads go (they outlive this block).
    metrics->on_scrape(ScrapeRefresh(*metrics, sessions, queue, uring ? &*uring : nullptr));
    fuse_loop_config* loop = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(loop, static_cast<unsigned>(cfg.fuse_threads));
    fs.serving = true;
    rc = fuse_session_loop_mt(se, loop);
    fs.serving = false;
    fuse_loop_cfg_destroy(loop);
    loop_done = true;
    metrics->on_scrape(nullptr);
  }
  spdlog::info("stopping: unmounting and committing what is pending");
  control.stop();
  fuse_session_unmount(se);
  if (uring) {
    uring->stop();
    spdlog::info("fuse io_uring: {} requests served through the rings", uring->served());
  }
  // After the unmount: the poke's OPENDIR is read by the exiting loop but
  // never answered, and only the closed connection ends it. Unmounted from
  // outside, the stopper still waits for its signal.
  pthread_kill(stopper.native_handle(), SIGTERM);
  stopper.join();
  const bool drained = queue.drain(kStopGrace);
  queue.stop();
  client.stop();
  fs.wait_background();
  fs.se = nullptr;
  fuse_session_destroy(se);
  if (!drained) {
    spdlog::error(
        "stopping: {} sessions are still not committed after {} s; they stay in the cache dir "
        "and are committed at the next start",
        queue.pending(), kStopGrace.count());
    return kExitRuntime;
  }
  // libfuse's signal handler leaves the signal number as the loop's result:
  // SIGTERM/SIGINT/SIGHUP are the clean stop, only a negative errno is a failure.
  if (rc < 0) {
    spdlog::error("stopping: the FUSE session failed: {}", std::strerror(-rc));
    return kExitRuntime;
  }
  return 0;
}

}  // namespace
}  // namespace cookiefs::mount

int main(int argc, char** argv) {
  try {
    return cookiefs::mount::run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "cookiefs: " << e.what() << '\n';
    return 1;
  }
}
