#include "daemon/supervisor/feed.hpp"

#include <algorithm>

namespace clusterd {

Feed::Feed(std::size_t max_entries, std::size_t max_bytes, bool per_program)
    : max_entries_(max_entries), max_bytes_(max_bytes), per_program_(per_program) {}

void Feed::publish(const std::string& program, nlohmann::json entry) {
    entry["seq"] = ++seq_;
    std::size_t bytes =
        entry.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).size() + 1;
    prune();
    for (const Follower& f : followers_)
        if (f.program.empty() || f.program == program) f.to->send(entry);
    Ring& ring = rings_[per_program_ ? program : std::string()];
    ring.entries.push_back({seq_, program, std::move(entry), bytes});
    ring.bytes += bytes;
    bytes_total_ += bytes;
    while (ring.entries.size() > max_entries_ ||
           (ring.bytes > max_bytes_ && ring.entries.size() > 1)) {
        ring.bytes -= ring.entries.front().bytes;
        bytes_total_ -= ring.entries.front().bytes;
        ring.entries.pop_front();
        ++evicted_;
    }
}

std::vector<nlohmann::json> Feed::last(std::size_t n, const std::string& program,
                                       std::size_t max_bytes, std::size_t* omitted) const {
    std::vector<const Entry*> picked;
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
              [](const Entry* a, const Entry* b) { return a->seq < b->seq; });
    if (picked.size() > n) picked.erase(picked.begin(), picked.end() - static_cast<long>(n));
    std::size_t bytes = 0;
    std::size_t keep = 0;
    while (keep < picked.size() && bytes + picked[picked.size() - 1 - keep]->bytes <= max_bytes)
        bytes += picked[picked.size() - 1 - keep++]->bytes;
    if (omitted) *omitted = picked.size() - keep;
    picked.erase(picked.begin(), picked.end() - static_cast<long>(keep));
    std::vector<nlohmann::json> out;
    out.reserve(picked.size());
    for (const Entry* e : picked) out.push_back(e->value);
    return out;
}

void Feed::follow(std::shared_ptr<Reporter> to, std::string program) {
    prune();
    followers_.push_back({std::move(to), std::move(program)});
}

void Feed::forget(const std::string& program) {
    if (!per_program_) return;
    auto it = rings_.find(program);
    if (it == rings_.end()) return;
    bytes_total_ -= it->second.bytes;
    rings_.erase(it);
}

std::size_t Feed::followers() const {
    return static_cast<std::size_t>(std::count_if(followers_.begin(), followers_.end(),
                                                  [](const Follower& f) { return !f.to->gone(); }));
}

std::size_t Feed::kept() const {
    std::size_t n = 0;
    for (const auto& [key, ring] : rings_) n += ring.entries.size();
    return n;
}

void Feed::prune() {
    std::erase_if(followers_, [](const Follower& f) { return f.to->gone(); });
}

}  // namespace clusterd
