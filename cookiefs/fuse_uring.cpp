// UringTransport; see fuse_uring.hpp. The kernel side is fs/fuse/dev_uring.c
// (Linux 6.14+); its ABI is declared here because Debian 12's kernel headers
// predate it.
#include "fuse_uring.hpp"

#include "init_reply.hpp"

#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <vector>

namespace cookiefs {
namespace {

// --- kernel ABI (include/uapi/linux/fuse.h, protocol 7.42) ---
struct InHeader {
  std::uint32_t len;
  std::uint32_t opcode;
  std::uint64_t unique;
  std::uint64_t nodeid;
  std::uint32_t uid, gid, pid;
  std::uint16_t total_extlen, padding;
};
static_assert(sizeof(InHeader) == 40);
struct OutHeader {
  std::uint32_t len;
  std::int32_t error;
  std::uint64_t unique;
};
static_assert(sizeof(OutHeader) == 16);
constexpr std::uint32_t kInitExt = 1u << 30;             // flags
constexpr std::uint32_t kMaxPages = 1u << 22;            // flags
constexpr std::uint32_t kOverIoUring = 1u << (41 - 32);  // flags2
// Offsets in fuse_init_out.
constexpr std::size_t kInitOutFlags = 12, kInitOutMaxWrite = 20, kInitOutMaxPages = 28,
                      kInitOutFlags2 = 36;

constexpr std::size_t kHeaderArea = 128;  // FUSE_URING_IN_OUT_HEADER_SZ, FUSE_URING_OP_IN_OUT_SZ
struct RingEntInOut {
  std::uint64_t flags;
  std::uint64_t commit_id;
  std::uint32_t payload_sz;
  std::uint32_t padding;
  std::uint64_t reserved;
};
struct RingReqHeader {
  char in_out[kHeaderArea];
  char op_in[kHeaderArea];
  RingEntInOut ent;
};
struct CmdReq {
  std::uint64_t flags;
  std::uint64_t commit_id;
  std::uint16_t qid;
  std::uint8_t padding[6];
};
constexpr std::uint32_t kCmdRegister = 1;
constexpr std::uint32_t kCmdCommitAndFetch = 2;

constexpr const char* kEnableParam = "/sys/module/fuse/parameters/enable_uring";
constexpr std::uint64_t kWakeTag = 1;  // user_data of the eventfd read (entries are pointers)

std::string read_line(const char* path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return s;
}

// Highest possible CPU + 1 (the kernel makes one queue per possible CPU).
unsigned possible_cpus() {
  const std::string s = read_line("/sys/devices/system/cpu/possible");  // "0-1", "0-3,6"
  unsigned highest = 0;
  std::size_t i = 0;
  while (i < s.size()) {
    std::size_t end = i;
    while (end < s.size() && s[end] >= '0' && s[end] <= '9') ++end;
    if (end > i)
      highest = std::max(highest, static_cast<unsigned>(std::stoul(s.substr(i, end - i))));
    i = end + 1;
  }
  return s.empty() ? static_cast<unsigned>(std::thread::hardware_concurrency()) : highest + 1;
}

template <class T>
T load(const void* base, std::size_t off) {
  T v;
  std::memcpy(&v, static_cast<const char*>(base) + off, sizeof v);
  return v;
}
template <class T>
void store(void* base, std::size_t off, T v) {
  std::memcpy(static_cast<char*>(base) + off, &v, sizeof v);
}

}  // namespace

struct UringTransport::Impl {
  struct Queue;

  // One ring entry: the kernel writes a request's headers into `header` and
  // its payload at buf + kHeaderArea + sizeof(InHeader); the op header is
  // copied in front of the payload so libfuse sees one contiguous request.
  struct Entry {
    Queue* queue = nullptr;
    alignas(8) RingReqHeader header{};
    // [room for the in header + op header][payload]. Not zeroed: a page is
    // resident only once a request used it (entries are sized for max_write).
    std::unique_ptr<char[]> buf;
    iovec iov[2]{};
    std::uint64_t unique = 0;
    bool registering = true;
    char* payload() { return buf.get() + sizeof(InHeader) + kHeaderArea; }
  };

