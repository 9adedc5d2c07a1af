// Uses only installed headers: an unreachable coordinator must give a clear error, not a hang.
#include <shoal/shoal.hpp>

#include <cstdio>

int main() {
  shoal::Options opt;
  opt.coordinator_port = 1;  // nothing listens there
  opt.timeout_ms = 2000;
  std::unique_ptr<shoal::Communicator> comm;
  shoal::Status s = shoal::Communicator::Create(opt, &comm);
  std::printf("%s\n", s.ToString().c_str());
  return s.code() == SHOAL_ERR_COORDINATOR_LOST ? 0 : 1;
}
