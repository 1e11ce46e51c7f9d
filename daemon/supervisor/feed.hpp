// What the master keeps of a stream, and who follows it: the event stream (`clusterd
// events`) and the workers' captured output (`clusterd logs`).
//
// A Feed keeps the latest entries, bounded by a count and by their bytes (each entry counted
// as its JSON line), either in one ring or in one ring per program (so that a chatty program
// cannot push a quiet one's lines out). A follower is a control connection that asked to
// follow (Reporter::follow); it gets every new entry of its program ("" = all) as one line.
// A follower that does not read has its connection closed by the control server once its
// queue passes ControlServerOptions::max_queued_bytes; the feed forgets followers that are
// gone the next time it publishes or takes a follower.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "daemon/control/reporter.hpp"

namespace clusterd {

class Feed {
  public:
    /// At most `max_entries` entries and `max_bytes` of them kept, in all or (`per_program`)
    /// for each program.
    Feed(std::size_t max_entries, std::size_t max_bytes, bool per_program);

    /// Keeps `entry` (its "seq" is set) and sends it to the followers of `program`.
    void publish(const std::string& program, nlohmann::json entry);
    /// The last `n` entries kept (of `program`; "" = all), oldest first, at most `max_bytes`
    /// of them (as JSON lines): the older ones beyond are left out and counted in `omitted`.
    std::vector<nlohmann::json> last(std::size_t n, const std::string& program,
                                     std::size_t max_bytes = SIZE_MAX,
                                     std::size_t* omitted = nullptr) const;
    /// `to` gets every entry of `program` ("" = all) published from now on.
    void follow(std::shared_ptr<Reporter> to, std::string program);
    /// Drops what is kept of `program` (removed by a reload).
    void forget(const std::string& program);

    std::uint64_t published() const { return seq_; }
    std::uint64_t evicted() const { return evicted_; }
    std::size_t followers() const;
    std::size_t kept() const;
    std::size_t kept_bytes() const { return bytes_total_; }

  private:
    struct Entry {
        std::uint64_t seq;
        std::string program;
        nlohmann::json value;
        std::size_t bytes;
    };
    struct Ring {
        std::deque<Entry> entries;
        std::size_t bytes = 0;
    };
    struct Follower {
        std::shared_ptr<Reporter> to;
        std::string program;
    };
    void prune();

    std::size_t max_entries_;
    std::size_t max_bytes_;
    bool per_program_;
    std::map<std::string, Ring> rings_;
    std::vector<Follower> followers_;
    std::uint64_t seq_ = 0;
    std::uint64_t evicted_ = 0;
    std::size_t bytes_total_ = 0;
};

}  // namespace clusterd
