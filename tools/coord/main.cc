// shoal-coord: the coordinator of a shoal group (docs/protocol.md). It runs coord::Server on one
// thread until SIGINT or SIGTERM.
//
// Scripts and tests that let the OS pick the port (--port 0) pass --port-file: once the server
// listens, the port is written there in decimal with a newline, atomically (written to a
// temporary file in the same directory, then renamed), so a reader sees the whole number or no
// file.
//
// With a group secret (--secret-file, or --secret), every peer must prove it holds the same secret
// (HMAC-SHA256 challenge-response, docs/protocol.md "Authentication") before anything else it
// sends is read. --secret-file keeps the secret out of the process list; its content is the
// secret, without one trailing newline. With --tls every connection runs TLS 1.3 first (peers set
// Options::tls); a peer that differs is refused with a message saying which side uses TLS.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "shoal/common/limits.h"
#include "shoal/coord/server.h"

namespace {

// Writes `port` to `path` via a temporary file and rename(2), so readers never see a partial file.
bool WritePortFile(const std::string& path, std::uint16_t port) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr) {
    spdlog::error("cannot write port file {}: {}", tmp, std::strerror(errno));
    return false;
  }
  bool ok = std::fprintf(f, "%u\n", static_cast<unsigned>(port)) > 0;
  ok = std::fflush(f) == 0 && ok;
  ok = std::fclose(f) == 0 && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    spdlog::error("cannot write port file {}: {}", path, std::strerror(errno));
    std::remove(tmp.c_str());
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  shoal::coord::ServerConfig config;
  shoal::coord::Config& coord = config.coordinator;
  int port = 48150;
  std::string log_level = "info";
  std::string port_file;
  std::string secret;

  CLI::App app{"shoal-coord: coordinator of a shoal group (membership, epochs, agreed outcomes)"};
  app.add_option("--host", config.listen_host, "Address or name to listen on")
      ->capture_default_str();
  app.add_option("--port", port, "TCP port to listen on (0: any free port)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  app.add_option("--port-file", port_file,
                 "Write the bound port to this file once listening (atomically, via rename)");
  app.add_option("--heartbeat-interval-ms", coord.heartbeat_interval_ms,
                 "Send a heartbeat after this much silence")
      ->check(CLI::Range(1u, 3600u * 1000u))
      ->capture_default_str();
  app.add_option("--heartbeat-timeout-ms", coord.heartbeat_timeout_ms,
                 "Drop a peer silent for this long (must exceed the interval)")
      ->check(CLI::Range(2u, 24u * 3600u * 1000u))
      ->capture_default_str();
  app.add_option("--hello-timeout-ms", coord.hello_timeout_ms,
                 "Drop a connection that has not said Hello by then")
      ->check(CLI::Range(1u, 3600u * 1000u))
      ->capture_default_str();
  app.add_option("--barrier-timeout-ms", coord.barrier_timeout_ms,
                 "Demote members this late to update_topology")
      ->check(CLI::Range(1u, 24u * 3600u * 1000u))
      ->capture_default_str();
  app.add_option("--setup-timeout-ms", coord.setup_timeout_ms,
                 "Give up on an epoch setup after this long")
      ->check(CLI::Range(1u, 24u * 3600u * 1000u))
      ->capture_default_str();
  coord.startup_hold_ms = 1000;
  app.add_option("--rebuild-timeout-ms", coord.rebuild_timeout_ms,
                 "After a restart: wait this long at most for the old group's members to report")
      ->check(CLI::Range(1u, 3600u * 1000u))
      ->capture_default_str();
  app.add_option("--startup-hold-ms", coord.startup_hold_ms,
                 "Form no new group for this long after starting, so that the members of a "
                 "group this coordinator replaces report first (0: at once)")
      ->check(CLI::Range(0u, 3600u * 1000u))
      ->capture_default_str();
  app.add_option("--streams-per-link", coord.streams_per_link, "TCP streams per ring link")
      ->check(CLI::Range(1u, shoal::limits::kStreamsPerLinkMax))
      ->capture_default_str();
  app.add_option("--segment-bytes", coord.segment_bytes, "Pipelining unit of collectives")
      ->check(CLI::Range(shoal::limits::kSegmentBytesMin, shoal::limits::kSegmentBytesMax))
      ->capture_default_str();
  app.add_option("--max-members", coord.max_members, "Members of one epoch at most")
      ->check(CLI::Range(1u, shoal::limits::kMembersMax))
      ->capture_default_str();
  app.add_option("--max-pending", coord.max_pending, "Pending peers at most")
      ->check(CLI::Range(1u, shoal::limits::kPendingMax))
      ->capture_default_str();
  app.add_option("--max-connections", config.connections_max, "Open connections at most")
      ->check(CLI::Range(1u, shoal::limits::kConnectionsMax))
      ->capture_default_str();
  app.add_option("--accept-burst", config.accept_burst,
                 "Connection attempts one remote address may make at once")
      ->check(CLI::Range(1u, 1u << 20))
      ->capture_default_str();
  app.add_option("--accept-rate-per-s", config.accept_rate_per_s,
                 "Connection attempts per second one remote address regains")
      ->check(CLI::Range(0u, 1u << 20))
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn or error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
      ->capture_default_str();
  app.add_flag("--quorum", coord.quorum,
               "One of a set of coordinators (a primary and standbys): every new epoch must hold a "
               "majority of the newest epoch known, so two coordinators never both run the group");
  app.add_flag("--standby", coord.standby,
               "A standby of a --quorum set: it forms no group of newcomers, only rebuilds the "
               "group of peers that lost their coordinator")
      ->needs("--quorum");
  std::string secret_file;
  app.add_option("--secret", secret,
                 "Group secret every peer must prove it holds (visible in the process list: "
                 "prefer --secret-file)");
  app.add_option("--secret-file", secret_file, "Read the group secret from this file")
      ->check(CLI::ExistingFile)
      ->excludes("--secret");
  app.add_flag("--tls", config.tls,
               "TLS 1.3 on every connection (peers must set tls too); with a secret, the proofs "
               "are bound to each TLS session (docs/protocol.md, \"TLS\")");
  CLI11_PARSE(app, argc, argv);

  auto logger = spdlog::stderr_color_mt("shoal-coord");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(log_level));

  if (!secret_file.empty()) {
    std::ifstream in(secret_file, std::ios::binary);
    std::ostringstream content;
    content << in.rdbuf();
    secret = content.str();
    if (!in.good() && !in.eof()) {
      spdlog::error("cannot read the secret file {}", secret_file);
      return 2;
    }
    if (!secret.empty() && secret.back() == '\n') secret.pop_back();
  }
  if ((app.count("--secret") > 0 || !secret_file.empty()) && secret.empty()) {
    spdlog::error("the group secret is empty");
    return 2;
  }
  config.secret = secret;

  config.port = static_cast<std::uint16_t>(port);
  config.stop_signals = {SIGINT, SIGTERM};
  shoal::Status valid = shoal::coord::ValidateServerConfig(config);
  if (!valid.ok()) {
    spdlog::error("invalid configuration: {}", valid.message());
    return 2;
  }

  // A peer that vanishes must cost us an error code, not the process.
  std::signal(SIGPIPE, SIG_IGN);

  shoal::coord::Server server(config);
  shoal::Status started = server.Start();
  if (!started.ok()) {
    spdlog::error("cannot start: {}", started.message());
    return 1;
  }
  bool v6_literal = config.listen_host.find(':') != std::string::npos;
  spdlog::info("shoal-coord listening on {}{}{}:{}", v6_literal ? "[" : "", config.listen_host,
               v6_literal ? "]" : "", server.port());
  if (!port_file.empty() && !WritePortFile(port_file, server.port())) return 1;

  server.Run();
  spdlog::info("shoal-coord stopped");
  return 0;
}