  struct Queue {
    Impl* impl = nullptr;
    unsigned qid = 0;
    bool pinned = true;
    io_uring ring{};
    bool ring_ok = false;
    int wake_fd = -1;
    std::uint64_t wake_value = 0;
    std::mutex mu;                // own, pending and wake_fd (only the thread submits)
    std::vector<Entry*> pending;  // replies from other threads, to commit
    std::vector<Entry*> own;      // this thread's replies, committed after the handler
    std::vector<std::unique_ptr<Entry>> entries;
    std::thread thread;
  };

  fuse_session* se = nullptr;
  Options options;
  UringTransport* owner = nullptr;
  int fd = -1;
  int classic_wake = -1;
  std::atomic<bool> stopping{false};
  std::atomic<std::uint64_t> init_unique{0};
  std::atomic<bool> kernel_offers{false};
  std::atomic<std::uint32_t> kernel_flags{0};  // of the kernel's INIT request
  std::size_t max_payload = 0;
  std::mutex inflight_mu;
  std::unordered_map<std::uint64_t, Entry*> inflight;
  std::mutex queues_mu;
  std::vector<std::unique_ptr<Queue>> queues;
  std::mutex go_mu;
  std::condition_variable go_cv;
  bool go = false;  // the INIT reply is written: register (or end, if stopping)

  static inline Impl* instance = nullptr;  // libfuse hands the hooks the fs userdata
  static inline thread_local Queue* current = nullptr;

  // --- custom I/O hooks ---
  static ssize_t read_hook(int fd, void* buf, size_t len, void*) {
    Impl& self = *instance;
    for (;;) {
      pollfd p[2] = {{fd, POLLIN, 0}, {self.classic_wake, POLLIN, 0}};
      if (::poll(p, 2, -1) < 0) {
        if (errno == EINTR) continue;
        return -1;
      }
      if (p[1].revents & POLLIN) {
        errno = EINTR;  // the loop re-checks fuse_session_exited
        return -1;
      }
      const ssize_t n = ::read(fd, buf, len);
      if (n < 0 && errno == EAGAIN) continue;  // another reader took it
      if (n > 0) {
        if (const auto init = init_request(buf, static_cast<std::size_t>(n))) {
          self.kernel_offers = (init->flags2 & kOverIoUring) != 0;
          self.kernel_flags = init->flags;
          self.init_unique = init->unique;
        }
      }
      return n;
    }
  }

  static ssize_t writev_hook(int fd, iovec* iov, int count, void*) {
    Impl& self = *instance;
    if (count < 1 || iov[0].iov_len < sizeof(OutHeader)) return ::writev(fd, iov, count);
    const auto out = load<OutHeader>(iov[0].iov_base, 0);
    if (out.unique != 0 && out.unique == self.init_unique) return self.reply_init(fd, iov, count);
    Entry* e = nullptr;
    if (out.unique != 0) {
      std::lock_guard lock(self.inflight_mu);
      if (auto it = self.inflight.find(out.unique); it != self.inflight.end()) {
        e = it->second;
        self.inflight.erase(it);
      }
    }
    if (!e) return ::writev(fd, iov, count);  // classic request or notification
    std::size_t total = 0, payload = 0;
    for (int i = 0; i < count; ++i) total += iov[i].iov_len;
    std::memcpy(e->header.in_out, &out, sizeof out);
    bool fits = true;
    for (int i = 1; i < count && fits; ++i) {
      if (payload + iov[i].iov_len > self.max_payload) {
        fits = false;
        break;
      }
      std::memcpy(e->payload() + payload, iov[i].iov_base, iov[i].iov_len);
      payload += iov[i].iov_len;
    }
    if (!fits) {
      spdlog::error("fuse io_uring: a reply of {} bytes exceeds the ring's {}", total,
                    self.max_payload);
      OutHeader err{sizeof(OutHeader), -EIO, out.unique};
      std::memcpy(e->header.in_out, &err, sizeof err);
      payload = 0;
    }
    e->header.ent.payload_sz = static_cast<std::uint32_t>(payload);
    self.commit(e);
    return static_cast<ssize_t>(total);
  }

