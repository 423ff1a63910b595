// xgrad/atomic_file.h — the one way xgrad writes a file: all of it or nothing.
//
// Every writer (save_npy/save_npz, nn::save, checkpoints, write_idx, render_dot, xgrad-lab's CSV, JSON, report
// and plots) goes through here:
//
//   1. the bytes go to a temporary file "<path>.tmp-<pid>-<n>" in the same folder (same file system, so the
//      rename below is atomic), written in a loop that survives short writes and EINTR;
//   2. fsync of the temporary file, close;
//   3. rename over <path> (readers see the old file or the new one, never half of one);
//   4. fsync of the folder (the rename itself is durable).
//
// A failure at any step throws xg::Error naming the file, the step and the system's reason, removes the temporary
// file, and leaves <path> exactly as it was. A process killed between 1 and 3 cannot remove its temporary file:
// the next successful write of the same <path> removes the temporaries of processes that no longer exist.
//
//   xg::write_file_atomic("run/summary.json", text);          // bytes in memory
//   xg::AtomicFile f("run/plot.png");                         // a program writes the file itself
//   std::system(("gnuplot -e \"set output '" + f.temp_path() + "'\" ...").c_str());
//   f.commit();                                                // fsync, rename, fsync the folder
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace xg {

/// Writes `bytes` to `path` atomically (steps above). The folder must exist. `who` prefixes error messages
/// (e.g. "save_npz"). Throws xg::Error; on error `path` is unchanged and no temporary file is left.
void write_file_atomic(const std::string& path, std::string_view bytes, std::string_view who = "write_file_atomic");

/// A temporary name beside `path` for a file that something else writes (a child program, a library with its
/// own file handle). commit() fsyncs it, renames it over `path` and fsyncs the folder; if commit() is not
/// reached (an error, an exception) the destructor removes the temporary file.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path, std::string who = "AtomicFile");
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return tmp_; }
  /// Makes the temporary file the file at path(). xg::Error if it does not exist or a step fails.
  void commit();

 private:
  std::string path_, tmp_, who_;
  bool committed_ = false;
};

// ---- test seam -----------------------------------------------------------------------------------------------

/// The steps of an atomic write, in order.
enum class WriteStep { Open, Write, Sync, Close, Rename, SyncDir };
const char* to_string(WriteStep step);

/// What the seam makes one step do: fail with `error` (an errno value; 0 = do not fail) and, for Write, write
/// at most `max_bytes` bytes for real first (a short write).
struct WriteFault {
  int error = 0;
  std::size_t max_bytes = static_cast<std::size_t>(-1);
};

/// Tests only: called before each step of every atomic write in this process (for Write: before each write(2)
/// call, with the bytes written so far). An empty function (the default) removes the hook. The hook may also
/// kill the process, to test what a crash at that step leaves behind.
using WriteFaultHook = std::function<WriteFault(WriteStep step, std::size_t bytes_written)>;
void set_write_fault_hook(WriteFaultHook hook);

}  // namespace xg
