// The mountpoint at start-up: a cookiefs killed with SIGKILL (or crashed)
// leaves its mount behind with a dead FUSE connection. A restart finds it in
// /proc/self/mountinfo, makes sure its connection is dead (a statfs, which
// the kernel answers ENOTCONN at once for a dead connection and cannot answer
// from its caches, in a child with a deadline), detaches it and mounts in its
// place. A live mount (of a running cookiefs or of anything else) is left
// alone and the start refused.
//
// Thread-safety: call before any thread starts (take_mountpoint forks).
#pragma once

#include <chrono>
#include <istream>
#include <stdexcept>
#include <string>
#include <vector>

namespace cookiefs::mount {

// The mountpoint cannot be used: a usage error (exit 2) with a one-line reason.
struct MountpointError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One line of /proc/self/mountinfo (the fields we use).
struct MountEntry {
  std::string point;   // unescaped
  std::string fstype;  // "fuse.cookiefs" for ours
};

// Undoes the octal escapes of /proc/self/mountinfo ("\040" for a space).
std::string unescape_mountinfo(const std::string& s);
// The entries of a mountinfo text, in order (a later entry on the same
// point is mounted on top of an earlier one).
std::vector<MountEntry> parse_mountinfo(std::istream& in);

enum class Connection { alive, dead, unknown };
// Whether the FUSE connection of the mount at `path` still answers:
// statfs(2) in a child; ENOTCONN = dead; no answer before `deadline`
// (a hung daemon) or any other error = unknown.
Connection probe_connection(const std::string& path, std::chrono::milliseconds deadline);

// Checks `given` and returns its canonical path, first detaching stale
// cookiefs mounts on it. Throws MountpointError when it is missing, not a
// directory, or has a live mount (or one that cannot be shown to be dead).
std::string take_mountpoint(const std::string& given);

}  // namespace cookiefs::mount