  // The INIT reply: asks for the rings when the kernel offered them, learns
  // the payload size the kernel will require, and starts the queues once
  // the kernel has taken the reply (it is processed within the write).
  ssize_t reply_init(int fd, iovec* iov, int count) {
    init_unique = 0;
    if (count != 2 || iov[1].iov_len < kInitOutFlags2 + 4) return ::writev(fd, iov, count);
    std::vector<char> arg = init_reply_arg(iov[1], kernel_flags.load());
    const auto flags = load<std::uint32_t>(arg.data(), kInitOutFlags);
    iovec out[2] = {iov[0], {arg.data(), arg.size()}};
    if (!kernel_offers) {
      spdlog::warn("fuse io_uring: the kernel did not offer it; classic /dev/fuse");
      return ::writev(fd, out, 2);
    }
    const std::size_t pages =
        (flags & kMaxPages) ? load<std::uint16_t>(arg.data(), kInitOutMaxPages) : 32;
    const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    max_payload = std::max<std::size_t>(
        {8192, load<std::uint32_t>(arg.data(), kInitOutMaxWrite), pages * page});
    max_payload = (max_payload + page - 1) / page * page;
    // Once the kernel has the flag it holds every request back until each
    // CPU's queue has an entry: rings, buffers and threads exist before it
    // is asked for, so nothing can fail half-way after.
    if (!prepare_queues()) return ::writev(fd, out, 2);
    store(arg.data(), kInitOutFlags, flags | kInitExt);
    store(arg.data(), kInitOutFlags2,
          load<std::uint32_t>(arg.data(), kInitOutFlags2) | kOverIoUring);
    const ssize_t n = ::writev(fd, out, 2);
    {
      std::lock_guard lock(go_mu);
      go = true;
      if (n < 0) stopping = true;  // no INIT, no rings: the threads end
    }
    go_cv.notify_all();
    return n;
  }

  // Every possible CPU needs a queue before the kernel uses any. CPUs this
  // process may run on (its affinity: a container's cpuset, the online
  // ones) share options.threads; the others one thread with one entry,
  // unpinned, for the rare caller there. The threads wait for `go` (the INIT
  // reply written) before registering. False (everything undone) when a
  // ring, an eventfd or a thread cannot be made.
  bool prepare_queues() {
    const unsigned cpus = possible_cpus();
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0) {
      for (unsigned c = 0; c < cpus && c < CPU_SETSIZE; ++c) CPU_SET(c, &allowed);
    }
    auto here = [&](unsigned qid) { return qid < CPU_SETSIZE && CPU_ISSET(qid, &allowed); };
    unsigned served = 0;
    for (unsigned qid = 0; qid < cpus; ++qid) served += here(qid);
    const unsigned per_cpu = std::max(1u, options.threads / std::max(1u, served));
    std::lock_guard lock(queues_mu);
    try {
      for (unsigned qid = 0; qid < cpus; ++qid) {
        for (unsigned t = 0; t < (here(qid) ? per_cpu : 1); ++t) {
          auto q = std::make_unique<Queue>();
          q->impl = this;
          q->qid = qid;
          q->pinned = here(qid);
          make_ring(*q, q->pinned ? options.entries_per_thread : 1);
          queues.push_back(std::move(q));
        }
      }
      for (auto& q : queues) {
        Queue* raw = q.get();
        raw->thread = std::thread([raw] { raw->impl->run(*raw); });
      }
    } catch (const std::exception& e) {
      spdlog::warn("fuse io_uring: {}; classic /dev/fuse", e.what());
      {
        std::lock_guard g(go_mu);
        stopping = go = true;
      }
      go_cv.notify_all();
      for (auto& q : queues) {
        if (q->thread.joinable()) q->thread.join();
        close_ring(*q);
      }
      queues.clear();
      stopping = go = false;
      return false;
    }
    spdlog::info(
        "fuse io_uring: {} queues, {} thread(s) each on the {} CPUs this process may use, {} KiB "
        "payload per entry",
        cpus, per_cpu, served, max_payload / 1024);
    return true;
  }

