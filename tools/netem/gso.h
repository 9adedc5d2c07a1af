// Offloaded packets of TUN devices with IFF_VNET_HDR (`shoal-netem up --offload`, docs/netem.md):
// each read starts with a virtio_net_hdr, and with TSO the kernel hands over one TCP "super-packet"
// of up to 64 KiB that stands for several MSS-sized segments (gso_size bytes of payload each, the
// last one shorter). The forwarder shapes such a packet segment by segment (each segment's IP bytes
// pass the serializers, loss and reordering as separately sent packets would) and moves it as one
// piece while all its segments get the same fate; when they do not, SplitTcp4 cuts it into real
// segments so that exactly the survivors are delivered.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace shoal::netem {

constexpr std::uint32_t kVnetHdrBytes = 10;     // sizeof(struct virtio_net_hdr)
constexpr std::uint32_t kGsoPacketMax = 65535;  // an IPv4 packet's largest total length

// What the forwarder needs to know of one read in offload mode (a virtio_net_hdr, then an IPv4
// packet of ip_bytes).
struct OffloadedPacket {
  bool gso = false;                // a TCP/IPv4 super-packet (VIRTIO_NET_HDR_GSO_TCPV4)
  std::uint32_t segments = 1;      // how many packets it stands for
  std::uint32_t header_bytes = 0;  // IPv4 + TCP headers, repeated in every segment
  std::uint32_t gso_size = 0;      // payload bytes of every segment but the last
  std::uint32_t payload_bytes = 0;
};

// Reads the virtio_net_hdr and, for a GSO packet, the IPv4 and TCP headers. False if the packet is
// malformed or of a kind the emulator does not enable (anything but TCPv4 GSO, with or without
// the ECN flag).
bool ParseOffloaded(std::span<const std::uint8_t> read, OffloadedPacket* packet);

// IP bytes of segment i (0-based) of a parsed packet; a non-GSO packet has one segment, itself.
std::uint32_t SegmentIpBytes(const OffloadedPacket& packet, std::uint32_t i,
                             std::uint32_t ip_bytes);

// Writes segment i of a GSO read as a stand-alone read for a TUN device: a virtio_net_hdr without
// GSO or checksum offload, then an IPv4 packet with its own total length, identification (+ i) and
// header checksum, its TCP sequence number advanced by i x gso_size, FIN and PSH only on the last
// segment and CWR only on the first, and a complete TCP checksum. `out` must hold
// kVnetHdrBytes + SegmentIpBytes(packet, i). Returns the bytes written.
std::uint32_t WriteSegment(std::span<const std::uint8_t> read, const OffloadedPacket& packet,
                           std::uint32_t i, std::uint8_t* out);

// The Internet checksum (RFC 1071) of a TCP/IPv4 packet (pseudo-header included), as the packet
// should carry it: for a packet that already carries a correct one the sum over it is 0, so
// TcpChecksumOk is how tests check a segment.
bool TcpChecksumOk(std::span<const std::uint8_t> ip_packet);
bool IpHeaderChecksumOk(std::span<const std::uint8_t> ip_packet);

}  // namespace shoal::netem
