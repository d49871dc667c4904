// Whole-file reads and durable atomic replacement, for the small files gradwatch reads and
// writes (configs, tokens, certificates, job records, the ports file, traces, spools,
// summaries and checkpoints).
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>

namespace gradwatch {

// The whole file into `out`; false when it cannot be opened or read (errno says why; a
// folder is refused with EISDIR). Safe to call from any thread.
bool ReadWholeFile(const std::string& path, std::string* out);

// The whole file; throws std::runtime_error "`what` PATH: cannot read: REASON" (`what`
// names the file's role, e.g. "tokens file"; "" for none).
std::string ReadFileOrThrow(const std::string& path, const std::string& what = "");

constexpr std::filesystem::perms kReadableByAll =
    std::filesystem::perms::owner_read | std::filesystem::perms::owner_write |
    std::filesystem::perms::group_read | std::filesystem::perms::others_read;

// Replaces `path` with `text`, durably and atomically: writes a fresh temporary file
// beside it (PATH.tmp.XXXXXX, created exclusively, so a link planted there is never
// followed) with `perms`, fsyncs it, renames it over `path` and fsyncs the folder. A reader
// sees the old file or the new one, never half of one, and after a crash the new file is
// either wholly there or not at all.
//
// Throws std::runtime_error "cannot write PATH: STEP TMP: REASON" naming the step that
// failed (create, write, fsync, close, rename, fsync folder) and strerror; the temporary
// file is removed and `path` is left as it was (unless the folder's own fsync failed,
// after the rename). A folder whose file system cannot fsync folders (EINVAL) is accepted.
void WriteFileAtomically(const std::filesystem::path& path, const std::string& text,
                         std::filesystem::perms perms = kReadableByAll);

}  // namespace gradwatch
