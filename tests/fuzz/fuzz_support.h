// What every fuzz target of tests/fuzz shares: reading a fuzz input front to back, writing one (the
// seed writer), failing a property, and watching the allocations a call makes.
//
// - Input: a fuzz input is read as a sequence of little-endian numbers and byte strings. Reading
//   past the end yields zeros and empty strings, so every input, however short, is a complete
//   program for a target; Input::done() says when the real bytes ran out. The seed writer builds
//   inputs with Output, the mirror of Input, so seeds and targets read the same format.
// - FUZZ_REQUIRE: a property of the code under test that does not hold. It prints what and where
//   and aborts, which libFuzzer reports as a crash and saves the input.
// - Tracing/Trace: SHOAL_FUZZ_TRACE=1 prints what a target does.
// - AllocWatch: while one is alive on a thread, the size of every allocation that thread makes is
//   recorded (through the sanitizer allocator's hooks), so a target can bound what a decoder
//   allocates by what its input justifies.
//
// Single-threaded targets; nothing here is thread-safe except the hooks themselves.
#pragma once

#include <sanitizer/allocator_interface.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace shoal::fuzz {

[[noreturn]] inline void Fail(const char* file, int line, const char* condition,
                              const std::string& why) {
  std::fprintf(stderr, "%s:%d: fuzz property failed: %s%s%s\n", file, line, condition,
               why.empty() ? "" : ": ", why.c_str());
  std::fflush(stderr);
  std::abort();
}

#define FUZZ_REQUIRE(condition, why) \
  ((condition) ? static_cast<void>(0) : ::shoal::fuzz::Fail(__FILE__, __LINE__, #condition, (why)))

// SHOAL_FUZZ_TRACE=1 in the environment makes a target print what it does: for reading a crash
// input. Build the line only when Tracing().
inline bool Tracing() {
  static const bool on = std::getenv("SHOAL_FUZZ_TRACE") != nullptr;
  return on;
}
inline void Trace(const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); }

class Input {
 public:
  Input(const std::uint8_t* data, std::size_t size) : p_(data), n_(size) {}
  bool done() const { return pos_ >= n_; }
  std::size_t left() const { return n_ - pos_; }
  std::uint64_t Le(int bytes) {  // bytes <= 8
    std::uint64_t v = 0;
    for (int i = 0; i < bytes; i++) {
      if (pos_ < n_) v |= std::uint64_t{p_[pos_++]} << (8 * i);
    }
    return v;
  }
  void Skip(std::size_t n) { pos_ += n < left() ? n : left(); }
  std::uint8_t U8() { return static_cast<std::uint8_t>(Le(1)); }
  std::uint16_t U16() { return static_cast<std::uint16_t>(Le(2)); }
  std::uint32_t U32() { return static_cast<std::uint32_t>(Le(4)); }
  std::uint64_t U64() { return Le(8); }
  bool Bool() { return (U8() & 1) != 0; }
  // A number in [0, n) (n > 0), from one byte when n <= 256.
  std::uint32_t Below(std::uint32_t n) {
    return static_cast<std::uint32_t>((n <= 256 ? U8() : U32()) % n);
  }
  // A u16 length, then that many bytes (fewer if the input ends).
  std::vector<std::uint8_t> Bytes() {
    std::size_t len = U16();
    if (len > left()) len = left();
    std::vector<std::uint8_t> v(p_ + pos_, p_ + pos_ + len);
    pos_ += len;
    return v;
  }
  // Everything not read yet.
  std::vector<std::uint8_t> Rest() {
    std::vector<std::uint8_t> v(p_ + pos_, p_ + n_);
    pos_ = n_;
    return v;
  }

 private:
  const std::uint8_t* p_;
  std::size_t n_;
  std::size_t pos_ = 0;
};

class Output {
 public:
  void Le(std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) bytes_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  void U8(std::uint8_t v) { Le(v, 1); }
  void U16(std::uint16_t v) { Le(v, 2); }
  void U32(std::uint32_t v) { Le(v, 4); }
  void U64(std::uint64_t v) { Le(v, 8); }
  void Bytes(const std::vector<std::uint8_t>& v) {
    U16(static_cast<std::uint16_t>(v.size()));
    Raw(v);
  }
  void Raw(const std::vector<std::uint8_t>& v) { bytes_.insert(bytes_.end(), v.begin(), v.end()); }
  const std::vector<std::uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<std::uint8_t> bytes_;
};

struct AllocStats {
  std::size_t largest_bytes = 0;  // the largest single allocation
  std::size_t total_bytes = 0;    // all allocations added up (frees not subtracted)
  std::size_t count = 0;
};

namespace internal {
inline thread_local bool alloc_watching = false;
inline thread_local AllocStats alloc_stats;
inline void OnMalloc(const volatile void*, std::size_t size) {
  if (!alloc_watching) return;
  AllocStats& s = alloc_stats;
  if (size > s.largest_bytes) s.largest_bytes = size;
  s.total_bytes += size;
  s.count++;
}
inline void OnFree(const volatile void*) {}
}  // namespace internal

// Records this thread's allocations from construction to Stop(); not nestable. The first one
// installs the hooks (the sanitizer runtime keeps a few slots; libFuzzer uses one).
class AllocWatch {
 public:
  AllocWatch() {
    static const bool hooked =
        __sanitizer_install_malloc_and_free_hooks(internal::OnMalloc, internal::OnFree) != 0;
    FUZZ_REQUIRE(hooked, "no free slot for allocation hooks");
    FUZZ_REQUIRE(!internal::alloc_watching, "nested AllocWatch");
    internal::alloc_stats = AllocStats{};
    internal::alloc_watching = true;
  }
  ~AllocWatch() { internal::alloc_watching = false; }
  AllocWatch(const AllocWatch&) = delete;
  AllocWatch& operator=(const AllocWatch&) = delete;
  AllocStats Stop() {
    internal::alloc_watching = false;
    return internal::alloc_stats;
  }
};

}  // namespace shoal::fuzz