  void make_ring(Queue& q, unsigned depth) {
    if (const int rc = io_uring_queue_init(depth * 2 + 4, &q.ring, IORING_SETUP_SQE128); rc < 0) {
      throw std::runtime_error(std::string("cannot create a ring: ") + std::strerror(-rc));
    }
    q.ring_ok = true;
    q.wake_fd = ::eventfd(0, EFD_CLOEXEC);
    if (q.wake_fd < 0) {
      const int err = errno;
      close_ring(q);
      throw std::runtime_error(std::string("eventfd: ") + std::strerror(err));
    }
    for (unsigned i = 0; i < depth; ++i) {
      auto e = std::make_unique<Entry>();
      e->queue = &q;
      e->buf.reset(new char[sizeof(InHeader) + kHeaderArea + max_payload]);
      e->iov[0] = {&e->header, sizeof e->header};
      e->iov[1] = {e->payload(), max_payload};
      q.entries.push_back(std::move(e));
    }
  }

  // With q.mu held or no thread left on q.
  static void close_ring(Queue& q) {
    if (q.ring_ok) io_uring_queue_exit(&q.ring);
    q.ring_ok = false;
    if (q.wake_fd >= 0) ::close(q.wake_fd);
    q.wake_fd = -1;
  }

  // --- a queue thread ---
  // A free SQE; a full queue is submitted first (with q.mu held).
  static io_uring_sqe* next_sqe(Queue& q) {
    for (;;) {
      if (io_uring_sqe* sqe = io_uring_get_sqe(&q.ring)) return sqe;
      io_uring_submit(&q.ring);
    }
  }

  void submit_locked(Queue& q, Entry* e, std::uint32_t cmd) {
    io_uring_sqe* sqe = next_sqe(q);
    std::memset(sqe, 0, 2 * sizeof(io_uring_sqe));  // SQE128
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = fd;
    sqe->cmd_op = cmd;
    if (cmd == kCmdRegister) {
      sqe->addr = reinterpret_cast<std::uint64_t>(e->iov);
      sqe->len = 2;
    }
    CmdReq req{};
    req.qid = static_cast<std::uint16_t>(q.qid);
    req.commit_id = cmd == kCmdCommitAndFetch ? e->unique : 0;
    std::memcpy(sqe->cmd, &req, sizeof req);
    io_uring_sqe_set_data(sqe, e);
  }

  void arm_wake_locked(Queue& q) {
    io_uring_sqe* sqe = next_sqe(q);
    io_uring_prep_read(sqe, q.wake_fd, &q.wake_value, sizeof q.wake_value, 0);
    io_uring_sqe_set_data64(sqe, kWakeTag);
  }

  // A reply is in e's buffers: hand the entry back to the kernel. The queue's
  // own thread submits (io_uring runs the next request's delivery in the
  // submitter's context), and only after the handler returned: the commit
  // lets the kernel write the next request into the buffers the handler
  // may still read. Other threads leave it to that thread (commit_and_wait).
  void commit(Entry* e) {
    Queue& q = *e->queue;
    std::lock_guard lock(q.mu);
    if (current == &q) {
      q.own.push_back(e);
    } else {
      q.pending.push_back(e);
      const std::uint64_t one = 1;
      if (q.wake_fd >= 0) [[maybe_unused]]
        ssize_t n = ::write(q.wake_fd, &one, sizeof one);
    }
  }

