// The INIT reply amendment (init_reply.hpp): FUSE_HANDLE_KILLPRIV is added
// only when the kernel offered it, and nothing else is touched.
#include <doctest/doctest.h>

#include <linux/fuse.h>

#include "init_reply.hpp"

using cookiefs::kInitHandleKillpriv;
using cookiefs::patch_init_flags;

TEST_CASE("the constant is the kernel ABI's FUSE_HANDLE_KILLPRIV") {
  CHECK(kInitHandleKillpriv == FUSE_HANDLE_KILLPRIV);
}

TEST_CASE("HANDLE_KILLPRIV is added when offered, and only then") {
  const std::uint32_t reply = FUSE_ASYNC_READ | FUSE_WRITEBACK_CACHE;
  CHECK(patch_init_flags(reply, FUSE_HANDLE_KILLPRIV | FUSE_POSIX_ACL) ==
        (reply | FUSE_HANDLE_KILLPRIV));
  // Other offered flags stay as libfuse chose them.
  CHECK(patch_init_flags(reply, FUSE_POSIX_ACL | FUSE_HANDLE_KILLPRIV_V2) == reply);
  CHECK(patch_init_flags(reply, 0) == reply);
  // Already there: unchanged.
  CHECK(patch_init_flags(reply | FUSE_HANDLE_KILLPRIV, FUSE_HANDLE_KILLPRIV) ==
        (reply | FUSE_HANDLE_KILLPRIV));
}
