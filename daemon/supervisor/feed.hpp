// What the master keeps of a stream, and who follows it: the event stream (`clusterd
// events`) and the workers' captured output (`clusterd logs`).
//
// A Feed keeps the latest entries, bounded by a count and by their bytes, either in one ring
// or in one ring per program (so that a chatty program cannot push a quiet one's lines out).
// A follower is a control connection that asked to follow (Reporter::follow); it gets every
// new entry of its program ("" = all) as one JSON line. A follower that does not read has
// its connection closed by the control server once its queue passes
// ControlServerOptions::max_queued_bytes; the feed forgets followers that are gone the next
// time it publishes or takes a follower.
//
// An entry becomes JSON only when it is sent: an output line is kept as its text, slot and
// time (building a JSON object for each of 10,000 lines a second would cost the master more
// than logging them).
#pragma once

#include <algorithm>
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

/// "2026-12-01T20:15:00.123Z" for milliseconds since the epoch (UTC).
std::string format_wall_time(std::int64_t ms);
/// Milliseconds since the epoch, now.
std::int64_t wall_time_ms();

/// An event: its JSON object, as emitted (its size measured once).
struct EventEntry {
    explicit EventEntry(nlohmann::json v);
    nlohmann::json value;
    std::size_t size = 0;
    std::size_t bytes() const { return size; }
    nlohmann::json to_json(std::uint64_t seq, const std::string& program) const;
};

/// A line a worker printed.
struct LineEntry {
    std::int64_t time_ms = 0;
    int slot = 0;
    std::string text;
    std::size_t bytes() const { return text.size() + 64; }  // + the JSON around it, roughly
    nlohmann::json to_json(std::uint64_t seq, const std::string& program) const;
};

template <class Entry>
class Feed {
  public:
    /// At most `max_entries` entries and `max_bytes` of them kept, in all or (`per_program`)
    /// for each program.
    Feed(std::size_t max_entries, std::size_t max_bytes, bool per_program)
        : max_entries_(max_entries), max_bytes_(max_bytes), per_program_(per_program) {}

    /// Keeps `entry` (numbered) and sends it to the followers of `program`.
    void publish(const std::string& program, Entry entry) {
        ++seq_;
        prune();
        for (const Follower& f : followers_)
            if (f.program.empty() || f.program == program) f.to->send(entry.to_json(seq_, program));
        Ring& ring = rings_[per_program_ ? program : std::string()];
        std::size_t bytes = entry.bytes();
        ring.entries.push_back({seq_, program, std::move(entry)});
        ring.bytes += bytes;
        bytes_total_ += bytes;
        while (ring.entries.size() > max_entries_ ||
               (ring.bytes > max_bytes_ && ring.entries.size() > 1)) {
            std::size_t b = ring.entries.front().entry.bytes();
            ring.bytes -= b;
            bytes_total_ -= b;
            ring.entries.pop_front();
            ++evicted_;
        }
    }

    /// The last `n` entries kept (of `program`; "" = all), oldest first, at most `max_bytes`
    /// of them: the older ones beyond are left out and counted in `omitted`.
    std::vector<nlohmann::json> last(std::size_t n, const std::string& program,
                                     std::size_t max_bytes = SIZE_MAX,
                                     std::size_t* omitted = nullptr) const {
        std::vector<const Kept*> picked;
        for (const auto& [key, ring] : rings_) {
            if (per_program_ && !program.empty() && key != program) continue;
            std::size_t taken = 0;
            for (auto it = ring.entries.rbegin(); it != ring.entries.rend() && taken < n; ++it) {
                if (!program.empty() && it->program != program) continue;
                picked.push_back(&*it);
                ++taken;
            }
        }
        std::sort(picked.begin(), picked.end(),
                  [](const Kept* a, const Kept* b) { return a->seq < b->seq; });
        if (picked.size() > n) picked.erase(picked.begin(), picked.end() - static_cast<long>(n));
        std::size_t bytes = 0;
        std::size_t keep = 0;
        while (keep < picked.size() &&
               bytes + picked[picked.size() - 1 - keep]->entry.bytes() <= max_bytes)
            bytes += picked[picked.size() - 1 - keep++]->entry.bytes();
        if (omitted) *omitted = picked.size() - keep;
        picked.erase(picked.begin(), picked.end() - static_cast<long>(keep));
        std::vector<nlohmann::json> out;
        out.reserve(picked.size());
        for (const Kept* k : picked) out.push_back(k->entry.to_json(k->seq, k->program));
        return out;
    }

    /// `to` gets every entry of `program` ("" = all) published from now on.
    void follow(std::shared_ptr<Reporter> to, std::string program) {
        prune();
        followers_.push_back({std::move(to), std::move(program)});
    }

    /// Drops what is kept of `program` (removed by a reload).
    void forget(const std::string& program) {
        if (!per_program_) return;
        auto it = rings_.find(program);
        if (it == rings_.end()) return;
        bytes_total_ -= it->second.bytes;
        rings_.erase(it);
    }

    std::uint64_t published() const { return seq_; }
    std::uint64_t evicted() const { return evicted_; }
    std::size_t followers() const {
        return static_cast<std::size_t>(std::count_if(
            followers_.begin(), followers_.end(), [](const Follower& f) { return !f.to->gone(); }));
    }
    std::size_t kept() const {
        std::size_t n = 0;
        for (const auto& [key, ring] : rings_) n += ring.entries.size();
        return n;
    }
    std::size_t kept_bytes() const { return bytes_total_; }

  private:
    struct Kept {
        std::uint64_t seq;
        std::string program;
        Entry entry;
    };
    struct Ring {
        std::deque<Kept> entries;
        std::size_t bytes = 0;
    };
    struct Follower {
        std::shared_ptr<Reporter> to;
        std::string program;
    };
    void prune() {
        std::erase_if(followers_, [](const Follower& f) { return f.to->gone(); });
    }

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
