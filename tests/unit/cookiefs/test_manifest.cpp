// Manifest encoding and the snapshot delta a commit sends.
#include <doctest/doctest.h>

#include <stdexcept>

#include "manifest.hpp"

using namespace cookiefs::mount;
using cookiefs::wire::DIRECTORY;
using cookiefs::wire::REGULAR;
using cookiefs::wire::SYMLINK;

namespace {

SnapshotFile file(const std::string& content, std::uint32_t mode = 0644) {
  SnapshotFile f;
  f.entry = {REGULAR, mode, content.size(), sha256(content)};
  f.content = content;
  return f;
}

}  // namespace

TEST_CASE("a manifest survives encode/decode, including awkward paths") {
  Manifest m;
  m.version = 42;
  m.epoch = 7;
  m.applying = true;
  m.entries["cookies.sqlite"] = {REGULAR, 0600, 8192, sha256("db")};
  m.entries["dir with space/%odd\nname"] = {REGULAR, 0644, 3, sha256("x")};
  m.entries["Default"] = {DIRECTORY, 0755, 0, ""};
  m.entries["link"] = {SYMLINK, 0777, 6, sha256("target")};
  const Manifest back = decode_manifest(encode_manifest(m));
  CHECK(back.version == 42);
  CHECK(back.epoch == 7);
  CHECK(back.applying);
  CHECK(back.entries == m.entries);
}

TEST_CASE("malformed manifests are rejected") {
  CHECK_THROWS_AS(decode_manifest(""), std::runtime_error);
  CHECK_THROWS_AS(decode_manifest("cookiefs-manifest 2 1 1 0 0\n"), std::runtime_error);
  CHECK_THROWS_AS(decode_manifest("cookiefs-manifest 1 1 1 0 1\n"), std::runtime_error);
  CHECK_THROWS_AS(decode_manifest("cookiefs-manifest 1 1 1 0 1\nq 644 1 - a\n"),
                  std::runtime_error);
  CHECK_THROWS_AS(decode_manifest("cookiefs-manifest 1 1 1 0 1\nr 644 1 zz a\n"),
                  std::runtime_error);
  CHECK_THROWS_AS(decode_manifest("cookiefs-manifest 1 1 1 0 0\nr 644 1 - a\n"),
                  std::runtime_error);
  CHECK_THROWS_AS(decode_manifest("cookiefs-manifest 1 1 1 0 1\nr 644 1 - a%4\n"),
                  std::runtime_error);
}

TEST_CASE("delta: new, changed, mode-changed and deleted paths") {
  Snapshot before;
  before["a"] = file("one");
  before["b"] = file("two");
  before["c"] = file("three");
  const Manifest m = manifest_of(before, 3, 1);
  CHECK(compute_delta(m, before).empty());

  Snapshot now = before;
  now["a"] = file("ONE");        // content
  now["b"] = file("two", 0600);  // mode only
  now.erase("c");
  now["d"] = file("four");
  const Delta d = compute_delta(m, now);
  CHECK(d.changed == std::vector<std::string>{"a", "b", "d"});
  CHECK(d.deleted == std::vector<std::string>{"c"});
}

TEST_CASE("delta: a file replaced by a directory of the same name is a change") {
  Snapshot before;
  before["x"] = file("data");
  const Manifest m = manifest_of(before, 1, 1);
  Snapshot now;
  SnapshotFile dir;
  dir.entry = {DIRECTORY, 0755, 0, ""};
  now["x"] = dir;
  CHECK(compute_delta(m, now).changed == std::vector<std::string>{"x"});
}

TEST_CASE("delta of a never-committed session lists everything") {
  Snapshot now;
  now["cookies.txt"] = file("k=v");
  const Delta d = compute_delta(Manifest{}, now);
  CHECK(d.changed.size() == 1);
  CHECK(d.deleted.empty());
}

TEST_CASE("sha256 matches the known vector") {
  CHECK(hex(sha256("abc")) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}
