// cookiefs-shim: the command-line face of the engine-shim library, for
// network managers and engine wrappers written as scripts.
//
//   cookiefs-shim --storage HOST:PORT[,...] assign SESSION ENGINE_ID
//   cookiefs-shim --control PATH release|flush|status|wait-ready SESSION
//
// Exit codes: 0 ok; 1 runtime failure (unreachable, timeout, internal);
// 2 usage or config error; 3 conflict (another assign in progress);
// 4 session not found; 5 fenced (this host no longer owns the session).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#include "config.hpp"
#include "cookiefs_shim.h"
#include "version.hpp"

namespace {

struct ShimConfig {
  std::vector<std::string> storage;
  std::string control;
  std::string namespace_name = "default";
  std::string token;
  std::chrono::milliseconds timeout{30000};
  std::chrono::milliseconds grace{0};
  bool json = false;

  void describe(cookiefs::ConfigSchema& s) {
    s.add("storage", &storage, "storage-service endpoints HOST:PORT[,HOST:PORT...] (assign)");
    s.add("control", &control, "local cookiefs control socket (release, flush, status)");
    s.add("namespace", &namespace_name, "tenant namespace");
    s.add("token", &token, "token for the storage service",
          {.env = "COOKIEFS_TOKEN", .secret = true});
    s.add("timeout", &timeout, "how long to wait for an answer", {.min = 1, .max = 3600000});
    s.add("grace", &grace, "assign: how long the old owner may take to drain (0 = server default)",
          {.min = 0, .max = 600000});
    s.add("json", &json, "print results as JSON");
  }
};

int exit_code(cookiefs_status st) {
  switch (st) {
    case COOKIEFS_OK:
      return 0;
    case COOKIEFS_ERR_INVALID:
      return 2;
    case COOKIEFS_ERR_CONFLICT:
      return 3;
    case COOKIEFS_ERR_NOT_FOUND:
      return 4;
    case COOKIEFS_ERR_FENCED:
      return 5;
    default:
      return 1;
  }
}

int report_failure(cookiefs_shim* shim, const char* op, cookiefs_status st) {
  std::fprintf(stderr, "cookiefs-shim: %s failed: %s: %s\n", op, cookiefs_status_name(st),
               cookiefs_shim_last_error(shim));
  return exit_code(st);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("cookiefs-shim: assign, release, flush and inspect cookiefs sessions",
               "cookiefs-shim");
  app.set_version_flag("--version", std::string("cookiefs-shim ") + COOKIEFS_VERSION);
  app.footer(
      "Exit codes: 0 ok, 1 runtime failure, 2 usage/config error, 3 conflict, 4 not found, "
      "5 fenced.");
  bool print_config = false;
  app.add_flag("--print-config", print_config,
               "load and check the configuration, print the effective values (secrets "
               "redacted) and exit");
  app.require_subcommand(0, 1);
  ShimConfig cfg;
  cookiefs::ConfigSchema schema("cookiefs-shim");
  cfg.describe(schema);
  schema.bind(app);

  std::string session, engine;
  auto* assign =
      app.add_subcommand("assign", "make ENGINE_ID the owner of SESSION (network manager)");
  assign->add_option("SESSION", session, "session id")->required();
  assign->add_option("ENGINE_ID", engine, "engine host id")->required();
  auto* release = app.add_subcommand("release", "commit SESSION and give it up on this host");
  auto* flush = app.add_subcommand("flush", "return once SESSION is durable in PostgreSQL");
  auto* status = app.add_subcommand("status", "print SESSION's state on this host");
  auto* wait = app.add_subcommand("wait-ready", "block until SESSION is held and writable here");
  for (auto* sub : {release, flush, status, wait}) {
    sub->add_option("SESSION", session, "session id")->required();
  }

  try {
    app.parse(argc, argv);
    schema.load();
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  } catch (const cookiefs::ConfigError& e) {
    std::fprintf(stderr, "cookiefs-shim: %s\n", e.what());
    return 2;
  }
  if (print_config) {
    std::fputs(schema.dump().c_str(), stdout);
    return 0;
  }
  if (app.get_subcommands().empty()) {
    std::fprintf(stderr,
                 "cookiefs-shim: a subcommand is required (assign, release, flush, "
                 "status, wait-ready); see --help\n");
    return 2;
  }

  std::string endpoints;
  for (const auto& ep : cfg.storage) endpoints += (endpoints.empty() ? "" : ",") + ep;
  cookiefs_shim_options opt{};
  opt.storage_endpoints = endpoints.c_str();
  opt.control_socket = cfg.control.c_str();
  opt.namespace_name = cfg.namespace_name.c_str();
  opt.token = cfg.token.c_str();
  opt.timeout_ms = static_cast<uint32_t>(cfg.timeout.count());
  cookiefs_shim* shim = cookiefs_shim_open(&opt);
  if (!shim) return 1;
  int rc = 0;
  if (assign->parsed()) {
    cookiefs_assign_result r{};
    const auto st = cookiefs_shim_assign(shim, session.c_str(), engine.c_str(),
                                         static_cast<uint32_t>(cfg.grace.count()), &r);
    if (st != COOKIEFS_OK) {
      rc = report_failure(shim, "assign", st);
    } else if (cfg.json) {
      std::printf(
          "{\"epoch\":%llu,\"version\":%llu,\"previous_owner\":\"%s\",\"drained\":%s,\"ready\":%s}"
          "\n",
          static_cast<unsigned long long>(r.epoch), static_cast<unsigned long long>(r.version),
          r.previous_owner, r.drained ? "true" : "false", r.ready ? "true" : "false");
    } else {
      std::printf("assigned epoch=%llu version=%llu previous_owner=%s drained=%s ready=%s\n",
                  static_cast<unsigned long long>(r.epoch),
                  static_cast<unsigned long long>(r.version),
                  r.previous_owner[0] ? r.previous_owner : "-", r.drained ? "yes" : "no",
                  r.ready ? "yes" : "no");
    }
  } else if (release->parsed()) {
    const auto st = cookiefs_shim_release(shim, session.c_str());
    rc = st == COOKIEFS_OK ? 0 : report_failure(shim, "release", st);
  } else if (flush->parsed()) {
    const auto st = cookiefs_shim_flush(shim, session.c_str());
    rc = st == COOKIEFS_OK ? 0 : report_failure(shim, "flush", st);
  } else if (wait->parsed()) {
    const auto st = cookiefs_shim_wait_ready(shim, session.c_str(), 0);
    rc = st == COOKIEFS_OK ? 0 : report_failure(shim, "wait-ready", st);
  } else if (status->parsed()) {
    cookiefs_session_status s{};
    const auto st = cookiefs_shim_status(shim, session.c_str(), &s);
    if (st != COOKIEFS_OK) {
      rc = report_failure(shim, "status", st);
    } else if (cfg.json) {
      std::printf(
          "{\"present\":%s,\"owned\":%s,\"writable\":%s,\"connected\":%s,\"version\":%llu,"
          "\"epoch\":%llu,\"owner\":\"%s\",\"dirty_bytes\":%llu}\n",
          s.present ? "true" : "false", s.owned ? "true" : "false", s.writable ? "true" : "false",
          s.connected ? "true" : "false", static_cast<unsigned long long>(s.version),
          static_cast<unsigned long long>(s.epoch), s.owner,
          static_cast<unsigned long long>(s.dirty_bytes));
    } else {
      std::printf(
          "present=%s owned=%s writable=%s connected=%s version=%llu epoch=%llu owner=%s "
          "dirty_bytes=%llu\n",
          s.present ? "yes" : "no", s.owned ? "yes" : "no", s.writable ? "yes" : "no",
          s.connected ? "yes" : "no", static_cast<unsigned long long>(s.version),
          static_cast<unsigned long long>(s.epoch), s.owner[0] ? s.owner : "-",
          static_cast<unsigned long long>(s.dirty_bytes));
    }
  }
  cookiefs_shim_close(shim);
  return rc;
}
