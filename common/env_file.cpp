#include "common/env_file.hpp"

#include <algorithm>
#include <map>

#include "common/config.hpp"
#include "common/config_reader.hpp"
#include "common/limits.hpp"

namespace clusterd {

namespace {

bool is_blank(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

bool is_newline(char c) {
    return c == '\n' || c == '\r';
}

/// `text` in quotes, cut (at a character boundary) when long.
std::string quoted(const std::string& text) {
    if (text.size() <= 60) return "\"" + text + "\"";
    std::size_t cut = 57;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
    return "\"" + text.substr(0, cut) + "...\"";
}

/// The parser's state, as systemd names them.
enum class State {
    pre_key,
    key,
    pre_value,
    value,
    value_escape,
    single_quote,
    double_quote,
    double_quote_escape,
    comment,
};

class Parser {
  public:
    explicit Parser(const std::string& path) : path_(path) {}

    std::vector<std::pair<std::string, std::string>> parse(std::string_view text) {
        if (text.size() > limits::kMaxEnvFileBytes) {
            error(0, 0,
                  "is " + std::to_string(text.size()) + " bytes, more than the " +
                      std::to_string(limits::kMaxEnvFileBytes >> 20) + " MiB limit");
            throw ConfigError(std::move(errors_));
        }
        if (!check_encoding(text)) throw ConfigError(std::move(errors_));
        for (std::size_t i = 0; i < text.size() && !stopped_; ++i) {
            step(text[i]);
            advance(text[i]);
        }
        if (!stopped_) finish();
        if (!errors_.empty()) throw ConfigError(std::move(errors_));
        return std::move(vars_);
    }

  private:
    void error(int line, int column, std::string message) {
        errors_.push_back(Diagnostic{path_, line, column, std::move(message)});
    }

    /// A NUL byte or bytes that are not UTF-8 (systemd refuses a key or value that is not
    /// UTF-8, and stops reading at a NUL).
    bool check_encoding(std::string_view text) {
        int line = 1;
        int column = 1;
        for (std::size_t i = 0; i < text.size();) {
            if (text[i] == '\0') {
                error(line, column, "contains a NUL byte (an env file is text)");
                return false;
            }
            std::size_t n = detail::utf8_length(text, i);
            if (n == 0) {
                error(line, column, "invalid UTF-8 (an env file is UTF-8 text)");
                return false;
            }
            if (text[i] == '\n') {
                ++line;
                column = 1;
            } else {
                ++column;
            }
            i += n;
        }
        return true;
    }

    /// Moves the position past `c` (columns count characters, as the config's do).
    void advance(char c) {
        if (c == '\n') {
            ++line_;
            column_ = 1;
        } else if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) {
            ++column_;
        }
    }

    void start_key(char c) {
        state_ = State::key;
        key_.clear();
        value_.clear();
        key_blank_ = std::string::npos;
        key_line_ = line_;
        key_column_ = column_;
        key_.push_back(c);
    }

    void step(char c) {
        switch (state_) {
            case State::pre_key:
                if (c == '#' || c == ';') {
                    state_ = State::comment;
                } else if (c == '=') {
                    // systemd would take "=..." as part of a name; the name is empty.
                    key_.clear();
                    value_.clear();
                    key_line_ = line_;
                    key_column_ = column_;
                    key_blank_ = std::string::npos;
                    value_blank_ = std::string::npos;
                    state_ = State::pre_value;
                } else if (!is_blank(c)) {
                    start_key(c);
                }
                break;
            case State::key:
                if (is_newline(c)) {
                    no_equals();
                    state_ = State::pre_key;
                } else if (c == '=') {
                    state_ = State::pre_value;
                    value_blank_ = std::string::npos;
                } else {
                    if (!is_blank(c)) {
                        key_blank_ = std::string::npos;
                    } else if (key_blank_ == std::string::npos) {
                        key_blank_ = key_.size();
                    }
                    key_.push_back(c);
                }
                break;
            case State::pre_value:
                if (is_newline(c)) {
                    push(false);
                    state_ = State::pre_key;
                } else if (c == '\'' || c == '"') {
                    quote_line_ = line_;
                    quote_column_ = column_;
                    state_ = c == '\'' ? State::single_quote : State::double_quote;
                } else if (c == '\\') {
                    state_ = State::value_escape;
                } else if (!is_blank(c)) {
                    state_ = State::value;
                    value_.push_back(c);
                }
                break;
            case State::value:
                if (is_newline(c)) {
                    push(true);
                    state_ = State::pre_key;
                } else if (c == '\\') {
                    state_ = State::value_escape;
                    value_blank_ = std::string::npos;
                } else {
                    if (!is_blank(c)) {
                        value_blank_ = std::string::npos;
                    } else if (value_blank_ == std::string::npos) {
                        value_blank_ = value_.size();
                    }
                    value_.push_back(c);
                }
                break;
            case State::value_escape:
                state_ = State::value;
                if (!is_newline(c)) value_.push_back(c);  // an escaped newline is dropped
                break;
            case State::single_quote:
                if (c == '\'') {
                    state_ = State::pre_value;
                } else {
                    value_.push_back(c);
                }
                break;
            case State::double_quote:
                if (c == '"') {
                    state_ = State::pre_value;
                } else if (c == '\\') {
                    state_ = State::double_quote_escape;
                } else {
                    value_.push_back(c);
                }
                break;
            case State::double_quote_escape:
                state_ = State::double_quote;
                if (c == '"' || c == '\\' || c == '`' || c == '$') {
                    value_.push_back(c);
                } else if (c != '\n') {
                    // As the shell: a backslash before anything else stays.
                    value_.push_back('\\');
                    value_.push_back(c);
                }
                break;
            case State::comment:
                // A comment ends at the end of its line, a trailing backslash or not (systemd
                // since v254).
                if (is_newline(c)) state_ = State::pre_key;
                break;
        }
    }

    void finish() {
        switch (state_) {
            case State::key:
                no_equals();
                break;
            case State::pre_value:
            case State::value_escape:
                push(false);
                break;
            case State::value:
                push(true);
                break;
            case State::single_quote:
            case State::double_quote:
            case State::double_quote_escape: {
                bool single = state_ == State::single_quote;
                error(quote_line_, quote_column_,
                      std::string("unterminated ") + (single ? "single" : "double") +
                          " quote: expected a closing " + (single ? "'" : "\"") +
                          " before the end of the file");
                break;
            }
            case State::pre_key:
            case State::comment:
                break;
        }
    }

    void no_equals() {
        if (key_blank_ != std::string::npos) key_.resize(key_blank_);
        error(key_line_, key_column_, "expected NAME=VALUE, got " + quoted(key_) + " (no '=')");
    }

    /// The assignment that ends here; `trim`: drop the value's trailing blanks.
    void push(bool trim) {
        if (key_blank_ != std::string::npos) key_.resize(key_blank_);
        if (trim && value_blank_ != std::string::npos) value_.resize(value_blank_);
        if (!is_env_name(key_)) {
            error(key_line_, key_column_,
                  "\"" + key_ +
                      "\" is not a valid environment variable name "
                      "(expected [A-Za-z_][A-Za-z0-9_]*)");
            return;
        }
        if (is_reserved_env(key_)) {
            error(key_line_, key_column_, reserved_env_message(key_));
            return;
        }
        auto [it, inserted] = index_.emplace(key_, vars_.size());
        if (!inserted) {
            vars_[it->second].second = std::move(value_);  // the later one wins
        } else if (vars_.size() >= limits::kMaxEnvFileVars) {
            error(key_line_, key_column_,
                  "more than " + std::to_string(limits::kMaxEnvFileVars) + " variables");
            stopped_ = true;
        } else {
            vars_.emplace_back(key_, std::move(value_));
        }
        value_.clear();
    }

    const std::string& path_;
    std::vector<Diagnostic> errors_;
    std::vector<std::pair<std::string, std::string>> vars_;
    std::map<std::string, std::size_t> index_;
    State state_ = State::pre_key;
    bool stopped_ = false;
    int line_ = 1;
    int column_ = 1;
    std::string key_;
    std::string value_;
    std::size_t key_blank_ = std::string::npos;    // where the key's trailing blanks start
    std::size_t value_blank_ = std::string::npos;  // where the value's trailing blanks start
    int key_line_ = 0;
    int key_column_ = 0;
    int quote_line_ = 0;
    int quote_column_ = 0;
};

}  // namespace

std::vector<std::pair<std::string, std::string>> parse_env_file(std::string_view text,
                                                                const std::string& path) {
    return Parser(path).parse(text);
}

bool is_env_name(std::string_view name) {
    if (name.empty() || (name[0] >= '0' && name[0] <= '9')) return false;
    return std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_';
    });
}

std::string reserved_env_message(std::string_view name) {
    return std::string(name) +
           " is reserved: clusterd sets it for the workers (LISTEN_*, NOTIFY_SOCKET, WATCHDOG_*, "
           "NODE_CHANNEL_*, NODE_UNIQUE_ID, CLUSTERD_*)";
}

}  // namespace clusterd
