// Unit tests of shoal-bench's pure parts: the peers' command lines on emulated hosts (host_peers.h)
// and the report's bandwidth and percentage tables (report.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tools/bench/host_peers.h"
#include "tools/bench/network.h"
#include "tools/bench/report.h"

namespace shoal::bench {
namespace {

// Hosts 10.77.0.(i+1); OnHost prefixes "on-hI".
class FakeNetwork final : public Network {
 public:
  explicit FakeNetwork(int hosts) : hosts_(hosts) {}
  std::string Address(int host) const override { return "10.77.0." + std::to_string(host + 1); }
  std::vector<std::string> OnHost(int host, std::vector<std::string> argv) const override {
    argv.insert(argv.begin(), "on-h" + std::to_string(host));
    return argv;
  }
  std::optional<std::uint64_t> SentBytes(int) override { return 0; }
  void ResetRunStats() override {}
  std::string RunStats(int) override { return {}; }
  std::string Label(int) const override { return "net=netem"; }
  std::optional<double> CapGBps(int) const override { return 0.025; }
  int ReapStragglers(int) override { return 0; }
  int hosts() const override { return hosts_; }
  bool emulated() const override { return true; }
  std::string Describe() const override { return "fake"; }

 private:
  int hosts_;
};

class HostPeersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() / ("bench_unit_test." + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    setup_.peers_dir = "/peers";
    setup_.build_dir = "/build";
    setup_.mpi_agent = "/bin/shoal-bench --netem-mpi-agent net /bin/shoal-netem /tmp/x";
    setup_.mpi_subnet = "10.77.0.0/24";
    run_.world_size = 3;
    run_.bytes = 1 << 20;
    run_.counts = {5, 1, 5};
    run_.label = "net=netem";
    run_.run_dir = dir_.string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static bool Has(const std::vector<std::string>& argv, const std::vector<std::string>& seq) {
    return std::search(argv.begin(), argv.end(), seq.begin(), seq.end()) != argv.end();
  }

  std::filesystem::path dir_;
  HostPeersSetup setup_;
  HostPeerRun run_;
  FakeNetwork network_{4};
};

TEST_F(HostPeersTest, GlooRankRPerHostRWithItsAddressAndASharedStore) {
  run_.lib = "gloo";
  run_.algo = "ring_chunked";
  std::vector<HostPeerProcess> p;
  std::string error;
  ASSERT_TRUE(HostPeerProcesses(setup_, run_, network_, &p, &error)) << error;
  ASSERT_EQ(p.size(), 3u);
  for (int r = 0; r < 3; r++) {
    EXPECT_EQ(p[r].host, r);
    EXPECT_FALSE(p[r].own_process_group);
    EXPECT_EQ(p[r].argv[0], "/build/gloo_allreduce_bench");
    EXPECT_TRUE(Has(p[r].argv, {"--algo", "ring_chunked"}));
    EXPECT_TRUE(Has(p[r].argv, {"--rank", std::to_string(r), "--size", "3"}));
    EXPECT_TRUE(Has(p[r].argv, {"--host", "10.77.0." + std::to_string(r + 1)}));
    EXPECT_TRUE(Has(p[r].argv, {"--store", dir_.string()}));
    EXPECT_TRUE(Has(p[r].argv, {"--iters", "5", "--warmup", "1", "--batch", "5"}));
    EXPECT_TRUE(Has(p[r].argv, {"--extra", "net=netem"}));
  }
}

TEST_F(HostPeersTest, MpiIsOneMpirunOnHostZeroWithAHostfileAndTheAgent) {
  run_.lib = "mpi";
  run_.algo = "ring";
  setup_.mpi_args = "--mca btl_tcp_links 2";
  std::vector<HostPeerProcess> p;
  std::string error;
  ASSERT_TRUE(HostPeerProcesses(setup_, run_, network_, &p, &error)) << error;
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].host, 0);
  EXPECT_TRUE(p[0].own_process_group);
  const std::vector<std::string>& a = p[0].argv;
  EXPECT_EQ(a[0], "/usr/bin/mpirun");
  EXPECT_TRUE(Has(a, {"-np", "3"}));
  EXPECT_TRUE(Has(a, {"--mca", "btl", "tcp,self"}));
  EXPECT_TRUE(Has(a, {"--mca", "btl_tcp_if_include", "10.77.0.0/24"}));
  EXPECT_TRUE(Has(a, {"--mca", "plm_rsh_agent", setup_.mpi_agent}));
  EXPECT_TRUE(Has(a, {"--mca", "coll_tuned_allreduce_algorithm", "4"}));
  EXPECT_TRUE(Has(a, {"--mca", "btl_tcp_links", "2"}));  // split at blanks, not commas
  EXPECT_TRUE(Has(a, {"--extra", "net=netem btl=tcp"}));
  std::ifstream in(dir_ / "hosts");
  std::stringstream hosts;
  hosts << in.rdbuf();
  EXPECT_EQ(hosts.str(), "10.77.0.1 slots=1\n10.77.0.2 slots=1\n10.77.0.3 slots=1\n");
}

