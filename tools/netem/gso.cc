#include "tools/netem/gso.h"

#include <algorithm>
#include <cstring>

namespace shoal::netem {
namespace {

// struct virtio_net_hdr of <linux/virtio_net.h>, which C++ cannot include (a member is named
// `class`), in the byte order of this machine (TUN devices use it unless TUNSETVNETBE says not).
struct VnetHdr {
  std::uint8_t flags;
  std::uint8_t gso_type;
  std::uint16_t hdr_len;
  std::uint16_t gso_size;
  std::uint16_t csum_start;
  std::uint16_t csum_offset;
};
static_assert(sizeof(VnetHdr) == kVnetHdrBytes);
constexpr std::uint8_t kGsoNone = 0;    // VIRTIO_NET_HDR_GSO_NONE
constexpr std::uint8_t kGsoTcpv4 = 1;   // VIRTIO_NET_HDR_GSO_TCPV4
constexpr std::uint8_t kGsoEcn = 0x80;  // VIRTIO_NET_HDR_GSO_ECN

constexpr std::uint8_t kProtocolTcp = 6;
constexpr std::uint8_t kTcpFin = 0x01;
constexpr std::uint8_t kTcpPsh = 0x08;
constexpr std::uint8_t kTcpCwr = 0x80;

std::uint16_t Get16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}
void Put16(std::uint8_t* p, std::uint16_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}
std::uint32_t Get32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         p[3];
}
void Put32(std::uint8_t* p, std::uint32_t v) {
  Put16(p, static_cast<std::uint16_t>(v >> 16));
  Put16(p + 2, static_cast<std::uint16_t>(v));
}

// Ones'-complement sum of big-endian 16-bit words (an odd last byte is padded with zero), not yet
// folded.
std::uint64_t Sum16(const std::uint8_t* p, std::size_t n, std::uint64_t sum = 0) {
  std::size_t i = 0;
  for (; i + 1 < n; i += 2) sum += Get16(p + i);
  if (i < n) sum += std::uint32_t{p[i]} << 8;
  return sum;
}

std::uint16_t Fold(std::uint64_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(sum);
}

// Sum of the TCP pseudo-header of an IPv4 packet whose header is at `ip`.
std::uint64_t PseudoHeaderSum(const std::uint8_t* ip, std::uint32_t tcp_bytes) {
  return Sum16(ip + 12, 8) + kProtocolTcp + tcp_bytes;
}

std::uint32_t HeaderLength(const std::uint8_t* ip) { return (ip[0] & 0x0fu) * 4; }

}  // namespace

bool ParseOffloaded(std::span<const std::uint8_t> read, OffloadedPacket* packet) {
  *packet = OffloadedPacket{};
  if (read.size() < kVnetHdrBytes + 20) return false;
  VnetHdr vnet;
  std::memcpy(&vnet, read.data(), sizeof(vnet));
  const std::uint8_t* ip = read.data() + kVnetHdrBytes;
  const std::uint32_t ip_bytes = static_cast<std::uint32_t>(read.size() - kVnetHdrBytes);
  if (vnet.gso_type == kGsoNone) return true;
  if ((vnet.gso_type & ~kGsoEcn) != kGsoTcpv4) return false;
  const std::uint32_t ihl = HeaderLength(ip);
  if ((ip[0] >> 4) != 4 || ihl < 20 || ip[9] != kProtocolTcp || Get16(ip + 2) != ip_bytes ||
      ihl + 20 > ip_bytes) {
    return false;
  }
  const std::uint32_t doff = (ip[ihl + 12] >> 4) * 4u;
  if (doff < 20 || ihl + doff > ip_bytes || vnet.gso_size == 0) return false;
  packet->gso = true;
  packet->header_bytes = ihl + doff;
  packet->gso_size = vnet.gso_size;
  packet->payload_bytes = ip_bytes - packet->header_bytes;
  packet->segments =
      std::max<std::uint32_t>(1, (packet->payload_bytes + packet->gso_size - 1) / packet->gso_size);
  return true;
}

std::uint32_t SegmentIpBytes(const OffloadedPacket& packet, std::uint32_t i,
                             std::uint32_t ip_bytes) {
  if (!packet.gso) return ip_bytes;
  const std::uint32_t offset = i * packet.gso_size;
  return packet.header_bytes + std::min(packet.gso_size, packet.payload_bytes - offset);
}

std::uint32_t WriteSegment(std::span<const std::uint8_t> read, const OffloadedPacket& packet,
                           std::uint32_t i, std::uint8_t* out) {
  const std::uint8_t* ip = read.data() + kVnetHdrBytes;
  const std::uint32_t ip_bytes = static_cast<std::uint32_t>(read.size() - kVnetHdrBytes);
  const std::uint32_t bytes = SegmentIpBytes(packet, i, ip_bytes);
  std::memset(out, 0, kVnetHdrBytes);  // no GSO, no checksum offload: a finished packet
  std::uint8_t* seg = out + kVnetHdrBytes;
  const std::uint32_t ihl = HeaderLength(ip);
  const std::uint32_t offset = i * packet.gso_size;
  std::memcpy(seg, ip, packet.header_bytes);
  std::memcpy(seg + packet.header_bytes, ip + packet.header_bytes + offset,
              bytes - packet.header_bytes);
  // IPv4: length, identification (the kernel's TSO gives segment i the id + i), checksum.
  Put16(seg + 2, static_cast<std::uint16_t>(bytes));
  Put16(seg + 4, static_cast<std::uint16_t>(Get16(ip + 4) + i));
  Put16(seg + 10, 0);
  Put16(seg + 10, static_cast<std::uint16_t>(~Fold(Sum16(seg, ihl))));
  // TCP: sequence number, flags, checksum over the pseudo-header and the whole segment.
  std::uint8_t* tcp = seg + ihl;
  Put32(tcp + 4, Get32(ip + ihl + 4) + offset);
  if (i + 1 < packet.segments) tcp[13] &= static_cast<std::uint8_t>(~(kTcpFin | kTcpPsh));
  if (i > 0) tcp[13] &= static_cast<std::uint8_t>(~kTcpCwr);
  const std::uint32_t tcp_bytes = bytes - ihl;
  Put16(tcp + 16, 0);
  Put16(tcp + 16,
        static_cast<std::uint16_t>(~Fold(Sum16(tcp, tcp_bytes, PseudoHeaderSum(seg, tcp_bytes)))));
  return kVnetHdrBytes + bytes;
}

bool TcpChecksumOk(std::span<const std::uint8_t> ip_packet) {
  if (ip_packet.size() < 40) return false;
  const std::uint32_t ihl = HeaderLength(ip_packet.data());
  const std::uint32_t tcp_bytes = static_cast<std::uint32_t>(ip_packet.size()) - ihl;
  return Fold(Sum16(ip_packet.data() + ihl, tcp_bytes,
                    PseudoHeaderSum(ip_packet.data(), tcp_bytes))) == 0xffff;
}

bool IpHeaderChecksumOk(std::span<const std::uint8_t> ip_packet) {
  if (ip_packet.size() < 20) return false;
  return Fold(Sum16(ip_packet.data(), HeaderLength(ip_packet.data()))) == 0xffff;
}

}  // namespace shoal::netem
