#include "daemon/process/scoreboard.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <system_error>

namespace clusterd {

namespace {

constexpr std::uint32_t kRecordsPerPage = 4096 / sizeof(sdk::ScoreboardRecord);

[[noreturn]] void board_fail(const char* what) {
    throw std::system_error(errno, std::system_category(), what);
}

}  // namespace

Scoreboard::Scoreboard(const std::string& program) {
    std::string name = "clusterd-scoreboard:" + program.substr(0, 200);
    fd_.reset(::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!fd_) board_fail("memfd_create(scoreboard)");
    if (!grow(kRecordsPerPage)) board_fail("scoreboard: ftruncate/mmap");
    // A worker holds the fd read-write: it must not be able to shrink the file under the
    // master's mapping (a read past the end would be SIGBUS).
    if (::fcntl(fd_.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL) < 0)
        board_fail("scoreboard: F_ADD_SEALS");
}

Scoreboard::Scoreboard(UniqueFd fd, const std::vector<std::uint32_t>& in_use) : fd_(std::move(fd)) {
    ::fcntl(fd_.get(), F_SETFD, FD_CLOEXEC);  // it crossed an exec without
    struct stat st {};
    if (::fstat(fd_.get(), &st) < 0) board_fail("scoreboard: fstat");
    auto records = static_cast<std::uint32_t>(std::min<off_t>(
        st.st_size / static_cast<off_t>(sizeof(sdk::ScoreboardRecord)), kMaxBoardRecords));
    records -= records % kRecordsPerPage;
    if (records == 0) records = kRecordsPerPage;
    if (!grow(records)) board_fail("scoreboard: mmap");
    for (std::uint32_t i : in_use) {
        if (i < capacity_ && !used_[i]) {
            used_[i] = true;
            ++in_use_;
        }
    }
}

Scoreboard::~Scoreboard() {
    if (map_ != nullptr) ::munmap(map_, std::size_t{capacity_} * sizeof(sdk::ScoreboardRecord));
}

bool Scoreboard::grow(std::uint32_t records) {
    std::size_t bytes = std::size_t{records} * sizeof(sdk::ScoreboardRecord);
    struct stat st {};
    if (::fstat(fd_.get(), &st) < 0) return false;
    if (static_cast<std::size_t>(st.st_size) < bytes &&
        ::ftruncate(fd_.get(), static_cast<off_t>(bytes)) < 0)
        return false;
    void* m = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
    if (m == MAP_FAILED) return false;
    if (map_ != nullptr) ::munmap(map_, std::size_t{capacity_} * sizeof(sdk::ScoreboardRecord));
    map_ = m;
    capacity_ = records;
    used_.resize(records, false);
    return true;
}

sdk::ScoreboardRecord* Scoreboard::at(std::uint32_t index) const {
    return static_cast<sdk::ScoreboardRecord*>(map_) + index;
}

std::optional<std::uint32_t> Scoreboard::take() {
    std::uint32_t index = 0;
    while (index < capacity_ && used_[index]) ++index;
    if (index == capacity_) {
        if (capacity_ >= kMaxBoardRecords || !grow(std::min(capacity_ * 2, kMaxBoardRecords)))
            return std::nullopt;
    }
    used_[index] = true;
    ++in_use_;
    sdk::ScoreboardRecord* r = at(index);
    std::memset(static_cast<void*>(r), 0, sizeof *r);
    sdk::board_store(r->magic, sdk::kScoreboardMagic);
    sdk::board_store(r->version, sdk::kScoreboardVersion);
    sdk::board_store(r->size, static_cast<std::uint16_t>(sizeof *r));
    return index;
}

void Scoreboard::set_pid(std::uint32_t index, pid_t pid) {
    if (index < capacity_) sdk::board_store(at(index)->pid, static_cast<std::int32_t>(pid));
}

void Scoreboard::release(std::uint32_t index) {
    if (index >= capacity_ || !used_[index]) return;
    used_[index] = false;
    --in_use_;
    std::memset(static_cast<void*>(at(index)), 0, sizeof(sdk::ScoreboardRecord));
}

BoardReading Scoreboard::read(std::uint32_t index) const {
    BoardReading out;
    if (index >= capacity_) return out;
    sdk::ScoreboardRecord* r = at(index);
    out.pid = sdk::board_load(r->pid);
    out.flags = sdk::board_load(r->flags);
    out.alive_ns = sdk::board_load(r->alive_ns);
    out.loop_lag_us = sdk::board_load(r->loop_lag_us);
    out.connections = sdk::board_load(r->connections);
    out.requests = sdk::board_load(r->requests);
    out.bytes_in = sdk::board_load(r->bytes_in);
    out.bytes_out = sdk::board_load(r->bytes_out);
    out.rejected = sdk::board_load(r->rejected);
    out.timeouts = sdk::board_load(r->timeouts);
    // The status text under its sequence lock; a writer stuck mid-way costs four tries.
    std::atomic_ref<std::uint32_t> seq(r->status_seq);
    for (int attempt = 0; attempt < 4; ++attempt) {
        std::uint32_t s1 = seq.load(std::memory_order_acquire);
        if (s1 & 1) continue;
        char text[sdk::kScoreboardStatusBytes];
        for (std::size_t i = 0; i < sizeof text; ++i)
            text[i] = std::atomic_ref<char>(r->status[i]).load(std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_acquire);
        if (seq.load(std::memory_order_relaxed) != s1) continue;
        std::size_t n = 0;
        while (n < sizeof text && text[n] != '\0') ++n;
        out.status = std::string(text, n);
        break;
    }
    return out;
}

}  // namespace clusterd
