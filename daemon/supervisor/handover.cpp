#include "daemon/supervisor/handover.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>

namespace clusterd {

// SocketTableFds is clusterd's, so its functions are found there.
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(HandoverSlot, state, want_up, pid, restarts, failures,
                                   started_at, ready_at, last_heartbeat, heartbeat_interval, late,
                                   ends, deadline, stop_reason, last_cause, last_signaled,
                                   last_code, last_core_dumped, last_abandoned, last_backoff)
// As NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE, plus the optional Node channel (see HandoverWorker).
#define CLUSTERD_HANDOVER_WORKER_FIELDS                                                  \
    id, slot, retiring, replacing, replaces, sm, status, fields, notify_fd, capture_fds, \
        capture_tail
void to_json(nlohmann::json& nlohmann_json_j, const HandoverWorker& nlohmann_json_t) {
    NLOHMANN_JSON_EXPAND(NLOHMANN_JSON_PASTE(NLOHMANN_JSON_TO, CLUSTERD_HANDOVER_WORKER_FIELDS))
    if (nlohmann_json_t.ipc_fd >= 0) {
        nlohmann_json_j["ipc_fd"] = nlohmann_json_t.ipc_fd;
        nlohmann_json_j["ipc_input"] = nlohmann_json_t.ipc_input;
    }
    if (nlohmann_json_t.board_index >= 0) {
        nlohmann_json_j["board_index"] = nlohmann_json_t.board_index;
        nlohmann_json_j["board_beats"] = nlohmann_json_t.board_beats;
        nlohmann_json_j["board_figures"] = nlohmann_json_t.board_figures;
    }
}
void from_json(const nlohmann::json& nlohmann_json_j, HandoverWorker& nlohmann_json_t) {
    NLOHMANN_JSON_EXPAND(NLOHMANN_JSON_PASTE(NLOHMANN_JSON_FROM, CLUSTERD_HANDOVER_WORKER_FIELDS))
    if (nlohmann_json_j.contains("ipc_fd")) {
        nlohmann_json_j.at("ipc_fd").get_to(nlohmann_json_t.ipc_fd);
        nlohmann_json_j.at("ipc_input").get_to(nlohmann_json_t.ipc_input);
    }
    if (nlohmann_json_j.contains("board_index")) {
        nlohmann_json_j.at("board_index").get_to(nlohmann_json_t.board_index);
        nlohmann_json_j.at("board_beats").get_to(nlohmann_json_t.board_beats);
        nlohmann_json_j.at("board_figures").get_to(nlohmann_json_t.board_figures);
    }
}
#undef CLUSTERD_HANDOVER_WORKER_FIELDS
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(SocketTableFds, shared, per_slot, group_order, sockarray, keys,
                                   activated, shut)
// As NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE, plus the optional config files (`config_files`).
#define CLUSTERD_HANDOVER_OPTIONAL_FILES(Type, ...)                                  \
    void to_json(nlohmann::json& nlohmann_json_j, const Type& nlohmann_json_t) {     \
        NLOHMANN_JSON_EXPAND(NLOHMANN_JSON_PASTE(NLOHMANN_JSON_TO, __VA_ARGS__))     \
        if (!nlohmann_json_t.config_files.empty())                                   \
            nlohmann_json_j["config_files"] = nlohmann_json_t.config_files;          \
    }                                                                                \
    void from_json(const nlohmann::json& nlohmann_json_j, Type& nlohmann_json_t) {   \
        NLOHMANN_JSON_EXPAND(NLOHMANN_JSON_PASTE(NLOHMANN_JSON_FROM, __VA_ARGS__))   \
        if (nlohmann_json_j.contains("config_files"))                                \
            nlohmann_json_j.at("config_files").get_to(nlohmann_json_t.config_files); \
    }
#define CLUSTERD_HANDOVER_PROGRAM_FIELDS                                              \
    name, source, config_text, generation, runtime_scale, stopped, exits, started_at, \
        all_ready_logged, serving, next_probe, probe_at, refusing, sockets, workers, others
// As CLUSTERD_HANDOVER_OPTIONAL_FILES, plus the optional scoreboard.
void to_json(nlohmann::json& nlohmann_json_j, const HandoverProgram& nlohmann_json_t) {
    NLOHMANN_JSON_EXPAND(NLOHMANN_JSON_PASTE(NLOHMANN_JSON_TO, CLUSTERD_HANDOVER_PROGRAM_FIELDS))
    if (!nlohmann_json_t.config_files.empty())
        nlohmann_json_j["config_files"] = nlohmann_json_t.config_files;
    if (nlohmann_json_t.board_fd >= 0) {
        nlohmann_json_j["board_fd"] = nlohmann_json_t.board_fd;
        nlohmann_json_j["board_abandoned"] = nlohmann_json_t.board_abandoned;
    }
}
void from_json(const nlohmann::json& nlohmann_json_j, HandoverProgram& nlohmann_json_t) {
    NLOHMANN_JSON_EXPAND(NLOHMANN_JSON_PASTE(NLOHMANN_JSON_FROM, CLUSTERD_HANDOVER_PROGRAM_FIELDS))
    if (nlohmann_json_j.contains("config_files"))
        nlohmann_json_j.at("config_files").get_to(nlohmann_json_t.config_files);
    if (nlohmann_json_j.contains("board_fd")) {
        nlohmann_json_j.at("board_fd").get_to(nlohmann_json_t.board_fd);
        nlohmann_json_j.at("board_abandoned").get_to(nlohmann_json_t.board_abandoned);
    }
}
#undef CLUSTERD_HANDOVER_PROGRAM_FIELDS
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(HandoverAbandoned, pid, label, since, kill_at)
CLUSTERD_HANDOVER_OPTIONAL_FILES(HandoverState, format, version, run_args, upgrades, config_path,
                                 config_source, config_text, override_control, override_state_dir,
                                 log_level, started_at, upgrade_started, saved_at, next_worker_id,
                                 config_generation, reloads_ok, reloads_failed, notify_counters,
                                 programs, abandoned, replacements, activated, notify_dir,
                                 control_fd, requester_fd, metrics_fd, systemd_notify, sent_ready)
#undef CLUSTERD_HANDOVER_OPTIONAL_FILES

namespace {

constexpr std::string_view kMagic = "clusterd-state ";

}  // namespace

std::vector<int> HandoverState::fds() const {
    std::set<int> all;
    auto add = [&](int fd) {
        if (fd >= 0) all.insert(fd);
    };
    add(control_fd);
    add(requester_fd);
    add(metrics_fd);
    for (const auto& [name, fd] : activated) add(fd);
    for (const auto& p : programs) {
        for (int fd : p.sockets.shared) add(fd);
        for (int fd : p.sockets.sockarray) add(fd);
        for (const auto& row : p.sockets.per_slot)
            for (int fd : row) add(fd);
        add(p.board_fd);
        for (const auto* list : {&p.workers, &p.others})
            for (const auto& w : *list) {
                add(w.notify_fd);
                add(w.ipc_fd);
                for (int fd : w.capture_fds) add(fd);
            }
    }
    return {all.begin(), all.end()};
}

std::string encode_handover(const HandoverState& state) {
    return std::string(kMagic) + std::to_string(state.format) + "\n" +
           nlohmann::json(state).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

HandoverState decode_handover(const std::string& bytes) {
    auto nl = bytes.find('\n');
    if (!bytes.starts_with(kMagic) || nl == std::string::npos)
        throw HandoverError("not a clusterd state (no \"clusterd-state\" header)");
    std::string format = bytes.substr(kMagic.size(), nl - kMagic.size());
    if (format != std::to_string(kHandoverFormat))
        throw HandoverError("state format " + format +
                            " is not one this clusterd reads (it reads " +
                            std::to_string(kHandoverFormat) + ")");
    HandoverState state;
    try {
        nlohmann::json::parse(bytes.begin() + static_cast<std::ptrdiff_t>(nl) + 1, bytes.end())
            .get_to(state);
    } catch (const nlohmann::json::exception& e) {
        throw HandoverError(std::string("the state does not decode: ") + e.what());
    }
    if (state.format != kHandoverFormat)
        throw HandoverError("state format " + std::to_string(state.format) + " in the body, " +
                            format + " in the header");
    for (const auto& p : state.programs) {
        std::size_t entries = p.sockets.shared.size();
        if (p.sockets.activated.size() != entries || p.sockets.group_order.size() != entries ||
            p.sockets.sockarray.size() != entries || p.sockets.keys.size() != entries ||
            p.sockets.per_slot.size() != p.workers.size())
            throw HandoverError("program " + p.name + ": its socket table does not match");
        for (const auto& row : p.sockets.per_slot)
            if (row.size() != entries)
                throw HandoverError("program " + p.name + ": its socket table does not match");
        for (std::size_t k = 0; k < p.workers.size(); ++k)
            if (p.workers[k].slot != static_cast<int>(k))
                throw HandoverError("program " + p.name + ": its workers are out of order");
        for (const auto& w : p.others)
            if (w.slot < 0 || w.slot >= static_cast<int>(p.workers.size()) || w.replacing < -1 ||
                w.replacing > 2)
                throw HandoverError("program " + p.name + ": a worker out of its slots");
    }
    return state;
}

int write_handover_memfd(const std::string& bytes) {
    int fd = ::memfd_create("clusterd-state", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) throw std::system_error(errno, std::system_category(), "memfd_create failed");
    std::size_t done = 0;
    while (done < bytes.size()) {
        ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            ::close(fd);
            throw std::system_error(e, std::system_category(), "writing the state failed");
        }
        done += static_cast<std::size_t>(n);
    }
    // Neither image can change what the other reads.
    if (::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
        int e = errno;
        ::close(fd);
        throw std::system_error(e, std::system_category(), "sealing the state failed");
    }
    return fd;
}

std::string read_handover_fd(int fd) {
    std::string bytes;
    char chunk[65536];
    off_t at = 0;
    for (;;) {
        ssize_t n = ::pread(fd, chunk, sizeof chunk, at);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0)
            throw HandoverError("cannot read the state from fd " + std::to_string(fd) + ": " +
                                std::system_category().message(errno));
        if (n == 0) break;
        bytes.append(chunk, static_cast<std::size_t>(n));
        at += n;
        if (bytes.size() > kMaxHandoverBytes)
            throw HandoverError("the state is larger than " +
                                std::to_string(kMaxHandoverBytes >> 20) + " MiB");
    }
    return bytes;
}

void check_handover_fds(const HandoverState& state) {
    for (int fd : state.fds())
        if (::fcntl(fd, F_GETFD) < 0)
            throw HandoverError("fd " + std::to_string(fd) +
                                " named in the state is not open in the new image");
}

}  // namespace clusterd
