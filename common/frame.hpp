// Frame codec: the one place that turns Envelopes into bytes and back.
//
// A frame is an 8-byte header followed by a serialized wire::Envelope:
//   bytes 0-1  magic "CF"
//   byte  2    frame format version (kFrameVersion)
//   byte  3    flags (must be 0)
//   bytes 4-7  payload length, big-endian, <= the decoder's max_frame_bytes
// FrameDecoder is incremental (feed it whatever the socket returned) and
// reports the first malformed frame as a FrameError; after an error the
// connection must be closed. Not thread-safe: one decoder per connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "cookiefs.pb.h"

namespace cookiefs {

inline constexpr std::size_t kFrameHeaderBytes = 8;
inline constexpr std::uint8_t kFrameVersion = 1;
inline constexpr std::uint64_t kDefaultMaxFrameBytes = 64ull << 20;

class FrameError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Serializes one envelope into a complete frame. Throws FrameError when the
// envelope is larger than max_frame_bytes.
std::string encode_frame(const wire::Envelope& env,
                         std::uint64_t max_frame_bytes = kDefaultMaxFrameBytes);

// Parses and validates a frame header; returns the payload length.
std::uint32_t decode_frame_header(std::string_view header, std::uint64_t max_frame_bytes);

class FrameDecoder {
 public:
  explicit FrameDecoder(std::uint64_t max_frame_bytes = kDefaultMaxFrameBytes)
      : max_frame_bytes_(max_frame_bytes) {}

  // Appends received bytes. Throws FrameError as soon as a header is invalid
  // (bad magic, unknown version, flags, oversized length).
  void feed(std::string_view bytes);

  // Returns the next complete envelope, if any. Throws FrameError when a
  // complete payload does not parse or has no body.
  std::optional<wire::Envelope> next();

  std::size_t buffered() const { return buf_.size() - pos_; }

 private:
  void check_header();

  std::uint64_t max_frame_bytes_;
  std::string buf_;
  std::size_t pos_ = 0;
  std::optional<std::uint32_t> pending_len_;
};

}  // namespace cookiefs
