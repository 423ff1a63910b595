// Atomic file writes (see xgrad/atomic_file.h): temp file in the same folder, write loop, fsync, rename, fsync
// of the folder; a test seam can fail any step.
#include "xgrad/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>

#include "xgrad/common.h"

namespace xg {

namespace fs = std::filesystem;

const char* to_string(WriteStep step) {
  switch (step) {
    case WriteStep::Open: return "creating";
    case WriteStep::Write: return "writing";
    case WriteStep::Sync: return "fsync of";
    case WriteStep::Close: return "closing";
    case WriteStep::Rename: return "renaming";
    case WriteStep::SyncDir: return "fsync of the folder of";
  }
  return "?";
}

namespace {

std::mutex g_hook_mutex;
WriteFaultHook g_hook;
std::atomic<unsigned long> g_counter{0};

WriteFaultHook current_hook() {
  std::lock_guard<std::mutex> lock(g_hook_mutex);
  return g_hook;
}

// The fault the seam asks for at `step` (none without a hook).
WriteFault fault_at(const WriteFaultHook& hook, WriteStep step, std::size_t written = 0) {
  return hook ? hook(step, written) : WriteFault{};
}

// "<path>.tmp-<pid>-<n>": unique per process and write, so parallel writers of different files (and of the
// same file) never share a temporary.
std::string temp_name(const std::string& path) {
  return path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(g_counter.fetch_add(1));
}

std::string folder_of(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

[[noreturn]] void fail_step(std::string_view who, WriteStep step, const std::string& tmp, const std::string& path,
                            int err) {
  ::unlink(tmp.c_str());
  std::string hint;
  if (err == ENOSPC || err == EFBIG || err == EDQUOT) hint = " (the disk or your quota is full: free some space)";
  else if (err == EACCES || err == EROFS || err == EPERM) hint = " (is the folder writable?)";
  else if (err == ENOENT && step == WriteStep::Open) hint = " (does the folder exist?)";
  fail("{}: {} '{}' failed: {}{}; '{}' was not changed", who, to_string(step), tmp, std::strerror(err), hint,
       path);
}

// Removes "<name>.tmp-<pid>-*" beside `path` left by processes that no longer exist (killed mid-write).
void remove_stale_temps(const std::string& path) {
  const fs::path p(path);
  const std::string prefix = p.filename().string() + ".tmp-";
  std::error_code ec;
  for (fs::directory_iterator it(folder_of(path), ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    char* stop = nullptr;
    const long pid = std::strtol(name.c_str() + prefix.size(), &stop, 10);
    if (pid <= 0 || stop == nullptr || *stop != '-') continue;
    if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
      std::error_code rm;
      fs::remove(it->path(), rm);
    }
  }
}

// Steps 2-4 for a temporary file open as `fd` (closed here in every case).
void finish(int fd, const WriteFaultHook& hook, std::string_view who, const std::string& tmp,
            const std::string& path) {
  WriteFault f = fault_at(hook, WriteStep::Sync);
  if (f.error != 0 || ::fsync(fd) != 0) {
    const int err = f.error != 0 ? f.error : errno;
    ::close(fd);
    fail_step(who, WriteStep::Sync, tmp, path, err);
  }
  f = fault_at(hook, WriteStep::Close);
  if (::close(fd) != 0 || f.error != 0) fail_step(who, WriteStep::Close, tmp, path, f.error != 0 ? f.error : errno);
  f = fault_at(hook, WriteStep::Rename);
  if (f.error != 0 || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = f.error != 0 ? f.error : errno;
    ::unlink(tmp.c_str());
    fail("{}: renaming '{}' to '{}' failed: {}; '{}' was not changed", who, tmp, path, std::strerror(err), path);
  }
  // The new file is in place; make the rename durable. A failure here is reported (the data may not survive a
  // power cut) although the file is complete.
  f = fault_at(hook, WriteStep::SyncDir);
  const std::string dir = folder_of(path);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0 || f.error != 0 || ::fsync(dfd) != 0) {
    const int err = f.error != 0 ? f.error : errno;
    if (dfd >= 0) ::close(dfd);
    fail("{}: fsync of the folder '{}' failed after writing '{}': {}; the file is complete but may not survive a "
         "power cut",
         who, dir, path, std::strerror(err));
  }
  ::close(dfd);
  remove_stale_temps(path);
}

}  // namespace

void set_write_fault_hook(WriteFaultHook hook) {
  std::lock_guard<std::mutex> lock(g_hook_mutex);
  g_hook = std::move(hook);
}

void write_file_atomic(const std::string& path, std::string_view bytes, std::string_view who) {
  if (path.empty()) fail("{}: the file name is empty", who);
  const WriteFaultHook hook = current_hook();
  const std::string tmp = temp_name(path);
  WriteFault f = fault_at(hook, WriteStep::Open);
  const int fd = f.error != 0 ? -1 : ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = f.error != 0 ? f.error : errno;
    std::string hint;
    if (err == ENOENT) hint = " (does the folder exist?)";
    else if (err == EACCES || err == EROFS || err == EPERM) hint = " (is the folder writable?)";
    else if (err == ENOSPC || err == EDQUOT) hint = " (the disk or your quota is full: free some space)";
    fail("{}: cannot create '{}': {}{}; '{}' was not changed", who, tmp, std::strerror(err), hint, path);
  }
  std::size_t done = 0;
  while (done < bytes.size()) {
    f = fault_at(hook, WriteStep::Write, done);
    const std::size_t want = std::min(bytes.size() - done, f.max_bytes);
    ssize_t n = 0;
    if (want > 0) n = ::write(fd, bytes.data() + done, want);
    if (n > 0) done += static_cast<std::size_t>(n);
    if (f.error != 0 || n < 0) {
      const int err = f.error != 0 ? f.error : errno;
      if (f.error == 0 && err == EINTR) continue;
      ::close(fd);
      fail_step(who, WriteStep::Write, tmp, path, err);
    }
    if (n == 0 && want > 0) {  // write(2) made no progress: treat as a full disk rather than loop forever
      ::close(fd);
      fail_step(who, WriteStep::Write, tmp, path, ENOSPC);
    }
  }
  finish(fd, hook, who, tmp, path);
}

AtomicFile::AtomicFile(std::string path, std::string who)
    : path_(std::move(path)), tmp_(temp_name(path_)), who_(std::move(who)) {}

AtomicFile::~AtomicFile() {
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFile::commit() {
  if (committed_) fail("{}: '{}' was already committed", who_, path_);
  const WriteFaultHook hook = current_hook();
  WriteFault f = fault_at(hook, WriteStep::Open);
  const int fd = f.error != 0 ? -1 : ::open(tmp_.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = f.error != 0 ? f.error : errno;
    fail("{}: the temporary file '{}' cannot be opened: {}; '{}' was not changed", who_, tmp_, std::strerror(err),
         path_);
  }
  finish(fd, hook, who_, tmp_, path_);
  committed_ = true;
}

}  // namespace xg
