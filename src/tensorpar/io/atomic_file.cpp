// AtomicFile and MappedFile: the POSIX plumbing behind every file tensorpar writes or maps.
#include "tensorpar/io/atomic_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "tensorpar/core/error.hpp"

namespace tensorpar::io {

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  tmp_path_ = fmt::format("{}.tmp.{}", path_, ::getpid());
  fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  TP_CHECK(fd_ >= 0, IoError, "{}: cannot create temporary file '{}' ({}); check that the directory exists and is writable",
           path_, tmp_path_, std::strerror(errno));
}

AtomicFile::AtomicFile(AtomicFile&& other) noexcept
    : path_(std::move(other.path_)), tmp_path_(std::move(other.tmp_path_)), fd_(std::exchange(other.fd_, -1)) {}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_path_.c_str());
  }
}

void AtomicFile::write(std::span<const std::byte> bytes) {
  TP_CHECK(fd_ >= 0, IoError, "{}: write after commit", path_);
  const std::byte* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    const ssize_t n = ::write(fd_, p, left);
    if (n < 0 && errno == EINTR) continue;
    TP_CHECK(n > 0, IoError, "{}: write failed ({}); check free disk space", tmp_path_, std::strerror(errno));
    p += n;
    left -= size_t(n);
  }
}

void AtomicFile::pwrite(std::span<const std::byte> bytes, uint64_t offset) {
  TP_CHECK(fd_ >= 0, IoError, "{}: write after commit", path_);
  const std::byte* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    const ssize_t n = ::pwrite(fd_, p, left, off_t(offset));
    if (n < 0 && errno == EINTR) continue;
    TP_CHECK(n > 0, IoError, "{}: write failed ({}); check free disk space", tmp_path_, std::strerror(errno));
    p += n;
    left -= size_t(n);
    offset += uint64_t(n);
  }
}

void AtomicFile::commit() {
  TP_CHECK(fd_ >= 0, IoError, "{}: committed twice", path_);
  const int fd = std::exchange(fd_, -1);
  const bool synced = ::fsync(fd) == 0;
  const int sync_errno = errno;
  const bool closed = ::close(fd) == 0;
  if (!synced || !closed) {
    ::unlink(tmp_path_.c_str());
    throw IoError(fmt::format("{}: flushing '{}' failed ({}); check free disk space", path_, tmp_path_,
                              std::strerror(synced ? errno : sync_errno)));
  }
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp_path_.c_str());
    throw IoError(fmt::format("{}: cannot rename '{}' over it ({})", path_, tmp_path_, std::strerror(e)));
  }
}

void fsync_dir(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  TP_CHECK(fd >= 0, IoError, "{}: cannot open the directory ({})", path, std::strerror(errno));
  const bool ok = ::fsync(fd) == 0;
  const int e = errno;
  ::close(fd);
  TP_CHECK(ok, IoError, "{}: cannot flush the directory ({})", path, std::strerror(e));
}

void write_file_atomically(const std::string& path, std::string_view contents) {
  AtomicFile file(path);
  file.write(contents);
  file.commit();
}

MappedFile MappedFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  TP_CHECK(fd >= 0, IoError, "{}: cannot open ({}); check the path", path, std::strerror(errno));
  struct stat st{};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw IoError(fmt::format("{}: not a regular file", path));
  }
  MappedFile mapped;
  mapped.size_ = uint64_t(st.st_size);
  if (mapped.size_ > 0) {
    void* p = ::mmap(nullptr, size_t(mapped.size_), PROT_READ, MAP_PRIVATE, fd, 0);
    const int e = errno;
    ::close(fd);  // the map keeps its own reference to the file
    TP_CHECK(p != MAP_FAILED, IoError, "{}: mmap failed ({})", path, std::strerror(e));
    mapped.data_ = static_cast<const std::byte*>(p);
  } else {
    ::close(fd);
  }
  return mapped;
}

void MappedFile::release(uint64_t offset, uint64_t length) const {
  if (data_ == nullptr || length == 0 || offset >= size_) return;
  const uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
  const uint64_t begin = offset / page * page, end = std::min(size_, offset + length);
  // advice only: a failure leaves the pages mapped, which costs memory but never correctness
  ::madvise(const_cast<std::byte*>(data_) + begin, size_t(end - begin), MADV_DONTNEED);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

MappedFile::~MappedFile() { release(); }

void MappedFile::release() noexcept {
  if (data_) ::munmap(const_cast<std::byte*>(data_), size_t(size_));
  data_ = nullptr;
  size_ = 0;
}

}  // namespace tensorpar::io
