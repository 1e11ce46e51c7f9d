#include "daemon/net/listeners_bpf.hpp"

#include <linux/bpf.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <system_error>

namespace clusterd {

namespace {

long bpf(int cmd, bpf_attr& attr) {
    return ::syscall(SYS_bpf, cmd, &attr, sizeof attr);
}

std::string bpf_failed(const std::string& call) {
    return call + " failed: " + std::strerror(errno);
}

UniqueFd make_map(bpf_map_type type, std::uint32_t value_size, std::uint32_t entries) {
    bpf_attr attr{};
    attr.map_type = type;
    attr.key_size = sizeof(std::uint32_t);
    attr.value_size = value_size;
    attr.max_entries = entries;
    return UniqueFd(static_cast<int>(bpf(BPF_MAP_CREATE, attr)));
}

int update(int map, std::uint32_t key, const void* value) {
    bpf_attr attr{};
    attr.map_fd = static_cast<std::uint32_t>(map);
    attr.key = reinterpret_cast<std::uint64_t>(&key);
    attr.value = reinterpret_cast<std::uint64_t>(value);
    attr.flags = BPF_ANY;
    return static_cast<int>(bpf(BPF_MAP_UPDATE_ELEM, attr));
}

bpf_insn insn(std::uint8_t code, std::uint8_t dst, std::uint8_t src, std::int16_t off,
              std::int32_t imm) {
    bpf_insn i{};
    i.code = code;
    i.dst_reg = dst & 0xf;
    i.src_reg = src & 0xf;
    i.off = off;
    i.imm = imm;
    return i;
}

// A map's fd in a program: the two halves of a 64-bit immediate load.
void load_map(std::vector<bpf_insn>& code, std::uint8_t dst, int map) {
    code.push_back(insn(BPF_LD | BPF_DW | BPF_IMM, dst, BPF_PSEUDO_MAP_FD, 0, map));
    code.push_back(insn(0, 0, 0, 0, 0));
}

UniqueFd load_program(const std::vector<bpf_insn>& code, std::string& error) {
    static const char license[] = "GPL";  // the kernel asks; no GPL-only helper is used
    bpf_attr attr{};
    attr.prog_type = BPF_PROG_TYPE_SK_REUSEPORT;
    attr.insns = reinterpret_cast<std::uint64_t>(code.data());
    attr.insn_cnt = static_cast<std::uint32_t>(code.size());
    attr.license = reinterpret_cast<std::uint64_t>(license);
    UniqueFd prog(static_cast<int>(bpf(BPF_PROG_LOAD, attr)));
    if (prog) return prog;
    error = bpf_failed("bpf(BPF_PROG_LOAD)");
    // Again with the verifier's log, for the message only.
    char log[1024] = {};
    attr.log_level = 1;
    attr.log_buf = reinterpret_cast<std::uint64_t>(log);
    attr.log_size = sizeof log;
    UniqueFd again(static_cast<int>(bpf(BPF_PROG_LOAD, attr)));
    if (log[0] != '\0') error += std::string(" (") + log + ")";
    for (char& c : error)
        if (c == '\n') c = ' ';
    return UniqueFd();
}

std::string probe() {
    if (const char* mode = std::getenv("CLUSTERD_STEERING");
        mode && std::strcmp(mode, "classic") == 0)
        return "CLUSTERD_STEERING=classic";
    UniqueFd sockets = make_map(BPF_MAP_TYPE_REUSEPORT_SOCKARRAY, sizeof(std::uint64_t), 1);
    if (!sockets) return bpf_failed("bpf(BPF_MAP_CREATE, REUSEPORT_SOCKARRAY)");
    std::vector<bpf_insn> code{insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, SK_PASS),
                               insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)};
    std::string error;
    if (!load_program(code, error)) return error;
    return "";
}

bool forced_classic = false;

}  // namespace

std::string identity_steering_unavailable() {
    if (forced_classic) return "classic steering forced";
    static const std::string why = probe();
    return why;
}

void force_classic_steering(bool on) {
    forced_classic = on;
}

UniqueFd make_sockarray() {
    UniqueFd map =
        make_map(BPF_MAP_TYPE_REUSEPORT_SOCKARRAY, sizeof(std::uint64_t), kMaxSteeredSockets);
    if (!map)
        throw std::system_error(errno, std::system_category(),
                                "bpf(BPF_MAP_CREATE, REUSEPORT_SOCKARRAY) failed");
    return map;
}

