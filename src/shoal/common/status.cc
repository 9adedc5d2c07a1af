#include "shoal/status.hpp"

#include "shoal/common/hex.h"

extern "C" const char* shoal_strerror(shoal_status status) {
  switch (status) {
    case SHOAL_OK: return "ok";
    case SHOAL_ERR_INVALID_ARGUMENT: return "invalid argument";
    case SHOAL_ERR_TIMEOUT: return "timeout";
    case SHOAL_ERR_PEER_LOST: return "peer lost";
    case SHOAL_ERR_PEER_LEFT: return "peer left";
    case SHOAL_ERR_COORDINATOR_LOST: return "coordinator lost";
    case SHOAL_ERR_REJECTED: return "rejected by coordinator";
    case SHOAL_ERR_PROTOCOL: return "protocol error";
    case SHOAL_ERR_MISMATCH: return "operation mismatch between members";
    case SHOAL_ERR_NOT_MEMBER: return "not a member of the group";
    case SHOAL_ERR_EPOCH_CHANGED: return "epoch changed";
    case SHOAL_ERR_IO: return "i/o error";
    case SHOAL_ERR_CLOSED: return "communicator closed";
    case SHOAL_ERR_INTERNAL: return "internal error";
    case SHOAL_ERR_AUTH: return "authentication failed";
    case SHOAL_ERR_INTEGRITY: return "integrity check failed";
    case SHOAL_ERR_REVISION: return "shared-state revision out of order";
  }
  return "unknown status";
}

namespace shoal {

std::string Status::ToString() const {
  std::string s = shoal_strerror(code_);
  if (peer_ != 0) s += " (peer " + Hex64(peer_) + ")";
  if (!message_.empty()) {
    s += ": ";
    s += message_;
  }
  return s;
}

}  // namespace shoal
