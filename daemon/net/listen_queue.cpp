#include "daemon/net/listen_queue.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <charconv>
#include <fstream>
#include <sstream>
#include <vector>

namespace clusterd {

namespace {

std::vector<std::string_view> split(std::string_view line) {
    std::vector<std::string_view> out;
    std::size_t i = 0;
    while (i < line.size()) {
        while (i < line.size() && line[i] == ' ') ++i;
        std::size_t j = i;
        while (j < line.size() && line[j] != ' ') ++j;
        if (j > i) out.push_back(line.substr(i, j - i));
        i = j;
    }
    return out;
}

}  // namespace

std::optional<ListenQueue> listen_queue(int fd) {
    tcp_info info{};
    socklen_t len = sizeof info;
    if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) < 0) return std::nullopt;
    if (info.tcpi_state != TCP_LISTEN) return std::nullopt;
    return ListenQueue{info.tcpi_unacked, info.tcpi_sacked};
}

std::optional<ListenDrops> parse_listen_drops(std::string_view netstat) {
    // "TcpExt: Name1 Name2 ...\nTcpExt: 1 2 ...\n": the first TcpExt line names, the next
    // one holds the values in the same order.
    std::string_view names;
    std::size_t pos = 0;
    while (pos < netstat.size()) {
        std::size_t nl = netstat.find('\n', pos);
        std::string_view line =
            netstat.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
        pos = nl == std::string_view::npos ? netstat.size() : nl + 1;
        if (!line.starts_with("TcpExt:")) continue;
        if (names.empty()) {
            names = line;
            continue;
        }
        auto keys = split(names.substr(7));
        auto values = split(line.substr(7));
        if (keys.size() != values.size()) return std::nullopt;
        std::optional<std::uint64_t> overflows, drops;
        for (std::size_t i = 0; i < keys.size(); ++i) {
            std::uint64_t v = 0;
            auto [end, ec] =
                std::from_chars(values[i].data(), values[i].data() + values[i].size(), v);
            if (ec != std::errc{} || end != values[i].data() + values[i].size()) continue;
            if (keys[i] == "ListenOverflows") overflows = v;
            if (keys[i] == "ListenDrops") drops = v;
        }
        if (!overflows || !drops) return std::nullopt;
        return ListenDrops{*overflows, *drops};
    }
    return std::nullopt;
}

std::optional<ListenDrops> read_listen_drops(const std::string& path) {
    std::ifstream in(path);
    if (!in) return std::nullopt;
    std::ostringstream text;
    text << in.rdbuf();
    return parse_listen_drops(text.str());
}

}  // namespace clusterd
