// StoreError: the one exception type that carries a protocol error (wire::Error)
// from the SQL layer or a request handler to the connection, which turns it
// into an Error reply. Plain value type; thread-safe to copy.
#pragma once

#include <stdexcept>
#include <string>

#include "cookiefs.pb.h"

namespace cookiefs::storage {

class StoreError : public std::runtime_error {
 public:
  StoreError(wire::ErrorCode code, const std::string& message) : std::runtime_error(message) {
    error_.set_code(code);
    error_.set_message(message);
    error_.set_retryable(code == wire::UNAVAILABLE || code == wire::SHUTTING_DOWN);
  }
  StoreError(wire::Error error) : std::runtime_error(error.message()), error_(std::move(error)) {}

  const wire::Error& error() const { return error_; }
  wire::Error& error() { return error_; }
  wire::ErrorCode code() const { return error_.code(); }

 private:
  wire::Error error_;
};

}  // namespace cookiefs::storage
