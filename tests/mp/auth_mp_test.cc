// Group-secret authentication with real processes on 127.0.0.1 (docs/protocol.md,
// "Authentication"): a shoal-coord started with --secret-file, shoal_sync_peer processes with the
// right secret, a wrong one or none, and a raw TCP client. Every wait has a deadline; every
// process is killed and reaped by its ChildProcess destructor, also when an assertion fails.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "mp/swarm.h"
#include "shoal/net/auth.h"

namespace shoal::mp {
namespace {

constexpr TimeMs kExitMs = 120000;  // sanitizer builds are slow; a hang still ends here
constexpr const char* kSecret = "correct horse battery staple";

// The ERROR line a peer prints when Create fails.
Line CreateError(Swarm& swarm, int i) { return mp::CreateError(swarm, i, kExitMs); }

TEST(AuthMpTest, MembersWithTheSecretTrainAndMoveStateOverAuthenticatedLinks) {
  TempDir dir;
  Swarm swarm(SHOAL_SYNC_PEER_BIN, {"--secret-file", WriteSecretFile(dir, kSecret)});
  // Three members; one starts with a flipped bit, so a sync moves bytes over a transfer link, and
  // every step all-reduces over the ring links: both kinds of data stream must authenticate.
  for (int i = 0; i < 3; i++) {
    std::vector<std::string> args = {"--expect", "3", "--layout", "f32:65536,f32:16", "--steps",
                                     "3", "--allreduce", "65536", "--secret", kSecret};
    if (i == 2) args.insert(args.end(), {"--flip", "0:100"});
    swarm.StartPeer(args);
  }
  for (int i = 0; i < 3; i++) {
    int st = swarm.WaitExit(i, kExitMs);
    ASSERT_TRUE(Exited0(st)) << "peer " << i << " " << DescribeWaitStatus(st) << "\n"
                             << swarm.Diagnostics();
  }
  bool moved = false;
  std::string state;
  for (int i = 0; i < 3; i++) {
    for (const Line& l : swarm.Lines(i)) {
      if (l.word == "SYNC" && l.get("step") == "0" && l.get("status") == "0") {
        moved = moved || l.num("rx") > 0;
      }
      if (l.word == "SYNC" && l.get("step") == "2" && l.get("status") == "0") {
        if (state.empty()) state = l.get("state");
        EXPECT_EQ(l.get("state"), state) << "peer " << i;
      }
    }
  }
  EXPECT_TRUE(moved) << "the flipped tensor should have been sent to peer 2\n"
                     << swarm.Diagnostics();
}

TEST(AuthMpTest, AWrongOrMissingSecretIsRefusedWithAClearErrorAndTheGroupGoesOn) {
  TempDir dir;
  Swarm swarm(SHOAL_SYNC_PEER_BIN, {"--secret-file", WriteSecretFile(dir, kSecret)});
  int wrong = swarm.StartPeer({"--secret", "Correct horse battery staple", "--timeout-ms", "5000"});
  int none = swarm.StartPeer({"--timeout-ms", "5000"});
  Line w = CreateError(swarm, wrong);
  Line n = CreateError(swarm, none);
  EXPECT_EQ(w.num("status"), SHOAL_ERR_AUTH) << swarm.Diagnostics();
  // The peer checks the coordinator's proof first, so it is the one that finds the mismatch.
  EXPECT_NE(w.get("msg").find("does not hold the group secret"), std::string::npos) << w.raw;
  EXPECT_EQ(n.num("status"), SHOAL_ERR_AUTH) << swarm.Diagnostics();
  EXPECT_NE(n.get("msg").find("requires its secret"), std::string::npos) << n.raw;
  // The coordinator still serves peers that hold the secret.
  int a = swarm.StartPeer({"--expect", "2", "--steps", "2", "--secret", kSecret});
  int b = swarm.StartPeer({"--expect", "2", "--steps", "2", "--secret", kSecret});
  for (int i : {a, b}) {
    int st = swarm.WaitExit(i, kExitMs);
    EXPECT_TRUE(Exited0(st)) << "peer " << i << " " << DescribeWaitStatus(st) << "\n"
                             << swarm.Diagnostics();
  }
}

TEST(AuthMpTest, TheCoordinatorChecksTheProofItself) {
  TempDir dir;
  Swarm swarm(SHOAL_SYNC_PEER_BIN, {"--secret-file", WriteSecretFile(dir, kSecret)});
  // A raw client that answers the challenge with a proof made from another secret.
  FramedClient c;
  ASSERT_TRUE(c.Connect("127.0.0.1", swarm.port(), Deadline::After(5000)).ok());
  net::Nonce mine{};
  mine[0] = 7;
  ASSERT_TRUE(c.Send(net::AuthHello{mine}, Deadline::After(5000)).ok());
  net::Message m;
  ASSERT_TRUE(c.Recv(&m, Deadline::After(5000)).ok());
  auto* challenge = std::get_if<net::AuthChallenge>(&m);
  ASSERT_NE(challenge, nullptr);
  // The coordinator's own proof is right: a client with the secret would accept it.
  EXPECT_TRUE(net::MacEqual(challenge->proof, net::ServerProof(kSecret, mine, challenge->nonce)));
  ASSERT_TRUE(c.Send(net::AuthProof{net::ClientProof("guess", mine, challenge->nonce)},
                     Deadline::After(5000)).ok());
  ASSERT_TRUE(c.Recv(&m, Deadline::After(5000)).ok());
  auto* reject = std::get_if<net::Reject>(&m);
  ASSERT_NE(reject, nullptr);
  EXPECT_EQ(reject->code, SHOAL_ERR_AUTH);
  EXPECT_EQ(reject->reason, "wrong group secret");
  EXPECT_FALSE(c.Recv(&m, Deadline::After(5000)).ok());  // and the connection is closed
}

TEST(AuthMpTest, APeerWithASecretRefusesACoordinatorWithoutOne) {
  Swarm swarm(SHOAL_SYNC_PEER_BIN);
  int p = swarm.StartPeer({"--secret", kSecret, "--timeout-ms", "5000"});
  Line e = CreateError(swarm, p);
  EXPECT_EQ(e.num("status"), SHOAL_ERR_AUTH) << swarm.Diagnostics();
  EXPECT_NE(e.get("msg").find("without a group secret"), std::string::npos) << e.raw;
}

}  // namespace
}  // namespace shoal::mp
