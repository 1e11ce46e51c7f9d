// A long operation (reload, restart, scale) and the parts it waits for.
//
// Whoever asked gets exactly one reply, when the last part has ended. A part is a handle
// (like a promise): done() ends it with its result; a part dropped without done() (its
// worker went away) ends as failed with the text it was made with. So no operation waits
// for something that is gone, and none replies twice; there is no count kept by hand.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "daemon/control/reporter.hpp"

namespace clusterd {

class Part;

/// The non-empty lines joined with `sep`.
std::string join_lines(const std::vector<std::string>& lines, const char* sep);

class Operation : public std::enable_shared_from_this<Operation> {
  public:
    explicit Operation(std::shared_ptr<Reporter> reporter) : reporter_(std::move(reporter)) {}

    /// A part this operation waits for; `unfinished` is its result if it is dropped undone.
    Part part(std::string unfinished);
    void progress(const std::string& line) const {
        if (reporter_) reporter_->progress(line);
    }
    /// A line of the final reply that is no part's.
    void note(std::string line) { results_.push_back(std::move(line)); }
    /// Run before the reply, with the result (a reload's counters, READY=1 to systemd).
    std::function<void(bool ok)> on_end;

  private:
    friend class Part;
    void end_part(bool ok, const std::string& line);

    std::shared_ptr<Reporter> reporter_;
    int open_ = 0;  // parts not ended; only Part changes it
    bool ok_ = true;
    std::vector<std::string> results_;  // what happened, one line per part
};

class Part {
  public:
    Part() = default;
    Part(Part&& other) noexcept = default;
    Part& operator=(Part&& other) noexcept {
        if (this != &other) {
            end_unfinished();
            op_ = std::move(other.op_);
            unfinished_ = std::move(other.unfinished_);
        }
        return *this;
    }
    Part(const Part&) = delete;
    Part& operator=(const Part&) = delete;
    ~Part() { end_unfinished(); }

    /// Ends the part: `line` (if any) is one line of the reply, and a failed part fails it.
    void done(bool ok, const std::string& line) {
        if (auto op = std::move(op_)) op->end_part(ok, line);
    }
    /// Lets go without ending it: only when the whole supervisor goes away.
    void forget() { op_.reset(); }
    explicit operator bool() const { return op_ != nullptr; }
    Operation* operation() const { return op_.get(); }

  private:
    friend class Operation;
    Part(std::shared_ptr<Operation> op, std::string unfinished)
        : op_(std::move(op)), unfinished_(std::move(unfinished)) {}
    void end_unfinished() { done(false, unfinished_); }

    std::shared_ptr<Operation> op_;
    std::string unfinished_;
};

}  // namespace clusterd
