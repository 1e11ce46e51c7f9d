// The production Executor (executor.hpp): the master's io_context, its steady clock, the
// spawner, the one reaper, the master's own signals, and a thread for parsing a config.
#pragma once

#include <memory>

#include "daemon/supervisor/executor.hpp"

namespace boost::asio {
class io_context;
}

namespace clusterd {

class AsioExecutor final : public Executor {
  public:
    explicit AsioExecutor(boost::asio::io_context& io);
    ~AsioExecutor() override;

    TimePoint now() const override;
    std::unique_ptr<Timer> make_timer() override;
    void start(std::function<void(pid_t, int)> on_exit,
               std::function<void(int)> on_signal) override;
    void finish() override;
    Started spawn(const SpawnSpec& spec, const std::string& label,
                  const std::string& path) override;
    int kill(pid_t target, int sig) override;
    std::vector<pid_t> children() override;
    std::optional<ProcessFigures> figures(pid_t pid) override;
    void load_config(const std::string& path, std::function<void(LoadedConfig)> done) override;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace clusterd
