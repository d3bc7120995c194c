// Frame codec implementation; see frame.hpp for the format.
#include "frame.hpp"

namespace cookiefs {

std::string encode_frame(const wire::Envelope& env, std::uint64_t max_frame_bytes) {
  const std::size_t len = env.ByteSizeLong();
  if (len > max_frame_bytes || len > UINT32_MAX) {
    throw FrameError("frame of " + std::to_string(len) + " bytes exceeds the limit of " +
                     std::to_string(max_frame_bytes));
  }
  std::string out;
  out.resize(kFrameHeaderBytes + len);
  out[0] = 'C';
  out[1] = 'F';
  out[2] = static_cast<char>(kFrameVersion);
  out[3] = 0;
  out[4] = static_cast<char>((len >> 24) & 0xff);
  out[5] = static_cast<char>((len >> 16) & 0xff);
  out[6] = static_cast<char>((len >> 8) & 0xff);
  out[7] = static_cast<char>(len & 0xff);
  if (!env.SerializeToArray(out.data() + kFrameHeaderBytes, static_cast<int>(len))) {
    throw FrameError("failed to serialize envelope");
  }
  return out;
}

std::uint32_t decode_frame_header(std::string_view h, std::uint64_t max_frame_bytes) {
  if (h.size() < kFrameHeaderBytes) throw FrameError("truncated frame header");
  if (h[0] != 'C' || h[1] != 'F') throw FrameError("bad frame magic");
  if (static_cast<std::uint8_t>(h[2]) != kFrameVersion) {
    throw FrameError("unsupported frame version " +
                     std::to_string(static_cast<std::uint8_t>(h[2])));
  }
  if (h[3] != 0) throw FrameError("unknown frame flags");
  const auto b = [&](int i) { return static_cast<std::uint32_t>(static_cast<std::uint8_t>(h[i])); };
  const std::uint32_t len = (b(4) << 24) | (b(5) << 16) | (b(6) << 8) | b(7);
  if (len > max_frame_bytes) {
    throw FrameError("frame length " + std::to_string(len) + " exceeds the limit of " +
                     std::to_string(max_frame_bytes));
  }
  if (len == 0) throw FrameError("empty frame");
  return len;
}

void FrameDecoder::feed(std::string_view bytes) {
  if (pos_ > 0 && pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  } else if (pos_ > (1u << 20) && pos_ * 2 > buf_.size()) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  buf_.append(bytes);
  check_header();
}

void FrameDecoder::check_header() {
  if (!pending_len_ && buffered() >= kFrameHeaderBytes) {
    pending_len_ = decode_frame_header(std::string_view(buf_).substr(pos_, kFrameHeaderBytes),
                                       max_frame_bytes_);
  }
}

std::optional<wire::Envelope> FrameDecoder::next() {
  check_header();
  if (!pending_len_) return std::nullopt;
  const std::size_t total = kFrameHeaderBytes + *pending_len_;
  if (buffered() < total) return std::nullopt;
  wire::Envelope env;
  const char* payload = buf_.data() + pos_ + kFrameHeaderBytes;
  if (!env.ParseFromArray(payload, static_cast<int>(*pending_len_))) {
    throw FrameError("frame payload is not a valid envelope");
  }
  if (env.body_case() == wire::Envelope::BODY_NOT_SET) {
    throw FrameError("frame has an unknown or empty body");
  }
  pos_ += total;
  pending_len_.reset();
  check_header();
  return env;
}

}  // namespace cookiefs
