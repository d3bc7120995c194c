// FUSE over io_uring (Linux 6.14+, fuse.io_uring): the kernel queues each
// request on a ring of the CPU its caller runs on, and a thread pinned to that
// CPU serves it. A request and its reply then cost no wake-up of another
// (possibly halted) CPU and one io_uring_enter instead of a read and a writev.
//
// libfuse 3.14 (Debian 12) predates the transport but lets a session carry
// custom I/O (fuse_session_custom_io). UringTransport plugs in there:
//   - read: the classic /dev/fuse path, which still carries INIT, FORGET and
//     INTERRUPT once the rings run (and everything before them);
//   - writev: a reply to a request that came through a ring goes back into its
//     ring entry (COMMIT_AND_FETCH); everything else (classic replies,
//     notifications) is written to /dev/fuse;
//   - the INIT reply gets FUSE_OVER_IO_URING when the kernel offered it; the
//     queue threads then register their entries. Until every CPU's queue has
//     an entry the kernel holds new requests back; a refused registration
//     turns the connection back to classic, so a mount never hangs on it.
// Requests from a ring go through fuse_session_process_buf like classic ones:
// the handlers cannot tell the difference.
//
// Thread-safety: writev may come from any thread (replies are sent from
// background threads); each ring's submission side has its own lock.
#pragma once

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 314
#endif
#include <fuse_lowlevel.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

namespace cookiefs {

class UringTransport {
 public:
  struct Options {
    // Spread over the CPUs this process may use, at least one each (more
    // than one: a blocked handler leaves the CPU served).
    unsigned threads = 8;
    unsigned entries_per_thread = 2;
  };

  // Whether this kernel has the transport and its module parameter is on;
  // with `enable`, tries to switch the parameter on first (needs root). An
  // empty result means usable; otherwise the reason it is not.
  static std::string unavailable_reason(bool enable);

  UringTransport(fuse_session* se, Options options);
  ~UringTransport();
  UringTransport(const UringTransport&) = delete;
  UringTransport& operator=(const UringTransport&) = delete;

  // After fuse_session_mount, before serving: installs the custom I/O.
  // Throws std::runtime_error when libfuse refuses it.
  void install();

  // Whether the kernel accepted the rings (false until INIT and registration
  // are done, and for good after a refusal).
  bool active() const { return active_; }

  // Wakes the classic loop's readers so they see fuse_session_exit (with the
  // rings, a poke of the mount root is served by a ring, not by them).
  void wake_classic();

  // After the unmount: ends the queue threads.
  void stop();

  // Requests served through the rings (tests and logs).
  std::uint64_t served() const { return served_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> active_{false};
  std::atomic<std::uint64_t> served_{0};
};

}  // namespace cookiefs
