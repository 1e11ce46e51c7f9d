// The parser of `env_file:` files: systemd's EnvironmentFile= syntax (src/basic/env-file.c,
// parse_env_file_internal), stricter where systemd ignores a mistake in silence.
//
//   # comment                 a line whose first non-blank character is '#' or ';'
//   KEY=VALUE                 blanks around KEY and before VALUE are ignored
//   KEY=a b  c                unquoted: trailing blanks trimmed, inner ones kept
//   KEY=a\ b\\c               a backslash takes the next character as it is
//   KEY=first \               a backslash at the end of the line continues the value
//       second                (the newline is dropped)
//   KEY="a \"b\" \$c \\ \q"   double quotes: \" \\ \` \$ unescaped, \newline dropped, any
//                             other backslash kept ("\q" stays \q); newlines kept
//   KEY='a \ "b"'             single quotes: literal, newlines kept
//   KEY="a"'b'c               quoted parts, and one unquoted part after them, are joined
//                             (blanks between them are dropped, as systemd does); a quote
//                             inside an unquoted part is an ordinary character
//   KEY=                      the empty string
//
// Lines end at LF, CR or CRLF. A key given twice: the later value wins. Errors (clusterd
// refuses the file where systemd would skip the line or take a partial value): a line with no
// '=', a name not [A-Za-z_][A-Za-z0-9_]*, a name clusterd reserves (is_reserved_env), a quote
// not closed by the end of the file, a NUL byte, invalid UTF-8, more than
// limits::kMaxEnvFileBytes or limits::kMaxEnvFileVars.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace clusterd {

/// The variables of an env file, each name once (where it first appears, with its last
/// value), in file order. `path` names the file in diagnostics ("path:line:column: ...").
/// Throws ConfigError with every problem of the file. Pure.
std::vector<std::pair<std::string, std::string>> parse_env_file(std::string_view text,
                                                                const std::string& path);

/// [A-Za-z_][A-Za-z0-9_]*: what `env:` and env files accept as a variable name.
bool is_env_name(std::string_view name);

/// "X is reserved: clusterd sets it for the workers (...)", for `env:` and env files.
std::string reserved_env_message(std::string_view name);

}  // namespace clusterd
