// ControlServer <-> engine-shim over a real Unix socket with in-memory
// handlers: permissions, request/reply mapping, and the C API on top.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>

#include "control_server.hpp"
#include "cookiefs_shim.h"

using namespace cookiefs;

namespace {

std::string temp_socket_path() {
  return (std::filesystem::temp_directory_path() /
          ("cookiefs-ctl-" + std::to_string(::getpid()) + ".sock"))
      .string();
}

ControlHandlers fake_handlers(std::atomic<int>& flushes) {
  ControlHandlers h;
  h.flush = [&flushes](const wire::Flush&) {
    ++flushes;
    wire::Envelope e;
    e.mutable_ack();
    return e;
  };
  h.release = [](const wire::Release& r) {
    wire::Envelope e;
    if (r.session_id() == "missing") {
      e.mutable_error()->set_code(wire::NOT_FOUND);
      e.mutable_error()->set_message("session not held by this mount");
    } else {
      e.mutable_ack();
    }
    return e;
  };
  h.status = [](const wire::StatusRequest& r) {
    wire::Envelope e;
    auto* s = e.mutable_session_status();
    s->set_session_id(r.session_id());
    s->set_present(true);
    s->set_version(7);
    s->set_owner("engine-a");
    return e;
  };
  h.wait_ready = [](const wire::WaitReady&) {
    wire::Envelope e;
    e.mutable_ack();
    return e;
  };
  return h;
}

}  // namespace

TEST_CASE("control socket is created 0600 and serves the shim's C API") {
  const std::string path = temp_socket_path();
  std::atomic<int> flushes{0};
  ControlServer server(path, 0600, fake_handlers(flushes));
  server.start();
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  // The C program, compiled as C, drives every call against this server.
  const std::string cmd = std::string(C_API_SMOKE) + " " + path;
  const int rc = std::system(cmd.c_str());
  REQUIRE(WIFEXITED(rc));
  CHECK(WEXITSTATUS(rc) == 0);
  CHECK(flushes.load() == 1);

  server.stop();
  CHECK_FALSE(std::filesystem::exists(path));
}

TEST_CASE("C API error paths without a server") {
  const int rc = std::system(C_API_SMOKE);
  REQUIRE(WIFEXITED(rc));
  CHECK(WEXITSTATUS(rc) == 0);
}

TEST_CASE("garbage on the control socket closes only that connection") {
  const std::string path = temp_socket_path() + "2";
  std::atomic<int> flushes{0};
  ControlServer server(path, 0600, fake_handlers(flushes));
  server.start();
  const std::string garbage_cmd =
      "head -c 65536 /dev/urandom | timeout 5 socat - UNIX-CONNECT:" + path +
      " >/dev/null 2>&1 || true";
  CHECK(std::system(garbage_cmd.c_str()) != -1);
  cookiefs_shim_options opt{};
  opt.control_socket = path.c_str();
  opt.timeout_ms = 2000;
  cookiefs_shim* shim = cookiefs_shim_open(&opt);
  CHECK(cookiefs_shim_flush(shim, "s1") == COOKIEFS_OK);
  cookiefs_shim_close(shim);
  server.stop();
}