TEST_F(HostPeersTest, RefusesWhatCannotRun) {
  std::vector<HostPeerProcess> p;
  std::string error;
  run_.lib = "mpi";
  run_.algo = "bogus";
  EXPECT_FALSE(HostPeerProcesses(setup_, run_, network_, &p, &error));
  run_.lib = "mpi_sm";
  run_.algo = "default";
  EXPECT_FALSE(HostPeerProcesses(setup_, run_, network_, &p, &error));
  run_.lib = "gloo";
  run_.world_size = 5;  // more ranks than hosts
  EXPECT_FALSE(HostPeerProcesses(setup_, run_, network_, &p, &error));
}

TEST(MpiAlgorithmIdTest, RunShNumbering) {
  EXPECT_EQ(MpiAlgorithmId("default"), 0);
  EXPECT_EQ(MpiAlgorithmId("ring"), 4);
  EXPECT_EQ(MpiAlgorithmId("rabenseifner"), 6);
  EXPECT_EQ(MpiAlgorithmId("nope"), -1);
}

TEST(MpiSessionDirTest, OnePerHost) {
  EXPECT_EQ(MpiSessionDir("/tmp/b/mpi", 3), "/tmp/b/mpi/h3");
  EXPECT_NE(MpiSessionDir("/tmp/b/mpi", 1), MpiSessionDir("/tmp/b/mpi", 2));
}

TEST(ReportTest, WanBandwidthsKeepTheirDigitsAndShowAsPercentOfTheCap) {
  Report report;
  // 256 MiB, n = 4, 17.9 s: busbw 0.022494 GB/s; the line's own field has 3 decimals only.
  ASSERT_TRUE(
      report.Add("lib=shoal algo=ring K=2 n=4 bytes=268435456 mean_s=17.900000 busbw_GBps=0.022 "
                 "batch_s=0 batch_busbw_GBps=0.000 check=ok cap_GBps=0.025"));
  ASSERT_TRUE(
      report.Add("lib=gloo algo=new_ring n=4 bytes=268435456 mean_s=35.800000 busbw_GBps=0.011 "
                 "batch_s=0 batch_busbw_GBps=0.000 check=ok cap_GBps=0.025"));
  const std::string summary = report.SummaryTable("busbw_GBps", "t");
  EXPECT_NE(summary.find("| 4 | 256M | 0.0225 | 0.0112 |"), std::string::npos) << summary;
  const std::string percent = report.PercentTable("busbw_GBps", "cap_GBps", "t");
  EXPECT_NE(percent.find("| 4 | 256M | 90.0% | 45.0% |"), std::string::npos) << percent;
  const std::string ratio = report.ComparisonTables("busbw_GBps", "t");
  EXPECT_NE(ratio.find("| 2.00 |"), std::string::npos) << ratio;
  // No cap on any line (loopback): no percentage table.
  Report lo;
  ASSERT_TRUE(lo.Add("lib=shoal algo=ring K=1 n=2 bytes=65536 mean_s=0.0003 busbw_GBps=0.218"));
  EXPECT_EQ(lo.PercentTable("busbw_GBps", "cap_GBps", "t"), "");
  EXPECT_NE(lo.SummaryTable("busbw_GBps", "t").find("| 2 | 64K | 0.218 |"), std::string::npos);
}

}  // namespace
}  // namespace shoal::bench