  void serve(Entry& e) {
    const auto in = load<InHeader>(e.header.in_out, 0);
    const std::size_t payload = e.header.ent.payload_sz;
    const std::size_t op = in.len >= sizeof(InHeader) + payload
                               ? in.len - sizeof(InHeader) - payload
                               : kHeaderArea + 1;
    e.unique = in.unique;
    {
      std::lock_guard lock(inflight_mu);
      inflight[in.unique] = &e;
    }
    if (op > kHeaderArea || payload > max_payload || op % 8 != 0) {
      spdlog::error("fuse io_uring: malformed request (opcode {}, {} + {} bytes)", in.opcode, op,
                    payload);
      OutHeader err{sizeof(OutHeader), -EIO, in.unique};
      iovec v{&err, sizeof err};
      writev_hook(fd, &v, 1, nullptr);
      return;
    }
    // In front of the payload: the in header, then the op header.
    char* start = e.payload() - op - sizeof(InHeader);
    std::memcpy(start, &in, sizeof in);
    std::memcpy(start + sizeof in, e.header.op_in, op);
    fuse_buf fb{};
    fb.mem = start;
    fb.size = sizeof(InHeader) + op + payload;
    owner->served_.fetch_add(1, std::memory_order_relaxed);
    fuse_session_process_buf(se, &fb);
  }

  // Hands the replies gathered since the last call back to the kernel (which
  // wakes their callers) and waits for the next completion. When no other
  // request is in flight this thread is SCHED_IDLE meanwhile: a CPU running
  // only SCHED_IDLE tasks counts as idle when the scheduler places a woken
  // task, so the caller wakes here, where its next request is served,
  // instead of on the other CPU (on a VM whose idle vCPUs halt at once that
  // move is a host round trip, and it happened on most requests). Served
  // with the normal policy: a handler may hold locks other threads need.
  int commit_and_wait(Queue& q, io_uring_cqe** cqe) {
    // Only for a lone caller: with other requests in flight, callers are
    // better spread over the CPUs than drawn to this one.
    bool alone;
    {
      std::lock_guard lock(inflight_mu);
      alone = inflight.empty();
    }
    set_policy(alone && io_uring_cq_ready(&q.ring) == 0 ? SCHED_IDLE : SCHED_OTHER);
    {
      std::lock_guard lock(q.mu);
      for (Entry* e : q.own) submit_locked(q, e, kCmdCommitAndFetch);
      for (Entry* e : q.pending) submit_locked(q, e, kCmdCommitAndFetch);
      q.own.clear();
      q.pending.clear();
    }
    // One system call submits and waits. Only this thread submits to its
    // ring, and others only touch the lists above, so no lock is needed.
    __kernel_timespec ts{0, 200'000'000};
    *cqe = nullptr;
    int rc = io_uring_submit_and_wait_timeout(&q.ring, cqe, 1, &ts, nullptr);
    // liburing 2.3 may return success without a completion (it counted the
    // submission): the caller just waits again.
    if (rc >= 0) rc = *cqe ? 0 : -EINTR;
    set_policy(SCHED_OTHER);
    return rc;
  }

  static void set_policy(int policy) {
    static thread_local int now = SCHED_OTHER;
    static thread_local bool allowed = true;
    if (now == policy || !allowed) return;
    sched_param sp{};
    if (pthread_setschedparam(pthread_self(), policy, &sp) == 0) {
      now = policy;
    } else {
      allowed = false;  // stays where it is (SCHED_OTHER, or SCHED_IDLE if it may not return)
    }
  }

