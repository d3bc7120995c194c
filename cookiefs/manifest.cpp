// Manifest text format and snapshot deltas; see manifest.hpp.
//
// Format (one record per line, paths percent-escaped so any byte is safe):
//   cookiefs-manifest 1 <version> <epoch> <applying 0|1> <entry count>
//   <kind r|d|l> <mode octal> <size> <sha256 hex or -> <escaped path>
#include "manifest.hpp"

#include <openssl/evp.h>

#include <sstream>
#include <stdexcept>

namespace cookiefs::mount {
namespace {

std::string escape(const std::string& path) {
  static const char* digits = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : path) {
    if (c <= 0x20 || c == '%' || c >= 0x7f) {
      out += '%';
      out += digits[c >> 4];
      out += digits[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

std::string unhex(const std::string& text) {
  if (text.size() % 2) throw std::runtime_error("manifest: odd-length hex");
  std::string out;
  for (std::size_t i = 0; i < text.size(); i += 2) {
    const int hi = hex_value(text[i]), lo = hex_value(text[i + 1]);
    if (hi < 0 || lo < 0) throw std::runtime_error("manifest: bad hex digit");
    out += static_cast<char>(hi * 16 + lo);
  }
  return out;
}

std::string unescape(const std::string& text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    if (i + 2 >= text.size()) {
      throw std::runtime_error("manifest: truncated escape");
    }
    out += unhex(text.substr(i + 1, 2));
    i += 2;
  }
  return out;
}

char kind_letter(wire::FileKind k) {
  switch (k) {
    case wire::DIRECTORY:
      return 'd';
    case wire::SYMLINK:
      return 'l';
    default:
      return 'r';
  }
}

}  // namespace

std::string hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

std::string sha256(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("sha256 failed");
  }
  return std::string(reinterpret_cast<char*>(md), len);
}

std::string encode_manifest(const Manifest& m) {
  std::ostringstream out;
  out << "cookiefs-manifest 1 " << m.version << ' ' << m.epoch << ' ' << (m.applying ? 1 : 0) << ' '
      << m.entries.size() << '\n';
  for (const auto& [path, e] : m.entries) {
    out << kind_letter(e.kind) << ' ' << std::oct << e.mode << std::dec << ' ' << e.size << ' '
        << (e.sha256.empty() ? std::string("-") : hex(e.sha256)) << ' ' << escape(path) << '\n';
  }
  return out.str();
}

Manifest decode_manifest(const std::string& text) {
  std::istringstream in(text);
  std::string magic;
  int format = 0, applying = 0;
  std::size_t count = 0;
  Manifest m;
  if (!(in >> magic >> format >> m.version >> m.epoch >> applying >> count) ||
      magic != "cookiefs-manifest") {
    throw std::runtime_error("manifest: bad header");
  }
  if (format != 1) throw std::runtime_error("manifest: unknown format version");
  m.applying = applying != 0;
  for (std::size_t i = 0; i < count; ++i) {
    std::string kind, sha, path;
    ManifestEntry e;
    if (!(in >> kind >> std::oct >> e.mode >> std::dec >> e.size >> sha >> path)) {
      throw std::runtime_error("manifest: truncated entry");
    }
    if (kind == "d") {
      e.kind = wire::DIRECTORY;
    } else if (kind == "l") {
      e.kind = wire::SYMLINK;
    } else if (kind == "r") {
      e.kind = wire::REGULAR;
    } else {
      throw std::runtime_error("manifest: bad entry kind");
    }
    if (sha != "-") e.sha256 = unhex(sha);
    m.entries.emplace(unescape(path), std::move(e));
  }
  std::string extra;
  if (in >> extra) throw std::runtime_error("manifest: trailing data");
  return m;
}

Delta compute_delta(const Manifest& committed, const Snapshot& now) {
  Delta d;
  for (const auto& [path, f] : now) {
    auto it = committed.entries.find(path);
    if (it == committed.entries.end() || !(it->second == f.entry)) d.changed.push_back(path);
  }
  for (const auto& [path, e] : committed.entries) {
    if (!now.contains(path)) d.deleted.push_back(path);
  }
  return d;
}

Manifest manifest_of(const Snapshot& snap, std::uint64_t version, std::uint64_t epoch) {
  Manifest m;
  m.version = version;
  m.epoch = epoch;
  for (const auto& [path, f] : snap) m.entries.emplace(path, f.entry);
  return m;
}

}  // namespace cookiefs::mount
