// FUSE handlers for extended attributes. Jars need none; answering ENOSYS
// makes the kernel stop asking (it otherwise sends getxattr
// "security.capability" before every write) and report EOPNOTSUPP itself.
#include "filesystem.hpp"

namespace cookiefs::mount {
namespace {

void op_getxattr(fuse_req_t req, fuse_ino_t, const char*, size_t) {
  serve(req, Op::xattr, [&] { throw Errno{ENOSYS}; });
}
void op_listxattr(fuse_req_t req, fuse_ino_t, size_t) {
  serve(req, Op::xattr, [&] { throw Errno{ENOSYS}; });
}
void op_setxattr(fuse_req_t req, fuse_ino_t, const char*, const char*, size_t, int) {
  serve(req, Op::xattr, [&] { throw Errno{ENOSYS}; });
}
void op_removexattr(fuse_req_t req, fuse_ino_t, const char*) {
  serve(req, Op::xattr, [&] { throw Errno{ENOSYS}; });
}

}  // namespace

void add_xattr_ops(fuse_lowlevel_ops& ops) {
  ops.getxattr = op_getxattr;
  ops.listxattr = op_listxattr;
  ops.setxattr = op_setxattr;
  ops.removexattr = op_removexattr;
}

}  // namespace cookiefs::mount
