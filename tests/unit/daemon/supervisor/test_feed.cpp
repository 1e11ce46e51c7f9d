// The feeds of `clusterd events` and `clusterd logs`: bounded rings, followers that come and go.
#include <doctest/doctest.h>

#include "daemon/supervisor/feed.hpp"

using namespace clusterd;

namespace {

struct Follower final : Reporter {
    void progress(const std::string&) override {}
    void finish(const nlohmann::json&) override { done = true; }
    void send(const nlohmann::json& line) override { lines.push_back(line); }
    bool gone() const override { return left; }
    std::vector<nlohmann::json> lines;
    bool done = false;
    bool left = false;
};

}  // namespace

TEST_CASE("feed: keeps the latest entries within its count and byte limits") {
    Feed<EventEntry> f(3, 1 << 20, false);
    for (int i = 0; i < 10; ++i) f.publish("web", EventEntry(nlohmann::json{{"n", i}}));
    CHECK(f.kept() == 3);
    CHECK(f.published() == 10);
    CHECK(f.evicted() == 7);
    auto last = f.last(2, "");
    REQUIRE(last.size() == 2);
    CHECK(last[0]["n"] == 8);
    CHECK(last[1]["n"] == 9);
    CHECK(last[1]["seq"] == 10);
    // Bytes: one big entry pushes the others out, but the newest is always kept.
    Feed<EventEntry> small(100, 200, false);
    for (int i = 0; i < 5; ++i) small.publish("web", EventEntry(nlohmann::json{{"n", i}}));
    small.publish("web", EventEntry(nlohmann::json{{"line", std::string(500, 'x')}}));
    CHECK(small.kept() == 1);
    CHECK(small.kept_bytes() > 500);
}

TEST_CASE("feed: per program rings, so a chatty program keeps a quiet one's lines") {
    Feed<LineEntry> f(5, 1 << 20, true);
    f.publish("quiet", LineEntry{0, 0, "q1"});
    for (int i = 0; i < 100; ++i) f.publish("chatty", LineEntry{0, 1, std::to_string(i)});
    auto quiet = f.last(10, "quiet");
    REQUIRE(quiet.size() == 1);
    CHECK(quiet[0]["line"] == "q1");
    // All programs, in publishing order: the quiet line first, then chatty's last 5.
    auto all = f.last(10, "");
    REQUIRE(all.size() == 6);
    CHECK(all[0]["line"] == "q1");
    CHECK(all[5]["line"] == "99");
    f.forget("quiet");
    CHECK(f.last(10, "quiet").empty());
    CHECK(f.kept() == 5);
}

TEST_CASE("feed: followers get new entries of their program until they leave") {
    Feed<EventEntry> f(10, 1 << 20, false);
    auto all = std::make_shared<Follower>();
    auto web = std::make_shared<Follower>();
    f.publish("web", EventEntry(nlohmann::json{{"n", 0}}));
    f.follow(all, "");
    f.follow(web, "web");
    f.publish("web", EventEntry(nlohmann::json{{"n", 1}}));
    f.publish("api", EventEntry(nlohmann::json{{"n", 2}}));
    CHECK(all->lines.size() == 2);
    REQUIRE(web->lines.size() == 1);
    CHECK(web->lines[0]["n"] == 1);
    CHECK(f.followers() == 2);
    web->left = true;
    CHECK(f.followers() == 1);
    f.publish("web", EventEntry(nlohmann::json{{"n", 3}}));
    CHECK(web->lines.size() == 1);
    CHECK(all->lines.size() == 3);
    // Followers that left are forgotten (no reference kept).
    CHECK(web.use_count() == 1);
}

TEST_CASE("feed: what one request gets at once is bounded in bytes, the oldest left out") {
    Feed<LineEntry> f(1000, 1 << 20, false);
    for (int i = 0; i < 100; ++i)
        f.publish("web", LineEntry{0, 0, std::string(1000, static_cast<char>('a' + i % 26))});
    std::size_t omitted = 0;
    auto last = f.last(100, "", 10 * (1000 + 64), &omitted);  // ten lines of 1000 bytes
    CHECK(last.size() == 10);
    CHECK(omitted == 90);
    CHECK(last.back()["seq"] == 100);
    CHECK(f.last(5, "", 10 * (1000 + 64), &omitted).size() == 5);
    CHECK(omitted == 0);
}