  void run(Queue& q) {
    {
      std::unique_lock lock(go_mu);
      go_cv.wait(lock, [&] { return go; });
      if (stopping) return;
    }
    current = &q;
    if (q.pinned) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(q.qid, &set);
      pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    }
    const auto depth = static_cast<unsigned>(q.entries.size());
    {
      std::lock_guard lock(q.mu);
      for (auto& e : q.entries) submit_locked(q, e.get(), kCmdRegister);
      arm_wake_locked(q);
      io_uring_submit(&q.ring);
    }
    unsigned live = depth;
    while (live > 0) {
      io_uring_cqe* cqe = nullptr;
      const int rc = commit_and_wait(q, &cqe);
      if (rc == -ETIME || rc == -EINTR) {
        if (stopping) break;
        continue;
      }
      if (rc < 0) {
        spdlog::error("fuse io_uring: waiting for the ring: {}", std::strerror(-rc));
        break;
      }
      const std::uint64_t tag = io_uring_cqe_get_data64(cqe);
      const int res = cqe->res;
      io_uring_cqe_seen(&q.ring, cqe);
      if (tag == kWakeTag) {  // pending replies: committed at the top of the loop
        std::lock_guard lock(q.mu);
        arm_wake_locked(q);
        continue;
      }
      auto* e = reinterpret_cast<Entry*>(tag);
      if (res == -EAGAIN && e->registering && !stopping) {  // INIT not processed yet
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        std::lock_guard lock(q.mu);
        submit_locked(q, e, kCmdRegister);
        io_uring_submit(&q.ring);
        continue;
      }
      if (res < 0) {
        if (e->registering && res != -ENOTCONN) {
          spdlog::warn("fuse io_uring: the kernel refused a ring entry ({}); classic /dev/fuse",
                       std::strerror(-res));
        } else if (res != -ENOTCONN && res != -ECANCELED) {
          spdlog::warn("fuse io_uring: a ring entry ended: {}", std::strerror(-res));
        }
        --live;
        continue;
      }
      if (e->registering) {
        e->registering = false;
        owner->active_ = true;
      }
      serve(*e);
    }
    current = nullptr;
  }
};

std::string UringTransport::unavailable_reason(bool enable) {
  std::string v = read_line(kEnableParam);
  if (v.empty()) return "this kernel has no FUSE over io_uring (" + std::string(kEnableParam) + ")";
  if (v == "Y") return {};
  if (enable) {
    std::ofstream f(kEnableParam);
    f << "Y\n";
    f.flush();
    if (f && read_line(kEnableParam) == "Y") {
      spdlog::info("fuse io_uring: switched the kernel's fuse.enable_uring on");
      return {};
    }
  }
  return "the kernel's fuse.enable_uring is off (" + std::string(kEnableParam) + ")";
}

UringTransport::UringTransport(fuse_session* se, Options options)
    : impl_(std::make_unique<Impl>()) {
  impl_->se = se;
  impl_->options = options;
  impl_->owner = this;
}

UringTransport::~UringTransport() {
  stop();
  if (Impl::instance == impl_.get()) Impl::instance = nullptr;
  if (impl_->classic_wake >= 0) ::close(impl_->classic_wake);
}

void UringTransport::install() {
  Impl& i = *impl_;
  if (Impl::instance) throw std::runtime_error("fuse io_uring: one transport per process");
  i.fd = fuse_session_fd(i.se);
  i.classic_wake = ::eventfd(0, EFD_CLOEXEC);
  if (i.classic_wake < 0) throw std::runtime_error("fuse io_uring: eventfd failed");
  // Readers poll and then read: another may have taken the request.
  ::fcntl(i.fd, F_SETFL, ::fcntl(i.fd, F_GETFL) | O_NONBLOCK);
  Impl::instance = &i;
  fuse_custom_io io{};
  io.read = &Impl::read_hook;
  io.writev = &Impl::writev_hook;
  if (const int rc = fuse_session_custom_io(i.se, &io, i.fd); rc != 0) {
    Impl::instance = nullptr;
    throw std::runtime_error(std::string("fuse io_uring: libfuse refused custom I/O: ") +
                             std::strerror(-rc));
  }
}

void UringTransport::wake_classic() {
  const std::uint64_t one = 1;
  if (impl_->classic_wake >= 0) {
    [[maybe_unused]] ssize_t n = ::write(impl_->classic_wake, &one, sizeof one);
  }
}

void UringTransport::stop() {
  Impl& i = *impl_;
  {
    std::lock_guard lock(i.go_mu);
    i.stopping = true;
    i.go = true;
  }
  i.go_cv.notify_all();
  std::lock_guard lock(i.queues_mu);
  for (auto& q : i.queues) {
    if (q->thread.joinable()) q->thread.join();
    std::lock_guard qlock(q->mu);  // a late reply must not write to a closed fd
    Impl::close_ring(*q);
  }
}

}  // namespace cookiefs