std::string place_socket(int sockarray, std::uint32_t key, int fd) {
    // A sockarray lookup from user space gives the socket's cookie: skip a socket that is
    // in place already (putting it in again would fail with EBUSY).
    std::uint64_t cookie = 0;
    socklen_t len = sizeof cookie;
    if (::getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) < 0)
        return bpf_failed("getsockopt(SO_COOKIE)");
    std::uint64_t there = 0;
    bpf_attr attr{};
    attr.map_fd = static_cast<std::uint32_t>(sockarray);
    attr.key = reinterpret_cast<std::uint64_t>(&key);
    attr.value = reinterpret_cast<std::uint64_t>(&there);
    if (bpf(BPF_MAP_LOOKUP_ELEM, attr) == 0 && there == cookie) return "";
    std::uint64_t value = static_cast<std::uint64_t>(fd);
    if (update(sockarray, key, &value) < 0)
        return bpf_failed("bpf(BPF_MAP_UPDATE_ELEM, sockarray)");
    return "";
}

std::string attach_identity_steering(int sockarray, const std::vector<std::uint32_t>& keys,
                                     int attach_fd) {
    if (keys.empty()) return "no socket to steer to";
    const auto n = static_cast<std::uint32_t>(keys.size());
    UniqueFd route = make_map(BPF_MAP_TYPE_ARRAY, sizeof(std::uint32_t), n);
    if (!route) return bpf_failed("bpf(BPF_MAP_CREATE, ARRAY)");
    for (std::uint32_t i = 0; i < n; ++i)
        if (update(route.get(), i, &keys[i]) < 0)
            return bpf_failed("bpf(BPF_MAP_UPDATE_ELEM, route)");

    const auto hash = static_cast<std::int16_t>(offsetof(sk_reuseport_md, hash));
    std::vector<bpf_insn> code;
    code.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_6, BPF_REG_1, 0, 0));
    code.push_back(insn(BPF_LDX | BPF_W | BPF_MEM, BPF_REG_2, BPF_REG_6, hash, 0));
    code.push_back(insn(BPF_ALU | BPF_MOD | BPF_K, BPF_REG_2, 0, 0, static_cast<std::int32_t>(n)));
    code.push_back(insn(BPF_STX | BPF_W | BPF_MEM, BPF_REG_10, BPF_REG_2, -4, 0));
    load_map(code, BPF_REG_1, route.get());
    code.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_10, 0, 0));
    code.push_back(insn(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_2, 0, 0, -4));
    code.push_back(insn(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem));
    const std::size_t on_miss = code.size();
    code.push_back(insn(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_0, 0, 0, 0));  // offset set below
    code.push_back(insn(BPF_LDX | BPF_W | BPF_MEM, BPF_REG_1, BPF_REG_0, 0, 0));
    code.push_back(insn(BPF_STX | BPF_W | BPF_MEM, BPF_REG_10, BPF_REG_1, -8, 0));
    code.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_1, BPF_REG_6, 0, 0));
    load_map(code, BPF_REG_2, sockarray);
    code.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_3, BPF_REG_10, 0, 0));
    code.push_back(insn(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_3, 0, 0, -8));
    code.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_4, 0, 0, 0));
    code.push_back(insn(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_sk_select_reuseport));
    code[on_miss].off = static_cast<std::int16_t>(code.size() - on_miss - 1);
    code.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, SK_PASS));
    code.push_back(insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));

    std::string error;
    UniqueFd prog = load_program(code, error);
    if (!prog) return error;
    int fd = prog.get();
    if (::setsockopt(attach_fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &fd, sizeof fd) < 0)
        return bpf_failed("setsockopt(SO_ATTACH_REUSEPORT_EBPF)");
    return "";  // the group holds the program now, and the program its maps
}

std::string detach_steering(int fd) {
    int unused = 0;
    if (::setsockopt(fd, SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, &unused, sizeof unused) < 0 &&
        errno != ENOENT)
        return bpf_failed("setsockopt(SO_DETACH_REUSEPORT_BPF)");
    return "";
}

}  // namespace clusterd
