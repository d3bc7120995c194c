// Flags the mount needs in its FUSE INIT reply that libfuse 3.14 leaves out.
//
// libfuse 3.14 (Debian 12) puts FUSE_CAP_HANDLE_KILLPRIV in conn->want but
// never copies it into the INIT reply (libfuse issue 884, fixed in 3.16), so
// the kernel keeps clearing set-id bits itself: each chown costs a GETATTR
// before its SETATTR (SQLite chowns its journal in every transaction when it
// runs as root). This mount never has set-id bits or file capabilities to
// kill (kModeBits, no xattrs), so it may ask for the flag; the reply is
// patched on its way to /dev/fuse.
//
// Classic transport: install_init_reply_patch() puts custom I/O on the
// session that only watches for INIT. The io_uring transport has custom I/O
// of its own and uses init_request() and init_reply_arg() in it.
#pragma once

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 314
#endif
#include <fuse_lowlevel.h>

#include <sys/uio.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace cookiefs {

// FUSE_HANDLE_KILLPRIV in the INIT flags (kernel ABI 7.26).
inline constexpr std::uint32_t kInitHandleKillpriv = 1u << 19;

// The reply's flags with what the mount wants added, of what the kernel
// offered (`offered`: the flags of the kernel's INIT request).
std::uint32_t patch_init_flags(std::uint32_t reply_flags, std::uint32_t offered);

// What a request read from /dev/fuse (`n` bytes) says, if it is the INIT.
struct InitRequest {
  std::uint64_t unique = 0;
  std::uint32_t flags = 0;   // fuse_init_in.flags
  std::uint32_t flags2 = 0;  // fuse_init_in.flags2 (0 without FUSE_INIT_EXT)
};
std::optional<InitRequest> init_request(const void* buf, std::size_t n);

// A copy of the INIT reply's argument (fuse_init_out, `arg`) with its flags
// patched (patch_init_flags); empty when `arg` is too short to be one.
std::vector<char> init_reply_arg(const iovec& arg, std::uint32_t offered);

// After fuse_session_mount, before serving, for the classic transport.
// Throws std::runtime_error when libfuse refuses custom I/O.
void install_init_reply_patch(fuse_session* se);

}  // namespace cookiefs
