// AtomicFile: writes go to "<path>.tmp.<pid>" and become visible under <path> only on commit() (rename),
// so a reader never sees a half-written file and a crash leaves the old file intact.
// Also MappedFile: a read-only, private memory map of a whole file (RAII over the fd and the map).
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace tensorpar::io {

class AtomicFile {
 public:
  explicit AtomicFile(std::string path);  // IoError if the temporary file cannot be created
  AtomicFile(AtomicFile&& other) noexcept;
  AtomicFile& operator=(AtomicFile&&) = delete;
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();  // not committed: removes the temporary file

  void write(std::span<const std::byte> bytes);
  void write(std::string_view text) { write(std::as_bytes(std::span(text.data(), text.size()))); }
  void pwrite(std::span<const std::byte> bytes, uint64_t offset);
  void commit();  // flush, close and rename over the destination; IoError on failure
  const std::string& tmp_path() const { return tmp_path_; }

 private:
  std::string path_, tmp_path_;
  int fd_ = -1;
};

// fsync a directory, so the names created, renamed or removed in it survive a power cut; IoError on failure.
void fsync_dir(const std::string& path);

// Write a whole file at once through an AtomicFile.
void write_file_atomically(const std::string& path, std::string_view contents);

class MappedFile {
 public:
  MappedFile() = default;
  static MappedFile open(const std::string& path);  // IoError if missing/unreadable; an empty file maps to size 0
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const std::byte* data() const { return data_; }
  uint64_t size() const { return size_; }
  // Unmaps the pages of bytes [offset, offset + length) from this process (madvise MADV_DONTNEED;
  // rounded out to whole pages): a read-only map refills them from the file if touched again. A
  // loader that is done with a tensor calls it so the file does not add to the resident memory.
  void release(uint64_t offset, uint64_t length) const;

 private:
  void release() noexcept;
  const std::byte* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace tensorpar::io
